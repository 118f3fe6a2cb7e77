//! Layer 1: the TOML configuration file (`--config`) as plain data: the
//! agent's own settings (`[agent]`: interfaces, metrics address, alert log,
//! ...), detection windows, thresholds, suppression and the `ignore` list,
//! mitigation and feeds. Every field has a default, so an empty file (or no
//! file) is a valid configuration; `scanwatch run` flags override `[agent]`.
//! Validation is one function per table; errors name file, line and field.

pub mod agent;
pub mod crowdsec;
pub mod detection;
pub mod evidence;
pub mod mitigation;
pub mod spans;
pub mod web;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use agent::{
    AgentConfig, DEFAULT_ALERT_LOG, DEFAULT_CONTROL_SOCKET, DEFAULT_COUNT_INTERVAL,
    DEFAULT_METRICS_ADDR, DEFAULT_METRICS_TOP, DEFAULT_PIN_DIR, DEFAULT_SUMMARY_INTERVAL,
};
pub use crowdsec::CrowdsecConfig;
pub use detection::{
    Detection, DistinctHosts, DistinctPorts, DistributedScan, ReplyScan, StealthScan, SynFlood,
};
pub use evidence::{DEFAULT_EVIDENCE_DIR, EvidenceConfig};
pub use mitigation::{FeedAction, FeedConfig, MitigationConfig};
pub use web::{DEFAULT_WEB_CATALOGUE, Web, WebSignature};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not TOML, or TOML that no field can be named for.
    #[error("config {path}: {}{message}", at_line(*line))]
    Parse {
        path: String,
        line: Option<usize>,
        message: String,
    },
    /// A field's value is wrong (or unknown, or of the wrong type). `line`
    /// is `None` when the file does not set the field (its default is used).
    #[error("config {path}: {}field `{field}`: {message}", at_line(*line))]
    Invalid {
        path: String,
        line: Option<usize>,
        field: String,
        message: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

/// `["feeds", "1", "name"]` as `feeds[1].name`.
fn field_name(path: &[&str]) -> String {
    let mut out = String::new();
    for seg in path {
        if !out.is_empty() && seg.parse::<usize>().is_ok() {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// What validation needs to name a bad field: the text (for its line) and
/// the file's name.
pub struct Validator<'a> {
    text: &'a str,
    path: &'a str,
}

impl Validator<'_> {
    /// An error for `field` (its line when the file sets it).
    pub fn invalid(&self, field: &[&str], message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_string(),
            line: spans::line_of_key(self.text, field),
            field: field_name(field),
            message,
        }
    }

    /// `v` must lie in `lo..=hi`.
    pub fn range(&self, field: &[&str], v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(self.invalid(field, format!("{v} is out of range {lo}..={hi}")))
        }
    }

    /// Whether the file sets `field` (otherwise its default is in use).
    pub fn is_set(&self, field: &[&str]) -> bool {
        spans::line_of_key(self.text, field).is_some()
    }
}

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub detection: Detection,
    pub mitigation: MitigationConfig,
    pub feeds: Vec<FeedConfig>,
    pub crowdsec: CrowdsecConfig,
    pub evidence: EvidenceConfig,
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().replace('\n', " | ");
            let located = e.span().map(|span| {
                spans::key_at(text, span.clone()).ok_or_else(|| spans::line_at(text, span.start))
            });
            match located {
                Some(Ok((field, line))) => ConfigError::Invalid {
                    path: path.to_string(),
                    line: Some(line),
                    field,
                    message,
                },
                Some(Err(line)) => ConfigError::Parse {
                    path: path.to_string(),
                    line: Some(line),
                    message,
                },
                None => ConfigError::Parse {
                    path: path.to_string(),
                    line: None,
                    message,
                },
            }
        })?;
        config.validate(&Validator { text, path })?;
        Ok(config)
    }

    fn validate(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        self.agent.validate(v)?;
        self.detection.validate(v)?;
        self.mitigation.validate(v)?;
        mitigation::validate_feeds(&self.feeds, v)?;
        self.crowdsec.validate(v)?;
        self.evidence.validate(v)
    }

    /// What the kernel applies: the detection thresholds and the evidence
    /// packets' budget.
    pub fn kernel_config(&self) -> scanwatch_common::DetectConfig {
        scanwatch_common::DetectConfig {
            evidence_packets: self.evidence.kernel_packets(),
            ..self.detection.kernel_config()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use scanwatch_common::sketch::{PORT_BITS, bits_for_threshold};

    use super::*;
    use crate::model::AttachMode;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::parse("", "x.toml").unwrap();
        assert_eq!(c, Config::default());
        let d = &c.detection;
        assert_eq!(d.window_seconds, 300);
        assert_eq!(d.port_scan.distinct_ports, 15);
        assert_eq!(d.host_sweep.distinct_hosts, 25);
        assert!(!c.agent.keep_attached, "detach on stop by default");
    }

    #[test]
    fn agent_keep_attached() {
        let c = Config::parse("[agent]\nkeep_attached = true\n", "x.toml").unwrap();
        assert!(c.agent.keep_attached);
        assert!(Config::parse("[agent]\nkeep = true\n", "x.toml").is_err());
    }

    #[test]
    fn full_file() {
        let c = Config::parse(
            r#"
[detection]
window_seconds = 60
suppression_seconds = 30
escalation_factor = 2.5
ignore = ["198.18.5.0/24", "fd00:5::/64"]

[detection.port_scan]
distinct_ports = 100

[detection.ping_sweep]
enabled = false
distinct_hosts = 10
"#,
            "x.toml",
        )
        .unwrap();
        let d = &c.detection;
        assert_eq!(d.window_seconds, 60);
        assert!(d.ignored("198.18.5.7".parse().unwrap()));
        assert!(
            d.ignored("::ffff:198.18.5.7".parse().unwrap()),
            "IPv4-mapped too"
        );
        assert!(d.ignored("fd00:5::9".parse().unwrap()));
        assert!(!d.ignored("198.18.6.1".parse().unwrap()));
        let k = d.kernel_config();
        assert_eq!(k.window_ns, 60_000_000_000);
        assert_eq!(k.ports_exact, u32::MAX, "100 ports is beyond the exact set");
        assert_eq!(k.ports_bits, bits_for_threshold(100, PORT_BITS));
        assert_eq!(
            (k.icmp_exact, k.icmp_bits),
            (u32::MAX, u32::MAX),
            "disabled"
        );
        assert_eq!(
            (k.hosts_exact, k.hosts_bits),
            (25, u32::MAX),
            "25 hosts fit the exact set"
        );
    }

    #[test]
    fn mitigation_and_feeds() {
        let c = Config::parse(
            r#"
[mitigation]
auto_block = true
ttl_seconds = { port_scan = 600, stealth_scan = 7200 }
repeat_factor = 3.0
max_ttl_seconds = 10000
never_block = ["198.18.0.70/32"]

[[feeds]]
name = "firehol_level1"
path = "/var/lib/scanwatch/firehol_level1.netset"
action = "drop"

[[feeds]]
name = "watch"
path = "watch.txt"
action = "tag"
"#,
            "m.toml",
        )
        .unwrap();
        let m = &c.mitigation;
        assert!(m.auto_block && !m.dry_run);
        use crate::model::ScanType::{PortScan, StealthScan, UdpScan};
        assert_eq!(m.ttl_for(&[PortScan], 0), Duration::from_secs(600));
        assert_eq!(
            m.ttl_for(&[PortScan, StealthScan], 0),
            Duration::from_secs(7200)
        );
        assert_eq!(m.ttl_for(&[UdpScan], 0), Duration::from_secs(3600));
        assert_eq!(m.ttl_for(&[PortScan], 1), Duration::from_secs(1800));
        assert_eq!(
            m.ttl_for(&[PortScan], 5),
            Duration::from_secs(10000),
            "capped"
        );
        assert_eq!(c.feeds.len(), 2);
        assert_eq!(c.feeds[0].action, FeedAction::Drop);
        let e = Config::parse("[mitigation.ttl_seconds]\nport_scna = 5\n", "m.toml").unwrap_err();
        assert!(
            e.to_string().contains("unknown scan type \"port_scna\""),
            "{e}"
        );
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Config::parse(
            "[[feeds]]\nname = \"a\"\npath = \"x\"\naction = \"explode\"\n",
            "m.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("m.toml"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = Config::parse("[detection.port_scan]\ndistinct_ports = 1\n", "/etc/s.toml")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "config /etc/s.toml: line 2: field `detection.port_scan.distinct_ports`: 1 is out of range 2..=620"
        );
        let e = Config::parse("[detection]\nwindow_secs = 5\n", "s.toml").unwrap_err();
        assert!(e.to_string().contains("window_secs"), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Config::parse("[detection]\nignore = [\"10.0.0.0/33\"]\n", "s.toml").unwrap_err();
        assert!(e.to_string().contains("s.toml"), "{e}");
        let e = Config::parse("[detection]\nescalation_factor = 1.0\n", "s.toml").unwrap_err();
        assert!(e.to_string().contains("escalation_factor"), "{e}");
        let e = Config::parse(
            "[detection.port_scan]\ndistinct_ports = \"many\"\n",
            "s.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    /// The packaged /etc/scanwatch/scanwatch.toml (deploy/debian/scanwatch.toml).
    const PACKAGED: &str = include_str!("../../../deploy/debian/scanwatch.toml");

    /// Its option lines (`#key = value`, `#[table]`) uncommented; prose
    /// comments (`# ...`) stay comments.
    fn uncommented(text: &str) -> String {
        text.lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c == '[' || c.is_ascii_lowercase()) => {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every leaf key of a TOML value, as dotted paths.
    fn leaf_keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) if !t.is_empty() => {
                for (k, v) in t {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaf_keys(&path, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn packaged_config_lists_every_option_with_its_default() {
        // As shipped (all commented): the defaults.
        assert_eq!(
            Config::parse(PACKAGED, "scanwatch.toml").unwrap(),
            Config::default()
        );
        // Uncommented: still exactly the defaults, so each value shown is the default...
        let text = uncommented(PACKAGED);
        let parsed = Config::parse(&text, "uncommented").unwrap();
        assert_eq!(parsed, Config::default(), "{text}");
        // ...and every option is there: each key of the default configuration is set.
        let set: toml::Value = toml::from_str(&text).unwrap();
        let mut shown = Vec::new();
        leaf_keys("", &set, &mut shown);
        let mut all = Vec::new();
        leaf_keys(
            "",
            &toml::Value::try_from(Config::default()).unwrap(),
            &mut all,
        );
        let missing: Vec<&String> = all.iter().filter(|k| !shown.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "options missing from the packaged config: {missing:?}"
        );
        assert!(all.len() >= 38, "{all:?}");
    }

    #[test]
    fn agent_table() {
        let c = Config::parse(
            r#"
[agent]
interfaces = ["eth0", "eth1"]
xdp_mode = "native"
pin_dir = "/sys/fs/bpf/edge"
map_size = 1048576
summary_interval_seconds = 30
alert_log = "/var/log/edge/alerts.jsonl"
metrics_addr = "[::]:9477"
metrics_top = 0
count_interval_seconds = 120
alertmanager_url = "http://127.0.0.1:9093"
control_socket = "/run/edge.sock"
"#,
            "a.toml",
        )
        .unwrap();
        let a = &c.agent;
        assert_eq!(a.interfaces, ["eth0", "eth1"]);
        assert_eq!(a.xdp_mode, AttachMode::Native);
        assert_eq!(a.metrics_addr.to_string(), "[::]:9477");
        assert_eq!(a.map_size, 1 << 20);
        for (text, needle) in [
            (
                "[agent]\nmap_size = 10\n",
                "line 2: field `agent.map_size`: 10 is out of range 1024..=16777216",
            ),
            (
                "[agent]\n\ninterfaces = [\"eth0\", \"eth0\"]\n",
                "line 3: field `agent.interfaces`: interface \"eth0\" is listed twice",
            ),
            ("[agent]\ninterfaces = [\"\"]\n", "field `agent.interfaces`"),
            (
                "[agent]\nsummary_interval_seconds = 0\n",
                "line 2: field `agent.summary_interval_seconds`",
            ),
            (
                "[agent]\nmetrics_top = 5000\n",
                "field `agent.metrics_top`: 5000 is out of range 0..=1000",
            ),
            (
                "[agent]\nalertmanager_url = \"https://am\"\n",
                "line 2: field `agent.alertmanager_url`",
            ),
            (
                "[agent]\nalert_log = \"\"\n",
                "field `agent.alert_log`: must not be empty",
            ),
            ("[agent]\nmetrics_addr = \"localhost\"\n", "line 2"),
            ("[agent]\nxdp_mode = \"turbo\"\n", "line 2"),
            ("[agent]\ninterface = [\"eth0\"]\n", "interface"),
            (
                "[detection]\nadmission_slots = 12288\n",
                "line 2: field `detection.admission_slots`: 12288 must be a power of two in 1024..=1048576",
            ),
            (
                "[detection]\nadmission_slots = 512\n",
                "field `detection.admission_slots`: 512 must be a power of two",
            ),
        ] {
            let e = Config::parse(text, "/etc/scanwatch/scanwatch.toml").unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("/etc/scanwatch/scanwatch.toml"), "{msg}");
            assert!(msg.contains(needle), "{text:?}: {needle:?} in {msg}");
        }
    }

    #[test]
    fn reply_scan_section() {
        let d = Config::default().detection;
        assert!(d.reply_scan.enabled);
        let k = d.reply_config();
        assert_eq!(k.enabled, 1);
        assert_eq!(k.failures_to_flag(), 4);
        assert_eq!(k.report_interval_ns, 300_000_000_000);
        let c = Config::parse(
            "[detection.reply_scan]\ntheta0 = 0.9\ntheta1 = 0.1\nalpha = 0.001\nbeta = 0.999\nno_answer_timeout_seconds = 3\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.detection.reply_scan.no_answer_timeout_seconds, 3);
        assert_eq!(c.detection.reply_config().failures_to_flag(), 4);
        assert_eq!(c.detection.reply_config().per_port_successes, 0);
        let per_port = Config::parse(
            "[detection.reply_scan]\nsuccesses_per_port = true\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(per_port.detection.reply_config().per_port_successes, 1);
        let off = Config::parse("[detection.reply_scan]\nenabled = false\n", "x.toml").unwrap();
        assert_eq!(off.detection.reply_config().enabled, 0);
        let err = Config::parse(
            "[detection.reply_scan]\ntheta0 = 0.2\ntheta1 = 0.8\n",
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 3") && err.contains("detection.reply_scan.theta1"),
            "{err}"
        );
        let err = Config::parse("[detection.reply_scan]\nbeta = 1.5\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("detection.reply_scan.beta"), "{err}");
        assert!(Config::parse("[detection.reply_scan]\nbogus = 1\n", "x.toml").is_err());
    }
}
