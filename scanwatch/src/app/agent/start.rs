//! Starting `scanwatch run`: configuration, privileges and interfaces are
//! checked first; then the pin dir is taken, the programs loaded and
//! attached, and the maps taken and pinned. A guard removes this agent's
//! pins on every error path (the kept blocklist stays).

use std::net::SocketAddr;

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};

use scanwatch_common::contact_table::ContactSeed;

use super::{
    error::{AgentError, RUN_CAPABILITIES},
    web::WebRun,
};
use crate::detect::web::WebDetector;
use crate::{
    app::{cli::RunArgs, control, privileges},
    config::Config,
    kernel::{
        block_maps::BlockMaps,
        detect_maps::{ScanwatchMaps, pin_prefixes, take_events, take_evidence},
        egress::{EgressAttachment, attach_egress, detach_egress},
        object::{self, Interface, LoadOptions},
        pins::{KEPT_PIN, PinDir},
        reply_maps::ReplyMaps,
        web_maps::{WebCountersMap, take_web_samples},
        xdp_link::{self, Attachment},
    },
    output::{
        alert_log::AlertLog,
        alertmanager::Alertmanager,
        crowdsec::client::Lapi,
        evidence::{EvidenceStore, StoreSettings},
        mitigation::{Mitigation, default_never_block},
    },
};

/// The CrowdSec Local API and the secrets read at start.
pub(super) struct CrowdsecStart {
    pub lapi: Lapi,
    /// The bouncer's API key (when the bouncer is on).
    pub api_key: Option<String>,
    /// The machine's password (when alerts are pushed).
    pub password: Option<String>,
}

/// `[crowdsec]`: the Local API and the secrets, read now so that a
/// missing or world-readable file stops the start with a clear error.
fn crowdsec_of(config: &Config) -> Result<Option<CrowdsecStart>, AgentError> {
    let c = &config.crowdsec;
    let Some(endpoint) = c.endpoint()? else {
        return Ok(None);
    };
    let secret = |on: bool, path: &std::path::Path, what: &str| {
        on.then(|| {
            crate::config::crowdsec::read_secret(path)
                .map_err(|e| AgentError::CrowdsecSecret(format!("{what}: {e}")))
        })
        .transpose()
    };
    Ok(Some(CrowdsecStart {
        lapi: Lapi::new(endpoint),
        api_key: secret(c.bouncer(), &c.api_key_file, "api_key_file")?,
        password: secret(c.machine(), &c.password_file, "password_file")?,
    }))
}

/// What `run` has set up; torn down in reverse order.
pub(super) struct Running {
    pub ebpf: Ebpf,
    pub maps: ScanwatchMaps,
    pub pins: PinDir,
    pub attachments: Vec<Attachment>,
    /// The reply-aware detector's egress attachments (empty when disabled).
    pub egress: Vec<EgressAttachment>,
    pub config: Config,
}

impl Running {
    pub fn shutdown(mut self) {
        for attachment in std::mem::take(&mut self.egress) {
            detach_egress(&mut self.ebpf, attachment);
        }
        for attachment in std::mem::take(&mut self.attachments) {
            xdp_link::release(&mut self.ebpf, attachment);
        }
        self.pins.remove_pins();
        log::info!("stopped; pins removed from {}", self.pins.path().display());
    }
}

/// What `start` hands to the loop.
pub(super) struct Started {
    pub running: Running,
    pub events: RingBuf<MapData>,
    /// The evidence packets' ring, and their files (when `[evidence]` is on).
    pub evidence_ring: RingBuf<MapData>,
    /// The web ring and detector (`[detection.web]` on).
    pub web: Option<(RingBuf<MapData>, WebRun)>,
    pub evidence: Option<EvidenceStore>,
    pub alert_log: AlertLog,
    pub metrics_listener: std::net::TcpListener,
    pub alertmanager: Option<Alertmanager>,
    pub mitigation: Mitigation,
    pub control: tokio::net::UnixListener,
    /// The reply-aware detector's maps (when enabled).
    pub reply: Option<ReplyMaps>,
    pub crowdsec: Option<CrowdsecStart>,
}

