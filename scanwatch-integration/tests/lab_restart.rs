//! Faults and restarts in the namespace lab: `kill -9` mid-scan keeps the
//! blocks and their expiries, counters restart from zero with the new process
//! (no double counting), detection resumes; a pinned blocklist of the wrong
//! layout or size is replaced with a log line; a clean stop detaches by
//! default, `--keep-attached` leaves the program dropping blocked sources
//! and the next `scanwatch run` takes it over atomically.
//! Needs root and nmap; fails rather than skips without them.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{AgentLab, assert_installed};
use scanwatch_lab::{netns::TARGET_V4, privileged::require_root};

const WAIT: Duration = Duration::from_secs(30);
const METRICS: &str = "198.18.0.2:9477";

fn require_tools(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    assert_installed(&["nmap", "curl", "python3", "bpftool"]);
    true
}

fn config(dir: &std::path::Path, text: &str) -> String {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join("scanwatch.toml");
    std::fs::write(&path, text).expect("config");
    path.to_string_lossy().into_owned()
}

fn nmap_args<'a>(lab: &'a AgentLab, source: &'a str, ports: &'a str) -> Vec<&'a str> {
    vec![
        "nmap",
        "-n",
        "-Pn",
        "-sS",
        "--max-retries",
        "0",
        "-p",
        ports,
        "-e",
        &lab.lab.scanner_if,
        "-S",
        source,
        TARGET_V4,
    ]
}

/// Sum of the samples of a metric family whose line starts with `prefix`.
fn metric(lab: &AgentLab, prefix: &str) -> f64 {
    common::metric_sum(&lab.scrape(METRICS), prefix)
}

/// Does the target answer `source` at all? One TCP connection attempt to a
/// closed port: refused (an RST came back) or timed out (dropped).
fn pings(lab: &AgentLab, source: &str) -> bool {
    let script = format!(
        "import socket\ntry:\n    socket.create_connection(('{TARGET_V4}', 9), timeout=2, source_address=('{source}', 0)).close()\n    print('yes')\nexcept ConnectionRefusedError:\n    print('yes')\nexcept OSError:\n    print('no')\n"
    );
    let out = lab
        .lab
        .in_scanner()
        .args(["python3", "-c", &script])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).contains("yes")
}

/// The id of the XDP program attached to the target veth, if any.
fn attached_prog(lab: &AgentLab) -> Option<u64> {
    let out = Command::new("ip")
        .args([
            "-n",
            &lab.lab.target_ns,
            "link",
            "show",
            "dev",
            &lab.lab.target_if,
        ])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = text.find("prog/xdp id ")? + "prog/xdp id ".len();
    text[at..]
        .split_whitespace()
        .next()
        .and_then(|id| id.parse().ok())
}

