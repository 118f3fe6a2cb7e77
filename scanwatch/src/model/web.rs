//! The web layer's vocabulary: a TCP connection to a local web port, the
//! events the kernel reports about it (the first payload segment of a
//! request or TLS ClientHello, the status code of an HTTP/1.x response),
//! and the two web scan kinds.

use std::{fmt, net::SocketAddr};

use serde::{Deserialize, Serialize};

use super::ScanType;

/// A TCP connection from a remote client to a local web port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Connection {
    /// The client (the source judged).
    pub remote: SocketAddr,
    /// The local server address and port.
    pub local: SocketAddr,
}

/// What the kernel reports about a web connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebEvent {
    /// First payload segment of a request/ClientHello (at most 512 bytes
    /// captured; `segment_len` = whole TCP payload length).
    Request {
        conn: Connection,
        time_ns: u64,
        segment_len: u32,
        payload: Vec<u8>,
    },
    /// Status code of an HTTP/1.x response from `conn.local` to `conn.remote`.
    Response {
        conn: Connection,
        time_ns: u64,
        status: u16,
    },
}

impl WebEvent {
    /// The connection the event is about.
    pub const fn conn(&self) -> &Connection {
        match self {
            Self::Request { conn, .. } | Self::Response { conn, .. } => conn,
        }
    }

    /// When the kernel saw it (kernel clock, ns).
    pub const fn time_ns(&self) -> u64 {
        match self {
            Self::Request { time_ns, .. } | Self::Response { time_ns, .. } => *time_ns,
        }
    }
}

/// The two web-layer scan kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebScanKind {
    /// A vulnerability scanner (ATT&CK T1595.002).
    VulnScanner,
    /// Wordlist scanning (ATT&CK T1595.003).
    WordlistScan,
}

impl WebScanKind {
    pub const ALL: [Self; 2] = [Self::VulnScanner, Self::WordlistScan];

    /// As in alerts, the catalogue and the config.
    pub const fn name(self) -> &'static str {
        match self {
            Self::VulnScanner => "vuln_scanner",
            Self::WordlistScan => "wordlist_scan",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The ATT&CK sub-technique.
    pub const fn technique(self) -> &'static str {
        match self {
            Self::VulnScanner => "T1595.002",
            Self::WordlistScan => "T1595.003",
        }
    }

    /// The scan type alerts and metrics name it by.
    pub const fn scan_type(self) -> ScanType {
        match self {
            Self::VulnScanner => ScanType::VulnScanner,
            Self::WordlistScan => ScanType::WordlistScan,
        }
    }
}

impl fmt::Display for WebScanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_match_scan_types() {
        for k in WebScanKind::ALL {
            assert_eq!(WebScanKind::from_name(k.name()), Some(k));
            assert_eq!(k.scan_type().name(), k.name());
        }
        assert_eq!(WebScanKind::VulnScanner.technique(), "T1595.002");
        assert_eq!(WebScanKind::WordlistScan.technique(), "T1595.003");
        assert_eq!(WebScanKind::from_name("vuln"), None);
    }
}
