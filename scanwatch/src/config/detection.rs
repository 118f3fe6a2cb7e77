//! `[detection]`: windows, thresholds, suppression, the `ignore` list and
//! the reply-aware test; and their conversion into what the kernel applies.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use scanwatch_common::{
    DetectConfig,
    sketch::{HOST_BITS, HOST_SET, ICMP_BITS, PORT_BITS, PORT_SET, UDP_BITS, bits_for_threshold},
    tracking::{DEFAULT_ADMISSION_SLOTS, MAX_ADMIT_AFTER, valid_admission_slots},
    trw::{ReplyConfig, TrwParamError},
};
use serde::{Deserialize, Serialize};

use super::{ConfigError, Validator, web::Web};
use crate::model::SourcePrefixes;

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
    /// A source's first alert (of an incident: nothing alerted for it within
    /// the suppression interval) waits this long, so that one alert names
    /// every scan type crossed by then; 0: alert at once.
    pub first_alert_hold_milliseconds: u64,
    /// Sources never alerted on (health checkers, monitoring, own networks).
    pub ignore: Vec<IpNet>,
    /// IPv4 sources are counted per network of this length (32: per address).
    pub ipv4_prefix: u8,
    /// IPv6 sources are counted per network of this length (64: per subnet;
    /// one host picks addresses of its /64 at will).
    pub ipv6_prefix: u8,
    /// Slots of the admission table, where a source's first probes of a
    /// window wait before it is tracked (a power of two, 1024 to 1048576;
    /// 16 bytes each that every new source touches, 16 more that only a
    /// returning source does). A probe of another source landing in the same slot
    /// takes it over, so a waiting source keeps its probes for about
    /// `admission_slots` / (new sources a second); a larger table keeps
    /// them longer on a host many sources reach, and makes every new
    /// source's packet slower (its slot's line is further from the CPU).
    pub admission_slots: u32,
    pub port_scan: DistinctPorts,
    pub udp_scan: DistinctPorts,
    pub host_sweep: DistinctHosts,
    pub ping_sweep: DistinctHosts,
    pub stealth_scan: StealthScan,
    pub syn_flood_source: SynFlood,
    pub reply_scan: ReplyScan,
    pub distributed_scan: DistributedScan,
    /// `[detection.web]`: vulnerability scanners and wordlist scanning.
    pub web: Web,
}

