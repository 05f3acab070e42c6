//! pib-daemon: pi-builder's privileged system service, started by D-Bus activation.

#[cfg(test)]
mod apidoc;
mod auth;
mod base;
mod binfmt;
mod build;
mod bus;
mod config;
mod device;
mod docker;
mod fdio;
mod flash;
mod idle;
mod image;
mod jobs;
mod logging;
mod manpage;
mod results;
mod scan;
mod shell;
mod sys;
mod tools;
mod workdir;

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser};

/// pi-builder's system service. Normally started by D-Bus activation, not by hand.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Append logs to this file instead of the journal or stderr (for setups where the bus
    /// launches the daemon with no journal and stderr discarded).
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Write the manual page pib-daemon.8 into DIR and exit (for packaging).
    #[arg(long, hide = true, value_name = "DIR")]
    manpage_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.manpage_dir {
        manpage::write(Args::command(), dir)
            .with_context(|| format!("cannot write the manual page into {}", dir.display()))?;
        return Ok(());
    }
    logging::init(args.log_file.as_deref())?;
    let config = match config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return Err(e.into());
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(bus::serve(config));
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    result
}
