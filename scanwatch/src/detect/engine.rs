//! The detection engine: turns the kernel's threshold crossings (ring-buffer
//! events) into alerts, and re-checks the sources it is already alerting on
//! for escalation. It never walks the whole source map: its work is bounded
//! by the number of sources that crossed a threshold.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use scanwatch_common::{ScanEvent, SourceKey};

use crate::{
    alerts::{Alert, AlertInput, AlertLog},
    clock::BootClock,
    config::Detection,
    detect::{Alerter, Evidence, ScanType, classify, confidence_with, make_room},
    maps::ScanwatchMaps,
    mitigation::{Action, Mitigation},
};

/// Most sources re-checked for escalation (the most recent crossings win).
pub const MAX_ACTIVE_SOURCES: usize = 4096;

/// Counters the engine keeps (exported as metrics later).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub events: u64,
    pub malformed_events: u64,
    pub ignored: u64,
    pub alerts: u64,
    pub alert_write_errors: u64,
    /// Alert-log reopens (SIGHUP) that failed.
    pub alert_log_reopen_errors: u64,
    /// Alerts never written to the log (its in-memory backlog overflowed).
    pub alerts_dropped: u64,
    /// Alerts waiting in memory for the log to take them.
    pub alert_log_backlog: u64,
}

/// A source that crossed a threshold recently.
#[derive(Clone, Debug)]
pub struct ActiveSource {
    /// When it last crossed a threshold.
    pub crossed: Instant,
    /// Its scan types and window probes at the last evaluation.
    pub types: Vec<ScanType>,
    pub window_probes: u64,
}

pub struct Engine {
    cfg: Detection,
    alerter: Alerter,
    active: HashMap<SourceKey, ActiveSource>,
    log: AlertLog,
    names: BTreeMap<u32, String>,
    pub stats: EngineStats,
    /// New detections per scan type.
    pub detections: BTreeMap<ScanType, u64>,
    /// Alerts written since the last call to [`Engine::take_alerts`].
    written: Vec<Alert>,
    /// Blocks and feeds (absent in tests without kernel maps).
    pub mitigation: Option<Mitigation>,
    /// The reply-aware detector's maps (absent when it is disabled).
    pub reply: Option<crate::reply::ReplyMaps>,
}

impl Engine {
    pub fn new(cfg: Detection, log: AlertLog, names: BTreeMap<u32, String>) -> Self {
        Self {
            alerter: Alerter::new(cfg.suppression(), cfg.escalation_factor, 65_536),
            cfg,
            active: HashMap::new(),
            log,
            names,
            stats: EngineStats::default(),
            detections: BTreeMap::new(),
            written: Vec::new(),
            mitigation: None,
            reply: None,
        }
    }

    /// Decodes one ring-buffer record.
    pub fn decode(bytes: &[u8]) -> Option<ScanEvent> {
        if bytes.len() < std::mem::size_of::<ScanEvent>() {
            return None;
        }
        // SAFETY: length checked; ScanEvent is plain old data valid for any bits.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ScanEvent>()) })
    }

    /// Handles one ring-buffer record.
    pub fn on_record(&mut self, bytes: &[u8], maps: &ScanwatchMaps, now: Instant) {
        let Some(event) = Self::decode(bytes) else {
            self.stats.events += 1;
            self.stats.malformed_events += 1;
            log::warn!("malformed event of {} bytes", bytes.len());
            return;
        };
        self.on_event(&event, maps, now);
    }

