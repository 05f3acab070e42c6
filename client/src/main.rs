//! pib-client: the unprivileged command-line client of pi-builder's system service.

mod agent;
mod bus;
mod calls;
mod cli;
mod commands;
mod context;
mod errors;
mod follow;
mod humanize;
mod job;
mod joblog;
mod layout;
mod manpages;
mod outfile;
mod output;
mod progress;
mod project;
mod relay;
mod stages;
mod sys;
mod terminal;
mod variant;

use std::process::ExitCode;

use anyhow::Context;
use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};
use serde_json::json;

use crate::errors::{exit, names};

fn main() -> ExitCode {
    let mut matches = match manpages::parser().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    if let Some(dir) = manpages::requested(&matches) {
        return match manpages::write_all(dir) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "pib-client: cannot write manual pages into {}: {e}",
                    dir.display()
                );
                ExitCode::from(exit::FAILURE)
            }
        };
    }
    let cli = match cli::Cli::from_arg_matches_mut(&mut matches) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e.format(&mut cli::Cli::command())),
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pib-client: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<u8> {
    // One thread: the polkit agent is a child that dies with the thread that spawned it
    // (PR_SET_PDEATHSIG), and nothing here needs more than one.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(commands::run(cli)))
}

/// Scripts that asked for JSON get their usage errors as JSON too; help and version stay text.
fn usage_error(e: clap::Error) -> ExitCode {
    let wants_json = std::env::args()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    let is_error = !matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if wants_json && is_error {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        let message = first.trim_start_matches("error: ");
        output::json_line(&json!({ "error": names::USAGE, "message": message }));
        return ExitCode::from(exit::USAGE);
    }
    e.exit()
}
