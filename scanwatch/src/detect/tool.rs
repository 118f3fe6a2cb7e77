//! Which tool is scanning: the kernel's per-window tally of scanner-tool
//! signatures (`scanwatch_common::fingerprint`) turned into a name, a
//! confidence and the evidence.
//!
//! The kernel tests every TCP probe of a tracked source (SYN and stealth
//! probes with a whole header; from the source's admission on, so the
//! `admit_after - 1` probes that waited for it are counted but not tested)
//! and keeps, per window, the signatures some probe matched and those some
//! probe missed. A tool is named when every tested probe matched its
//! signature; several matching signatures name the most specific one.

use scanwatch_common::{
    ProbeKind, SourceStats,
    fingerprint::{self, HPING3, MASSCAN, MIRAI, NMAP, OS_STACK, UNICORNSCAN, ZMAP},
};
use serde::Serialize;

/// The name when no signature held for every tested probe.
pub const UNKNOWN: &str = "unknown";

/// Every name an alert can carry (a bounded metric label).
pub const NAMES: [&str; 8] = [
    "mirai",
    "masscan",
    "zmap",
    "unicornscan",
    "hping3",
    "nmap",
    "os-stack",
    UNKNOWN,
];

/// One signature: its bit, name, how likely a match by chance is not, and
/// the fields it reads (the `matched` list of an alert).
struct Signature {
    bit: u8,
    name: &'static str,
    confidence: f64,
    features: &'static [&'static str],
}

/// Most specific first (a probe can match several: masscan's IP ID
/// relation holds by chance for 1 probe in 65,536).
const SIGNATURES: [Signature; 7] = [
    Signature {
        bit: MIRAI,
        name: "mirai",
        confidence: 0.99,
        features: &["tcp_seq == destination address", "no tcp options"],
    },
    Signature {
        bit: MASSCAN,
        name: "masscan",
        confidence: 0.99,
        features: &["ip_id == (destination ^ port ^ tcp_seq) & 0xffff"],
    },
    Signature {
        bit: ZMAP,
        name: "zmap",
        confidence: 0.95,
        features: &["ip_id == 54321", "window 65535"],
    },
    Signature {
        bit: UNICORNSCAN,
        name: "unicornscan",
        confidence: 0.8,
        features: &["window 4128", "only an MSS option"],
    },
    Signature {
        bit: HPING3,
        name: "hping3",
        confidence: 0.7,
        features: &["window 512", "no tcp options"],
    },
    Signature {
        bit: NMAP,
        name: "nmap",
        confidence: 0.9,
        features: &[
            "window 1024",
            "only an MSS option on SYN probes, none on others",
        ],
    },
    Signature {
        bit: OS_STACK,
        name: "os-stack",
        confidence: 0.9,
        features: &["an operating system's SYN options (MSS and more)"],
    },
];

/// Fewer tested probes than this halve the confidence.
const FEW_PROBES: u64 = 3;

/// What one evidence packet of the source shows (header fields only
/// visible across probes: the kernel tests each probe alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSample {
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub src_port: Option<u16>,
    pub udp: bool,
}

/// Fewest evidence packets to judge fields across probes.
const FEW_SAMPLES: usize = 4;

/// nmap's raw-socket probes: a random TTL in 37..=59 unless `--ttl`
/// (`nmap.h`, `tcpip.cc`), a source port constant during the scan.
const NMAP_TTL: std::ops::RangeInclusive<u8> = 37..=59;

/// The tool an alert names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScannerTool {
    /// One of [`NAMES`]: a tool, `os-stack` (a real TCP stack: nmap -sT,
    /// curl, a browser), or `unknown`.
    pub name: &'static str,
    /// 0 to 1 (0 for `unknown`).
    pub confidence: f64,
    /// The fields the named signature reads.
    pub matched: Vec<&'static str>,
    /// The window's TCP probes when every tested one matched (else 0).
    pub probes_matched: u64,
    /// The window's TCP probes (SYN and stealth).
    pub probes_seen: u64,
}

impl ScannerTool {
    /// From a source's kernel entry.
    pub fn from_stats(s: &SourceStats) -> Self {
        let seen = s.probes_of(ProbeKind::Syn) + s.probes_of(ProbeKind::Stealth);
        Self::from_tally(s.crossed, seen)
    }

    /// From the `crossed` word and the window's TCP probes.
    pub fn from_tally(crossed: u64, probes_seen: u64) -> Self {
        let held = fingerprint::consistent(crossed);
        match SIGNATURES.iter().find(|sig| held & sig.bit != 0) {
            Some(sig) => Self {
                name: sig.name,
                confidence: if probes_seen < FEW_PROBES {
                    sig.confidence / 2.0
                } else {
                    sig.confidence
                },
                matched: sig.features.to_vec(),
                probes_matched: probes_seen,
                probes_seen,
            },
            None => Self {
                name: UNKNOWN,
                confidence: 0.0,
                matched: Vec::new(),
                probes_matched: 0,
                probes_seen,
            },
        }
    }

