//! `scanwatch run`: load, attach, pin, detect, alert, report; detach
//! cleanly on SIGINT/SIGTERM; reopen the alert log on SIGHUP.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    alertmanager::{self, Alertmanager, AlertmanagerError, Flagged},
    alerts::{AlertLog, AlertLogError},
    bpffs::{PinDir, PinDirError},
    cli::RunArgs,
    config::{Config, ConfigError},
    engine::Engine,
    loader::{self, Attachment, Interface, LoadError},
    maps::{MapsError, ScanwatchMaps, take_events},
    metrics::{AgentSnapshot, AttachedInterface, build_registry},
    mitigation::Mitigation,
    privileges::{self, Capability, PrivilegeError},
    summary::Summary,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    PinDir(#[from] PinDirError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    AlertLog(#[from] AlertLogError),
    #[error("interface {0} given twice")]
    DuplicateInterface(String),
    #[error(
        "no interface to watch: give --iface IF or set `interfaces` in the config's [agent] table"
    )]
    NoInterfaces,
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot poll the events ring buffer: {0}")]
    Events(std::io::Error),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Alertmanager(#[from] AlertmanagerError),
    #[error(transparent)]
    Mitigation(#[from] crate::mitigation::BlockError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error(transparent)]
    Reply(#[from] crate::reply::ReplyError),
}

impl AgentError {
    /// Exit status: 2 for bad configuration or arguments, 1 otherwise.
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_)
            | Self::DuplicateInterface(_)
            | Self::NoInterfaces
            | Self::Load(LoadError::UnknownInterface(_) | LoadError::MapSize(_))
            | Self::Alertmanager(AlertmanagerError::Url(_)) => 2,
            _ => 1,
        }
    }
}

/// What `scanwatch run` needs (CAP_SYS_ADMIN stands in for CAP_BPF and
/// CAP_PERFMON): CAP_BPF to create the maps and load the program,
/// CAP_PERFMON for the verifier to accept it (without it the program is
/// verified as an unprivileged one and refused), CAP_NET_ADMIN to attach XDP.
/// The packaged systemd unit grants exactly these.
pub const RUN_CAPABILITIES: &[Capability] =
    &[Capability::Bpf, Capability::Perfmon, Capability::NetAdmin];

/// What `run` has set up; torn down in reverse order.
struct Running {
    ebpf: Ebpf,
    maps: ScanwatchMaps,
    pins: PinDir,
    attachments: Vec<Attachment>,
    /// The reply-aware detector's egress attachments (empty when disabled).
    egress: Vec<crate::reply::EgressAttachment>,
    config: Config,
}

impl Running {
    fn shutdown(mut self) {
        for attachment in std::mem::take(&mut self.egress) {
            crate::reply::detach_egress(&mut self.ebpf, attachment);
        }
        for attachment in std::mem::take(&mut self.attachments) {
            loader::release(&mut self.ebpf, attachment);
        }
        self.pins.remove_pins();
        log::info!("stopped; pins removed from {}", self.pins.path().display());
    }
}

/// What `start` hands to the loop.
struct Started {
    running: Running,
    events: RingBuf<MapData>,
    alert_log: AlertLog,
    metrics_listener: std::net::TcpListener,
    alertmanager: Option<Alertmanager>,
    mitigation: Mitigation,
    control: tokio::net::UnixListener,
    /// The reply-aware detector's maps (when enabled).
    reply: Option<crate::reply::ReplyMaps>,
}

