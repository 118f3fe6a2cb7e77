//! The alert line of a distributed scan: it names a target (a local
//! address, or a port) and the sources taking part, not one source.

use serde::Serialize;

use crate::{
    detect::{AlertReason, Confidence, DistributedFinding, Target, distributed::Contributor},
    model::{KernelClock, ScanType},
};

/// One `distributed_scan` alert line (same log as the per-source alerts;
/// it has `target` where they have `source`).
#[derive(Clone, Debug, Serialize)]
pub struct DistributedAlert {
    pub time: String,
    pub scan_types: [ScanType; 1],
    pub attack_technique: &'static str,
    /// Always `distributed` (the target-side view over first contacts).
    pub detector: &'static str,
    pub reason: AlertReason,
    /// The local address (`198.18.0.2`), or the port (`tcp/22`).
    pub target: String,
    /// `address` (many ports of it) or `port` (on many local addresses).
    pub target_kind: &'static str,
    pub window_seconds: u64,
    /// Distinct ports of the address, or local addresses on the port, that
    /// not-yet-flagged sources failed first contacts on in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_ports: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct_hosts: Option<u64>,
    /// The threshold reached (`distinct_ports` or `distinct_hosts` of
    /// `[detection.distributed_scan]`).
    pub threshold: u32,
    /// Sources taking part, and their failed first contacts (of which no answer).
    pub sources: u64,
    pub failed_contacts: u64,
    pub no_answers: u64,
    /// The biggest contributors (at most `top_sources`), most distinct ports
    /// or addresses first.
    pub top_sources: Vec<Contributor>,
    /// Up to 16 ports (address target) or local addresses (port target), lowest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample_ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample_hosts: Vec<String>,
    /// The first and last of these contacts.
    pub first_contact: String,
    pub last_contact: String,
    pub confidence: Confidence,
    /// Always `none`: a distributed scan is never blocked (its sources are
    /// many, each under every threshold, and may be spoofed).
    pub action: &'static str,
}

impl DistributedAlert {
    pub fn from_finding(f: &DistributedFinding, window_seconds: u64, clock: &KernelClock) -> Self {
        let (distinct_ports, distinct_hosts, technique) = match f.target {
            Target::Address(_) => (Some(f.distinct), None, "T1595"),
            Target::Port(_) => (None, Some(f.distinct), "T1595.001"),
        };
        Self {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            scan_types: [ScanType::DistributedScan],
            attack_technique: technique,
            detector: "distributed",
            reason: f.reason,
            target: f.target.label(),
            target_kind: f.target.kind(),
            window_seconds,
            distinct_ports,
            distinct_hosts,
            threshold: f.threshold,
            sources: f.sources,
            failed_contacts: f.failed_contacts,
            no_answers: f.no_answers,
            top_sources: f.top.clone(),
            sample_ports: f.sample_ports.iter().map(|p| p.label()).collect(),
            sample_hosts: f.sample_hosts.iter().map(ToString::to_string).collect(),
            first_contact: clock.rfc3339(f.first_ns),
            last_contact: clock.rfc3339(f.last_ns),
            confidence: f.confidence,
            action: "none",
        }
    }

    /// A short human line for the agent's log.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.top_sources.iter().map(|c| c.source.as_str()).collect();
        format!(
            "ALERT distributed_scan of {} {} ({}, {} sources, {} distinct {}, {} failed first contacts): {}{}",
            self.target_kind,
            self.target,
            self.attack_technique,
            self.sources,
            self.distinct_ports.or(self.distinct_hosts).unwrap_or(0),
            if self.distinct_ports.is_some() {
                "ports"
            } else {
                "hosts"
            },
            self.failed_contacts,
            names.join(", "),
            if self.sources > names.len() as u64 {
                ", ..."
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::detect::distributed::LocalPort;

    #[test]
    fn distributed_alert_json() {
        let clock = KernelClock::at(
            SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            10_000_000_000,
        );
        let f = DistributedFinding {
            target: Target::Address("198.18.0.2".parse().unwrap()),
            distinct: 80,
            threshold: 15,
            sources: 20,
            failed_contacts: 80,
            no_answers: 0,
            top: vec![Contributor {
                source: "198.18.0.100".into(),
                distinct: 4,
            }],
            sample_ports: vec![LocalPort {
                port: 1000,
                udp: false,
            }],
            sample_hosts: Vec::new(),
            first_ns: 9_000_000_000,
            last_ns: 9_500_000_000,
            reason: AlertReason::New,
            confidence: Confidence::High,
        };
        let a = DistributedAlert::from_finding(&f, 300, &clock);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["scan_types"], serde_json::json!(["distributed_scan"]));
        assert_eq!(v["target"], "198.18.0.2");
        assert_eq!(v["target_kind"], "address");
        assert_eq!(v["distinct_ports"], 80);
        assert!(v.get("distinct_hosts").is_none());
        assert!(v.get("source").is_none(), "a target, not a source");
        assert_eq!(v["top_sources"][0]["source"], "198.18.0.100");
        assert_eq!(v["top_sources"][0]["distinct"], 4);
        assert_eq!(v["sample_ports"], serde_json::json!(["tcp/1000"]));
        assert_eq!(v["first_contact"], "1970-01-01T00:01:39.000Z");
        assert_eq!(v["action"], "none");
        assert_eq!(v["detector"], "distributed");
        assert_eq!(v["attack_technique"], "T1595");
        assert!(a.summary().contains("198.18.0.100"), "{}", a.summary());
    }
}
