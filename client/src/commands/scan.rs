//! `pib-client scan [-i IFACE]... [--timeout S] [--no-names]`: Raspberry Pi boards on the
//! local networks, found by the daemon's ARP sweep.

use std::collections::HashMap;

use pib_dbus_interfaces::types::{options, result, scan as key};
use serde_json::Value;
use zbus::Variant;

use crate::bus::Bus;
use crate::calls;
use crate::cli::ScanArgs;
use crate::commands::base::text;
use crate::errors::ClientError;
use crate::follow;
use crate::job::Snapshot;
use crate::output::{self, Ui};

pub async fn run(bus: &mut Bus, ui: &Ui, args: &ScanArgs) -> Result<(), ClientError> {
    let manager = bus.manager().await?;
    let (path, ended) = follow::start(
        bus,
        ui,
        manager.inner(),
        &calls::SCAN,
        &(scan_options(args),),
    )
    .await?;
    if ui.json {
        output::json_line(&output::job_result_json(&path, &ended));
    } else {
        output::plain(&report(&ended));
    }
    Ok(())
}

fn scan_options(args: &ScanArgs) -> HashMap<&'static str, Variant<'static>> {
    let mut o = HashMap::new();
    if !args.interfaces.is_empty() {
        o.insert(options::INTERFACES, Variant::from(args.interfaces.clone()));
    }
    if let Some(t) = args.timeout {
        o.insert(options::TIMEOUT, Variant::from(t));
    }
    if args.no_names {
        o.insert(options::RESOLVE, Variant::from(false));
    }
    o
}

fn list<'a>(s: &'a Snapshot, name: &str) -> &'a [Value] {
    s.result
        .get(name)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The boards as a table, then the job's summary and what was left out; without boards,
/// only the summary and the notes.
fn report(s: &Snapshot) -> String {
    let hosts = list(s, result::HOSTS);
    let mut lines = Vec::new();
    if !hosts.is_empty() {
        let rows: Vec<Vec<String>> = hosts
            .iter()
            .map(|h| {
                let name = text(&h[key::HOSTNAME]);
                vec![
                    text(&h[key::IP]),
                    text(&h[key::MAC]),
                    if name.is_empty() {
                        "-".to_owned()
                    } else {
                        name
                    },
                    text(&h[key::INTERFACE]),
                ]
            })
            .collect();
        lines.push(output::table(
            &["IP", "MAC", "HOSTNAME", "INTERFACE"],
            &rows,
        ));
    }
    lines.push(output::for_terminal(&s.message).into_owned());
    for k in list(s, result::SKIPPED) {
        let subnet = text(&k[key::SUBNET]);
        lines.push(format!(
            "  not swept: {}{}{}: {}",
            text(&k[key::INTERFACE]),
            if subnet.is_empty() { "" } else { " " },
            subnet,
            text(&k[key::REASON])
        ));
    }
    for w in list(s, result::SWEPT) {
        let (asked, all) = (w[key::ASKED].as_u64(), w[key::ADDRESSES].as_u64());
        if let (Some(asked), Some(all)) = (asked, all) {
            if asked < all {
                lines.push(format!(
                    "  cut short: {} {}: {asked} of {all} addresses asked before the time bound \
                     (--timeout)",
                    text(&w[key::INTERFACE]),
                    text(&w[key::SUBNET])
                ));
            }
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_only_carry_what_was_given() {
        let args = |interfaces: &[&str], timeout, no_names| ScanArgs {
            interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
            timeout,
            no_names,
        };
        assert!(scan_options(&args(&[], None, false)).is_empty());
        let o = scan_options(&args(&["eth0", "wlan0"], Some(5), true));
        assert_eq!(o["interfaces"], Variant::from(vec!["eth0", "wlan0"]));
        assert_eq!(o["timeout"], Variant::from(5u32));
        assert_eq!(o["resolve"], Variant::from(false));
    }

    #[test]
    fn the_report_lists_boards_and_says_what_was_left_out() {
        let s = Snapshot {
            message: "Found 2 Raspberry Pis (1 other host answered, 1 subnet swept, 1 network skipped).".into(),
            result: json!({
                "hosts": [
                    {"ip": "10.0.0.5", "mac": "b8:27:eb:00:00:05", "interface": "eth0", "hostname": "kiosk.lan"},
                    {"ip": "10.0.0.17", "mac": "dc:a6:32:00:00:11", "interface": "eth0", "hostname": ""},
                ],
                "swept": [{"interface": "eth0", "subnet": "10.0.0.0/24", "addresses": 253, "asked": 100}],
                "skipped": [{"interface": "eth0", "subnet": "172.16.0.0/16", "reason": "too large to sweep"}],
            })
            .as_object()
            .unwrap()
            .clone(),
            ..Snapshot::default()
        };
        let r = report(&s);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(
            lines[0],
            "IP         MAC                HOSTNAME   INTERFACE"
        );
        assert_eq!(lines[1], "10.0.0.5   b8:27:eb:00:00:05  kiosk.lan  eth0");
        assert_eq!(lines[2], "10.0.0.17  dc:a6:32:00:00:11  -          eth0");
        assert!(lines[3].starts_with("Found 2 Raspberry Pis"));
        assert_eq!(
            lines[4],
            "  not swept: eth0 172.16.0.0/16: too large to sweep"
        );
        assert!(lines[5].contains("100 of 253 addresses"), "{r}");

        let none = Snapshot {
            message: "No Raspberry Pi found (0 other hosts answered, 1 subnet swept).".into(),
            ..Snapshot::default()
        };
        assert_eq!(report(&none), none.message);
    }
}
