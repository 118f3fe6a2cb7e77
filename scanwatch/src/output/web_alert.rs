//! The alert line of a web-layer detection (`vuln_scanner`,
//! `wordlist_scan`): one source, its requests' evidence (tool, User-Agent,
//! not-found paths, ClientHellos), and what mitigation did.

use serde::Serialize;

use super::mitigation::Action;
use crate::{
    detect::{
        Confidence,
        web::{TlsSeen, WebFinding},
    },
    model::{KernelClock, ScanType},
};

/// One web alert line (same log as the other alerts).
#[derive(Clone, Debug, Serialize)]
pub struct WebAlert {
    pub time: String,
    pub source: String,
    pub scan_types: [ScanType; 1],
    /// T1595.002 (vulnerability scanning) or T1595.003 (wordlist scanning).
    pub attack_technique: &'static str,
    /// Always `web` (sampled requests and the host's answers).
    pub detector: &'static str,
    pub window_seconds: u64,
    pub web: WebEvidence,
    /// The source's first and last request of the window.
    pub first_seen: String,
    pub last_seen: String,
    /// `high` when a catalogue entry names the tool, else `medium`.
    pub confidence: Confidence,
    /// `blocked`, `would_block` (dry run) or `none`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_blocked: Option<&'static str>,
}

/// What the source's requests showed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WebEvidence {
    /// The catalogue entry naming the tool (`null`: found by behaviour).
    pub tool: Option<ToolRef>,
    pub user_agent: Option<String>,
    /// Distinct Host headers (at most 4).
    pub hosts: Vec<String>,
    /// Requests of the source sampled in the window.
    pub requests: u64,
    /// Distinct non-static paths answered 400, 403 or 404.
    pub not_found_paths: u64,
    /// The first of them (at most 10).
    pub sample_paths: Vec<String>,
    /// The source's latest ClientHellos.
    pub tls: Vec<TlsRef>,
}

/// A tool named by the catalogue.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ToolRef {
    pub name: String,
    /// `user_agent` or `ja4`.
    pub matched_by: &'static str,
}

/// A ClientHello in an alert (web alerts and the other alerts of a source
/// that sent one).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TlsRef {
    pub sni: Option<String>,
    /// `null` when the capture cut what JA4 needs.
    pub ja4: Option<String>,
    pub port: u16,
    pub time: String,
}

impl TlsRef {
    pub fn of(t: &TlsSeen, clock: &KernelClock) -> Self {
        Self {
            sni: t.sni.clone(),
            ja4: t.ja4.clone(),
            port: t.local_port,
            time: clock.rfc3339(t.time_ns),
        }
    }
}

impl WebAlert {
    pub fn from_finding(f: &WebFinding, window_seconds: u64, clock: &KernelClock) -> Self {
        let label = crate::model::prefix::label(&f.source);
        Self {
            time: clock.rfc3339(crate::model::kernel_now_ns()),
            source: label,
            scan_types: [f.kind.scan_type()],
            attack_technique: f.kind.technique(),
            detector: "web",
            window_seconds,
            web: WebEvidence {
                tool: f.tool.as_ref().map(|t| ToolRef {
                    name: t.name.clone(),
                    matched_by: t.matched_by,
                }),
                user_agent: f.user_agent.clone(),
                hosts: f.hosts.clone(),
                requests: f.requests,
                not_found_paths: f.not_found_paths,
                sample_paths: f.sample_paths.clone(),
                tls: f.tls.iter().map(|t| TlsRef::of(t, clock)).collect(),
            },
            first_seen: clock.rfc3339(f.first_ns),
            last_seen: clock.rfc3339(f.last_ns),
            confidence: if f.tool.is_some() {
                Confidence::High
            } else {
                Confidence::Medium
            },
            action: "none",
            block_expires: None,
            not_blocked: None,
        }
    }

    /// What mitigation did with the source.
    pub fn set_outcome(&mut self, action: Action) {
        (self.action, self.block_expires, self.not_blocked) = action.alert_fields();
    }

    /// The log line.
    pub fn summary(&self) -> String {
        let tool = self
            .web
            .tool
            .as_ref()
            .map_or("no catalogued tool".to_string(), |t| {
                format!("tool {} (by {})", t.name, t.matched_by)
            });
        format!(
            "ALERT {} from {} ({}, {}, {} requests, {} not-found paths), action {}",
            self.scan_types[0],
            self.source,
            self.attack_technique,
            tool,
            self.web.requests,
            self.web.not_found_paths,
            self.action
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        detect::web::ToolMatch,
        model::{KernelClock, WebScanKind},
    };

    pub(crate) fn finding(tool: bool) -> WebFinding {
        WebFinding {
            source: "198.18.0.1/32".parse().expect("net"),
            kind: WebScanKind::WordlistScan,
            tool: tool.then(|| ToolMatch {
                name: "gobuster".into(),
                matched_by: "user_agent",
            }),
            user_agent: Some("gobuster/3.5".into()),
            hosts: vec!["198.18.0.2".into()],
            requests: 42,
            not_found_paths: 20,
            sample_paths: vec!["/admin".into(), "/.git/config".into()],
            tls: vec![TlsSeen {
                sni: Some("lab.example".into()),
                ja4: Some("t13d3112h2_e8f1e7e78f70_b26ce05bbdd6".into()),
                local_port: 443,
                time_ns: 5_000_000_000,
            }],
            first_ns: 1_000_000_000,
            last_ns: 9_000_000_000,
        }
    }

    #[test]
    fn the_line_names_type_technique_tool_and_paths() {
        let clock = KernelClock::now();
        let mut alert = WebAlert::from_finding(&finding(true), 300, &clock);
        alert.set_outcome(Action::None);
        let v = serde_json::to_value(&alert).expect("json");
        assert_eq!(v["source"], "198.18.0.1");
        assert_eq!(v["scan_types"][0], "wordlist_scan");
        assert_eq!(v["attack_technique"], "T1595.003");
        assert_eq!(v["detector"], "web");
        assert_eq!(v["web"]["tool"]["name"], "gobuster");
        assert_eq!(v["web"]["tool"]["matched_by"], "user_agent");
        assert_eq!(v["web"]["not_found_paths"], 20);
        assert_eq!(v["web"]["sample_paths"][1], "/.git/config");
        assert_eq!(v["web"]["tls"][0]["sni"], "lab.example");
        assert_eq!(v["web"]["tls"][0]["port"], 443);
        assert_eq!(v["confidence"], "high");
        assert_eq!(v["action"], "none");
        assert!(v.get("block_expires").is_none());
        assert!(alert.summary().contains("tool gobuster"));
    }

    #[test]
    fn behaviour_alone_names_no_tool() {
        let clock = KernelClock::now();
        let alert = WebAlert::from_finding(&finding(false), 300, &clock);
        let v = serde_json::to_value(&alert).expect("json");
        assert!(v["web"]["tool"].is_null());
        assert_eq!(v["confidence"], "medium");
    }
}
