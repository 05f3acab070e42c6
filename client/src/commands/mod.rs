//! One module per subcommand; this one picks it and turns its error into output and an exit
//! code.

mod binfmt;
mod cancel;
mod completions;
mod jobs;
mod status;

use crate::bus::Bus;
use crate::cli::{Cli, Command};
use crate::errors::{exit, explain, ClientError};
use crate::output::{self, Ui};

pub async fn run(cli: Cli) -> u8 {
    let ui = Ui {
        json: cli.json,
        quiet: cli.quiet,
        no_ask_password: cli.no_ask_password,
    };
    match run_command(&ui, cli.command).await {
        Ok(()) => exit::SUCCESS,
        Err(err) => {
            let ex = explain(&err, ui.interactive_auth());
            // The message for an unfinished command is promised on stderr, --json or not.
            if ui.json && matches!(err, ClientError::NotImplemented(_)) {
                output::err_line(&format!("pib-client: {}", ex.text));
            }
            output::error(&ui, &ex);
            ex.exit
        }
    }
}

async fn run_command(ui: &Ui, command: Command) -> Result<(), ClientError> {
    match command {
        Command::Status => status::run(&mut Bus::system(ui).await?, ui).await,
        Command::Binfmt(sub) => binfmt::run(&mut Bus::system(ui).await?, ui, sub).await,
        Command::Jobs => jobs::run(&mut Bus::system(ui).await?, ui).await,
        Command::Cancel { job } => cancel::run(&mut Bus::system(ui).await?, ui, job).await,
        Command::Completions { shell } => {
            completions::print(shell);
            Ok(())
        }
        planned @ (Command::Base(_)
        | Command::Build(_)
        | Command::Image(_)
        | Command::Flash(_)
        | Command::Format(_)
        | Command::Install(_)
        | Command::Devices(_)
        | Command::Shell(_)
        | Command::Images(_)
        | Command::Rm(_)
        | Command::Clean(_)
        | Command::Scan(_)) => Err(ClientError::NotImplemented(
            planned
                .planned_name()
                .expect("every planned command has a name"),
        )),
    }
}
