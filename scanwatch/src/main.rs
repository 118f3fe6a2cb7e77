//! scanwatch: wiring only. See the library modules for the work.
use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;
use scanwatch::{
    agent,
    cli::{Cli, Command},
    top,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(agent::run(args)).map_err(anyhow::Error::from)),
        Command::Top(args) => top::run(&args).map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "scanwatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
