//! `pib-client status`, and the binfmt part of it that `binfmt status` shows alone.
//!
//! The status dictionary is read through its JSON form: keys may be added by newer daemons and
//! missing ones are shown as unknown, never as a failure.

use std::collections::HashMap;

use pib_dbus_interfaces::types::{status as key, Arch, BinfmtState};
use serde_json::{json, Value};
use zbus::OwnedVariant;

use crate::bus::Bus;
use crate::calls;
use crate::errors::ClientError;
use crate::output::{self, for_terminal, Ui};
use crate::variant::dict_to_json;

pub async fn run(bus: &mut Bus, ui: &Ui) -> Result<(), ClientError> {
    let status = fetch(bus).await?;
    if ui.json {
        output::json_line(&status);
    } else {
        output::plain(&render(&status));
    }
    Ok(())
}

pub async fn fetch(bus: &mut Bus) -> Result<Value, ClientError> {
    let manager = bus.manager().await?;
    let status: HashMap<String, OwnedVariant> =
        bus.call(manager.inner(), &calls::GET_STATUS, &()).await?;
    Ok(dict_to_json(&status))
}

pub fn render(status: &Value) -> String {
    let mut lines = vec![format!(
        "pi-builder daemon: {}",
        text(&status[key::VERSION]).unwrap_or_else(|| "version unknown".into())
    )];
    lines.push(docker_line(status));
    lines.extend(binfmt_lines(status, None));
    if let Some(n) = status[key::RUNNING_JOBS].as_u64() {
        lines.push(format!("Running jobs: {n}"));
    }
    lines.join("\n")
}

fn text(v: &Value) -> Option<String> {
    v.as_str()
        .filter(|s| !s.is_empty())
        .map(|s| for_terminal(s).into_owned())
}

fn docker_line(status: &Value) -> String {
    match status[key::DOCKER_REACHABLE].as_bool() {
        Some(true) => {
            let version = text(&status[key::DOCKER_VERSION]);
            let api = text(&status[key::DOCKER_API_VERSION]).map(|a| format!("API {a}"));
            let facts: Vec<String> = version.into_iter().chain(api).collect();
            if facts.is_empty() {
                "Docker: reachable".to_owned()
            } else {
                format!("Docker: reachable ({})", facts.join(", "))
            }
        }
        Some(false) => match text(&status[key::DOCKER_ERROR]) {
            Some(e) => format!("Docker: unreachable: {e}"),
            None => "Docker: unreachable".to_owned(),
        },
        None => "Docker: unknown".to_owned(),
    }
}

/// The binfmt section: whether binfmt_misc is mounted and a line per machine.
pub fn binfmt_lines(status: &Value, only: Option<Arch>) -> Vec<String> {
    let mut lines = vec![match status[key::BINFMT_MOUNTED].as_bool() {
        Some(true) => "binfmt_misc: mounted".to_owned(),
        Some(false) => "binfmt_misc: not mounted (registering mounts it)".to_owned(),
        None => "binfmt_misc: unknown".to_owned(),
    }];
    lines.extend(
        machines(status, only)
            .iter()
            .map(|m| format!("  {}", machine_line(m))),
    );
    lines
}

pub fn binfmt_json(status: &Value, only: Option<Arch>) -> Value {
    json!({
        key::BINFMT_MOUNTED: status[key::BINFMT_MOUNTED],
        key::BINFMT: machines(status, only),
    })
}

fn machines(status: &Value, only: Option<Arch>) -> Vec<Value> {
    let all = status[key::BINFMT].as_array().cloned().unwrap_or_default();
    all.into_iter()
        .filter(|m| only.is_none_or(|a| m[key::binfmt::ARCH].as_str() == Some(a.as_str())))
        .collect()
}

