//! The detection engine: turns the kernel's threshold crossings into
//! findings, and re-checks the sources it already flags for escalation. No
//! I/O: a source's kernel state comes through the caller's [`SourceView`].
//! Its work is bounded by the number of sources that crossed a threshold;
//! it never walks the whole source map.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use scanwatch_common::{ScanEvent, SourceKey, SourceStats};

use super::{
    alerter::{AlertReason, Alerter, make_room},
    decoy::{DecoyGroups, Group},
    evidence::{Evidence, ReplyEvidence},
    verdict::{Confidence, classify, confidence_with},
};
use crate::{config::Detection, model::ScanType};

/// Most sources re-checked for escalation (the most recent crossings win).
pub const MAX_ACTIVE_SOURCES: usize = 4096;

/// A source's kernel state, as the engine reads it.
pub trait SourceView {
    /// The source's entry in the source map (`None`: not tracked, e.g. evicted).
    fn stats(&self, key: &SourceKey) -> Option<SourceStats>;
    /// The reply-aware test's evidence (zero when it has none or is disabled).
    fn reply(&self, key: &SourceKey) -> ReplyEvidence;
}

/// Counters the engine keeps (exported as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Crossings received (malformed ones included).
    pub events: u64,
    pub malformed_events: u64,
    pub ignored: u64,
    /// Findings handed out (each becomes one alert).
    pub alerts: u64,
    /// First alerts held (`first_alert_hold_milliseconds`) before they were written.
    pub held: u64,
}

/// A source that crossed a threshold recently.
#[derive(Clone, Debug)]
pub struct ActiveSource {
    /// When it last crossed a threshold.
    pub crossed: Instant,
    /// Its scan types and window probes at the last evaluation.
    pub types: Vec<ScanType>,
    pub window_probes: u64,
    /// Its first alert waits until then (for more scan types).
    pub held: Option<Held>,
}

impl ActiveSource {
    /// Alerted on (crossed a threshold and no longer held): what
    /// Alertmanager, metrics and `top` show as flagged.
    pub fn flagged(&self) -> bool {
        !self.types.is_empty() && self.held.is_none()
    }
}

/// A first alert waiting for more scan types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// When it is written.
    pub until: Instant,
    /// The kernel's time of the first crossing (the alert's `crossed_at`).
    pub crossed_ns: Option<u64>,
}

/// What the engine concluded about one source: the value every output
/// (mitigation, alert, Alertmanager, metrics) is made from.
#[derive(Clone, Debug)]
pub struct Finding {
    pub key: SourceKey,
    /// The network the key stands for (one address unless sources are
    /// counted by prefix).
    pub network: IpNet,
    /// The source's kernel entry at the evaluation.
    pub stats: SourceStats,
    pub evidence: Evidence,
    pub types: Vec<ScanType>,
    pub reason: AlertReason,
    pub confidence: Confidence,
    /// The kernel's time of the crossing that prompted this (absent for
    /// escalations found by re-checking an active source).
    pub crossed_ns: Option<u64>,
    /// The decoy group of the source, when its first alert matched others'.
    pub group: Option<Group>,
}

/// Whether an alert waits.
enum Hold {
    No,
    /// It is the first of an incident: it starts waiting now.
    Started,
    /// It waits already.
    Waiting,
}

/// Whether the alert for `a` (whose types are set) waits for `hold`: it is
/// held already, or it would be the first of an incident (`quiet`: nothing
/// alerted for the source within the suppression interval).
fn hold(
    a: &mut ActiveSource,
    hold: Duration,
    quiet: bool,
    now: Instant,
    crossed_ns: Option<u64>,
) -> Hold {
    if a.held.is_some() {
        return Hold::Waiting;
    }
    if hold.is_zero() || a.types.is_empty() || !quiet {
        return Hold::No;
    }
    a.held = Some(Held {
        until: now + hold,
        crossed_ns,
    });
    Hold::Started
}

pub struct Engine {
    cfg: Detection,
    alerter: Alerter,
    active: HashMap<SourceKey, ActiveSource>,
    pub stats: EngineStats,
    /// New detections per scan type.
    pub detections: BTreeMap<ScanType, u64>,
    /// Decoy scans: sources whose first alerts match.
    pub decoys: DecoyGroups,
}

impl Engine {
    pub fn new(cfg: Detection) -> Self {
        Self {
            alerter: Alerter::new(cfg.suppression(), cfg.escalation_factor, 65_536),
            cfg,
            active: HashMap::new(),
            stats: EngineStats::default(),
            detections: BTreeMap::new(),
            decoys: DecoyGroups::default(),
        }
    }

