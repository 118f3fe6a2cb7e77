//! `[agent]`: what `scanwatch run` does besides detecting.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use super::{ConfigError, Validator};
use crate::model::{AttachMode, HttpEndpoint};

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

/// `[agent] pin_dir` and `--pin-dir` default (`scanwatch top` reads it too).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/scanwatch";
/// `[agent] alert_log` and `--alert-log` default.
pub const DEFAULT_ALERT_LOG: &str = "/var/log/scanwatch/alerts.jsonl";
/// `[agent] control_socket` and the `--control-socket` default of every client command.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/scanwatch/control.sock";
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
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            map_size: scanwatch_common::maps::DEFAULT_SOURCE_MAP_SIZE,
            summary_interval_seconds: DEFAULT_SUMMARY_INTERVAL,
            alert_log: PathBuf::from(DEFAULT_ALERT_LOG),
            metrics_addr: DEFAULT_METRICS_ADDR,
            metrics_top: DEFAULT_METRICS_TOP,
            count_interval_seconds: DEFAULT_COUNT_INTERVAL,
            alertmanager_url: String::new(),
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            keep_attached: false,
        }
    }
}

impl AgentConfig {
    /// The Alertmanager to push to, if one is set.
    pub fn alertmanager(&self) -> Result<Option<HttpEndpoint>, crate::model::EndpointError> {
        Some(self.alertmanager_url.as_str())
            .filter(|url| !url.is_empty())
            .map(HttpEndpoint::alertmanager)
            .transpose()
    }

    pub(super) fn validate(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        for name in &self.interfaces {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                return Err(v.invalid(
                    &["agent", "interfaces"],
                    format!("{name:?} is not an interface name (1 to 15 bytes, no '/' or spaces)"),
                ));
            }
            if !seen.insert(name) {
                return Err(v.invalid(
                    &["agent", "interfaces"],
                    format!("interface {name:?} is listed twice"),
                ));
            }
        }
        v.range(
            &["agent", "map_size"],
            u64::from(self.map_size),
            u64::from(scanwatch_common::maps::MIN_SOURCE_MAP_SIZE),
            u64::from(scanwatch_common::maps::MAX_SOURCE_MAP_SIZE),
        )?;
        v.range(
            &["agent", "summary_interval_seconds"],
            self.summary_interval_seconds,
            1,
            3600,
        )?;
        v.range(
            &["agent", "count_interval_seconds"],
            self.count_interval_seconds,
            1,
            3600,
        )?;
        v.range(
            &["agent", "metrics_top"],
            u64::from(self.metrics_top),
            0,
            1000,
        )?;
        for (key, path) in [
            ("pin_dir", &self.pin_dir),
            ("alert_log", &self.alert_log),
            ("control_socket", &self.control_socket),
        ] {
            if path.as_os_str().is_empty() {
                return Err(v.invalid(&["agent", key], "must not be empty".to_string()));
            }
        }
        if let Err(e) = self.alertmanager() {
            return Err(v.invalid(&["agent", "alertmanager_url"], e.to_string()));
        }
        Ok(())
    }
}
