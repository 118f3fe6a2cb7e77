//! Verdicts over a source's evidence: which scan types it shows, how
//! confident we are, and the ATT&CK technique.

use scanwatch_common::trigger;
use serde::Serialize;

use super::evidence::Evidence;
use crate::{config::Detection, model::ScanType};

/// Scan types shown by the evidence. The kernel's crossings decide (it saw
/// every probe); the agent only tells a SYN flood from a fast scan: a high
/// SYN rate to many ports or hosts is a scan, not a flood.
pub fn classify(ev: &Evidence, cfg: &Detection) -> Vec<ScanType> {
    let mut types = Vec::new();
    let t = ev.triggers;
    let mut push = |enabled: bool, bit: u32, ty: ScanType| {
        if enabled && t & bit != 0 {
            types.push(ty);
        }
    };
    push(cfg.port_scan.enabled, trigger::PORTS, ScanType::PortScan);
    push(cfg.host_sweep.enabled, trigger::HOSTS, ScanType::HostSweep);
    push(
        cfg.ping_sweep.enabled,
        trigger::ICMP_HOSTS,
        ScanType::PingSweep,
    );
    push(
        cfg.stealth_scan.enabled,
        trigger::STEALTH,
        ScanType::StealthScan,
    );
    push(cfg.udp_scan.enabled, trigger::UDP_PORTS, ScanType::UdpScan);
    let scanning =
        t & (trigger::PORTS | trigger::HOSTS | trigger::UDP_PORTS | trigger::ICMP_HOSTS) != 0;
    if cfg.syn_flood_source.enabled && t & trigger::SYN_RATE != 0 && !scanning {
        types.push(ScanType::SynFloodSource);
    }
    if cfg.reply_scan.enabled && ev.reply.flagged {
        types.push(ScanType::ReplyScan);
    }
    types
}

/// How sure we are that this is reconnaissance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// `high`: several scan types at once (a threshold detection confirmed by
/// the reply-aware test included), stealth probes (no real stack sends
/// them), or at least 4x a threshold; `medium`: at least 2x a threshold, or
/// the reply-aware test alone;
/// `low`: just over a threshold. A source listed by a `tag` feed
/// (`known_bad`) is raised one level.
pub fn confidence_with(
    types: &[ScanType],
    ev: &Evidence,
    cfg: &Detection,
    known_bad: bool,
) -> Confidence {
    let c = confidence(types, ev, cfg);
    if known_bad {
        match c {
            Confidence::Low => Confidence::Medium,
            _ => Confidence::High,
        }
    } else {
        c
    }
}

/// [`confidence_with`] without feed knowledge.
pub fn confidence(types: &[ScanType], ev: &Evidence, cfg: &Detection) -> Confidence {
    let ratio = |n: u64, threshold: u32| n as f64 / f64::from(threshold.max(1));
    let best = types
        .iter()
        .map(|t| match t {
            ScanType::PortScan => ratio(ev.distinct_ports, cfg.port_scan.distinct_ports),
            ScanType::UdpScan => ratio(ev.distinct_udp_ports, cfg.udp_scan.distinct_ports),
            ScanType::HostSweep => ratio(ev.distinct_hosts, cfg.host_sweep.distinct_hosts),
            ScanType::PingSweep => ratio(ev.distinct_icmp_hosts, cfg.ping_sweep.distinct_hosts),
            ScanType::StealthScan => 4.0,
            ScanType::SynFloodSource => 1.0,
            // The test bounds false positives by alpha: medium on its own,
            // high together with a threshold detection.
            ScanType::ReplyScan => 2.0,
            // Never a source's type (an alert of its own).
            ScanType::DistributedScan => 1.0,
            // Web findings come from detect::web, not from kernel counts.
            ScanType::VulnScanner | ScanType::WordlistScan => 1.0,
        })
        .fold(0.0, f64::max);
    let kinds = types
        .iter()
        .filter(|t| **t != ScanType::SynFloodSource)
        .count();
    if kinds >= 2 || best >= 4.0 {
        Confidence::High
    } else if best >= 2.0 {
        Confidence::Medium
    } else {
        Confidence::Low
    }
}

