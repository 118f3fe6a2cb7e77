//! A spoofed-source flood in the namespace lab: millions of distinct
//! lab-only sources (random IPv4 in 198.18.0.0/15 and IPv6 in fd00::/8),
//! plus hundreds of spoofed "scanners" (some in a never_block network),
//! sent from the scanner namespace with an AF_PACKET socket while real nmap
//! scans run from fixed addresses. The agent runs with a small source map,
//! auto-block on and a small blocklist.
//!
//! Shown: the agent stays up with bounded memory; the one-probe sources
//! wait in the admission table and never take a source slot (admission
//! overwrites in /metrics, almost no evictions); the real scanners and the
//! spoofed ones are still alerted; no
//! never_block source is dropped; the blocklist never exceeds its capacity
//! (further detections are alerted, not blocked).
//! Needs root and nmap; fails rather than skips without them.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use common::{AgentLab, assert_installed, mac, send_frames};
use scanwatch_lab::{
    frames::{Packet, Transport, tcp},
    netns::TARGET_V4,
    privileged::require_root,
};

const METRICS: &str = "198.18.0.2:9477";
const WAIT: Duration = Duration::from_secs(60);
/// Distinct spoofed one-packet sources.
const FLOOD_SOURCES: u32 = 2_000_000;
const SOURCE_MAP: u32 = 65_536;
const BLOCKLIST: usize = 128;
/// Spoofed scanners: blockable ones in 198.19.250.0/23...
const SPOOFED_SCANNERS: u32 = 512;
/// ...and never_block ones in 198.19.255.0/24.
const NEVER_BLOCK_SCANNERS: u32 = 256;
/// Probes (distinct ports) each spoofed scanner sends.
const SCANNER_PROBES: u32 = 20;
const NEVER_BLOCK_NET: &str = "198.19.255.0/24";
/// IPv4 flood addresses: 198.18.1.0 to 198.19.249.255.
const IPV4_POOL: u32 = (2 * 256 - 1 - 6) * 256;

fn metrics(lab: &AgentLab) -> String {
    lab.scrape(METRICS)
}

/// Sum of the samples whose line starts with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    common::metric_sum(text, prefix)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .expect("agent VmRSS")
}

/// Reproducible spoofed addresses.
use scanwatch_lab::rng::SplitMix64 as Rng;

/// A spoofed flood source: random IPv6 in fd00::/8 (three in four: every
/// one distinct), or random IPv4 in 198.18.1.0-198.19.249.255 (the lab's own
/// /24 and the spoofed scanners' networks excluded; only 129,280 addresses).
fn flood_source(rng: &mut Rng) -> IpAddr {
    let r = rng.next_u64();
    if !r.is_multiple_of(4) {
        let mut o = (u128::from(r) | (u128::from(rng.next_u64()) << 64)).to_be_bytes();
        o[0] = 0xfd; // fd00::/8
        o[1] |= 0x80; // never the lab's own fd00::1, fd00::2
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        // 198.18.1.0 .. 198.19.249.255
        let n = 0xc612_0100 + (r >> 8) as u32 % IPV4_POOL;
        IpAddr::V4(Ipv4Addr::from(n))
    }
}

