//! `[detection.web]`: web-layer reconnaissance (vulnerability scanners and
//! wordlist scanning) from the first segment of HTTP requests and TLS
//! ClientHellos to the web ports, and the status codes of HTTP answers.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Validator};
use crate::model::WebScanKind;

/// Where the packaged catalogue of scanner signatures is installed.
pub const DEFAULT_WEB_CATALOGUE: &str = "/usr/share/scanwatch/web-scanners.toml";

/// Most web ports the kernel watches (its slots).
pub use scanwatch_common::web::MAX_WEB_PORTS;

/// Longest `note` of a signature.
pub const MAX_NOTE: usize = 1000;

/// `[detection.web]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Web {
    pub enabled: bool,
    /// Local TCP ports whose requests (HTTP/1.x, TLS) are sampled.
    pub ports: Vec<u16>,
    /// The catalogue of scanner signatures (User-Agent patterns, JA4).
    pub catalogue: PathBuf,
    /// Distinct paths of one source answered 404/403/400 within the
    /// detection window that make a wordlist scan.
    pub wordlist_paths: u32,
    /// Most sources tracked at once (the oldest seen is evicted).
    pub max_sources: u32,
    /// Extra catalogue entries, checked before the catalogue's own.
    pub signatures: Vec<WebSignature>,
}

impl Default for Web {
    fn default() -> Self {
        Self {
            enabled: true,
            ports: vec![80, 8080, 8000, 443, 8443],
            catalogue: PathBuf::from(DEFAULT_WEB_CATALOGUE),
            wordlist_paths: 20,
            max_sources: 4096,
            signatures: Vec::new(),
        }
    }
}

/// One scanner signature, in the catalogue file (`[[signature]]`) and in
/// `[[detection.web.signatures]]`: a tool named by a User-Agent regex or
/// by an exact JA4 fingerprint.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebSignature {
    /// The tool's name, as alerts show it.
    pub tool: String,
    pub kind: WebScanKind,
    /// A regular expression (Rust `regex` syntax, unanchored) searched in
    /// the User-Agent header.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// An exact JA4 fingerprint of the tool's ClientHello.
    #[serde(default)]
    pub ja4: Option<String>,
    /// Where the signature comes from, free text.
    #[serde(default)]
    pub note: Option<String>,
}

impl WebSignature {
    /// What is wrong with the entry: the field and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.tool.trim().is_empty() {
            return Some(("tool", "must not be empty".into()));
        }
        if self.tool.len() > 64 {
            return Some(("tool", "must be at most 64 characters".into()));
        }
        match (&self.user_agent, &self.ja4) {
            (None, None) | (Some(_), Some(_)) => {
                return Some(("user_agent", "set exactly one of user_agent and ja4".into()));
            }
            (Some(ua), None) => {
                if ua.is_empty() {
                    return Some(("user_agent", "must not be empty".into()));
                }
                if let Err(e) = regex::Regex::new(ua) {
                    let e = e.to_string().replace('\n', " | ");
                    return Some(("user_agent", format!("bad regex: {e}")));
                }
            }
            (None, Some(ja4)) => {
                if !is_ja4(ja4) {
                    return Some((
                        "ja4",
                        format!(
                            "{ja4:?} is not a JA4 fingerprint (like t13d1516h2_8daaf6152771_e5627efa2ab1)"
                        ),
                    ));
                }
            }
        }
        if self.note.as_ref().is_some_and(|n| n.len() > MAX_NOTE) {
            return Some(("note", format!("must be at most {MAX_NOTE} characters")));
        }
        None
    }
}

/// `t13d1516h2_8daaf6152771_e5627efa2ab1`: 10 characters, then two
/// 12-digit lowercase hex hashes.
pub fn is_ja4(s: &str) -> bool {
    let hex = |p: &str| p.len() == 12 && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let mut parts = s.split('_');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c), None) => {
            a.len() == 10
                && matches!(a.as_bytes()[0], b't' | b'q' | b'd')
                && matches!(a.as_bytes()[3], b'd' | b'i')
                && a.bytes().all(|b| b.is_ascii_alphanumeric())
                && a[4..8].bytes().all(|b| b.is_ascii_digit())
                && hex(b)
                && hex(c)
        }
        _ => false,
    }
}

