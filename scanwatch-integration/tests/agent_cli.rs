//! The agent's command line: clear one-line errors and non-zero exits for
//! bad input and missing privileges; clean attach/detach.
//! Needs root (it builds a namespace lab); fails rather than skips without it.

mod common;

use std::process::{Command, Output, Stdio};

use common::{AgentLab, agent_bin};
use scanwatch_lab::{
    netns::Lab,
    privileged::require_root,
    refusal::{assert_fails_with, stderr},
};

/// Runs the agent binary in the lab's target namespace.
fn agent_in(lab: &Lab, args: &[&str]) -> Output {
    lab.in_target()
        .arg(agent_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scanwatch")
}

#[test]
fn bad_arguments_are_refused_before_anything_is_attached() {
    if !require_root("bad_arguments_are_refused_before_anything_is_attached") {
        return;
    }
    let lab = Lab::new().expect("lab");
    let pin = format!("/sys/fs/bpf/scanwatch-cli-{}", lab.target_ns);
    let o = agent_in(&lab, &["run", "--iface", "nosuch0", "--pin-dir", &pin]);
    assert_fails_with(&o, 2, "unknown interface \"nosuch0\"", "unknown interface");
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
    // An evidence directory that cannot be created: refused after loading,
    // everything undone.
    let o = agent_in(
        &lab,
        &[
            "run",
            "--iface",
            &lab.target_if,
            "--evidence-dir",
            "/proc/nope/evidence",
            "--pin-dir",
            &pin,
        ],
    );
    assert_fails_with(
        &o,
        1,
        "evidence directory /proc/nope/evidence",
        "unwritable evidence directory",
    );
    assert!(
        !std::path::Path::new(&pin).join("SOURCES").exists(),
        "no pins left"
    );
    // No link has an XDP program after all that.
    let links = Command::new("ip")
        .args(["-n", &lab.target_ns, "link", "show"])
        .output()
        .expect("ip link");
    assert!(!String::from_utf8_lossy(&links.stdout).contains("xdp"));
    let _ = std::fs::remove_dir_all(&pin);
}

/// A real unprivileged account, created if missing (a system user with no
/// login shell): its uid and gid.
fn unprivileged_account() -> (u32, u32) {
    const USER: &str = "scanwatch-test";
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, USER]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let o = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                USER,
            ])
            .output()
            .expect("run useradd");
        // Another test process may have created it meanwhile.
        assert!(
            o.status.success() || id("-u").is_some(),
            "cannot create the test account {USER}: {}",
            stderr(&o)
        );
    }
    let (uid, gid) = (id("-u"), id("-g"));
    let (Some(uid), Some(gid)) = (uid, gid) else {
        panic!("no uid/gid for {USER}");
    };
    assert_ne!(uid, 0, "{USER} must not be root");
    (uid, gid)
}

