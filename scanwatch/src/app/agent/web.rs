//! Web-layer detection in the agent: the catalogue it starts with and the
//! detector (its steps: `web_steps.rs`).

use std::path::Path;

use super::error::AgentError;
use crate::{
    config::{DEFAULT_WEB_CATALOGUE, Detection},
    detect::web::{Catalogue, WebDetector, WebSettings},
};

/// The packaged catalogue (`deploy/web-scanners.toml`, installed as
/// [`DEFAULT_WEB_CATALOGUE`]), built in: used when the configured
/// catalogue is the default path and no file is there (an agent run from
/// the build tree).
pub const PACKAGED_CATALOGUE: &str = include_str!("../../../../deploy/web-scanners.toml");

/// The catalogue `[detection.web]` names, with its `signatures` first.
pub fn catalogue_of(d: &Detection) -> Result<Catalogue, String> {
    let path = &d.web.catalogue;
    let base = if path == Path::new(DEFAULT_WEB_CATALOGUE) && !path.exists() {
        Catalogue::parse(PACKAGED_CATALOGUE, "the built-in catalogue")
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "[detection.web] catalogue {}: cannot read: {e}",
                path.display()
            )
        })?;
        Catalogue::parse(&text, &path.display().to_string())
    };
    base.and_then(|c| c.with_overrides(&d.web.signatures))
        .map_err(|e| format!("[detection.web] {e}"))
}

/// The web detector of `[detection.web]` (sampling on).
pub fn detector_of(d: &Detection) -> Result<Option<WebDetector>, AgentError> {
    if !d.web.enabled {
        return Ok(None);
    }
    let catalogue = catalogue_of(d).map_err(AgentError::WebCatalogue)?;
    log::info!(
        "web sampling on ports {:?}: {} scanner signatures, {} distinct not-found paths make a wordlist scan",
        d.web.ports,
        catalogue.len(),
        d.web.wordlist_paths
    );
    Ok(Some(WebDetector::new(
        WebSettings::from_config(d),
        catalogue,
    )))
}

/// The web detector and what the agent counts around it.
pub struct WebRun {
    pub detector: WebDetector,
    /// Records of the web ring that could not be decoded.
    pub decode_errors: u64,
}
