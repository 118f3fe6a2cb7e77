//! `scanwatch run`: load, attach, pin, detect, alert, report; detach
//! cleanly on SIGINT/SIGTERM; reopen the alert log on SIGHUP.

mod control;
mod error;
mod start;
mod steps;
mod view;
mod web;
mod web_steps;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
};

pub use self::error::{AgentError, RUN_CAPABILITIES};
pub use self::web::catalogue_of;
use self::{
    start::{CrowdsecStart, Started},
    steps::Agent,
};
use super::cli::RunArgs;
use crate::{
    detect::{DistributedConfig, DistributedDetector, Engine},
    kernel::{
        detect_maps::ScanwatchMaps,
        sweep::{SweepCounters, spawn_sweeper},
    },
    output::{
        alertmanager::{Pusher, RESEND},
        crowdsec::{
            bouncer::{Bouncer, Pull, pull_loop},
            machine::Machine,
        },
        metrics::{AgentSnapshot, AttachedInterface, ReplySource, build_registry},
        summary::Summary,
    },
};

/// Counts the source table every `interval` in a thread of its own (a walk
/// of its mapping: kept off the detection path), until `stop` is set.
fn spawn_counter(
    pin_dir: PathBuf,
    snapshot: Arc<Mutex<AgentSnapshot>>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let maps = match ScanwatchMaps::open_pinned(&pin_dir) {
            Ok(maps) => maps,
            Err(e) => {
                log::warn!("source counter disabled: {e}");
                return;
            }
        };
        let mut next = Instant::now();
        let mut failing = false;
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                next = Instant::now() + interval;
                match maps.count_sources() {
                    Ok((total, by_iface)) => {
                        failing = false;
                        let mut s = snapshot.lock().unwrap_or_else(PoisonError::into_inner);
                        s.tracked_total = Some(total);
                        s.tracked_by_ifindex = by_iface;
                    }
                    // Once per run of failures; the gauges keep their last count.
                    Err(e) if !failing => {
                        failing = true;
                        log::warn!("cannot count the tracked sources: {e}");
                    }
                    Err(_) => {}
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// The reply-aware detector's sweeper, when it is on: it sends crossings
/// found on no-answers through `tx`. Returns its thread and the maps and
/// counters the metrics read.
fn start_sweeper(
    agent: &mut Agent,
    tx: mpsc::Sender<scanwatch_common::ScanEvent>,
    stop: &Arc<AtomicBool>,
) -> Result<Option<(JoinHandle<()>, ReplySource)>, AgentError> {
    let Some(maps) = &agent.reply else {
        return Ok(None);
    };
    let r = &agent.running.config.detection.reply_scan;
    let timeout = Duration::from_secs(r.no_answer_timeout_seconds);
    log::info!(
        "reply-aware detector: TRW theta0 {} theta1 {} alpha {} beta {} ({} failed first contacts in a row flag a source), no-answer timeout {} s",
        r.theta0,
        r.theta1,
        r.alpha,
        r.beta,
        maps.config().failures_to_flag(),
        timeout.as_secs()
    );
    let d = &agent.running.config.detection;
    if d.distributed_scan.enabled {
        let (ports, hosts) = d.distributed_thresholds();
        log::info!(
            "distributed_scan: failed first contacts from {} or more unflagged sources on {ports} ports of one local address, or on one port of {hosts} local addresses",
            d.distributed_scan.min_sources
        );
    }
    let counters = Arc::new(SweepCounters::default());
    // A pass over the full mapped contact table takes well under a
    // millisecond when it marks nothing (bench `reply_sweep`).
    let interval = Duration::from_secs((timeout.as_secs() / 2).max(1));
    let thread = spawn_sweeper(
        maps.try_clone()?,
        agent.running.maps.source_table()?,
        timeout,
        interval,
        tx,
        Arc::clone(&counters),
        Arc::clone(stop),
    );
    agent.sweep = Some(Arc::clone(&counters));
    let source = ReplySource {
        maps: maps.try_clone()?,
        sweep: counters,
    };
    Ok(Some((thread, source)))
}

/// The signals the loop stops or reloads on.
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Self, AgentError> {
        let on = |kind| signal(kind).map_err(AgentError::Signal);
        Ok(Self {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
        })
    }
}

fn log_running(agent: &Agent) {
    let running = &agent.running;
    let d = &running.config.detection;
    log::info!(
        "scanwatch {} running: tracking up to {} sources, maps pinned in {}, alerts to {}; window {} s, thresholds: {} ports, {} hosts, {} ICMP hosts, {} stealth probes, {} UDP ports, {} SYN/s",
        env!("CARGO_PKG_VERSION"),
        running.maps.source_capacity(),
        running.pins.path().display(),
        agent.alert_log.path().display(),
        d.window_seconds,
        d.port_scan.distinct_ports,
        d.host_sweep.distinct_hosts,
        d.ping_sweep.distinct_hosts,
        d.stealth_scan.probes,
        d.udp_scan.distinct_ports,
        d.syn_flood_source.syns_per_second,
    );
}

/// A ring buffer the loop waits on.
type Ring = AsyncFd<RingBuf<MapData>>;

/// The rings the loop reads: crossings, evidence packets, web samples.
struct Rings {
    events: RingBuf<MapData>,
    evidence: RingBuf<MapData>,
    web: Option<RingBuf<MapData>>,
}

impl Rings {
    /// Each ring as a readiness source for the loop.
    fn register(self) -> Result<(Ring, Ring, Option<Ring>), AgentError> {
        let register = |ring| {
            // SAFETY: the ring buffer owns its map fd for as long as the
            // AsyncFd owns the ring buffer, and always reports that same fd.
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| AgentError::Events(e.into()))
        };
        Ok((
            register(self.events)?,
            register(self.evidence)?,
            self.web.map(register).transpose()?,
        ))
    }
}