    /// Every finding gets its source's decoy group as known once all of
    /// them (a batch released together) were observed.
    fn with_groups(&self, mut findings: Vec<Finding>) -> Vec<Finding> {
        for f in &mut findings {
            f.group = self.decoys.group_of(&f.key);
        }
        findings
    }

    /// A ring-buffer record that could not be decoded.
    pub fn on_malformed(&mut self) {
        self.stats.events += 1;
        self.stats.malformed_events += 1;
    }

    /// Handles one crossing (from the ring buffer, or the reply sweep's no-answers).
    pub fn on_event(
        &mut self,
        event: &ScanEvent,
        view: &impl SourceView,
        now: Instant,
    ) -> Option<Finding> {
        self.stats.events += 1;
        if self.cfg.ignored(event.source.ip()) {
            self.stats.ignored += 1;
            log::debug!(
                "ignoring crossing by {} (in an ignore network)",
                event.source.ip()
            );
            return None;
        }
        make_room(&mut self.active, &event.source, MAX_ACTIVE_SOURCES, |a| {
            a.crossed
        });
        self.active
            .entry(event.source)
            .and_modify(|a| a.crossed = now)
            .or_insert(ActiveSource {
                crossed: now,
                types: Vec::new(),
                window_probes: 0,
                held: None,
            });
        let found = self.evaluate(&event.source, view, now, Some(event.time_ns), false);
        self.with_groups(found.into_iter().collect()).pop()
    }

