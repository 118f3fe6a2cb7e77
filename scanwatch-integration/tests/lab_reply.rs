//! The reply-aware detector end to end: with open ports 22, 80 and 443 on
//! the target, nmap SYN and connect scans are flagged `reply_scan` from the
//! host's answers after a handful of failed first contacts, a slow scan under
//! the distinct-port thresholds is caught by it alone, and a client making
//! 10,000 connections to the open ports is never flagged. Needs root, nmap
//! and python3.

mod common;

use std::{process::Stdio, time::Duration};

use common::AgentLab;
use scanwatch_lab::{netns::TARGET_V4, privileged::require_root};
use serde_json::Value;

const ALERT_WAIT: Duration = Duration::from_secs(20);
const OPEN_PORTS: [&str; 3] = ["22", "80", "443"];

/// Accepts and closes connections on each port given (all addresses).
const LISTENER: &str = r#"
import socket, sys, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4096)
    while True:
        c, _ = s.accept()
        c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait()
"#;

/// `n` connections from `source`, round robin over the ports given.
const CLIENT: &str = r#"
import socket, sys
source, n, ports = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
done = 0
for i in range(n):
    s = socket.create_connection(("198.18.0.2", ports[i % len(ports)]), timeout=5, source_address=(source, 0))
    s.close()
    done += 1
print("connections", done)
"#;

fn types(alert: &Value) -> Vec<String> {
    common::scan_types(alert)
}

/// The first alert about `source` naming `reply_scan`.
fn reply_alert(lab: &AgentLab, what: &str, source: &str) -> Value {
    let alerts = lab.wait_alert_types(source, &["reply_scan"], ALERT_WAIT);
    alerts
        .iter()
        .find(|a| types(a).iter().any(|t| t == "reply_scan"))
        .cloned()
        .unwrap_or_else(|| panic!("{what}: no reply_scan alert for {source}: {alerts:?}"))
}

fn nmap(lab: &AgentLab, what: &str, args: &[&str]) {
    let mut c = lab.lab.in_scanner();
    c.arg("nmap")
        .arg("-n")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = c.status().expect("run nmap");
    assert!(status.success(), "{what}: {status}");
}

