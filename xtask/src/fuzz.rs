//! `cargo xtask fuzz`: coverage-guided fuzzing (cargo fuzz, libFuzzer,
//! nightly) of every userspace parser, each target for a fixed time, from
//! the seed corpora in `fuzz/seeds/` plus what earlier runs found
//! (`fuzz/corpus/`, not committed). A crash fails the task and names the
//! input that reproduces it (`fuzz/artifacts/TARGET/`).

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::run_cmd;

/// cargo-fuzz installed when missing (pinned like bpf-linker).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The targets in fuzz/fuzz_targets/, one per parser.
pub const TARGETS: &[&str] = &[
    "config",
    "feed",
    "control_request",
    "ring_event",
    "web_sample",
];

/// One target's run.
pub struct Outcome {
    pub target: &'static str,
    pub seconds: u64,
    pub executions: Option<u64>,
    pub corpus: usize,
}

fn cargo_fuzz_installed() -> bool {
    Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs cargo-fuzz if it is missing.
pub fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if !cargo_fuzz_installed() {
        run_cmd(Command::new("cargo").args([
            "install",
            "--locked",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    Ok(())
}

/// The value of libFuzzer's `stat::NAME:` final statistic.
fn final_stat(stderr: &str, name: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        l.strip_prefix(&format!("stat::{name}:"))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Runs every target (or those named) for `seconds` each.
pub fn run(root: &Path, seconds: u64, only: &[String]) -> anyhow::Result<Vec<Outcome>> {
    ensure_cargo_fuzz().context("cargo-fuzz")?;
    for t in only {
        if !TARGETS.contains(&t.as_str()) {
            bail!("unknown fuzz target {t:?}: one of {}", TARGETS.join(", "));
        }
    }
    let fuzz = root.join("fuzz");
    let mut outcomes = Vec::new();
    for target in TARGETS
        .iter()
        .copied()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t))
    {
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("create {}", corpus.display()))?;
        let seeds = fuzz.join("seeds").join(target);
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root)
            .args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-print_final_stats=1",
                // Keep CI logs short: libFuzzer prints a line per new input.
                "-verbosity=0",
            ]);
        eprintln!("xtask: fuzzing {target} for {seconds} s: {cmd:?}");
        let out = cmd
            .stdout(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot run cargo fuzz for {target}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            eprintln!("{stderr}");
            bail!(
                "fuzz target {target} failed ({}): the input that reproduces it is in {}; \
                 rerun it with `cargo +nightly fuzz run {target} <that file>`, fix the bug \
                 and add a regression unit test",
                out.status,
                fuzz.join("artifacts").join(target).display()
            );
        }
        let corpus_len = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
        let outcome = Outcome {
            target,
            seconds,
            executions: final_stat(&stderr, "number_of_executed_units"),
            corpus: corpus_len,
        };
        eprintln!(
            "xtask: fuzz {target}: {} executions in {seconds} s, corpus {} inputs, no crash",
            outcome
                .executions
                .map_or_else(|| "?".to_string(), |n| n.to_string()),
            outcome.corpus
        );
        outcomes.push(outcome);
    }
    eprintln!(
        "xtask: fuzz summary\n| target | seconds | executions | corpus |\n|---|---:|---:|---:|"
    );
    for o in &outcomes {
        eprintln!(
            "| {} | {} | {} | {} |",
            o.target,
            o.seconds,
            o.executions
                .map_or_else(|| "?".to_string(), |n| n.to_string()),
            o.corpus
        );
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_libfuzzer_final_stats() {
        let s = "INFO: done\nstat::number_of_executed_units: 123456\nstat::average_exec_per_sec:     4115\n";
        assert_eq!(
            super::final_stat(s, "number_of_executed_units"),
            Some(123_456)
        );
        assert_eq!(super::final_stat(s, "average_exec_per_sec"), Some(4115));
        assert_eq!(super::final_stat(s, "nope"), None);
    }
}