/// The agent with everything `start` set up.
fn agent_of(
    started: Started,
) -> (
    Agent,
    Rings,
    std::net::TcpListener,
    tokio::net::UnixListener,
    Option<CrowdsecStart>,
) {
    let Started {
        running,
        events,
        evidence_ring,
        web,
        evidence,
        alert_log,
        metrics_listener,
        alertmanager,
        mitigation,
        control,
        reply,
        crowdsec,
    } = started;
    let names: BTreeMap<u32, String> = running
        .attachments
        .iter()
        .map(|a| (a.iface.ifindex, a.iface.name.clone()))
        .collect();
    let agent = Agent {
        engine: Engine::new(running.config.detection.clone()),
        distributed: DistributedDetector::new(DistributedConfig::from_detection(
            &running.config.detection,
        )),
        feed_mtimes: steps::feed_mtimes_of(&running.config.feeds),
        running,
        mitigation,
        alert_log,
        reply,
        names,
        pusher: alertmanager.map(Pusher::new),
        snapshot: Arc::new(Mutex::new(AgentSnapshot::default())),
        summary: Summary::default(),
        ticks: 0,
        alerted: Vec::new(),
        alerts_by_tool: BTreeMap::new(),
        sweep: None,
        failures_seen: None,
        evidence,
        bouncer: None,
        machine: None,
        web: None,
    };
    let (web_ring, agent) = match web {
        Some((ring, run)) => (
            Some(ring),
            Agent {
                web: Some(run),
                ..agent
            },
        ),
        None => (None, agent),
    };
    (
        agent,
        Rings {
            events,
            evidence: evidence_ring,
            web: web_ring,
        },
        metrics_listener,
        control,
        crowdsec,
    )
}