    /// Handles one crossing (from the ring buffer, or the reply sweep's no-answers).
    pub fn on_event(&mut self, event: &ScanEvent, maps: &ScanwatchMaps, now: Instant) {
        self.stats.events += 1;
        if self.cfg.ignored(event.source.ip()) {
            self.stats.ignored += 1;
            log::debug!(
                "ignoring crossing by {} (in an ignore network)",
                event.source.ip()
            );
            return;
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
            });
        self.evaluate(&event.source, maps, now, Some(event.time_ns));
    }

    /// Re-checks active sources (escalation) and forgets those idle for a window.
    pub fn poll_active(&mut self, maps: &ScanwatchMaps, now: Instant) {
        let idle = self.cfg.window() + Duration::from_secs(1);
        self.active
            .retain(|_, a| now.saturating_duration_since(a.crossed) < idle);
        let keys: Vec<SourceKey> = self.active.keys().copied().collect();
        for key in keys {
            self.evaluate(&key, maps, now, None);
        }
    }

    /// `crossed_ns`: the kernel's time of the crossing that prompted this, if any.
    fn evaluate(
        &mut self,
        key: &SourceKey,
        maps: &ScanwatchMaps,
        now: Instant,
        crossed_ns: Option<u64>,
    ) {
        let stats = match maps.source(key) {
            Ok(Some(stats)) => stats,
            Ok(None) => return, // evicted since
            Err(e) => {
                log::warn!("cannot read source {}: {e}", key.ip());
                return;
            }
        };
        let mut evidence = Evidence::from_stats(&stats);
        if let Some(reply) = &self.reply {
            evidence.reply = reply.evidence(key);
        }
        let types = classify(&evidence, &self.cfg);
        if let Some(a) = self.active.get_mut(key) {
            a.types.clone_from(&types);
            a.window_probes = evidence.total();
        }
        let Some((reason, fresh)) = self.alerter.decide(*key, &types, &evidence, now) else {
            return;
        };
        for t in fresh {
            *self.detections.entry(t).or_default() += 1;
        }
        let clock = BootClock::now();
        let known_bad = match (&self.mitigation, stats.known_bad) {
            (_, 0) | (None, _) => None,
            (Some(m), id) => Some(m.feed_name(id).unwrap_or_else(|| format!("feed {id}"))),
        };
        let action = match self.mitigation.as_mut() {
            Some(m) if matches!(reason, crate::detect::AlertReason::New) => {
                m.on_detection(key.ip(), &types, &clock)
            }
            Some(m) => m.current_action(key.ip(), &clock),
            None => Action::None,
        };
        let mut alert = Alert::new(AlertInput {
            key,
            stats: &stats,
            evidence: &evidence,
            confidence: confidence_with(&types, &evidence, &self.cfg, known_bad.is_some()),
            types,
            reason,
            interface: self.names.get(&stats.last_ifindex).cloned(),
            window_seconds: self.cfg.window_seconds,
            crossed_ns,
            clock: &clock,
        });
        alert.action = action.name();
        alert.known_bad = known_bad;
        match action {
            Action::Blocked { expires } | Action::WouldBlock { expires } => {
                alert.block_expires = Some(expires)
            }
            Action::NeverBlock => alert.not_blocked = Some("never_block"),
            Action::BlocklistFull => alert.not_blocked = Some("blocklist_full"),
            Action::None => {}
        }
        log::warn!("{}", alert.summary());
        self.stats.alerts += 1;
        // A failure is logged (rate-limited) and counted by the log itself;
        // the alert waits in memory and still goes to Alertmanager.
        let _ = self.log.append(&alert);
        self.sync_log_stats();
        self.written.push(alert);
    }

    /// Alerts written since the last call (for Alertmanager).
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        std::mem::take(&mut self.written)
    }

    /// The active sources.
    pub fn active(&self) -> &HashMap<SourceKey, ActiveSource> {
        &self.active
    }

    /// Active sources per scan type.
    pub fn active_by_type(&self) -> BTreeMap<ScanType, u64> {
        let mut out = BTreeMap::new();
        for a in self.active.values() {
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
            .filter(|(_, a)| !a.types.is_empty())
            .map(|(k, a)| (k.ip().to_string(), a.types.clone(), a.window_probes))
            .collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// SIGHUP: reopen the alert log (a failure is logged by the log).
    pub fn reopen_log(&mut self) {
        if self.log.reopen().is_ok() {
            log::info!("reopened alert log {}", self.log.path().display());
        }
        self.sync_log_stats();
    }

    /// Every second: the alert log retries what failed.
    pub fn tick_alert_log(&mut self) {
        self.log.tick();
        self.sync_log_stats();
    }

    fn sync_log_stats(&mut self) {
        let s = self.log.stats();
        self.stats.alert_write_errors = s.write_errors;
        self.stats.alert_log_reopen_errors = s.reopen_errors;
        self.stats.alerts_dropped = s.dropped;
        self.stats.alert_log_backlog = s.backlog;
    }

    pub fn active_sources(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_events() {
        let e = ScanEvent {
            source: SourceKey::v4([198, 18, 0, 1]),
            time_ns: 5,
            window_start_ns: 4,
            ifindex: 2,
            triggers: 1,
        };
        // SAFETY: reading the bytes of a plain struct.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&raw const e).cast::<u8>(),
                std::mem::size_of::<ScanEvent>(),
            )
        };
        assert_eq!(Engine::decode(bytes), Some(e));
        assert_eq!(Engine::decode(&bytes[..10]), None);
    }
}