impl Web {
    /// What the kernel applies: sampling on `ports`, or nothing when off.
    pub fn kernel_config(&self) -> scanwatch_common::web::WebConfig {
        if self.enabled {
            scanwatch_common::web::WebConfig::with_ports(&self.ports)
        } else {
            scanwatch_common::web::WebConfig::DISABLED
        }
    }

    pub(super) fn validate(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        let field = ["detection", "web", "ports"];
        if self.ports.is_empty() || self.ports.len() > MAX_WEB_PORTS {
            return Err(v.invalid(
                &field,
                format!(
                    "list 1 to {MAX_WEB_PORTS} ports (the kernel's slots), not {}",
                    self.ports.len()
                ),
            ));
        }
        for (i, p) in self.ports.iter().enumerate() {
            let index = i.to_string();
            let element = ["detection", "web", "ports", &index];
            if *p == 0 {
                return Err(v.invalid(&element, "port 0 is not a port".into()));
            }
            if self.ports[..i].contains(p) {
                return Err(v.invalid(&element, format!("port {p} is listed twice")));
            }
        }
        if self.catalogue.as_os_str().is_empty() {
            return Err(v.invalid(
                &["detection", "web", "catalogue"],
                "must not be empty".into(),
            ));
        }
        v.range(
            &["detection", "web", "wordlist_paths"],
            u64::from(self.wordlist_paths),
            5,
            10_000,
        )?;
        v.range(
            &["detection", "web", "max_sources"],
            u64::from(self.max_sources),
            16,
            1_048_576,
        )?;
        for (i, s) in self.signatures.iter().enumerate() {
            if let Some((key, message)) = s.problem() {
                let index = i.to_string();
                return Err(v.invalid(
                    &["detection", "web", "signatures", &index, key],
                    format!("signature of {:?}: {message}", s.tool),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ja4_shapes() {
        assert!(is_ja4("t13d1516h2_8daaf6152771_e5627efa2ab1"));
        assert!(is_ja4("t12i000000_000000000000_000000000000"));
        assert!(!is_ja4("t13d1516h2_8daaf6152771_E5627EFA2AB1"));
        assert!(!is_ja4("t13d1516h2_8daaf6152771"));
        assert!(!is_ja4("x13d1516h2_8daaf6152771_e5627efa2ab1"));
        assert!(!is_ja4("t13d1516h2_8daaf6152771_e5627efa2ab1_00"));
        assert!(!is_ja4(""));
    }

    #[test]
    fn kernel_config_samples_the_ports_or_nothing() {
        let mut web = Web::default();
        let k = web.kernel_config();
        assert_eq!(k.enabled, 1);
        let web_port =
            |p: u16| scanwatch_common::web::WebConfig::is_web_port(|i| k.port_bits[i], p);
        assert!([80, 8080, 8000, 443, 8443].into_iter().all(web_port));
        assert_eq!((0..=u16::MAX).filter(|p| web_port(*p)).count(), 5);
        web.enabled = false;
        assert_eq!(
            web.kernel_config(),
            scanwatch_common::web::WebConfig::DISABLED
        );
    }

    #[test]
    fn signature_problems() {
        let ok = WebSignature {
            tool: "nikto".into(),
            kind: WebScanKind::VulnScanner,
            user_agent: Some("(?i)nikto".into()),
            ja4: None,
            note: None,
        };
        assert_eq!(ok.problem(), None);
        let both = WebSignature {
            ja4: Some("t13d1516h2_8daaf6152771_e5627efa2ab1".into()),
            ..ok.clone()
        };
        assert_eq!(both.problem().map(|p| p.0), Some("user_agent"));
        let bad = WebSignature {
            user_agent: Some("nikto(".into()),
            ..ok.clone()
        };
        let (key, msg) = bad.problem().unwrap_or_default();
        assert_eq!(key, "user_agent");
        assert!(msg.starts_with("bad regex"), "{msg}");
    }
}