impl Default for Detection {
    fn default() -> Self {
        Self {
            window_seconds: 300,
            suppression_seconds: 600,
            escalation_factor: 4.0,
            first_alert_hold_milliseconds: 250,
            ignore: Vec::new(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            admission_slots: DEFAULT_ADMISSION_SLOTS,
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
            distributed_scan: DistributedScan::default(),
            web: Web::default(),
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

/// Longest hold of a first alert (a blocking decision waits as long).
pub const MAX_FIRST_ALERT_HOLD_MS: u64 = 1000;

/// `[detection.distributed_scan]`: the target-side view over the
/// reply-aware detector's first contacts (it needs `reply_scan.enabled`).
/// Failed first contacts (RST, ICMP unreachable, no answer) made within the
/// window by sources not flagged themselves, per local address (distinct
/// ports) and per local port (distinct local addresses).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedScan {
    pub enabled: bool,
    /// Distinct ports of one local address (0: `port_scan.distinct_ports`).
    pub distinct_ports: u32,
    /// Distinct local addresses on one port (0: `host_sweep.distinct_hosts`).
    pub distinct_hosts: u32,
    /// Fewest sources that make a distributed scan.
    pub min_sources: u32,
    /// Most sources an alert names (the biggest contributors).
    pub top_sources: u32,
}

impl Default for DistributedScan {
    fn default() -> Self {
        Self {
            enabled: true,
            distinct_ports: 0,
            distinct_hosts: 0,
            min_sources: 3,
            top_sources: 25,
        }
    }
}

impl DistributedScan {
    fn validate(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        for (key, value) in [
            ("distinct_ports", self.distinct_ports),
            ("distinct_hosts", self.distinct_hosts),
        ] {
            if value == 1 || value > 65_536 {
                return Err(v.invalid(
                    &["detection", "distributed_scan", key],
                    format!("{value} must be 0 (the per-source threshold) or in 2..=65536"),
                ));
            }
        }
        v.range(
            &["detection", "distributed_scan", "min_sources"],
            u64::from(self.min_sources),
            2,
            65_536,
        )?;
        v.range(
            &["detection", "distributed_scan", "top_sources"],
            u64::from(self.top_sources),
            1,
            256,
        )
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

impl Detection {
    pub(super) fn validate(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        v.range(
            &["detection", "window_seconds"],
            self.window_seconds,
            1,
            scanwatch_common::tracking::MAX_WINDOW_SECONDS,
        )?;
        v.range(
            &["detection", "suppression_seconds"],
            self.suppression_seconds,
            0,
            7 * 86_400,
        )?;
        v.range(
            &["detection", "first_alert_hold_milliseconds"],
            self.first_alert_hold_milliseconds,
            0,
            MAX_FIRST_ALERT_HOLD_MS,
        )?;
        v.range(
            &["detection", "ipv4_prefix"],
            u64::from(self.ipv4_prefix),
            8,
            32,
        )?;
        v.range(
            &["detection", "ipv6_prefix"],
            u64::from(self.ipv6_prefix),
            16,
            128,
        )?;
        if !valid_admission_slots(self.admission_slots) {
            return Err(v.invalid(
                &["detection", "admission_slots"],
                format!(
                    "{} must be a power of two in {}..={}",
                    self.admission_slots,
                    scanwatch_common::tracking::MIN_ADMISSION_SLOTS,
                    scanwatch_common::tracking::MAX_ADMISSION_SLOTS
                ),
            ));
        }
        if !(self.escalation_factor.is_finite() && self.escalation_factor > 1.0) {
            return Err(v.invalid(
                &["detection", "escalation_factor"],
                format!("{} must be a number above 1", self.escalation_factor),
            ));
        }
        for (table, key, value, bits) in [
            (
                "port_scan",
                "distinct_ports",
                self.port_scan.distinct_ports,
                PORT_BITS,
            ),
            (
                "udp_scan",
                "distinct_ports",
                self.udp_scan.distinct_ports,
                UDP_BITS,
            ),
            (
                "host_sweep",
                "distinct_hosts",
                self.host_sweep.distinct_hosts,
                HOST_BITS,
            ),
            (
                "ping_sweep",
                "distinct_hosts",
                self.ping_sweep.distinct_hosts,
                ICMP_BITS,
            ),
        ] {
            v.range(
                &["detection", table, key],
                u64::from(value),
                2,
                u64::from(sketch_limit(bits)),
            )?;
        }
        v.range(
            &["detection", "stealth_scan", "probes"],
            u64::from(self.stealth_scan.probes),
            1,
            1_000_000,
        )?;
        v.range(
            &["detection", "syn_flood_source", "syns_per_second"],
            u64::from(self.syn_flood_source.syns_per_second),
            100,
            100_000_000,
        )?;
        self.reply_scan.validate(v)?;
        self.distributed_scan.validate(v)?;
        self.web.validate(v)
    }
}

impl ReplyScan {
    fn validate(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        v.range(
            &["detection", "reply_scan", "no_answer_timeout_seconds"],
            self.no_answer_timeout_seconds,
            1,
            3600,
        )?;
        let Err(e) = ReplyConfig::from_params(self.theta0, self.theta1, self.alpha, self.beta, 1)
        else {
            return Ok(());
        };
        let (key, message) = match e {
            TrwParamError::OutOfRange => {
                let key = [
                    ("theta0", self.theta0),
                    ("theta1", self.theta1),
                    ("alpha", self.alpha),
                    ("beta", self.beta),
                ]
                .into_iter()
                .find(|(_, v)| !(v.is_finite() && *v > 0.0 && *v < 1.0))
                .map_or("theta0", |(k, _)| k);
                (key, "must lie strictly between 0 and 1".to_string())
            }
            TrwParamError::Theta1NotBelowTheta0 => (
                "theta1",
                format!("{} must be below theta0 ({})", self.theta1, self.theta0),
            ),
            TrwParamError::AlphaNotBelowBeta => (
                "alpha",
                format!("{} must be below beta ({})", self.alpha, self.beta),
            ),
        };
        Err(v.invalid(&["detection", "reply_scan", key], message))
    }
}

impl Detection {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_seconds)
    }

    pub fn suppression(&self) -> Duration {
        Duration::from_secs(self.suppression_seconds)
    }

    /// How long a source's first alert waits for more scan types.
    pub fn first_alert_hold(&self) -> Duration {
        Duration::from_millis(self.first_alert_hold_milliseconds)
    }

    /// The reply-aware test as the kernel runs it (disabled: no contacts recorded).
    pub fn reply_config(&self) -> ReplyConfig {
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

    /// The distributed-scan thresholds in force: distinct ports of one
    /// local address, distinct local addresses on one port (a 0 takes the
    /// per-source `port_scan` / `host_sweep` threshold).
    pub fn distributed_thresholds(&self) -> (u32, u32) {
        let d = &self.distributed_scan;
        let or = |v: u32, default: u32| if v == 0 { default } else { v };
        (
            or(d.distinct_ports, self.port_scan.distinct_ports),
            or(d.distinct_hosts, self.host_sweep.distinct_hosts),
        )
    }

    /// The prefix lengths sources are counted by.
    pub const fn prefixes(&self) -> SourcePrefixes {
        SourcePrefixes {
            v4: self.ipv4_prefix,
            v6: self.ipv6_prefix,
        }
    }

    /// Whether the source `ip` (an address or, with prefixes, a network's
    /// key) lies in an `ignore` network: its whole prefix must.
    pub fn ignored(&self, ip: IpAddr) -> bool {
        let source = self.prefixes().network(ip);
        self.ignore.iter().any(|net| net.contains(&source))
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
        let (v4_mask, v6_mask) = self.prefixes().masks();
        let stealth = if self.stealth_scan.enabled {
            self.stealth_scan.probes
        } else {
            u32::MAX
        };
        // Admission before tracking: no enabled threshold is crossed by
        // fewer probes than admission takes.
        let admit_after = [ports_exact, udp_exact, hosts_exact, icmp_exact, stealth]
            .into_iter()
            .fold(MAX_ADMIT_AFTER, u32::min)
            .max(1);
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
            stealth,
            syn_rate: if self.syn_flood_source.enabled {
                // Per ~1.07 s rate bucket (2^30 ns).
                ((f64::from(self.syn_flood_source.syns_per_second) * 1.073_741_824).ceil()) as u32
            } else {
                u32::MAX
            },
            v4_mask,
            admit_after,
            v6_mask,
            // Set from the table's size when the object is loaded.
            source_slots: scanwatch_common::maps::DEFAULT_SOURCE_MAP_SIZE,
            // Set from `[evidence]` by `Config::kernel_config` (the agent's).
            evidence_packets: 0,
            tool_signatures: 1,
            admission_slots: self.admission_slots,
        }
    }
}
