//! Usage and configuration errors, run through the real binary as any user
//! (nothing is loaded, attached or pinned): a clear one-line message naming
//! the value, file, line and field, no panic, exit 2. The refusals that need
//! root are in `scanwatch-integration/tests/cli_values.rs` and `agent_cli.rs`.

use std::process::{Command, Stdio};

use scanwatch_lab::refusal::{assert_fails_with, refused, stderr};

const AGENT: &str = env!("CARGO_BIN_EXE_scanwatch");

/// Values clap rejects before the agent does anything (no root needed).
const USAGE_ERRORS: &[(&[&str], &str)] = &[
    (&["run"], "no interface to watch: give --iface IF"),
    (
        &["run", "--iface", "eth0", "--map-size", "0"],
        "0 is not in 1024..=16777216",
    ),
    (
        &["run", "--iface", "eth0", "--map-size", "4294967296"],
        "4294967296 is not in 1024..=16777216",
    ),
    (
        &["run", "--iface", "eth0", "--map-size=-1"],
        "-1 is not in 1024..=16777216",
    ),
    (
        &["run", "--iface", "eth0", "--map-size", "1k"],
        "invalid digit",
    ),
    (
        &["run", "--iface", "eth0", "--interval", "0"],
        "0 is not in 1..=3600",
    ),
    (
        &["run", "--iface", "eth0", "--count-interval", "86400"],
        "86400 is not in 1..=3600",
    ),
    (
        &["run", "--iface", "eth0", "--metrics-top", "5000"],
        "5000 is not in 0..=1000",
    ),
    (
        &["run", "--iface", "eth0", "--xdp-mode", "turbo"],
        "invalid value 'turbo'",
    ),
    (
        &["run", "--iface", "eth0", "--metrics-addr", "localhost"],
        "invalid socket address syntax",
    ),
    (
        &[
            "run",
            "--iface",
            "eth0",
            "--metrics-addr",
            "127.0.0.1:99999",
        ],
        "invalid socket address syntax",
    ),
    (
        &["run", "--iface", "eth0", "--metrics-addr", "300.1.1.1:9477"],
        "invalid socket address syntax",
    ),
    (
        &["run", "--iface", "eth0", "--metrics-addr", "::1:9477"],
        "invalid socket address syntax",
    ),
    (
        &["block", "not-an-ip"],
        "\"not-an-ip\" is not an IPv4/IPv6 address or CIDR",
    ),
    (
        &["block", "10.0.0.0/33"],
        "\"10.0.0.0/33\" is not an IPv4/IPv6 address or CIDR",
    ),
    (
        &["block", "fd00::/129"],
        "is not an IPv4/IPv6 address or CIDR",
    ),
    (
        &["block", "198.18.0.1/"],
        "is not an IPv4/IPv6 address or CIDR",
    ),
    (&["block", ""], "is not an IPv4/IPv6 address or CIDR"),
    (
        &["unblock", "10.0.0.256"],
        "is not an IPv4/IPv6 address or CIDR",
    ),
    (
        &["block", "198.18.0.9", "--ttl", "0"],
        "\"0\": between 1 s and 365 d",
    ),
    (
        &["block", "198.18.0.9", "--ttl", "366d"],
        "\"366d\": between 1 s and 365 d",
    ),
    (
        &["block", "198.18.0.9", "--ttl", "5y"],
        "\"5y\" is not a duration",
    ),
    (
        &["block", "198.18.0.9", "--ttl=-5"],
        "\"-5\" is not a duration",
    ),
    (
        &["block", "198.18.0.9", "--ttl", "99999999999999999999"],
        "is not a duration",
    ),
    (
        &["block", "198.18.0.9", "--ttl", "9999999999999999d"],
        "between 1 s and 365 d",
    ),
    (&["top", "--limit=-1"], "invalid digit"),
    (
        &["evidence", "198.18.0.300"],
        "\"198.18.0.300\" is not an IPv4/IPv6 address or CIDR",
    ),
    (&["evidence"], "<SOURCE>"),
    (&["check-config"], "<FILE>"),
    (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
];

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let mut failures = Vec::new();
    for (args, needle) in USAGE_ERRORS {
        let o = Command::new(AGENT)
            .args(*args)
            .stdin(Stdio::null())
            .output()
            .expect("run scanwatch");
        failures.extend(refused(&o, 2, needle, args));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `run` takes everything from the configuration file's [agent] table; its
/// errors name the file, line and field (exit 2), and with no interface
/// anywhere it says where to give one (exit 2), before any privilege check.
#[test]
fn agent_config_errors_exit_2() {
    let dir = std::env::temp_dir().join(format!("scanwatch-agent-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let run_with = |text: &str, extra: &[&str]| {
        let path = dir.join("scanwatch.toml");
        std::fs::write(&path, text).expect("write config");
        Command::new(AGENT)
            .args(["run", "--config"])
            .arg(&path)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run scanwatch")
    };
    let shown = dir.join("scanwatch.toml").display().to_string();
    let o = run_with("[agent]\nmetrics_top = 5000\n", &[]);
    assert_fails_with(
        &o,
        2,
        &format!(
            "config {shown}: line 2: field `agent.metrics_top`: 5000 is out of range 0..=1000"
        ),
        "out of range",
    );
    let o = run_with("[agent]\ninterfaces = [\"eth0\", \"eth0\"]\n", &[]);
    assert_fails_with(&o, 2, "listed twice", "duplicate interface in the file");
    let o = run_with("[agent]\nmetrics_addr = \"nowhere\"\n", &[]);
    assert_fails_with(&o, 2, &format!("config {shown}"), "bad address");
    let o = run_with("[agent]\n", &[]);
    assert_fails_with(
        &o,
        2,
        "no interface to watch: give --iface IF or set `interfaces` in the config's [agent] table",
        "no interface",
    );
    // A flag overrides the file: its interface is the one looked up.
    let o = run_with(
        "[agent]\ninterfaces = [\"eth0\"]\n",
        &["--iface", "nosuch0"],
    );
    assert!(
        stderr(&o).contains("nosuch0") || stderr(&o).contains("needs CAP_"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `scanwatch evidence SOURCE`: a missing evidence directory or a bad
/// configuration exits 2 with a message naming it.
#[test]
fn evidence_errors_exit_2() {
    let dir = std::env::temp_dir().join(format!("scanwatch-evidence-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("scanwatch.toml");
    let missing = dir.join("no-such-dir");
    std::fs::write(
        &config,
        format!("[evidence]\ndirectory = \"{}\"\n", missing.display()),
    )
    .expect("config");
    let evidence = |config: &std::path::Path| {
        Command::new(AGENT)
            .args(["evidence", "198.18.0.5", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .output()
            .expect("run scanwatch")
    };
    assert_fails_with(
        &evidence(&config),
        2,
        &format!("evidence directory {} does not exist", missing.display()),
        "missing directory",
    );
    std::fs::write(&config, "[evidence]\npackets_per_source = 0\n").expect("config");
    assert_fails_with(
        &evidence(&config),
        2,
        "field `evidence.packets_per_source`: 0 is out of range 1..=64",
        "bad config",
    );
    // An existing directory without files of that source: a message, exit 0.
    std::fs::create_dir_all(&missing).expect("dir");
    std::fs::write(
        &config,
        format!("[evidence]\ndirectory = \"{}\"\n", missing.display()),
    )
    .expect("config");
    let o = evidence(&config);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no evidence files for 198.18.0.5"),
        "{o:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
