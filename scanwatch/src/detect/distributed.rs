//! Distributed scans: the target-side view. Many sources, each under every
//! per-source threshold, together failing first contacts on many ports of
//! one local address, or on one port of many local addresses. No I/O: the
//! caller hands over the first contacts it read (the reply-aware detector's
//! contact table) and says which sources are flagged already. Each pass is
//! recomputed from those contacts; the only state kept is what was alerted
//! (bounded).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use scanwatch_common::{
    SourceKey,
    sketch::{PORT_UDP, SLOT_USED, entry_port},
    trw::{ContactKey, outcome},
};
use serde::Serialize;

use super::{alerter::make_room, verdict::Confidence};
use crate::{config::Detection, model::SourcePrefixes};

/// Most targets whose alert state is kept (the least recently alerted go first).
pub const MAX_ALERTED_TARGETS: usize = 4096;

/// A local port, TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalPort {
    pub port: u16,
    pub udp: bool,
}

impl LocalPort {
    /// `tcp/22`, `udp/53`.
    pub fn label(self) -> String {
        format!("{}/{}", if self.udp { "udp" } else { "tcp" }, self.port)
    }
}

/// What a distributed scan is aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Many ports of one local address.
    Address(IpAddr),
    /// One port of many local addresses.
    Port(LocalPort),
}

impl Target {
    /// `address` or `port` (the bounded label of the metrics).
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Address(_) => "address",
            Self::Port(_) => "port",
        }
    }

    /// The address, or the port as `tcp/22`.
    pub fn label(&self) -> String {
        match self {
            Self::Address(ip) => ip.to_string(),
            Self::Port(p) => p.label(),
        }
    }
}

/// A first contact that failed: RST or ICMP unreachable, or (TCP only) no
/// answer within the timeout. Successes and pending contacts are no evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedContact {
    pub source: SourceKey,
    pub local: IpAddr,
    pub port: LocalPort,
    /// Kernel-clock ns of the contact.
    pub first_ns: u64,
    /// No answer (rather than an RST or ICMP error).
    pub no_answer: bool,
}

fn ip_of(addr: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(addr);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

impl FailedContact {
    /// The failed contact a contact-table entry stands for, if it is one
    /// (host markers, outbound flows, successes, pending contacts and
    /// silent UDP ports are not).
    pub fn from_contact(key: &ContactKey, first_ns: u64, result: u64) -> Option<Self> {
        if key.port & SLOT_USED == 0 {
            return None;
        }
        let udp = key.port & PORT_UDP != 0;
        let no_answer = match result {
            outcome::FAILURE => false,
            outcome::NO_ANSWER if !udp => true,
            _ => return None,
        };
        Some(Self {
            source: SourceKey { addr: key.remote },
            local: ip_of(key.local),
            port: LocalPort {
                port: entry_port(key.port),
                udp,
            },
            first_ns,
            no_answer,
        })
    }
}

/// What the detector applies (from `[detection]`).
#[derive(Clone, Debug)]
pub struct DistributedConfig {
    pub enabled: bool,
    /// Distinct ports of one local address.
    pub distinct_ports: u32,
    /// Distinct local addresses on one port.
    pub distinct_hosts: u32,
    pub min_sources: u32,
    pub top_sources: usize,
    pub window_ns: u64,
    pub suppression: Duration,
    pub escalation_factor: f64,
    pub prefixes: SourcePrefixes,
}

impl DistributedConfig {
    pub fn from_detection(d: &Detection) -> Self {
        let (distinct_ports, distinct_hosts) = d.distributed_thresholds();
        Self {
            enabled: d.distributed_scan.enabled && d.reply_scan.enabled,
            distinct_ports,
            distinct_hosts,
            min_sources: d.distributed_scan.min_sources,
            top_sources: d.distributed_scan.top_sources as usize,
            window_ns: d.window_seconds.saturating_mul(1_000_000_000),
            suppression: d.suppression(),
            escalation_factor: d.escalation_factor,
            prefixes: d.prefixes(),
        }
    }
}

/// One source's part in a distributed scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Contributor {
    /// The source (an address, or a network when sources are counted by prefix).
    pub source: String,
    /// Distinct ports (of the target address) or local addresses (on the
    /// target port) it failed first contacts on: one contact each, as the
    /// contact table holds each (source, address, port) once.
    pub distinct: u64,
}