fn machine_line(m: &Value) -> String {
    use key::binfmt as b;
    let arch = text(&m[b::ARCH]).unwrap_or_else(|| "?".into());
    let facts: Vec<String> = [
        text(&m[b::NAME]),
        text(&m[b::INTERPRETER]),
        text(&m[b::FLAGS]).map(|f| format!("flags {f}")),
    ]
    .into_iter()
    .flatten()
    .chain((m[b::ENABLED].as_bool() == Some(false)).then(|| "disabled".to_owned()))
    .chain(
        (m[b::USABLE].as_bool() == Some(false))
            .then(|| "containers cannot use it (needs the F flag)".to_owned()),
    )
    .collect();
    let facts = if facts.is_empty() {
        String::new()
    } else {
        format!(" ({})", facts.join(", "))
    };
    let state = m[b::STATE].as_str().unwrap_or("");
    match state.parse::<BinfmtState>() {
        Ok(BinfmtState::Registered) => format!("{arch}: registered by pi-builder{facts}"),
        Ok(BinfmtState::Foreign) => format!("{arch}: foreign{facts}"),
        Ok(BinfmtState::Absent) => format!("{arch}: absent"),
        Err(_) => format!("{arch}: {}{facts}", for_terminal(state)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "version": "0.1.0",
            "docker_reachable": true,
            "docker_version": "20.10.24",
            "docker_api_version": "1.41",
            "binfmt_mounted": true,
            "binfmt": [
                {"arch": "arm", "state": "absent", "name": "", "interpreter": "", "flags": "",
                 "enabled": false, "usable": false},
                {"arch": "aarch64", "state": "registered", "name": "pib-qemu-aarch64",
                 "interpreter": "/usr/bin/qemu-aarch64-static", "flags": "F",
                 "enabled": true, "usable": true},
            ],
            "running_jobs": 1,
        })
    }

    #[test]
    fn readable_status() {
        assert_eq!(
            render(&sample()),
            "pi-builder daemon: 0.1.0\n\
             Docker: reachable (20.10.24, API 1.41)\n\
             binfmt_misc: mounted\n  \
             arm: absent\n  \
             aarch64: registered by pi-builder (pib-qemu-aarch64, /usr/bin/qemu-aarch64-static, flags F)\n\
             Running jobs: 1"
        );
    }

    #[test]
    fn unreachable_docker_and_foreign_entries() {
        let status = json!({
            "docker_reachable": false,
            "docker_error": "connection refused",
            "binfmt_mounted": false,
            "binfmt": [{"arch": "arm", "state": "foreign", "name": "qemu-arm",
                        "interpreter": "/usr/libexec/qemu-binfmt/arm-binfmt-P", "flags": "P",
                        "enabled": true, "usable": false}],
        });
        let out = render(&status);
        assert!(
            out.contains("Docker: unreachable: connection refused"),
            "{out}"
        );
        assert!(out.contains("binfmt_misc: not mounted"), "{out}");
        assert!(
            out.contains(
                "arm: foreign (qemu-arm, /usr/libexec/qemu-binfmt/arm-binfmt-P, flags P, \
                 containers cannot use it (needs the F flag))"
            ),
            "{out}"
        );
        assert!(out.contains("version unknown"));
        assert!(!out.contains("Running jobs"));
    }

    #[test]
    fn binfmt_filtered_by_arch() {
        let s = sample();
        let lines = binfmt_lines(&s, Some(Arch::Aarch64));
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("aarch64: registered"));
        let v = binfmt_json(&s, Some(Arch::Arm));
        assert_eq!(v["binfmt_mounted"], true);
        assert_eq!(v["binfmt"].as_array().unwrap().len(), 1);
        assert_eq!(v["binfmt"][0]["arch"], "arm");
        assert_eq!(binfmt_json(&s, None)["binfmt"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn daemon_text_cannot_drive_the_terminal() {
        let status = json!({"docker_reachable": false, "docker_error": "\x1b]0;pwned\x07"});
        assert!(docker_line(&status).contains("^[]0;pwned^G"));
    }
}
