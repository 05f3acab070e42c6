//! `pib-client binfmt status|register|unregister [--arch A]`.

use std::collections::HashMap;

use pib_dbus_interfaces::types::{options, Arch};
use zbus::Variant;

use crate::bus::Bus;
use crate::calls::{self, Attempt};
use crate::cli::BinfmtCommand;
use crate::commands::status;
use crate::errors::ClientError;
use crate::follow;
use crate::output::{self, Ui};

pub async fn run(bus: &mut Bus, ui: &Ui, command: BinfmtCommand) -> Result<(), ClientError> {
    match command {
        BinfmtCommand::Status(f) => show(bus, ui, f.arch.map(Arch::from)).await,
        BinfmtCommand::Register(f) => {
            change(bus, ui, &calls::REGISTER_BINFMT, f.arch.map(Arch::from)).await
        }
        BinfmtCommand::Unregister(f) => {
            change(bus, ui, &calls::UNREGISTER_BINFMT, f.arch.map(Arch::from)).await
        }
    }
}

async fn show(bus: &mut Bus, ui: &Ui, only: Option<Arch>) -> Result<(), ClientError> {
    let all = status::fetch(bus).await?;
    if ui.json {
        output::json_line(&status::binfmt_json(&all, only));
    } else {
        output::plain(&status::binfmt_lines(&all, only).join("\n"));
    }
    Ok(())
}

async fn change(
    bus: &mut Bus,
    ui: &Ui,
    attempt: &'static Attempt,
    only: Option<Arch>,
) -> Result<(), ClientError> {
    let manager = bus.manager().await?;
    let opts = arch_options(only);
    let (path, ended) = follow::start(bus, ui, manager.inner(), attempt, &(opts,)).await?;
    output::job_result(ui, &path, &ended);
    Ok(())
}

/// The daemon's vocabulary: no key means both machines.
fn arch_options(only: Option<Arch>) -> HashMap<&'static str, Variant<'static>> {
    only.map(|a| (options::ARCH, Variant::from(a.as_str())))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_name_the_machine_or_nothing() {
        assert!(arch_options(None).is_empty());
        let o = arch_options(Some(Arch::Aarch64));
        assert_eq!(o.len(), 1);
        assert_eq!(o["arch"], Variant::from("aarch64"));
    }
}
