//! Alerts with evidence: one JSON object per line, appended to the alert
//! log (and logged). Each line is written with a single `write` on an
//! `O_APPEND` file and nothing is buffered, so a line is either in the file
//! or was never accepted; SIGHUP reopens the file for log rotation.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
};

use scanwatch_common::{SourceKey, SourceStats};
use serde::Serialize;

use crate::{
    clock::BootClock,
    detect::{AlertReason, Confidence, Evidence, ProbeCounts, ScanType, attack_technique},
};

pub const DEFAULT_ALERT_LOG: &str = "/var/log/scanwatch/alerts.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum AlertLogError {
    #[error("alert log {path}: cannot {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("cannot encode alert: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One alert line.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    pub time: String,
    pub source: String,
    pub interface: Option<String>,
    pub scan_types: Vec<ScanType>,
    pub attack_technique: &'static str,
    /// Which detector fired: `threshold` (distinct ports/hosts, stealth,
    /// rate), `reply` (the reply-aware sequential test) or `threshold+reply`.
    pub detector: &'static str,
    /// The reply-aware test's evidence (outcomes of the source's first
    /// contacts and the log-likelihood ratio), once any was answered or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<crate::reply::ReplyAlert>,
    pub reason: AlertReason,
    pub window_seconds: u64,
    pub window_start: String,
    /// When the kernel saw the probe that crossed the threshold (absent for
    /// escalations found by re-checking an active source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crossed_at: Option<String>,
    /// Probes in the window, by kind.
    #[serde(flatten)]
    pub probes: ProbeCounts,
    pub total_probes: u64,
    pub distinct_ports: u64,
    pub distinct_udp_ports: u64,
    pub distinct_hosts: u64,
    pub distinct_icmp_hosts: u64,
    pub sample_ports: Vec<u16>,
    /// When the source was first and last seen (any window).
    pub first_seen: String,
    pub last_seen: String,
    pub confidence: Confidence,
    /// `blocked`, `would_block` (dry run) or `none`.
    pub action: &'static str,
    /// When the block ends (with `blocked` / `would_block`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_expires: Option<String>,
    /// Why a detected source was not blocked (`never_block`, `blocklist_full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_blocked: Option<&'static str>,
    /// The `tag` feed listing the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_bad: Option<String>,
}

/// Everything an alert is built from.
pub struct AlertInput<'a> {
    pub key: &'a SourceKey,
    pub stats: &'a SourceStats,
    pub evidence: &'a Evidence,
    pub types: Vec<ScanType>,
    pub reason: AlertReason,
    pub confidence: Confidence,
    pub interface: Option<String>,
    pub window_seconds: u64,
    pub crossed_ns: Option<u64>,
    pub clock: &'a BootClock,
}

/// Which detector found `types`.
fn detector_of(types: &[ScanType]) -> &'static str {
    let reply = types.contains(&ScanType::ReplyScan);
    let threshold = types.iter().any(|t| *t != ScanType::ReplyScan);
    match (threshold, reply) {
        (true, true) => "threshold+reply",
        (false, true) => "reply",
        _ => "threshold",
    }
}

impl Alert {
    pub fn new(i: AlertInput<'_>) -> Self {
        let ev = i.evidence;
        Self {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source: i.key.ip().to_string(),
            interface: i.interface,
            attack_technique: attack_technique(&i.types),
            detector: detector_of(&i.types),
            reply: ev.reply.any().then(|| (&ev.reply).into()),
            scan_types: i.types,
            reason: i.reason,
            window_seconds: i.window_seconds,
            window_start: i.clock.rfc3339(ev.window_start_ns),
            crossed_at: i.crossed_ns.map(|ns| i.clock.rfc3339(ns)),
            probes: ProbeCounts::from_array(&ev.window_probes),
            total_probes: ev.total(),
            distinct_ports: ev.distinct_ports,
            distinct_udp_ports: ev.distinct_udp_ports,
            distinct_hosts: ev.distinct_hosts,
            distinct_icmp_hosts: ev.distinct_icmp_hosts,
            sample_ports: ev.sample_ports.clone(),
            first_seen: i.clock.rfc3339(i.stats.first_seen_ns),
            last_seen: i.clock.rfc3339(i.stats.last_seen_ns),
            confidence: i.confidence,
            action: "none",
            block_expires: None,
            not_blocked: None,
            known_bad: None,
        }
    }

    /// A short human line for the agent's log.
    pub fn summary(&self) -> String {
        let types: Vec<&str> = self.scan_types.iter().map(|t| t.name()).collect();
        format!(
            "ALERT {} {} ({}, {} confidence, action {}): {} probes, {} ports, {} hosts in the window; sample ports {:?}",
            self.source,
            types.join("+"),
            self.attack_technique,
            match self.confidence {
                Confidence::Low => "low",
                Confidence::Medium => "medium",
                Confidence::High => "high",
            },
            self.action,
            self.total_probes,
            self.distinct_ports,
            self.distinct_hosts,
            self.sample_ports
        )
    }
}

/// The alert log file.
pub struct AlertLog {
    path: PathBuf,
    file: File,
}

