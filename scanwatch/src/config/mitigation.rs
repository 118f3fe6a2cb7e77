//! `[mitigation]` and `[[feeds]]`: blocking in XDP, block lengths, the
//! never-block list and threat-intel feeds.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Validator};
use crate::model::ScanType;

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

impl MitigationConfig {
    pub(super) fn validate(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        v.range(
            &["mitigation", "default_ttl_seconds"],
            self.default_ttl_seconds,
            1,
            30 * 86_400,
        )?;
        v.range(
            &["mitigation", "max_ttl_seconds"],
            self.max_ttl_seconds,
            1,
            365 * 86_400,
        )?;
        if self.max_ttl_seconds < self.default_ttl_seconds {
            // Name the field the file sets (the other is a default).
            return Err(if v.is_set(&["mitigation", "max_ttl_seconds"]) {
                v.invalid(
                    &["mitigation", "max_ttl_seconds"],
                    format!(
                        "{} is below default_ttl_seconds ({})",
                        self.max_ttl_seconds, self.default_ttl_seconds
                    ),
                )
            } else {
                v.invalid(
                    &["mitigation", "default_ttl_seconds"],
                    format!(
                        "{} is above max_ttl_seconds ({}, the default): raise max_ttl_seconds too",
                        self.default_ttl_seconds, self.max_ttl_seconds
                    ),
                )
            });
        }
        for (key, value) in [
            ("capacity", self.capacity),
            ("feed_capacity", self.feed_capacity),
        ] {
            v.range(&["mitigation", key], u64::from(value), 16, 16_777_216)?;
        }
        if !(self.repeat_factor.is_finite() && self.repeat_factor >= 1.0) {
            return Err(v.invalid(
                &["mitigation", "repeat_factor"],
                format!("{} must be a number of at least 1", self.repeat_factor),
            ));
        }
        for (ty, ttl) in &self.ttl_seconds {
            let field = ["mitigation", "ttl_seconds", ty.as_str()];
            if ScanType::from_name(ty).is_none() {
                return Err(v.invalid(&field, format!("unknown scan type {ty:?}")));
            }
            v.range(&field, *ttl, 1, 30 * 86_400)?;
        }
        Ok(())
    }

    /// Block length for a detection of `types`, given earlier `offenses`.
    pub fn ttl_for(&self, types: &[ScanType], offenses: u32) -> Duration {
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

/// `[[feeds]]`: at most `MAX_FEEDS`, each with a unique name and a path.
pub(super) fn validate_feeds(feeds: &[FeedConfig], v: &Validator<'_>) -> Result<(), ConfigError> {
    let max = scanwatch_common::maps::MAX_FEEDS;
    if feeds.len() > max as usize {
        return Err(v.invalid(&["feeds"], format!("{} feeds: at most {max}", feeds.len())));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, f) in feeds.iter().enumerate() {
        let index = i.to_string();
        if f.name.is_empty() || f.name.len() > 32 || !names.insert(f.name.clone()) {
            return Err(v.invalid(
                &["feeds", &index, "name"],
                format!("feed name {:?} must be 1 to 32 bytes and unique", f.name),
            ));
        }
        if f.path.as_os_str().is_empty() {
            return Err(v.invalid(
                &["feeds", &index, "path"],
                "a feed needs the path of its file".to_string(),
            ));
        }
    }
    Ok(())
}