/// `blocks --json`: (target, expiry) pairs.
fn blocks(lab: &AgentLab) -> Vec<(String, Option<chrono::DateTime<chrono::FixedOffset>>)> {
    let out = lab.ctl(&["blocks", "--json"]);
    assert!(out.status.success(), "blocks: {:?}", out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("blocks JSON");
    let mut rows: Vec<_> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["target"].as_str().expect("target").to_string(),
                r["expires"]
                    .as_str()
                    .map(|e| chrono::DateTime::parse_from_rfc3339(e).expect("RFC 3339")),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_mid_scan_keeps_blocks_and_detection_resumes() {
    if !require_tools("kill_9_mid_scan_keeps_blocks_and_detection_resumes") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("scanwatch-kill9-{}", std::process::id()));
    // The threshold detectors only: the reply-aware one would block the
    // scan after 4 RSTs, before enough SYNs are counted to show that the
    // restarted agent's counters start again from zero.
    let cfg = config(
        &dir,
        "[detection.reply_scan]\nenabled = false\n\n[mitigation]\nauto_block = true\nnever_block = [\"198.18.0.12/32\"]\n",
    );
    let args = ["--config", &cfg, "--metrics-addr", METRICS];
    let mut lab = AgentLab::start(&args);
    for a in ["198.18.0.11/24", "198.18.0.12/24", "198.18.0.80/24"] {
        lab.lab.add_scanner_address(a).expect("address");
    }
    assert!(pings(&lab, "198.18.0.80"));
    assert!(
        lab.ctl(&["block", "198.18.0.80", "--ttl", "2h"])
            .status
            .success()
    );
    assert!(lab.ctl(&["block", "198.18.0.81"]).status.success());

    // A slow scan from .11 (50 probes/s, about 20 s): detected and
    // auto-blocked while it still runs.
    let mut scan = lab.lab.in_scanner();
    scan.args(nmap_args(&lab, "198.18.0.11", "1-1000"))
        .args(["--min-rate", "50", "--max-rate", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut scan = scan.spawn().expect("nmap");
    assert!(
        lab.wait_alert("198.18.0.11", WAIT).is_some(),
        "scan alerted"
    );
    wait_until("the auto-block of .11", || {
        blocks(&lab).iter().any(|(t, _)| t == "198.18.0.11/32")
    });
    let before = blocks(&lab);
    assert_eq!(before.len(), 3, "{before:?}");
    let syn_before = lines_sum(&lab, "kind=\"syn\"");
    assert!(
        syn_before > 15.0,
        "the scan's SYNs before the kill: {syn_before}"
    );

    // kill -9 while the scan still runs.
    assert!(
        scan.try_wait().expect("nmap").is_none(),
        "nmap still running"
    );
    lab.lab.kill(lab.agent_pid);
    assert_eq!(attached_prog(&lab), None, "a killed agent's link is gone");
    assert!(
        common::pins_left(&lab.pin_dir).contains(&"BLOCKS".to_string()),
        "the blocklist pin survives"
    );
    lab.restart(&args);
    assert!(attached_prog(&lab).is_some());

    // Blocks and their expiries are kept (expiries are kernel-clock
    // instants, shown as wall-clock times: equal to the second).
    let after = blocks(&lab);
    assert_eq!(
        after.iter().map(|b| &b.0).collect::<Vec<_>>(),
        before.iter().map(|b| &b.0).collect::<Vec<_>>()
    );
    for ((t, a), (_, b)) in after.iter().zip(&before) {
        match (a, b) {
            (Some(a), Some(b)) => assert!(
                (*a - *b).num_milliseconds().abs() <= 1000,
                "{t}: expiry {a} after the restart, {b} before"
            ),
            (None, None) => {}
            other => panic!("{t}: expiry changed: {other:?}"),
        }
    }
    assert!(
        !pings(&lab, "198.18.0.80"),
        "still dropped after the restart"
    );
    let _ = scan.wait();
    // The scan's remaining probes were dropped, not counted as probes.
    assert!(metric(&lab, "scanwatch_dropped_packets_total{") > 0.0);

    // Counters live in the new program's maps: they restart from zero with
    // the new process (a counter reset for Prometheus), never double count.
    // Each scrape is one TCP connection (one SYN) from the scanner namespace.
    let syn = |lab: &AgentLab| lines_sum(lab, "kind=\"syn\"");
    let s1 = syn(&lab);
    assert!(
        s1 < 10.0 && s1 < syn_before,
        "after the restart {s1} SYNs (before the kill {syn_before}): counting restarted"
    );
    // Detection resumes: a new scan (never_block: alerted, never dropped)
    // is alerted and its 300 SYNs are counted exactly once.
    let out = lab.scan(&nmap_args(&lab, "198.18.0.12", "1-300"));
    assert!(out.status.success());
    assert!(
        lab.wait_alert("198.18.0.12", WAIT).is_some(),
        "alert after the restart"
    );
    assert_eq!(
        syn(&lab) - s1,
        301.0,
        "the scan's 300 SYNs and this scrape's own, each counted once"
    );
    assert_eq!(
        lab.source("198.18.0.12").map(|s| s["syn"].clone()),
        Some(serde_json::json!(300))
    );
    assert!(lab.stop_agent());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sum of the `scanwatch_packets_total` samples whose labels contain `label`.
fn lines_sum(lab: &AgentLab, label: &str) -> f64 {
    let text = lab.scrape(METRICS);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(label)).collect();
    common::metric_sum(&lines.join("\n"), "scanwatch_packets_total{")
}

#[test]
fn pinned_blocklist_of_wrong_layout_or_size_is_replaced() {
    if !require_tools("pinned_blocklist_of_wrong_layout_or_size_is_replaced") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("scanwatch-badpin-{}", std::process::id()));
    let small = config(&dir, "[mitigation]\ncapacity = 1024\n");
    let mut lab = AgentLab::start_logged(&["--config", &small]);
    assert!(lab.ctl(&["block", "198.18.0.80"]).status.success());
    assert!(lab.stop_agent());
    let pin = lab.pin_dir.join("BLOCKS");

    // Same layout, other capacity: replaced, its blocks dropped.
    let big = dir.join("big.toml");
    std::fs::write(&big, "[mitigation]\ncapacity = 2048\n").expect("config");
    let big = big.to_string_lossy().into_owned();
    lab.restart(&["--config", &big]);
    let log = lab.log_text();
    assert!(
        log.contains("replacing the pinned blocklist") && log.contains("1024"),
        "{log}"
    );
    assert!(
        blocks_of(&lab).is_empty(),
        "blocks of the replaced map are gone"
    );
    let info = aya::maps::MapData::from_pin(&pin)
        .and_then(|m| m.info())
        .expect("pinned blocklist");
    assert_eq!(info.max_entries(), 2048);
    assert!(lab.ctl(&["block", "198.18.0.81"]).status.success());
    assert!(lab.stop_agent());

    // Another layout (value size 4) at the pin path, made with bpftool.
    std::fs::remove_file(&pin).expect("remove pin");
    let made = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&pin)
        .args([
            "type", "lpm_trie", "key", "20", "value", "4", "entries", "2048", "name", "BLOCKS",
            "flags", "1",
        ])
        .output()
        .expect("bpftool");
    assert!(made.status.success(), "bpftool: {made:?}");
    lab.restart(&["--config", &big]);
    let log = lab.log_text();
    assert_eq!(
        log.matches("replacing the pinned blocklist").count(),
        2,
        "{log}"
    );
    let info = aya::maps::MapData::from_pin(&pin)
        .and_then(|m| m.info())
        .expect("pinned blocklist");
    assert_eq!(
        info.value_size() as usize,
        std::mem::size_of::<scanwatch_common::BlockValue>()
    );
    // The new map works: a block drops.
    lab.lab
        .add_scanner_address("198.18.0.82/24")
        .expect("address");
    assert!(pings(&lab, "198.18.0.82"));
    assert!(lab.ctl(&["block", "198.18.0.82"]).status.success());
    assert!(!pings(&lab, "198.18.0.82"));
    assert!(lab.stop_agent());
    let _ = std::fs::remove_dir_all(&dir);
}

fn blocks_of(lab: &AgentLab) -> Vec<String> {
    blocks(lab).into_iter().map(|b| b.0).collect()
}

#[test]
fn clean_stop_detaches_by_default_and_keep_attached_keeps_dropping() {
    if !require_tools("clean_stop_detaches_by_default_and_keep_attached_keeps_dropping") {
        return;
    }
    let mut lab = AgentLab::start_logged(&[]);
    lab.lab
        .add_scanner_address("198.18.0.80/24")
        .expect("address");
    lab.lab
        .add_scanner_address("198.18.0.12/24")
        .expect("address");
    assert!(
        lab.ctl(&["block", "198.18.0.80", "--ttl", "1h"])
            .status
            .success()
    );
    assert!(!pings(&lab, "198.18.0.80"));

    // Default: a clean stop detaches; nothing is dropped any more.
    assert!(lab.stop_agent());
    assert_eq!(attached_prog(&lab), None, "detached on SIGTERM");
    assert!(pings(&lab, "198.18.0.80"), "no program, no drops");
    assert_eq!(common::pins_left(&lab.pin_dir), ["BLOCKS"]);

    // --keep-attached: the program stays attached after a clean stop and
    // keeps dropping the blocked source (blocks are kept in the pinned map).
    lab.restart(&["--keep-attached"]);
    let first = attached_prog(&lab).expect("attached");
    assert!(!pings(&lab, "198.18.0.80"));
    assert!(lab.stop_agent());
    assert_eq!(
        attached_prog(&lab),
        Some(first),
        "still attached after stop"
    );
    assert!(!pings(&lab, "198.18.0.80"), "still dropped with no agent");
    assert!(pings(&lab, "198.18.0.12"), "others pass");
    let left = common::pins_left(&lab.pin_dir);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[1].starts_with("XDP_LINK_"), "{left:?}");
    assert!(lab.log_text().contains("XDP program stays attached"));

    // The next run (default mode) takes the link over atomically: another
    // program on the same link, detection works, and its stop detaches.
    lab.restart(&[]);
    assert!(lab.log_text().contains("took over the XDP program"));
    let second = attached_prog(&lab).expect("attached");
    assert_ne!(
        second, first,
        "the new agent's program replaced the kept one"
    );
    assert!(!pings(&lab, "198.18.0.80"));
    let out = lab.scan(&nmap_args(&lab, "198.18.0.12", "1-300"));
    assert!(out.status.success());
    assert!(lab.wait_alert("198.18.0.12", WAIT).is_some());
    assert!(lab.stop_agent());
    assert_eq!(attached_prog(&lab), None);
    assert_eq!(common::pins_left(&lab.pin_dir), ["BLOCKS"]);

    // --keep-attached survives a crash too: the pin holds the link.
    lab.restart(&["--keep-attached"]);
    let third = attached_prog(&lab).expect("attached");
    lab.lab.kill(lab.agent_pid);
    assert_eq!(attached_prog(&lab), Some(third), "attached after kill -9");
    assert!(!pings(&lab, "198.18.0.80"));
    lab.restart(&["--keep-attached"]);
    assert_ne!(attached_prog(&lab), Some(third));
    assert!(!pings(&lab, "198.18.0.80"));
    assert!(lab.stop_agent());
    assert!(attached_prog(&lab).is_some());
    // Removing the pin detaches it.
    for p in common::pins_left(&lab.pin_dir) {
        if p.starts_with("XDP_LINK_") {
            std::fs::remove_file(lab.pin_dir.join(p)).expect("remove link pin");
        }
    }
    wait_until("the detach", || attached_prog(&lab).is_none());
    assert!(pings(&lab, "198.18.0.80"));
}