/// A distributed scan found in one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct DistributedFinding {
    pub target: Target,
    /// Distinct ports (address target) or local addresses (port target).
    pub distinct: u64,
    /// The threshold it reached.
    pub threshold: u32,
    /// Sources taking part.
    pub sources: u64,
    pub failed_contacts: u64,
    pub no_answers: u64,
    /// The biggest contributors first (at most `top_sources`).
    pub top: Vec<Contributor>,
    /// Up to 16 of the ports (address target) probed, lowest first.
    pub sample_ports: Vec<LocalPort>,
    /// Up to 16 of the local addresses (port target) probed, lowest first.
    pub sample_hosts: Vec<IpAddr>,
    pub first_ns: u64,
    pub last_ns: u64,
    pub reason: super::AlertReason,
    pub confidence: Confidence,
}

/// Counters of the last pass and of all (exported as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DistributedStats {
    pub passes: u64,
    /// Failed first contacts by sources not flagged, in the window, at the last pass.
    pub failed_contacts: u64,
    /// Targets at or over a threshold at the last pass, by kind.
    pub address_targets: u64,
    pub port_targets: u64,
    /// Alerts made (new and escalated).
    pub alerts: u64,
    /// New targets alerted (detections).
    pub detections: u64,
}

/// The contacts of one target (sorted by item), and the items' kind.
struct Group<'a> {
    target: Target,
    rows: &'a [FailedContact],
    /// The item a contact adds to the target: its port or its local address.
    item: fn(&FailedContact) -> Sample,
}

/// The detector: alert state per target (bounded), counters.
pub struct DistributedDetector {
    cfg: DistributedConfig,
    /// Per target: when it was last alerted, and its distinct count then.
    alerted: HashMap<Target, (Instant, u64)>,
    pub stats: DistributedStats,
}

/// Runs of `rows` (sorted) with equal `key`.
fn runs<K: PartialEq>(
    rows: &[FailedContact],
    key: impl Fn(&FailedContact) -> K,
) -> impl Iterator<Item = &[FailedContact]> {
    rows.chunk_by(move |a, b| key(a) == key(b))
}

impl DistributedDetector {
    pub fn new(cfg: DistributedConfig) -> Self {
        Self {
            cfg,
            alerted: HashMap::new(),
            stats: DistributedStats::default(),
        }
    }

    pub const fn config(&self) -> &DistributedConfig {
        &self.cfg
    }

