//! Man pages (clap_mangen) and shell completions (clap_complete) generated
//! from the command line definition, for the Debian package
//! (`scanwatch generate-docs DIR`, a hidden subcommand `cargo xtask deb` runs).

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::cli::Cli;

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct GenerateError {
    path: PathBuf,
    source: std::io::Error,
}

/// The shells completions are generated for, with the file name each one's
/// completion directory expects.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "scanwatch"),
    (Shell::Zsh, "_scanwatch"),
    (Shell::Fish, "scanwatch.fish"),
];

/// The command line without its hidden subcommands (clap_complete would
/// offer them).
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("scanwatch")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(a) = full.get_about() {
        cmd = cmd.about(a.clone());
    }
    cmd
}

/// Writes `DIR/man/scanwatch*.1` (one page per visible subcommand) and
/// `DIR/completions/{bash,zsh,fish}/FILE`; returns the files written.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GenerateError { path, source }
    };
    let mut written = Vec::new();
    let man = dir.join("man");
    std::fs::create_dir_all(&man).map_err(io(&man))?;
    clap_mangen::generate_to(Cli::command(), &man).map_err(io(&man))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .map_err(io(&man))?
        .flatten()
        .map(|e| e.path())
        .collect();
    pages.sort();
    written.extend(pages);
    for (shell, file) in SHELLS {
        let sub = dir.join("completions").join(shell.to_string());
        std::fs::create_dir_all(&sub).map_err(io(&sub))?;
        let path = sub.join(file);
        let mut out = std::fs::File::create(&path).map_err(io(&path))?;
        clap_complete::generate(shell, &mut visible_command(), "scanwatch", &mut out);
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    #[test]
    fn man_pages_and_completions() {
        let dir = std::env::temp_dir().join(format!("scanwatch-docs-{}", std::process::id()));
        let files = super::generate(&dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        for want in [
            "man/scanwatch.1",
            "man/scanwatch-run.1",
            "man/scanwatch-top.1",
            "man/scanwatch-block.1",
            "completions/bash/scanwatch",
            "completions/zsh/_scanwatch",
            "completions/fish/scanwatch.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("generate-docs")),
            "the hidden subcommand has no page: {names:?}"
        );
        let run = std::fs::read_to_string(dir.join("man/scanwatch-run.1")).unwrap();
        assert!(run.starts_with(".ie") || run.contains(".TH"), "roff: {run}");
        assert!(run.contains("metrics\\-addr"), "options documented");
        let bash = std::fs::read_to_string(dir.join("completions/bash/scanwatch")).unwrap();
        assert!(bash.contains("--alert-log") && !bash.contains("generate-docs"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
