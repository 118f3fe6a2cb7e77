//! `cargo xtask demo`: a namespace lab, the agent attached in the target
//! namespace, real nmap scans from the scanner namespace, and what scanwatch saw.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use scanwatch_lab::netns::{Lab, SWEEP_NET_V4, TARGET_V4};

use crate::run_cmd;

fn agent_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("debug/scanwatch")
}

pub fn demo() -> anyhow::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc_geteuid() } != 0 {
        bail!(
            "the demo loads XDP and builds network namespaces: run it as root (sudo -E cargo xtask demo)"
        );
    }
    run_cmd(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
            "build",
            "--quiet",
            "-p",
            "scanwatch",
        ]),
    )?;
    let agent = agent_binary();

    let mut lab = Lab::new().context("building the namespace lab")?;
    let pin_dir = format!("/sys/fs/bpf/scanwatch-demo-{}", lab.target_ns);
    let log_path = std::env::temp_dir().join(format!("scanwatch-demo-{}.log", lab.target_ns));
    let alert_log =
        std::env::temp_dir().join(format!("scanwatch-demo-{}.alerts.jsonl", lab.target_ns));
    let log = std::fs::File::create(&log_path).context("agent log file")?;
    println!(
        "lab: scanner namespace {} (198.18.0.1, fd00::1) --veth-- target namespace {} (198.18.0.2, fd00::2)",
        lab.scanner_ns, lab.target_ns
    );
    let mut cmd = lab.in_target();
    cmd.arg(&agent)
        .args([
            "run",
            "--iface",
            &lab.target_if,
            "--interval",
            "1",
            "--pin-dir",
            &pin_dir,
        ])
        .arg("--alert-log")
        .arg(&alert_log)
        .arg("--evidence-dir")
        .arg(alert_log.with_extension("evidence"))
        .stdout(Stdio::null())
        .stderr(log);
    println!(
        "starting: scanwatch run --iface {} (in the target namespace)",
        lab.target_if
    );
    let pid = lab.spawn(cmd)?;
    let ready = PathBuf::from(&pin_dir).join("IFACE_NAMES");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if Instant::now() > deadline || !PathBuf::from(format!("/proc/{pid}")).exists() {
            bail!(
                "the agent did not start; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    lab.add_scanner_address("198.18.0.7/24")?;
    let scanner_if = lab.scanner_if.clone();
    let scans: [(&str, Vec<&str>); 3] = [
        (
            "a SYN scan of ports 1-1000",
            vec!["nmap", "-n", "-Pn", "-sS", "-p", "1-1000", TARGET_V4],
        ),
        (
            "a ping sweep of 256 addresses, from 198.18.0.7",
            vec![
                "nmap",
                "-n",
                "-sn",
                "-e",
                &scanner_if,
                "-S",
                "198.18.0.7",
                SWEEP_NET_V4,
            ],
        ),
        (
            "an IPv6 SYN scan of the top 100 ports",
            vec![
                "nmap",
                "-n",
                "-6",
                "-Pn",
                "-sS",
                "--top-ports",
                "100",
                "fd00::2",
            ],
        ),
    ];
    for (what, scan) in scans {
        println!(
            "\n$ {}   # {what}, from the scanner namespace",
            scan.join(" ")
        );
        let out = lab.in_scanner().args(&scan).output().context("nmap")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with("Nmap done") || line.contains("closed") {
                println!("  {line}");
            }
        }
    }
    // Let the agent log one summary line (interval 1 s).
    std::thread::sleep(Duration::from_millis(1500));

    println!("\n$ scanwatch top --pin-dir {pin_dir}");
    let top = Command::new(&agent)
        .args(["top", "--pin-dir", &pin_dir])
        .output()
        .context("scanwatch top")?;
    print!("{}", String::from_utf8_lossy(&top.stdout));
    eprint!("{}", String::from_utf8_lossy(&top.stderr));

    println!("\nalerts ({}):", alert_log.display());
    for line in std::fs::read_to_string(&alert_log)
        .unwrap_or_default()
        .lines()
    {
        println!("{line}");
    }

    let status = lab.stop(pid, Duration::from_secs(10));
    let _ = std::fs::remove_file(&alert_log);
    let _ = std::fs::remove_dir_all(alert_log.with_extension("evidence"));
    println!("\nagent log:");
    print!("{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    let _ = std::fs::remove_file(&log_path);
    drop(lab);
    // The agent keeps its blocklist pin for a next run; the demo removes it all.
    let _ = std::fs::remove_dir_all(&pin_dir);
    println!("\nlab removed (namespaces, veth, pins)");
    match status {
        Some(s) if s.success() => Ok(()),
        other => bail!("agent did not stop cleanly: {other:?}"),
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
