//! Two ways around per-address counting, closed: a scan spread over many
//! addresses of one IPv6 /64 (trivial for any IPv6 host) is one source, the
//! /64; and a fragmented SYN scan (`nmap -f`, whose first fragments carry
//! the ports but not the flags) is a port scan, its tiny first fragments
//! stealth probes. Needs root and nmap.

mod common;

use std::{net::Ipv6Addr, path::PathBuf, process::Stdio, time::Duration};

use common::{AgentLab, assert_installed, is_source, mac, send_frames};
use scanwatch_lab::{
    frames::{Packet, Transport, tcp},
    netns::{TARGET_V4, TARGET_V6},
    privileged::require_root,
};

const ALERT_WAIT: Duration = Duration::from_secs(10);

/// 200 SYNs to 200 ports of the target, each from another address of the
/// scanner's /64: one source, `fd00::/64`, alerted as a port scan with all
/// 200 probes counted.
#[test]
fn addresses_of_one_ipv6_64_are_one_source() {
    if !require_root("addresses_of_one_ipv6_64_are_one_source") {
        return;
    }
    let lab = AgentLab::start(&[]);
    let dst_mac = mac(&lab.lab.target_mac);
    let frames: Vec<Vec<u8>> = (0..200u16)
        .map(|i| {
            // fd00::1:<i>: the scanner's /64 (fd00::/64), never its own fd00::1.
            let source = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, i + 1);
            let mut f = Packet::from_ips(
                source.into(),
                TARGET_V6.parse().expect("ip"),
                Transport::tcp(1000 + i, tcp::SYN),
            )
            .build();
            f[0..6].copy_from_slice(&dst_mac);
            f
        })
        .collect();
    let ns = PathBuf::from(format!("/run/netns/{}", lab.lab.scanner_ns));
    let (sent, refused) = send_frames(ns, lab.lab.scanner_if.clone(), frames.into_iter())
        .join()
        .expect("sender");
    assert_eq!((sent, refused), (200, 0));
    let alerts = lab.wait_alert_types("fd00::1:1", &["port_scan"], ALERT_WAIT);
    let alert = alerts
        .iter()
        .find(|a| common::scan_types(a).iter().any(|t| t == "port_scan"))
        .unwrap_or_else(|| panic!("no port_scan alert for fd00::/64: {alerts:?}"));
    assert_eq!(alert["source"], "fd00::/64", "{alert}");
    // top: one source for the whole /64, every SYN counted once.
    let rows: Vec<serde_json::Value> = lab
        .top()
        .into_iter()
        .filter(|r| is_source(&r["source"], "fd00::1:1"))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["source"], "fd00::/64");
    assert_eq!(rows[0]["syn"], 200, "{}", rows[0]);
    assert!(
        rows[0]["distinct_ports"].as_u64().is_some_and(|n| n >= 180),
        "{}",
        rows[0]
    );
}

/// `nmap -sS -f -p 1-100`: 100 first fragments with 8 bytes of TCP header
/// (ports, no flags), each followed by a fragment with the rest. Detected
/// as a port scan, and as a stealth scan for its tiny fragments.
#[test]
fn fragmented_syn_scan_is_a_port_scan() {
    if !require_root("fragmented_syn_scan_is_a_port_scan") {
        return;
    }
    assert_installed(&["nmap"]);
    let lab = AgentLab::start(&[]);
    lab.lab
        .add_scanner_address("198.18.0.41/24")
        .expect("address");
    let status = lab
        .lab
        .in_scanner()
        .args([
            "nmap",
            "-n",
            "-Pn",
            "-sS",
            "-f",
            "-p",
            "1-100",
            "-e",
            &lab.lab.scanner_if,
            "-S",
            "198.18.0.41",
            TARGET_V4,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("nmap");
    assert!(status.success(), "nmap -f: {status}");
    let alerts = lab.wait_alert_types("198.18.0.41", &["port_scan", "stealth_scan"], ALERT_WAIT);
    let types: Vec<String> = alerts.iter().flat_map(common::scan_types).collect();
    assert!(
        types.iter().any(|t| t == "port_scan") && types.iter().any(|t| t == "stealth_scan"),
        "{alerts:?}"
    );
    let row = lab.source("198.18.0.41").expect("tracked");
    // Every first fragment is a stealth probe with its port; every second
    // fragment a fragment. nmap may retransmit a few probes.
    let stealth = row["stealth"].as_u64().unwrap_or(0);
    assert!((100..=110).contains(&stealth), "{row}");
    assert!(row["fragment"].as_u64().is_some_and(|n| n >= 100), "{row}");
    assert!(
        row["distinct_ports"].as_u64().is_some_and(|n| n >= 95),
        "{row}"
    );
    assert_eq!(row["syn"], 0, "no unfragmented SYN: {row}");
}
