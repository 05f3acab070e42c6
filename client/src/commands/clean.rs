//! `pib-client clean [--all-users] [--bases]`.

use std::collections::HashMap;

use pib_dbus_interfaces::types::{options, result};
use serde_json::Value;
use zbus::Variant;

use crate::bus::Bus;
use crate::calls;
use crate::cli::CleanArgs;
use crate::errors::ClientError;
use crate::follow;
use crate::humanize;
use crate::job::Snapshot;
use crate::output::{self, Ui};

pub async fn run(bus: &mut Bus, ui: &Ui, args: &CleanArgs) -> Result<(), ClientError> {
    let manager = bus.manager().await?;
    let attempt = if args.all_users || args.bases {
        &calls::CLEAN_SHARED
    } else {
        &calls::CLEAN
    };
    let (path, ended) = follow::start(bus, ui, manager.inner(), attempt, &(options(args),)).await?;
    if ui.json {
        output::json_line(&output::job_result_json(&path, &ended));
    } else {
        match summary(&ended) {
            Some(line) => output::plain(&line),
            None => output::job_result(ui, &path, &ended),
        }
    }
    Ok(())
}

fn options(args: &CleanArgs) -> HashMap<&'static str, Variant<'static>> {
    let mut o = HashMap::new();
    if args.all_users {
        o.insert(options::ALL_USERS, Variant::from(true));
    }
    if args.bases {
        o.insert(options::BASES, Variant::from(true));
    }
    o
}

fn summary(s: &Snapshot) -> Option<String> {
    let removed = s.result.get(result::REMOVED).and_then(Value::as_u64)?;
    let reclaimed = s
        .result
        .get(result::RECLAIMED)
        .and_then(Value::as_u64)
        .unwrap_or(0);
    // The contract counts images and build layers together, so no noun fits both.
    Some(match removed {
        0 => "Nothing to remove.".to_owned(),
        n => format!("{n} removed, {} reclaimed.", humanize::size(reclaimed)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_and_summary() {
        let o = options(&CleanArgs {
            all_users: false,
            bases: false,
        });
        assert!(o.is_empty());
        let o = options(&CleanArgs {
            all_users: true,
            bases: true,
        });
        assert_eq!(o["all_users"], Variant::from(true));
        assert_eq!(o["bases"], Variant::from(true));

        let s = |r: Value| Snapshot {
            result: r.as_object().unwrap().clone(),
            ..Snapshot::default()
        };
        assert_eq!(
            summary(&s(json!({"removed": 3, "reclaimed": 1_288_490_189u64}))).unwrap(),
            "3 removed, 1.20 GiB reclaimed."
        );
        assert_eq!(
            summary(&s(json!({"removed": 1, "reclaimed": 2048}))).unwrap(),
            "1 removed, 2.00 KiB reclaimed."
        );
        assert_eq!(
            summary(&s(json!({"removed": 0, "reclaimed": 0}))).unwrap(),
            "Nothing to remove."
        );
        assert_eq!(summary(&s(json!({}))), None);
    }
}
