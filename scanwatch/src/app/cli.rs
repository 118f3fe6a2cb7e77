//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use scanwatch_common::maps::{MAX_SOURCE_MAP_SIZE, MIN_SOURCE_MAP_SIZE};

use crate::{
    config::{AgentConfig, DEFAULT_CONTROL_SOCKET, DEFAULT_PIN_DIR, EvidenceConfig},
    model::{AttachMode, parse_duration, parse_target},
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
    #[command(after_long_help = RUN_AFTER_HELP)]
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
    /// Write man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateDocs {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Validate a configuration file without loading anything (no root
    /// needed): exit 0 if valid, 2 with the file, line and field if not.
    CheckConfig(CheckConfigArgs),
    /// The evidence packets kept for a source: its pcapng files and a short
    /// decode of each packet (reads the evidence directory: root).
    Evidence(EvidenceArgs),
}

#[derive(Debug, Args)]
pub struct EvidenceArgs {
    /// The source: an address (its network when the configuration counts
    /// sources by prefix) or a network as alerts name it.
    #[arg(value_name = "SOURCE", value_parser = parse_target)]
    pub source: ipnet::IpNet,
    /// The configuration the agent runs with (its evidence directory and
    /// source prefixes); defaults without it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The TOML file `scanwatch run --config` would read.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

const RUN_AFTER_HELP: &str = "\
Files:
  /etc/scanwatch/scanwatch.toml   the configuration (Debian package); every option is there, commented, with its default
  /var/log/scanwatch/alerts.jsonl the alert log; SIGHUP reopens it (logrotate) and reloads the feeds
  /sys/fs/bpf/scanwatch           the pinned maps; the blocklist pin outlives the agent

Needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (CAP_SYS_ADMIN stands in for the first two). \
Started by systemd (Type=notify) it signals readiness on $NOTIFY_SOCKET and logs without timestamps.

Exit status: 0 after SIGINT/SIGTERM, 2 for bad arguments or configuration, 1 for other errors.";

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

/// `scanwatch run`. Every option but `--config` has a key of the same meaning
/// in the configuration file's `[agent]` table (`--evidence-dir`: in
/// `[evidence]`); a flag given here wins.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to watch (repeat for several) [config: agent.interfaces; at least one is needed].
    #[arg(long = "iface", value_name = "IF")]
    pub ifaces: Vec<String>,
    /// XDP attach mode: auto tries native and falls back to skb with a warning [default: auto].
    #[arg(long, value_enum)]
    pub xdp_mode: Option<AttachMode>,
    /// bpffs directory where the maps are pinned (mounted if needed) [default: /sys/fs/bpf/scanwatch].
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
    /// Number of sources tracked (256 bytes each; a source may take one of two slots, the least recently seen of them is evicted) [default: 262144].
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(i64::from(MIN_SOURCE_MAP_SIZE)..=i64::from(MAX_SOURCE_MAP_SIZE))
    )]
    pub map_size: Option<u32>,
    /// Seconds between summary log lines [default: 10; config: agent.summary_interval_seconds].
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub interval: Option<u64>,
    /// TOML configuration: the [agent] settings, detection windows, thresholds, ignore list,
    /// mitigation, feeds; defaults without it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// File the alerts are appended to, one JSON object per line [default: /var/log/scanwatch/alerts.jsonl].
    #[arg(long, value_name = "FILE")]
    pub alert_log: Option<PathBuf>,
    /// Address the Prometheus `/metrics` endpoint listens on [default: 127.0.0.1:9477].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How many flagged sources `scanwatch_top_source_probes` exports [default: 10].
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(0..=1000)
    )]
    pub metrics_top: Option<u16>,
    /// Seconds between counts of the source map (`scanwatch_tracked_sources`) [default: 60;
    /// config: agent.count_interval_seconds].
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub count_interval: Option<u64>,
    /// Push detections to this Alertmanager (v2 API), e.g. http://127.0.0.1:9093 [default: none].
    #[arg(long, value_name = "URL")]
    pub alertmanager_url: Option<String>,
    /// The root-only control socket (`scanwatch block`, `blocks`, `status`) [default: /run/scanwatch/control.sock].
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Leave the XDP program attached (its link pinned in the pin dir) when
    /// the agent stops or dies, so blocks keep dropping; the next `run` takes
    /// it over. Default: detach on stop. Config: `[agent] keep_attached`.
    #[arg(long)]
    pub keep_attached: bool,
    /// Directory of the evidence packets' pcapng files [default: /var/lib/scanwatch/evidence;
    /// config: evidence.directory].
    #[arg(long, value_name = "DIR")]
    pub evidence_dir: Option<PathBuf>,
}