/// Starts the CrowdSec bouncer's pulls (into `pulls`) and the machine's
/// pushes, as configured. Returns the pulling task; without one, `pulls`
/// is kept open (and quiet) by the sender returned.
fn start_crowdsec(
    agent: &mut Agent,
    crowdsec: Option<CrowdsecStart>,
    pulls: mpsc::Sender<Pull>,
) -> (
    Option<tokio::task::JoinHandle<()>>,
    Option<mpsc::Sender<Pull>>,
) {
    let Some(cs) = crowdsec else {
        return (None, Some(pulls));
    };
    let cfg = agent.running.config.crowdsec.clone();
    if let Some(password) = cs.password {
        log::info!(
            "CrowdSec: pushing alerts to {} as machine {}",
            cs.lapi.url(),
            cfg.machine_id
        );
        agent.machine = Some(Machine::spawn(
            cs.lapi.clone(),
            cfg.machine_id.clone(),
            password,
            cfg.queue_capacity as usize,
        ));
    }
    let Some(key) = cs.api_key else {
        return (None, Some(pulls));
    };
    log::info!(
        "CrowdSec bouncer: pulling {} decisions of scopes {:?} from {} every {} s",
        cfg.decision_types.join("/"),
        cfg.scopes,
        cs.lapi.url(),
        cfg.update_frequency_seconds
    );
    agent.bouncer = Some(Bouncer::new(cfg.clone()));
    (
        Some(tokio::spawn(pull_loop(cs.lapi, key, cfg, pulls))),
        None,
    )
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), AgentError> {
    let mut signals = Signals::install()?;
    let (mut agent, rings, metrics_listener, control, crowdsec) = agent_of(start::start(&args)?);
    let settings = agent.running.config.agent.clone();
    log_running(&agent);
    let (ctl_tx, ctl_rx) = mpsc::channel::<super::control::Pending>(16);
    let control_server = tokio::spawn(super::control::serve(control, ctl_tx));
    let (pull_tx, pull_rx) = mpsc::channel::<Pull>(4);
    let (puller, _quiet_pulls) = start_crowdsec(&mut agent, crowdsec, pull_tx);
    let stop = Arc::new(AtomicBool::new(false));
    // Crossings of the reply-aware test found by the no-answer sweep.
    let (reply_tx, reply_rx) = mpsc::channel::<scanwatch_common::ScanEvent>(1024);
    let (sweeper, reply_source) = match start_sweeper(&mut agent, reply_tx, &stop)? {
        Some((thread, source)) => (Some(thread), Some(source)),
        None => (None, None),
    };
    let interfaces: Vec<AttachedInterface> = agent
        .running
        .attachments
        .iter()
        .map(|a| AttachedInterface {
            name: a.iface.name.clone(),
            ifindex: a.iface.ifindex,
            mode: a.mode.as_str(),
        })
        .collect();
    let metrics = build_registry(
        ScanwatchMaps::open_pinned(agent.running.pins.path())?,
        reply_source,
        crate::kernel::web_maps::WebCountersMap::open_pinned(agent.running.pins.path()).ok(),
        interfaces,
    );
    agent.snapshot = Arc::clone(&metrics.snapshot);
    let poll_duration = metrics.poll_duration.clone();
    let listener = tokio::net::TcpListener::from_std(metrics_listener).map_err(|source| {
        AgentError::Metrics {
            addr: settings.metrics_addr,
            source,
        }
    })?;
    log::info!("metrics on http://{}/metrics", settings.metrics_addr);
    let server = tokio::spawn(crate::output::http::serve(
        listener,
        Arc::new(metrics.registry),
    ));
    let counter = spawn_counter(
        agent.running.pins.path().to_path_buf(),
        Arc::clone(&agent.snapshot),
        Duration::from_secs(settings.count_interval_seconds),
        Arc::clone(&stop),
    );
    let (events, evidence, web) = rings.register()?;
    notify_ready(&agent);
    let mut channels = Channels {
        events,
        evidence,
        web,
        control: ctl_rx,
        reply: reply_rx,
        pulls: pull_rx,
    };
    let result = event_loop(
        &mut agent,
        &mut channels,
        &mut signals,
        &settings,
        &poll_duration,
    )
    .await;
    if let Err(e) = crate::app::systemd::notify("STOPPING=1") {
        log::warn!("cannot notify stopping: {e}");
    }
    server.abort();
    control_server.abort();
    if let Some(p) = puller {
        p.abort();
    }
    let _ = std::fs::remove_file(&settings.control_socket);
    stop.store(true, Ordering::Relaxed);
    let _ = counter.join();
    // The sweeper may wait on a full channel: close it first.
    channels.reply.close();
    if let Some(sweeper) = sweeper {
        let _ = sweeper.join();
    }
    let s = agent.engine.stats;
    log::info!(
        "{} crossings, {} alerts ({} write errors), {} ignored",
        s.events,
        s.alerts,
        agent.alert_log.stats().write_errors,
        s.ignored
    );
    let Agent { running, .. } = agent;
    running.shutdown();
    result
}

/// Attached, pinned, listening: tell systemd (Type=notify) we are up.
fn notify_ready(agent: &Agent) {
    let ready = format!(
        "READY=1\nSTATUS=watching {}",
        agent.names.values().cloned().collect::<Vec<_>>().join(", ")
    );
    if let Err(e) = crate::app::systemd::notify(&ready) {
        log::warn!("cannot notify readiness: {e}");
    }
}

/// What the loop waits on besides timers and signals.
struct Channels {
    events: AsyncFd<RingBuf<MapData>>,
    evidence: AsyncFd<RingBuf<MapData>>,
    /// The web ring (`[detection.web]` on).
    web: Option<AsyncFd<RingBuf<MapData>>>,
    control: mpsc::Receiver<super::control::Pending>,
    reply: mpsc::Receiver<scanwatch_common::ScanEvent>,
    /// The CrowdSec bouncer's pulls.
    pulls: mpsc::Receiver<Pull>,
}