/// Holds the pin dir while `start` runs: dropped on an error path, it
/// removes this agent's pins (never the kept blocklist).
struct PinGuard(Option<PinDir>);

impl PinGuard {
    fn dir(&self) -> &PinDir {
        // Only `into_inner` empties it, and it consumes the guard.
        self.0.as_ref().unwrap_or_else(|| unreachable!())
    }

    fn into_inner(mut self) -> PinDir {
        self.0.take().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(pins) = &self.0 {
            pins.remove_pins();
        }
    }
}

/// The configuration with the command line laid over it, the Alertmanager
/// to push to, and the interfaces: all checked before anything is touched.
fn prepare(args: &RunArgs) -> Result<(Config, Option<Alertmanager>, Vec<Interface>), AgentError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    args.override_config(&mut config.agent);
    args.override_evidence(&mut config.evidence);
    let settings = &config.agent;
    if settings.interfaces.is_empty() {
        return Err(AgentError::NoInterfaces);
    }
    let alertmanager = settings.alertmanager()?.map(Alertmanager::new);
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
    object::validate_map_size(settings.map_size)?;
    Ok((config, alertmanager, interfaces))
}

fn bind_metrics(addr: SocketAddr) -> Result<std::net::TcpListener, AgentError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| AgentError::Metrics { addr, source })
}

