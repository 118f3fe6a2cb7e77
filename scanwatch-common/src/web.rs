//! Web-layer sampling, shared by the kernel and the agent.
//!
//! The XDP program hands the agent the first payload segment of every
//! HTTP/1.x request and TLS ClientHello sent to a configured web port
//! ([`WebConfig::port_bits`]) through the `WEB_SAMPLES` ring buffer: at most
//! [`WEB_SAMPLE_BYTES`] bytes of it, never the packet itself. A segment is
//! a candidate when its first bytes are an HTTP method and a space
//! ([`starts_request`]) or a TLS handshake record holding a ClientHello:
//! the first data of every connection a web client opens, and every later
//! request of a keep-alive connection (wordlist scanners send thousands of
//! requests over a few connections). Any other segment (request bodies,
//! TLS application data, pure ACKs) pays the port test and, on a web port,
//! one read of its first bytes.
//!
//! The TC egress program reports the status code of every plain-HTTP/1.x
//! response (`HTTP/1.1 404 ...`) from a web port in a small record on the
//! same ring, so the agent sees a request before its answer.
//!
//! A full ring loses the record, counted ([`WebCounter`]), never the packet.

use crate::layout::assert_layout;

/// Name of the ring buffer.
pub const WEB_SAMPLES_MAP: &str = "WEB_SAMPLES";
/// Name of the per-CPU counters.
pub const WEB_COUNTERS_MAP: &str = "WEB_COUNTERS";
/// Name of the load-time settings global.
pub const WEB_CONFIG_GLOBAL: &str = "WEB_CONFIG";
/// Size of the ring buffer in bytes (a power of two, a multiple of the page
/// size): about 1,800 request samples.
pub const WEB_RING_BYTES: u32 = 1 << 20;
/// Payload bytes a request sample keeps at most.
pub const WEB_SAMPLE_BYTES: usize = 512;
/// Most web ports in `[detection.web] ports`.
pub const MAX_WEB_PORTS: usize = 8;
/// The default web ports (`[detection.web] ports`).
pub const DEFAULT_WEB_PORTS: [u16; 5] = [80, 8080, 8000, 443, 8443];
/// Words of [`WebConfig::port_bits`]: one bit per TCP port.
pub const PORT_WORDS: usize = 65_536 / 64;

/// Settings, set by the agent at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebConfig {
    /// Sample at all (0: never; the programs skip everything).
    pub enabled: u32,
    /// Layout version, 1 (never zero: an all-zero global would be placed in
    /// `.bss`, which cannot be set before loading).
    pub version: u32,
    /// The web ports: bit `port % 64` of word `port / 64` (one load per
    /// test instead of a compare per configured port).
    pub port_bits: [u64; PORT_WORDS],
}

assert_layout!(WebConfig { enabled, version, port_bits }, size 8200, align 8);

impl WebConfig {
    /// Samples nothing.
    pub const DISABLED: Self = Self {
        enabled: 0,
        version: 1,
        port_bits: [0; PORT_WORDS],
    };

    /// Sampling on `ports`.
    pub fn with_ports(ports: &[u16]) -> Self {
        let mut cfg = Self {
            enabled: 1,
            ..Self::DISABLED
        };
        for port in ports {
            cfg.port_bits[usize::from(*port) / 64] |= 1 << (port % 64);
        }
        cfg
    }

    /// `port` is one of the web ports; `word(i)` reads `port_bits[i]`.
    #[inline(always)]
    pub fn is_web_port(word: impl Fn(usize) -> u64, port: u16) -> bool {
        (word(usize::from(port) / 64) >> (port % 64)) & 1 != 0
    }
}

/// Record kinds ([`WebHeader::kind`]).
pub mod record {
    /// A [`super::WebRequestRecord`].
    pub const REQUEST: u32 = 1;
    /// A [`super::WebResponseRecord`].
    pub const RESPONSE: u32 = 2;
}