#[test]
fn reply_aware_detection_in_the_lab() {
    if !require_root("reply_aware_detection_in_the_lab") {
        return;
    }
    common::assert_installed(&["nmap", "python3", "nft", "curl"]);
    // A short no-answer timeout for the firewalled scan below.
    let config = std::env::temp_dir().join(format!("scanwatch-reply-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[detection.reply_scan]\nno_answer_timeout_seconds = 2\n",
    )
    .expect("config");
    let config_s = config.to_string_lossy().into_owned();
    let mut lab = AgentLab::start(&["--config", &config_s, "--metrics-addr", METRICS]);
    let mut c = lab.lab.in_target();
    c.args(["python3", "-c", LISTENER])
        .args(OPEN_PORTS)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let listener = lab.lab.spawn(c).expect("listener");
    for addr in [
        "198.18.0.21",
        "198.18.0.23",
        "198.18.0.24",
        "198.18.0.30",
        "198.18.0.31",
    ] {
        lab.lab
            .add_scanner_address(&format!("{addr}/24"))
            .expect("address");
    }
    let scanner_if = lab.lab.scanner_if.clone();
    // The listener is up once a connection to each port succeeds (from an
    // address of its own: the connect scan below comes from 198.18.0.1).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = lab.lab.in_scanner();
        c.args(["python3", "-c", CLIENT, "198.18.0.31", "3"])
            .args(OPEN_PORTS)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if c.status().is_ok_and(|s| s.success()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the listener did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut rows = Vec::new();

    // 1. A legitimate client: 10,000 connections to the three open ports.
    let out = lab.scan(&[
        "python3",
        "-c",
        CLIENT,
        "198.18.0.30",
        "10000",
        "22",
        "80",
        "443",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("connections 10000"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 2. nmap -sS over ports 1-1000 (the three open ones among them).
    nmap(
        &lab,
        "nmap -sS",
        &[
            "-Pn",
            "-sS",
            "-p",
            "1-1000",
            "-e",
            &scanner_if,
            "-S",
            "198.18.0.21",
            TARGET_V4,
        ],
    );
    let a = reply_alert(&lab, "nmap -sS", "198.18.0.21");
    rows.push(("nmap -sS -p 1-1000", a));

    // 3. nmap -sT (connect scan, from the scanner's own address).
    nmap(&lab, "nmap -sT", &["-Pn", "-sT", "-p", "1-1000", TARGET_V4]);
    let a = reply_alert(&lab, "nmap -sT", "198.18.0.1");
    rows.push(("nmap -sT -p 1-1000", a));

    // 4. A slow scan of 8 closed ports, 2 s apart: under every
    // distinct-port threshold (15), caught by the reply-aware test alone.
    nmap(
        &lab,
        "slow scan",
        &[
            "-Pn",
            "-sS",
            "--scan-delay",
            "2s",
            "-p",
            "1000-1007",
            "-e",
            &scanner_if,
            "-S",
            "198.18.0.23",
            TARGET_V4,
        ],
    );
    let a = reply_alert(&lab, "slow scan", "198.18.0.23");
    let slow_types: Vec<String> = lab
        .alerts()
        .iter()
        .filter(|x| x["source"] == "198.18.0.23")
        .flat_map(types)
        .collect();
    assert!(
        slow_types.iter().all(|t| t == "reply_scan"),
        "the slow scan stays under the thresholds: {slow_types:?}"
    );
    assert_eq!(a["detector"], "reply", "{a}");
    rows.push(("nmap -sS --scan-delay 2s (8 closed ports)", a));

    // 5. Ports 2000-2007 silently dropped by the target's firewall: only
    // no-answers, flagged by the agent's sweep after the timeout.
    let ns = lab.lab.target_ns.clone();
    for rule in [
        "add table inet swreply",
        "add chain inet swreply input { type filter hook input priority 0 ; }",
        "add rule inet swreply input tcp dport 2000-2007 drop",
    ] {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &ns, "nft"]).args(rule.split(' '));
        assert!(c.status().expect("nft").success(), "nft {rule}");
    }
    nmap(
        &lab,
        "firewalled scan",
        &[
            "-Pn",
            "-sS",
            "--max-retries",
            "0",
            "-p",
            "2000-2007",
            "-e",
            &scanner_if,
            "-S",
            "198.18.0.24",
            TARGET_V4,
        ],
    );
    let a = reply_alert(&lab, "firewalled scan", "198.18.0.24");
    assert!(
        a["reply"]["no_answers"].as_u64().is_some_and(|n| n >= 4),
        "flagged on no-answers: {a}"
    );
    assert_eq!(a["reply"]["failures"], 0, "{a}");
    rows.push(("nmap -sS -p 2000-2007, target drops them (no answers)", a));
    // The sweep marked the source it decided: 8 more ports (closed, not
    // dropped) write no first contact, and their RSTs are not read.
    let contacts = metric(&lab, "scanwatch_reply_first_contacts_total");
    let skipped = metric(&lab, "scanwatch_reply_answers_after_verdict_total");
    nmap(
        &lab,
        "after the sweep's verdict",
        &[
            "-Pn",
            "-sS",
            "--max-retries",
            "0",
            "-p",
            "2008-2015",
            "-e",
            &scanner_if,
            "-S",
            "198.18.0.24",
            TARGET_V4,
        ],
    );
    assert_eq!(
        metric(&lab, "scanwatch_reply_first_contacts_total"),
        contacts,
        "a decided source records no first contact"
    );
    assert!(
        metric(&lab, "scanwatch_reply_answers_after_verdict_total") >= skipped + 8.0,
        "its answers are skipped"
    );

    println!(
        "| scan | detector | first contacts at the verdict (successes / failures) | log-likelihood when alerted |"
    );
    println!("|---|---|---|---|");
    for (what, a) in &rows {
        let r = &a["reply"];
        println!(
            "| `{what}` | {} | {} / {} | {} (boundary {}) |",
            a["detector"],
            r["successes_at_verdict"],
            r["failures_at_verdict"],
            r["log_likelihood"],
            r["threshold"]
        );
    }
    for (what, a) in &rows {
        let r = &a["reply"];
        assert!(
            r["failures_at_verdict"]
                .as_u64()
                .is_some_and(|n| (4..=6).contains(&n)),
            "{what}: flagged after at most 6 failed first contacts: {a}"
        );
        assert!(
            r["log_likelihood"].as_f64() >= r["threshold"].as_f64(),
            "{what}: {a}"
        );
        assert!(
            a["detector"].as_str().is_some_and(|d| d.contains("reply")),
            "{what}: {a}"
        );
    }

    // The legitimate client: never alerted on.
    std::thread::sleep(Duration::from_secs(2));
    let fp: Vec<Value> = lab
        .alerts()
        .into_iter()
        .filter(|a| a["source"] == "198.18.0.30")
        .collect();
    assert!(fp.is_empty(), "false positives: {fp:?}");
    let client = lab.source("198.18.0.30").expect("client tracked");
    assert!(
        client["syn"].as_u64().is_some_and(|n| n >= 10_000),
        "{client}"
    );
    // The metrics (refreshed by the sweep thread): the firewalled scan's 8
    // probes are 8 first contacts (admission is quiet here).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while metric(
        &lab,
        "scanwatch_reply_outcomes_total{outcome=\"no_answer\"}",
    ) < 8.0
    {
        assert!(std::time::Instant::now() < deadline, "reply metrics");
        std::thread::sleep(Duration::from_millis(500));
    }
    let failures = metric(&lab, "scanwatch_reply_outcomes_total{outcome=\"failure\"}");
    let successes = metric(&lab, "scanwatch_reply_outcomes_total{outcome=\"success\"}");
    let contacts = metric(&lab, "scanwatch_reply_first_contacts_total");
    let sent = metric(&lab, "scanwatch_reply_crossings_total{result=\"sent\"}");
    println!(
        "reply metrics: {contacts} first contacts, {successes} successes, {failures} failures, {sent} crossings sent"
    );
    assert!(failures >= 12.0 && successes >= 6.0 && sent >= 3.0);
    assert!(contacts >= failures + successes);
    assert_eq!(metric(&lab, "scanwatch_reply_contact_errors_total"), 0.0);
    assert!(lab.stop_agent(), "agent exits 0 on SIGTERM");
    lab.lab.stop(listener, Duration::from_secs(5));
    let _ = std::fs::remove_file(&config);
}

const METRICS: &str = "198.18.0.2:9478";

/// Sum of the samples of `name` (a prefix) on the agent's /metrics, read
/// from the scanner namespace.
fn metric(lab: &AgentLab, name: &str) -> f64 {
    common::metric_sum(&lab.scrape(METRICS), name)
}
