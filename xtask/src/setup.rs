//! Installs what the build and the tests need, if missing.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::run_cmd;

const BPF_LINKER_VERSION: &str = "0.10.3";
/// Builds with Rust 1.95 (`--locked`).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Debian packages the tests and the demo use.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    // (command that proves it is there, package)
    ("nmap", "nmap"),
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    ("chattr", "e2fsprogs"),
    ("useradd", "passwd"),
    ("masscan", "masscan"),
    ("zmap", "zmap"),
    ("hping3", "hping3"),
    ("ab", "apache2-utils"),
    ("python3", "python3"),
    ("nginx", "nginx-light"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("prometheus-alertmanager", "prometheus-alertmanager"),
    ("curl", "curl"),
    ("ethtool", "ethtool"),
    ("nft", "nftables"),
    ("iptables-restore", "iptables"),
    // The package tests: build, inspect, install and purge the .deb, verify the unit.
    ("dpkg-deb", "dpkg"),
    ("systemd-analyze", "systemd"),
    ("deb-systemd-helper", "init-system-helpers"),
    ("logrotate", "logrotate"),
    ("strip", "binutils"),
    ("bpftool", "bpftool"),
    // The evidence packets' pcapng files read back (lab_evidence.rs).
    ("tshark", "tshark"),
    ("tcpdump", "tcpdump"),
    // lab_crowdsec.rs: a Local API of the test's own (crowdsec -no-cs) and cscli.
    ("crowdsec", "crowdsec"),
    ("cscli", "crowdsec"),
    // The benchmark compares the agent's bouncer with the packaged one.
    ("crowdsec-firewall-bouncer", "crowdsec-firewall-bouncer"),
    // lab_web.rs: web scanners against nginx (TLS with a self-signed certificate).
    ("gobuster", "gobuster"),
    ("ffuf", "ffuf"),
    ("dirb", "dirb"),
    ("wfuzz", "wfuzz"),
    ("sqlmap", "sqlmap"),
    ("whatweb", "whatweb"),
    ("openssl", "openssl"),
];

/// crowdsec's post-install registers with the central API unless this
/// file exists and is not empty; offline (CI, the lab) that fails the
/// install. The tests never use the packaged service.
const CROWDSEC_ONLINE_CREDENTIALS: &str = "/etc/crowdsec/online_api_credentials.yaml";

/// Makes the crowdsec package install without the network.
fn crowdsec_offline() -> anyhow::Result<()> {
    let path = std::path::Path::new(CROWDSEC_ONLINE_CREDENTIALS);
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    std::fs::write(
        path,
        "# written by cargo xtask setup: no central API (offline)\n",
    )
    .with_context(|| path.display().to_string())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs whatever is missing.
pub fn ensure() -> anyhow::Result<()> {
    nightly_rust_src().context("nightly toolchain")?;
    bpf_linker().context("bpf-linker")?;
    cargo_deb().context("cargo-deb")?;
    debian_packages().context("Debian packages")
}

fn nightly_rust_src() -> anyhow::Result<()> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy,rustfmt",
        ]))?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .unwrap_or_default();
    for component in ["rust-src", "clippy"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            run_cmd(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                "nightly",
            ]))?;
        }
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    // 0.10.x links rustc's own LLVM; newer releases need a separate LLVM.
    run_cmd(Command::new("cargo").args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
    ]))
}

fn cargo_deb() -> anyhow::Result<()> {
    let version = output(Command::new("cargo").args(["deb", "--version"])).unwrap_or_default();
    if version.contains(CARGO_DEB_VERSION) {
        return Ok(());
    }
    run_cmd(Command::new("cargo").args([
        "install",
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
        "--locked",
    ]))
}

fn debian_packages() -> anyhow::Result<()> {
    let mut missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(cmd, _)| which(cmd).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if which("apt-get").is_none() {
        bail!("missing {missing:?} and no apt-get: install them with your package manager");
    }
    if missing.contains(&"crowdsec") || missing.contains(&"crowdsec-firewall-bouncer") {
        crowdsec_offline().context("crowdsec")?;
    }
    run_cmd(Command::new("apt-get").arg("update").arg("-q"))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}