    /// One pass over the failed first contacts read at kernel time
    /// `now_ns`: those within the window, by sources for which `excluded`
    /// is false (flagged already, or ignored). Returns the targets to alert
    /// on now. Two sorts of the contacts (at most the contact table's
    /// 65,536), and per-source work only for targets over a threshold.
    pub fn evaluate(
        &mut self,
        contacts: impl IntoIterator<Item = FailedContact>,
        excluded: impl Fn(&SourceKey) -> bool,
        now_ns: u64,
        now: Instant,
    ) -> Vec<DistributedFinding> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        self.stats.passes += 1;
        let since = now_ns.saturating_sub(self.cfg.window_ns);
        let mut rows: Vec<FailedContact> = contacts
            .into_iter()
            .filter(|c| c.first_ns >= since && !excluded(&c.source))
            .collect();
        self.stats.failed_contacts = rows.len() as u64;
        let mut found = Vec::new();
        // Many ports of one local address.
        rows.sort_unstable_by_key(|c| (c.local, c.port));
        for g in runs(&rows, |c| c.local) {
            let group = Group {
                target: Target::Address(g[0].local),
                rows: g,
                item: |c| Sample::Port(c.port),
            };
            found.extend(self.judge(&group, self.cfg.distinct_ports));
        }
        self.stats.address_targets = found.len() as u64;
        // One port of many local addresses.
        rows.sort_unstable_by_key(|c| (c.port, c.local));
        for g in runs(&rows, |c| c.port) {
            let group = Group {
                target: Target::Port(g[0].port),
                rows: g,
                item: |c| Sample::Host(c.local),
            };
            found.extend(self.judge(&group, self.cfg.distinct_hosts));
        }
        self.stats.port_targets = found.len() as u64 - self.stats.address_targets;
        found
            .into_iter()
            .filter_map(|f| self.decide(f, now))
            .collect()
    }

    /// The finding for a target if it reaches `threshold` distinct items
    /// from at least `min_sources` sources (not yet decided on).
    fn judge(&self, g: &Group<'_>, threshold: u32) -> Option<DistributedFinding> {
        let items = || runs(g.rows, |c| (g.item)(c)).map(|r| (g.item)(&r[0]));
        let distinct = items().count() as u64;
        if distinct < u64::from(threshold) {
            return None;
        }
        // Each row is one (source, address, port): a source's rows are its
        // distinct items.
        let mut per_source: HashMap<SourceKey, u64> = HashMap::new();
        for c in g.rows {
            *per_source.entry(c.source).or_default() += 1;
        }
        let sources = per_source.len() as u64;
        if sources < u64::from(self.cfg.min_sources) {
            return None;
        }
        let mut top: Vec<(SourceKey, u64)> = per_source.into_iter().collect();
        top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.addr.cmp(&b.0.addr)));
        top.truncate(self.cfg.top_sources);
        let mut sample_ports = Vec::new();
        let mut sample_hosts = Vec::new();
        for item in items().take(16) {
            match item {
                Sample::Port(p) => sample_ports.push(p),
                Sample::Host(h) => sample_hosts.push(h),
            }
        }
        let ratio = distinct as f64 / f64::from(threshold.max(1));
        Some(DistributedFinding {
            target: g.target,
            distinct,
            threshold,
            sources,
            failed_contacts: g.rows.len() as u64,
            no_answers: g.rows.iter().filter(|c| c.no_answer).count() as u64,
            top: top
                .into_iter()
                .map(|(k, n)| Contributor {
                    source: self.cfg.prefixes.label(k.ip()),
                    distinct: n,
                })
                .collect(),
            sample_ports,
            sample_hosts,
            first_ns: g.rows.iter().map(|c| c.first_ns).min().unwrap_or(0),
            last_ns: g.rows.iter().map(|c| c.first_ns).max().unwrap_or(0),
            reason: super::AlertReason::New,
            confidence: if ratio >= 4.0 {
                Confidence::High
            } else if ratio >= 2.0 {
                Confidence::Medium
            } else {
                Confidence::Low
            },
        })
    }

    /// Suppression and escalation per target, as for sources: one alert
    /// per target per suppression interval, unless its distinct count grew
    /// by the escalation factor.
    fn decide(&mut self, mut f: DistributedFinding, now: Instant) -> Option<DistributedFinding> {
        let last = self.alerted.get(&f.target).copied();
        let reason = match last {
            Some((at, _)) if now.saturating_duration_since(at) >= self.cfg.suppression => {
                super::AlertReason::New
            }
            None => super::AlertReason::New,
            Some((_, n)) if f.distinct as f64 >= n as f64 * self.cfg.escalation_factor => {
                super::AlertReason::Escalated
            }
            Some(_) => return None,
        };
        make_room(&mut self.alerted, &f.target, MAX_ALERTED_TARGETS, |v| v.0);
        self.alerted.insert(f.target, (now, f.distinct));
        self.stats.alerts += 1;
        if reason == super::AlertReason::New {
            self.stats.detections += 1;
        }
        f.reason = reason;
        Some(f)
    }
}

/// An item of a target: a port of an address, or an address on a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sample {
    Port(LocalPort),
    Host(IpAddr),
}

#[cfg(test)]
mod tests {
    use scanwatch_common::sketch::port_entry;

    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn v4(ip: [u8; 4]) -> [u8; 16] {
        SourceKey::v4(ip).addr
    }

    fn contact(src: u8, local: u8, port: u16, result: u64, at: u64) -> Option<FailedContact> {
        let key = ContactKey {
            remote: v4([198, 18, 1, src]),
            local: v4([198, 18, 0, local]),
            port: port_entry(port, false),
        };
        FailedContact::from_contact(&key, at, result)
    }

    fn detector() -> DistributedDetector {
        DistributedDetector::new(DistributedConfig::from_detection(&Detection::default()))
    }