/// The agent binary copied where any account can run it (the build tree
/// may sit under a directory only root can enter).
fn agent_for_anyone(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = dir.join("scanwatch");
    std::fs::copy(agent_bin(), &bin).expect("copy the agent");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

/// `setpriv` to the account: real and effective ids, no supplementary
/// groups, no capabilities left (inheritable, ambient or bounding).
fn as_user(uid: u32, gid: u32, mut prefix: Command) -> Command {
    prefix.args([
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--",
    ]);
    prefix
}

/// A real unprivileged account: `run` and `top` refuse naming the missing
/// capabilities, the control socket of a running root agent refuses it (even
/// with the socket file opened to everyone, the agent checks the peer's
/// uid), and `check-config` works for it.
#[test]
fn unprivileged_user_is_refused() {
    if !require_root("unprivileged_user_is_refused") {
        return;
    }
    let (uid, gid) = unprivileged_account();
    let mut agent = AgentLab::start(&[]);
    let dir = std::env::temp_dir().join(format!("scanwatch-unpriv-{}", agent.lab.target_ns));
    let bin = agent_for_anyone(&dir);
    let user = |prefix: Command, args: &[&str]| -> Output {
        as_user(uid, gid, prefix)
            .arg(&bin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv")
    };
    // The account really is unprivileged.
    let o = as_user(uid, gid, Command::new("env"))
        .args(["sh", "-c", "id -u; grep CapEff /proc/self/status"])
        .output()
        .expect("setpriv sh");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(&format!("{uid}\n")) && out.contains("0000000000000000"),
        "{out}"
    );

    let pin = format!("/sys/fs/bpf/scanwatch-unpriv-{}", agent.lab.target_ns);
    for (args, needle) in [
        (
            vec![
                "run",
                "--iface",
                agent.lab.target_if.as_str(),
                "--pin-dir",
                &pin,
            ],
            "scanwatch run needs CAP_BPF and CAP_PERFMON and CAP_NET_ADMIN (effective capabilities)",
        ),
        (
            vec!["top"],
            "scanwatch top needs CAP_BPF (effective capabilities)",
        ),
    ] {
        let o = user(agent.lab.in_target(), &args);
        assert_fails_with(&o, 1, needle, &format!("unprivileged {args:?}"));
    }
    assert!(!std::path::Path::new(&pin).exists(), "nothing pinned");

    // The running root agent's control socket (mode 0600): refused.
    let sock = agent.control_socket.to_string_lossy().into_owned();
    for args in [
        vec!["status", "--control-socket", &sock],
        vec!["block", "198.18.0.77", "--control-socket", &sock],
    ] {
        let o = user(Command::new("env"), &args);
        assert_fails_with(&o, 1, "is root-only", &format!("socket file: {args:?}"));
    }
    // Opened to everyone by mistake: the agent's peer-uid check still refuses.
    {
        use std::os::unix::fs::PermissionsExt as _;
        for p in [
            agent.control_socket.as_path(),
            agent.control_socket.parent().expect("dir"),
        ] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
    }
    for args in [
        vec!["block", "198.18.0.77", "--control-socket", &sock],
        vec!["unblock", "198.18.0.0/24", "--control-socket", &sock],
        vec!["blocks", "--control-socket", &sock],
    ] {
        let o = user(Command::new("env"), &args);
        assert_fails_with(&o, 1, "is root-only", &format!("peer uid: {args:?}"));
    }
    // The raw answer: the agent accepted the connection and refused the uid.
    let o = as_user(uid, gid, Command::new("env"))
        .args([
            // Not a PATH lookup: root's PATH may lead to shims the account cannot read.
            "/usr/bin/python3",
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n\
             s.sendall(b'{\"cmd\":\"blocks\"}\\n')\nprint(s.recv(4096).decode())",
            &sock,
        ])
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        r#"{"ok":false,"error":"permission denied: root only"}"#,
        "{}",
        stderr(&o)
    );
    let blocks = agent.ctl(&["blocks", "--json"]);
    assert!(blocks.status.success(), "{}", stderr(&blocks));
    assert!(
        !String::from_utf8_lossy(&blocks.stdout).contains("198.18.0.77"),
        "nothing blocked by the unprivileged account"
    );

    // check-config needs no privilege.
    let cfg = dir.join("ok.toml");
    std::fs::write(&cfg, "[detection]\nwindow_seconds = 60\n").expect("write");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "# bad\n[mitigation]\ncapacity = 1\n").expect("write");
    let o = user(
        Command::new("env"),
        &["check-config", &cfg.to_string_lossy()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = user(
        Command::new("env"),
        &["check-config", &bad.to_string_lossy()],
    );
    assert_fails_with(
        &o,
        2,
        &format!(
            "config {}: line 3: field `mitigation.capacity`: 1 is out of range",
            bad.display()
        ),
        "check-config unprivileged",
    );
    assert!(agent.stop_agent(), "the root agent is unaffected");
    let _ = std::fs::remove_dir_all(&dir);
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
    let out = Command::new(agent_bin())
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
    let o = Command::new(agent_bin())
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
    let out = Command::new(agent_bin())
        .args(["top", "--pin-dir", &pin])
        .output()
        .expect("top");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(agent.stop_agent(), "restarted agent stops cleanly");
}
