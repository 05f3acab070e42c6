//! docs/api.md, the D-Bus API reference, generated from the contract XML, the central
//! authorization table and the polkit policy by a test: `make api-docs` writes it
//! (PIB_WRITE_API_DOCS=1), every other run fails when the file is stale, so a new method,
//! argument or error cannot land undocumented.

pub mod contract;
pub mod policy;
mod render;

use std::path::PathBuf;

use pib_dbus_interfaces::{JOB_XML, MANAGER_XML};

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// The interfaces in the order the reference shows them.
pub fn interfaces() -> Vec<contract::Interface> {
    [MANAGER_XML, JOB_XML]
        .into_iter()
        .flat_map(contract::parse)
        .collect()
}

fn generate() -> String {
    let policy = std::fs::read_to_string(repo_file("polkit/org.pibuilder.policy"))
        .expect("polkit/org.pibuilder.policy");
    let interfaces = interfaces();
    let actions = policy::parse(&policy);
    render::render(&render::Sources {
        interfaces: &interfaces,
        actions: &actions,
    })
}

#[test]
fn docs_api_md_is_generated_from_the_current_contract() {
    let path = repo_file("docs/api.md");
    let fresh = generate();
    if std::env::var_os("PIB_WRITE_API_DOCS").is_some() {
        std::fs::write(&path, &fresh).expect("write docs/api.md");
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == fresh,
        "docs/api.md is stale: run `make api-docs` and commit the result"
    );
}

#[test]
fn every_member_of_the_contract_is_documented() {
    for iface in interfaces() {
        let docs = iface
            .methods
            .iter()
            .map(|m| (&m.name, &m.doc))
            .chain(iface.properties.iter().map(|p| (&p.name, &p.doc)))
            .chain(iface.signals.iter().map(|s| (&s.name, &s.doc)));
        for (name, doc) in docs {
            assert!(
                !doc.trim().is_empty(),
                "{}.{name} has no comment above it in the XML",
                iface.name
            );
        }
    }
}

#[test]
fn every_error_the_service_returns_is_described() {
    // The error enum's names, read from its own short_name() arms.
    let source = std::fs::read_to_string(repo_file("dbus-interfaces/src/error.rs"))
        .expect("dbus-interfaces/src/error.rs");
    let names: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DBusError::"))
        .filter_map(|l| l.split_once("(_) => \""))
        .map(|(variant, _)| variant)
        .filter(|v| *v != "ZBus")
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    let described: Vec<String> = interfaces()
        .iter()
        .flat_map(|i| contract::errors(&i.file_doc))
        .map(|(name, text)| {
            assert!(!text.is_empty(), "{name} has no description");
            name
        })
        .collect();
    for name in names {
        assert!(
            described.iter().any(|d| d == name),
            "the error {name} is not in the XML's error list"
        );
    }
}

#[test]
fn doc_comments_keep_their_shape() {
    assert_eq!(
        contract::dedent("\n    a\n      - b\n\n    c\n  "),
        "a\n  - b\n\nc"
    );
    let doc = "Intro\n\nErrors (all)\n- One   first\n      more\n- Two   second\nAfter";
    assert_eq!(
        contract::errors(doc),
        [
            ("One".to_owned(), "first more".to_owned()),
            ("Two".to_owned(), "second".to_owned())
        ]
    );
    assert_eq!(contract::without_errors(doc), "Intro\n\nAfter");
}
