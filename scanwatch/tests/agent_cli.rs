//! The agent's command line: clear one-line errors and non-zero exits for
//! bad input and missing privileges; clean attach/detach.
//! Needs root (it builds a namespace lab); fails rather than skips without it.

mod common;

use std::process::{Command, Output, Stdio};

use common::{AGENT, AgentLab};
use scanwatch_lab::{netns::Lab, privileged::require_root};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the agent binary in the lab's target namespace.
fn agent_in(lab: &Lab, args: &[&str]) -> Output {
    lab.in_target()
        .arg(AGENT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scanwatch")
}

fn assert_fails_with(o: &Output, code: i32, needle: &str, what: &str) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{what}: exit code; stderr: {err}"
    );
    assert!(
        err.contains(needle),
        "{what}: expected {needle:?} in: {err}"
    );
    assert!(!err.contains("panicked"), "{what}: no panic: {err}");
}

#[test]
fn bad_arguments_are_refused_before_anything_is_attached() {
    if !require_root("bad_arguments_are_refused_before_anything_is_attached") {
        return;
    }
    let lab = Lab::new().expect("lab");
    let pin = format!("/sys/fs/bpf/scanwatch-cli-{}", lab.target_ns);
    let o = agent_in(&lab, &["run", "--iface", "nosuch0", "--pin-dir", &pin]);
    assert_fails_with(&o, 1, "unknown interface \"nosuch0\"", "unknown interface");
    let o = agent_in(
        &lab,
        &["run", "--iface", &lab.target_if, "--map-size", "10"],
    );
    assert_fails_with(&o, 2, "10 is not in 1024..=16777216", "map size too small");
    let o = agent_in(
        &lab,
        &["run", "--iface", &lab.target_if, "--map-size", "99999999"],
    );
    assert_fails_with(&o, 2, "is not in 1024..=16777216", "map size too large");
    let o = agent_in(
        &lab,
        &["run", "--iface", &lab.target_if, "--xdp-mode", "turbo"],
    );
    assert_fails_with(&o, 2, "invalid value 'turbo'", "bad mode");
    let o = agent_in(
        &lab,
        &[
            "run",
            "--iface",
            &lab.target_if,
            "--iface",
            &lab.target_if,
            "--pin-dir",
            &pin,
        ],
    );
    assert_fails_with(&o, 2, "given twice", "duplicate interface");
    // Native XDP on loopback is refused by the kernel; the error says why.
    let o = agent_in(
        &lab,
        &[
            "run",
            "--iface",
            "lo",
            "--xdp-mode",
            "native",
            "--pin-dir",
            &pin,
        ],
    );
    assert_fails_with(
        &o,
        1,
        "cannot attach XDP to lo in native mode",
        "attach refused",
    );
    assert!(
        stderr(&o).contains("not supported"),
        "kernel reason: {}",
        stderr(&o)
    );
    assert!(
        !std::path::Path::new(&pin).join("SOURCES").exists(),
        "no pins left"
    );
    // A pin dir outside bpffs.
    let o = agent_in(
        &lab,
        &[
            "run",
            "--iface",
            &lab.target_if,
            "--pin-dir",
            "/tmp/not-bpffs/x",
        ],
    );
    assert_fails_with(&o, 1, "is not on a bpf filesystem", "pin dir not on bpffs");
    // Bad configuration: exit 2, naming file, line and field; nothing attached.
    let cfg = std::env::temp_dir().join(format!("scanwatch-bad-{}.toml", lab.target_ns));
    std::fs::write(&cfg, "[detection]\nwindow_seconds = 0\n").expect("write config");
    let cfg_s = cfg.to_string_lossy().into_owned();
    let o = agent_in(
        &lab,
        &[
            "run",
            "--iface",
            &lab.target_if,
            "--config",
            &cfg_s,
            "--pin-dir",
            &pin,
        ],
    );
    assert_fails_with(
        &o,
        2,
        &format!(
            "config {cfg_s}: line 2: field `detection.window_seconds`: 0 is out of range 1..=86400"
        ),
        "bad config",
    );
    let _ = std::fs::remove_file(&cfg);
    // An alert log that cannot be written.
    let o = agent_in(
        &lab,
        &[
            "run",
            "--iface",
            &lab.target_if,
            "--alert-log",
            "/proc/nope/alerts.jsonl",
            "--pin-dir",
            &pin,
        ],
    );
    assert_fails_with(
        &o,
        1,
        "alert log /proc/nope/alerts.jsonl",
        "unwritable alert log",
    );
    // No link has an XDP program after all that.
    let links = Command::new("ip")
        .args(["-n", &lab.target_ns, "link", "show"])
        .output()
        .expect("ip link");
    assert!(!String::from_utf8_lossy(&links.stdout).contains("xdp"));
    let _ = std::fs::remove_dir_all(&pin);
}

