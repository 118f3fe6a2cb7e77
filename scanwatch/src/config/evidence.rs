//! `[evidence]`: the probe packets kept for each alerted source (pcapng
//! files, one per incident), their directory and its size cap.

use std::path::PathBuf;

use scanwatch_common::evidence::MAX_EVIDENCE_PACKETS;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Validator};

/// `[evidence] directory` and `--evidence-dir` default.
pub const DEFAULT_EVIDENCE_DIR: &str = "/var/lib/scanwatch/evidence";
/// `packets_per_source` default.
pub const DEFAULT_EVIDENCE_PACKETS: u32 = 32;
/// `max_bytes` default: 64 MiB.
pub const DEFAULT_EVIDENCE_MAX_BYTES: u64 = 64 << 20;
/// Smallest `max_bytes`: room for many incidents (one is at most ~19 KB).
pub const MIN_EVIDENCE_MAX_BYTES: u64 = 1 << 20;
/// Largest `max_bytes`: 1 TiB.
pub const MAX_EVIDENCE_MAX_BYTES: u64 = 1 << 40;

/// `[evidence]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceConfig {
    /// Keep the probe packets of alerted sources.
    pub enabled: bool,
    /// `--evidence-dir`: where the pcapng files go (created if missing).
    pub directory: PathBuf,
    /// Probe packets kept per source and window (the probe that crossed a
    /// threshold and the next ones), 1..=64.
    pub packets_per_source: u32,
    /// Size cap of the directory's pcapng files: the oldest go first.
    pub max_bytes: u64,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            directory: PathBuf::from(DEFAULT_EVIDENCE_DIR),
            packets_per_source: DEFAULT_EVIDENCE_PACKETS,
            max_bytes: DEFAULT_EVIDENCE_MAX_BYTES,
        }
    }
}

impl EvidenceConfig {
    /// The kernel's budget per source and window (`DetectConfig::evidence_packets`): 0 when off.
    pub const fn kernel_packets(&self) -> u32 {
        if self.enabled {
            self.packets_per_source
        } else {
            0
        }
    }

    pub(super) fn validate(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        v.range(
            &["evidence", "packets_per_source"],
            u64::from(self.packets_per_source),
            1,
            u64::from(MAX_EVIDENCE_PACKETS),
        )?;
        v.range(
            &["evidence", "max_bytes"],
            self.max_bytes,
            MIN_EVIDENCE_MAX_BYTES,
            MAX_EVIDENCE_MAX_BYTES,
        )?;
        let dir = &self.directory;
        if dir.as_os_str().is_empty() {
            return Err(v.invalid(&["evidence", "directory"], "must not be empty".to_string()));
        }
        if !dir.is_absolute() {
            return Err(v.invalid(
                &["evidence", "directory"],
                format!("{} must be an absolute path", dir.display()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn defaults_and_errors() {
        let c = Config::parse("", "x.toml").unwrap();
        assert!(c.evidence.enabled);
        assert_eq!(c.evidence.kernel_packets(), 32);
        assert_eq!(c.kernel_config().evidence_packets, 32);
        let off = Config::parse("[evidence]\nenabled = false\n", "x.toml").unwrap();
        assert_eq!(off.kernel_config().evidence_packets, 0);
        let c = Config::parse(
            "[evidence]\ndirectory = \"/srv/ev\"\npackets_per_source = 64\nmax_bytes = 1048576\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.kernel_config().evidence_packets, 64);
        for (text, needle) in [
            (
                "[evidence]\npackets_per_source = 0\n",
                "line 2: field `evidence.packets_per_source`: 0 is out of range 1..=64",
            ),
            (
                "[evidence]\npackets_per_source = 65\n",
                "65 is out of range 1..=64",
            ),
            (
                "[evidence]\nmax_bytes = 1000\n",
                "line 2: field `evidence.max_bytes`: 1000 is out of range 1048576..=1099511627776",
            ),
            (
                "[evidence]\ndirectory = \"\"\n",
                "field `evidence.directory`: must not be empty",
            ),
            (
                "[evidence]\ndirectory = \"ev\"\n",
                "field `evidence.directory`: ev must be an absolute path",
            ),
        ] {
            let e = Config::parse(text, "x.toml").unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {needle:?} in {e}");
        }
    }
}