/// ATT&CK technique: T1595.001 (Scanning IP Blocks) for sweeps across
/// addresses, T1595.002 (Vulnerability Scanning) for a web vulnerability
/// scanner, T1595.003 (Wordlist Scanning) for wordlist scanning of a web
/// server, T1595 (Active Scanning) otherwise.
pub fn attack_technique(types: &[ScanType]) -> &'static str {
    if types
        .iter()
        .any(|t| matches!(t, ScanType::HostSweep | ScanType::PingSweep))
    {
        "T1595.001"
    } else if types.contains(&ScanType::VulnScanner) {
        "T1595.002"
    } else if types.contains(&ScanType::WordlistScan) {
        "T1595.003"
    } else {
        "T1595"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::evidence::{ReplyEvidence, test_evidence as evidence};

    #[test]
    fn reply_scan_comes_from_the_sequential_test() {
        let cfg = Detection::default();
        let mut ev = evidence(0, 6, 1);
        assert!(classify(&ev, &cfg).is_empty());
        let k = cfg.reply_config();
        ev.reply = ReplyEvidence::from_stats(
            &scanwatch_common::trw::ReplyStats {
                llr: 4 * k.failure_step,
                failures: 4,
                ..Default::default()
            },
            &k,
        );
        assert!(ev.reply.flagged);
        assert_eq!(classify(&ev, &cfg), vec![ScanType::ReplyScan]);
        assert_eq!(
            confidence(&[ScanType::ReplyScan], &ev, &cfg),
            Confidence::Medium
        );
        // Confirming a threshold detection raises it to high.
        let ev2 = Evidence {
            triggers: trigger::PORTS,
            ..ev.clone()
        };
        let types = classify(&ev2, &cfg);
        assert_eq!(types, vec![ScanType::PortScan, ScanType::ReplyScan]);
        assert_eq!(confidence(&types, &ev2, &cfg), Confidence::High);
        // Three failures stay below the boundary; disabled never fires.
        ev.reply.flagged = false;
        assert!(classify(&ev, &cfg).is_empty());
        let mut off = cfg.clone();
        off.reply_scan.enabled = false;
        ev.reply.flagged = true;
        assert!(classify(&ev, &off).is_empty());
    }

    #[test]
    fn classify_maps_kernel_crossings() {
        let cfg = Detection::default();
        let ev = evidence(trigger::PORTS | trigger::STEALTH, 20, 1);
        assert_eq!(
            classify(&ev, &cfg),
            vec![ScanType::PortScan, ScanType::StealthScan]
        );
        let ev = evidence(trigger::HOSTS | trigger::ICMP_HOSTS, 300, 1);
        assert_eq!(
            classify(&ev, &cfg),
            vec![ScanType::HostSweep, ScanType::PingSweep]
        );
        assert_eq!(attack_technique(&classify(&ev, &cfg)), "T1595.001");
        assert_eq!(attack_technique(&[ScanType::PortScan]), "T1595");
        assert_eq!(attack_technique(&[ScanType::VulnScanner]), "T1595.002");
        assert_eq!(attack_technique(&[ScanType::WordlistScan]), "T1595.003");
    }

    #[test]
    fn syn_rate_alone_is_a_flood_with_ports_it_is_a_fast_scan() {
        let cfg = Detection::default();
        assert_eq!(
            classify(&evidence(trigger::SYN_RATE, 30_000, 1), &cfg),
            vec![ScanType::SynFloodSource]
        );
        assert_eq!(
            classify(
                &evidence(trigger::SYN_RATE | trigger::PORTS, 30_000, 1),
                &cfg
            ),
            vec![ScanType::PortScan]
        );
    }

    #[test]
    fn disabled_types_are_not_reported() {
        let mut cfg = Detection::default();
        cfg.stealth_scan.enabled = false;
        assert_eq!(
            classify(&evidence(trigger::STEALTH, 9, 1), &cfg),
            Vec::<ScanType>::new()
        );
    }

    #[test]
    fn confidence_levels() {
        let cfg = Detection::default();
        let mut ev = evidence(trigger::PORTS, 16, 1);
        ev.distinct_ports = 16;
        assert_eq!(
            confidence(&[ScanType::PortScan], &ev, &cfg),
            Confidence::Low
        );
        ev.distinct_ports = 30;
        assert_eq!(
            confidence(&[ScanType::PortScan], &ev, &cfg),
            Confidence::Medium
        );
        ev.distinct_ports = 1000;
        assert_eq!(
            confidence(&[ScanType::PortScan], &ev, &cfg),
            Confidence::High
        );
        ev.distinct_ports = 16;
        assert_eq!(
            confidence(&[ScanType::PortScan, ScanType::StealthScan], &ev, &cfg),
            Confidence::High
        );
    }

    #[test]
    fn known_bad_raises_confidence() {
        let cfg = Detection::default();
        let mut ev = evidence(trigger::PORTS, 16, 1);
        ev.distinct_ports = 16;
        assert_eq!(
            confidence_with(&[ScanType::PortScan], &ev, &cfg, true),
            Confidence::Medium
        );
        ev.distinct_ports = 30;
        assert_eq!(
            confidence_with(&[ScanType::PortScan], &ev, &cfg, true),
            Confidence::High
        );
    }
}
