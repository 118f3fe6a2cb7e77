//! The Prometheus integration: shipped rules checked and unit-tested with
//! promtool, and, end to end in the namespace lab, a real Prometheus
//! scraping the agent with those rules while a real nmap scan runs, and a
//! real Alertmanager receiving the agent's own pushes.
//! Needs root, prometheus, prometheus-alertmanager, promtool, curl and nmap.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::AgentLab;
use scanwatch_lab::{netns::TARGET_V4, privileged::require_root};
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is not installed (cargo xtask setup installs prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn shipped_rules_check_and_pass_their_unit_tests() {
    let text = promtool(
        &["check", "rules", "scanwatch-rules.yml"],
        &deploy("prometheus"),
    );
    assert!(text.contains("SUCCESS: 11 rules found"), "{text}");
    let text = promtool(
        &["test", "rules", "scanwatch-rules.test.yml"],
        &deploy("prometheus/tests"),
    );
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Every PromQL expression of the dashboard, with its variables filled in.
fn dashboard_exprs() -> Vec<String> {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/scanwatch.json")).expect("dashboard"),
    )
    .expect("JSON");
    dash["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| {
            t["expr"].as_str().map(|e| {
                e.replace("$instance", ".*")
                    .replace("$__rate_interval", "1m")
            })
        })
        .collect()
}

