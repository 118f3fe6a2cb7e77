//! `scanwatch evidence SOURCE`: the pcapng files the agent kept for a
//! source (in the directory of `[evidence]`) and a short decode of each
//! packet. Reads the directory only (root: the agent makes it 0750).

use std::{io::Write as _, path::PathBuf};

use super::cli::EvidenceArgs;
use crate::{
    config::{Config, ConfigError},
    model::{error_chain, prefix::label},
    output::evidence::{decode::decode, is_file_of, list_files, pcapng},
};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceCliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "evidence directory {} does not exist (no alert with evidence yet, or another [evidence] directory: give the agent's --config)",
        .0.display()
    )]
    NoDirectory(PathBuf),
    #[error("cannot read evidence directory {}: {detail} (root needed)", path.display())]
    Read { path: PathBuf, detail: String },
}

impl EvidenceCliError {
    /// 2 for a bad configuration or a missing directory, 1 otherwise.
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::NoDirectory(_) => 2,
            Self::Read { .. } => 1,
        }
    }
}

/// Lists the source's files and decodes their packets to stdout.
pub fn run(args: &EvidenceArgs) -> Result<(), EvidenceCliError> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let dir = config.evidence.directory.clone();
    // An address stands for its source network (sources counted by prefix).
    let source = if args.source.prefix_len() == args.source.max_prefix_len() {
        config.detection.prefixes().network(args.source.addr())
    } else {
        args.source.trunc()
    };
    let shown = label(&source);
    if !dir.is_dir() {
        return Err(EvidenceCliError::NoDirectory(dir));
    }
    let read_err = |e: std::io::Error| EvidenceCliError::Read {
        path: dir.clone(),
        detail: error_chain(&e),
    };
    let files: Vec<(PathBuf, u64)> = list_files(&dir)
        .map_err(read_err)?
        .into_iter()
        .filter(|(p, _)| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| is_file_of(n, &shown))
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if files.is_empty() {
        let _ = writeln!(out, "no evidence files for {shown} in {}", dir.display());
        return Ok(());
    }
    let _ = writeln!(
        out,
        "{shown}: {} evidence file(s) in {}",
        files.len(),
        dir.display()
    );
    for (path, size) in files {
        let bytes = std::fs::read(&path).map_err(read_err)?;
        match pcapng::read(&bytes) {
            Ok(packets) => {
                let _ = writeln!(
                    out,
                    "{} ({} packets, {size} bytes)",
                    path.display(),
                    packets.len()
                );
                if let Some(first) = packets.first() {
                    let _ = writeln!(out, "  comment: {}", first.comment);
                }
                for p in &packets {
                    let _ = writeln!(
                        out,
                        "  {} {} {} len {}",
                        time(p.time_ns),
                        p.interface,
                        decode(&p.data),
                        p.original_len
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{} ({size} bytes): {e}", path.display());
            }
        }
    }
    Ok(())
}

/// ns since the Unix epoch as RFC 3339 with microseconds.
fn time(ns: u64) -> String {
    let secs = i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(secs, (ns % 1_000_000_000) as u32).map_or_else(
        || ns.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times() {
        assert_eq!(
            super::time(1_800_000_000_123_456_789),
            "2027-01-15T08:00:00.123456Z"
        );
    }
}
