//! When to alert: at most one alert per source and scan type within the
//! suppression interval, unless the source's probes grow by the escalation
//! factor. Bounded state; pure logic over made-up counts and times in tests.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use scanwatch_common::SourceKey;
use serde::Serialize;

use super::evidence::Evidence;
use crate::model::ScanType;

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

    /// Whether nothing was alerted for `source` within the suppression
    /// interval (its next alert starts an incident).
    pub fn quiet(&self, source: &SourceKey, now: Instant) -> bool {
        self.sources.get(source).is_none_or(|(state, _)| {
            state
                .last_alert
                .values()
                .all(|at| now.saturating_duration_since(*at) >= self.suppression)
        })
    }

    /// Sources with alert state.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::evidence::test_evidence as evidence;

    fn key(last: u8) -> SourceKey {
        SourceKey::v4([198, 18, 0, last])
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
}
