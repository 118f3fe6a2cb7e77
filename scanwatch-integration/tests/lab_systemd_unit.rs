//! The agent as the packaged systemd unit runs it: only the unit's
//! capabilities (through `setpriv`), everything from the configuration file
//! (`scanwatch run --config FILE`), readiness and stop notified on
//! `$NOTIFY_SOCKET`, journal-style log lines; it detects a real nmap scan. With
//! any one of the capabilities missing it refuses to start, naming it.
//! Needs root (namespace lab, XDP) and nmap; fails rather than skips without them.

mod common;

use std::{os::unix::net::UnixDatagram, path::Path, process::Stdio, time::Duration};

use common::{AgentLab, agent_bin};
use scanwatch_lab::{
    netns::{Lab, SCANNER_V4, TARGET_V4},
    privileged::require_root,
};

const METRICS_PORT: u16 = 9477;

/// A configuration that sets every path and address the agent uses
/// (the lab's own), so the command line is only `run --config FILE`.
fn write_config(lab: &AgentLab, iface: &str) -> std::path::PathBuf {
    let dir = lab.alert_log.parent().expect("alert log dir");
    std::fs::create_dir_all(dir).expect("create the test dir");
    let path = dir.join("scanwatch.toml");
    let text = format!(
        "[agent]\n\
         interfaces = [\"{iface}\"]\n\
         pin_dir = \"{}\"\n\
         alert_log = \"{}\"\n\
         control_socket = \"{}\"\n\
         metrics_addr = \"{TARGET_V4}:{METRICS_PORT}\"\n\
         summary_interval_seconds = 1\n\
         [evidence]\n\
         directory = \"{}\"\n",
        lab.pin_dir.display(),
        lab.alert_log.display(),
        lab.control_socket.display(),
        lab.evidence_dir().display()
    );
    std::fs::write(&path, text).expect("write the config");
    path
}