/// The part every record starts with: which connection, when, where.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebHeader {
    /// [`record::REQUEST`] or [`record::RESPONSE`].
    pub kind: u32,
    pub ifindex: u32,
    /// Kernel-clock ns.
    pub time_ns: u64,
    /// The client's address (IPv4-mapped for IPv4).
    pub remote: [u8; 16],
    /// This host's address (IPv4-mapped for IPv4).
    pub local: [u8; 16],
    pub remote_port: u16,
    pub local_port: u16,
    /// TCP payload bytes of the segment.
    pub segment_len: u32,
}

assert_layout!(
    WebHeader { kind, ifindex, time_ns, remote, local, remote_port, local_port, segment_len },
    size 56,
    align 8
);

/// The first payload segment of a request or ClientHello.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebRequestRecord {
    pub head: WebHeader,
    /// Bytes of `bytes` holding the segment's start (0: the copy failed).
    pub captured: u32,
    pub _pad: u32,
    pub bytes: [u8; WEB_SAMPLE_BYTES],
}

assert_layout!(WebRequestRecord { head, captured, _pad, bytes }, size 576, align 8);

/// The status code of an HTTP/1.x response.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebResponseRecord {
    pub head: WebHeader,
    /// 100..=999, from the status line's three digits.
    pub status: u32,
    pub _pad: u32,
}

assert_layout!(WebResponseRecord { head, status, _pad }, size 64, align 8);

/// Per-CPU counters of the web sampling (slots of [`WebCounters`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebCounter {
    /// Request and ClientHello segments handed to the agent.
    RequestsSampled = 0,
    /// Request segments lost because the ring was full.
    RequestsDropped = 1,
    /// Response status codes handed to the agent.
    ResponsesSampled = 2,
    /// Response status codes lost because the ring was full.
    ResponsesDropped = 3,
}

/// Slots of [`WebCounters`].
pub const WEB_COUNTER_SLOTS: usize = 4;

impl WebCounter {
    /// Every counter, in slot order.
    pub const ALL: [Self; WEB_COUNTER_SLOTS] = [
        Self::RequestsSampled,
        Self::RequestsDropped,
        Self::ResponsesSampled,
        Self::ResponsesDropped,
    ];

    /// Stable snake_case name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RequestsSampled => "requests_sampled",
            Self::RequestsDropped => "requests_dropped",
            Self::ResponsesSampled => "responses_sampled",
            Self::ResponsesDropped => "responses_dropped",
        }
    }
}

/// The web counters, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WebCounters {
    pub counters: [u64; WEB_COUNTER_SLOTS],
}

assert_layout!(WebCounters { counters }, size 32, align 8);

/// The first four bytes of a request line, as a big-endian word: the HTTP
/// methods scanners and clients send (a method of three letters with its
/// space). WebDAV's PROPFIND and friends are left out.
const METHODS: [u32; 9] = [
    u32::from_be_bytes(*b"GET "),
    u32::from_be_bytes(*b"POST"),
    u32::from_be_bytes(*b"HEAD"),
    u32::from_be_bytes(*b"PUT "),
    u32::from_be_bytes(*b"DELE"),
    u32::from_be_bytes(*b"OPTI"),
    u32::from_be_bytes(*b"PATC"),
    u32::from_be_bytes(*b"CONN"),
    u32::from_be_bytes(*b"TRAC"),
];

/// First bytes of a candidate, 0..64: a TLS handshake record (0x16).
const FIRST_LOW: u64 = 1 << 0x16;
/// First bytes of a candidate, 64..128: the methods' first letters.
const FIRST_HIGH: u64 = {
    let letters = *b"CDGHOPT";
    let mut bits = 0u64;
    let mut i = 0;
    while i < letters.len() {
        bits |= 1 << (letters[i] - 64);
        i += 1;
    }
    bits
};

/// Bytes [`starts_request`] reads.
pub const PREFIX_BYTES: usize = 6;

/// A payload starting with these bytes is sampled: an HTTP request line
/// (a method above) or a TLS handshake record (0x16 0x03 x) whose first
/// message is a ClientHello (type 1).
#[inline(always)]
pub fn starts_request(b: &[u8; PREFIX_BYTES]) -> bool {
    // Most segments that are not a request's start fail on their first
    // byte (TLS application data starts with 0x17).
    let first = b[0];
    let may = if first < 64 {
        FIRST_LOW >> first
    } else if first < 128 {
        FIRST_HIGH >> (first - 64)
    } else {
        0
    };
    if may & 1 == 0 {
        return false;
    }
    let word = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut http = false;
    let mut i = 0;
    while i < METHODS.len() {
        http |= word == METHODS[i];
        i += 1;
    }
    let hello = b[0] == 0x16 && b[1] == 0x03 && b[5] == 0x01;
    http | hello
}