impl RunArgs {
    /// Lays the flags given on the command line over the file's `[agent]` table.
    pub fn override_config(&self, agent: &mut AgentConfig) {
        if !self.ifaces.is_empty() {
            agent.interfaces.clone_from(&self.ifaces);
        }
        let set = |slot: &mut PathBuf, flag: &Option<PathBuf>| {
            if let Some(v) = flag {
                slot.clone_from(v);
            }
        };
        set(&mut agent.pin_dir, &self.pin_dir);
        set(&mut agent.alert_log, &self.alert_log);
        set(&mut agent.control_socket, &self.control_socket);
        agent.xdp_mode = self.xdp_mode.unwrap_or(agent.xdp_mode);
        agent.map_size = self.map_size.unwrap_or(agent.map_size);
        agent.summary_interval_seconds = self.interval.unwrap_or(agent.summary_interval_seconds);
        agent.metrics_addr = self.metrics_addr.unwrap_or(agent.metrics_addr);
        agent.metrics_top = self.metrics_top.unwrap_or(agent.metrics_top);
        agent.count_interval_seconds = self.count_interval.unwrap_or(agent.count_interval_seconds);
        if let Some(url) = &self.alertmanager_url {
            agent.alertmanager_url.clone_from(url);
        }
        agent.keep_attached |= self.keep_attached;
    }

    /// Lays `--evidence-dir` over the file's `[evidence] directory`.
    pub fn override_evidence(&self, evidence: &mut EvidenceConfig) {
        if let Some(dir) = &self.evidence_dir {
            evidence.directory.clone_from(dir);
        }
    }
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
        let mut agent = AgentConfig::default();
        run.override_config(&mut agent);
        assert_eq!(agent.interfaces, ["eth0", "eth1"]);
        assert_eq!(agent.xdp_mode, AttachMode::Auto);
        assert_eq!(agent.pin_dir, PathBuf::from("/sys/fs/bpf/scanwatch"));
        assert_eq!(agent.map_size, 262_144);
        assert_eq!(
            agent.alert_log,
            PathBuf::from("/var/log/scanwatch/alerts.jsonl")
        );
        assert_eq!(run.config, None);
        assert_eq!(agent.metrics_addr.to_string(), "127.0.0.1:9477");
        assert_eq!(agent.metrics_top, 10);
        assert_eq!(agent.summary_interval_seconds, 10);
        assert_eq!(agent.count_interval_seconds, 60);
        assert_eq!(agent.alertmanager_url, "");
        assert_eq!(
            agent.control_socket,
            PathBuf::from("/run/scanwatch/control.sock")
        );
    }

    #[test]
    fn flags_override_the_config_file() {
        let file = crate::config::Config::parse(
            "[agent]\ninterfaces = [\"eth0\"]\nmetrics_addr = \"0.0.0.0:9477\"\nmetrics_top = 5\nxdp_mode = \"skb\"\n",
            "x.toml",
        )
        .unwrap();
        // Nothing on the command line: the file's values.
        let Ok(Cli {
            command: Command::Run(bare),
        }) = parse(&["run", "--config", "x.toml"])
        else {
            panic!("run should parse");
        };
        let mut agent = file.agent.clone();
        bare.override_config(&mut agent);
        assert_eq!(agent, file.agent);
        assert_eq!(agent.interfaces, ["eth0"]);
        assert_eq!(agent.xdp_mode, AttachMode::Skb);
        // Flags win, key by key; the rest stays as the file says.
        let Ok(Cli {
            command: Command::Run(flags),
        }) = parse(&[
            "run",
            "--iface",
            "eth9",
            "--metrics-addr",
            "127.0.0.1:1",
            "--interval",
            "3",
        ])
        else {
            panic!("run should parse");
        };
        let mut agent = file.agent.clone();
        flags.override_config(&mut agent);
        assert_eq!(agent.interfaces, ["eth9"]);
        assert_eq!(agent.metrics_addr.to_string(), "127.0.0.1:1");
        assert_eq!(agent.summary_interval_seconds, 3);
        assert_eq!(agent.metrics_top, 5, "from the file");
        assert_eq!(agent.xdp_mode, AttachMode::Skb, "from the file");
        assert!(!agent.keep_attached);
        let Ok(Cli {
            command: Command::Run(run),
        }) = parse(&["run", "--iface", "eth0", "--keep-attached"])
        else {
            panic!("--keep-attached should parse");
        };
        let mut agent = file.agent.clone();
        run.override_config(&mut agent);
        assert!(agent.keep_attached);
        let mut evidence = file.evidence.clone();
        run.override_evidence(&mut evidence);
        assert_eq!(
            evidence.directory,
            PathBuf::from("/var/lib/scanwatch/evidence")
        );
        let Ok(Cli {
            command: Command::Run(run),
        }) = parse(&["run", "--evidence-dir", "/srv/ev"])
        else {
            panic!("--evidence-dir should parse");
        };
        run.override_evidence(&mut evidence);
        assert_eq!(evidence.directory, PathBuf::from("/srv/ev"));
    }

    #[test]
    fn evidence_arguments() {
        let Ok(Cli {
            command: Command::Evidence(e),
        }) = parse(&["evidence", "198.18.0.5", "--config", "/etc/s.toml"])
        else {
            panic!("evidence should parse");
        };
        assert_eq!(e.source.to_string(), "198.18.0.5/32");
        assert_eq!(e.config, Some(PathBuf::from("/etc/s.toml")));
        for bad in [
            &["evidence"][..],
            &["evidence", "not-an-ip"],
            &["evidence", "10.0.0.0/33"],
        ] {
            assert_eq!(
                parse(bad).map(|_| ()).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["run", "--iface", "eth0", "--map-size", "10"][..],
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