/// GET inside the scanner namespace (never from the root namespace).
fn http_get(lab: &AgentLab, url: &str, query: &[(&str, &str)]) -> String {
    let mut cmd = lab.lab.in_scanner();
    cmd.args(["curl", "-s", "--max-time", "5", "-G", url]);
    for (k, v) in query {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd.stdin(Stdio::null()).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_fires_and_alertmanager_receives() {
    if !require_root("prometheus_fires_and_alertmanager_receives") {
        return;
    }
    common::assert_installed(&["prometheus", "prometheus-alertmanager", "curl", "nmap"]);
    let mut lab = AgentLab::start(&[
        "--metrics-addr",
        "198.18.0.2:9477",
        "--alertmanager-url",
        "http://198.18.0.1:19093",
    ]);
    let dir = std::env::temp_dir().join(format!("scanwatch-prom-{}", lab.lab.target_ns));
    std::fs::create_dir_all(dir.join("tsdb")).expect("dir");
    std::fs::create_dir_all(dir.join("am")).expect("dir");
    let rules = deploy("prometheus/scanwatch-rules.yml");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['198.18.0.1:19093']\n\
             scrape_configs:\n  - job_name: scanwatch\n    static_configs:\n      - targets: ['198.18.0.2:9477']\n",
            rules.display()
        ),
    )
    .expect("prometheus.yml");
    std::fs::write(
        dir.join("alertmanager.yml"),
        "route:\n  receiver: 'null'\n  group_wait: 1s\nreceivers:\n  - name: 'null'\n",
    )
    .expect("alertmanager.yml");
    // Both servers run in the scanner namespace, on lab addresses only.
    let mut am = lab.lab.in_scanner();
    am.arg("prometheus-alertmanager")
        .arg(format!(
            "--config.file={}",
            dir.join("alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.join("am").display()))
        .args([
            "--web.listen-address=198.18.0.1:19093",
            "--cluster.listen-address=",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.lab.spawn(am).expect("alertmanager");
    let mut prom = lab.lab.in_scanner();
    prom.arg("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .args(["--web.listen-address=127.0.0.1:19090"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    lab.lab.spawn(prom).expect("prometheus");

    // The scrape target is up.
    wait_for(
        "Prometheus to scrape the agent",
        Duration::from_secs(60),
        || {
            let body = http_get(
                &lab,
                "http://127.0.0.1:19090/api/v1/query",
                &[("query", "up{job=\"scanwatch\"}")],
            );
            let v: Value = serde_json::from_str(&body).ok()?;
            (v["data"]["result"][0]["value"][1] == "1").then_some(())
        },
    );

    // The scraped text passes promtool's checks, and has every metric.
    let metrics = http_get(&lab, "http://198.18.0.2:9477/metrics", &[]);
    common::assert_promtool_clean(&metrics);
    for name in [
        "scanwatch_packets_total{",
        "scanwatch_parse_errors_total{",
        "scanwatch_tracked_sources{",
        "scanwatch_source_map_capacity ",
        "scanwatch_source_map_evictions_total ",
        "scanwatch_detections_total{",
        "scanwatch_active_scanners{",
        "scanwatch_alerts_total ",
        "scanwatch_blocked_sources ",
        "scanwatch_dropped_packets_total{",
        "scanwatch_poll_duration_seconds_bucket{",
        "scanwatch_build_info{",
        "scanwatch_xdp_attached{",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }

    // A real scan.
    let scanner_if = lab.lab.scanner_if.clone();
    lab.lab
        .add_scanner_address("198.18.0.11/24")
        .expect("address");
    lab.scan(&[
        "nmap",
        "-n",
        "-Pn",
        "-sS",
        "-e",
        &scanner_if,
        "-S",
        "198.18.0.11",
        TARGET_V4,
    ]);
    let started = Instant::now();

    let firing = wait_for(
        "ScanwatchScanDetected firing in Prometheus",
        Duration::from_secs(60),
        || {
            let body = http_get(&lab, "http://127.0.0.1:19090/api/v1/alerts", &[]);
            let v: Value = serde_json::from_str(&body).ok()?;
            v["data"]["alerts"]
                .as_array()?
                .iter()
                .find(|a| {
                    a["labels"]["alertname"] == "ScanwatchScanDetected"
                        && a["labels"]["source"] == "198.18.0.11"
                        && a["labels"]["type"] == "port_scan"
                        && a["state"] == "firing"
                })
                .cloned()
        },
    );
    println!(
        "ScanwatchScanDetected firing {:.1} s after the scan: {firing}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(firing["labels"]["instance"], "198.18.0.2:9477");

    // The agent's own push reached Alertmanager.
    let pushed = wait_for(
        "the agent's alert in Alertmanager",
        Duration::from_secs(30),
        || {
            let body = http_get(
                &lab,
                "http://198.18.0.1:19093/api/v2/alerts",
                &[("filter", "origin=\"scanwatch-agent\"")],
            );
            let v: Value = serde_json::from_str(&body).ok()?;
            v.as_array()?
                .iter()
                .find(|a| a["labels"]["source"] == "198.18.0.11")
                .cloned()
        },
    );
    assert_eq!(pushed["labels"]["alertname"], "ScanwatchScanDetected");
    assert_eq!(pushed["labels"]["type"], "port_scan");
    assert_eq!(pushed["status"]["state"], "active");
    assert!(pushed["endsAt"].as_str().is_some_and(|e| !e.is_empty()));

    // Counters moved, and the scanner is in the top-N series.
    let value = |q: &str| -> f64 {
        let body = http_get(&lab, "http://127.0.0.1:19090/api/v1/query", &[("query", q)]);
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1.0)
    };
    wait_for("counters in Prometheus", Duration::from_secs(30), || {
        (value("sum(scanwatch_packets_total{kind=\"syn\"})") >= 1000.0
            && value("scanwatch_detections_total{type=\"port_scan\"}") >= 1.0
            && value("scanwatch_alerts_total") >= 1.0
            && value("scanwatch_top_source_probes{source=\"198.18.0.11\",type=\"port_scan\"}")
                >= 15.0)
            .then_some(())
    });

    // Every dashboard expression is valid PromQL against the real data.
    for expr in dashboard_exprs() {
        let body = http_get(
            &lab,
            "http://127.0.0.1:19090/api/v1/query",
            &[("query", &expr)],
        );
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["status"], "success", "dashboard query {expr}: {body}");
    }

    assert!(lab.stop_agent(), "agent exits 0 on SIGTERM");
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
