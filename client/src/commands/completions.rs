//! `pib-client completions SHELL`.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

pub fn print(shell: Shell) {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}