/// Loads the object (reusing the kept blocklist) and attaches the XDP
/// program, and the egress program when the reply-aware detector is on.
/// On error, dropping the object detaches what was attached so far.
fn load_and_attach(
    config: &Config,
    interfaces: &[Interface],
    pins: &PinDir,
    contact_seed: ContactSeed,
) -> Result<(Ebpf, Vec<Attachment>, Vec<EgressAttachment>), AgentError> {
    let settings = &config.agent;
    pins.check_kept_blocklist(config.mitigation.capacity);
    for kept in xdp_link::kept_links(pins.path()) {
        if !interfaces.iter().any(|i| i.ifindex == kept.ifindex) {
            log::warn!(
                "{} keeps an XDP program attached to ifindex {}, which this agent does not watch; remove the pin to detach it",
                kept.path.display(),
                kept.ifindex
            );
        }
    }
    let blocks_pin = pins.pin_path(KEPT_PIN);
    let mut ebpf = object::load_with(
        settings.map_size,
        &config.kernel_config(),
        &LoadOptions {
            blocklist_capacity: config.mitigation.capacity,
            feed_capacity: config.mitigation.feed_capacity,
            blocks_pin: Some(&blocks_pin),
            reply: config.detection.reply_config(),
            contact_seed,
            web: config.detection.web.kernel_config(),
        },
    )?;
    let ifindexes: Vec<u32> = interfaces.iter().map(|i| i.ifindex).collect();
    ScanwatchMaps::assign_slots(&mut ebpf, &ifindexes)?;
    let mut attachments = Vec::new();
    for iface in interfaces {
        let attachment = xdp_link::attach_or_take_over(
            &mut ebpf,
            iface,
            settings.xdp_mode,
            pins.path(),
            settings.keep_attached,
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
    // The egress program: the reply-aware detector's answers, the web
    // answers' status codes.
    if config.detection.reply_scan.enabled || config.detection.web.enabled {
        for iface in interfaces {
            egress.push(attach_egress(&mut ebpf, iface)?);
            log::info!("egress program attached to {}", iface.name);
        }
    }
    Ok((ebpf, attachments, egress))
}

/// The blocklist, never-block list and feeds, with the feed names pinned
/// for `scanwatch top`.
fn take_mitigation(
    ebpf: &mut Ebpf,
    config: &Config,
    pins: &PinDir,
) -> Result<Mitigation, AgentError> {
    let never_block = default_never_block(&config.mitigation);
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
    let maps = BlockMaps::take(ebpf).map_err(crate::output::mitigation::BlockError::from)?;
    let mut mitigation = Mitigation::new(maps, config.mitigation.clone(), never_block)?;
    for problem in mitigation.load_feeds(&config.feeds) {
        log::warn!("{problem}");
    }
    Ok(mitigation)
}

/// The evidence directory, created if missing (`None` when `[evidence]` is off).
fn open_evidence(
    config: &Config,
    interfaces: &[Interface],
) -> Result<Option<EvidenceStore>, AgentError> {
    let e = &config.evidence;
    if !e.enabled {
        return Ok(None);
    }
    let store = EvidenceStore::open(StoreSettings {
        directory: e.directory.clone(),
        max_bytes: e.max_bytes,
        budget: e.packets_per_source,
        window_ns: config
            .detection
            .window_seconds
            .saturating_mul(1_000_000_000),
        names: interfaces
            .iter()
            .map(|i| (i.ifindex, i.name.clone()))
            .collect(),
    })?;
    log::info!(
        "evidence packets: up to {} per source and window into {} (cap {} bytes, {} in use)",
        e.packets_per_source,
        e.directory.display(),
        e.max_bytes,
        store.stats.directory_bytes
    );
    Ok(Some(store))
}

/// The web ring and detector when `[detection.web]` is on; the counters
/// are pinned for the metrics either way.
fn take_web(
    ebpf: &mut Ebpf,
    detector: Option<WebDetector>,
    pins: &PinDir,
) -> Result<Option<(RingBuf<MapData>, WebRun)>, AgentError> {
    WebCountersMap::take_and_pin(ebpf, pins)?;
    let Some(detector) = detector else {
        return Ok(None);
    };
    let ring = take_web_samples(ebpf)?;
    Ok(Some((
        ring,
        WebRun {
            detector,
            decode_errors: 0,
        },
    )))
}

/// Checks configuration, privileges and arguments, then sets everything up.
pub(super) fn start(args: &RunArgs) -> Result<Started, AgentError> {
    let (config, alertmanager, interfaces) = prepare(args)?;
    let crowdsec = crowdsec_of(&config)?;
    // The catalogue is read (and checked) before anything is attached.
    let web_detector = super::web::detector_of(&config.detection)?;
    let settings = config.agent.clone();
    let alert_log = AlertLog::open(&settings.alert_log)?;
    let pins = PinGuard(Some(PinDir::acquire(&settings.pin_dir)?));
    let metrics_listener = bind_metrics(settings.metrics_addr)?;
    // The contact tables' slot hash: random per start, known to the sweep.
    let contact_seed = object::random_contact_seed();
    let (mut ebpf, attachments, egress) =
        load_and_attach(&config, &interfaces, pins.dir(), contact_seed)?;
    let reply = if config.detection.reply_scan.enabled {
        Some(ReplyMaps::take(
            &mut ebpf,
            config.detection.reply_config(),
            contact_seed,
        )?)
    } else {
        None
    };
    let mitigation = take_mitigation(&mut ebpf, &config, pins.dir())?;
    let control = control::bind(&settings.control_socket)?;
    let events = take_events(&mut ebpf)?;
    let evidence_ring = take_evidence(&mut ebpf)?;
    let web = take_web(&mut ebpf, web_detector, pins.dir())?;
    pin_prefixes(&mut ebpf, config.detection.prefixes(), pins.dir())?;
    let names: Vec<(u32, &str)> = interfaces
        .iter()
        .map(|i| (i.ifindex, i.name.as_str()))
        .collect();
    let maps = ScanwatchMaps::take_and_pin(&mut ebpf, pins.dir(), &names)?;
    // Last: an agent that fails to start leaves no directory behind.
    let evidence = open_evidence(&config, &interfaces)?;
    let running = Running {
        ebpf,
        maps,
        pins: pins.into_inner(),
        attachments,
        egress,
        config,
    };
    Ok(Started {
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
    })
}