    /// `sources` sources, each failing on `per` ports of 198.18.0.2 (all
    /// ports different).
    fn spread(sources: u8, per: u16, result: u64) -> Vec<FailedContact> {
        (0..sources)
            .flat_map(|s| {
                (0..per).filter_map(move |i| {
                    contact(s, 2, 1000 + u16::from(s) * per + i, result, 100 * SEC)
                })
            })
            .collect()
    }

    #[test]
    fn defaults_follow_the_per_source_thresholds() {
        let d = detector();
        assert_eq!((d.cfg.distinct_ports, d.cfg.distinct_hosts), (15, 25));
        let mut cfg = Detection::default();
        cfg.port_scan.distinct_ports = 40;
        cfg.distributed_scan.distinct_hosts = 7;
        assert_eq!(cfg.distributed_thresholds(), (40, 7));
        cfg.reply_scan.enabled = false;
        assert!(!DistributedConfig::from_detection(&cfg).enabled);
    }

    #[test]
    fn only_failed_first_contacts_are_evidence() {
        let fail = contact(1, 2, 22, outcome::FAILURE, 5).unwrap();
        assert!(!fail.no_answer);
        assert_eq!(fail.local, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(fail.source, SourceKey::v4([198, 18, 1, 1]));
        assert!(contact(1, 2, 22, outcome::NO_ANSWER, 5).unwrap().no_answer);
        for r in [outcome::SUCCESS, outcome::PENDING, outcome::OUTBOUND] {
            assert_eq!(contact(1, 2, 22, r, 5), None, "outcome {r}");
        }
        // A silent UDP port is no evidence; an ICMP port unreachable is.
        let udp = |r| {
            FailedContact::from_contact(
                &ContactKey {
                    remote: v4([198, 18, 1, 1]),
                    local: v4([198, 18, 0, 2]),
                    port: port_entry(53, true),
                },
                5,
                r,
            )
        };
        assert_eq!(udp(outcome::NO_ANSWER), None);
        assert_eq!(
            udp(outcome::FAILURE).map(|c| c.port.label()),
            Some("udp/53".into())
        );
        // A host marker (port 0) is not a contact.
        let marker = scanwatch_common::trw::host_marker(v4([198, 18, 1, 1]), v4([198, 18, 0, 2]));
        assert_eq!(
            FailedContact::from_contact(&marker, 5, outcome::FAILURE),
            None
        );
    }

    #[test]
    fn twenty_sources_of_four_ports_are_one_distributed_scan() {
        let mut d = detector();
        let t0 = Instant::now();
        let out = d.evaluate(spread(20, 4, outcome::FAILURE), |_| false, 101 * SEC, t0);
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0];
        assert_eq!(f.target, Target::Address("198.18.0.2".parse().unwrap()));
        assert_eq!(f.target.label(), "198.18.0.2");
        assert_eq!((f.distinct, f.sources, f.failed_contacts), (80, 20, 80));
        assert_eq!(f.top.len(), 20, "top_sources (25) names all 20");
        assert!(f.top.iter().all(|c| c.distinct == 4));
        assert_eq!(f.top[0].source, "198.18.1.0", "ties by address");
        assert_eq!(f.sample_ports.len(), 16);
        assert_eq!(f.sample_ports[0].label(), "tcp/1000");
        assert_eq!(f.reason, super::super::AlertReason::New);
        assert_eq!(f.confidence, Confidence::High, "80 ports: over 4x 15");
        assert_eq!((d.stats.address_targets, d.stats.port_targets), (1, 0));
        assert_eq!((d.stats.detections, d.stats.failed_contacts), (1, 80));
        // The next pass: suppressed; growth by the escalation factor (4x)
        // escalates; after the suppression interval it is new again.
        let t1 = t0 + Duration::from_secs(1);
        assert!(
            d.evaluate(spread(20, 4, outcome::FAILURE), |_| false, 101 * SEC, t1)
                .is_empty()
        );
        let out = d.evaluate(spread(64, 5, outcome::FAILURE), |_| false, 101 * SEC, t1);
        assert_eq!(out[0].reason, super::super::AlertReason::Escalated);
        assert_eq!(out[0].top.len(), 25, "bounded");
        let t2 = t1 + Duration::from_secs(600);
        let out = d.evaluate(spread(64, 5, outcome::FAILURE), |_| false, 101 * SEC, t2);
        assert_eq!(out[0].reason, super::super::AlertReason::New);
        assert_eq!(d.stats.alerts, 3);
        assert_eq!(d.stats.detections, 2);
    }

