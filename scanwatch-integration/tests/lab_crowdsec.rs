//! scanwatch with a real CrowdSec Local API (Debian's `crowdsec`, started
//! with `-no-cs` from a configuration and SQLite database of the test's own,
//! in the scanner namespace, never talking to the central API): decisions
//! made with `cscli` dropped by two agents and lifted again, a Range
//! decision, never_block, a scan detected by one agent (auto_block) dropped
//! by the other, alerts with their evidence in `cscli alerts list`, the
//! Local API down for 30 s, and a wrong API key. Needs root, nmap, crowdsec.

mod common;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{AgentLab, agent_bin, assert_installed};
use scanwatch_lab::{
    crowdsec::{Crowdsec, LAPI, err, secret},
    netns::{ExtraTarget, TARGET_V4},
    privileged::require_root,
};

/// `update_frequency_seconds` of the agents.
const UPDATE: u64 = 2;
/// A never_block address inside the Range decision's /24.
const NEVER: &str = "198.18.7.70";

/// One TCP connection from `source` to `target`:8080: true if it connected.
fn connects(lab: &AgentLab, source: &str, target: &str) -> bool {
    let script = format!(
        "import socket\ntry:\n    socket.create_connection(('{target}', 8080), timeout=1, source_address=('{source}', 0)).close()\n    print('yes')\nexcept OSError:\n    print('no')\n"
    );
    let out = lab
        .lab
        .in_scanner()
        .args(["python3", "-c", &script])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).contains("yes")
}