/// The next notification datagram, or a failure after `timeout`.
fn next_notification(sock: &UnixDatagram, timeout: Duration) -> String {
    sock.set_read_timeout(Some(timeout)).expect("timeout");
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification within {timeout:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn effective_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agent status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff line");
    u64::from_str_radix(hex.trim(), 16).expect("hex mask")
}

#[test]
fn agent_with_only_the_units_capabilities_runs_from_its_config_and_detects_nmap() {
    if !require_root("agent_with_only_the_units_capabilities_runs_from_its_config_and_detects_nmap")
    {
        return;
    }
    common::assert_installed(&["nmap", "setpriv", "prlimit", "curl"]);
    let caps = common::unit_capabilities();
    let mut lab = AgentLab::prepare();
    let iface = lab.lab.target_if.clone();
    let config = write_config(&lab, &iface);
    let dir = config.parent().expect("dir").to_path_buf();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let stderr_path = dir.join("agent.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");

    // As the unit starts it: `run --config FILE`, the unit's capabilities,
    // systemd's environment.
    let unit_command = |lab: &AgentLab, stderr: std::fs::File| {
        let mut cmd = lab.lab.in_target();
        // RLIMIT_MEMLOCK at 64 KiB, which the agent cannot lift without
        // CAP_SYS_RESOURCE: this kernel charges BPF memory to the cgroup.
        cmd.args(["prlimit", "--memlock=65536:65536", "--"]);
        common::with_only_capabilities(&mut cmd, &caps);
        cmd.arg(agent_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("JOURNAL_STREAM", "8:12345")
            .env("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
            .stdout(Stdio::null())
            .stderr(stderr);
        cmd
    };
    lab.spawn_with(unit_command(&lab, stderr));

    // READY=1 comes once it is attached, pinned and answering.
    let ready = next_notification(&notify, Duration::from_secs(60));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains(&iface),
        "status names the interface: {ready:?}"
    );
    assert!(
        lab.pin_dir.join("IFACE_NAMES").exists(),
        "pinned before READY"
    );
    assert!(
        lab.ctl(&["status"]).status.success(),
        "control socket answers at READY"
    );
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", lab.agent_pid)).expect("limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max locked memory") && l.contains("65536")),
        "{limits}"
    );
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", lab.agent_pid)).expect("comm");
    assert_eq!(comm.trim(), "scanwatch", "the pid is the agent itself");
    assert_eq!(
        effective_caps(lab.agent_pid),
        common::capability_mask(&caps),
        "the agent runs with exactly the unit's capabilities {caps:?}"
    );

    let scan = lab.scan(&["nmap", "-n", "-Pn", "-sS", "-p", "1-1000", TARGET_V4]);
    assert!(scan.status.success(), "nmap: {scan:?}");
    // The first alert may name only the answers (reply_scan); wait for the
    // one that names the port scan.
    let alerts = lab.wait_alert_types(SCANNER_V4, &["port_scan"], Duration::from_secs(30));
    assert!(
        alerts
            .iter()
            .any(|a| common::scan_types(a).iter().any(|t| t == "port_scan")),
        "{alerts:?}"
    );
    // /metrics listens where the config says (the target's lab address).
    let metrics = lab.scan(&[
        "curl",
        "-sf",
        "--max-time",
        "10",
        &format!("http://{TARGET_V4}:{METRICS_PORT}/metrics"),
    ]);
    assert!(metrics.status.success(), "scrape: {metrics:?}");
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        text.lines().any(
            |l| l.starts_with("scanwatch_detections_total{type=\"port_scan\"} ")
                && !l.ends_with(" 0")
        ),
        "{text}"
    );

    // A manual block, then a restart as the package's upgrade does
    // (`systemctl try-restart`: stop, start): the block is still there.
    let block = lab.ctl(&[
        "block",
        "198.18.0.77",
        "--ttl",
        "1h",
        "--reason",
        "upgrade test",
    ]);
    assert!(block.status.success(), "{block:?}");
    assert!(lab.stop_agent(), "SIGTERM: exit status 0");
    let stopping = next_notification(&notify, Duration::from_secs(10));
    assert_eq!(stopping, "STOPPING=1");
    let stderr2 = std::fs::OpenOptions::new()
        .append(true)
        .open(&stderr_path)
        .expect("stderr file");
    lab.spawn_with(unit_command(&lab, stderr2));
    let ready = next_notification(&notify, Duration::from_secs(60));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let blocks = lab.ctl(&["blocks", "--json"]);
    assert!(
        String::from_utf8_lossy(&blocks.stdout).contains("198.18.0.77"),
        "block kept across the restart: {blocks:?}"
    );
    assert!(lab.stop_agent(), "SIGTERM: exit status 0");
    assert_eq!(
        next_notification(&notify, Duration::from_secs(10)),
        "STOPPING=1"
    );

    // Journal-style log: a priority prefix, no timestamps of its own.
    let log = std::fs::read_to_string(&stderr_path).expect("agent stderr");
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>scanwatch::") && l.contains(": attached to ")),
        "{log}"
    );
    for line in log.lines() {
        assert!(
            line.starts_with('<') && !line.contains("Z INFO") && !line.starts_with("[20"),
            "no timestamp under systemd: {line:?}"
        );
    }
    let _ = std::fs::remove_file(&notify_path);
}

#[test]
fn each_missing_capability_is_named() {
    if !require_root("each_missing_capability_is_named") {
        return;
    }
    common::assert_installed(&["setpriv"]);
    let caps = common::unit_capabilities();
    let lab = Lab::new().expect("lab");
    let pin_dir = format!("/sys/fs/bpf/scanwatch-caps-{}", lab.target_ns);
    let dir = std::env::temp_dir().join(format!("scanwatch-caps-{}", lab.target_ns));
    for missing in &caps {
        let rest: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let mut cmd = lab.in_target();
        common::with_only_capabilities(&mut cmd, &rest);
        let o = cmd
            .arg(agent_bin())
            .args(["run", "--iface", &lab.target_if, "--pin-dir", &pin_dir])
            .arg("--alert-log")
            .arg(dir.join("alerts.jsonl"))
            .arg("--control-socket")
            .arg(dir.join("control.sock"))
            .stdin(Stdio::null())
            .output()
            .expect("run the agent");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "without {missing}: {err}");
        assert!(
            err.contains(&format!("scanwatch run needs {missing}")),
            "without {missing}: the message names it: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(
        !Path::new(&pin_dir).exists(),
        "refused before anything was pinned"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
