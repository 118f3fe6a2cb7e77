//! The TOML configuration file (`--config`): the agent's own settings
//! (`[agent]`: interfaces, metrics address, alert log, ...), detection windows,
//! thresholds, suppression and the `ignore` list, mitigation and feeds. Every
//! field has a default, so an empty file (or no file) is a valid
//! configuration; `scanwatch run` flags override `[agent]`.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use scanwatch_common::{
    DetectConfig,
    sketch::{HOST_BITS, HOST_SET, ICMP_BITS, PORT_BITS, PORT_SET, UDP_BITS, bits_for_threshold},
};
use serde::{Deserialize, Serialize};

use crate::loader::AttachMode;

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

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub detection: Detection,
    pub mitigation: MitigationConfig,
    pub feeds: Vec<FeedConfig>,
}

/// `[agent]`: what `scanwatch run` does besides detecting; each key has a
/// `run` flag of the same meaning that overrides it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Interfaces to watch (`--iface`); `run` needs at least one, here or there.
    pub interfaces: Vec<String>,
    /// `--xdp-mode`: auto, native or skb.
    pub xdp_mode: AttachMode,
    /// `--pin-dir`: bpffs directory where the maps are pinned.
    pub pin_dir: PathBuf,
    /// `--map-size`: sources tracked.
    pub map_size: u32,
    /// `--interval`: seconds between summary log lines.
    pub summary_interval_seconds: u64,
    /// `--alert-log`: alerts appended here, one JSON object per line.
    pub alert_log: PathBuf,
    /// `--metrics-addr`: where `/metrics` listens.
    pub metrics_addr: SocketAddr,
    /// `--metrics-top`: flagged sources exported with a `source` label.
    pub metrics_top: u16,
    /// `--count-interval`: seconds between counts of the source map.
    pub count_interval_seconds: u64,
    /// `--alertmanager-url`: push detections there; empty: no push.
    pub alertmanager_url: String,
    /// `--control-socket`: the root-only control socket.
    pub control_socket: PathBuf,
    /// `--keep-attached`: leave the XDP program attached when the agent stops.
    pub keep_attached: bool,
}

/// `[agent] metrics_addr` and `--metrics-addr` default.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9477);
/// `summary_interval_seconds` / `--interval` default.
pub const DEFAULT_SUMMARY_INTERVAL: u64 = 10;
/// `count_interval_seconds` / `--count-interval` default.
pub const DEFAULT_COUNT_INTERVAL: u64 = 60;
/// `metrics_top` / `--metrics-top` default.
pub const DEFAULT_METRICS_TOP: u16 = 10;

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            xdp_mode: AttachMode::Auto,
            pin_dir: PathBuf::from(crate::bpffs::DEFAULT_PIN_DIR),
            map_size: scanwatch_common::maps::DEFAULT_SOURCE_MAP_SIZE,
            summary_interval_seconds: DEFAULT_SUMMARY_INTERVAL,
            alert_log: PathBuf::from(crate::alerts::DEFAULT_ALERT_LOG),
            metrics_addr: DEFAULT_METRICS_ADDR,
            metrics_top: DEFAULT_METRICS_TOP,
            count_interval_seconds: DEFAULT_COUNT_INTERVAL,
            alertmanager_url: String::new(),
            control_socket: PathBuf::from(crate::control::DEFAULT_CONTROL_SOCKET),
            keep_attached: false,
        }
    }
}

/// `[mitigation]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MitigationConfig {
    /// Block detected sources in XDP (off by default).
    pub auto_block: bool,
    /// Decide and report blocks (`would_block`) without dropping anything.
    pub dry_run: bool,
    /// Block length per scan type, seconds (types not listed: `default_ttl_seconds`).
    pub default_ttl_seconds: u64,
    pub ttl_seconds: std::collections::BTreeMap<String, u64>,
    /// Repeat offenders: each earlier block multiplies the TTL by this, up to `max_ttl_seconds`.
    pub repeat_factor: f64,
    pub max_ttl_seconds: u64,
    /// Blocklist entries (detections and manual blocks).
    pub capacity: u32,
    /// Networks never dropped, besides loopback, link-local and this host's addresses.
    pub never_block: Vec<IpNet>,
    /// Add every address configured on this host's interfaces to `never_block`.
    pub never_block_host_addresses: bool,
    /// Capacity of the feed trie (entries over all feeds).
    pub feed_capacity: u32,
}

