//! The alert log on a real full disk (a 64 KiB tmpfs) and with a reopen
//! refused by the file system (an immutable directory, `chattr +i`): errors
//! are counted and logged, alerts wait in memory and reach the file once it
//! takes them, and the agent keeps running.
//! Needs root (mount, chattr, XDP); fails rather than skips without it.

mod common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::AgentLab;
use scanwatch::{
    detect::{AlertReason, Confidence, Evidence},
    model::{KernelClock, ScanType},
    output::{
        alert::{Alert, AlertInput},
        alert_log::AlertLog,
    },
};
use scanwatch_common::SourceStats;
use scanwatch_lab::privileged::require_root;

/// A small tmpfs mounted by the test; unmounted (and made mutable again)
/// when dropped, even on panic.
struct Tmpfs {
    dir: PathBuf,
    created_dir: bool,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        let created_dir = !dir.exists();
        std::fs::create_dir_all(dir).expect("mount point");
        let guard = Self {
            dir: dir.to_path_buf(),
            created_dir,
        };
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        guard
    }

    /// Writes a filler file until the file system is full.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc_enospc()), "full: {e}");
                    break;
                }
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .args(["-R", "-i"])
            .arg(&self.dir)
            .status();
        // Lazy: the agent may still hold files open here.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        if self.created_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

const fn libc_enospc() -> i32 {
    28
}

fn chattr(flag: &str, path: &Path) {
    let status = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("run chattr");
    assert!(status.success(), "chattr {flag} {}", path.display());
}

fn sample_alert(last: u8) -> Alert {
    let source = ipnet::IpNet::from(std::net::IpAddr::from([198, 18, 0, last]));
    let stats = SourceStats::new(
        &scanwatch_common::SourceKey::v4([198, 18, 0, last]),
        1_000_000_000,
        2,
    );
    let evidence = Evidence {
        window_probes: [1000, 0, 0, 0, 0, 0],
        distinct_ports: 1000,
        distinct_udp_ports: 0,
        distinct_hosts: 1,
        distinct_icmp_hosts: 0,
        sample_ports: vec![22, 80, 443],
        triggers: 1,
        window_start_ns: 1_000_000_000,
        reply: scanwatch::detect::ReplyEvidence::default(),
    };
    let clock = KernelClock::now();
    Alert::new(AlertInput {
        source: &source,
        stats: &stats,
        evidence: &evidence,
        types: vec![ScanType::PortScan],
        reason: AlertReason::New,
        confidence: Confidence::High,
        interface: Some("eth0".into()),
        window_seconds: 300,
        crossed_ns: Some(2_000_000_000),
        group: None,
        clock: &clock,
    })
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("every line is a JSON alert"))
        .collect()
}

/// The log itself on a full tmpfs: ENOSPC part way through a line leaves no
/// partial line; lines wait and are written in order once there is room.
#[test]
fn alert_log_on_a_full_disk_keeps_whole_lines_and_recovers() {
    if !require_root("alert_log_on_a_full_disk_keeps_whole_lines_and_recovers") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("scanwatch-full-{}", std::process::id()));
    let fs = Tmpfs::mount(&dir, "64k");
    let path = dir.join("alerts.jsonl");
    // A first page of the log nearly full, so the next alert line fits only
    // in part: the kernel writes what fits, then fails with ENOSPC.
    let mut log = AlertLog::open(&path).expect("open");
    log.append(&sample_alert(1)).expect("first alert");
    let used = std::fs::metadata(&path).expect("meta").len() as usize;
    let pad = 4096 - used % 4096 - 20;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .and_then(|mut f| {
            f.write_all(format!("{{\"pad\":\"{}\"}}\n", "x".repeat(pad - 11)).as_bytes())
        })
        .expect("pad");
    let filler = fs.fill();
    let before = std::fs::metadata(&path).expect("meta").len();
    for last in 2..=4 {
        let e = log.append(&sample_alert(last)).expect_err("disk full");
        assert!(e.to_string().contains("No space left on device"), "{e}");
    }
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        before,
        "the partial line was cut off"
    );
    let s = log.stats();
    assert_eq!((s.write_errors, s.backlog, s.dropped), (3, 3, 0));
    assert_eq!(log.failure_messages(), 1, "logged once, not per alert");
    json_lines(&path);
    // Room again: the waiting lines are written, in order.
    std::fs::remove_file(&filler).expect("free space");
    log.tick();
    assert_eq!(log.stats().backlog, 0);
    let sources: Vec<String> = json_lines(&path)
        .iter()
        .filter_map(|a| a["source"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        sources,
        ["198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"]
    );
    drop(log);
    drop(fs);
    let _ = std::fs::remove_dir(&dir);
}