/// Every record waiting in the evidence ring.
fn drain_evidence(agent: &mut Agent, ring: &mut RingBuf<MapData>) {
    while let Some(item) = ring.next() {
        agent.on_evidence(&item);
    }
}

/// The web ring is read at most this often: a busy web server's samples
/// are taken in batches, not one wakeup of the loop each (the ring holds
/// about 1,800 requests: 180,000 a second between two reads).
const WEB_BATCH: Duration = Duration::from_millis(10);

/// The web ring once it has records, not before `not_before`; never
/// without one.
async fn web_readable(
    ring: &mut Option<AsyncFd<RingBuf<MapData>>>,
    not_before: Instant,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>> {
    match ring {
        Some(fd) => {
            tokio::time::sleep_until(not_before.into()).await;
            fd.readable_mut().await
        }
        None => std::future::pending().await,
    }
}

/// Waits for work and does it, until SIGINT or SIGTERM.
async fn event_loop(
    agent: &mut Agent,
    ch: &mut Channels,
    signals: &mut Signals,
    settings: &crate::config::AgentConfig,
    poll_duration: &prometheus_client::metrics::histogram::Histogram,
) -> Result<(), AgentError> {
    let mut resend = tokio::time::interval(RESEND);
    let mut ticker = tokio::time::interval(Duration::from_secs(settings.summary_interval_seconds));
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    let mut web_next = Instant::now();
    ticker.tick().await; // the first tick is immediate
    loop {
        // Time spent working in this step (not waiting in select).
        let mut busy = Duration::ZERO;
        // Web samples that made no alert skip the step's bookkeeping (the
        // snapshot is refreshed every second anyway): a busy web server
        // sends thousands a second.
        let mut bookkeeping = true;
        // The next held first alert to write.
        let release = agent.next_release();
        let held = async move {
            match release {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = held => {
                let t = Instant::now();
                agent.release_held();
                busy = t.elapsed();
            }
            _ = resend.tick() => {
                let t = Instant::now();
                agent.resend_alerts();
                busy = t.elapsed();
            }
            guard = ch.events.readable_mut() => {
                let t = Instant::now();
                // The crossing probe's evidence record follows its crossing:
                // take it first, so the alert's file holds it.
                drain_evidence(agent, ch.evidence.get_mut());
                let mut guard = guard.map_err(AgentError::Events)?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    agent.on_record(&item);
                }
                guard.clear_ready();
                busy = t.elapsed();
            }
            guard = ch.evidence.readable_mut() => {
                let t = Instant::now();
                let mut guard = guard.map_err(AgentError::Events)?;
                drain_evidence(agent, guard.get_inner_mut());
                guard.clear_ready();
                busy = t.elapsed();
            }
            guard = web_readable(&mut ch.web, web_next) => {
                web_next = Instant::now() + WEB_BATCH;
                let t = Instant::now();
                let mut guard = guard.map_err(AgentError::Events)?;
                bookkeeping = agent.on_web_ring(guard.get_inner_mut());
                guard.clear_ready();
                busy = t.elapsed();
            }
            _ = every_second.tick() => {
                let t = Instant::now();
                agent.every_second();
                busy = t.elapsed();
            }
            Some(event) = ch.reply.recv() => {
                let t = Instant::now();
                agent.on_event(&event);
                busy = t.elapsed();
            }
            Some(pull) = ch.pulls.recv() => {
                let t = Instant::now();
                agent.on_pull(pull);
                busy = t.elapsed();
            }
            Some((req, reply)) = ch.control.recv() => {
                let t = Instant::now();
                let _ = reply.send(agent.on_control(req));
                busy = t.elapsed();
            }
            _ = ticker.tick() => agent.log_summary(),
            _ = signals.hup.recv() => agent.on_sighup(),
            _ = signals.int.recv() => { log::info!("SIGINT: stopping"); return Ok(()); }
            _ = signals.term.recv() => { log::info!("SIGTERM: stopping"); return Ok(()); }
        }
        let post = Instant::now();
        if bookkeeping {
            agent.finish_step(usize::from(settings.metrics_top));
        }
        poll_duration.observe((busy + post.elapsed()).as_secs_f64());
    }
}
