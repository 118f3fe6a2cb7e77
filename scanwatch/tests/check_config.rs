//! `scanwatch check-config FILE`: every field of the configuration, given an
//! invalid value, is an error naming the file, the line and the field, with
//! exit code 2; a valid file exits 0. No root needed (the other unprivileged
//! runs of the binary are in `cli_usage.rs`).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use scanwatch::{
    config::{Config, FeedAction, FeedConfig, WebSignature},
    model::WebScanKind,
};

const AGENT: &str = env!("CARGO_BIN_EXE_scanwatch");

/// Lines before each case's TOML, so line numbers are not trivially 1..3.
const PREAMBLE: &str = "# scanwatch check-config test\n\n";

/// (field as errors name it, TOML setting it wrongly, part of the message).
/// The line expected is the one holding the field's key in the TOML.
pub const INVALID_FIELDS: &[(&str, &str, &str)] = &[
    (
        "agent.interfaces",
        "[agent]\ninterfaces = [\"eth0\", \"eth0\"]\n",
        "is listed twice",
    ),
    (
        "agent.xdp_mode",
        "[agent]\nxdp_mode = \"turbo\"\n",
        "unknown variant `turbo`",
    ),
    (
        "agent.pin_dir",
        "[agent]\npin_dir = \"\"\n",
        "must not be empty",
    ),
    (
        "agent.map_size",
        "[agent]\nmap_size = 10\n",
        "10 is out of range 1024..=16777216",
    ),
    (
        "agent.summary_interval_seconds",
        "[agent]\nsummary_interval_seconds = 0\n",
        "0 is out of range 1..=3600",
    ),
    (
        "agent.alert_log",
        "[agent]\nalert_log = \"\"\n",
        "must not be empty",
    ),
    (
        "agent.metrics_addr",
        "[agent]\nmetrics_addr = \"localhost\"\n",
        "invalid socket address",
    ),
    (
        "agent.metrics_top",
        "[agent]\nmetrics_top = 5000\n",
        "5000 is out of range 0..=1000",
    ),
    (
        "agent.count_interval_seconds",
        "[agent]\ncount_interval_seconds = 0\n",
        "0 is out of range 1..=3600",
    ),
    (
        "agent.alertmanager_url",
        "[agent]\nalertmanager_url = \"https://am\"\n",
        "https is not supported",
    ),
    (
        "agent.control_socket",
        "[agent]\ncontrol_socket = \"\"\n",
        "must not be empty",
    ),
    (
        "agent.keep_attached",
        "[agent]\nkeep_attached = \"yes\"\n",
        "expected a boolean",
    ),
    (
        "detection.reply_scan.enabled",
        "[detection.reply_scan]\nenabled = 1\n",
        "expected a boolean",
    ),
    (
        "detection.reply_scan.theta0",
        "[detection.reply_scan]\ntheta0 = 0\n",
        "must lie strictly between 0 and 1",
    ),
    (
        "detection.reply_scan.theta1",
        "[detection.reply_scan]\ntheta1 = 0.9\n",
        "0.9 must be below theta0 (0.8)",
    ),
    (
        "detection.reply_scan.alpha",
        "[detection.reply_scan]\nalpha = 0.995\n",
        "0.995 must be below beta (0.99)",
    ),
    (
        "detection.reply_scan.beta",
        "[detection.reply_scan]\nbeta = 1.5\n",
        "must lie strictly between 0 and 1",
    ),
    (
        "detection.reply_scan.no_answer_timeout_seconds",
        "[detection.reply_scan]\nno_answer_timeout_seconds = 0\n",
        "0 is out of range 1..=3600",
    ),
    (
        "detection.reply_scan.successes_per_port",
        "[detection.reply_scan]\nsuccesses_per_port = 1\n",
        "expected a boolean",
    ),
    (
        "detection.distributed_scan.enabled",
        "[detection.distributed_scan]\nenabled = 2\n",
        "invalid type",
    ),
    (
        "detection.distributed_scan.distinct_ports",
        "[detection.distributed_scan]\ndistinct_ports = 1\n",
        "1 must be 0 (the per-source threshold) or in 2..=65536",
    ),
    (
        "detection.distributed_scan.distinct_hosts",
        "[detection.distributed_scan]\ndistinct_hosts = 70000\n",
        "70000 must be 0 (the per-source threshold) or in 2..=65536",
    ),
    (
        "detection.distributed_scan.min_sources",
        "[detection.distributed_scan]\nmin_sources = 1\n",
        "1 is out of range 2..=65536",
    ),
    (
        "detection.distributed_scan.top_sources",
        "[detection.distributed_scan]\ntop_sources = 0\n",
        "0 is out of range 1..=256",
    ),
    (
        "detection.web.enabled",
        "[detection.web]\nenabled = \"yes\"\n",
        "invalid type",
    ),
    (
        "detection.web.ports",
        "[detection.web]\nports = []\n",
        "list 1 to 8 ports (the kernel's slots), not 0",
    ),
    (
        "detection.web.ports[2]",
        "[detection.web]\nports = [80, 443, 80]\n",
        "port 80 is listed twice",
    ),
    (
        "detection.web.catalogue",
        "[detection.web]\ncatalogue = \"\"\n",
        "must not be empty",
    ),
    (
        "detection.web.wordlist_paths",
        "[detection.web]\nwordlist_paths = 3\n",
        "3 is out of range 5..=10000",
    ),
    (
        "detection.web.max_sources",
        "[detection.web]\nmax_sources = 0\n",
        "0 is out of range 16..=1048576",
    ),
    (
        "detection.web.signatures[0].tool",
        "[[detection.web.signatures]]\ntool = \" \"\nkind = \"vuln_scanner\"\nuser_agent = \"x\"\n",
        "must not be empty",
    ),
    (
        "detection.web.signatures[0].kind",
        "[[detection.web.signatures]]\ntool = \"x\"\nkind = \"fuzzer\"\nuser_agent = \"x\"\n",
        "unknown variant `fuzzer`",
    ),
    (
        "detection.web.signatures[1].user_agent",
        "[[detection.web.signatures]]\ntool = \"x\"\nkind = \"vuln_scanner\"\nja4 = \"t13d1516h2_8daaf6152771_e5627efa2ab1\"\n\n[[detection.web.signatures]]\ntool = \"x\"\nkind = \"vuln_scanner\"\nuser_agent = \"nikto(\"\n",
        "bad regex",
    ),
    (
        "detection.web.signatures[0].ja4",
        "[[detection.web.signatures]]\ntool = \"x\"\nkind = \"vuln_scanner\"\nja4 = \"t13d1516h2\"\n",
        "is not a JA4 fingerprint",
    ),
    (
        "detection.web.signatures[0].note",
        "[[detection.web.signatures]]\ntool = \"x\"\nkind = \"vuln_scanner\"\nuser_agent = \"x\"\nnote = \"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\"\n",
        "must be at most 1000 characters",
    ),
    (
        "detection.window_seconds",
        "[detection]\nwindow_seconds = 0\n",
        "0 is out of range 1..=86400",
    ),
    (
        "detection.window_seconds",
        "[detection]\nwindow_seconds = -5\n",
        "invalid value",
    ),
    (
        "detection.suppression_seconds",
        "[detection]\nsuppression_seconds = 700000\n",
        "out of range 0..=604800",
    ),
    (
        "detection.first_alert_hold_milliseconds",
        "[detection]\nfirst_alert_hold_milliseconds = 1001\n",
        "1001 is out of range 0..=1000",
    ),
    (
        "detection.ipv4_prefix",
        "[detection]\nipv4_prefix = 33\n",
        "33 is out of range 8..=32",
    ),
    (
        "detection.ipv6_prefix",
        "[detection]\nipv6_prefix = 8\n",
        "8 is out of range 16..=128",
    ),
    (
        "detection.admission_slots",
        "[detection]\nadmission_slots = 3000\n",
        "3000 must be a power of two in 1024..=1048576",
    ),
    (
        "detection.escalation_factor",
        "[detection]\nescalation_factor = 1.0\n",
        "must be a number above 1",
    ),
    (
        "detection.escalation_factor",
        "[detection]\nescalation_factor = nan\n",
        "must be a number above 1",
    ),
    (
        "detection.ignore[1]",
        "[detection]\nignore = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
        "invalid IP address",
    ),
    (
        "detection.port_scan.enabled",
        "[detection.port_scan]\nenabled = \"yes\"\ndistinct_ports = 15\n",
        "invalid type",
    ),
    (
        "detection.port_scan.distinct_ports",
        "[detection.port_scan]\ndistinct_ports = 1\n",
        "1 is out of range 2..=620",
    ),
    (
        "detection.udp_scan.enabled",
        "[detection.udp_scan]\nenabled = 1\ndistinct_ports = 15\n",
        "invalid type",
    ),
    (
        "detection.udp_scan.distinct_ports",
        "[detection.udp_scan]\ndistinct_ports = 5000\n",
        "out of range 2..=265",
    ),
    (
        "detection.host_sweep.enabled",
        "[detection]\nhost_sweep = { enabled = \"no\", distinct_hosts = 25 }\n",
        "invalid type",
    ),
    (
        "detection.host_sweep.distinct_hosts",
        "[detection]\nhost_sweep = { distinct_hosts = 0 }\n",
        "out of range 2..=620",
    ),
    (
        "detection.ping_sweep.enabled",
        "detection.ping_sweep.enabled = []\ndetection.ping_sweep.distinct_hosts = 10\n",
        "invalid type",
    ),
    (
        "detection.ping_sweep.distinct_hosts",
        "detection.ping_sweep.distinct_hosts = 99999\n",
        "out of range 2..=265",
    ),
    (
        "detection.stealth_scan.enabled",
        "[detection.stealth_scan]\nenabled = 0.5\nprobes = 5\n",
        "invalid type",
    ),
    (
        "detection.stealth_scan.probes",
        "[detection.stealth_scan]\nprobes = 0\n",
        "out of range 1..=1000000",
    ),
    (
        "detection.syn_flood_source.enabled",
        "[detection.syn_flood_source]\nenabled = \"true\"\nsyns_per_second = 50000\n",
        "invalid type",
    ),
    (
        "detection.syn_flood_source.syns_per_second",
        "[detection.syn_flood_source]\nsyns_per_second = 10\n",
        "out of range 100..=100000000",
    ),
    (
        "detection.syn_flood_source.syns_per_second",
        "[detection.syn_flood_source]\nsyns_per_second = 99999999999\n",
        "invalid value",
    ),
    (
        "mitigation.auto_block",
        "[mitigation]\nauto_block = \"on\"\n",
        "invalid type",
    ),
    (
        "mitigation.dry_run",
        "[mitigation]\ndry_run = 1\n",
        "invalid type",
    ),
    (
        "mitigation.default_ttl_seconds",
        "[mitigation]\ndefault_ttl_seconds = 0\n",
        "0 is out of range 1..=2592000",
    ),
    (
        "mitigation.default_ttl_seconds",
        "[mitigation]\ndefault_ttl_seconds = 100000\n",
        "above max_ttl_seconds (86400, the default)",
    ),
    (
        "mitigation.ttl_seconds.port_scan",
        "[mitigation.ttl_seconds]\nport_scan = 0\n",
        "0 is out of range 1..=2592000",
    ),
    (
        "mitigation.ttl_seconds.port_scna",
        "[mitigation]\nttl_seconds = { port_scna = 60 }\n",
        "unknown scan type \"port_scna\"",
    ),
    (
        "mitigation.repeat_factor",
        "[mitigation]\nrepeat_factor = 0.5\n",
        "must be a number of at least 1",
    ),
    (
        "mitigation.max_ttl_seconds",
        "[mitigation]\ndefault_ttl_seconds = 600\nmax_ttl_seconds = 60\n",
        "60 is below default_ttl_seconds (600)",
    ),
    (
        "mitigation.max_ttl_seconds",
        "[mitigation]\nmax_ttl_seconds = 99999999999\n",
        "out of range 1..=31536000",
    ),
    (
        "mitigation.capacity",
        "[mitigation]\ncapacity = 0\n",
        "0 is out of range 16..=16777216",
    ),
    (
        "mitigation.capacity",
        "[mitigation]\ncapacity = 4294967296\n",
        "invalid value",
    ),
    (
        "mitigation.never_block[0]",
        "[mitigation]\nnever_block = [\"192.0.2.0/24x\"]\n",
        "invalid IP address",
    ),
    (
        "mitigation.never_block_host_addresses",
        "[mitigation]\nnever_block_host_addresses = \"yes\"\n",
        "invalid type",
    ),
    (
        "mitigation.feed_capacity",
        "[mitigation]\nfeed_capacity = 100000000\n",
        "out of range 16..=16777216",
    ),
    (
        "feeds[0].name",
        "[[feeds]]\nname = \"\"\npath = \"/tmp/x\"\naction = \"tag\"\n",
        "must be 1 to 32 bytes and unique",
    ),
    (
        "feeds[1].name",
        "[[feeds]]\nname = \"a\"\npath = \"/tmp/x\"\naction = \"tag\"\n\n[[feeds]]\nname = \"a\"\npath = \"/tmp/y\"\naction = \"drop\"\n",
        "must be 1 to 32 bytes and unique",
    ),
    (
        "feeds[0].path",
        "[[feeds]]\nname = \"a\"\npath = \"\"\naction = \"tag\"\n",
        "needs the path",
    ),
    (
        "feeds[0].action",
        "[[feeds]]\nname = \"a\"\npath = \"/tmp/x\"\naction = \"explode\"\n",
        "unknown variant `explode`",
    ),
    (
        "evidence.enabled",
        "[evidence]\nenabled = \"yes\"\n",
        "expected a boolean",
    ),
    (
        "evidence.directory",
        "[evidence]\ndirectory = \"evidence\"\n",
        "evidence must be an absolute path",
    ),
    (
        "evidence.packets_per_source",
        "[evidence]\npackets_per_source = 65\n",
        "65 is out of range 1..=64",
    ),
    (
        "evidence.max_bytes",
        "[evidence]\nmax_bytes = 4096\n",
        "4096 is out of range 1048576..=1099511627776",
    ),
    (
        "crowdsec.lapi_url",
        "[crowdsec]\nlapi_url = \"https://lapi:8080\"\napi_key_file = \"/etc/k\"\n",
        "https is not supported",
    ),
    (
        "crowdsec.lapi_url",
        "[crowdsec]\nlapi_url = \"http://lapi:8080\"\n",
        "set api_key_file (bouncer), machine_id (alerts), or both",
    ),
    (
        "crowdsec.api_key_file",
        "[crowdsec]\napi_key_file = \"/etc/scanwatch/crowdsec.key\"\n",
        "needs lapi_url",
    ),
    (
        "crowdsec.update_frequency_seconds",
        "[crowdsec]\nupdate_frequency_seconds = 0\n",
        "0 is out of range 1..=3600",
    ),
    (
        "crowdsec.scopes[1]",
        "[crowdsec]\nscopes = [\"Ip\", \"Country\"]\n",
        "unknown scope \"Country\": expected Ip or Range",
    ),
    (
        "crowdsec.scopes",
        "[crowdsec]\nscopes = []\n",
        "needs at least one of Ip, Range",
    ),
    (
        "crowdsec.origins[0]",
        "[crowdsec]\norigins = [\"c s\"]\n",
        "must be 1 to 64 letters",
    ),
    (
        "crowdsec.decision_types[0]",
        "[crowdsec]\ndecision_types = [\"\"]\n",
        "must be 1 to 64 letters",
    ),
    (
        "crowdsec.machine_id",
        "[crowdsec]\nmachine_id = \"edge 1\"\n",
        "must be 1 to 64 letters",
    ),
    (
        "crowdsec.machine_id",
        "[crowdsec]\nmachine_id = \"edge1\"\npassword_file = \"/etc/p\"\n",
        "needs lapi_url",
    ),
    (
        "crowdsec.password_file",
        "[crowdsec]\nlapi_url = \"http://lapi:8080\"\nmachine_id = \"edge1\"\npassword_file = \"\"\n",
        "machine_id needs a password_file",
    ),
    (
        "crowdsec.queue_capacity",
        "[crowdsec]\nqueue_capacity = 0\n",
        "0 is out of range 1..=1000000",
    ),
    // Unknown and missing keys at each level.
    (
        "detections",
        "[detections]\nwindow_seconds = 5\n",
        "unknown field `detections`",
    ),
    (
        "detection.window_secs",
        "[detection]\nwindow_secs = 5\n",
        "unknown field `window_secs`",
    ),
    (
        "detection.port_scan.ports",
        "[detection.port_scan]\ndistinct_ports = 15\nports = 3\n",
        "unknown field `ports`",
    ),
    (
        "detection.port_scan",
        "[detection]\nport_scan = { enabled = true }\n",
        "missing field `distinct_ports`",
    ),
    (
        "mitigation.auto_blok",
        "[mitigation]\nauto_blok = true\n",
        "unknown field `auto_blok`",
    ),
    (
        "feeds[0].url",
        "[[feeds]]\nname = \"a\"\npath = \"/tmp/x\"\naction = \"tag\"\nurl = \"https://x\"\n",
        "unknown field `url`",
    ),
];