/// Checks configuration, privileges and arguments, then sets everything up.
fn start(args: &RunArgs) -> Result<Started, AgentError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    args.override_config(&mut config.agent);
    let settings = config.agent.clone();
    if settings.interfaces.is_empty() {
        return Err(AgentError::NoInterfaces);
    }
    let alertmanager = Some(settings.alertmanager_url.as_str())
        .filter(|url| !url.is_empty())
        .map(Alertmanager::parse)
        .transpose()?;
    privileges::require("scanwatch run", RUN_CAPABILITIES)?;
    privileges::raise_memlock_rlimit();
    let mut interfaces: Vec<Interface> = Vec::new();
    for name in &settings.interfaces {
        let iface = Interface::resolve(name)?;
        if interfaces.iter().any(|i| i.ifindex == iface.ifindex) {
            return Err(AgentError::DuplicateInterface(name.clone()));
        }
        interfaces.push(iface);
    }
    loader::validate_map_size(settings.map_size)?;
    let alert_log = AlertLog::open(&settings.alert_log)?;
    let pins = PinDir::acquire(&settings.pin_dir)?;
    let metrics_listener = std::net::TcpListener::bind(settings.metrics_addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| AgentError::Metrics {
            addr: settings.metrics_addr,
            source,
        })?;
    pins.check_kept_blocklist(config.mitigation.capacity);
    let keep_attached = settings.keep_attached;
    for kept in loader::kept_links(pins.path()) {
        if !interfaces.iter().any(|i| i.ifindex == kept.ifindex) {
            log::warn!(
                "{} keeps an XDP program attached to ifindex {}, which this agent does not watch; remove the pin to detach it",
                kept.path.display(),
                kept.ifindex
            );
        }
    }
    let blocks_pin = pins.pin_path(crate::bpffs::KEPT_PIN);
    let mut ebpf = loader::load_with(
        settings.map_size,
        &config.detection.kernel_config(),
        &loader::LoadOptions {
            blocklist_capacity: config.mitigation.capacity,
            feed_capacity: config.mitigation.feed_capacity,
            blocks_pin: Some(&blocks_pin),
            reply: config.detection.reply_config(),
            ..loader::LoadOptions::default()
        },
    )?;
    let ifindexes: Vec<u32> = interfaces.iter().map(|i| i.ifindex).collect();
    ScanwatchMaps::assign_slots(&mut ebpf, &ifindexes)?;
    let mut attachments = Vec::new();
    for iface in &interfaces {
        // On error, dropping `ebpf` detaches what was attached so far.
        let attachment = loader::attach_or_take_over(
            &mut ebpf,
            iface,
            settings.xdp_mode,
            pins.path(),
            keep_attached,
        )?;
        log::info!(
            "attached to {} (ifindex {}) in {} mode",
            iface.name,
            iface.ifindex,
            attachment.mode.as_str()
        );
        attachments.push(attachment);
    }
    let mut egress = Vec::new();
    if config.detection.reply_scan.enabled {
        for iface in &interfaces {
            // On error, dropping `ebpf` detaches what was attached so far.
            egress.push(crate::reply::attach_egress(&mut ebpf, iface)?);
            log::info!(
                "reply-aware detector: egress program attached to {}",
                iface.name
            );
        }
    }
    let reply = if config.detection.reply_scan.enabled {
        Some(crate::reply::ReplyMaps::take(
            &mut ebpf,
            config.detection.reply_config(),
        )?)
    } else {
        None
    };
    let names: Vec<(u32, &str)> = interfaces
        .iter()
        .map(|i| (i.ifindex, i.name.as_str()))
        .collect();
    let never_block = crate::mitigation::default_never_block(&config.mitigation);
    log::info!(
        "never blocked: {}",
        never_block
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(map) = ebpf.map(scanwatch_common::maps::FEED_NAMES_MAP) {
        let path = pins.pin_path(scanwatch_common::maps::FEED_NAMES_MAP);
        if let Err(e) = map.pin(&path) {
            log::warn!("cannot pin {}: {e}", path.display());
        }
    }
    let mut mitigation = match Mitigation::take(&mut ebpf, config.mitigation.clone(), never_block) {
        Ok(m) => m,
        Err(e) => {
            pins.remove_pins();
            return Err(e.into());
        }
    };
    for problem in mitigation.load_feeds(&config.feeds) {
        log::warn!("{problem}");
    }
    let control = match crate::control::bind(&settings.control_socket) {
        Ok(c) => c,
        Err(e) => {
            pins.remove_pins();
            return Err(e.into());
        }
    };
    let taken = take_events(&mut ebpf).and_then(|events| {
        ScanwatchMaps::take_and_pin(&mut ebpf, &pins, &names).map(|maps| (events, maps))
    });
    let (events, maps) = match taken {
        Ok(t) => t,
        Err(e) => {
            pins.remove_pins();
            return Err(e.into());
        }
    };
    let running = Running {
        ebpf,
        maps,
        pins,
        attachments,
        egress,
        config,
    };
    Ok(Started {
        running,
        events,
        alert_log,
        metrics_listener,
        alertmanager,
        mitigation,
        control,
        reply,
    })
}