    /// When the next held first alert is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.active
            .values()
            .filter_map(|a| a.held.map(|h| h.until))
            .min()
    }

    /// Writes the held first alerts that are due: each names every scan
    /// type its source crossed by now.
    pub fn release_held(&mut self, view: &impl SourceView, now: Instant) -> Vec<Finding> {
        let due: Vec<(SourceKey, Held)> = self
            .active
            .iter()
            .filter_map(|(k, a)| a.held.filter(|h| h.until <= now).map(|h| (*k, h)))
            .collect();
        let found = due
            .into_iter()
            .filter_map(|(key, held)| {
                if let Some(a) = self.active.get_mut(&key) {
                    a.held = None;
                }
                self.evaluate(&key, view, now, held.crossed_ns, true)
            })
            .collect();
        self.with_groups(found)
    }

    /// Re-checks active sources (escalation) and forgets those idle for a window.
    pub fn poll_active(&mut self, view: &impl SourceView, now: Instant) -> Vec<Finding> {
        let idle = self.cfg.window() + Duration::from_secs(1);
        self.active
            .retain(|_, a| now.saturating_duration_since(a.crossed) < idle);
        let keys: Vec<SourceKey> = self.active.keys().copied().collect();
        let found = keys
            .iter()
            .filter_map(|key| self.evaluate(key, view, now, None, false))
            .collect();
        self.with_groups(found)
    }

    /// `crossed_ns`: the kernel's time of the crossing that prompted this,
    /// if any; `released`: a held first alert whose time has come.
    fn evaluate(
        &mut self,
        key: &SourceKey,
        view: &impl SourceView,
        now: Instant,
        crossed_ns: Option<u64>,
        released: bool,
    ) -> Option<Finding> {
        // None: evicted since.
        let stats = view.stats(key)?;
        let mut evidence = Evidence::from_stats(&stats);
        evidence.reply = view.reply(key);
        let types = classify(&evidence, &self.cfg);
        let quiet = self.alerter.quiet(key, now);
        if let Some(a) = self.active.get_mut(key) {
            a.types.clone_from(&types);
            a.window_probes = evidence.total();
            if !released {
                match hold(a, self.cfg.first_alert_hold(), quiet, now, crossed_ns) {
                    Hold::No => {}
                    Hold::Started => {
                        self.stats.held += 1;
                        return None;
                    }
                    Hold::Waiting => return None,
                }
            }
        }
        let (reason, fresh) = self.alerter.decide(*key, &types, &evidence, now)?;
        for t in fresh {
            *self.detections.entry(t).or_default() += 1;
        }
        self.stats.alerts += 1;
        let network = self.cfg.prefixes().network(key.ip());
        if reason == AlertReason::New {
            self.decoys.observe(
                *key,
                crate::model::prefix::label(&network),
                &evidence.sample_ports,
                stats.crossed,
                now,
            );
        }
        Some(Finding {
            key: *key,
            network,
            confidence: confidence_with(&types, &evidence, &self.cfg, stats.known_bad != 0),
            stats,
            evidence,
            types,
            reason,
            crossed_ns,
            group: None,
        })
    }

    /// Whether `key`'s probes are accounted for without the distributed
    /// view: it crossed a threshold itself (alerted, or its first alert
    /// held), or it is in an `ignore` network.
    pub fn accounted_for(&self, key: &SourceKey) -> bool {
        self.active.get(key).is_some_and(|a| !a.types.is_empty()) || self.cfg.ignored(key.ip())
    }

    /// The active sources.
    pub fn active(&self) -> &HashMap<SourceKey, ActiveSource> {
        &self.active
    }

    /// Active sources per scan type.
    pub fn active_by_type(&self) -> BTreeMap<ScanType, u64> {
        let mut out = BTreeMap::new();
        for a in self.active.values().filter(|a| a.flagged()) {
            for t in &a.types {
                *out.entry(*t).or_default() += 1;
            }
        }
        out
    }

    /// The `n` flagged active sources with the most window probes.
    pub fn top_flagged(&self, n: usize) -> Vec<(String, Vec<ScanType>, u64)> {
        let mut v: Vec<(String, Vec<ScanType>, u64)> = self
            .active
            .iter()
            .filter(|(_, a)| a.flagged())
            .map(|(k, a)| {
                let label = self.cfg.prefixes().label(k.ip());
                (label, a.types.clone(), a.window_probes)
            })
            .collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    pub fn active_sources(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
mod tests {
    use scanwatch_common::{maps::port_word, trigger};

    use super::*;

    /// A fixed view: one source with `probes` SYNs to 20 ports, crossed PORTS.
    struct Fixed(SourceKey, SourceStats);

    impl SourceView for Fixed {
        fn stats(&self, key: &SourceKey) -> Option<SourceStats> {
            (*key == self.0).then_some(self.1)
        }
        fn reply(&self, _: &SourceKey) -> ReplyEvidence {
            ReplyEvidence::default()
        }
    }

    fn scanner(last: u8, ports: u16) -> Fixed {
        let key = SourceKey::v4([198, 18, 0, last]);
        let mut s = SourceStats::new(&key, 1, 2);
        s.probes[0] = u32::from(ports);
        s.lens = u32::from(ports.min(16));
        for p in 0..ports.min(16) {
            let entry = u64::from(scanwatch_common::sketch::port_entry(p + 1, false));
            s.sets[port_word(usize::from(p / 2))] |= entry << (32 * (p % 2));
        }
        s.crossed = u64::from(trigger::PORTS);
        Fixed(key, s)
    }

    fn crossing(view: &Fixed) -> ScanEvent {
        ScanEvent {
            source: view.0,
            time_ns: 7,
            window_start_ns: 1,
            ifindex: 2,
            triggers: trigger::PORTS,
        }
    }

    /// No hold: each crossing is judged at once.
    fn at_once() -> Detection {
        Detection {
            first_alert_hold_milliseconds: 0,
            ..Detection::default()
        }
    }

    #[test]
    fn a_crossing_becomes_one_finding_then_is_suppressed() {
        let mut engine = Engine::new(at_once());
        let view = scanner(9, 10);
        let now = Instant::now();
        let f = engine.on_event(&crossing(&view), &view, now).unwrap();
        assert_eq!(f.types, vec![ScanType::PortScan]);
        assert_eq!(f.reason, AlertReason::New);
        assert_eq!(f.crossed_ns, Some(7));
        assert_eq!(f.confidence, Confidence::Low);
        assert!(engine.on_event(&crossing(&view), &view, now).is_none());
        assert!(engine.poll_active(&view, now).is_empty());
        assert_eq!(engine.stats.events, 2);
        assert_eq!(engine.stats.alerts, 1);
        assert_eq!(engine.detections.get(&ScanType::PortScan), Some(&1));
        assert_eq!(engine.active_by_type().get(&ScanType::PortScan), Some(&1));
        assert_eq!(
            engine.top_flagged(5),
            vec![("198.18.0.9".to_string(), vec![ScanType::PortScan], 10)]
        );
    }

    #[test]
    fn ignored_and_evicted_sources_give_nothing() {
        let mut engine = Engine::new(Detection {
            ignore: vec!["198.18.0.0/24".parse().unwrap()],
            ..at_once()
        });
        let view = scanner(9, 10);
        assert!(
            engine
                .on_event(&crossing(&view), &view, Instant::now())
                .is_none()
        );
        assert_eq!(engine.stats.ignored, 1);
        let mut engine = Engine::new(at_once());
        let gone = Fixed(SourceKey::v4([198, 18, 1, 1]), view.1);
        assert!(
            engine
                .on_event(&crossing(&view), &gone, Instant::now())
                .is_none()
        );
        engine.on_malformed();
        assert_eq!((engine.stats.events, engine.stats.malformed_events), (2, 1));
    }

    /// A source whose kernel entry the test changes between steps.
    struct Changing(std::cell::RefCell<SourceStats>, SourceKey);

    impl SourceView for Changing {
        fn stats(&self, key: &SourceKey) -> Option<SourceStats> {
            (*key == self.1).then(|| *self.0.borrow())
        }
        fn reply(&self, _: &SourceKey) -> ReplyEvidence {
            ReplyEvidence::default()
        }
    }

    #[test]
    fn the_first_alert_waits_and_names_every_type_crossed_by_then() {
        let cfg = Detection::default();
        assert_eq!(cfg.first_alert_hold(), Duration::from_millis(250));
        let mut engine = Engine::new(cfg);
        let base = scanner(9, 20);
        let view = Changing(std::cell::RefCell::new(base.1), base.0);
        let t0 = Instant::now();
        // First crossing (ports): held, nothing flagged yet.
        assert!(engine.on_event(&crossing(&base), &view, t0).is_none());
        assert_eq!(engine.next_release(), Some(t0 + Duration::from_millis(250)));
        assert!(engine.active_by_type().is_empty(), "held: not flagged yet");
        assert!(engine.top_flagged(5).is_empty());
        // 12 ms later a second threshold (stealth) crosses: still held.
        view.0.borrow_mut().crossed |= u64::from(trigger::STEALTH);
        view.0.borrow_mut().probes[1] = 5;
        let later = ScanEvent {
            time_ns: 19,
            triggers: trigger::STEALTH,
            ..crossing(&base)
        };
        assert!(
            engine
                .on_event(&later, &view, t0 + Duration::from_millis(12))
                .is_none()
        );
        // Re-checks during the hold write nothing either.
        assert!(
            engine
                .poll_active(&view, t0 + Duration::from_millis(100))
                .is_empty()
        );
        // Nothing is due before the hold ends.
        assert!(
            engine
                .release_held(&view, t0 + Duration::from_millis(249))
                .is_empty()
        );
        let out = engine.release_held(&view, t0 + Duration::from_millis(250));
        assert_eq!(out.len(), 1, "one alert for the incident");
        let f = &out[0];
        assert_eq!(f.types, vec![ScanType::PortScan, ScanType::StealthScan]);
        assert_eq!(f.reason, AlertReason::New);
        assert_eq!(f.crossed_ns, Some(7), "crossed_at: the first crossing");
        assert_eq!(engine.next_release(), None);
        assert_eq!((engine.stats.alerts, engine.stats.held), (1, 1));
        assert_eq!(engine.detections.get(&ScanType::PortScan), Some(&1));
        assert_eq!(engine.detections.get(&ScanType::StealthScan), Some(&1));
        assert_eq!(
            engine.active_by_type().get(&ScanType::StealthScan),
            Some(&1)
        );
        // Afterwards: a new type is alerted at once (not held again)...
        view.0.borrow_mut().crossed |= u64::from(trigger::UDP_PORTS);
        {
            let mut s = view.0.borrow_mut();
            s.probes[2] = 20;
        }
        let udp = ScanEvent {
            triggers: trigger::UDP_PORTS,
            ..crossing(&base)
        };
        let t1 = t0 + Duration::from_secs(2);
        let f = engine.on_event(&udp, &view, t1);
        assert!(
            f.as_ref().is_some_and(
                |f| f.reason == AlertReason::New && f.types.contains(&ScanType::UdpScan)
            ),
            "{f:?}"
        );
        // ...and an escalation too.
        view.0.borrow_mut().probes[0] = 400;
        let f = engine.poll_active(&view, t1 + Duration::from_secs(1));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].reason, AlertReason::Escalated);
        assert_eq!(engine.stats.held, 1);
    }

    #[test]
    fn a_held_alert_is_also_written_by_the_every_second_check() {
        let mut engine = Engine::new(Detection {
            first_alert_hold_milliseconds: 1000,
            ..Detection::default()
        });
        let view = scanner(3, 20);
        let t0 = Instant::now();
        assert!(engine.on_event(&crossing(&view), &view, t0).is_none());
        // The loop's timer missed it: the once-a-second step writes it
        // (released first, with the first crossing's time).
        let out = engine.release_held(&view, t0 + Duration::from_millis(1500));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].crossed_ns, Some(7));
        assert!(
            engine
                .poll_active(&view, t0 + Duration::from_millis(1500))
                .is_empty()
        );
        // A source evicted while held gives nothing and is not held forever.
        let mut engine = Engine::new(Detection::default());
        assert!(engine.on_event(&crossing(&view), &view, t0).is_none());
        let gone = Fixed(SourceKey::v4([198, 18, 1, 1]), view.1);
        assert!(
            engine
                .release_held(&gone, t0 + Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(engine.next_release(), None);
    }
}