/// Bytes of a response's start [`status_code`] reads: `HTTP/1.x NNN`.
pub const STATUS_BYTES: usize = 12;

/// The status code of a segment starting with an HTTP/1.x status line.
#[inline(always)]
pub fn status_code(b: &[u8; STATUS_BYTES]) -> Option<u32> {
    // Two word compares (a slice compare would be a call to `bcmp` in
    // the kernel program): "HTTP", then "/1." and the space after the
    // minor version.
    let head = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let version = u32::from_be_bytes([b[4], b[5], b[6], b[8]]);
    if head != u32::from_be_bytes(*b"HTTP") || version != u32::from_be_bytes(*b"/1. ") {
        return None;
    }
    let digit = |c: u8| c.wrapping_sub(b'0');
    let (d0, d1, d2) = (digit(b[9]), digit(b[10]), digit(b[11]));
    if d0 == 0 || d0 > 9 || d1 > 9 || d2 > 9 {
        return None;
    }
    Some(u32::from(d0) * 100 + u32::from(d1) * 10 + u32::from(d2))
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, without padding, valid for any bit pattern.
    unsafe impl aya::Pod for super::WebConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WebCounters {}
    // SAFETY: as above (the ring's records).
    unsafe impl aya::Pod for super::WebHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WebRequestRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WebResponseRecord {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &[u8]) -> [u8; PREFIX_BYTES] {
        let mut b = [0; PREFIX_BYTES];
        b.copy_from_slice(&s[..PREFIX_BYTES]);
        b
    }

    #[test]
    fn requests_and_client_hellos_are_candidates() {
        for req in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /login HTTP/1.1",
            b"HEAD /x HTTP/1.0",
            b"PUT /a HTTP/1.1",
            b"DELETE /a HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"PATCH /a HTTP/1.1",
            b"CONNECT a:443 HTTP/1.1",
            b"TRACE / HTTP/1.1",
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00],
        ] {
            assert!(starts_request(&prefix(req)), "{req:?}");
        }
        for other in [
            &b"get / HTTP/1.1"[..],
            b"GETX / HTTP/1.1",
            b"HTTP/1.1 200 OK",
            b"PRI * HTTP/2.0",
            &[0x17, 0x03, 0x03, 0x00, 0x20, 0x01],
            &[0x16, 0x03, 0x03, 0x00, 0x20, 0x02],
            &[0; 6],
        ] {
            assert!(!starts_request(&prefix(other)), "{other:?}");
        }
    }

    #[test]
    fn status_lines_give_their_code() {
        let line = |s: &[u8]| {
            let mut b = [0; STATUS_BYTES];
            b.copy_from_slice(&s[..STATUS_BYTES]);
            status_code(&b)
        };
        assert_eq!(line(b"HTTP/1.1 404 Not Found"), Some(404));
        assert_eq!(line(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(line(b"HTTP/1.1 099 x"), None);
        assert_eq!(line(b"HTTP/1.1 4x4 x"), None);
        assert_eq!(line(b"HTTP/2.0 200 x"), None);
        assert_eq!(line(b"HTTP/1.1404 x "), None);
    }

    #[test]
    fn only_configured_ports_match() {
        let cfg = WebConfig::with_ports(&[80, 8443, 0, 65535]);
        let get = |i: usize| cfg.port_bits[i];
        for port in [80, 8443, 0, 65535] {
            assert!(WebConfig::is_web_port(get, port), "{port}");
        }
        for port in [81, 443, 8442, 65534, 1] {
            assert!(!WebConfig::is_web_port(get, port), "{port}");
        }
        let off = WebConfig::DISABLED;
        assert!((0..=u16::MAX).all(|p| !WebConfig::is_web_port(|i| off.port_bits[i], p)));
        assert_ne!(off.version, 0);
    }
}
