//! The agent's web steps: the web ring's records into the detector, its
//! findings into alerts, a source's ClientHellos into its other alerts.

use aya::maps::{MapData, RingBuf};

use super::steps::Agent;
use crate::{
    kernel::web_maps::decode_web,
    model::KernelClock,
    output::web_alert::{TlsRef, WebAlert},
};

impl Agent {
    /// Every record waiting in the web ring, then the findings they made;
    /// whether an alert was written.
    pub fn on_web_ring(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        let Some(web) = self.web.as_mut() else {
            while ring.next().is_some() {}
            return false;
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
        self.report_web() > 0
    }

    /// Each web finding due (held `first_alert_hold_milliseconds` to gather
    /// evidence) goes to mitigation (its action is part of the
    /// alert), then to the alert log.
    pub fn report_web(&mut self) -> usize {
        let Some(web) = self.web.as_mut() else {
            return 0;
        };
        let findings = web.detector.take_findings(crate::model::kernel_now_ns());
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
            if let Some(m) = &self.machine {
                m.send_web(&alert);
            }
        }
        findings.len()
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
