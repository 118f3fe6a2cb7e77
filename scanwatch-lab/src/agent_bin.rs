//! The agent binary for tests and benchmarks outside the `scanwatch`
//! package (cargo sets `CARGO_BIN_EXE_*` only for a package's own tests).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// Names the agent binary to use; `cargo xtask test` and `cargo xtask bench`
/// build it and set this.
pub const AGENT_BIN_ENV: &str = "SCANWATCH_BIN";

/// The `scanwatch` binary: `$SCANWATCH_BIN`, or else the one `cargo build -p
/// scanwatch --bin scanwatch` leaves (built now, so it is never stale).
/// Panics with the reason when there is none: a test cannot run without it.
pub fn agent_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os(AGENT_BIN_ENV) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{AGENT_BIN_ENV}={} is not a file",
                path.display()
            );
            path
        }
        None => build().unwrap_or_else(|e| panic!("cannot build the scanwatch binary: {e}")),
    })
}

/// Builds the agent (debug profile) and returns its path, from cargo's
/// JSON messages.
fn build() -> Result<PathBuf, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "-p",
            "scanwatch",
            "--bin",
            "scanwatch",
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p scanwatch failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "scanwatch")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo built no scanwatch executable".to_string())
}
