//! One alert: a JSON object with the evidence, the verdict and what
//! mitigation did, made from a detection [`Finding`].

use ipnet::IpNet;
use scanwatch_common::{SourceStats, trw::ReplyConfig};
use serde::Serialize;

use super::mitigation::Action;
use crate::{
    detect::{
        AlertReason, Confidence, Evidence, Finding, Group, ProbeCounts, ReplyEvidence, ScannerTool,
        attack_technique,
    },
    model::{KernelClock, ScanType},
};

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
    pub reply: Option<ReplyAlert>,
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
    /// Which tool the probes' header fields point to (`unknown` when no
    /// signature held for every tested probe; `os-stack` for a real TCP
    /// stack).
    pub scanner_tool: ScannerTool,
    /// Other sources of the same scan (`kind` `decoy`: `nmap -D`), when
    /// their first alerts matched this one's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
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
    /// The incident's pcapng file and its packets when this line was
    /// written (`[evidence]`; later probes are appended up to `packets_per_source`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<super::evidence::EvidenceRef>,
    /// The source's latest TLS ClientHellos to the web ports (SNI, JA4),
    /// when `[detection.web]` saw any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<super::web_alert::TlsRef>,
}

/// Everything an alert is built from.
pub struct AlertInput<'a> {
    /// The source: an address, or a network when sources are counted by prefix.
    pub source: &'a IpNet,
    pub stats: &'a SourceStats,
    pub evidence: &'a Evidence,
    pub types: Vec<ScanType>,
    pub reason: AlertReason,
    pub confidence: Confidence,
    pub interface: Option<String>,
    pub window_seconds: u64,
    pub crossed_ns: Option<u64>,
    pub group: Option<Group>,
    pub clock: &'a KernelClock,
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

/// The evidence as the alert shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplyAlert {
    /// First contacts answered with SYN-ACK or a UDP reply.
    pub successes: u64,
    /// First contacts answered with RST or ICMP unreachable.
    pub failures: u64,
    /// First contacts left unanswered past the timeout (failures for the test).
    pub no_answers: u64,
    /// ln(P[outcomes | scanner] / P[outcomes | benign]).
    pub log_likelihood: f64,
    /// The scanner boundary ln(β/α).
    pub threshold: f64,
    /// At the moment the test crossed the boundary (the verdict): successes,
    /// and failed plus unanswered first contacts. Absent before any crossing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub successes_at_verdict: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures_at_verdict: Option<u64>,
}

impl From<&ReplyEvidence> for ReplyAlert {
    fn from(e: &ReplyEvidence) -> Self {
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        Self {
            successes: e.successes,
            failures: e.failures,
            no_answers: e.no_answers,
            log_likelihood: round(ReplyConfig::to_f64(e.llr)),
            threshold: round(ReplyConfig::to_f64(e.upper)),
            successes_at_verdict: (e.crossing_failures > 0).then_some(e.crossing_successes),
            failures_at_verdict: (e.crossing_failures > 0).then_some(e.crossing_failures),
        }
    }
}

impl Alert {
    pub fn new(i: AlertInput<'_>) -> Self {
        let ev = i.evidence;
        Self {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source: crate::model::prefix::label(i.source),
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
            scanner_tool: ScannerTool::from_stats(i.stats),
            group: i.group,
            first_seen: i.clock.rfc3339(i.stats.first_seen_ns),
            last_seen: i.clock.rfc3339(i.stats.last_seen_ns),
            confidence: i.confidence,
            action: "none",
            block_expires: None,
            not_blocked: None,
            known_bad: None,
            evidence: None,
            tls: Vec::new(),
        }
    }

    /// A short human line for the agent's log.
    pub fn summary(&self) -> String {
        let types: Vec<&str> = self.scan_types.iter().map(|t| t.name()).collect();
        format!(
            "ALERT {} {} ({}, {} confidence, action {}, tool {}): {} probes, {} ports, {} hosts in the window; sample ports {:?}",
            self.source,
            types.join("+"),
            self.attack_technique,
            match self.confidence {
                Confidence::Low => "low",
                Confidence::Medium => "medium",
                Confidence::High => "high",
            },
            self.action,
            self.scanner_tool.name,
            self.total_probes,
            self.distinct_ports,
            self.distinct_hosts,
            self.sample_ports
        )
    }

    /// The alert for a finding of the engine.
    pub fn from_finding(
        f: &Finding,
        interface: Option<String>,
        window_seconds: u64,
        clock: &KernelClock,
    ) -> Self {
        Self::new(AlertInput {
            source: &f.network,
            stats: &f.stats,
            evidence: &f.evidence,
            types: f.types.clone(),
            reason: f.reason,
            confidence: f.confidence,
            interface,
            window_seconds,
            crossed_ns: f.crossed_ns,
            group: f.group.clone(),
            clock,
        })
    }

    /// Records what mitigation did with the source, and the `tag` feed
    /// listing it.
    pub fn set_outcome(&mut self, action: Action, known_bad: Option<String>) {
        self.known_bad = known_bad;
        (self.action, self.block_expires, self.not_blocked) = action.alert_fields();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    pub(crate) fn sample() -> Alert {
        let source: IpNet = "198.18.0.9/32".parse().unwrap();
        let stats = SourceStats::new(
            &scanwatch_common::SourceKey::v4([198, 18, 0, 9]),
            1_000_000_000,
            2,
        );
        let ev = Evidence {
            window_probes: [1000, 0, 0, 0, 0, 0],
            distinct_ports: 1000,
            distinct_udp_ports: 0,
            distinct_hosts: 1,
            distinct_icmp_hosts: 0,
            sample_ports: vec![22, 80, 443],
            triggers: 1,
            window_start_ns: 1_000_000_000,
            reply: ReplyEvidence::default(),
        };
        let clock = KernelClock::at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            10_000_000_000,
        );
        Alert::new(AlertInput {
            source: &source,
            stats: &stats,
            evidence: &ev,
            types: vec![ScanType::PortScan],
            reason: AlertReason::New,
            confidence: Confidence::High,
            interface: Some("eth0".into()),
            window_seconds: 300,
            crossed_ns: Some(9_000_000_000),
            group: None,
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
        assert!(v.get("evidence").is_none(), "no evidence packets: {v}");
        let mut a = sample();
        a.evidence = Some(super::super::evidence::EvidenceRef {
            file: "/var/lib/scanwatch/evidence/x.pcapng".into(),
            packets: 3,
        });
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(
            v["evidence"],
            serde_json::json!({"file": "/var/lib/scanwatch/evidence/x.pcapng", "packets": 3})
        );
    }

    #[test]
    fn reply_alerts_carry_the_test_evidence() {
        let mut a = sample();
        a.detector = detector_of(&[ScanType::ReplyScan]);
        let cfg = crate::config::Detection::default().reply_config();
        a.reply = Some(
            (&ReplyEvidence::from_stats(
                &scanwatch_common::trw::ReplyStats {
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
    fn outcomes() {
        let mut a = sample();
        a.set_outcome(
            Action::Blocked {
                expires: "2027-01-01T00:00:00.000Z".into(),
            },
            Some("firehol".into()),
        );
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["action"], "blocked");
        assert_eq!(v["block_expires"], "2027-01-01T00:00:00.000Z");
        assert_eq!(v["known_bad"], "firehol");
        let mut a = sample();
        a.set_outcome(Action::NeverBlock, None);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(
            (v["action"].as_str(), v["not_blocked"].as_str()),
            (Some("none"), Some("never_block"))
        );
    }
}
