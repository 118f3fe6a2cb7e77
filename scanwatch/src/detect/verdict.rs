//! Decisions: which scan types a source's window shows, how confident, and
//! when to alert (suppression and escalation). Pure logic over synthetic or
//! kernel-read state, unit-tested with made-up counts and times.

use std::{
    collections::HashMap,
    fmt,
    time::{Duration, Instant},
};

use scanwatch_common::{
    ProbeKind, SourceKey, SourceStats, WindowState,
    classify::PROBE_KINDS,
    sketch::{
        self, HOST_BITS, HOST_ICMP, HOST_SET, ICMP_BITS, PORT_BITS, PORT_SET, PORT_UDP, UDP_BITS,
    },
    trigger,
};
use serde::Serialize;

use crate::config::Detection;

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
}

impl ScanType {
    pub const ALL: [Self; 7] = [
        Self::PortScan,
        Self::HostSweep,
        Self::PingSweep,
        Self::StealthScan,
        Self::UdpScan,
        Self::SynFloodSource,
        Self::ReplyScan,
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
        }
    }
}

impl fmt::Display for ScanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    pub reply: crate::reply::ReplyEvidence,
}

impl Evidence {
    pub fn from_stats(s: &SourceStats) -> Self {
        let w = &s.window;
        let ports_full = w.port_set_len as usize >= PORT_SET;
        let hosts_full = w.host_set_len as usize >= HOST_SET;
        let sample_ports = WindowState::entries(&w.port_set)
            .map(sketch::entry_port)
            .collect();
        let udp_in_set = WindowState::entries(&w.port_set)
            .filter(|e| e & PORT_UDP != 0)
            .count() as u32;
        let icmp_in_set = WindowState::entries(&w.host_set)
            .filter(|e| e & HOST_ICMP != 0)
            .count() as u32;
        let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let mut window_probes = [0u64; PROBE_KINDS];
        for (out, n) in window_probes.iter_mut().zip(w.probes.iter()) {
            *out = *n;
        }
        Self {
            window_probes,
            distinct_ports: sketch::distinct(
                n(w.port_set_len),
                ports_full,
                n(w.port_bits_set),
                PORT_BITS,
            ),
            distinct_udp_ports: sketch::distinct(
                udp_in_set.max(n(w.udp_set_len)),
                ports_full,
                n(w.udp_bits_set),
                UDP_BITS,
            ),
            distinct_hosts: sketch::distinct(
                n(w.host_set_len),
                hosts_full,
                n(w.host_bits_set),
                HOST_BITS,
            ),
            distinct_icmp_hosts: sketch::distinct(
                icmp_in_set.max(n(w.icmp_set_len)),
                hosts_full,
                n(w.icmp_bits_set),
                ICMP_BITS,
            ),
            sample_ports,
            triggers: n(w.reported),
            window_start_ns: s.window_start_ns,
            reply: crate::reply::ReplyEvidence::default(),
        }
    }

    pub fn probes(&self, kind: ProbeKind) -> u64 {
        self.window_probes[kind.index()]
    }

    pub fn total(&self) -> u64 {
        self.window_probes.iter().sum()
    }
}

/// Scan types shown by the evidence. The kernel's crossings decide (it saw
/// every probe); the agent only tells a SYN flood from a fast scan: a high
/// SYN rate to many ports or hosts is a scan, not a flood.
pub fn classify(ev: &Evidence, cfg: &Detection) -> Vec<ScanType> {
    let mut types = Vec::new();
    let t = ev.triggers;
    let mut push = |enabled: bool, bit: u32, ty: ScanType| {
        if enabled && t & bit != 0 {
            types.push(ty);
        }
    };
    push(cfg.port_scan.enabled, trigger::PORTS, ScanType::PortScan);
    push(cfg.host_sweep.enabled, trigger::HOSTS, ScanType::HostSweep);
    push(
        cfg.ping_sweep.enabled,
        trigger::ICMP_HOSTS,
        ScanType::PingSweep,
    );
    push(
        cfg.stealth_scan.enabled,
        trigger::STEALTH,
        ScanType::StealthScan,
    );
    push(cfg.udp_scan.enabled, trigger::UDP_PORTS, ScanType::UdpScan);
    let scanning =
        t & (trigger::PORTS | trigger::HOSTS | trigger::UDP_PORTS | trigger::ICMP_HOSTS) != 0;
    if cfg.syn_flood_source.enabled && t & trigger::SYN_RATE != 0 && !scanning {
        types.push(ScanType::SynFloodSource);
    }
    if cfg.reply_scan.enabled && ev.reply.flagged {
        types.push(ScanType::ReplyScan);
    }
    types
}

