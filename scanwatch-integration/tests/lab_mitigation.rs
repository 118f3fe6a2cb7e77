//! Mitigation end to end in the namespace lab: a real nmap scan detected
//! and blocked (and then dropped), an innocent client unaffected, a
//! never_block scanner alerted but not dropped, feeds with bad lines and a
//! SIGHUP reload, the root-only control socket, blocks kept across a
//! restart, and dry run. Needs root and nmap.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{AgentLab, agent_bin};
use scanwatch_lab::{netns::TARGET_V4, privileged::require_root};

const WAIT: Duration = Duration::from_secs(10);

fn nmap_syn(lab: &AgentLab, source: &str) -> String {
    let scanner_if = lab.lab.scanner_if.clone();
    let out = lab.scan(&[
        "nmap",
        "-n",
        "-Pn",
        "-sS",
        "--max-retries",
        "0",
        "-p",
        "1-200",
        "-e",
        &scanner_if,
        "-S",
        source,
        TARGET_V4,
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One TCP connection attempt to an open port, from `source`: true if it connected.
fn connects(lab: &AgentLab, source: &str) -> bool {
    let script = format!(
        "import socket\ntry:\n    socket.create_connection(('198.18.0.2', 8080), timeout=2, source_address=('{source}', 0)).close()\n    print('yes')\nexcept OSError:\n    print('no')\n"
    );
    let out = lab
        .lab
        .in_scanner()
        .args(["python3", "-c", &script])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).contains("yes")
}

fn metric(lab: &AgentLab, name: &str) -> f64 {
    common::metric_sum(&lab.scrape("198.18.0.2:9477"), name)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn scans_are_blocked_and_dropped_others_are_not() {
    if !require_root("scans_are_blocked_and_dropped_others_are_not") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("scanwatch-mitigation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let feed = dir.join("lab.netset");
    std::fs::write(
        &feed,
        "# lab feed\n198.18.0.90/32\nnot-a-network\n198.18.0.999\n",
    )
    .expect("feed");
    let watch = dir.join("watch.txt");
    std::fs::write(&watch, "198.18.0.95\n").expect("feed");
    let config = dir.join("scanwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[mitigation]\nauto_block = true\nnever_block = [\"198.18.0.70/32\"]\n\n\
             [[feeds]]\nname = \"lab\"\npath = \"{}\"\naction = \"drop\"\n\n\
             [[feeds]]\nname = \"watch\"\npath = \"{}\"\naction = \"tag\"\n",
            feed.display(),
            watch.display()
        ),
    )
    .expect("config");
    let config_s = config.to_string_lossy().into_owned();
    let mut lab = AgentLab::start(&["--config", &config_s, "--metrics-addr", "198.18.0.2:9477"]);
    for a in [
        "198.18.0.11/24",
        "198.18.0.70/24",
        "198.18.0.80/24",
        "198.18.0.90/24",
        "198.18.0.95/24",
    ] {
        lab.lab.add_scanner_address(a).expect("address");
    }
    // A web server the innocent client uses.
    let mut web = lab.lab.in_target();
    web.args(["python3", "-m", "http.server", "8080", "--bind", TARGET_V4])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let web = lab.lab.spawn(web).expect("web server");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        connects(&lab, "198.18.0.1"),
        "the innocent client connects before"
    );

    // The feed: bad lines skipped and counted; its address is dropped.
    assert_eq!(
        metric(&lab, "scanwatch_feed_invalid_lines_total{feed=\"lab\"}"),
        2.0
    );
    assert_eq!(metric(&lab, "scanwatch_feed_entries{feed=\"lab\"}"), 1.0);
    assert!(
        !connects(&lab, "198.18.0.90"),
        "a drop-feed source is dropped"
    );

    // A source in a tag feed: known_bad in the alert and in top.
    nmap_syn(&lab, "198.18.0.95");
    let alert = lab.wait_alert("198.18.0.95", WAIT).expect("alert");
    assert_eq!(alert["known_bad"], "watch", "{alert}");
    assert_eq!(
        lab.source("198.18.0.95").expect("top")["known_bad"],
        "watch"
    );

    // A scan: detected, blocked; the next scan sees nothing but filtered ports.
    let first = nmap_syn(&lab, "198.18.0.11");
    assert!(first.contains("closed"), "{first}");
    let alert = lab.wait_alert("198.18.0.11", WAIT).expect("alert");
    assert_eq!(alert["action"], "blocked", "{alert}");
    assert!(alert["block_expires"].as_str().is_some(), "{alert}");
    let dropped_before = metric(&lab, "scanwatch_dropped_packets_total{interface=");
    let second = nmap_syn(&lab, "198.18.0.11");
    assert!(
        second.contains("200 filtered tcp ports") || second.contains("are filtered"),
        "blocked scanner sees filtered ports:\n{second}"
    );
    let dropped_after = metric(&lab, "scanwatch_dropped_packets_total{interface=");
    assert!(
        dropped_after >= dropped_before + 200.0,
        "drops {dropped_before} -> {dropped_after}"
    );
    assert!(
        connects(&lab, "198.18.0.1"),
        "the innocent client is unaffected"
    );
    assert_eq!(
        metric(&lab, "scanwatch_blocked_sources"),
        2.0,
        "the two scanners (.95 and .11)"
    );

    // never_block: alerted, not dropped; a manual block is refused.
    nmap_syn(&lab, "198.18.0.70");
    let alert = lab.wait_alert("198.18.0.70", WAIT).expect("alert");
    assert_eq!(alert["action"], "none", "{alert}");
    assert_eq!(alert["not_blocked"], "never_block", "{alert}");
    let again = nmap_syn(&lab, "198.18.0.70");
    assert!(
        again.contains("closed"),
        "never_block source not dropped:\n{again}"
    );
    let o = lab.ctl(&["block", "198.18.0.70"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o)
            .contains("198.18.0.70/32 is in never_block (198.18.0.70/32): it is never blocked"),
        "{}",
        stderr(&o)
    );
    let o = lab.ctl(&["block", "198.18.0.64/27"]);
    assert!(
        stderr(&o).contains("never_block"),
        "a network holding a never_block address: {}",
        stderr(&o)
    );

    // Manual block and the listing.
    let o = lab.ctl(&[
        "block",
        "198.18.0.80",
        "--ttl",
        "1h",
        "--reason",
        "lab test",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!connects(&lab, "198.18.0.80"), "manually blocked");
    let o = lab.ctl(&["blocks", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("blocks JSON");
    let row = |t: &str| {
        rows.as_array()
            .and_then(|a| a.iter().find(|r| r["target"] == t).cloned())
    };
    let manual = row("198.18.0.80/32").expect("manual block listed");
    assert_eq!(manual["origin"], "manual");
    assert_eq!(manual["reason"], "lab test");
    assert!(
        manual["remaining_seconds"]
            .as_u64()
            .is_some_and(|s| (3590..=3600).contains(&s))
    );
    let detected = row("198.18.0.11/32").expect("detection block listed");
    assert_eq!(detected["origin"], "detection");
    // The types of the alert that blocked it: both thresholds cross within
    // milliseconds, and the first alert (held for
    // first_alert_hold_milliseconds) names both; the block is made once,
    // with that alert.
    assert_eq!(detected["reason"], "port_scan+reply_scan", "{detected}");
    assert_eq!(detected["offenses"], 1, "{detected}");
    let alerts: Vec<serde_json::Value> = lab
        .alerts()
        .into_iter()
        .filter(|a| common::is_source(&a["source"], "198.18.0.11"))
        .collect();
    assert_eq!(alerts.len(), 1, "one alert for the scan: {alerts:?}");

    // Feed reload on SIGHUP changes matching: .90 leaves the feed, the
    // network 198.18.0.96/29 (with .97) comes in; blocks survive.
    lab.lab
        .add_scanner_address("198.18.0.97/24")
        .expect("address");
    assert!(connects(&lab, "198.18.0.97"));
    std::fs::write(&feed, "198.18.0.96/29\n").expect("feed");
    let pid = lab.agent_pid.to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(connects(&lab, "198.18.0.90"), "no longer in the feed");
    assert!(
        !connects(&lab, "198.18.0.97"),
        "in the reloaded feed's network"
    );
    assert_eq!(metric(&lab, "scanwatch_feed_entries{feed=\"lab\"}"), 1.0);
    assert_eq!(
        metric(&lab, "scanwatch_feed_invalid_lines_total{feed=\"lab\"}"),
        2.0,
        "no new bad lines"
    );
    assert!(
        !connects(&lab, "198.18.0.80"),
        "blocks survive a feed reload"
    );

    // The control socket is root-only: a real unprivileged account is refused.
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(agent_bin())
        .args(["blocks", "--control-socket"])
        .arg(&lab.control_socket)
        .output()
        .expect("setpriv");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is root-only"), "{}", stderr(&o));

    // Restart: blocks and their expiries are kept.
    let before = lab.ctl(&["blocks", "--json"]);
    assert!(lab.stop_agent(), "clean stop");
    assert_eq!(common::pins_left(&lab.pin_dir), ["BLOCKS"]);
    lab.restart(&["--config", &config_s, "--metrics-addr", "198.18.0.2:9477"]);
    let after = lab.ctl(&["blocks", "--json"]);
    let b: serde_json::Value = serde_json::from_slice(&before.stdout).expect("json");
    let a: serde_json::Value = serde_json::from_slice(&after.stdout).expect("json");
    let targets = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["target"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(targets(&a), targets(&b), "blocks kept across the restart");
    assert!(
        !connects(&lab, "198.18.0.80"),
        "still dropped after the restart"
    );
    assert!(connects(&lab, "198.18.0.1"));
    // Unblock.
    assert!(lab.ctl(&["unblock", "198.18.0.80"]).status.success());
    assert!(connects(&lab, "198.18.0.80"), "unblocked");
    assert!(lab.stop_agent());
    lab.lab.stop(web, Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dry_run_drops_nothing() {
    if !require_root("dry_run_drops_nothing") {
        return;
    }
    let config = std::env::temp_dir().join(format!("scanwatch-dryrun-{}.toml", std::process::id()));
    std::fs::write(&config, "[mitigation]\nauto_block = true\ndry_run = true\n").expect("config");
    let config_s = config.to_string_lossy().into_owned();
    let mut lab = AgentLab::start(&["--config", &config_s]);
    lab.lab
        .add_scanner_address("198.18.0.11/24")
        .expect("address");
    nmap_syn(&lab, "198.18.0.11");
    let alert = lab.wait_alert("198.18.0.11", WAIT).expect("alert");
    assert_eq!(alert["action"], "would_block", "{alert}");
    assert!(alert["block_expires"].as_str().is_some());
    let again = nmap_syn(&lab, "198.18.0.11");
    assert!(again.contains("closed"), "dry run drops nothing:\n{again}");
    let o = lab.ctl(&["blocks", "--json"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
    assert!(lab.stop_agent());
    let _ = std::fs::remove_file(&config);
}
