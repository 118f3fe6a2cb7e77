//! End to end: real nmap scans from one namespace against the agent attached
//! in another, checked through `scanwatch top --json` against what nmap
//! itself reports sending (`--packet-trace`).
//! Needs root and nmap; fails rather than skips without them.

mod common;

use std::collections::BTreeMap;

use common::{AgentLab, KINDS, nmap_sent};
use scanwatch_lab::{
    netns::{TARGET_V4, TARGET_V6},
    privileged::require_root,
};
use serde_json::Value;

fn count(o: &Value, field: &str) -> u64 {
    o[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {o}"))
}

/// Runs nmap from `source` with `--packet-trace`; asserts the agent counted
/// exactly what nmap sent; returns the agent's view of the source.
fn scan_and_compare(
    lab: &AgentLab,
    source: &str,
    args: &[&str],
) -> (Value, BTreeMap<&'static str, u64>) {
    let scanner_if = lab.lab.scanner_if.clone();
    let mut cmd = vec![
        "nmap",
        "-n",
        "--packet-trace",
        "-e",
        &scanner_if,
        "-S",
        source,
    ];
    cmd.extend_from_slice(args);
    let out = lab.scan(&cmd);
    let sent = nmap_sent(&String::from_utf8_lossy(&out.stdout));
    let seen = lab
        .source(source)
        .unwrap_or_else(|| panic!("nmap {args:?}: source {source} not tracked"));
    for kind in KINDS {
        assert_eq!(
            count(&seen, kind),
            sent[kind],
            "nmap {args:?}: {kind}: agent counted {} but nmap sent {} ({seen})",
            count(&seen, kind),
            sent[kind]
        );
    }
    assert_eq!(seen["interface"], lab.lab.target_if.as_str());
    (seen, sent)
}

#[test]
fn nmap_scans_are_counted() {
    if !require_root("nmap_scans_are_counted") {
        return;
    }
    common::assert_installed(&["nmap"]);
    let mut lab = AgentLab::start(&[]);
    // One source address per scan, so each scan's counters stand alone.
    for addr in [
        "198.18.0.11/24",
        "198.18.0.12/24",
        "198.18.0.13/24",
        "198.18.0.14/24",
        "198.18.0.15/24",
        "198.18.0.16/24",
        "fd00::11/64",
    ] {
        lab.lab.add_scanner_address(addr).expect("scanner address");
    }

    // TCP scans of nmap's default top 1000 ports. Every port is closed, so
    // nmap sends exactly one probe per port.
    for (source, flag, kind) in [
        ("198.18.0.11", "-sS", "syn"),
        ("198.18.0.12", "-sF", "stealth"),
        ("198.18.0.13", "-sN", "stealth"),
        ("198.18.0.14", "-sX", "stealth"),
    ] {
        let (seen, _) = scan_and_compare(&lab, source, &["-Pn", flag, TARGET_V4]);
        assert_eq!(count(&seen, kind), 1000, "nmap {flag}: 1000 {kind} probes");
        assert_eq!(
            count(&seen, "syn") + count(&seen, "stealth"),
            1000,
            "nmap {flag}"
        );
    }

    // UDP: nmap sends protocol payloads, some ports more than once (62
    // datagrams for the top 50 ports with nmap 7.93); closed ports answer
    // with ICMP port unreachable (rate limit off in the lab).
    let (seen, _) = scan_and_compare(
        &lab,
        "198.18.0.15",
        &["-Pn", "-sU", "--top-ports", "50", TARGET_V4],
    );
    assert!(
        count(&seen, "udp") >= 50,
        "at least one datagram per port: {seen}"
    );

    // Ping sweep of a /24 routed into the veth, whose addresses all answer:
    // nmap sends an ICMP echo to every address (and SYN/443, ACK/80 and ICMP
    // timestamps to those that have not answered yet).
    let (seen, _) = scan_and_compare(&lab, "198.18.0.16", &["-sn", "198.19.0.0/24"]);
    assert!(
        count(&seen, "icmp_echo") >= 256,
        "nmap -sn /24: an echo per address: {seen}"
    );

    // IPv6 SYN scan.
    let (seen, _) = scan_and_compare(&lab, "fd00::11", &["-6", "-Pn", "-sS", TARGET_V6]);
    assert_eq!(count(&seen, "syn"), 1000, "nmap -6 -sS: 1000 SYNs");

    // Timestamps are RFC 3339 and ordered.
    let f = chrono::DateTime::parse_from_rfc3339(seen["first_seen"].as_str().expect("first_seen"))
        .expect("RFC 3339");
    let l = chrono::DateTime::parse_from_rfc3339(seen["last_seen"].as_str().expect("last_seen"))
        .expect("RFC 3339");
    assert!(f <= l);

    // Nothing else was counted as a probe: the lab's own traffic (ARP, ND)
    // is not, and the target sends nothing to itself.
    let sources: Vec<String> = lab
        .top()
        .iter()
        .filter_map(|o| o["source"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        sources.len(),
        7,
        "only the seven scanners are tracked: {sources:?}"
    );

    assert!(lab.stop_agent(), "agent exits 0 on SIGTERM");
    assert_eq!(
        common::pins_left(&lab.pin_dir),
        ["BLOCKS"],
        "pins removed on clean stop, but the blocklist, kept for the next agent"
    );
}
