//! Manual pages made from the clap definitions: pib-client(1) and one page per subcommand
//! (pib-client-base-fetch(1) ...), so the pages and `--help` cannot drift apart.
//!
//! `pib-client manpages DIR` writes them (scripts/install and the Debian packages call it).
//! That subcommand is added to the parser here rather than declared in [`Cli`]: clap's static
//! completion scripts list hidden subcommands too, and users should not meet it there.

use std::io;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, CommandFactory};
use clap_mangen::Man;

use crate::cli::Cli;
use crate::errors::exit;
use crate::stages::BUNDLED_ENV;

const MANUAL: &str = "pi-builder";
const GENERATOR: &str = "manpages";

/// The command line as parsed: [`Cli`] plus the hidden generator.
pub fn parser() -> clap::Command {
    Cli::command().subcommand(
        clap::Command::new(GENERATOR)
            .hide(true)
            .about("Write the manual pages into DIR, for packaging")
            .arg(
                clap::Arg::new("dir")
                    .value_name("DIR")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            ),
    )
}

/// The directory the generator was asked to write to, when it was called.
pub fn requested(matches: &ArgMatches) -> Option<&PathBuf> {
    match matches.subcommand() {
        Some((GENERATOR, sub)) => sub.get_one::<PathBuf>("dir"),
        _ => None,
    }
}

/// Writes every page into `dir` (which must exist) and returns their paths, top page first.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    // No page for clap's own `help` subcommand: it is what `--help` already is.
    let mut top = Cli::command().disable_help_subcommand(true);
    top.build();
    let mut written = Vec::new();
    write_tree(&top, dir, &top_sections(), &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: &clap::Command,
    dir: &Path,
    extra: &str,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    // Every page's footer names the program and its version, also for subcommands.
    let source = format!("pib-client {}", env!("CARGO_PKG_VERSION"));
    let man = Man::new(cmd.clone()).manual(MANUAL).source(source);
    let mut page = Vec::new();
    man.render(&mut page)?;
    page.extend_from_slice(extra.as_bytes());
    let path = dir.join(man.get_filename());
    std::fs::write(&path, page)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, dir, SUBCOMMAND_SECTIONS, written)?;
    }
    Ok(())
}

const SUBCOMMAND_SECTIONS: &str = ".SH \"SEE ALSO\"\n.BR pib\\-client (1)\n";

/// What the top page says beyond the options: exit codes (from the constants the client
/// uses), the environment and where to look next.
fn top_sections() -> String {
    format!(
        ".SH \"EXIT STATUS\"\n\
         .TP\n{ok}\nSuccess; for \\fBshell\\fR, the command's own exit status.\n\
         .TP\n{fail}\nFailure: the service refused or the job failed.\n\
         .TP\n{usage}\nBad command line, refused arguments, or a command not implemented yet.\n\
         .TP\n{auth}\nNot authorized by polkit.\n\
         .TP\n{cancel}\nCancelled (Ctrl\\-C, or \\fBpib\\-client cancel\\fR).\n\
         .SH ENVIRONMENT\n\
         .TP\n{env}\n\
         The directory of the bundled stages, instead of \\fI/usr/share/pi\\-builder/stages\\fR.\n\
         .SH \"SEE ALSO\"\n\
         .BR pib\\-daemon (8),\n\
         .BR pkttyagent (1),\n\
         .BR polkit (8)\n",
        ok = exit::SUCCESS,
        fail = exit::FAILURE,
        usage = exit::USAGE,
        auth = exit::NOT_AUTHORIZED,
        cancel = exit::CANCELLED,
        env = BUNDLED_ENV,
    )
}

#[cfg(test)]
mod tests;