impl Default for MitigationConfig {
    fn default() -> Self {
        Self {
            auto_block: false,
            dry_run: false,
            default_ttl_seconds: 3600,
            ttl_seconds: std::collections::BTreeMap::new(),
            repeat_factor: 2.0,
            max_ttl_seconds: 86_400,
            capacity: scanwatch_common::maps::DEFAULT_BLOCKLIST_CAPACITY,
            never_block: Vec::new(),
            never_block_host_addresses: true,
            feed_capacity: scanwatch_common::maps::DEFAULT_FEED_CAPACITY,
        }
    }
}

/// What a feed does with matching sources.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeedAction {
    /// Mark them `known_bad` in alerts and `top`, and raise alert confidence.
    Tag,
    /// Drop their packets (never_block still wins).
    Drop,
}

/// `[[feeds]]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    pub name: String,
    pub path: std::path::PathBuf,
    pub action: FeedAction,
}

/// `[detection]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Detection {
    /// Length of each source's tumbling window (Zeek: 5 minutes).
    pub window_seconds: u64,
    /// At most one alert per source and scan type within this time...
    pub suppression_seconds: u64,
    /// ...unless the source's probes in the window grow by this factor.
    pub escalation_factor: f64,
    /// Sources never alerted on (health checkers, monitoring, own networks).
    pub ignore: Vec<IpNet>,
    pub port_scan: DistinctPorts,
    pub udp_scan: DistinctPorts,
    pub host_sweep: DistinctHosts,
    pub ping_sweep: DistinctHosts,
    pub stealth_scan: StealthScan,
    pub syn_flood_source: SynFlood,
    pub reply_scan: ReplyScan,
}

