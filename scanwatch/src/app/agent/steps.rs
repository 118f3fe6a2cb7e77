//! The agent's state between steps of its loop, and what each step does:
//! a crossing becomes a finding (detect), the finding goes to mitigation,
//! then to the outputs (alert log, Alertmanager, metrics).

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use scanwatch_common::{ScanEvent, trw::ReplyCounter};

use super::{start::Running, view::KernelView};
use crate::{
    config::FeedConfig,
    detect::{AlertReason, DistributedDetector, Engine, FailedContact, Finding},
    kernel::{
        detect_maps::{decode_event, decode_evidence},
        reply_maps::ReplyMaps,
        sweep::SweepCounters,
    },
    model::{KernelClock, ScanType, kernel_now_ns},
    output::{
        alert::Alert,
        alert_log::AlertLog,
        alertmanager::Pusher,
        crowdsec::{
            bouncer::{Bouncer, Pull},
            machine::Machine,
        },
        distributed_alert::DistributedAlert,
        evidence::EvidenceStore,
        metrics::AgentSnapshot,
        mitigation::Mitigation,
        summary::Summary,
    },
};

/// Modification times of the feed files (a change reloads them).
pub(super) fn feed_mtimes_of(feeds: &[FeedConfig]) -> Vec<Option<SystemTime>> {
    feeds
        .iter()
        .map(|f| std::fs::metadata(&f.path).and_then(|m| m.modified()).ok())
        .collect()
}

/// Seconds between passes of the distributed-scan view (a walk of the
/// contact table when failed first contacts came since the last).
const DISTRIBUTED_EVERY: u64 = 5;

pub(super) struct Agent {
    pub running: Running,
    pub engine: Engine,
    /// The target-side view (distributed scans) over the first contacts.
    pub distributed: DistributedDetector,
    pub mitigation: Mitigation,
    pub alert_log: AlertLog,
    /// The reply-aware detector's maps (when enabled).
    pub reply: Option<ReplyMaps>,
    /// ifindex -> name of the watched interfaces.
    pub names: BTreeMap<u32, String>,
    pub pusher: Option<Pusher>,
    pub snapshot: Arc<Mutex<AgentSnapshot>>,
    pub summary: Summary,
    pub feed_mtimes: Vec<Option<SystemTime>>,
    /// Seconds since start (feeds are checked every 5).
    pub ticks: u64,
    /// Sources alerted in this step (pushed to Alertmanager at its end).
    pub alerted: Vec<String>,
    /// Alerts written, by the tool they name.
    pub alerts_by_tool: BTreeMap<&'static str, u64>,
    /// The no-answer sweeper's counters (reply-aware detector on).
    pub sweep: Option<Arc<SweepCounters>>,
    /// Failed first contacts (answered with a failure, or unanswered) at
    /// the last distributed pass: a pass with none new since is skipped.
    pub failures_seen: Option<u64>,
    /// The evidence packets' files (`[evidence]` on).
    pub evidence: Option<EvidenceStore>,
    /// The CrowdSec bouncer's decisions (when `[crowdsec]` has an API key).
    pub bouncer: Option<Bouncer>,
    /// The CrowdSec machine's alert pushes (when `[crowdsec]` has a machine).
    pub machine: Option<Machine>,
    /// The web-layer detector (`[detection.web]` on).
    pub web: Option<super::web::WebRun>,
}

impl Agent {
    /// One ring-buffer record from the XDP program.
    pub fn on_record(&mut self, bytes: &[u8]) {
        match decode_event(bytes) {
            Some(event) => self.on_event(&event),
            None => {
                self.engine.on_malformed();
                log::warn!("malformed event of {} bytes", bytes.len());
            }
        }
    }

    /// One record of the evidence ring.
    pub fn on_evidence(&mut self, bytes: &[u8]) {
        let Some(store) = self.evidence.as_mut() else {
            return;
        };
        match decode_evidence(bytes) {
            Some(record) => {
                let ignored = self.running.config.detection.ignored(record.source.ip());
                store.on_record(&record, ignored, Instant::now());
            }
            None => log::warn!("malformed evidence record of {} bytes", bytes.len()),
        }
    }

    /// The evidence packets' file for an alert about to be written.
    fn attach_evidence(&mut self, finding: &Finding, alert: &mut Alert, clock: &KernelClock) {
        let Some(store) = self.evidence.as_mut() else {
            return;
        };
        let types: Vec<&str> = alert.scan_types.iter().map(|t| t.name()).collect();
        let comment = format!(
            "scanwatch alert {} source {} {}",
            alert.time,
            alert.source,
            types.join("+")
        );
        alert.evidence = store.on_alert(
            &finding.key,
            &alert.source,
            finding.evidence.window_start_ns,
            comment,
            clock,
        );
        // Fields only visible across probes (nmap -sU's TTLs and port).
        alert.scanner_tool.refine(store.samples(&finding.key));
    }