/// How sure we are that this is reconnaissance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// `high`: several scan types at once (a threshold detection confirmed by
/// the reply-aware test included), stealth probes (no real stack sends
/// them), or at least 4x a threshold; `medium`: at least 2x a threshold, or
/// the reply-aware test alone;
/// `low`: just over a threshold. A source listed by a `tag` feed
/// (`known_bad`) is raised one level.
pub fn confidence_with(
    types: &[ScanType],
    ev: &Evidence,
    cfg: &Detection,
    known_bad: bool,
) -> Confidence {
    let c = confidence(types, ev, cfg);
    if known_bad {
        match c {
            Confidence::Low => Confidence::Medium,
            _ => Confidence::High,
        }
    } else {
        c
    }
}

/// [`confidence_with`] without feed knowledge.
pub fn confidence(types: &[ScanType], ev: &Evidence, cfg: &Detection) -> Confidence {
    let ratio = |n: u64, threshold: u32| n as f64 / f64::from(threshold.max(1));
    let best = types
        .iter()
        .map(|t| match t {
            ScanType::PortScan => ratio(ev.distinct_ports, cfg.port_scan.distinct_ports),
            ScanType::UdpScan => ratio(ev.distinct_udp_ports, cfg.udp_scan.distinct_ports),
            ScanType::HostSweep => ratio(ev.distinct_hosts, cfg.host_sweep.distinct_hosts),
            ScanType::PingSweep => ratio(ev.distinct_icmp_hosts, cfg.ping_sweep.distinct_hosts),
            ScanType::StealthScan => 4.0,
            ScanType::SynFloodSource => 1.0,
            // The test bounds false positives by alpha: medium on its own,
            // high together with a threshold detection.
            ScanType::ReplyScan => 2.0,
        })
        .fold(0.0, f64::max);
    let kinds = types
        .iter()
        .filter(|t| **t != ScanType::SynFloodSource)
        .count();
    if kinds >= 2 || best >= 4.0 {
        Confidence::High
    } else if best >= 2.0 {
        Confidence::Medium
    } else {
        Confidence::Low
    }
}

/// ATT&CK technique: T1595.001 (Scanning IP Blocks) for sweeps across
/// addresses, T1595 (Active Scanning) otherwise.
pub fn attack_technique(types: &[ScanType]) -> &'static str {
    if types
        .iter()
        .any(|t| matches!(t, ScanType::HostSweep | ScanType::PingSweep))
    {
        "T1595.001"
    } else {
        "T1595"
    }
}

/// Bounds `map` at `capacity` before `key` is added: if `key` is new and the
/// map is full, removes the entry with the smallest `age`.
pub(crate) fn make_room<K, V, T: Ord>(
    map: &mut HashMap<K, V>,
    key: &K,
    capacity: usize,
    age: impl Fn(&V) -> T,
) where
    K: Copy + Eq + std::hash::Hash,
{
    if map.len() < capacity || map.contains_key(key) {
        return;
    }
    if let Some(oldest) = map.iter().min_by_key(|(_, v)| age(v)).map(|(k, _)| *k) {
        map.remove(&oldest);
    }
}