/// Counts the source map every `interval` in a thread of its own (a full
/// walk: kept off the detection path), until `stop` is set.
fn spawn_counter(
    pin_dir: PathBuf,
    snapshot: Arc<Mutex<AgentSnapshot>>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let maps = match ScanwatchMaps::open_pinned(&pin_dir) {
            Ok(maps) => maps,
            Err(e) => {
                log::warn!("source counter disabled: {e}");
                return;
            }
        };
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                next = Instant::now() + interval;
                let created: u64 = maps
                    .iface_counters()
                    .map(|c| {
                        c.values()
                            .map(|v| v.get(scanwatch_common::Counter::SourcesCreated))
                            .sum()
                    })
                    .unwrap_or(0);
                match maps.count_sources() {
                    Ok((total, by_iface)) => {
                        let mut s = snapshot.lock().unwrap_or_else(PoisonError::into_inner);
                        s.tracked_total = Some(total);
                        s.tracked_by_ifindex = by_iface;
                        s.evictions = s.evictions.max(created.saturating_sub(total));
                    }
                    Err(e) => log::warn!("cannot count sources: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// Pushes to Alertmanager in the background; counts the outcome.
fn push_alerts(am: &Alertmanager, body: Vec<u8>, snapshot: &Arc<Mutex<AgentSnapshot>>) {
    let am = am.clone();
    let snapshot = Arc::clone(snapshot);
    tokio::spawn(async move {
        let result = am.post(&body).await;
        let mut s = snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) => s.alertmanager_pushes += 1,
            Err(e) => {
                s.alertmanager_errors += 1;
                log::warn!("{e}");
            }
        }
    });
}

/// The sources the engine currently flags, for Alertmanager.
fn flagged_now(engine: &Engine, since: &mut HashMap<String, SystemTime>) -> Vec<Flagged> {
    engine
        .active()
        .iter()
        .filter(|(_, a)| !a.types.is_empty())
        .map(|(k, a)| {
            let source = k.ip().to_string();
            let started = *since.entry(source.clone()).or_insert_with(SystemTime::now);
            Flagged {
                source,
                types: a.types.clone(),
                since: started,
            }
        })
        .collect()
}

fn feed_mtimes_of(feeds: &[crate::config::FeedConfig]) -> Vec<Option<SystemTime>> {
    feeds
        .iter()
        .map(|f| std::fs::metadata(&f.path).and_then(|m| m.modified()).ok())
        .collect()
}

/// Answers one control request.
fn handle_control(
    engine: &mut Engine,
    running: &Running,
    req: crate::control::Request,
) -> crate::control::Response {
    use crate::control::{Request, Response};
    let clock = crate::clock::BootClock::now();
    let parse = |t: &str| crate::cli::parse_target(t);
    let stats = engine.stats;
    let Some(m) = engine.mitigation.as_mut() else {
        return Response::err("mitigation is not available");
    };
    match req {
        Request::Block {
            target,
            ttl_seconds,
            reason,
        } => match parse(&target) {
            Ok(net) => match m.block(
                net,
                ttl_seconds.map(Duration::from_secs),
                scanwatch_common::block_origin::MANUAL,
                reason.as_deref().unwrap_or("manual"),
            ) {
                Ok(v) => {
                    log::info!(
                        "manual block of {net} ({})",
                        reason.as_deref().unwrap_or("manual")
                    );
                    Response::ok(serde_json::json!({
                        "target": net.to_string(),
                        "expires": (v.expires_ns != 0).then(|| clock.rfc3339(v.expires_ns)),
                    }))
                }
                Err(e) => Response::err(e),
            },
            Err(e) => Response::err(e),
        },
        Request::Unblock { target } => match parse(&target)
            .map_err(|e| e.to_string())
            .and_then(|net| m.unblock(net).map_err(|e| e.to_string()))
        {
            Ok(()) => Response::ok(serde_json::json!({ "target": target })),
            Err(e) => Response::err(e),
        },
        Request::Blocks => Response::ok(serde_json::to_value(m.list(&clock)).unwrap_or_default()),
        Request::Status => {
            let cfg = m.config();
            Response::ok(serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "interfaces": running.attachments.iter().map(|a| serde_json::json!({
                    "name": a.iface.name, "ifindex": a.iface.ifindex, "mode": a.mode.as_str(),
                })).collect::<Vec<_>>(),
                "pin_dir": running.pins.path().display().to_string(),
                "source_map_capacity": running.maps.source_capacity(),
                "detection": {
                    "window_seconds": running.config.detection.window_seconds,
                    "crossings": stats.events,
                    "alerts": stats.alerts,
                    "ignored": stats.ignored,
                },
                "mitigation": {
                    "auto_block": cfg.auto_block,
                    "dry_run": cfg.dry_run,
                    "capacity": cfg.capacity,
                    "never_block": m.never_block().iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "stats": m.stats,
                },
                "feeds": m.feed_stats,
            }))
        }
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), AgentError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;
    let Started {
        running,
        events,
        alert_log,
        metrics_listener,
        alertmanager,
        mitigation,
        control,
        reply,
    } = start(&args)?;
    let settings = running.config.agent.clone();
    let names: BTreeMap<u32, String> = running
        .attachments
        .iter()
        .map(|a| (a.iface.ifindex, a.iface.name.clone()))
        .collect();
    let d = &running.config.detection;
    log::info!(
        "scanwatch {} running: tracking up to {} sources, maps pinned in {}, alerts to {}; window {} s, thresholds: {} ports, {} hosts, {} ICMP hosts, {} stealth probes, {} UDP ports, {} SYN/s",
        env!("CARGO_PKG_VERSION"),
        running.maps.source_capacity(),
        running.pins.path().display(),
        alert_log.path().display(),
        d.window_seconds,
        d.port_scan.distinct_ports,
        d.host_sweep.distinct_hosts,
        d.ping_sweep.distinct_hosts,
        d.stealth_scan.probes,
        d.udp_scan.distinct_ports,
        d.syn_flood_source.syns_per_second,
    );
    let mut engine = Engine::new(running.config.detection.clone(), alert_log, names.clone());
    engine.mitigation = Some(mitigation);
    let (ctl_tx, mut ctl_rx) = tokio::sync::mpsc::channel::<crate::control::Pending>(16);
    let control_server = tokio::spawn(crate::control::serve(control, ctl_tx));
    let mut feed_mtimes = feed_mtimes_of(&running.config.feeds);
    let mut ticks = 0u64;
    let interfaces: Vec<AttachedInterface> = running
        .attachments
        .iter()
        .map(|a| AttachedInterface {
            name: a.iface.name.clone(),
            ifindex: a.iface.ifindex,
            mode: a.mode.as_str(),
        })
        .collect();
    let metrics = build_registry(ScanwatchMaps::open_pinned(running.pins.path())?, interfaces);
    let snapshot = Arc::clone(&metrics.snapshot);
    let poll_duration = metrics.poll_duration.clone();
    let listener = tokio::net::TcpListener::from_std(metrics_listener).map_err(|source| {
        AgentError::Metrics {
            addr: settings.metrics_addr,
            source,
        }
    })?;
    log::info!("metrics on http://{}/metrics", settings.metrics_addr);
    let server = tokio::spawn(crate::http::serve(listener, Arc::new(metrics.registry)));
    let stop_counter = Arc::new(AtomicBool::new(false));
    let counter = spawn_counter(
        running.pins.path().to_path_buf(),
        Arc::clone(&snapshot),
        Duration::from_secs(settings.count_interval_seconds),
        Arc::clone(&stop_counter),
    );
    // Crossings of the reply-aware test found by the no-answer sweep.
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<scanwatch_common::ScanEvent>(1024);
    let sweeper = match reply {
        Some(maps) => {
            engine.reply = Some(maps.try_clone()?);
            let timeout = Duration::from_secs(d.reply_scan.no_answer_timeout_seconds);
            log::info!(
                "reply-aware detector: TRW theta0 {} theta1 {} alpha {} beta {} ({} failed first contacts in a row flag a source), no-answer timeout {} s",
                d.reply_scan.theta0,
                d.reply_scan.theta1,
                d.reply_scan.alpha,
                d.reply_scan.beta,
                maps.config().failures_to_flag(),
                timeout.as_secs()
            );
            // A walk of a full contact map takes about 0.1 s (bench):
            // every half timeout keeps it near 2% of a core by default.
            let interval = Duration::from_secs((timeout.as_secs() / 2).max(1));
            Some(crate::reply::spawn_sweeper(
                maps,
                timeout,
                interval,
                reply_tx,
                Arc::clone(&snapshot),
                Arc::clone(&stop_counter),
            ))
        }
        None => {
            drop(reply_tx);
            None
        }
    };
    let instance = alertmanager::hostname();
    let mut pushed: HashMap<String, Flagged> = HashMap::new();
    let mut since: HashMap<String, SystemTime> = HashMap::new();
    let mut resend = tokio::time::interval(alertmanager::RESEND);
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns
    // the ring buffer, and always reports that same fd.
    let mut events =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| AgentError::Events(e.into()))?;
    let mut summary = Summary::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(settings.summary_interval_seconds));
    let mut active = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await; // the first tick is immediate
    // Attached, pinned, listening: tell systemd (Type=notify) we are up.
    let ready = format!(
        "READY=1\nSTATUS=watching {}",
        names.values().cloned().collect::<Vec<_>>().join(", ")
    );
    if let Err(e) = crate::systemd::notify(&ready) {
        log::warn!("cannot notify readiness: {e}");
    }
    loop {
        // Time spent working in this step (not waiting in select).
        let mut busy = Duration::ZERO;
        tokio::select! {
            _ = resend.tick() => {
                let t = Instant::now();
                if let Some(am) = &alertmanager {
                    let firing = flagged_now(&engine, &mut since);
                    let resolved: Vec<Flagged> = pushed
                        .values()
                        .filter(|p| !firing.iter().any(|f| f.source == p.source))
                        .cloned()
                        .collect();
                    for r in &resolved {
                        since.remove(&r.source);
                    }
                    pushed = firing.iter().map(|f| (f.source.clone(), f.clone())).collect();
                    if !firing.is_empty() || !resolved.is_empty() {
                        push_alerts(am, alertmanager::body(&firing, &resolved, &instance, SystemTime::now()), &snapshot);
                    }
                }
                busy = t.elapsed();
            }
            guard = events.readable_mut() => {
                let t = Instant::now();
                let mut guard = guard.map_err(AgentError::Events)?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    engine.on_record(&item, &running.maps, Instant::now());
                }
                guard.clear_ready();
                busy = t.elapsed();
            }
            _ = active.tick() => {
                let t = Instant::now();
                engine.poll_active(&running.maps, Instant::now());
                engine.tick_alert_log();
                ticks += 1;
                if let Some(m) = engine.mitigation.as_mut() {
                    m.expire();
                    // Feed files changed on disk: reload (every 5 s).
                    if ticks.is_multiple_of(5) {
                        let now = feed_mtimes_of(&running.config.feeds);
                        if now != feed_mtimes {
                            feed_mtimes = now;
                            log::info!("feed files changed: reloading");
                            for problem in m.load_feeds(&running.config.feeds) {
                                log::warn!("{problem}");
                            }
                        }
                    }
                }
                busy = t.elapsed();
            }
            Some(event) = reply_rx.recv() => {
                let t = Instant::now();
                engine.on_event(&event, &running.maps, Instant::now());
                busy = t.elapsed();
            }
            Some((req, reply)) = ctl_rx.recv() => {
                let t = Instant::now();
                let response = handle_control(&mut engine, &running, req);
                let _ = reply.send(response);
                busy = t.elapsed();
            }
            _ = ticker.tick() => {
                match running.maps.iface_counters() {
                    Ok(counters) => {
                        for line in summary.lines(&counters, &names) {
                            log::info!("{line}");
                        }
                    }
                    Err(e) => log::warn!("cannot read counters: {e}"),
                }
                let s = engine.stats;
                log::info!(
                    "detection: {} crossings, {} alerts, {} ignored, {} active sources",
                    s.events,
                    s.alerts,
                    s.ignored,
                    engine.active_sources()
                );
            }
            _ = sighup.recv() => {
                engine.reopen_log();
                if let Some(m) = engine.mitigation.as_mut() {
                    log::info!("SIGHUP: reloading feeds");
                    for problem in m.load_feeds(&running.config.feeds) {
                        log::warn!("{problem}");
                    }
                    feed_mtimes = feed_mtimes_of(&running.config.feeds);
                }
            }
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
        }
        let post = Instant::now();
        // New alerts go to Alertmanager at once, not at the next re-send.
        let written = engine.take_alerts();
        if let Some(am) = &alertmanager
            && !written.is_empty()
        {
            let firing: Vec<Flagged> = flagged_now(&engine, &mut since)
                .into_iter()
                .filter(|f| written.iter().any(|a| a.source == f.source))
                .collect();
            for f in &firing {
                pushed.insert(f.source.clone(), f.clone());
            }
            push_alerts(
                am,
                alertmanager::body(&firing, &[], &instance, SystemTime::now()),
                &snapshot,
            );
        }
        {
            let mut s = snapshot.lock().unwrap_or_else(PoisonError::into_inner);
            s.engine = engine.stats;
            s.detections.clone_from(&engine.detections);
            s.active = engine.active_by_type();
            s.top = engine.top_flagged(usize::from(settings.metrics_top));
            if let Some(m) = &engine.mitigation {
                s.mitigation = m.stats;
                s.feeds.clone_from(&m.feed_stats);
            }
        }
        poll_duration.observe((busy + post.elapsed()).as_secs_f64());
    }
    if let Err(e) = crate::systemd::notify("STOPPING=1") {
        log::warn!("cannot notify stopping: {e}");
    }
    server.abort();
    control_server.abort();
    let _ = std::fs::remove_file(&settings.control_socket);
    stop_counter.store(true, Ordering::Relaxed);
    let _ = counter.join();
    // The sweeper may wait on a full channel: close it first.
    reply_rx.close();
    if let Some(sweeper) = sweeper {
        let _ = sweeper.join();
    }
    let s = engine.stats;
    log::info!(
        "{} crossings, {} alerts ({} write errors), {} ignored",
        s.events,
        s.alerts,
        s.alert_write_errors,
        s.ignored
    );
    running.shutdown();
    Ok(())
}
