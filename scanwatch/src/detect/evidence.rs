//! What one source did in its current window, decoded from the kernel's
//! entries: probe counts, distinct ports and hosts, sample ports, the
//! kernel's crossings and the reply-aware test's state.

use scanwatch_common::{
    ProbeKind, SourceStats,
    classify::PROBE_KINDS,
    maps::lens,
    sketch::{
        self, HOST_BITS, HOST_ICMP, HOST_SET, ICMP_BITS, PORT_BITS, PORT_SET, PORT_UDP, UDP_BITS,
    },
    trw::{ReplyConfig, ReplyStats},
};
use serde::Serialize;

/// Probe counts by kind, as they appear (flattened) in `top --json` and alerts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProbeCounts {
    pub syn: u64,
    pub stealth: u64,
    pub udp: u64,
    pub icmp_echo: u64,
    pub icmp_other_probe: u64,
    pub fragment: u64,
}

impl ProbeCounts {
    /// From counters indexed by [`ProbeKind::index`].
    pub const fn from_array(c: &[u64; PROBE_KINDS]) -> Self {
        Self {
            syn: c[ProbeKind::Syn as usize],
            stealth: c[ProbeKind::Stealth as usize],
            udp: c[ProbeKind::Udp as usize],
            icmp_echo: c[ProbeKind::IcmpEcho as usize],
            icmp_other_probe: c[ProbeKind::IcmpOtherProbe as usize],
            fragment: c[ProbeKind::Fragment as usize],
        }
    }
}

/// What one source did in its current window, decoded from the kernel entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// Probes in the window, by kind.
    pub window_probes: [u64; PROBE_KINDS],
    pub distinct_ports: u64,
    pub distinct_udp_ports: u64,
    pub distinct_hosts: u64,
    pub distinct_icmp_hosts: u64,
    /// Up to 16 targeted ports, in the order first seen.
    pub sample_ports: Vec<u16>,
    /// Trigger bits the kernel reported in this window.
    pub triggers: u32,
    pub window_start_ns: u64,
    /// The reply-aware test's state (zero until the engine reads it).
    pub reply: ReplyEvidence,
}

impl Evidence {
    pub fn from_stats(s: &SourceStats) -> Self {
        let len = |lane| lens::get(s.lens, lane);
        let bits = |lane| lens::get(s.bits, lane);
        let ports_full = len(lens::PORTS) as usize >= PORT_SET;
        let hosts_full = len(lens::HOSTS) as usize >= HOST_SET;
        let sample_ports = s.ports_in_set().map(sketch::entry_port).collect();
        let udp_in_set = s.ports_in_set().filter(|e| e & PORT_UDP != 0).count() as u32;
        let icmp_in_set = s.hosts_in_set().filter(|e| e & HOST_ICMP != 0).count() as u32;
        let mut window_probes = [0u64; PROBE_KINDS];
        for (out, n) in window_probes.iter_mut().zip(s.probes.iter()) {
            *out = u64::from(*n);
        }
        Self {
            window_probes,
            distinct_ports: sketch::distinct(
                len(lens::PORTS),
                ports_full,
                bits(lens::PORTS),
                PORT_BITS,
            ),
            distinct_udp_ports: sketch::distinct(
                udp_in_set.max(len(lens::UDP)),
                ports_full,
                bits(lens::UDP),
                UDP_BITS,
            ),
            distinct_hosts: sketch::distinct(
                len(lens::HOSTS),
                hosts_full,
                bits(lens::HOSTS),
                HOST_BITS,
            ),
            distinct_icmp_hosts: sketch::distinct(
                icmp_in_set.max(len(lens::ICMP)),
                hosts_full,
                bits(lens::ICMP),
                ICMP_BITS,
            ),
            sample_ports,
            triggers: s.reported(),
            window_start_ns: s.window_start_ns,
            reply: ReplyEvidence::default(),
        }
    }

    pub fn probes(&self, kind: ProbeKind) -> u64 {
        self.window_probes[kind.index()]
    }

    pub fn total(&self) -> u64 {
        self.window_probes.iter().sum()
    }
}

/// The reply-aware detector's evidence for one source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyEvidence {
    pub successes: u64,
    pub failures: u64,
    pub no_answers: u64,
    /// Fixed-point log-likelihood ratio (`trw::SCALE`).
    pub llr: i64,
    /// Fixed-point upper boundary ln(β/α).
    pub upper: i64,
    /// At or above the upper boundary: a scanner.
    pub flagged: bool,
    /// Successes, and failures plus no-answers, at the last reported crossing.
    pub crossing_successes: u64,
    pub crossing_failures: u64,
}

impl ReplyEvidence {
    pub fn from_stats(s: &ReplyStats, cfg: &ReplyConfig) -> Self {
        Self {
            successes: s.successes,
            failures: s.failures,
            no_answers: s.no_answers,
            llr: s.llr,
            upper: cfg.upper,
            flagged: cfg.enabled != 0 && s.llr >= cfg.upper,
            crossing_successes: s.crossing_successes,
            crossing_failures: s.crossing_failures,
        }
    }

    /// Any first contact answered or timed out.
    pub const fn any(&self) -> bool {
        self.successes + self.failures + self.no_answers > 0
    }
}

/// Evidence for unit tests: `total` SYN probes, 20 ports, 1 host.
#[cfg(test)]
pub(crate) fn test_evidence(triggers: u32, total: u64, window_start_ns: u64) -> Evidence {
    Evidence {
        window_probes: [total, 0, 0, 0, 0, 0],
        distinct_ports: 20,
        distinct_udp_ports: 0,
        distinct_hosts: 1,
        distinct_icmp_hosts: 0,
        sample_ports: vec![22, 80],
        triggers,
        window_start_ns,
        reply: ReplyEvidence::default(),
    }
}

#[cfg(test)]
mod tests {
    use scanwatch_common::{
        maps::{host_word, port_word},
        trigger,
    };

    use super::*;

    #[test]
    fn evidence_decodes_the_kernel_window() {
        let mut s = SourceStats::new(&scanwatch_common::SourceKey::v4([198, 18, 0, 9]), 5, 2);
        s.sets[port_word(0)] = u64::from(sketch::port_entry(22, false))
            | (u64::from(sketch::port_entry(53, true)) << 32);
        s.lens = 2 << lens::PORTS | 1 << lens::UDP | 1 << lens::HOSTS | 1 << lens::ICMP;
        s.sets[host_word(0)] = u64::from(0x1234 | HOST_ICMP);
        s.probes[0] = 3;
        s.crossed = u64::from(trigger::PORTS) | (7 << 32);
        let ev = Evidence::from_stats(&s);
        assert_eq!(ev.sample_ports, vec![22, 53]);
        assert_eq!((ev.distinct_ports, ev.distinct_udp_ports), (2, 1));
        assert_eq!((ev.distinct_hosts, ev.distinct_icmp_hosts), (1, 1));
        assert_eq!(ev.probes(ProbeKind::Syn), 3);
        assert_eq!(ev.triggers, trigger::PORTS);
    }
}
