//! What can stop `scanwatch run`, with its exit status, and the
//! capabilities it needs.

use crate::{
    app::{
        control::ControlError,
        privileges::{Capability, PrivilegeError},
    },
    config::ConfigError,
    kernel::{
        detect_maps::MapsError, object::LoadError, pins::PinDirError, reply_maps::ReplyError,
    },
    model::EndpointError,
    output::{alert_log::AlertLogError, evidence::EvidenceDirError, mitigation::BlockError},
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
    Alertmanager(#[from] EndpointError),
    #[error(transparent)]
    Mitigation(#[from] BlockError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Reply(#[from] ReplyError),
    #[error(transparent)]
    Evidence(#[from] EvidenceDirError),
    #[error("[crowdsec] {0}")]
    CrowdsecSecret(String),
    /// The web scanner catalogue cannot be read or is invalid.
    #[error("{0}")]
    WebCatalogue(String),
}

impl AgentError {
    /// Exit status: 2 for bad configuration or arguments, 1 otherwise.
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_)
            | Self::DuplicateInterface(_)
            | Self::NoInterfaces
            | Self::Load(LoadError::UnknownInterface(_) | LoadError::MapSize(_))
            | Self::Alertmanager(_)
            | Self::CrowdsecSecret(_)
            | Self::WebCatalogue(_) => 2,
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
