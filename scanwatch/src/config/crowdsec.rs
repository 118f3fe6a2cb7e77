//! `[crowdsec]`: the agent as a CrowdSec remediation component (bouncer:
//! applies the Local API's decisions to the XDP blocklist) and as a
//! CrowdSec machine (log processor: pushes its alerts, and its blocks as
//! ban decisions, to the Local API). Both are off unless `lapi_url` is set.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Validator};
use crate::model::HttpEndpoint;

/// `[crowdsec]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CrowdsecConfig {
    /// The Local API, `http://HOST:PORT`; empty: no CrowdSec.
    pub lapi_url: String,
    /// Bouncer: file holding the API key (`cscli bouncers add NAME -o raw`);
    /// readable by root only. Empty: no bouncer.
    pub api_key_file: PathBuf,
    /// Bouncer: seconds between pulls of `/v1/decisions/stream`.
    pub update_frequency_seconds: u64,
    /// Bouncer: decision scopes applied (`Ip`, `Range`).
    pub scopes: Vec<String>,
    /// Bouncer: decision origins applied (`crowdsec`, `cscli`, `CAPI`,
    /// `lists`, ...); empty: every origin.
    pub origins: Vec<String>,
    /// Bouncer: decision types applied (anything else is skipped).
    pub decision_types: Vec<String>,
    /// Machine: its login (`cscli machines add NAME`); empty: no alert push.
    pub machine_id: String,
    /// Machine: file holding its password; readable by root only.
    pub password_file: PathBuf,
    /// Machine: alerts kept while the Local API is unreachable (oldest dropped, counted).
    pub queue_capacity: u32,
}

impl Default for CrowdsecConfig {
    fn default() -> Self {
        Self {
            lapi_url: String::new(),
            api_key_file: PathBuf::new(),
            update_frequency_seconds: 10,
            scopes: vec!["Ip".into(), "Range".into()],
            origins: Vec::new(),
            decision_types: vec!["ban".into()],
            machine_id: String::new(),
            password_file: PathBuf::new(),
            queue_capacity: 1000,
        }
    }
}

/// The decision scopes the bouncer can apply.
pub const SCOPES: [&str; 2] = ["Ip", "Range"];

impl CrowdsecConfig {
    /// The Local API, if one is set.
    pub fn endpoint(&self) -> Result<Option<HttpEndpoint>, crate::model::EndpointError> {
        Some(self.lapi_url.as_str())
            .filter(|url| !url.is_empty())
            .map(HttpEndpoint::lapi)
            .transpose()
    }

    /// Whether the bouncer runs.
    pub fn bouncer(&self) -> bool {
        !self.lapi_url.is_empty() && !self.api_key_file.as_os_str().is_empty()
    }

    /// Whether alerts are pushed.
    pub fn machine(&self) -> bool {
        !self.lapi_url.is_empty() && !self.machine_id.is_empty()
    }

    pub(super) fn validate(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        let f = |key: &'static str| ["crowdsec", key];
        if let Err(e) = self.endpoint() {
            return Err(v.invalid(&f("lapi_url"), e.to_string()));
        }
        v.range(
            &f("update_frequency_seconds"),
            self.update_frequency_seconds,
            1,
            3600,
        )?;
        v.range(
            &f("queue_capacity"),
            u64::from(self.queue_capacity),
            1,
            1_000_000,
        )?;
        if self.scopes.is_empty() {
            return Err(v.invalid(&f("scopes"), "needs at least one of Ip, Range".into()));
        }
        for (i, s) in self.scopes.iter().enumerate() {
            if !SCOPES.iter().any(|k| k.eq_ignore_ascii_case(s)) {
                return Err(v.invalid(
                    &["crowdsec", "scopes", &i.to_string()],
                    format!("unknown scope {s:?}: expected Ip or Range"),
                ));
            }
        }
        for (key, list) in [
            ("origins", &self.origins),
            ("decision_types", &self.decision_types),
        ] {
            if let Some((i, bad)) = list.iter().enumerate().find(|(_, o)| !plain_word(o)) {
                return Err(v.invalid(
                    &["crowdsec", key, &i.to_string()],
                    format!("{bad:?} must be 1 to 64 letters, digits, '-', '_' or '.'"),
                ));
            }
        }
        if self.decision_types.is_empty() {
            return Err(v.invalid(&f("decision_types"), "needs at least one type".into()));
        }
        if !self.machine_id.is_empty() && !plain_word(&self.machine_id) {
            return Err(v.invalid(
                &f("machine_id"),
                format!(
                    "{:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                    self.machine_id
                ),
            ));
        }
        if !self.machine_id.is_empty() && self.password_file.as_os_str().is_empty() {
            return Err(v.invalid(
                &f("password_file"),
                "machine_id needs a password_file".into(),
            ));
        }
        let wants_lapi = !self.api_key_file.as_os_str().is_empty() || !self.machine_id.is_empty();
        if wants_lapi && self.lapi_url.is_empty() {
            let key = if self.api_key_file.as_os_str().is_empty() {
                "machine_id"
            } else {
                "api_key_file"
            };
            return Err(v.invalid(&f(key), "needs lapi_url".into()));
        }
        if !self.lapi_url.is_empty() && !wants_lapi {
            return Err(v.invalid(
                &f("lapi_url"),
                "set api_key_file (bouncer), machine_id (alerts), or both".into(),
            ));
        }
        Ok(())
    }
}

/// A CrowdSec name: an origin, a type, a machine.
fn plain_word(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads a secret file (API key, password): its first line, trimmed. It
/// must be readable by its owner only.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt as _;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{shown}: mode {:o} lets others read it: chmod 600 it (root only)",
            meta.mode() & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let secret = text.lines().next().unwrap_or_default().trim().to_string();
    if secret.is_empty() {
        return Err(format!("{shown}: empty"));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn a_bouncer_and_a_machine() {
        let c = Config::parse(
            "[crowdsec]\nlapi_url = \"http://198.18.0.1:8080\"\napi_key_file = \"/etc/scanwatch/crowdsec.key\"\n\
             scopes = [\"ip\"]\norigins = [\"cscli\", \"CAPI\"]\nmachine_id = \"edge1\"\n\
             password_file = \"/etc/scanwatch/crowdsec.password\"\n",
            "c.toml",
        )
        .unwrap()
        .crowdsec;
        assert!(c.bouncer() && c.machine());
        assert_eq!(c.endpoint().unwrap().unwrap().port, 8080);
        assert_eq!(c.update_frequency_seconds, 10);
        assert_eq!(c.decision_types, ["ban"]);
        let off = Config::parse("", "c.toml").unwrap().crowdsec;
        assert!(!off.bouncer() && !off.machine() && off.endpoint().unwrap().is_none());
    }

    #[test]
    fn secrets_must_be_root_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("scanwatch-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("key");
        std::fs::write(&f, "abc\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = super::read_secret(&f).unwrap_err();
        assert!(e.contains("mode 644 lets others read it"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(super::read_secret(&f).unwrap(), "abc");
        std::fs::write(&f, "\n").unwrap();
        assert!(super::read_secret(&f).unwrap_err().contains("empty"));
        assert!(super::read_secret(&dir.join("none")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