#[test]
fn unprivileged_user_is_refused() {
    if !require_root("unprivileged_user_is_refused") {
        return;
    }
    let lab = Lab::new().expect("lab");
    for args in [vec!["run", "--iface", lab.target_if.as_str()], vec!["top"]] {
        let o = lab
            .in_target()
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(AGENT)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv");
        assert_fails_with(&o, 1, "needs CAP_BPF", &format!("unprivileged {args:?}"));
    }
}

#[test]
fn second_agent_on_same_pin_dir_is_refused_and_stop_is_clean() {
    if !require_root("second_agent_on_same_pin_dir_is_refused_and_stop_is_clean") {
        return;
    }
    let mut agent = AgentLab::start(&[]);
    let pin = agent.pin_dir.to_string_lossy().into_owned();
    let o = agent_in(&agent.lab, &["run", "--iface", "lo", "--pin-dir", &pin]);
    assert_fails_with(
        &o,
        1,
        "is in use by a running scanwatch agent",
        "pin dir in use",
    );

    let links = |ns: &str| {
        String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-n", ns, "-d", "link", "show"])
                .output()
                .expect("ip link")
                .stdout,
        )
        .into_owned()
    };
    assert!(links(&agent.lab.target_ns).contains("prog/xdp"), "attached");
    // `top` with an empty map prints a table header.
    let out = Command::new(AGENT)
        .args(["top", "--pin-dir", &pin])
        .output()
        .expect("top");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 sources tracked"));

    assert!(agent.stop_agent(), "exit 0 on SIGTERM");
    assert!(
        !links(&agent.lab.target_ns).contains("prog/xdp"),
        "detached on SIGTERM"
    );
    assert_eq!(
        common::pins_left(&agent.pin_dir),
        ["BLOCKS"],
        "pins removed on clean stop, but the blocklist, kept for the next agent"
    );
    let o = Command::new(AGENT)
        .args(["top", "--pin-dir", &pin])
        .output()
        .expect("top");
    assert_fails_with(&o, 1, "no scanwatch maps pinned", "top without an agent");
}

#[test]
fn stale_pins_from_a_killed_agent_are_replaced() {
    if !require_root("stale_pins_from_a_killed_agent_are_replaced") {
        return;
    }
    let mut agent = AgentLab::start(&[]);
    // SIGKILL: no cleanup; the bpf_link goes with the process, the pins stay.
    let pid = agent.agent_pid;
    assert!(agent.lab.kill(pid).is_some(), "agent killed and reaped");
    assert!(
        agent.pin_dir.join("SOURCES").exists(),
        "pins outlive a killed agent"
    );
    // The new agent replaces the stale pins with its own (restart waits for them).
    agent.restart(&[]);
    let pin = agent.pin_dir.to_string_lossy().into_owned();
    let out = Command::new(AGENT)
        .args(["top", "--pin-dir", &pin])
        .output()
        .expect("top");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(agent.stop_agent(), "restarted agent stops cleanly");
}

/// `run` takes everything from the configuration file's [agent] table; its
/// errors name the file, line and field (exit 2), and with no interface
/// anywhere it says where to give one (exit 2), before any privilege check.
#[test]
fn agent_config_errors_exit_2() {
    let dir = std::env::temp_dir().join(format!("scanwatch-agent-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let run_with = |text: &str, extra: &[&str]| {
        let path = dir.join("scanwatch.toml");
        std::fs::write(&path, text).expect("write config");
        Command::new(AGENT)
            .args(["run", "--config"])
            .arg(&path)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run scanwatch")
    };
    let shown = dir.join("scanwatch.toml").display().to_string();
    let o = run_with("[agent]\nmetrics_top = 5000\n", &[]);
    assert_fails_with(
        &o,
        2,
        &format!(
            "config {shown}: line 2: field `agent.metrics_top`: 5000 is out of range 0..=1000"
        ),
        "out of range",
    );
    let o = run_with("[agent]\ninterfaces = [\"eth0\", \"eth0\"]\n", &[]);
    assert_fails_with(&o, 2, "listed twice", "duplicate interface in the file");
    let o = run_with("[agent]\nmetrics_addr = \"nowhere\"\n", &[]);
    assert_fails_with(&o, 2, &format!("config {shown}"), "bad address");
    let o = run_with("[agent]\n", &[]);
    assert_fails_with(
        &o,
        2,
        "no interface to watch: give --iface IF or set `interfaces` in the config's [agent] table",
        "no interface",
    );
    // A flag overrides the file: its interface is the one looked up.
    let o = run_with(
        "[agent]\ninterfaces = [\"eth0\"]\n",
        &["--iface", "nosuch0"],
    );
    assert!(
        stderr(&o).contains("nosuch0") || stderr(&o).contains("needs CAP_"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
