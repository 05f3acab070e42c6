//! Logging: to the journal when it is there, otherwise to stderr (or a file, for development
//! setups where the bus's launch helper discards stderr).

use std::path::Path;

use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

pub fn init(log_file: Option<&Path>) -> anyhow::Result<()> {
    let filter = || EnvFilter::try_from_env("PIB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry();

    if let Some(path) = log_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_filter(filter());
        registry.with(layer).try_init()?;
    } else if Path::new(JOURNAL_SOCKET).exists() {
        let layer = tracing_journald::layer()?
            .with_syslog_identifier("pib-daemon".to_owned())
            .with_filter(filter());
        registry.with(layer).try_init()?;
    } else {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter());
        registry.with(layer).try_init()?;
    }
    Ok(())
}
