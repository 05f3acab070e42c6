//! `pib-client completions SHELL`.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

pub fn print(shell: Shell) {
    let _ = std::io::stdout().write_all(&script(shell));
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_owned();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, &name, &mut out);
    if shell == Shell::Bash {
        out = fix_bash_labels(&out, &name);
    }
    out
}

/// clap_complete's bash script tracks the subcommand path in a state like
/// `pib__client__subcmd__binfmt`, but spells the `case` arms for it with the program name's
/// hyphen escaped as a subcommand separator (`pib__subcmd__client__subcmd__binfmt`), so
/// nothing after the first word ever completed (clap-rs/clap#6421, open for clap_complete
/// 4.6). The arms are respelled the way the state is.
fn fix_bash_labels(script: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    let wrong = name.replace('-', "__subcmd__");
    let right = name.replace('-', "__");
    text.replace(&wrong, &right).into_bytes()
}