impl AlertLog {
    /// Opens (creating it and its directory if needed) for appending.
    pub fn open(path: &Path) -> Result<Self, AlertLogError> {
        let io = |op| {
            move |source| AlertLogError::Io {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create its directory"))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io("open"))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reopens the path (after rotation moved the old file away).
    pub fn reopen(&mut self) -> Result<(), AlertLogError> {
        *self = Self::open(&self.path.clone())?;
        Ok(())
    }

    /// Appends one line (a single write).
    pub fn append(&mut self, alert: &Alert) -> Result<(), AlertLogError> {
        let mut line = serde_json::to_vec(alert)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|source| AlertLogError::Io {
                path: self.path.clone(),
                op: "append",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ScanType;
    use std::time::{Duration, SystemTime};

    fn sample() -> Alert {
        let key = SourceKey::v4([198, 18, 0, 9]);
        let stats = SourceStats::new(1_000_000_000, 2);
        let ev = Evidence {
            window_probes: [1000, 0, 0, 0, 0, 0],
            distinct_ports: 1000,
            distinct_udp_ports: 0,
            distinct_hosts: 1,
            distinct_icmp_hosts: 0,
            sample_ports: vec![22, 80, 443],
            triggers: 1,
            window_start_ns: 1_000_000_000,
            reply: crate::reply::ReplyEvidence::default(),
        };
        let clock = BootClock::at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            10_000_000_000,
        );
        Alert::new(AlertInput {
            key: &key,
            stats: &stats,
            evidence: &ev,
            types: vec![ScanType::PortScan],
            reason: AlertReason::New,
            confidence: Confidence::High,
            interface: Some("eth0".into()),
            window_seconds: 300,
            crossed_ns: Some(9_000_000_000),
            clock: &clock,
        })
    }

    #[test]
    fn alert_json_has_the_evidence_fields() {
        let v = serde_json::to_value(sample()).unwrap();
        for field in [
            "time",
            "source",
            "interface",
            "scan_types",
            "attack_technique",
            "window_seconds",
            "syn",
            "stealth",
            "udp",
            "icmp_echo",
            "icmp_other_probe",
            "fragment",
            "distinct_ports",
            "distinct_hosts",
            "sample_ports",
            "first_seen",
            "last_seen",
            "confidence",
            "action",
        ] {
            assert!(v.get(field).is_some(), "{field} missing: {v}");
        }
        assert_eq!(v["scan_types"], serde_json::json!(["port_scan"]));
        assert_eq!(v["attack_technique"], "T1595");
        assert_eq!(v["confidence"], "high");
        assert_eq!(v["action"], "none");
        assert_eq!(v["first_seen"], "1970-01-01T00:01:31.000Z");
        assert_eq!(v["crossed_at"], "1970-01-01T00:01:39.000Z");
        assert_eq!(v["detector"], "threshold");
        assert!(v.get("reply").is_none(), "no reply evidence: {v}");
    }

    #[test]
    fn reply_alerts_carry_the_test_evidence() {
        let mut a = sample();
        a.detector = detector_of(&[ScanType::ReplyScan]);
        let cfg = crate::config::Detection::default().reply_config();
        a.reply = Some(
            (&crate::reply::ReplyEvidence::from_stats(
                &scanwatch_common::reply::ReplyStats {
                    llr: 4 * cfg.failure_step,
                    failures: 4,
                    successes: 0,
                    no_answers: 1,
                    crossing_failures: 4,
                    ..Default::default()
                },
                &cfg,
            ))
                .into(),
        );
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["detector"], "reply");
        assert_eq!(v["reply"]["failures"], 4);
        assert_eq!(v["reply"]["no_answers"], 1);
        assert_eq!(v["reply"]["successes"], 0);
        assert_eq!(v["reply"]["log_likelihood"], 5.545);
        assert_eq!(v["reply"]["threshold"], 4.595);
        assert_eq!(v["reply"]["failures_at_verdict"], 4);
        assert_eq!(v["reply"]["successes_at_verdict"], 0);
        assert_eq!(
            detector_of(&[ScanType::PortScan, ScanType::ReplyScan]),
            "threshold+reply"
        );
    }

    #[test]
    fn appends_lines_and_reopens_after_rotation() {
        let dir = std::env::temp_dir().join(format!("scanwatch-alerts-{}", std::process::id()));
        let path = dir.join("sub/alerts.jsonl");
        let mut log = AlertLog::open(&path).unwrap();
        log.append(&sample()).unwrap();
        std::fs::rename(&path, dir.join("sub/alerts.jsonl.1")).unwrap();
        log.reopen().unwrap();
        log.append(&sample()).unwrap();
        log.append(&sample()).unwrap();
        let rotated = std::fs::read_to_string(dir.join("sub/alerts.jsonl.1")).unwrap();
        let current = std::fs::read_to_string(&path).unwrap();
        assert_eq!(rotated.lines().count(), 1);
        assert_eq!(current.lines().count(), 2);
        for line in current.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_path_is_an_error_not_a_panic() {
        let e = AlertLog::open(Path::new("/proc/scanwatch/alerts.jsonl"))
            .err()
            .expect("error");
        assert!(
            e.to_string().contains("/proc/scanwatch/alerts.jsonl"),
            "{e}"
        );
    }
}
