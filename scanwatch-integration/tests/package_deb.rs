//! The Debian package (`cargo xtask deb`; `cargo xtask test` builds it first
//! and passes its path in `SCANWATCH_DEB`): its files, conffiles, unit and
//! maintainer scripts; installed on this machine with `dpkg -i`, reinstalled
//! as an upgrade keeping a locally edited configuration, then purged without
//! leftovers. `systemd-analyze verify` accepts the installed unit.
//! Needs root (dpkg -i); fails rather than skips without it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use scanwatch_lab::privileged::require_root;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installed files the package must ship.
const FILES: &[&str] = &[
    "/usr/bin/scanwatch",
    "/etc/scanwatch/scanwatch.toml",
    "/etc/logrotate.d/scanwatch",
    "/usr/lib/systemd/system/scanwatch.service",
    "/usr/share/man/man1/scanwatch.1.gz",
    "/usr/share/man/man1/scanwatch-run.1.gz",
    "/usr/share/man/man1/scanwatch-top.1.gz",
    "/usr/share/man/man1/scanwatch-block.1.gz",
    "/usr/share/man/man1/scanwatch-unblock.1.gz",
    "/usr/share/man/man1/scanwatch-blocks.1.gz",
    "/usr/share/man/man1/scanwatch-status.1.gz",
    "/usr/share/bash-completion/completions/scanwatch",
    "/usr/share/zsh/vendor-completions/_scanwatch",
    "/usr/share/fish/vendor_completions.d/scanwatch.fish",
    "/usr/share/doc/scanwatch/copyright",
];

fn deb() -> PathBuf {
    let path = std::env::var_os("SCANWATCH_DEB").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/debian")
                .join(format!("scanwatch_{VERSION}_amd64.deb"))
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} not found: build it with `cargo xtask deb` (`cargo xtask test` does, then sets SCANWATCH_DEB)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> Output {
    let desc = format!("{cmd:?}");
    let o = cmd.output().unwrap_or_else(|e| panic!("{desc}: {e}"));
    assert!(
        o.status.success(),
        "{desc}: {}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scanwatch-deb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn repo_file(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn deb_contents_conffiles_unit_and_scripts() {
    let deb = deb();
    assert!(
        deb.display()
            .to_string()
            .ends_with(&format!("scanwatch_{VERSION}_amd64.deb")),
        "{}",
        deb.display()
    );
    let fields = stdout(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
    ])));
    assert!(fields.contains("Package: scanwatch"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {VERSION}\n")),
        "{fields}"
    );
    assert!(fields.contains("Architecture: amd64"), "{fields}");
    assert!(
        fields.contains("libc6"),
        "shared-library dependencies: {fields}"
    );

    let listing = stdout(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.'))
        .collect();
    for want in FILES {
        assert!(paths.contains(want), "{want} in the package: {paths:?}");
    }

    let control = scratch("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    let mut listed: Vec<&str> = conffiles.lines().collect();
    listed.sort_unstable();
    assert_eq!(
        listed,
        [
            "/etc/logrotate.d/scanwatch",
            "/etc/scanwatch/scanwatch.toml"
        ]
    );
    // Upgrades restart the agent once the new files are in place and never
    // stop it beforehand (pinned blocklist kept); removal stops it.
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    let prerm = std::fs::read_to_string(control.join("prerm")).expect("prerm");
    assert!(
        postinst.contains("deb-systemd-invoke try-restart scanwatch.service"),
        "{postinst}"
    );
    assert!(
        !postinst.contains("deb-systemd-invoke start"),
        "not started on install: {postinst}"
    );
    // Not enabled on a first install (the interfaces must be configured
    // first); an administrator's enablement is kept across upgrades.
    assert!(
        postinst.contains("if deb-systemd-helper debian-installed scanwatch.service"),
        "{postinst}"
    );
    let lines: Vec<&str> = postinst.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("deb-systemd-helper enable") {
            assert!(
                lines[..i]
                    .iter()
                    .rev()
                    .find(|p| p.trim_start().starts_with("if "))
                    .is_some_and(|p| p.contains("was-enabled")),
                "enable only if it was enabled: {postinst}"
            );
        }
    }
    let stops: Vec<&str> = prerm.lines().filter(|l| l.contains("stop")).collect();
    assert!(
        !stops.is_empty()
            && prerm.contains(r#"[ "$1" = remove ]"#)
            && stops.iter().all(|l| l.contains(r#"[ "$1" = remove ]"#)
                || l.trim_start().starts_with("deb-systemd-invoke stop")),
        "prerm stops only on remove: {prerm}"
    );
    let stop_guard = prerm
        .lines()
        .position(|l| l.contains(r#"[ "$1" = remove ]"#))
        .expect("remove guard");
    let stop_line = prerm
        .lines()
        .position(|l| l.contains("deb-systemd-invoke stop"))
        .expect("stop line");
    assert_eq!(stop_line, stop_guard + 1, "{prerm}");

    let data = scratch("data");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&data));
    for (packaged, repo) in [
        (
            "usr/lib/systemd/system/scanwatch.service",
            "deploy/debian/scanwatch.service",
        ),
        (
            "etc/scanwatch/scanwatch.toml",
            "deploy/debian/scanwatch.toml",
        ),
        (
            "etc/logrotate.d/scanwatch",
            "deploy/debian/scanwatch.logrotate",
        ),
    ] {
        let got = std::fs::read_to_string(data.join(packaged)).expect(packaged);
        assert_eq!(got, repo_file(repo), "{packaged} is {repo}");
    }
    let unit = std::fs::read_to_string(data.join("usr/lib/systemd/system/scanwatch.service"))
        .expect("unit");
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/scanwatch run --config /etc/scanwatch/scanwatch.toml",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=-/sys/fs/bpf",
        "LogsDirectory=scanwatch",
        "RuntimeDirectory=scanwatch",
        "StateDirectory=scanwatch",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "SystemCallArchitectures=native",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} in the unit");
    }
    // The packaged binary is the agent, and its man page is roff.
    let version = stdout(&run(
        Command::new(data.join("usr/bin/scanwatch")).arg("--version")
    ));
    assert_eq!(version.trim(), format!("scanwatch {VERSION}"));
    let man = stdout(&run(
        Command::new("zcat").arg(data.join("usr/share/man/man1/scanwatch-run.1.gz"))
    ));
    assert!(man.contains(".TH scanwatch-run 1"), "{man}");
    assert!(man.contains("\\-\\-config"), "options documented");
    let bash =
        std::fs::read_to_string(data.join("usr/share/bash-completion/completions/scanwatch"))
            .expect("bash completion");
    assert!(bash.contains("--metrics-addr"), "{bash}");
    run(Command::new("bash")
        .arg("-n")
        .arg(data.join("usr/share/bash-completion/completions/scanwatch")));
    let _ = std::fs::remove_dir_all(&control);
    let _ = std::fs::remove_dir_all(&data);
}

/// Purges the package when the test ends, also on panic.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "scanwatch"]).output();
    }
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", "scanwatch"])
        .output()
        .is_ok_and(|o| o.status.success() && stdout(&o).contains("installed"))
}

