//! The scan types scanwatch names in config, alerts and metrics.

use std::fmt;

use serde::Serialize;

/// The scan types scanwatch names in config, alerts and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanType {
    PortScan,
    HostSweep,
    PingSweep,
    StealthScan,
    UdpScan,
    SynFloodSource,
    /// The reply-aware sequential test (TRW) judged the source a scanner.
    ReplyScan,
    /// Many sources, each under every per-source threshold, together
    /// failed first contacts on many ports of one local address (or on one
    /// port of many local addresses): an alert about a target, not a source.
    DistributedScan,
    /// A web vulnerability scanner named by its User-Agent or TLS
    /// fingerprint (ATT&CK T1595.002).
    VulnScanner,
    /// Wordlist scanning of a web server: many distinct paths answered
    /// 404/403/400, or a wordlist tool named by the catalogue (T1595.003).
    WordlistScan,
}

impl ScanType {
    pub const ALL: [Self; 10] = [
        Self::PortScan,
        Self::HostSweep,
        Self::PingSweep,
        Self::StealthScan,
        Self::UdpScan,
        Self::SynFloodSource,
        Self::ReplyScan,
        Self::DistributedScan,
        Self::VulnScanner,
        Self::WordlistScan,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::PortScan => "port_scan",
            Self::HostSweep => "host_sweep",
            Self::PingSweep => "ping_sweep",
            Self::StealthScan => "stealth_scan",
            Self::UdpScan => "udp_scan",
            Self::SynFloodSource => "syn_flood_source",
            Self::ReplyScan => "reply_scan",
            Self::DistributedScan => "distributed_scan",
            Self::VulnScanner => "vuln_scanner",
            Self::WordlistScan => "wordlist_scan",
        }
    }

    /// The type named `name` (as in config keys and alerts).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for ScanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ScanType::ALL {
            assert_eq!(ScanType::from_name(t.name()), Some(t));
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!(ScanType::from_name("port_scna"), None);
    }
}
