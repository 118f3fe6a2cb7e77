//! `scanwatch run`: load, attach, pin, report, and detach cleanly on
//! SIGINT/SIGTERM.

use std::{collections::BTreeMap, time::Duration};

use aya::Ebpf;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    bpffs::{PinDir, PinDirError},
    cli::RunArgs,
    loader::{self, Attachment, Interface, LoadError},
    maps::{MapsError, ScanwatchMaps},
    privileges::{self, Capability, PrivilegeError},
    summary::Summary,
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    PinDir(#[from] PinDirError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("interface {0} given twice")]
    DuplicateInterface(String),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}

/// What `run` has set up; torn down in reverse order.
struct Running {
    ebpf: Ebpf,
    maps: ScanwatchMaps,
    pins: PinDir,
    attachments: Vec<Attachment>,
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

/// Checks privileges and arguments, then sets everything up.
fn start(args: &RunArgs) -> Result<Running, AgentError> {
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
    let pins = PinDir::acquire(&args.pin_dir)?;
    let mut ebpf = loader::load(args.map_size)?;
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
    let maps = match ScanwatchMaps::take_and_pin(&mut ebpf, &pins, &names) {
        Ok(maps) => maps,
        Err(e) => {
            pins.remove_pins();
            return Err(e.into());
        }
    };
    Ok(Running {
        ebpf,
        maps,
        pins,
        attachments,
    })
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), AgentError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let running = start(&args)?;
    log::info!(
        "scanwatch {} running: tracking up to {} sources, maps pinned in {}",
        env!("CARGO_PKG_VERSION"),
        running.maps.source_capacity(),
        running.pins.path().display()
    );
    let names: BTreeMap<u32, String> = running
        .attachments
        .iter()
        .map(|a| (a.iface.ifindex, a.iface.name.clone()))
        .collect();
    let mut summary = Summary::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(args.interval));
    ticker.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                match running.maps.iface_counters() {
                    Ok(counters) => {
                        for line in summary.lines(&counters, &names) {
                            log::info!("{line}");
                        }
                    }
                    Err(e) => log::warn!("cannot read counters: {e}"),
                }
            }
            _ = sigint.recv() => { log::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { log::info!("SIGTERM: stopping"); break; }
        }
    }
    running.shutdown();
    Ok(())
}