fn check(path: &Path) -> Output {
    Command::new(AGENT)
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run scanwatch check-config")
}

/// The line of the key the field ends with, in the case's TOML.
fn expected_line(field: &str, toml: &str) -> usize {
    let last = field
        .rsplit('.')
        .next()
        .unwrap_or(field)
        .split('[')
        .next()
        .unwrap_or(field);
    let index: usize = field
        .split_once('[')
        .and_then(|(_, r)| r.split(']').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    let text = format!("{PREAMBLE}{toml}");
    // For feeds[N].key: the key inside the N-th [[feeds]] table.
    let mut feeds_seen = 0usize;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("[[feeds]]") {
            feeds_seen += 1;
            continue;
        }
        let in_right_feed = !field.starts_with("feeds[") || feeds_seen == index + 1;
        let is_key = t.starts_with(&format!("{last} ="))
            || t.contains(&format!(".{last} ="))
            || t.contains(&format!("{{ {last} ="))
            || t.contains(&format!(", {last} ="))
            || t.starts_with(&format!("[{last}]"))
            || t.starts_with(&format!("[detection.{last}]"));
        if in_right_feed && is_key {
            return i + 1;
        }
    }
    panic!("test table: {field} not found in {toml:?}");
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "scanwatch-check-config-{}-{test}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn every_invalid_field_names_file_line_and_field_with_exit_2() {
    let dir = temp_dir("fields");
    let mut failures = Vec::new();
    for (i, (field, toml, needle)) in INVALID_FIELDS.iter().enumerate() {
        let path = dir.join(format!("case{i}.toml"));
        std::fs::write(&path, format!("{PREAMBLE}{toml}")).expect("write case");
        let o = check(&path);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let line = expected_line(field, toml);
        let want = format!("config {}: line {line}: field `{field}`: ", path.display());
        if o.status.code() != Some(2)
            || !err.contains(&want)
            || !err.contains(needle)
            || err.contains("panicked")
            || !o.stdout.is_empty()
        {
            failures.push(format!(
                "{field} ({toml:?}): exit {:?}, want {want:?} and {needle:?} in stderr: {err}",
                o.status.code()
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every leaf of the configuration (as serde sees the structs) has a case in
/// [`INVALID_FIELDS`]: a field added to config.rs without a case fails here.
#[test]
fn the_table_covers_every_config_field() {
    let mut config = Config::default();
    config.detection.ignore = vec!["10.0.0.0/8".parse().expect("net")];
    config.mitigation.never_block = vec!["192.0.2.0/24".parse().expect("net")];
    config
        .mitigation
        .ttl_seconds
        .insert("port_scan".to_string(), 60);
    config.crowdsec.origins = vec!["cscli".into()];
    config.detection.web.signatures.push(WebSignature {
        tool: "x".into(),
        kind: WebScanKind::VulnScanner,
        user_agent: Some("x".into()),
        ja4: Some("t13d1516h2_8daaf6152771_e5627efa2ab1".into()),
        note: Some("x".into()),
    });
    config.feeds.push(FeedConfig {
        name: "a".into(),
        path: "/tmp/a".into(),
        action: FeedAction::Tag,
    });
    let value = serde_json::to_value(&config).expect("serialize");
    let mut leaves = BTreeSet::new();
    fn walk(v: &serde_json::Value, path: String, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, p, out);
                }
            }
            // One element stands for all of an array's elements.
            serde_json::Value::Array(a) => {
                for v in a {
                    walk(v, format!("{path}[N]"), out);
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
    walk(&value, String::new(), &mut leaves);
    let covered: BTreeSet<String> = INVALID_FIELDS
        .iter()
        .map(|(f, _, _)| {
            // feeds[1].name and ignore[1] cover feeds[N].name and ignore[N].
            let mut s = String::new();
            let mut rest = *f;
            while let Some((a, b)) = rest.split_once('[') {
                s.push_str(a);
                s.push_str("[N]");
                rest = b.split_once(']').map_or("", |(_, r)| r);
            }
            s.push_str(rest);
            s
        })
        .collect();
    let missing: Vec<&String> = leaves.iter().filter(|l| !covered.contains(*l)).collect();
    assert!(
        missing.is_empty(),
        "config fields without an invalid-value case: {missing:?}"
    );
    assert!(leaves.len() >= 29, "walked the whole config: {leaves:?}");
}

#[test]
fn valid_files_exit_0_and_feed_problems_are_warnings() {
    let dir = temp_dir("valid");
    let feed = dir.join("lab.netset");
    std::fs::write(&feed, "198.18.0.0/24\nbogus\n").expect("feed");
    // Every ```toml block of the README and of docs/*.md is a valid configuration.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, repo.join("README.md"));
    let mut blocks = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap_or_else(|e| panic!("{doc:?}: {e}"));
        let name = doc.file_stem().and_then(|n| n.to_str()).unwrap_or("doc");
        for (i, block) in text.split("```toml\n").skip(1).enumerate() {
            let toml = block.split("```").next().unwrap_or_default();
            let path = dir.join(format!("{name}{i}.toml"));
            std::fs::write(&path, toml).expect("write");
            let o = check(&path);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{} block {i}: {}",
                doc.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(String::from_utf8_lossy(&o.stdout).contains(": valid"));
            blocks += 1;
        }
    }
    assert!(
        blocks >= 3,
        "the README and docs/ have their configuration examples"
    );
    let path = dir.join("feeds.toml");
    std::fs::write(
        &path,
        format!(
            "[[feeds]]\nname = \"lab\"\npath = \"{}\"\naction = \"drop\"\n\n[[feeds]]\nname = \"gone\"\npath = \"/nonexistent/feed.netset\"\naction = \"tag\"\n",
            feed.display()
        ),
    )
    .expect("write");
    let o = check(&path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "warning: feed lab: {}:2: not an address or CIDR: \"bogus\"",
            feed.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("warning: feed gone: cannot read /nonexistent/feed.netset"),
        "{err}"
    );
    // Missing file and not TOML: exit 2, naming the file (and the line).
    let o = check(Path::new("/nonexistent/scanwatch.toml"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("cannot read config /nonexistent/scanwatch.toml")
    );
    let path = dir.join("broken.toml");
    std::fs::write(&path, "[detection]\nwindow_seconds = 5\n[mitigation\n").expect("write");
    let o = check(&path);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("config {}: line 3: ", path.display())),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The web scanner catalogue is read as the agent reads it: the packaged
/// one built in while the default path is absent, a named file that is
/// missing or invalid an error naming the file and what is wrong.
#[test]
fn the_web_catalogue_is_checked() {
    let dir = temp_dir("catalogue");
    let config = |catalogue: &Path| {
        let path = dir.join("web.toml");
        std::fs::write(
            &path,
            format!("[detection.web]\ncatalogue = \"{}\"\n", catalogue.display()),
        )
        .expect("write");
        check(&path)
    };
    let o = check(&{
        let p = dir.join("default.toml");
        std::fs::write(&p, "").expect("write");
        p
    });
    assert_eq!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("web scanner signatures"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let missing = dir.join("missing.toml");
    let o = config(&missing);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("detection.web.catalogue") && err.contains("cannot read"),
        "{err}"
    );
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[signature]]\ntool = \"x\"\nkind = \"vuln_scanner\"\nuser_agent = \"(unclosed\"\n",
    )
    .expect("write");
    let o = config(&bad);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
