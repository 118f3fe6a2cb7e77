//! The catalogue of scanner signatures: a readable TOML file of
//! `[[signature]]` entries, each naming a tool by a User-Agent regex or by
//! an exact JA4 fingerprint (the packaged `deploy/web-scanners.toml`,
//! installed as `/usr/share/scanwatch/web-scanners.toml`), with the
//! config's `[[detection.web.signatures]]` checked first.

use std::collections::HashMap;

use regex::RegexSet;
use serde::Deserialize;

use crate::{config::WebSignature, model::WebScanKind};

/// How an entry recognises its tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matcher {
    /// A regex searched in the User-Agent header.
    UserAgent(String),
    /// An exact JA4 fingerprint.
    Ja4(String),
}

/// One signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tool: String,
    pub kind: WebScanKind,
    pub matcher: Matcher,
    pub note: Option<String>,
}

/// A catalogue file or config entry that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("catalogue {origin}: {}{message}", entry.as_ref().map(|(i, t)| format!("entry {i} (tool {t:?}): ")).unwrap_or_default())]
pub struct CatalogueError {
    /// The file (or `[detection.web] signatures`).
    pub origin: String,
    /// The entry's 1-based index and tool.
    pub entry: Option<(usize, String)>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    signature: Vec<WebSignature>,
}

/// The signatures, User-Agent patterns compiled into one [`RegexSet`].
#[derive(Clone, Debug)]
pub struct Catalogue {
    entries: Vec<Entry>,
    /// The User-Agent patterns, and the entry each belongs to.
    user_agents: RegexSet,
    ua_entry: Vec<usize>,
    /// JA4 to the first entry naming it.
    ja4: HashMap<String, usize>,
}

impl Default for Catalogue {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            user_agents: RegexSet::empty(),
            ua_entry: Vec::new(),
            ja4: HashMap::new(),
        }
    }
}

impl Catalogue {
    /// The catalogue in `text` (a TOML file of `[[signature]]` tables);
    /// errors name `origin`, the entry and what is wrong.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CatalogueError> {
        let file: File = toml::from_str(text).map_err(|e| CatalogueError {
            origin: origin.to_string(),
            entry: None,
            message: e.to_string().trim().replace('\n', " | "),
        })?;
        Self::from_signatures(&file.signature, origin)
    }

    /// A catalogue of `signatures`, in order (the first match wins).
    pub fn from_signatures(
        signatures: &[WebSignature],
        origin: &str,
    ) -> Result<Self, CatalogueError> {
        let mut entries = Vec::with_capacity(signatures.len());
        for (i, s) in signatures.iter().enumerate() {
            let problem = s.problem().or_else(|| {
                (s.user_agent.is_some() == s.ja4.is_some()).then(|| {
                    (
                        "user_agent",
                        "set exactly one of user_agent and ja4".to_string(),
                    )
                })
            });
            let matcher = match (problem, &s.user_agent, &s.ja4) {
                (None, Some(ua), _) => Matcher::UserAgent(ua.clone()),
                (None, None, Some(ja4)) => Matcher::Ja4(ja4.clone()),
                (problem, _, _) => {
                    let (key, message) = problem.unwrap_or_default();
                    return Err(CatalogueError {
                        origin: origin.to_string(),
                        entry: Some((i + 1, s.tool.clone())),
                        message: format!("{key}: {message}"),
                    });
                }
            };
            entries.push(Entry {
                tool: s.tool.clone(),
                kind: s.kind,
                matcher,
                note: s.note.clone(),
            });
        }
        Self::build(entries, origin)
    }

    fn build(entries: Vec<Entry>, origin: &str) -> Result<Self, CatalogueError> {
        let mut patterns = Vec::new();
        let mut ua_entry = Vec::new();
        let mut ja4 = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            match &e.matcher {
                Matcher::UserAgent(p) => {
                    patterns.push(p.as_str());
                    ua_entry.push(i);
                }
                Matcher::Ja4(j) => {
                    ja4.entry(j.clone()).or_insert(i);
                }
            }
        }
        let user_agents = RegexSet::new(&patterns).map_err(|e| CatalogueError {
            origin: origin.to_string(),
            entry: None,
            message: format!(
                "the User-Agent patterns together: {}",
                e.to_string().replace('\n', " | ")
            ),
        })?;
        Ok(Self {
            entries,
            user_agents,
            ua_entry,
            ja4,
        })
    }

    /// `extra` (the config's signatures) first, then this catalogue's: an
    /// extra entry wins over a catalogue entry matching the same request.
    pub fn with_overrides(self, extra: &[WebSignature]) -> Result<Self, CatalogueError> {
        let origin = "[detection.web] signatures";
        let first = Self::from_signatures(extra, origin)?;
        let mut entries = first.entries;
        entries.extend(self.entries);
        Self::build(entries, origin)
    }

    /// The first entry whose pattern matches `user_agent`.
    pub fn match_user_agent(&self, user_agent: &str) -> Option<&Entry> {
        let first = self.user_agents.matches(user_agent).iter().next()?;
        self.entries.get(*self.ua_entry.get(first)?)
    }

    /// The first entry naming exactly this JA4.
    pub fn match_ja4(&self, ja4: &str) -> Option<&Entry> {
        self.entries.get(*self.ja4.get(ja4)?)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
