//! Project tasks: `cargo xtask setup | test | lint | demo | bench | deb | fuzz`.
//!
//! `setup` installs what is missing on a Debian machine (nightly rust-src,
//! bpf-linker 0.10.3, cargo-deb, Debian packages); `test` and `demo` run it first.

mod deb;
mod demo;
mod fuzz;
mod layers;
mod links;
mod setup;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing toolchain pieces and Debian packages.
    Setup,
    /// Documentation links, formatting and clippy (userspace and the eBPF crate).
    Lint,
    /// Setup, lint, the .deb, then every test (the privileged ones need root).
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// A namespace lab: attach the agent, run a real nmap scan, show what it saw.
    Demo,
    /// The Debian package: target/debian/scanwatch_<version>_amd64.deb.
    Deb,
    /// Benchmarks: writes BENCHMARKS.md and benchmarks.json (needs root).
    Bench {
        /// Short runs (under 2 minutes) into target/bench-quick/; the test suite runs this.
        #[arg(long)]
        quick: bool,
    },
    /// Coverage-guided fuzzing (cargo fuzz, nightly) of the config, feed,
    /// control-request and ring-buffer event parsers.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Only these targets (config, feed, control_request, ring_event).
        targets: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::ensure(),
        Task::Lint => setup::ensure().and_then(|()| lint()),
        Task::Test { cargo_args } => setup::ensure()
            .and_then(|()| lint())
            .and_then(|()| test(&cargo_args)),
        Task::Demo => setup::ensure().and_then(|()| demo::demo()),
        Task::Deb => setup::ensure().and_then(|()| deb::deb().map(|_| ())),
        Task::Bench { quick } => setup::ensure().and_then(|()| bench(quick)),
        Task::Fuzz { seconds, targets } => {
            setup::ensure().and_then(|()| fuzz::run(&root(), seconds, &targets).map(|_| ()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command, failing with its description if it fails.
pub(crate) fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let desc = format!("{cmd:?}");
    eprintln!("xtask: {desc}");
    let status = cmd.status().with_context(|| format!("cannot run {desc}"))?;
    if !status.success() {
        bail!("{desc} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The workspace root (xtask's parent directory).
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| ".".into(), std::path::Path::to_path_buf)
}

fn lint() -> anyhow::Result<()> {
    // Relative links and anchors of README.md, DEVELOPING.md, BENCHMARKS.md and docs/.
    let checked = links::check(&root())?;
    eprintln!("xtask: {checked} documentation links checked");
    // The agent crate's layers: imports only go down, and no cycles.
    let files = layers::check(&root().join("scanwatch/src"))?;
    eprintln!("xtask: {files} agent source files checked: layered, no import cycles");
    run_cmd(cargo().args(["fmt", "--all", "--check"]))?;
    // The fuzz crate is a workspace of its own.
    run_cmd(
        cargo()
            .args(["fmt", "--check", "--manifest-path"])
            .arg(root().join("fuzz/Cargo.toml")),
    )?;
    // Default members only: never --workspace (it would build the eBPF crate for the host).
    run_cmd(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The privileged tests and the benchmarks (not a default member).
    run_cmd(cargo().args([
        "clippy",
        "-p",
        "scanwatch-integration",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The kernel programs, for the bpf target: the agent's and the benchmarks'.
    for crate_name in ["scanwatch-ebpf", "scanwatch-ebpf-bench"] {
        run_cmd(Command::new("cargo").args([
            "+nightly",
            "clippy",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
            "-p",
            crate_name,
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    Ok(())
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc_geteuid() } != 0
        && std::env::var("SCANWATCH_ALLOW_SKIP_PRIVILEGED").as_deref() != Ok("1")
    {
        bail!(
            "the test suite loads XDP programs and builds network namespaces: run it as root \
             (sudo -E cargo xtask test), or set SCANWATCH_ALLOW_SKIP_PRIVILEGED=1 to skip those tests"
        );
    }
    // What any contributor runs: unit tests and the unprivileged tests.
    run_cmd(cargo().arg("test").args(extra))?;
    // The privileged tests (BPF, namespaces, real scanners and servers). The
    // package tests (scanwatch-integration/tests/package_deb.rs) install this .deb.
    let deb = deb::deb()?;
    run_cmd(
        cargo()
            .args(["test", "-p", "scanwatch-integration"])
            .args(extra)
            .env("SCANWATCH_DEB", deb),
    )?;
    // The fuzz targets keep building and running: a few seconds each.
    fuzz::run(&root(), FUZZ_SMOKE_SECONDS, &[])?;
    // The benchmark keeps working: a short run that checks it produced numbers.
    bench(true)
}

/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SMOKE_SECONDS: u64 = 5;

fn bench(quick: bool) -> anyhow::Result<()> {
    // The agent as the package ships it: the release build (the CPU of
    // one nmap scan, the agent with a million sources).
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "scanwatch",
        "--bin",
        "scanwatch",
    ]))?;
    let mut cmd = cargo();
    cmd.env(
        "SCANWATCH_BIN",
        deb::target_dir().join("release").join("scanwatch"),
    );
    cmd.args([
        "bench",
        "-p",
        "scanwatch-integration",
        "--bench",
        "bench",
        "--",
    ]);
    if quick {
        cmd.arg("--quick");
    }
    run_cmd(&mut cmd)
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