/// Waits up to `limit` until `source` can (or cannot) reach `target`;
/// returns the time it took, or `None`.
fn wait_reach(
    lab: &AgentLab,
    source: &str,
    target: &str,
    reach: bool,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if connects(lab, source, target) == reach {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// A web server on `addr`:8080 in a namespace.
fn web(lab: &mut AgentLab, mut cmd: Command, addr: &str) {
    cmd.args(["python3", "-m", "http.server", "8080", "--bind", addr])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.lab.spawn(cmd).expect("web server");
}

/// The `[crowdsec]` table of an agent.
fn crowdsec_table(key: Option<&Path>, machine: Option<(&str, &Path)>) -> String {
    let mut t =
        format!("[crowdsec]\nlapi_url = \"http://{LAPI}\"\nupdate_frequency_seconds = {UPDATE}\n");
    if let Some(k) = key {
        t.push_str(&format!("api_key_file = \"{}\"\n", k.display()));
    }
    if let Some((id, p)) = machine {
        t.push_str(&format!(
            "machine_id = \"{id}\"\npassword_file = \"{}\"\n",
            p.display()
        ));
    }
    t
}

/// The lab, a Local API, and scanner addresses 198.18.0.11, .21 and
/// 198.18.7.5, .200, .70 (routed to the target).
fn lab_with_crowdsec() -> (AgentLab, Crowdsec, PathBuf) {
    lab_with_crowdsec_logged(false)
}

fn lab_with_crowdsec_logged(logged: bool) -> (AgentLab, Crowdsec, PathBuf) {
    assert_installed(&["crowdsec", "cscli", "nmap", "python3", "curl", "promtool"]);
    let mut lab = if logged {
        AgentLab::prepare_logged()
    } else {
        AgentLab::prepare()
    };
    let dir = lab
        .alert_log
        .parent()
        .expect("the lab's temp dir")
        .to_path_buf();
    std::fs::create_dir_all(&dir).expect("dir");
    for a in [
        "198.18.0.11/24",
        "198.18.0.21/24",
        "198.18.7.5/24",
        "198.18.7.200/24",
        "198.18.7.70/24",
    ] {
        lab.lab.add_scanner_address(a).expect("address");
    }
    let route = lab
        .lab
        .in_target()
        .args(["ip", "route", "add", "198.18.7.0/24", "via", "198.18.0.1"])
        .status()
        .expect("ip route");
    assert!(route.success());
    let cs = Crowdsec::start(&mut lab.lab, &dir.join("crowdsec"));
    (lab, cs, dir)
}

/// A second agent, in its own target namespace.
struct Agent2 {
    target: ExtraTarget,
    socket: PathBuf,
}

impl Agent2 {
    fn start(lab: &mut AgentLab, config: &Path) -> Self {
        let target = lab
            .lab
            .add_target(1, &["198.18.7.0/24"])
            .expect("second target");
        let dir = std::env::temp_dir().join(format!("scanwatch-test-{}", target.ns));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("control.sock");
        let mut cmd = target.command();
        cmd.arg(agent_bin())
            .args(["run", "--iface", &target.target_if, "--interval", "1"])
            .arg("--pin-dir")
            .arg(format!("/sys/fs/bpf/scanwatch-test-{}", target.ns))
            .arg("--alert-log")
            .arg(dir.join("alerts.jsonl"))
            .arg("--control-socket")
            .arg(&socket)
            .arg("--evidence-dir")
            .arg(dir.join("evidence"))
            .arg("--metrics-addr")
            .arg(format!("{}:9477", target.target_v4))
            .arg("--config")
            .arg(config);
        lab.lab.spawn(cmd).expect("second agent");
        let me = Self { target, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.ctl(&["status"]).status.success() {
            assert!(Instant::now() < deadline, "agent 2 not ready after 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        web(lab, me.target.command(), &me.target.target_v4.clone());
        me
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(agent_bin())
            .args(args)
            .arg("--control-socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .expect("scanwatch control command")
    }
}

impl Drop for Agent2 {
    fn drop(&mut self) {
        // The lab kills the agent and deletes the namespace.
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/scanwatch-test-{}", self.target.ns));
        if let Some(dir) = self.socket.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A SYN scan of 200 ports of the target from `source` (one probe a port).
fn syn_scan(lab: &AgentLab, source: &str) {
    let scanner_if = lab.lab.scanner_if.clone();
    lab.scan(&[
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
}

fn status(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "status: {}", err(o));
    serde_json::from_slice(&o.stdout).expect("status JSON")
}

fn metric(lab: &AgentLab, name: &str) -> f64 {
    common::metric_sum(&lab.scrape("198.18.0.2:9477"), name)
}

/// Both agents as bouncers: `cscli decisions add` drops, `delete` lifts,
/// a Range decision covers its /24, never_block is never dropped, and an
/// agent's own manual block is not lifted by CrowdSec (nor the reverse).
#[test]
fn lapi_decisions_are_enforced_by_both_agents() {
    if !require_root("lapi_decisions_are_enforced_by_both_agents") {
        return;
    }
    let (mut lab, cs, dir) = lab_with_crowdsec();
    let limit = Duration::from_secs(UPDATE + 5);
    let mut agents = Vec::new();
    for n in 1..=2 {
        let key = cs.bouncer(&lab.lab, &format!("agent{n}"));
        let config = dir.join(format!("agent{n}.toml"));
        std::fs::write(
            &config,
            format!(
                "[mitigation]\nnever_block = [\"{NEVER}/32\"]\n\n{}",
                crowdsec_table(Some(&key), None)
            ),
        )
        .expect("config");
        agents.push(config);
    }
    lab.restart(&[
        "--config",
        &agents[0].to_string_lossy(),
        "--metrics-addr",
        "198.18.0.2:9477",
    ]);
    let cmd = lab.lab.in_target();
    web(&mut lab, cmd, TARGET_V4);
    let agent2 = Agent2::start(&mut lab, &agents[1]);
    let t2 = agent2.target.target_v4.clone();
    let targets = [TARGET_V4, t2.as_str()];
    for t in targets {
        for s in ["198.18.0.21", "198.18.7.5", NEVER] {
            assert!(
                wait_reach(&lab, s, t, true, limit).is_some(),
                "{s} reaches {t} before any decision"
            );
        }
    }

    // An Ip decision: dropped by both within update_frequency + 5 s.
    cs.decisions(
        &lab.lab,
        &["add", "--ip", "198.18.0.21", "--duration", "1m"],
    );
    for t in targets {
        let took = wait_reach(&lab, "198.18.0.21", t, false, limit);
        assert!(took.is_some(), "198.18.0.21 dropped at {t}");
        eprintln!("decision add -> dropped at {t}: {took:?}");
    }
    assert!(connects(&lab, "198.18.0.1", TARGET_V4), "others pass");
    let rows = String::from_utf8_lossy(&lab.ctl(&["blocks"]).stdout).into_owned();
    assert!(
        rows.contains("198.18.0.21/32") && rows.contains("crowdsec"),
        "{rows}"
    );
    // The agent's own unblock does not lift CrowdSec's decision.
    let o = lab.ctl(&["unblock", "198.18.0.21"]);
    assert!(
        !o.status.success() && err(&o).contains("CrowdSec decision only"),
        "{}",
        err(&o)
    );
    assert!(!connects(&lab, "198.18.0.21", TARGET_V4), "still dropped");
    // A manual block of the same address survives the decision's deletion.
    let o = lab.ctl(&["block", "198.18.0.21", "--ttl", "1h"]);
    assert!(o.status.success(), "{}", err(&o));
    cs.decisions(&lab.lab, &["delete", "--ip", "198.18.0.21"]);
    assert!(
        wait_reach(&lab, "198.18.0.21", &t2, true, limit).is_some(),
        "delete: passes again at agent 2"
    );
    std::thread::sleep(Duration::from_secs(UPDATE + 1));
    assert!(
        !connects(&lab, "198.18.0.21", TARGET_V4),
        "agent 1's manual block stays"
    );
    assert!(lab.ctl(&["unblock", "198.18.0.21"]).status.success());
    assert!(
        connects(&lab, "198.18.0.21", TARGET_V4),
        "manual block lifted"
    );

    // A Range decision: the whole /24 but never_block.
    cs.decisions(
        &lab.lab,
        &["add", "--range", "198.18.7.0/24", "--duration", "1m"],
    );
    for t in targets {
        assert!(
            wait_reach(&lab, "198.18.7.5", t, false, limit).is_some(),
            "198.18.7.5 dropped at {t}"
        );
        assert!(!connects(&lab, "198.18.7.200", t), "198.18.7.200 at {t}");
        assert!(connects(&lab, NEVER, t), "never_block passes at {t}");
    }
    // An Ip decision on the never_block address: never dropped.
    cs.decisions(&lab.lab, &["add", "--ip", NEVER, "--duration", "1m"]);
    std::thread::sleep(Duration::from_secs(UPDATE + 2));
    for t in targets {
        assert!(connects(&lab, NEVER, t), "never_block passes at {t}");
    }
    let text = lab.scrape("198.18.0.2:9477");
    assert_eq!(
        common::metric_sum(
            &text,
            "scanwatch_crowdsec_decisions_skipped_total{reason=\"never_block\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        common::metric_sum(
            &text,
            "scanwatch_crowdsec_decisions_active{origin=\"cscli\"}"
        ),
        1.0,
        "the range"
    );
    assert!(common::metric_sum(&text, "scanwatch_crowdsec_pulls_total{result=\"ok\"}") >= 2.0);
    assert!(
        common::metric_sum(
            &text,
            "scanwatch_crowdsec_last_pull_success_timestamp_seconds"
        ) > 1.0e9
    );

    // Agent 1 restarts while the decisions change: the kept blocklist
    // drops at once, and its first (startup) pull reconciles it.
    assert!(lab.stop_agent(), "agent 1 stops cleanly");
    cs.decisions(&lab.lab, &["delete", "--range", "198.18.7.0/24"]);
    cs.decisions(
        &lab.lab,
        &["add", "--ip", "198.18.0.21", "--duration", "1m"],
    );
    lab.restart(&[
        "--config",
        &agents[0].to_string_lossy(),
        "--metrics-addr",
        "198.18.0.2:9477",
    ]);
    for t in targets {
        assert!(
            wait_reach(&lab, "198.18.7.5", t, true, limit).is_some(),
            "range deleted: passes at {t}"
        );
        assert!(
            wait_reach(&lab, "198.18.0.21", t, false, limit).is_some(),
            "new decision: dropped at {t}"
        );
    }
    let text = lab.scrape("198.18.0.2:9477");
    assert_eq!(
        common::metric_sum(
            &text,
            "scanwatch_crowdsec_decisions_active{origin=\"cscli\"}"
        ),
        1.0,
        "the new decision only: {text}"
    );
    assert_eq!(common::metric_sum(&text, "scanwatch_blocked_sources"), 1.0);
    let rows = String::from_utf8_lossy(&lab.ctl(&["blocks"]).stdout).into_owned();
    assert!(!rows.contains("198.18.7.0/24"), "{rows}");
    let s = status(&agent2.ctl(&["status"]));
    assert!(s["crowdsec"]["bouncer"]["last_error"].is_null(), "{s}");
}

/// Agent 1 detects an nmap scan and blocks it (auto_block); its alert,
/// with the evidence and a ban decision, reaches the Local API, and agent 2
/// drops the scanner within update_frequency + 5 s.
#[test]
fn a_scan_blocked_by_one_agent_is_dropped_by_the_other() {
    if !require_root("a_scan_blocked_by_one_agent_is_dropped_by_the_other") {
        return;
    }
    let (mut lab, cs, dir) = lab_with_crowdsec();
    let password = cs.machine(&lab.lab, "edge1");
    let key1 = cs.bouncer(&lab.lab, "edge1");
    let key2 = cs.bouncer(&lab.lab, "edge2");
    let c1 = dir.join("agent1.toml");
    std::fs::write(
        &c1,
        format!(
            "[mitigation]\nauto_block = true\n\n{}",
            crowdsec_table(Some(&key1), Some(("edge1", &password)))
        ),
    )
    .expect("config");
    let c2 = dir.join("agent2.toml");
    std::fs::write(&c2, crowdsec_table(Some(&key2), None)).expect("config");
    lab.restart(&[
        "--config",
        &c1.to_string_lossy(),
        "--metrics-addr",
        "198.18.0.2:9477",
    ]);
    let agent2 = Agent2::start(&mut lab, &c2);
    let t2 = agent2.target.target_v4.clone();
    assert!(
        wait_reach(&lab, "198.18.0.11", &t2, true, Duration::from_secs(5)).is_some(),
        "the scanner reaches agent 2's host before"
    );
    syn_scan(&lab, "198.18.0.11");
    let alert = lab
        .wait_alert("198.18.0.11", Duration::from_secs(10))
        .expect("agent 1 alerts");
    assert_eq!(alert["action"], "blocked", "{alert}");
    let took = wait_reach(
        &lab,
        "198.18.0.11",
        &t2,
        false,
        Duration::from_secs(UPDATE + 5),
    );
    eprintln!("agent 1's alert -> dropped by agent 2 after {took:?}");
    assert!(took.is_some(), "agent 2 drops the scanner");
    assert!(connects(&lab, "198.18.0.1", &t2), "others pass agent 2");

    let alerts: Vec<serde_json::Value> = cs
        .alerts(&lab.lab, &[])
        .into_iter()
        .filter(|a| {
            a["scenario"]
                .as_str()
                .is_some_and(|s| s.starts_with("scanwatch/"))
        })
        .collect();
    assert_eq!(alerts.len(), 1, "one alert, pushed once: {alerts:?}");
    let a = &alerts[0];
    let types: Vec<String> = common::scan_types(&alert);
    assert_eq!(a["scenario"], format!("scanwatch/{}", types[0]), "{a}");
    assert_eq!(a["source"]["value"], "198.18.0.11", "{a}");
    assert_eq!(a["machine_id"], "edge1", "{a}");
    let meta = |k: &str| {
        a["meta"]
            .as_array()
            .and_then(|m| m.iter().find(|e| e["key"] == k))
            .and_then(|e| e["value"].as_str())
            .map(str::to_string)
    };
    assert_eq!(
        meta("distinct_ports"),
        Some(alert["distinct_ports"].to_string()),
        "{a}"
    );
    assert_eq!(
        meta("total_probes"),
        Some(alert["total_probes"].to_string()),
        "{a}"
    );
    assert_eq!(meta("action").as_deref(), Some("blocked"), "{a}");
    let d = &a["decisions"][0];
    assert_eq!(
        (d["type"].as_str(), d["scope"].as_str()),
        (Some("ban"), Some("Ip")),
        "{a}"
    );
    assert_eq!(d["origin"], "crowdsec", "{a}");
    let text = lab.scrape("198.18.0.2:9477");
    assert_eq!(
        common::metric_sum(&text, "scanwatch_crowdsec_alerts_pushed_total"),
        1.0,
        "{text}"
    );
    // The bouncer's and the machine's metrics pass promtool's checks.
    common::assert_promtool_clean(&text);
}

/// The Local API stopped for 30 s: blocks stay, the alert of a scan in
/// the meantime waits in the queue and is pushed once when it is back;
/// then a wrong API key: a clear error in the log, `status` and metrics.
#[test]
fn lapi_outage_and_a_wrong_api_key() {
    if !require_root("lapi_outage_and_a_wrong_api_key") {
        return;
    }
    let (mut lab, mut cs, dir) = lab_with_crowdsec_logged(true);
    let password = cs.machine(&lab.lab, "edge1");
    let key = cs.bouncer(&lab.lab, "edge1");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[mitigation]\nauto_block = true\n\n{}",
            crowdsec_table(Some(&key), Some(("edge1", &password)))
        ),
    )
    .expect("config");
    let config_s = config.to_string_lossy().into_owned();
    lab.restart(&["--config", &config_s, "--metrics-addr", "198.18.0.2:9477"]);
    let cmd = lab.lab.in_target();
    web(&mut lab, cmd, TARGET_V4);
    let limit = Duration::from_secs(UPDATE + 5);
    cs.decisions(
        &lab.lab,
        &["add", "--ip", "198.18.0.21", "--duration", "5m"],
    );
    assert!(wait_reach(&lab, "198.18.0.21", TARGET_V4, false, limit).is_some());

    // A first alert: the machine logs in and pushes it.
    syn_scan(&lab, "198.18.7.5");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&lab, "scanwatch_crowdsec_alerts_pushed_total") < 1.0 {
        assert!(Instant::now() < deadline, "first alert not pushed");
        std::thread::sleep(Duration::from_millis(200));
    }

    cs.stop(&mut lab.lab);
    let down = Instant::now();
    syn_scan(&lab, "198.18.0.11");
    lab.wait_alert("198.18.0.11", Duration::from_secs(10))
        .expect("alert while the Local API is down");
    while down.elapsed() < Duration::from_secs(30) {
        assert!(
            !connects(&lab, "198.18.0.21", TARGET_V4),
            "the decision stays enforced at {:?}",
            down.elapsed()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // Retries back off (2, 4, 8, 16 s...), and each side logs the outage once.
    let text = lab.scrape("198.18.0.2:9477");
    let unreachable = common::metric_sum(
        &text,
        "scanwatch_crowdsec_pulls_total{result=\"unreachable\"}",
    );
    assert!(
        (3.0..=6.0).contains(&unreachable),
        "{unreachable} failed pulls in 30 s"
    );
    let log = lab.log_text();
    let errors = |what: &str| {
        log.lines()
            .filter(|l| l.contains("ERROR") && l.contains(what) && l.contains("Connection refused"))
            .count()
    };
    assert_eq!(errors("crowdsec::bouncer"), 1, "{log}");
    assert_eq!(errors("crowdsec::machine"), 1, "{log}");
    assert_eq!(
        common::metric_sum(&text, "scanwatch_crowdsec_alerts_queued"),
        1.0,
        "{text}"
    );
    assert!(
        common::metric_sum(
            &text,
            "scanwatch_crowdsec_pulls_total{result=\"unreachable\"}"
        ) >= 1.0
    );
    let s = status(&lab.ctl(&["status"]));
    assert!(
        s["crowdsec"]["bouncer"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(LAPI)),
        "{s}"
    );

    cs.launch(&mut lab.lab);
    // Retries back off to at most a minute: the next one may come up to a
    // minute after the LAPI is back (and one more if that one meets the
    // LAPI still starting, as on a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(130);
    while metric(&lab, "scanwatch_crowdsec_alerts_pushed_total") < 2.0 {
        assert!(Instant::now() < deadline, "queued alert not pushed");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(UPDATE + 1));
    let pushed: Vec<serde_json::Value> = cs
        .alerts(&lab.lab, &["--ip", "198.18.0.11"])
        .into_iter()
        .filter(|a| {
            a["scenario"]
                .as_str()
                .is_some_and(|s| s.starts_with("scanwatch/"))
        })
        .collect();
    assert_eq!(pushed.len(), 1, "pushed once: {pushed:?}");
    // The restarted Local API signs tokens with a new secret: the old token
    // is refused (401) and the machine logs in again.
    let logins = lab
        .log_text()
        .lines()
        .filter(|l| l.contains("logged in as machine edge1"))
        .count();
    assert_eq!(logins, 2, "{}", lab.log_text());
    assert_eq!(metric(&lab, "scanwatch_crowdsec_alerts_queued"), 0.0);
    assert!(!connects(&lab, "198.18.0.21", TARGET_V4), "still enforced");

    // A wrong API key: the agent runs, and says why it cannot pull.
    assert!(lab.stop_agent(), "agent stops cleanly");
    secret(&key, "0123456789abcdef0123456789abcdef");
    lab.restart(&["--config", &config_s, "--metrics-addr", "198.18.0.2:9477"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(&lab.ctl(&["status"]));
        let e = s["crowdsec"]["bouncer"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if e.contains("refused the bouncer's API key") {
            assert!(e.contains("api_key_file"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "no API key error in status: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        metric(
            &lab,
            "scanwatch_crowdsec_pulls_total{result=\"unauthorized\"}"
        ) >= 1.0
    );
    // A key file others can read: refused at start, exit status 2.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(lab.stop_agent());
    let o = lab
        .lab
        .in_target()
        .arg(agent_bin())
        .args([
            "run",
            "--iface",
            &lab.lab.target_if.clone(),
            "--config",
            &config_s,
        ])
        .output()
        .expect("scanwatch run");
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("lets others read it"), "{}", err(&o));
}
