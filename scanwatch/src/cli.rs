//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use scanwatch_common::maps::{DEFAULT_SOURCE_MAP_SIZE, MAX_SOURCE_MAP_SIZE, MIN_SOURCE_MAP_SIZE};

use crate::{
    alerts::DEFAULT_ALERT_LOG, bpffs::DEFAULT_PIN_DIR, control::DEFAULT_CONTROL_SOCKET,
    loader::AttachMode,
};

#[derive(Debug, Parser)]
#[command(
    name = "scanwatch",
    version,
    about = "eBPF/XDP detector of network reconnaissance (port scans, host sweeps, ping sweeps)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the XDP program, attach it to interfaces and report what it sees.
    Run(RunArgs),
    /// Show the busiest sources from a running agent's pinned maps.
    Top(TopArgs),
    /// Block an address or network in XDP (through the agent's control socket; root only).
    Block(BlockArgs),
    /// Remove a block.
    Unblock(UnblockArgs),
    /// List the blocks with their remaining time, reason and origin.
    Blocks(ListArgs),
    /// The agent's interfaces, modes, counts and configuration summary.
    Status(ListArgs),
    /// Validate a configuration file without loading anything (no root
    /// needed): exit 0 if valid, 2 with the file, line and field if not.
    CheckConfig(CheckConfigArgs),
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The TOML file `scanwatch run --config` would read.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct BlockArgs {
    /// IPv4/IPv6 address or CIDR.
    #[arg(value_name = "IP|CIDR", value_parser = parse_target)]
    pub target: ipnet::IpNet,
    /// How long: seconds, or with a unit (90s, 15m, 1h, 2d); without it, until unblocked.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub ttl: Option<std::time::Duration>,
    /// Why (kept with the block, shown by `blocks`).
    #[arg(long, value_name = "TEXT", default_value = "manual")]
    pub reason: String,
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct UnblockArgs {
    #[arg(value_name = "IP|CIDR", value_parser = parse_target)]
    pub target: ipnet::IpNet,
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
}

/// An address (as a host network) or a CIDR.
pub fn parse_target(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an IPv4/IPv6 address or CIDR"))
}

/// `90`, `90s`, `15m`, `1h`, `2d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 90, 90s, 15m, 1h, 2d)");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n
        .checked_mul(mult)
        .filter(|v| (1..=365 * 86_400).contains(v))
        .ok_or_else(|| format!("{s:?}: between 1 s and 365 d"))?;
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to watch (repeat for several).
    #[arg(long = "iface", value_name = "IF", required = true)]
    pub ifaces: Vec<String>,
    /// XDP attach mode: auto tries native and falls back to skb with a warning.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub xdp_mode: AttachMode,
    /// bpffs directory where the maps are pinned (mounted if needed).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Number of sources tracked (LRU: the least recently seen is evicted when full).
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_SOURCE_MAP_SIZE,
        value_parser = clap::value_parser!(u32).range(i64::from(MIN_SOURCE_MAP_SIZE)..=i64::from(MAX_SOURCE_MAP_SIZE))
    )]
    pub map_size: u32,
    /// Seconds between summary log lines.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub interval: u64,
    /// TOML configuration (detection windows, thresholds, ignore list); defaults without it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// File the alerts are appended to, one JSON object per line.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_ALERT_LOG)]
    pub alert_log: PathBuf,
    /// Address the Prometheus `/metrics` endpoint listens on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9477")]
    pub metrics_addr: std::net::SocketAddr,
    /// How many flagged sources `scanwatch_top_source_probes` exports.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        value_parser = clap::value_parser!(u16).range(0..=1000)
    )]
    pub metrics_top: u16,
    /// Seconds between counts of the source map (`scanwatch_tracked_sources`).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub count_interval: u64,
    /// Push detections to this Alertmanager (v2 API), e.g. http://127.0.0.1:9093.
    #[arg(long, value_name = "URL")]
    pub alertmanager_url: Option<String>,
    /// The root-only control socket (`scanwatch block`, `blocks`, `status`).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// bpffs directory where the running agent pinned its maps.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// How many sources to show (0 = all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("scanwatch").chain(args.iter().copied()))
    }

    #[test]
    fn run_defaults() {
        let Ok(Cli {
            command: Command::Run(run),
        }) = parse(&["run", "--iface", "eth0", "--iface", "eth1"])
        else {
            panic!("run should parse");
        };
        assert_eq!(run.ifaces, ["eth0", "eth1"]);
        assert_eq!(run.xdp_mode, AttachMode::Auto);
        assert_eq!(run.pin_dir, PathBuf::from("/sys/fs/bpf/scanwatch"));
        assert_eq!(run.map_size, 262_144);
        assert_eq!(
            run.alert_log,
            PathBuf::from("/var/log/scanwatch/alerts.jsonl")
        );
        assert_eq!(run.config, None);
        assert_eq!(run.metrics_addr.to_string(), "127.0.0.1:9477");
        assert_eq!(run.metrics_top, 10);
        assert_eq!(run.alertmanager_url, None);
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["run"][..],
            &["run", "--iface", "eth0", "--map-size", "10"],
            &["run", "--iface", "eth0", "--map-size", "99999999999"],
            &["run", "--iface", "eth0", "--map-size", "lots"],
            &["run", "--iface", "eth0", "--xdp-mode", "turbo"],
            &["run", "--iface", "eth0", "--interval", "0"],
            &["run", "--iface", "eth0", "--metrics-addr", "localhost"],
            &["run", "--iface", "eth0", "--metrics-top", "5000"],
            &["top", "--limit", "-1"],
        ] {
            let err = parse(args).expect_err(&format!("{args:?} should fail"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn block_arguments() {
        let Ok(Cli {
            command: Command::Block(b),
        }) = parse(&["block", "198.18.0.9", "--ttl", "15m", "--reason", "pentest"])
        else {
            panic!("block should parse");
        };
        assert_eq!(b.target.to_string(), "198.18.0.9/32");
        assert_eq!(b.ttl, Some(std::time::Duration::from_secs(900)));
        assert_eq!(
            parse_target("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in [
            &["block", "not-an-ip"][..],
            &["block", "10.0.0.0/33"],
            &["block", "1.2.3.4", "--ttl", "5y"],
            &["block", "1.2.3.4", "--ttl", "0"],
        ] {
            assert_eq!(
                parse(bad).map(|_| ()).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172_800);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
    }

    #[test]
    fn top_flags() {
        let Ok(Cli {
            command: Command::Top(top),
        }) = parse(&[
            "top",
            "--json",
            "--limit",
            "5",
            "--pin-dir",
            "/sys/fs/bpf/x",
        ])
        else {
            panic!("top should parse");
        };
        assert!(top.json);
        assert_eq!(top.limit, 5);
        assert_eq!(top.pin_dir, PathBuf::from("/sys/fs/bpf/x"));
    }
}
