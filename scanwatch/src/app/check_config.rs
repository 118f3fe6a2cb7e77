//! `scanwatch check-config FILE`: the validation `scanwatch run --config`
//! does, without privileges, BPF or network access. Feed files are read too:
//! problems with them are warnings (the agent starts without them as well).

use std::io::Write as _;

use super::cli::CheckConfigArgs;
use crate::{
    config::{Config, ConfigError},
    output::feeds,
};

/// Validates the file; prints a summary (stdout) and feed warnings (stderr).
pub fn run(args: &CheckConfigArgs) -> Result<(), ConfigError> {
    let config = Config::load(&args.file)?;
    // The web scanner catalogue is read as the agent reads it.
    let catalogue = if config.detection.web.enabled {
        let c = super::agent::catalogue_of(&config.detection).map_err(|message| {
            ConfigError::Invalid {
                path: args.file.display().to_string(),
                line: None,
                field: "detection.web.catalogue".into(),
                message,
            }
        })?;
        format!(", {} web scanner signatures", c.len())
    } else {
        String::new()
    };
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for warning in feed_warnings(&config) {
        let _ = writeln!(err, "scanwatch: warning: {warning}");
    }
    let d = &config.detection;
    let m = &config.mitigation;
    let _ = writeln!(
        out,
        "config {}: valid (window {} s, {} ignore networks, auto_block {}, dry_run {}, {} feeds{})",
        args.file.display(),
        d.window_seconds,
        d.ignore.len(),
        m.auto_block,
        m.dry_run,
        config.feeds.len(),
        catalogue
    );
    Ok(())
}

/// Unreadable feed files and bad feed lines, one message each.
pub fn feed_warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for f in &config.feeds {
        match feeds::read(&f.name, &f.path) {
            Ok(parsed) => {
                for bad in parsed.bad {
                    out.push(format!(
                        "feed {}: {}:{}: not an address or CIDR: {:?}",
                        f.name,
                        f.path.display(),
                        bad.line,
                        bad.text
                    ));
                }
            }
            Err(e) => out.push(e.to_string()),
        }
    }
    out
}
