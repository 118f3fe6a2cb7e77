//! Web-layer detection in the agent: the catalogue it starts with, the web
//! ring's records into the detector, its findings into alerts.

use std::path::Path;

use aya::maps::{MapData, RingBuf};

use super::{AgentError, steps::Agent};
use crate::{
    config::{DEFAULT_WEB_CATALOGUE, Detection},
    detect::web::{Catalogue, WebDetector, WebSettings},
    kernel::web_maps::decode_web,
    model::KernelClock,
    output::web_alert::{TlsRef, WebAlert},
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

impl Agent {
    /// Every record waiting in the web ring, then the findings they made.
    pub fn on_web_ring(&mut self, ring: &mut RingBuf<MapData>) {
        let Some(web) = self.web.as_mut() else {
            while ring.next().is_some() {}
            return;
        };
        while let Some(item) = ring.next() {
            match decode_web(&item) {
                Ok(record) => web.detector.observe(record.into_event()),
                Err(e) => {
                    web.decode_errors += 1;
                    log::debug!("web ring: {e}");
                }
            }
        }
        self.report_web();
    }

    /// Each web finding goes to mitigation (its action is part of the
    /// alert), then to the alert log.
    fn report_web(&mut self) {
        let Some(web) = self.web.as_mut() else {
            return;
        };
        let findings = web.detector.take_findings();
        let window = self.running.config.detection.window_seconds;
        for f in &findings {
            let clock = KernelClock::now();
            let action = self
                .mitigation
                .on_detection(f.source, &[f.kind.scan_type()], &clock);
            let mut alert = WebAlert::from_finding(f, window, &clock);
            alert.set_outcome(action);
            log::warn!("{}", alert.summary());
            // A failure is logged (rate-limited) and counted by the log itself.
            let _ = self.alert_log.append(&alert);
        }
    }

    /// The ClientHellos the source of `net` sent lately (for its alerts).
    pub fn tls_of(&self, net: &ipnet::IpNet, clock: &KernelClock) -> Vec<TlsRef> {
        self.web.as_ref().map_or_else(Vec::new, |w| {
            w.detector
                .tls_seen(net)
                .iter()
                .map(|t| TlsRef::of(t, clock))
                .collect()
        })
    }
}
