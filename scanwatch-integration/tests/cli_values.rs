//! Bad command-line values, run through the real binary: a clear one-line
//! message naming the value, no panic, exit 2 for usage errors, and nothing
//! attached or pinned. (More run-time refusals: `agent_cli.rs`.)
//! The `run` cases need root (they get past the privilege check, in a lab
//! namespace of their own); fails rather than skips without it.

mod common;

use std::process::{Command, Stdio};

use common::agent_bin;
use scanwatch_lab::{netns::Lab, privileged::require_root, refusal::refused};

/// `run` values only the agent can check (interfaces exist in this network
/// namespace, URLs, addresses to bind): refused before anything is attached.
#[test]
fn run_time_values_are_refused_and_nothing_is_attached() {
    if !require_root("run_time_values_are_refused_and_nothing_is_attached") {
        return;
    }
    let lab = Lab::new().expect("lab");
    let pin = format!("/sys/fs/bpf/scanwatch-cli-values-{}", lab.target_ns);
    let scratch = std::env::temp_dir().join(format!("scanwatch-cli-values-{}", lab.target_ns));
    let log = scratch.join("alerts.jsonl").to_string_lossy().into_owned();
    let sock = scratch.join("control.sock").to_string_lossy().into_owned();
    let iface = lab.target_if.clone();
    let long = "x".repeat(16);
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (
            vec!["--iface", "nosuch0"],
            2,
            "unknown interface \"nosuch0\"".into(),
        ),
        (vec!["--iface", ""], 2, "unknown interface \"\"".into()),
        (
            vec!["--iface", &long],
            2,
            format!("unknown interface \"{long}\""),
        ),
        (
            vec!["--iface", "eth0/x"],
            2,
            "unknown interface \"eth0/x\"".into(),
        ),
        (
            vec!["--iface", &iface, "--iface", "nosuch1"],
            2,
            "unknown interface \"nosuch1\"".into(),
        ),
        (
            vec!["--iface", &iface, "--alertmanager-url", "localhost:9093"],
            2,
            "--alertmanager-url \"localhost:9093\": expected http://HOST:PORT".into(),
        ),
        (
            vec!["--iface", &iface, "--alertmanager-url", "https://am:9093"],
            2,
            "https is not supported".into(),
        ),
        (
            vec!["--iface", &iface, "--alertmanager-url", "http://am:99999"],
            2,
            "--alertmanager-url \"http://am:99999\"".into(),
        ),
        // Well-formed but unusable here: run-time errors (exit 1), still clear.
        (
            vec!["--iface", &iface, "--metrics-addr", "192.0.2.1:9477"],
            1,
            "cannot listen for metrics on 192.0.2.1:9477".into(),
        ),
        (
            vec!["--iface", &iface, "--config", "/nonexistent/scanwatch.toml"],
            2,
            "cannot read config /nonexistent/scanwatch.toml".into(),
        ),
    ];
    let mut failures = Vec::new();
    for (extra, code, needle) in &cases {
        let mut args = vec!["run"];
        args.extend(extra.iter().copied());
        args.extend([
            "--pin-dir",
            &pin,
            "--alert-log",
            &log,
            "--control-socket",
            &sock,
        ]);
        let o = lab
            .in_target()
            .arg(agent_bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run scanwatch");
        failures.extend(refused(&o, *code, needle, &args));
    }
    // A control socket path that cannot be created (after the attach:
    // the error detaches again).
    let args = [
        "run",
        "--iface",
        &iface,
        "--pin-dir",
        &pin,
        "--alert-log",
        &log,
        "--control-socket",
        "/proc/scanwatch/control.sock",
    ];
    let o = lab
        .in_target()
        .arg(agent_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scanwatch");
    failures.extend(refused(
        &o,
        1,
        "control socket /proc/scanwatch/control.sock",
        &args,
    ));
    let links = Command::new("ip")
        .args(["-n", &lab.target_ns, "-d", "link", "show"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    let pins = common::pins_left(std::path::Path::new(&pin));
    let _ = std::fs::remove_dir_all(&pin);
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(!links.contains("xdp"), "nothing attached: {links}");
    assert!(
        pins.iter().all(|p| p == "BLOCKS"),
        "no pins but the kept blocklist: {pins:?}"
    );
}
