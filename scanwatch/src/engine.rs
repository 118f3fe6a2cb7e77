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
    detect::{Alerter, Evidence, classify, confidence, make_room},
    maps::ScanwatchMaps,
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
}

pub struct Engine {
    cfg: Detection,
    alerter: Alerter,
    /// Sources that crossed a threshold, with when they did.
    active: HashMap<SourceKey, Instant>,
    log: AlertLog,
    names: BTreeMap<u32, String>,
    pub stats: EngineStats,
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
        self.stats.events += 1;
        let Some(event) = Self::decode(bytes) else {
            self.stats.malformed_events += 1;
            log::warn!("malformed event of {} bytes", bytes.len());
            return;
        };
        if self.cfg.ignored(event.source.ip()) {
            self.stats.ignored += 1;
            log::debug!(
                "ignoring crossing by {} (in an ignore network)",
                event.source.ip()
            );
            return;
        }
        make_room(
            &mut self.active,
            &event.source,
            MAX_ACTIVE_SOURCES,
            |crossed| *crossed,
        );
        self.active.insert(event.source, now);
        self.evaluate(&event.source, maps, now, Some(event.time_ns));
    }

    /// Re-checks active sources (escalation) and forgets those idle for a window.
    pub fn poll_active(&mut self, maps: &ScanwatchMaps, now: Instant) {
        let idle = self.cfg.window() + Duration::from_secs(1);
        self.active
            .retain(|_, crossed| now.saturating_duration_since(*crossed) < idle);
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
        let evidence = Evidence::from_stats(&stats);
        let types = classify(&evidence, &self.cfg);
        let Some(reason) = self.alerter.decide(*key, &types, &evidence, now) else {
            return;
        };
        let clock = BootClock::now();
        let alert = Alert::new(AlertInput {
            key,
            stats: &stats,
            evidence: &evidence,
            confidence: confidence(&types, &evidence, &self.cfg),
            types,
            reason,
            interface: self.names.get(&stats.last_ifindex).cloned(),
            window_seconds: self.cfg.window_seconds,
            crossed_ns,
            clock: &clock,
        });
        log::warn!("{}", alert.summary());
        self.stats.alerts += 1;
        if let Err(e) = self.log.append(&alert) {
            self.stats.alert_write_errors += 1;
            log::error!("{e}");
        }
    }

    /// SIGHUP: reopen the alert log.
    pub fn reopen_log(&mut self) {
        match self.log.reopen() {
            Ok(()) => log::info!("reopened alert log {}", self.log.path().display()),
            Err(e) => log::error!("{e}"),
        }
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