    /// Names nmap's UDP scans (`-sU`), whose datagrams carry no per-probe
    /// signature, from the source's evidence packets: every one UDP, TTLs
    /// in nmap's random range and at least three different ones (an OS
    /// keeps one TTL), one or two source ports (nmap keeps one, plus retries).
    /// Only when the kernel's tally named nothing.
    pub fn refine(&mut self, samples: &[ProbeSample]) {
        if self.name != UNKNOWN || samples.len() < FEW_SAMPLES || !samples.iter().all(|s| s.udp) {
            return;
        }
        let ttls: std::collections::BTreeSet<u8> = samples.iter().map(|s| s.ttl).collect();
        let ports: std::collections::BTreeSet<Option<u16>> =
            samples.iter().map(|s| s.src_port).collect();
        if ttls.len() >= 3 && ttls.iter().all(|t| NMAP_TTL.contains(t)) && ports.len() <= 2 {
            *self = Self {
                name: "nmap",
                confidence: 0.8,
                matched: vec![
                    "udp probes (evidence packets)",
                    "ttl random within 37..59",
                    "source port constant",
                ],
                probes_matched: samples.len() as u64,
                probes_seen: samples.len() as u64,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use scanwatch_common::fingerprint::{ALL, tally_bits};

    use super::*;

    #[test]
    fn every_signature_has_a_name_in_the_label_set() {
        assert_eq!(SIGNATURES.iter().fold(0, |a, s| a | s.bit), ALL);
        for sig in &SIGNATURES {
            assert!(NAMES.contains(&sig.name), "{}", sig.name);
            let tool = ScannerTool::from_tally(tally_bits(sig.bit), 10);
            assert_eq!((tool.name, tool.probes_matched), (sig.name, 10));
        }
    }

    #[test]
    fn nmap_udp_scans_are_named_from_their_evidence_packets() {
        let sample = |ttl, port| ProbeSample {
            ttl,
            src_port: Some(port),
            udp: true,
        };
        let nmap: Vec<ProbeSample> = [41, 55, 38, 41, 59, 47]
            .iter()
            .map(|t| sample(*t, 61_000))
            .collect();
        let mut tool = ScannerTool::from_tally(0, 0);
        tool.refine(&nmap);
        assert_eq!((tool.name, tool.probes_seen), ("nmap", 6));
        // An OS's datagrams keep one TTL; another port each; too few; TCP.
        let os: Vec<ProbeSample> = (0..6).map(|i| sample(64, 61_000 + i)).collect();
        let one_ttl: Vec<ProbeSample> = (0..6).map(|_| sample(50, 61_000)).collect();
        for other in [os, one_ttl, nmap[..3].to_vec()] {
            let mut tool = ScannerTool::from_tally(0, 0);
            tool.refine(&other);
            assert_eq!(tool.name, UNKNOWN, "{other:?}");
        }
        let mut tcp = nmap.clone();
        tcp[0].udp = false;
        let mut tool = ScannerTool::from_tally(0, 0);
        tool.refine(&tcp);
        assert_eq!(tool.name, UNKNOWN);
        // A name from the kernel's tally stays.
        let mut named = ScannerTool::from_tally(tally_bits(HPING3), 9);
        named.refine(&nmap);
        assert_eq!(named.name, "hping3");
    }

    #[test]
    fn a_tool_is_named_only_when_every_tested_probe_matched() {
        // masscan's relation held once by chance on an nmap probe: nmap.
        let mixed = tally_bits(NMAP) | tally_bits(NMAP | MASSCAN);
        assert_eq!(ScannerTool::from_tally(mixed, 40).name, "nmap");
        // Both on every probe: the more specific.
        assert_eq!(
            ScannerTool::from_tally(tally_bits(MIRAI | HPING3), 9).name,
            "mirai"
        );
        // nmap -sS probes, then an OS-stack connect: nothing held throughout.
        let both = tally_bits(NMAP) | tally_bits(OS_STACK);
        let tool = ScannerTool::from_tally(both, 5);
        assert_eq!((tool.name, tool.probes_matched), (UNKNOWN, 0));
        assert_eq!(ScannerTool::from_tally(0, 0).name, UNKNOWN);
        assert_eq!(
            ScannerTool::from_tally(tally_bits(ZMAP), 2).confidence,
            0.95 / 2.0
        );
    }
}