/// Why an alert is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertReason {
    /// A scan type not alerted for this source within the suppression interval.
    New,
    /// The same types, but the window's probes grew by the escalation factor.
    Escalated,
}

#[derive(Clone, Debug, Default)]
struct SourceAlerts {
    last_alert: HashMap<ScanType, Instant>,
    probes_at_last_alert: u64,
    window_start_ns: u64,
}

/// Suppression and escalation state, bounded to `capacity` sources (the
/// least recently alerted are forgotten first).
pub struct Alerter {
    sources: HashMap<SourceKey, (SourceAlerts, Instant)>,
    capacity: usize,
    suppression: Duration,
    escalation_factor: f64,
}

impl Alerter {
    pub fn new(suppression: Duration, escalation_factor: f64, capacity: usize) -> Self {
        Self {
            sources: HashMap::new(),
            capacity: capacity.max(1),
            suppression,
            escalation_factor,
        }
    }

    /// Whether to alert now for `source` showing `types` with `ev`; records
    /// the alert if so. Returns the reason and the types not alerted within
    /// the suppression interval (the new detections).
    pub fn decide(
        &mut self,
        source: SourceKey,
        types: &[ScanType],
        ev: &Evidence,
        now: Instant,
    ) -> Option<(AlertReason, Vec<ScanType>)> {
        if types.is_empty() {
            return None;
        }
        make_room(&mut self.sources, &source, self.capacity, |(_, touched)| {
            *touched
        });
        let (state, touched) = self
            .sources
            .entry(source)
            .or_insert_with(|| (SourceAlerts::default(), now));
        let suppressed = |t: &ScanType| {
            state
                .last_alert
                .get(t)
                .is_some_and(|at| now.saturating_duration_since(*at) < self.suppression)
        };
        // Probe counts restart with each kernel window.
        let grown_from = if state.window_start_ns == ev.window_start_ns {
            state.probes_at_last_alert
        } else {
            0
        };
        let fresh: Vec<ScanType> = types.iter().copied().filter(|t| !suppressed(t)).collect();
        let reason = if !fresh.is_empty() {
            AlertReason::New
        } else if grown_from > 0 && ev.total() as f64 >= grown_from as f64 * self.escalation_factor
        {
            AlertReason::Escalated
        } else {
            return None;
        };
        for t in types {
            state.last_alert.insert(*t, now);
        }
        state.probes_at_last_alert = ev.total();
        state.window_start_ns = ev.window_start_ns;
        *touched = now;
        Some((reason, fresh))
    }

