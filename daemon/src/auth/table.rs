//! The one place that says which polkit action each D-Bus method needs (DESIGN §3 rule 2).
//!
//! The gate looks a call up here by the interface and member in its own message header, so a
//! method cannot run under another method's rule, and a method missing here is denied (and
//! fails the contract test).

use pib_dbus_interfaces::actions;
use pib_dbus_interfaces::names::{JOB_INTERFACE, MANAGER_INTERFACE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// The caller must hold this polkit action.
    Action(&'static str),
    /// The job's starter may; anyone else must hold this polkit action.
    JobOwnerOr(&'static str),
}

impl Requirement {
    /// The form used by the `org.pibuilder.PiBuilder1.Action` annotation in the XML.
    #[cfg(test)]
    pub fn annotation(&self) -> String {
        match self {
            Requirement::Action(a) => (*a).to_owned(),
            Requirement::JobOwnerOr(a) => format!("{}{a}", actions::JOB_OWNER_OR),
        }
    }

    pub fn action(&self) -> &'static str {
        match self {
            Requirement::Action(a) | Requirement::JobOwnerOr(a) => a,
        }
    }
}

pub const TABLE: &[(&str, &str, Requirement)] = &[
    (
        MANAGER_INTERFACE,
        "GetStatus",
        Requirement::Action(actions::INSPECT),
    ),
    (
        MANAGER_INTERFACE,
        "ListJobs",
        Requirement::Action(actions::INSPECT),
    ),
    (
        MANAGER_INTERFACE,
        "RegisterBinfmt",
        Requirement::Action(actions::BINFMT),
    ),
    (
        MANAGER_INTERFACE,
        "UnregisterBinfmt",
        Requirement::Action(actions::BINFMT),
    ),
    (
        MANAGER_INTERFACE,
        "ListBases",
        Requirement::Action(actions::INSPECT),
    ),
    (
        MANAGER_INTERFACE,
        "ListImages",
        Requirement::Action(actions::INSPECT),
    ),
    (
        MANAGER_INTERFACE,
        "FetchBase",
        Requirement::Action(actions::BUILD),
    ),
    (
        MANAGER_INTERFACE,
        "ImportBase",
        Requirement::Action(actions::BUILD),
    ),
    (
        MANAGER_INTERFACE,
        "Build",
        Requirement::Action(actions::BUILD),
    ),
    // RemoveImage, Clean, Shell and MakeDiskImage also check ownership of what they touch: someone else's
    // image needs org.pibuilder.manage on top (see results::authorize_owner).
    (
        MANAGER_INTERFACE,
        "RemoveImage",
        Requirement::Action(actions::BUILD),
    ),
    (
        MANAGER_INTERFACE,
        "Clean",
        Requirement::Action(actions::BUILD),
    ),
    (
        MANAGER_INTERFACE,
        "Shell",
        Requirement::Action(actions::BUILD),
    ),
    (
        MANAGER_INTERFACE,
        "MakeDiskImage",
        Requirement::Action(actions::BUILD),
    ),
    (
        MANAGER_INTERFACE,
        "ListDevices",
        Requirement::Action(actions::INSPECT),
    ),
    // Flash, FormatDevice and Install authorize each device with its details; a disk that is
    // not removable-class needs org.pibuilder.flash-system-device instead.
    (
        MANAGER_INTERFACE,
        "Flash",
        Requirement::Action(actions::FLASH),
    ),
    (
        MANAGER_INTERFACE,
        "FormatDevice",
        Requirement::Action(actions::FLASH),
    ),
    (
        MANAGER_INTERFACE,
        "Install",
        Requirement::Action(actions::FLASH),
    ),
    (
        MANAGER_INTERFACE,
        "Scan",
        Requirement::Action(actions::SCAN),
    ),
    (
        JOB_INTERFACE,
        "Cancel",
        Requirement::JobOwnerOr(actions::MANAGE),
    ),
    (
        JOB_INTERFACE,
        "AttachLog",
        Requirement::JobOwnerOr(actions::MANAGE),
    ),
];

pub fn requirement(interface: &str, member: &str) -> Option<Requirement> {
    TABLE
        .iter()
        .find(|(i, m, _)| *i == interface && *m == member)
        .map(|(_, _, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (interface, method, annotation) for every method in the contract XML.
    fn xml_methods() -> Vec<(String, String, Option<String>)> {
        crate::apidoc::interfaces()
            .into_iter()
            .flat_map(|iface| {
                iface
                    .methods
                    .into_iter()
                    .map(move |m| (iface.name.clone(), m.name, m.action))
            })
            .collect()
    }

    #[test]
    fn every_method_in_the_contract_has_a_rule_matching_its_annotation() {
        let methods = xml_methods();
        assert!(methods.len() >= TABLE.len());
        for (iface, method, ann) in &methods {
            let req = requirement(iface, method)
                .unwrap_or_else(|| panic!("{iface}.{method} has no entry in the auth table"));
            assert_eq!(
                ann.as_deref(),
                Some(req.annotation().as_str()),
                "{iface}.{method}: XML annotation and auth table disagree"
            );
        }
        for (iface, method, _) in TABLE {
            assert!(
                methods.iter().any(|(i, m, _)| i == iface && m == method),
                "{iface}.{method} is in the auth table but not in the XML"
            );
        }
    }

    #[test]
    fn every_action_used_is_declared_in_the_policy() {
        let policy = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../polkit/org.pibuilder.policy"
        ))
        .expect("polkit/org.pibuilder.policy");
        let declared: Vec<String> = crate::apidoc::policy::parse(&policy)
            .into_iter()
            .map(|a| a.id)
            .collect();
        for action in actions::ALL {
            assert!(
                declared.iter().any(|d| d == action),
                "{action} missing from the policy"
            );
        }
        for (_, _, req) in TABLE {
            assert!(actions::ALL.contains(&req.action()));
        }
    }

    #[test]
    fn unknown_methods_have_no_rule() {
        assert_eq!(requirement(MANAGER_INTERFACE, "Frobnicate"), None);
        assert_eq!(requirement("org.example.Other", "GetStatus"), None);
    }
}