#[test]
fn spoofed_flood_waits_in_admission_scanners_are_caught_never_block_is_spared() {
    if !require_root("spoofed_flood_waits_in_admission_scanners_are_caught_never_block_is_spared") {
        return;
    }
    assert_installed(&["nmap", "curl"]);
    let dir = std::env::temp_dir().join(format!("scanwatch-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg = dir.join("scanwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mitigation]\nauto_block = true\ncapacity = {BLOCKLIST}\n\
             never_block = [\"198.18.0.12/32\", \"{NEVER_BLOCK_NET}\"]\n"
        ),
    )
    .expect("config");
    let cfg = cfg.to_string_lossy().into_owned();
    let map = SOURCE_MAP.to_string();
    let mut lab = AgentLab::start(&[
        "--config",
        &cfg,
        "--metrics-addr",
        METRICS,
        "--map-size",
        &map,
        "--count-interval",
        "1",
    ]);
    for a in ["198.18.0.11/24", "198.18.0.12/24"] {
        lab.lab.add_scanner_address(a).expect("address");
    }
    let rss_before = rss_kib(lab.agent_pid);
    let m0 = metrics(&lab);
    assert_eq!(
        metric(&m0, "scanwatch_source_map_capacity"),
        f64::from(SOURCE_MAP)
    );

    // The flood: one SYN from each of FLOOD_SOURCES random sources, with
    // 20 SYNs to distinct ports from each spoofed scanner mixed in.
    let dst_mac = mac(&lab.lab.target_mac);
    let ns = PathBuf::from(format!("/run/netns/{}", lab.lab.scanner_ns));
    let seed = 0x5ca7_f100d;
    println!("flood seed {seed:#x}");
    // At least FLOOD_SOURCES frames, and on until `stop`: the flood must
    // outlast the real scans however fast this machine sends.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let frames = {
        let stop = std::sync::Arc::clone(&stop);
        let mut rng = Rng(seed);
        let scanners = SPOOFED_SCANNERS + NEVER_BLOCK_SCANNERS;
        let scanner_frames = scanners * SCANNER_PROBES;
        let mut i = 0u32;
        std::iter::from_fn(move || {
            i = i.saturating_add(1);
            if i > FLOOD_SOURCES + scanner_frames && stop.load(std::sync::atomic::Ordering::Relaxed)
            {
                return None;
            }
            // Every 50th frame (while they last) is a spoofed scanner's probe.
            let scanner = i.is_multiple_of(50) && i / 50 <= scanner_frames;
            let (src, dport) = if scanner {
                let k = i / 50 - 1;
                let who = k % scanners;
                let port = 1000 + (k / scanners) as u16;
                let addr = if who < SPOOFED_SCANNERS {
                    Ipv4Addr::from(0xc613_fa00 + who) // 198.19.250.0/23
                } else {
                    Ipv4Addr::new(198, 19, 255, (who - SPOOFED_SCANNERS) as u8)
                };
                (IpAddr::V4(addr), port)
            } else {
                (flood_source(&mut rng), (rng.next_u64() % 1024) as u16 + 1)
            };
            let dst: IpAddr = match src {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 19, 200, 1)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0xc8, 1)),
            };
            let mut f = Packet::from_ips(src, dst, Transport::tcp(dport, tcp::SYN)).build();
            f[0..6].copy_from_slice(&dst_mac);
            f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0xf1, 0x0d]);
            Some(f)
        })
    };
    let started = Instant::now();
    let flood = send_frames(ns, lab.lab.scanner_if.clone(), frames);

    // Real scans during the flood: one blockable, one in never_block.
    let scanner_if = lab.lab.scanner_if.clone();
    let nmap = |source: &str, extra: &[&str]| {
        let mut c = lab.lab.in_scanner();
        c.args([
            "nmap",
            "-n",
            "-Pn",
            "-sS",
            "-p",
            "1-300",
            "-e",
            &scanner_if,
            "-S",
            source,
            TARGET_V4,
        ])
        .args(extra)
        .stderr(Stdio::null());
        c.output().expect("nmap")
    };
    std::thread::sleep(Duration::from_millis(500));
    // Blocked as soon as it is detected (if the blocklist has room): its
    // remaining ports look filtered, so it gives up early.
    let real = nmap(
        "198.18.0.11",
        &["--max-retries", "1", "--host-timeout", "60s"],
    );
    assert!(real.status.success());
    let during = !flood.is_finished();
    assert!(during, "the flood outlasts the real scan");
    let spared = nmap("198.18.0.12", &[]);
    assert!(spared.status.success());
    let spared_out = String::from_utf8_lossy(&spared.stdout).into_owned();
    // The flood ends once its minimum is sent.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    // While the flood runs: the blocklist never exceeds its capacity.
    let mut max_blocks = 0usize;
    while !flood.is_finished() {
        let b = lab.ctl(&["blocks", "--json"]);
        assert!(b.status.success(), "the agent answers during the flood");
        let rows: serde_json::Value = serde_json::from_slice(&b.stdout).expect("JSON");
        let rows = rows.as_array().expect("array");
        max_blocks = max_blocks.max(rows.len());
        assert!(rows.len() <= BLOCKLIST, "{} blocks", rows.len());
        std::thread::sleep(Duration::from_millis(500));
    }
    let (sent, refused) = flood.join().expect("flood thread");
    let secs = started.elapsed().as_secs_f64();
    println!("real scan finished while the flood still ran: {during}");
    println!(
        "flood: {sent} frames sent ({refused} refused by the socket) in {secs:.1} s, {:.0} frames/s",
        sent as f64 / secs
    );
    assert!(
        sent >= u64::from(FLOOD_SOURCES) * 9 / 10,
        "the generator sent {sent}"
    );

    // The real scanners are alerted despite the churn.
    assert!(
        lab.wait_alert("198.18.0.11", WAIT).is_some(),
        "the real scanner is alerted during the flood"
    );
    assert!(
        lab.wait_alert("198.18.0.12", WAIT).is_some(),
        "the never_block scanner is alerted"
    );
    // The never_block scanner saw every port answer: none of its probes (or
    // their replies) was dropped.
    assert!(
        spared_out.contains("300 closed tcp ports") || spared_out.contains("All 300 scanned ports"),
        "{spared_out}"
    );

    // Let the counter thread catch up, then read the metrics.
    std::thread::sleep(Duration::from_secs(3));
    let m = metrics(&lab);
    let packets = metric(&m, "scanwatch_packets_total{");
    let created = metric(&m, "scanwatch_sources_created_total");
    let evictions = metric(&m, "scanwatch_source_map_evictions_total");
    let entries = metric(&m, "scanwatch_source_map_entries");
    let blocked = metric(&m, "scanwatch_blocked_sources");
    let full = metric(&m, "scanwatch_blocklist_full_total");
    let refusals = metric(&m, "scanwatch_never_block_refusals_total");
    let spared_packets = metric(&m, "scanwatch_never_block_spared_packets_total");
    let dropped = metric(&m, "scanwatch_dropped_packets_total{");
    let alerts = lab.alerts().len();
    let rss_after = rss_kib(lab.agent_pid);
    println!(
        "agent: {packets} packets, {created} sources created, {entries} in the map (capacity {SOURCE_MAP}), {evictions} evictions; {blocked} blocked (capacity {BLOCKLIST}, max seen {max_blocks}), {full} refused as full, {refusals} never_block refusals, {spared_packets} spared packets, {dropped} dropped; {alerts} alert lines; RSS {rss_before} KiB before, {rss_after} KiB after"
    );
    // Admission: the distinct IPv6 sources (three frames in four, over a
    // million) sent one probe each and never took a source slot; they
    // overwrote one another in the admission table. Only sources with
    // admit_after probes in a window were created: the spoofed scanners,
    // the real ones and IPv4 flood addresses that repeat (at most the
    // 129,280 of the pool).
    let overwritten = metric(&m, "scanwatch_admission_overwrites_total");
    println!("{overwritten} admission overwrites");
    assert!(
        overwritten >= f64::from(FLOOD_SOURCES) / 4.0,
        "{overwritten} admission overwrites"
    );
    let scanners = f64::from(SPOOFED_SCANNERS + NEVER_BLOCK_SCANNERS);
    assert!(created >= scanners * 0.9, "{created} sources created");
    assert!(
        created <= f64::from(IPV4_POOL) + scanners + 2.0,
        "{created} sources created: one-probe IPv6 sources were admitted"
    );
    // Every slot taken is accounted for: live or evicted.
    assert_eq!(entries + evictions, created, "entries + evictions");
    // No admitted scanner was evicted: the never_block scanner's slot holds
    // every SYN of its 300-port scan (an eviction would have restarted its
    // counts).
    let spared_top = lab
        .source("198.18.0.12")
        .expect("never_block scanner tracked");
    assert!(
        spared_top["syn"].as_u64().is_some_and(|n| n >= 300),
        "{spared_top}"
    );
    assert!(entries <= f64::from(SOURCE_MAP));
    // The blocklist filled up and then refused, failing open.
    assert!(blocked <= BLOCKLIST as f64);
    assert_eq!(
        max_blocks.max(blocked as usize),
        BLOCKLIST,
        "the blocklist filled"
    );
    assert!(full > 0.0, "blocks refused once the blocklist was full");
    // never_block: detections refused, nothing of theirs dropped.
    assert!(refusals > 0.0);
    assert_eq!(
        spared_packets, 0.0,
        "no block or drop feed covered a never_block source"
    );
    let b = lab.ctl(&["blocks", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&b.stdout).expect("JSON");
    let never: ipnet::IpNet = NEVER_BLOCK_NET.parse().expect("net");
    for r in rows.as_array().expect("array") {
        let t: ipnet::IpNet = r["target"].as_str().expect("target").parse().expect("net");
        assert!(
            !never.contains(&t.network()) && t.network().to_string() != "198.18.0.12",
            "never_block source blocked: {t}"
        );
    }
    // Bounded memory: the agent's userspace state does not grow with the
    // number of spoofed sources (it holds flagged sources only).
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(lab.stop_agent(), "the agent stops cleanly after the flood");
    let _ = std::fs::remove_dir_all(&dir);
}
