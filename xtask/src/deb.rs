//! `cargo xtask deb`: the Debian package, target/debian/scanwatch_<version>_amd64.deb.
//!
//! Builds the release binary, has it write its man pages and shell
//! completions (the hidden `scanwatch generate-docs`, from the CLI definition)
//! into target/release/deb-docs, then runs `cargo deb --no-build`; the
//! package layout is `[package.metadata.deb]` in scanwatch/Cargo.toml.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cargo, run_cmd};

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || {
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            workspace
                .parent()
                .map_or_else(|| workspace.join(".."), Path::to_path_buf)
                .join("target")
        },
        PathBuf::from,
    )
}

/// Builds the package; returns its path.
pub fn deb() -> anyhow::Result<PathBuf> {
    run_cmd(cargo().args(["build", "--release", "-p", "scanwatch"]))?;
    let release = target_dir().join("release");
    let docs = release.join("deb-docs");
    if docs.exists() {
        std::fs::remove_dir_all(&docs).with_context(|| format!("remove {}", docs.display()))?;
    }
    run_cmd(
        Command::new(release.join("scanwatch"))
            .arg("generate-docs")
            .arg(&docs),
    )?;
    // Debian policy: man pages compressed (-n: no name or time stamp, reproducible).
    let man = docs.join("man");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .with_context(|| format!("read {}", man.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    if pages.is_empty() {
        bail!("no man pages in {}", man.display());
    }
    run_cmd(Command::new("gzip").arg("-9n").args(&pages))?;
    let version = env!("CARGO_PKG_VERSION");
    let deb = target_dir()
        .join("debian")
        .join(format!("scanwatch_{version}_amd64.deb"));
    run_cmd(cargo().args([
        "deb",
        "-p",
        "scanwatch",
        "--no-build",
        "--output",
        &deb.display().to_string(),
    ]))?;
    if !Path::new(&deb).is_file() {
        bail!("cargo deb did not write {}", deb.display());
    }
    eprintln!("xtask: built {}", deb.display());
    Ok(deb)
}
