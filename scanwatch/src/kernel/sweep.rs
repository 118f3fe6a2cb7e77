//! The no-answer sweep of the reply-aware detector: first contacts left
//! unanswered past the timeout count as failures for the test. It runs in a
//! thread of its own and keeps its own counters, which the metrics read.
//! One pass over the mapped contact table ([`super::contact_table`]): no
//! syscall per contact; one read and one write of the per-source test
//! state for each source with newly unanswered contacts.

use std::{
    collections::HashMap as StdHashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use scanwatch_common::{
    ScanEvent, SourceKey,
    sketch::PORT_UDP,
    trigger,
    trw::{Decision, REPLY_SOURCES_MAP},
};

use super::{
    reply_maps::{ReplyError, ReplyMaps, map_err},
    source_table::SourceTable,
};
use crate::model::kernel_now_ns;

impl ReplyMaps {
    /// Marks first contacts pending for at least `timeout_ns` (on the kernel clock,
    /// `now_ns`) as no-answer and steps their sources' walks; returns the
    /// crossings to report. One pass over the contact table.
    ///
    /// The source state is read, changed and written back: an answer the
    /// kernel adds to the same source in between is lost (a narrow race; the
    /// kernel's own updates are atomic).
    pub fn sweep(&mut self, timeout_ns: u64, now_ns: u64) -> Result<SweepResult, ReplyError> {
        let mut result = SweepResult::default();
        let mut per_source: StdHashMap<[u8; 16], u64> = StdHashMap::new();
        let mut udp_silent = 0;
        result.scanned = self.contacts.expire(timeout_ns, now_ns, |k| {
            if k.port & PORT_UDP != 0 {
                // UDP silence is no evidence (open or filtered): marked only.
                udp_silent += 1;
            } else {
                *per_source.entry(k.remote).or_default() += 1;
            }
        });
        result.udp_silent = udp_silent;
        for (addr, n) in per_source {
            let key = SourceKey { addr };
            let mut s = self.stats(&key)?.unwrap_or_default();
            // The evidence at the first no-answer that crosses.
            let mut crossed: Option<(u64, u64)> = None;
            for i in 0..n {
                let (llr, d) = self.cfg.step(s.llr, false);
                s.llr = llr;
                match d {
                    Decision::Scanner => {
                        crossed =
                            crossed.or(Some((s.successes, s.failures + s.no_answers + i + 1)));
                    }
                    Decision::Benign => s.benign_resets += 1,
                    Decision::Pending => {}
                }
            }
            s.no_answers += n;
            result.no_answers += n;
            if let Some((successes, failures)) = crossed
                && (s.reported_ns == 0
                    || now_ns.saturating_sub(s.reported_ns) >= self.cfg.report_interval_ns)
            {
                s.reported_ns = now_ns;
                s.crossing_successes = successes;
                s.crossing_failures = failures;
                result.crossings.push(ScanEvent {
                    source: key,
                    time_ns: now_ns,
                    window_start_ns: 0,
                    ifindex: 0,
                    triggers: trigger::REPLY_SCAN,
                });
            }
            self.sources
                .insert(key, s, 0)
                .map_err(map_err(REPLY_SOURCES_MAP))?;
        }
        Ok(result)
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default)]
pub struct SweepResult {
    /// Slots holding a contact (every slot is read).
    pub scanned: u64,
    /// TCP contacts newly marked no-answer (failures for the test).
    pub no_answers: u64,
    /// UDP contacts newly marked no-answer (not counted).
    pub udp_silent: u64,
    /// Sources whose walk crossed the upper boundary (to report).
    pub crossings: Vec<ScanEvent>,
}

/// What the sweeper has done so far (read by the metrics at scrape time).
#[derive(Debug, Default)]
pub struct SweepCounters {
    /// TCP first contacts marked no-answer.
    pub no_answers: AtomicU64,
    /// Sweeps that failed, and sources a sweep decided but could not mark
    /// decided in the source table (each is logged).
    pub errors: AtomicU64,
}

/// Sweeps every `interval` in a thread of its own (a full pass over the
/// contact table: kept off the detection path) until `stop` is set; sends
/// crossings to the agent's loop, marks their sources decided in `table`
/// (as the egress program does at its own crossings: their first contacts
/// are no longer recorded in their window) and counts what it did in
/// `counters`.
pub fn spawn_sweeper(
    mut maps: ReplyMaps,
    table: SourceTable,
    timeout: Duration,
    interval: Duration,
    crossings: tokio::sync::mpsc::Sender<ScanEvent>,
    counters: Arc<SweepCounters>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let timeout_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                next = Instant::now() + interval;
                let started = Instant::now();
                match maps.sweep(timeout_ns, kernel_now_ns()) {
                    Ok(r) => {
                        counters
                            .no_answers
                            .fetch_add(r.no_answers, Ordering::Relaxed);
                        log::debug!(
                            "reply sweep: {} contacts, {} no-answers, {} crossings in {:?}",
                            r.scanned,
                            r.no_answers,
                            r.crossings.len(),
                            started.elapsed()
                        );
                        for c in r.crossings {
                            if let Err(e) = table.mark_decided(&c.source) {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                                log::warn!("reply sweep: {e}");
                            }
                            if crossings.blocking_send(c).is_err() {
                                return; // the loop has stopped
                            }
                        }
                    }
                    Err(e) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        log::warn!("reply sweep: {e}");
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}