impl Default for Detection {
    fn default() -> Self {
        Self {
            window_seconds: 300,
            suppression_seconds: 600,
            escalation_factor: 4.0,
            ignore: Vec::new(),
            port_scan: DistinctPorts {
                enabled: true,
                distinct_ports: 15,
            },
            udp_scan: DistinctPorts {
                enabled: true,
                distinct_ports: 15,
            },
            host_sweep: DistinctHosts {
                enabled: true,
                distinct_hosts: 25,
            },
            ping_sweep: DistinctHosts {
                enabled: true,
                distinct_hosts: 10,
            },
            stealth_scan: StealthScan {
                enabled: true,
                probes: 5,
            },
            syn_flood_source: SynFlood {
                enabled: true,
                syns_per_second: 50_000,
            },
            reply_scan: ReplyScan::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DistinctPorts {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub distinct_ports: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DistinctHosts {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub distinct_hosts: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StealthScan {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub probes: u32,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SynFlood {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub syns_per_second: u32,
}

/// `[detection.reply_scan]`: the reply-aware detector, a Threshold Random
/// Walk (Jung et al. 2004) over the outcomes of each source's first
/// contacts with local (address, port): success (SYN-ACK, UDP reply),
/// failure (RST, ICMP unreachable) or no answer within the timeout.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplyScan {
    pub enabled: bool,
    /// Probability that a benign source's first contact succeeds.
    pub theta0: f64,
    /// Probability that a scanner's first contact succeeds (below `theta0`).
    pub theta1: f64,
    /// Bound on the false-positive probability.
    pub alpha: f64,
    /// Detection probability (above `alpha`).
    pub beta: f64,
    /// A first contact unanswered this long counts as a failure.
    pub no_answer_timeout_seconds: u64,
    /// Every open (address, port) a source reaches moves its walk toward
    /// benign. Off (the default): only its first open port on each local
    /// address does, so a port scan that happens to hit a host's few open
    /// ports first is not excused by them.
    pub successes_per_port: bool,
}

impl Default for ReplyScan {
    fn default() -> Self {
        Self {
            enabled: true,
            theta0: 0.8,
            theta1: 0.2,
            alpha: 0.01,
            beta: 0.99,
            no_answer_timeout_seconds: 10,
            successes_per_port: false,
        }
    }
}

const fn yes() -> bool {
    true
}

/// Most that linear counting over `bits` can tell apart (m ln m, rounded down).
fn sketch_limit(bits: u32) -> u32 {
    let m = f64::from(bits);
    (m * m.ln()).floor() as u32 - 1
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
                crate::toml_spans::key_at(text, span.clone())
                    .ok_or_else(|| crate::toml_spans::line_at(text, span.start))
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
        config.validate(text, path)?;
        Ok(config)
    }

    fn validate(&self, text: &str, path: &str) -> Result<(), ConfigError> {
        let d = &self.detection;
        let invalid = |field: &[&str], message: String| ConfigError::Invalid {
            path: path.to_string(),
            line: crate::toml_spans::line_of_key(text, field),
            field: field_name(field),
            message,
        };
        let range = |field: &[&str], v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(invalid(field, format!("{v} is out of range {lo}..={hi}")))
            }
        };
        let a = &self.agent;
        let mut seen = std::collections::BTreeSet::new();
        for name in &a.interfaces {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                return Err(invalid(
                    &["agent", "interfaces"],
                    format!("{name:?} is not an interface name (1 to 15 bytes, no '/' or spaces)"),
                ));
            }
            if !seen.insert(name) {
                return Err(invalid(
                    &["agent", "interfaces"],
                    format!("interface {name:?} is listed twice"),
                ));
            }
        }
        range(
            &["agent", "map_size"],
            u64::from(a.map_size),
            u64::from(scanwatch_common::maps::MIN_SOURCE_MAP_SIZE),
            u64::from(scanwatch_common::maps::MAX_SOURCE_MAP_SIZE),
        )?;
        range(
            &["agent", "summary_interval_seconds"],
            a.summary_interval_seconds,
            1,
            3600,
        )?;
        range(
            &["agent", "count_interval_seconds"],
            a.count_interval_seconds,
            1,
            3600,
        )?;
        range(&["agent", "metrics_top"], u64::from(a.metrics_top), 0, 1000)?;
        for (key, path) in [
            ("pin_dir", &a.pin_dir),
            ("alert_log", &a.alert_log),
            ("control_socket", &a.control_socket),
        ] {
            if path.as_os_str().is_empty() {
                return Err(invalid(&["agent", key], "must not be empty".to_string()));
            }
        }
        if !a.alertmanager_url.is_empty()
            && let Err(e) = crate::alertmanager::Alertmanager::parse(&a.alertmanager_url)
        {
            return Err(invalid(&["agent", "alertmanager_url"], e.to_string()));
        }
        range(
            &["detection", "window_seconds"],
            d.window_seconds,
            1,
            86_400,
        )?;
        range(
            &["detection", "suppression_seconds"],
            d.suppression_seconds,
            0,
            7 * 86_400,
        )?;
        if !(d.escalation_factor.is_finite() && d.escalation_factor > 1.0) {
            return Err(invalid(
                &["detection", "escalation_factor"],
                format!("{} must be a number above 1", d.escalation_factor),
            ));
        }
        let ports_max = u64::from(sketch_limit(PORT_BITS));
        let udp_max = u64::from(sketch_limit(UDP_BITS));
        let hosts_max = u64::from(sketch_limit(HOST_BITS));
        let icmp_max = u64::from(sketch_limit(ICMP_BITS));
        range(
            &["detection", "port_scan", "distinct_ports"],
            u64::from(d.port_scan.distinct_ports),
            2,
            ports_max,
        )?;
        range(
            &["detection", "udp_scan", "distinct_ports"],
            u64::from(d.udp_scan.distinct_ports),
            2,
            udp_max,
        )?;
        range(
            &["detection", "host_sweep", "distinct_hosts"],
            u64::from(d.host_sweep.distinct_hosts),
            2,
            hosts_max,
        )?;
        range(
            &["detection", "ping_sweep", "distinct_hosts"],
            u64::from(d.ping_sweep.distinct_hosts),
            2,
            icmp_max,
        )?;
        range(
            &["detection", "stealth_scan", "probes"],
            u64::from(d.stealth_scan.probes),
            1,
            1_000_000,
        )?;
        range(
            &["detection", "syn_flood_source", "syns_per_second"],
            u64::from(d.syn_flood_source.syns_per_second),
            100,
            100_000_000,
        )?;
        range(
            &["detection", "reply_scan", "no_answer_timeout_seconds"],
            d.reply_scan.no_answer_timeout_seconds,
            1,
            3600,
        )?;
        let r = &d.reply_scan;
        if let Err(e) = scanwatch_common::trw::ReplyConfig::from_params(
            r.theta0, r.theta1, r.alpha, r.beta, 1,
        ) {
            use scanwatch_common::trw::TrwParamError;
            let (key, message) = match e {
                TrwParamError::OutOfRange => {
                    let key = [
                        ("theta0", r.theta0),
                        ("theta1", r.theta1),
                        ("alpha", r.alpha),
                        ("beta", r.beta),
                    ]
                    .into_iter()
                    .find(|(_, v)| !(v.is_finite() && *v > 0.0 && *v < 1.0))
                    .map_or("theta0", |(k, _)| k);
                    (key, "must lie strictly between 0 and 1".to_string())
                }
                TrwParamError::Theta1NotBelowTheta0 => (
                    "theta1",
                    format!("{} must be below theta0 ({})", r.theta1, r.theta0),
                ),
                TrwParamError::AlphaNotBelowBeta => (
                    "alpha",
                    format!("{} must be below beta ({})", r.alpha, r.beta),
                ),
            };
            return Err(invalid(&["detection", "reply_scan", key], message));
        }
        let m = &self.mitigation;
        range(
            &["mitigation", "default_ttl_seconds"],
            m.default_ttl_seconds,
            1,
            30 * 86_400,
        )?;
        range(
            &["mitigation", "max_ttl_seconds"],
            m.max_ttl_seconds,
            1,
            365 * 86_400,
        )?;
        if m.max_ttl_seconds < m.default_ttl_seconds {
            // Name the field the file sets (the other is a default).
            let max_set =
                crate::toml_spans::line_of_key(text, &["mitigation", "max_ttl_seconds"]).is_some();
            return Err(if max_set {
                invalid(
                    &["mitigation", "max_ttl_seconds"],
                    format!(
                        "{} is below default_ttl_seconds ({})",
                        m.max_ttl_seconds, m.default_ttl_seconds
                    ),
                )
            } else {
                invalid(
                    &["mitigation", "default_ttl_seconds"],
                    format!(
                        "{} is above max_ttl_seconds ({}, the default): raise max_ttl_seconds too",
                        m.default_ttl_seconds, m.max_ttl_seconds
                    ),
                )
            });
        }
        range(
            &["mitigation", "capacity"],
            u64::from(m.capacity),
            16,
            16_777_216,
        )?;
        range(
            &["mitigation", "feed_capacity"],
            u64::from(m.feed_capacity),
            16,
            16_777_216,
        )?;
        if !(m.repeat_factor.is_finite() && m.repeat_factor >= 1.0) {
            return Err(invalid(
                &["mitigation", "repeat_factor"],
                format!("{} must be a number of at least 1", m.repeat_factor),
            ));
        }
        for (ty, ttl) in &m.ttl_seconds {
            let field = ["mitigation", "ttl_seconds", ty.as_str()];
            if !crate::detect::ScanType::ALL.iter().any(|t| t.name() == ty) {
                return Err(invalid(&field, format!("unknown scan type {ty:?}")));
            }
            range(&field, *ttl, 1, 30 * 86_400)?;
        }
        if self.feeds.len() > scanwatch_common::maps::MAX_FEEDS as usize {
            return Err(invalid(
                &["feeds"],
                format!(
                    "{} feeds: at most {}",
                    self.feeds.len(),
                    scanwatch_common::maps::MAX_FEEDS
                ),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, f) in self.feeds.iter().enumerate() {
            let index = i.to_string();
            if f.name.is_empty() || f.name.len() > 32 || !names.insert(f.name.clone()) {
                return Err(invalid(
                    &["feeds", &index, "name"],
                    format!("feed name {:?} must be 1 to 32 bytes and unique", f.name),
                ));
            }
            if f.path.as_os_str().is_empty() {
                return Err(invalid(
                    &["feeds", &index, "path"],
                    "a feed needs the path of its file".to_string(),
                ));
            }
        }
        Ok(())
    }
}

impl MitigationConfig {
    /// Block length for a detection of `types`, given earlier `offenses`.
    pub fn ttl_for(&self, types: &[crate::detect::ScanType], offenses: u32) -> Duration {
        let base = types
            .iter()
            .map(|t| {
                self.ttl_seconds
                    .get(t.name())
                    .copied()
                    .unwrap_or(self.default_ttl_seconds)
            })
            .max()
            .unwrap_or(self.default_ttl_seconds);
        let factor = self
            .repeat_factor
            .powi(i32::try_from(offenses).unwrap_or(i32::MAX).min(64));
        let secs = (base as f64 * factor).min(self.max_ttl_seconds.max(base) as f64);
        Duration::from_secs_f64(secs)
    }
}

impl Detection {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_seconds)
    }

    pub fn suppression(&self) -> Duration {
        Duration::from_secs(self.suppression_seconds)
    }

    /// The reply-aware test as the kernel runs it (disabled: no contacts recorded).
    pub fn reply_config(&self) -> scanwatch_common::trw::ReplyConfig {
        use scanwatch_common::trw::ReplyConfig;
        let r = &self.reply_scan;
        if !r.enabled {
            return ReplyConfig::DISABLED;
        }
        ReplyConfig::from_params(
            r.theta0,
            r.theta1,
            r.alpha,
            r.beta,
            self.window_seconds.saturating_mul(1_000_000_000),
        )
        .map(|c| ReplyConfig {
            per_port_successes: u32::from(r.successes_per_port),
            ..c
        })
        .unwrap_or(ReplyConfig::DISABLED)
    }

    /// Whether `ip` is in an `ignore` network.
    pub fn ignored(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.ignore.iter().any(|net| net.contains(&ip))
    }

    /// The thresholds as the kernel applies them: exact-set counts where the
    /// threshold fits the set, bitmap bit counts beyond. Disabled types never cross.
    pub fn kernel_config(&self) -> DetectConfig {
        fn split(enabled: bool, threshold: u32, set: usize, bits: u32) -> (u32, u32) {
            if !enabled {
                (u32::MAX, u32::MAX)
            } else if threshold as usize <= set {
                (threshold, u32::MAX)
            } else {
                (u32::MAX, bits_for_threshold(threshold, bits))
            }
        }
        let (ports_exact, ports_bits) = split(
            self.port_scan.enabled,
            self.port_scan.distinct_ports,
            PORT_SET,
            PORT_BITS,
        );
        let (udp_exact, udp_bits) = split(
            self.udp_scan.enabled,
            self.udp_scan.distinct_ports,
            PORT_SET,
            UDP_BITS,
        );
        let (hosts_exact, hosts_bits) = split(
            self.host_sweep.enabled,
            self.host_sweep.distinct_hosts,
            HOST_SET,
            HOST_BITS,
        );
        let (icmp_exact, icmp_bits) = split(
            self.ping_sweep.enabled,
            self.ping_sweep.distinct_hosts,
            HOST_SET,
            ICMP_BITS,
        );
        DetectConfig {
            window_ns: self.window_seconds.saturating_mul(1_000_000_000),
            ports_exact,
            ports_bits,
            udp_exact,
            udp_bits,
            hosts_exact,
            hosts_bits,
            icmp_exact,
            icmp_bits,
            stealth: if self.stealth_scan.enabled {
                self.stealth_scan.probes
            } else {
                u32::MAX
            },
            syn_rate: if self.syn_flood_source.enabled {
                // Per ~1.07 s rate bucket (2^30 ns).
                ((f64::from(self.syn_flood_source.syns_per_second) * 1.073_741_824).ceil()) as u32
            } else {
                u32::MAX
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        use crate::detect::ScanType::{PortScan, StealthScan, UdpScan};
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
            "config /etc/s.toml: line 2: field `detection.port_scan.distinct_ports`: 1 is out of range 2..=3193"
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
    const PACKAGED: &str = include_str!("../../deploy/debian/scanwatch.toml");

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
