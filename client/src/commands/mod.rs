//! One module per subcommand; this one picks it and turns its error into output and an exit
//! code.

mod base;
mod binfmt;
mod build;
mod cancel;
mod clean;
mod completions;
mod devices;
mod flash;
mod image;
mod images;
mod jobs;
mod picker;
mod scan;
mod shell;
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
        Ok(code) => code,
        Err(err) => {
            let ex = explain(&err, ui.interactive_auth());
            output::error(&ui, &ex);
            ex.exit
        }
    }
}

/// The exit code on success is the command's own only for `shell`.
async fn run_command(ui: &Ui, command: Command) -> Result<u8, ClientError> {
    let done = |r: Result<(), ClientError>| r.map(|()| exit::SUCCESS);
    match command {
        Command::Status => done(status::run(&mut Bus::system(ui).await?, ui).await),
        Command::Binfmt(sub) => done(binfmt::run(&mut Bus::system(ui).await?, ui, sub).await),
        Command::Jobs => done(jobs::run(&mut Bus::system(ui).await?, ui).await),
        Command::Cancel { job } => done(cancel::run(&mut Bus::system(ui).await?, ui, job).await),
        Command::Completions { shell } => {
            completions::print(shell);
            Ok(exit::SUCCESS)
        }
        Command::Base(sub) => done(base::run(ui, sub).await),
        // Reads the project and the stages before connecting.
        Command::Build(args) => done(build::run(ui, &args).await),
        Command::Images => done(images::list(&mut Bus::system(ui).await?, ui).await),
        Command::Rm { name } => done(images::remove(&mut Bus::system(ui).await?, ui, &name).await),
        Command::Clean(args) => done(clean::run(&mut Bus::system(ui).await?, ui, &args).await),
        Command::Shell(args) => shell::run(&mut Bus::system(ui).await?, ui, &args).await,
        Command::Image(args) => done(image::run(ui, &args).await),
        Command::Devices(args) => done(devices::list(&mut Bus::system(ui).await?, ui, &args).await),
        Command::Flash(args) => done(flash::run(ui, &args).await),
        Command::Format(args) => done(flash::format(ui, &args).await),
        Command::Install(args) => done(flash::install(ui, &args).await),
        Command::Scan(args) => done(scan::run(&mut Bus::system(ui).await?, ui, &args).await),
    }
}
