//! `pib-client devices [--all]`: the disks pi-builder would write, with why it refuses others.

use std::collections::HashMap;

use pib_dbus_interfaces::types::{device as key, options};
use serde_json::Value;
use zbus::{OwnedVariant, Variant};

use crate::bus::Bus;
use crate::calls;
use crate::cli::DevicesArgs;
use crate::commands::base::{size_cell, text};
use crate::errors::ClientError;
use crate::output::{self, Ui};
use crate::variant::dict_to_json;

/// Asks the daemon for the disks (hidden ones too with `all`).
pub async fn fetch(bus: &mut Bus, all: bool) -> Result<Vec<Value>, ClientError> {
    let manager = bus.manager().await?;
    let opts: HashMap<&str, Variant<'_>> = HashMap::from([(options::ALL, Variant::from(all))]);
    let devices: Vec<HashMap<String, OwnedVariant>> = bus
        .call(manager.inner(), &calls::LIST_DEVICES, &(opts,))
        .await?;
    Ok(devices.iter().map(dict_to_json).collect())
}

pub async fn list(bus: &mut Bus, ui: &Ui, args: &DevicesArgs) -> Result<(), ClientError> {
    let devices = fetch(bus, args.all).await?;
    if ui.json {
        output::json_line(&Value::Array(devices));
    } else if devices.is_empty() {
        output::plain(if args.all {
            "No disks found."
        } else {
            "No cards found. Insert one, or see every disk with `pib-client devices --all`."
        });
    } else {
        output::plain(&table(&devices));
    }
    Ok(())
}

/// What a user needs to pick a card: which one, how big, what it is, and whether it will do.
pub fn describe(d: &Value) -> String {
    let what: Vec<String> = [key::VENDOR, key::MODEL]
        .iter()
        .map(|k| text(&d[*k]))
        .filter(|s| !s.is_empty())
        .collect();
    format!(
        "{} ({}{}{})",
        text(&d[key::DEVICE]),
        size_cell(&d[key::SIZE]),
        if what.is_empty() { "" } else { ", " },
        what.join(" ")
    )
}

fn status(d: &Value) -> String {
    match d[key::VERDICT].as_str() {
        Some("ok") => "ok".to_owned(),
        Some("needs-system-grant") => format!("needs admin: {}", text(&d[key::REASON])),
        _ => format!("refused: {}", text(&d[key::REASON])),
    }
}

fn table(devices: &[Value]) -> String {
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|d| {
            let mounted = d[key::MOUNTED]
                .as_array()
                .map(|m| m.iter().map(text).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                text(&d[key::DEVICE]),
                size_cell(&d[key::SIZE]),
                text(&d[key::BUS]),
                format!("{} {}", text(&d[key::VENDOR]), text(&d[key::MODEL]))
                    .trim()
                    .to_owned(),
                text(&d[key::SERIAL]),
                if mounted.is_empty() {
                    "-".to_owned()
                } else {
                    mounted
                },
                status(d),
            ]
        })
        .collect();
    output::table(
        &[
            "DEVICE", "SIZE", "BUS", "MODEL", "SERIAL", "MOUNTED", "STATUS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_say_why() {
        let card = json!({"device": "/dev/sdb", "size": 31_914_983_424u64, "bus": "usb",
            "vendor": "Generic", "model": "SD Reader", "serial": "123", "mounted": ["/media/u/boot"],
            "verdict": "ok", "reason": ""});
        let sys = json!({"device": "/dev/vda", "size": 1u64 << 40, "bus": "virtio",
            "vendor": "", "model": "", "serial": "", "mounted": ["/"],
            "verdict": "refused", "reason": "it holds /"});
        let t = table(&[card.clone(), sys]);
        assert!(
            t.contains("/dev/sdb") && t.contains("Generic SD Reader") && t.contains(" ok"),
            "{t}"
        );
        assert!(t.contains("refused: it holds /"), "{t}");
        assert_eq!(describe(&card), "/dev/sdb (29.72 GiB, Generic SD Reader)");
    }
}