    /// One crossing (from the ring buffer, or the reply sweep's no-answers).
    pub fn on_event(&mut self, event: &ScanEvent) {
        let view = KernelView {
            maps: &self.running.maps,
            reply: self.reply.as_ref(),
        };
        if let Some(finding) = self.engine.on_event(event, &view, Instant::now()) {
            self.report(&finding);
        }
    }

    /// First alerts whose hold is over: one alert each, with every scan
    /// type crossed by now (and mitigation's decision on all of them).
    pub fn release_held(&mut self) {
        let view = KernelView {
            maps: &self.running.maps,
            reply: self.reply.as_ref(),
        };
        for finding in self.engine.release_held(&view, Instant::now()) {
            self.report(&finding);
        }
        let _ = self.report_web();
    }

    /// When the next held alert (per-source or web) is due.
    pub fn next_release(&self) -> Option<Instant> {
        let web = self
            .web
            .as_ref()
            .and_then(|w| w.detector.next_due_ns())
            .map(|due| Instant::now() + Duration::from_nanos(due.saturating_sub(kernel_now_ns())));
        match (self.engine.next_release(), web) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Every second: escalations of active sources, the alert log's
    /// retries, expired blocks, and (every 5 s) the distributed-scan view
    /// and changed feed files.
    pub fn every_second(&mut self) {
        let view = KernelView {
            maps: &self.running.maps,
            reply: self.reply.as_ref(),
        };
        let now = Instant::now();
        let mut findings = self.engine.release_held(&view, now);
        findings.extend(self.engine.poll_active(&view, now));
        for finding in findings {
            self.report(&finding);
        }
        if self.ticks.is_multiple_of(DISTRIBUTED_EVERY) {
            self.distributed_pass();
        }
        self.alert_log.tick();
        if let Some(store) = self.evidence.as_mut() {
            store.tick(Instant::now(), kernel_now_ns());
        }
        self.ticks += 1;
        self.mitigation.expire();
        if let Some(b) = self.bouncer.as_mut() {
            b.tick();
        }
        if self.ticks.is_multiple_of(5) {
            let now = feed_mtimes_of(&self.running.config.feeds);
            if now != self.feed_mtimes {
                self.feed_mtimes = now;
                log::info!("feed files changed: reloading");
                self.reload_feeds();
            }
        }
    }

    /// A pull of CrowdSec's decision stream.
    pub fn on_pull(&mut self, pull: Pull) {
        if let Some(b) = self.bouncer.as_mut() {
            b.apply(pull, &mut self.mitigation);
        }
    }

    /// The distributed-scan view: the resolved first contacts of the window
    /// (a pass over the mapped contact table), less those of sources that
    /// are flagged or ignored; each target found is one alert (never a block).
    fn distributed_pass(&mut self) {
        let Some(reply) = &self.reply else {
            return;
        };
        if !self.distributed.config().enabled {
            return;
        }
        // Only new failed first contacts can make a new finding: without
        // any since the last pass (an idle host, or one serving clients),
        // the table is not walked.
        // (A counter that cannot be read: walk.)
        let no_answers = self
            .sweep
            .as_ref()
            .map_or(0, |s| s.no_answers.load(Ordering::Relaxed));
        let failures = reply
            .counters()
            .ok()
            .map(|c| c.get(ReplyCounter::Failures).wrapping_add(no_answers));
        if failures.is_some() && failures == self.failures_seen {
            return;
        }
        self.failures_seen = failures;
        let now_ns = kernel_now_ns();
        let since = now_ns.saturating_sub(self.distributed.config().window_ns);
        // Contacts of sources that crossed a threshold themselves are left
        // out while walking the table (a full-port scan by one flagged
        // source fills it): only the rest are decoded and kept.
        let engine = &self.engine;
        let flagged: HashSet<[u8; 16]> = engine
            .active()
            .iter()
            .filter(|(_, a)| !a.types.is_empty())
            .map(|(k, _)| k.addr)
            .collect();
        let mut failed = Vec::new();
        reply.for_each_resolved_contact(since, |key, first_ns, result| {
            if !flagged.contains(&key.remote) {
                failed.extend(FailedContact::from_contact(key, first_ns, result));
            }
        });
        let found =
            self.distributed
                .evaluate(failed, |k| engine.accounted_for(k), now_ns, Instant::now());
        if found.is_empty() {
            return;
        }
        let clock = KernelClock::now();
        let window = self.running.config.detection.window_seconds;
        for f in &found {
            let alert = DistributedAlert::from_finding(f, window, &clock);
            log::warn!("{}", alert.summary());
            // A failure is logged and counted by the log itself.
            let _ = self.alert_log.append(&alert);
        }
    }

    /// SIGHUP: reopen the alert log, reload the feeds.
    pub fn on_sighup(&mut self) {
        // A failure is logged by the log (and retried).
        if self.alert_log.reopen().is_ok() {
            log::info!("reopened alert log {}", self.alert_log.path().display());
        }
        log::info!("SIGHUP: reloading feeds");
        self.reload_feeds();
        self.feed_mtimes = feed_mtimes_of(&self.running.config.feeds);
    }

    fn reload_feeds(&mut self) {
        for problem in self.mitigation.load_feeds(&self.running.config.feeds) {
            log::warn!("{problem}");
        }
    }

    /// The summary lines: per interface, and the detection counts.
    pub fn log_summary(&mut self) {
        match self.running.maps.iface_counters() {
            Ok(counters) => {
                for line in self.summary.lines(&counters, &self.names) {
                    log::info!("{line}");
                }
            }
            Err(e) => log::warn!("cannot read counters: {e}"),
        }
        let s = self.engine.stats;
        log::info!(
            "detection: {} crossings, {} alerts, {} ignored, {} active sources",
            s.events,
            s.alerts,
            s.ignored,
            self.engine.active_sources()
        );
    }

    /// A finding goes to mitigation first (its action is part of the
    /// alert), then to the alert log and, at the end of the step, to
    /// Alertmanager.
    fn report(&mut self, finding: &Finding) {
        let clock = KernelClock::now();
        let net = finding.network;
        let action = match finding.reason {
            AlertReason::New => self.mitigation.on_detection(net, &finding.types, &clock),
            AlertReason::Escalated => self.mitigation.current_action(net, &clock),
        };
        let id = u32::from(finding.stats.known_bad);
        let known_bad = (id != 0).then(|| {
            self.mitigation
                .feed_name(id)
                .unwrap_or_else(|| format!("feed {id}"))
        });
        let mut alert = Alert::from_finding(
            finding,
            self.names.get(&finding.stats.last_ifindex).cloned(),
            self.running.config.detection.window_seconds,
            &clock,
        );
        alert.set_outcome(action, known_bad);
        alert.tls = self.tls_of(&net, &clock);
        self.attach_evidence(finding, &mut alert, &clock);
        log::warn!("{}", alert.summary());
        // A failure is logged (rate-limited) and counted by the log itself;
        // the alert waits in memory and still goes to Alertmanager.
        let _ = self.alert_log.append(&alert);
        *self
            .alerts_by_tool
            .entry(alert.scanner_tool.name)
            .or_default() += 1;
        if let Some(m) = &self.machine {
            m.send(&alert);
        }
        self.alerted.push(alert.source);
    }

    /// The flagged active sources with their scan types (for Alertmanager).
    fn flagged(&self) -> Vec<(String, Vec<ScanType>)> {
        let prefixes = self.running.config.detection.prefixes();
        self.engine
            .active()
            .iter()
            .filter(|(_, a)| a.flagged())
            .map(|(k, a)| (prefixes.label(k.ip()), a.types.clone()))
            .collect()
    }

    /// Every `alertmanager::RESEND`: re-send what fires, resolve what stopped.
    pub fn resend_alerts(&mut self) {
        let flagged = self.flagged();
        if let Some(p) = self.pusher.as_mut() {
            p.resend(flagged);
        }
    }

    /// After each step: new alerts to Alertmanager at once, and the
    /// snapshot the metrics read.
    pub fn finish_step(&mut self, metrics_top: usize) {
        let alerted = std::mem::take(&mut self.alerted);
        if !alerted.is_empty() {
            let flagged = self.flagged();
            if let Some(p) = self.pusher.as_mut() {
                p.alerted(flagged, &alerted);
            }
        }
        let mut s = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        s.engine = self.engine.stats;
        s.distributed = self.distributed.stats;
        s.alert_log = self.alert_log.stats();
        s.detections.clone_from(&self.engine.detections);
        s.detections
            .insert(ScanType::DistributedScan, self.distributed.stats.detections);
        if let Some(web) = &self.web {
            let w = web.detector.stats();
            s.detections
                .insert(ScanType::VulnScanner, w.findings_vuln_scanner);
            s.detections
                .insert(ScanType::WordlistScan, w.findings_wordlist_scan);
            s.web = Some((w, web.decode_errors));
        }
        s.active = self.engine.active_by_type();
        s.top = self.engine.top_flagged(metrics_top);
        s.mitigation = self.mitigation.stats;
        s.feeds.clone_from(&self.mitigation.feed_stats);
        s.alerts_by_tool.clone_from(&self.alerts_by_tool);
        s.evidence = self.evidence.as_ref().map(|e| e.stats).unwrap_or_default();
        s.crowdsec_bouncer = self.bouncer.as_ref().map(|b| b.stats.clone());
        s.crowdsec_machine = self.machine.as_ref().map(|m| m.counters.stats());
        if let Some(p) = &self.pusher {
            s.alertmanager_pushes = p.counters.pushes.load(Ordering::Relaxed);
            s.alertmanager_errors = p.counters.errors.load(Ordering::Relaxed);
        }
    }
}