/// SIGHUP-style reopen into a directory the file system refuses to change
/// (immutable): an error, the old file kept, and a retry that succeeds once
/// the directory is writable again.
#[test]
fn alert_log_reopen_refused_keeps_writing_and_retries() {
    if !require_root("alert_log_reopen_refused_keeps_writing_and_retries") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("scanwatch-immutable-{}", std::process::id()));
    let _fs = Tmpfs::mount(&dir, "1m");
    let logs = dir.join("log");
    let path = logs.join("alerts.jsonl");
    let mut log = AlertLog::open(&path).expect("open");
    log.append(&sample_alert(1)).expect("append");
    std::fs::rename(&path, logs.join("alerts.jsonl.1")).expect("rotate");
    chattr("+i", &logs);
    let e = log.reopen().expect_err("immutable directory");
    assert!(
        e.to_string()
            .contains(&format!("alert log {}: cannot open", path.display())),
        "{e}"
    );
    assert!(e.to_string().contains("Operation not permitted"), "{e}");
    assert_eq!(log.stats().reopen_errors, 1);
    log.append(&sample_alert(2))
        .expect("the old file still takes alerts");
    assert_eq!(json_lines(&logs.join("alerts.jsonl.1")).len(), 2);
    chattr("-i", &logs);
    log.reopen().expect("writable again");
    log.append(&sample_alert(3)).expect("append");
    assert_eq!(json_lines(&path).len(), 1);
}

fn metric(lab: &AgentLab, name: &str) -> Option<f64> {
    common::metric_value(&lab.scrape("198.18.0.2:9477"), name)
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn scan_from(lab: &AgentLab, source: &str) {
    lab.lab
        .add_scanner_address(&format!("{source}/24"))
        .expect("scanner address");
    let o = lab.scan(&[
        "nmap",
        "-n",
        "-Pn",
        "-sS",
        "-p",
        "1-100",
        "-e",
        &lab.lab.scanner_if,
        "-S",
        source,
        "198.18.0.2",
    ]);
    assert!(o.status.success(), "nmap from {source}");
}

/// The agent with its alert log on a full tmpfs, then with a refused
/// reopen: it keeps detecting, counts the errors in its metrics, and every
/// alert reaches the log once the disk has room again.
#[test]
fn agent_survives_a_full_disk_and_a_refused_reopen() {
    if !require_root("agent_survives_a_full_disk_and_a_refused_reopen") {
        return;
    }
    common::assert_installed(&["nmap", "curl", "chattr", "mount"]);
    let metrics_addr = ["--metrics-addr", "198.18.0.2:9477"];
    let mut lab = AgentLab::start(&metrics_addr);
    // The alert log's directory becomes a 64 KiB tmpfs (declared after the
    // lab: dropped, so unmounted, before the lab removes the directory).
    assert!(lab.stop_agent(), "clean stop");
    let dir = lab.alert_log.parent().expect("dir").to_path_buf();
    let fs = Tmpfs::mount(&dir, "64k");
    lab.restart(&metrics_addr);
    let filler = fs.fill();

    scan_from(&lab, "198.18.0.31");
    scan_from(&lab, "198.18.0.32");
    wait_for("two alerts counted", Duration::from_secs(60), || {
        metric(&lab, "scanwatch_alerts_total").unwrap_or(0.0) >= 2.0
    });
    assert!(metric(&lab, "scanwatch_alert_write_errors_total").unwrap_or(0.0) >= 2.0);
    let waiting = metric(&lab, "scanwatch_alert_log_backlog").expect("backlog metric");
    assert!(waiting >= 2.0, "alerts wait in memory: {waiting}");
    assert_eq!(metric(&lab, "scanwatch_alerts_dropped_total"), Some(0.0));
    assert!(json_lines(&lab.alert_log).is_empty(), "nothing fit");
    assert!(lab.ctl(&["status"]).status.success(), "agent still running");

    // Room again: every alert reaches the file within a few seconds.
    std::fs::remove_file(&filler).expect("free space");
    wait_for("the backlog written", Duration::from_secs(30), || {
        metric(&lab, "scanwatch_alert_log_backlog") == Some(0.0)
    });
    let total = metric(&lab, "scanwatch_alerts_total").expect("alerts");
    let alerts = json_lines(&lab.alert_log);
    assert_eq!(alerts.len() as f64, total, "no alert lost");
    for source in ["198.18.0.31", "198.18.0.32"] {
        assert!(alerts.iter().any(|a| a["source"] == source), "{source}");
    }

    // Rotation into a directory that refuses new files.
    let rotated = dir.join("alerts.jsonl.1");
    std::fs::rename(&lab.alert_log, &rotated).expect("rotate");
    chattr("+i", &dir);
    let hup = Command::new("kill")
        .args(["-HUP", &lab.agent_pid.to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    wait_for("a reopen error counted", Duration::from_secs(30), || {
        metric(&lab, "scanwatch_alert_log_reopen_errors_total").unwrap_or(0.0) >= 1.0
    });
    scan_from(&lab, "198.18.0.33");
    wait_for(
        "the alert in the rotated file",
        Duration::from_secs(60),
        || {
            json_lines(&rotated)
                .iter()
                .any(|a| a["source"] == "198.18.0.33")
        },
    );
    assert!(!lab.alert_log.exists());
    // Writable again: the agent's retry reopens the log by itself.
    chattr("-i", &dir);
    wait_for("the log reopened", Duration::from_secs(30), || {
        lab.alert_log.exists()
    });
    scan_from(&lab, "198.18.0.34");
    wait_for("the alert in the new file", Duration::from_secs(60), || {
        json_lines(&lab.alert_log)
            .iter()
            .any(|a| a["source"] == "198.18.0.34")
    });
    assert_eq!(metric(&lab, "scanwatch_alerts_dropped_total"), Some(0.0));
    assert!(lab.stop_agent(), "exit 0 on SIGTERM after all that");
    drop(fs);
}