#[test]
fn deb_installs_upgrades_and_purges_cleanly() {
    if !require_root("deb_installs_upgrades_and_purges_cleanly") {
        return;
    }
    let deb = deb();
    if installed() {
        // Left by an interrupted run of this test.
        eprintln!("purging a scanwatch package left installed");
        run(Command::new("dpkg").args(["--purge", "scanwatch"]));
    }
    let guard = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(installed());
    for f in FILES {
        assert!(Path::new(f).exists(), "{f} installed");
    }
    let version = stdout(&run(Command::new("/usr/bin/scanwatch").arg("--version")));
    assert_eq!(version.trim(), format!("scanwatch {VERSION}"));

    // The unit as installed: no warnings, no errors (ExecStart exists).
    let v = Command::new("systemd-analyze")
        .args([
            "verify",
            "--man=no",
            "/usr/lib/systemd/system/scanwatch.service",
        ])
        .output()
        .expect("systemd-analyze");
    let verr = String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success(), "systemd-analyze verify: {verr}");
    assert!(
        verr.trim().is_empty(),
        "systemd-analyze verify warns: {verr}"
    );
    let security = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=yes",
            "/usr/lib/systemd/system/scanwatch.service",
        ])
        .output()
        .expect("systemd-analyze security");
    let text = format!(
        "{}{}",
        stdout(&security),
        String::from_utf8_lossy(&security.stderr)
    );
    let exposure: f64 = text
        .split("Overall exposure level for scanwatch.service: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    eprintln!("systemd-analyze security --offline=yes: exposure {exposure}");
    assert!(exposure <= 4.0, "exposure {exposure}: {text}");

    // The logrotate snippet parses (debug mode: nothing is rotated).
    let state = scratch("logrotate").join("state");
    let lr = Command::new("logrotate")
        .arg("-d")
        .arg("-s")
        .arg(&state)
        .arg("/etc/logrotate.d/scanwatch")
        .output()
        .expect("logrotate");
    let lrerr = String::from_utf8_lossy(&lr.stderr);
    assert!(lr.status.success(), "logrotate -d: {lrerr}");
    assert!(
        !lrerr.to_lowercase().contains("error"),
        "logrotate -d: {lrerr}"
    );
    assert!(lrerr.contains("/var/log/scanwatch/alerts.jsonl"), "{lrerr}");

    // Upgrade (reinstall): the operator's configuration is kept.
    let conf = Path::new("/etc/scanwatch/scanwatch.toml");
    let edited = format!(
        "{}\n[agent]\ninterfaces = [\"eth0\"]\n",
        std::fs::read_to_string(conf).expect("config")
    );
    std::fs::write(conf, &edited).expect("edit the config");
    run(Command::new("dpkg")
        .args(["-i", "--force-confold"])
        .arg(&deb));
    assert_eq!(
        std::fs::read_to_string(conf).expect("config"),
        edited,
        "conffile kept on upgrade"
    );
    // The edited file is a valid configuration for the installed agent.
    scanwatch::config::Config::load(conf).expect("edited config loads");

    run(Command::new("dpkg").args(["--purge", "scanwatch"]));
    assert!(!installed(), "purged");
    for f in FILES {
        assert!(!Path::new(f).exists(), "{f} removed");
    }
    assert!(
        !Path::new("/etc/scanwatch").exists(),
        "/etc/scanwatch removed"
    );
    drop(guard);
    let _ = std::fs::remove_dir_all(state.parent().unwrap_or(Path::new("/nonexistent")));
}
