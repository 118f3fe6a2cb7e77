//! scanwatch: wiring only. See the library modules for the work.
#![warn(clippy::too_many_lines)]

use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;
use scanwatch::app::{
    agent, check_config,
    cli::{Cli, Command},
    control::client,
    evidence, generated_docs, systemd, top,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    systemd::init_logging();
    let result: Result<(), (anyhow::Error, u8)> = match cli.command {
        Command::Run(args) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(agent::run(args)).map_err(|e| {
                let code = e.exit_code();
                (e.into(), code)
            }),
            Err(e) => Err((e.into(), 1)),
        },
        Command::Top(args) => top::run(&args).map_err(|e| (e.into(), 1)),
        Command::Block(a) => client::block(&a).map_err(|e| (e.into(), 1)),
        Command::Unblock(a) => client::unblock(&a).map_err(|e| (e.into(), 1)),
        Command::Blocks(a) => client::blocks(&a).map_err(|e| (e.into(), 1)),
        Command::Status(a) => client::status(&a).map_err(|e| (e.into(), 1)),
        Command::GenerateDocs { dir } => generated_docs::generate(&dir)
            .map(|files| {
                for f in files {
                    println!("{}", f.display());
                }
            })
            .map_err(|e| (e.into(), 1)),
        Command::CheckConfig(a) => check_config::run(&a).map_err(|e| (e.into(), 2)),
        Command::Evidence(a) => evidence::run(&a).map_err(|e| {
            let code = e.exit_code();
            (e.into(), code)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, code)) => {
            // Each error's message already names its cause.
            let _ = writeln!(std::io::stderr(), "scanwatch: error: {e}");
            ExitCode::from(code)
        }
    }
}