    /// Sources with alert state.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(triggers: u32, total: u64, window_start_ns: u64) -> Evidence {
        Evidence {
            window_probes: [total, 0, 0, 0, 0, 0],
            distinct_ports: 20,
            distinct_udp_ports: 0,
            distinct_hosts: 1,
            distinct_icmp_hosts: 0,
            sample_ports: vec![22, 80],
            triggers,
            window_start_ns,
            reply: crate::reply::ReplyEvidence::default(),
        }
    }

    #[test]
    fn reply_scan_comes_from_the_sequential_test() {
        let cfg = Detection::default();
        let mut ev = evidence(0, 6, 1);
        assert!(classify(&ev, &cfg).is_empty());
        let k = cfg.reply_config();
        ev.reply = crate::reply::ReplyEvidence::from_stats(
            &scanwatch_common::trw::ReplyStats {
                llr: 4 * k.failure_step,
                failures: 4,
                ..Default::default()
            },
            &k,
        );
        assert!(ev.reply.flagged);
        assert_eq!(classify(&ev, &cfg), vec![ScanType::ReplyScan]);
        assert_eq!(
            confidence(&[ScanType::ReplyScan], &ev, &cfg),
            Confidence::Medium
        );
        // Confirming a threshold detection raises it to high.
        let ev2 = Evidence {
            triggers: trigger::PORTS,
            ..ev.clone()
        };
        let types = classify(&ev2, &cfg);
        assert_eq!(types, vec![ScanType::PortScan, ScanType::ReplyScan]);
        assert_eq!(confidence(&types, &ev2, &cfg), Confidence::High);
        // Three failures stay below the boundary; disabled never fires.
        ev.reply.flagged = false;
        assert!(classify(&ev, &cfg).is_empty());
        let mut off = cfg.clone();
        off.reply_scan.enabled = false;
        ev.reply.flagged = true;
        assert!(classify(&ev, &off).is_empty());
    }

    fn key(last: u8) -> SourceKey {
        SourceKey::v4([198, 18, 0, last])
    }

    #[test]
    fn classify_maps_kernel_crossings() {
        let cfg = Detection::default();
        let ev = evidence(trigger::PORTS | trigger::STEALTH, 20, 1);
        assert_eq!(
            classify(&ev, &cfg),
            vec![ScanType::PortScan, ScanType::StealthScan]
        );
        let ev = evidence(trigger::HOSTS | trigger::ICMP_HOSTS, 300, 1);
        assert_eq!(
            classify(&ev, &cfg),
            vec![ScanType::HostSweep, ScanType::PingSweep]
        );
        assert_eq!(attack_technique(&classify(&ev, &cfg)), "T1595.001");
        assert_eq!(attack_technique(&[ScanType::PortScan]), "T1595");
    }

    #[test]
    fn syn_rate_alone_is_a_flood_with_ports_it_is_a_fast_scan() {
        let cfg = Detection::default();
        assert_eq!(
            classify(&evidence(trigger::SYN_RATE, 30_000, 1), &cfg),
            vec![ScanType::SynFloodSource]
        );
        assert_eq!(
            classify(
                &evidence(trigger::SYN_RATE | trigger::PORTS, 30_000, 1),
                &cfg
            ),
            vec![ScanType::PortScan]
        );
    }

    #[test]
    fn disabled_types_are_not_reported() {
        let mut cfg = Detection::default();
        cfg.stealth_scan.enabled = false;
        assert_eq!(
            classify(&evidence(trigger::STEALTH, 9, 1), &cfg),
            Vec::<ScanType>::new()
        );
    }

    #[test]
    fn confidence_levels() {
        let cfg = Detection::default();
        let mut ev = evidence(trigger::PORTS, 16, 1);
        ev.distinct_ports = 16;
        assert_eq!(
            confidence(&[ScanType::PortScan], &ev, &cfg),
            Confidence::Low
        );
        ev.distinct_ports = 30;
        assert_eq!(
            confidence(&[ScanType::PortScan], &ev, &cfg),
            Confidence::Medium
        );
        ev.distinct_ports = 1000;
        assert_eq!(
            confidence(&[ScanType::PortScan], &ev, &cfg),
            Confidence::High
        );
        ev.distinct_ports = 16;
        assert_eq!(
            confidence(&[ScanType::PortScan, ScanType::StealthScan], &ev, &cfg),
            Confidence::High
        );
    }

    #[test]
    fn known_bad_raises_confidence() {
        let cfg = Detection::default();
        let mut ev = evidence(trigger::PORTS, 16, 1);
        ev.distinct_ports = 16;
        assert_eq!(
            confidence_with(&[ScanType::PortScan], &ev, &cfg, true),
            Confidence::Medium
        );
        ev.distinct_ports = 30;
        assert_eq!(
            confidence_with(&[ScanType::PortScan], &ev, &cfg, true),
            Confidence::High
        );
    }

    #[test]
    fn suppression_and_escalation() {
        let t0 = Instant::now();
        let s = Duration::from_secs(600);
        let mut a = Alerter::new(s, 4.0, 100);
        let src = key(1);
        let ports = [ScanType::PortScan];
        assert_eq!(
            a.decide(src, &ports, &evidence(1, 15, 7), t0),
            Some((AlertReason::New, vec![ScanType::PortScan]))
        );
        // Same type, same window, little growth: suppressed.
        assert_eq!(
            a.decide(
                src,
                &ports,
                &evidence(1, 40, 7),
                t0 + Duration::from_secs(1)
            ),
            None
        );
        // Edge: 4x exactly escalates (15 * 4 = 60).
        assert_eq!(
            a.decide(
                src,
                &ports,
                &evidence(1, 59, 7),
                t0 + Duration::from_secs(2)
            ),
            None
        );
        assert_eq!(
            a.decide(
                src,
                &ports,
                &evidence(1, 60, 7),
                t0 + Duration::from_secs(3)
            ),
            Some((AlertReason::Escalated, vec![]))
        );
        // A new type escalates at once.
        let both = [ScanType::PortScan, ScanType::StealthScan];
        assert_eq!(
            a.decide(
                src,
                &both,
                &evidence(17, 61, 7),
                t0 + Duration::from_secs(4)
            ),
            Some((AlertReason::New, vec![ScanType::StealthScan])),
            "only the new type counts as a new detection"
        );
        // Suppression ends exactly at the interval.
        assert_eq!(
            a.decide(
                src,
                &both,
                &evidence(17, 62, 7),
                t0 + Duration::from_secs(603)
            ),
            None
        );
        assert_eq!(
            a.decide(
                src,
                &both,
                &evidence(17, 62, 7),
                t0 + Duration::from_secs(604)
            ),
            Some((
                AlertReason::New,
                vec![ScanType::PortScan, ScanType::StealthScan]
            ))
        );
        // Nothing to say for no types.
        assert_eq!(a.decide(key(2), &[], &evidence(0, 1, 7), t0), None);
    }

    #[test]
    fn new_window_does_not_escalate_on_old_counts() {
        let t0 = Instant::now();
        let mut a = Alerter::new(Duration::from_secs(600), 2.0, 100);
        let src = key(3);
        let ports = [ScanType::PortScan];
        assert_eq!(
            a.decide(src, &ports, &evidence(1, 100, 1), t0),
            Some((AlertReason::New, vec![ScanType::PortScan]))
        );
        // A new kernel window with 20 probes: not 2x of the old window's 100,
        // and nothing to compare with in this window yet.
        assert_eq!(
            a.decide(
                src,
                &ports,
                &evidence(1, 20, 2),
                t0 + Duration::from_secs(5)
            ),
            None
        );
    }

    #[test]
    fn alerter_is_bounded() {
        let t0 = Instant::now();
        let mut a = Alerter::new(Duration::from_secs(600), 4.0, 3);
        for i in 0..10u8 {
            a.decide(
                key(i),
                &[ScanType::PortScan],
                &evidence(1, 15, 1),
                t0 + Duration::from_secs(u64::from(i)),
            );
        }
        assert_eq!(a.tracked(), 3);
    }

    #[test]
    fn evidence_decodes_the_kernel_window() {
        let mut s = SourceStats::new(5, 2);
        let w: &mut WindowState = &mut s.window;
        w.port_set[0] = u64::from(sketch::port_entry(22, false))
            | (u64::from(sketch::port_entry(53, true)) << 32);
        w.port_set_len = 2;
        w.udp_set_len = 1;
        w.host_set[0] = u64::from(sketch::host_entry(0xdead_beef) | HOST_ICMP);
        w.host_set_len = 1;
        w.icmp_set_len = 1;
        w.probes[0] = 3;
        w.reported = u64::from(trigger::PORTS);
        let ev = Evidence::from_stats(&s);
        assert_eq!(ev.sample_ports, vec![22, 53]);
        assert_eq!((ev.distinct_ports, ev.distinct_udp_ports), (2, 1));
        assert_eq!((ev.distinct_hosts, ev.distinct_icmp_hosts), (1, 1));
        assert_eq!(ev.probes(ProbeKind::Syn), 3);
        assert_eq!(ev.triggers, trigger::PORTS);
    }
}
