//! `scanwatch run`: load, attach, pin, detect, alert, report; detach
//! cleanly on SIGINT/SIGTERM; reopen the alert log on SIGHUP.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
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
    alerts::{AlertLog, AlertLogError},
    bpffs::{PinDir, PinDirError},
    cli::RunArgs,
    config::{Config, ConfigError},
    engine::Engine,
    loader::{self, Attachment, Interface, LoadError},
    maps::{MapsError, ScanwatchMaps, take_events},
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
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("cannot poll the events ring buffer: {0}")]
    Events(std::io::Error),
}

impl AgentError {
    /// Exit status: 2 for bad configuration or arguments, 1 otherwise.
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::DuplicateInterface(_) => 2,
            _ => 1,
        }
    }
}

/// What `run` has set up; torn down in reverse order.
struct Running {
    ebpf: Ebpf,
    maps: ScanwatchMaps,
    pins: PinDir,
    attachments: Vec<Attachment>,
    config: Config,
}

impl Running {
    fn shutdown(mut self) {
        for attachment in std::mem::take(&mut self.attachments) {
            loader::detach(&mut self.ebpf, attachment);
        }
        self.pins.remove_pins();
        log::info!("stopped; pins removed from {}", self.pins.path().display());
    }
}

/// Checks configuration, privileges and arguments, then sets everything up.
/// Returns the running state, the events ring buffer and the alert log.
fn start(args: &RunArgs) -> Result<(Running, RingBuf<MapData>, AlertLog), AgentError> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    privileges::require("scanwatch run", &[Capability::Bpf, Capability::NetAdmin])?;
    privileges::raise_memlock_rlimit();
    let mut interfaces: Vec<Interface> = Vec::new();
    for name in &args.ifaces {
        let iface = Interface::resolve(name)?;
        if interfaces.iter().any(|i| i.ifindex == iface.ifindex) {
            return Err(AgentError::DuplicateInterface(name.clone()));
        }
        interfaces.push(iface);
    }
    loader::validate_map_size(args.map_size)?;
    let alert_log = AlertLog::open(&args.alert_log)?;
    let pins = PinDir::acquire(&args.pin_dir)?;
    let mut ebpf = loader::load(args.map_size, &config.detection.kernel_config())?;
    let mut attachments = Vec::new();
    for iface in &interfaces {
        // On error, dropping `ebpf` detaches what was attached so far.
        let attachment = loader::attach(&mut ebpf, iface, args.xdp_mode)?;
        log::info!(
            "attached to {} (ifindex {}) in {} mode",
            iface.name,
            iface.ifindex,
            attachment.mode.as_str()
        );
        attachments.push(attachment);
    }
    let names: Vec<(u32, &str)> = interfaces
        .iter()
        .map(|i| (i.ifindex, i.name.as_str()))
        .collect();
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
        config,
    };
    Ok((running, events, alert_log))
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), AgentError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;
    let (running, events, alert_log) = start(&args)?;
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
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns
    // the ring buffer, and always reports that same fd.
    let mut events =
        unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) }
            .map_err(|e| AgentError::Events(e.into()))?;
    let mut summary = Summary::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(args.interval));
    let mut active = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.map_err(AgentError::Events)?;
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    engine.on_record(&item, &running.maps, Instant::now());
                }
                guard.clear_ready();
            }
            _ = active.tick() => engine.poll_active(&running.maps, Instant::now()),
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
            _ = sighup.recv() => engine.reopen_log(),
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
        }
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