    #[test]
    fn under_the_thresholds_flagged_sources_and_old_contacts_are_quiet() {
        let t0 = Instant::now();
        // 14 ports from 7 sources: under 15.
        assert!(
            detector()
                .evaluate(spread(7, 2, outcome::FAILURE), |_| false, 101 * SEC, t0)
                .is_empty()
        );
        // 16 ports, but from 2 sources (min_sources 3).
        assert!(
            detector()
                .evaluate(spread(2, 8, outcome::FAILURE), |_| false, 101 * SEC, t0)
                .is_empty()
        );
        // Successes are no evidence: 200 clients each reaching two open ports.
        let ok: Vec<FailedContact> = (0..200u8)
            .flat_map(|s| [80, 443].map(|p| contact(s, 2, p, outcome::SUCCESS, 100 * SEC)))
            .flatten()
            .collect();
        assert!(ok.is_empty());
        // 20 sources, but every one already flagged: theirs are per-source alerts.
        let mut d = detector();
        assert!(
            d.evaluate(spread(20, 4, outcome::FAILURE), |_| true, 101 * SEC, t0)
                .is_empty()
        );
        assert_eq!(d.stats.failed_contacts, 0);
        // Half of them flagged: the other ten still make 40 ports.
        let flagged = |k: &SourceKey| k.addr[15].is_multiple_of(2);
        let out = d.evaluate(spread(20, 4, outcome::FAILURE), flagged, 101 * SEC, t0);
        assert_eq!((out[0].sources, out[0].distinct), (10, 40));
        // Contacts older than the window (300 s) do not count.
        let mut d = detector();
        assert!(
            d.evaluate(spread(20, 4, outcome::FAILURE), |_| false, 401 * SEC, t0)
                .is_empty()
        );
        // Disabled: nothing, not even a pass.
        let mut cfg = Detection::default();
        cfg.distributed_scan.enabled = false;
        let mut d = DistributedDetector::new(DistributedConfig::from_detection(&cfg));
        assert!(
            d.evaluate(spread(20, 4, outcome::FAILURE), |_| false, 101 * SEC, t0)
                .is_empty()
        );
        assert_eq!(d.stats.passes, 0);
    }

    #[test]
    fn one_port_on_many_hosts_is_a_distributed_sweep() {
        // 30 sources, each failing on port 23 of one local address of its own.
        let contacts: Vec<FailedContact> = (0..30u8)
            .filter_map(|s| contact(s, 10 + s, 23, outcome::NO_ANSWER, 100 * SEC))
            .collect();
        let out = detector().evaluate(contacts, |_| false, 101 * SEC, Instant::now());
        assert_eq!(out.len(), 1, "{out:?}");
        let f = &out[0];
        assert_eq!(f.target.label(), "tcp/23");
        assert_eq!(f.target.kind(), "port");
        assert_eq!(
            (f.distinct, f.threshold, f.sources, f.no_answers),
            (30, 25, 30, 30)
        );
        assert_eq!(f.sample_hosts.len(), 16);
        assert!(f.sample_ports.is_empty());
        assert_eq!(f.confidence, Confidence::Low);
    }

    #[test]
    fn alert_state_is_bounded() {
        let mut d = detector();
        let t0 = Instant::now();
        for i in 0..(MAX_ALERTED_TARGETS + 10) {
            let f = DistributedFinding {
                target: Target::Port(LocalPort {
                    port: i as u16,
                    udp: false,
                }),
                distinct: 30,
                threshold: 25,
                sources: 3,
                failed_contacts: 30,
                no_answers: 0,
                top: Vec::new(),
                sample_ports: Vec::new(),
                sample_hosts: Vec::new(),
                first_ns: 0,
                last_ns: 0,
                reason: super::super::AlertReason::New,
                confidence: Confidence::Low,
            };
            assert!(d.decide(f, t0 + Duration::from_millis(i as u64)).is_some());
        }
        assert_eq!(d.alerted.len(), MAX_ALERTED_TARGETS);
    }
}
