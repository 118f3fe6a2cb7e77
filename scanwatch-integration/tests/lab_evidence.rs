//! Evidence packets end to end: a real masscan scan is alerted on, the
//! alert names the incident's pcapng file, the file holds exactly
//! `packets_per_source` packets (all masscan's TCP SYNs, timestamps inside
//! the scan's time), `tshark -r` and `tcpdump -r` read it, `scanwatch
//! evidence SOURCE` lists and decodes it, and the metrics count it (and
//! pass `promtool check metrics`). Needs root, masscan, tshark, tcpdump and
//! promtool.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use common::{AgentLab, agent_bin};
use scanwatch_lab::{netns::TARGET_V4, privileged::require_root};

const SCANNER: &str = "198.18.0.50";
/// Not the default (32), so the test shows the configuration reaches the kernel.
const PACKETS: usize = 24;
const METRICS: &str = "198.18.0.2:9477";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tshark -r FILE -T fields -e ...`: one line per packet.
fn tshark_fields(file: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-r", file, "-T", "fields", "-E", "separator=/t"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    run(&mut cmd)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn masscan_evidence_is_a_pcapng_tshark_and_tcpdump_read() {
    if !require_root("masscan_evidence_is_a_pcapng_tshark_and_tcpdump_read") {
        return;
    }
    common::assert_installed(&["masscan", "tshark", "tcpdump", "curl", "promtool"]);
    let mut lab = AgentLab::prepare();
    let dir = lab.alert_log.parent().expect("dir").to_path_buf();
    std::fs::create_dir_all(&dir).expect("test dir");
    let config = dir.join("scanwatch.toml");
    let config_s = config.display().to_string();
    std::fs::write(
        &config,
        format!(
            "[evidence]\ndirectory = \"{}\"\npackets_per_source = {PACKETS}\n",
            lab.evidence_dir().display()
        ),
    )
    .expect("config");
    lab.restart(&["--config", &config_s, "--metrics-addr", METRICS]);

    let started = SystemTime::now();
    let scanner_if = lab.lab.scanner_if.clone();
    let target_mac = lab.lab.target_mac.clone();
    let t = Instant::now();
    let _ = lab.scan(&[
        "timeout",
        "40",
        "masscan",
        TARGET_V4,
        "-p1-1000",
        "--rate",
        "10000",
        "-e",
        &scanner_if,
        "--router-mac",
        &target_mac,
        "--adapter-ip",
        SCANNER,
        "--wait",
        "1",
    ]);
    println!("masscan: {:.1} s", t.elapsed().as_secs_f64());
    let alert = lab
        .wait_alert(SCANNER, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no alert for {SCANNER}: {:?}", lab.alerts()));
    let evidence = &alert["evidence"];
    let file = evidence["file"]
        .as_str()
        .unwrap_or_else(|| panic!("alert without evidence: {alert}"))
        .to_string();
    let at_alert = evidence["packets"].as_u64().expect("packets");
    println!("alert: {alert}");
    assert!(
        file.starts_with(&lab.evidence_dir().display().to_string())
            && file.ends_with(&format!("_{SCANNER}.pcapng")),
        "{file}"
    );
    assert!(
        (1..=PACKETS as u64).contains(&at_alert),
        "the crossing probe is in the file when the alert is written: {at_alert}"
    );

    // The rest of the budget is appended; never more.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rows = Vec::new();
    while Instant::now() < deadline {
        rows = tshark_fields(
            &file,
            &[
                "ip.src",
                "ip.dst",
                "tcp.flags",
                "ip.ttl",
                "tcp.window_size_value",
                "frame.time_epoch",
                "tcp.dstport",
            ],
        );
        if rows.len() >= PACKETS {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let again = tshark_fields(&file, &["ip.src"]);
    assert_eq!(
        rows.len(),
        PACKETS,
        "tshark reads {PACKETS} packets: {rows:?}"
    );
    assert_eq!(again.len(), PACKETS, "no packet beyond the budget");
    let from = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let to = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let mut ports = std::collections::BTreeSet::new();
    let mut last = 0.0f64;
    for r in &rows {
        assert_eq!(r[0], SCANNER, "{r:?}");
        assert_eq!(r[1], TARGET_V4, "{r:?}");
        assert_eq!(r[2], "0x0002", "a SYN: {r:?}");
        assert_eq!(r[3], "255", "masscan's TTL: {r:?}");
        let when: f64 = r[5].parse().expect("epoch");
        assert!(
            when >= from - 1.0 && when <= to + 1.0,
            "timestamp {when} inside the scan ({from}..{to})"
        );
        assert!(when >= last, "in arrival order: {rows:?}");
        last = when;
        ports.insert(r[6].clone());
    }
    assert_eq!(ports.len(), PACKETS, "distinct probes: {ports:?}");
    println!(
        "tshark: {} packets, first {:?}, at the alert {at_alert}",
        rows.len(),
        rows[0]
    );

    // tcpdump reads it too.
    let dump = run(Command::new("tcpdump").args(["-nn", "-r", &file]));
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(lines.len(), PACKETS, "{dump}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&format!("IP {SCANNER}.")) && l.contains("Flags [S]")),
        "{dump}"
    );

    // `scanwatch evidence SOURCE` names the file and decodes every packet.
    let shown = run(Command::new(agent_bin()).args(["evidence", SCANNER, "--config", &config_s]));
    println!("{shown}");
    assert!(
        shown.contains(&format!("{file} ({PACKETS} packets")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!(
            "comment: scanwatch alert {}",
            alert["time"].as_str().expect("time")
        )),
        "{shown}"
    );
    let decoded = shown
        .lines()
        .filter(|l| l.contains(&format!("{SCANNER}:")) && l.contains(&format!("-> {TARGET_V4}:")))
        .filter(|l| l.contains("TCP flags S ttl 255 win"))
        .count();
    assert_eq!(decoded, PACKETS, "{shown}");

    // The metrics count what was sent and written, and pass promtool's checks.
    let metrics = lab.scrape(METRICS);
    common::assert_promtool_clean(&metrics);
    let value = |name: &str| common::metric_sum(&metrics, name);
    assert!(value("scanwatch_evidence_records_total{result=\"sent\"}") >= PACKETS as f64);
    assert_eq!(
        value("scanwatch_evidence_records_total{result=\"dropped\"}"),
        0.0
    );
    assert_eq!(
        value("scanwatch_evidence_packets_written_total"),
        PACKETS as f64
    );
    assert_eq!(value("scanwatch_evidence_files_created_total"), 1.0);
    let size = std::fs::metadata(&file).expect("file").len();
    assert_eq!(value("scanwatch_evidence_directory_bytes"), size as f64);
    println!("file {size} bytes");
    assert!(lab.stop_agent(), "clean stop");
}
