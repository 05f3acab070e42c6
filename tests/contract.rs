//! The running daemon's introspection matches the contract XML exactly (methods, arguments,
//! properties, signals), for the Manager and for a job object.

use std::collections::BTreeMap;

use pib_dbus_interfaces::names::{JOB_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH};
use pib_dbus_interfaces::{JOB_XML, MANAGER_XML};
use pib_tests::{manager, system_bus, wait_job};
use zbus::fdo::IntrospectableProxy;

/// Members of one interface, normalised for comparison.
type Members = BTreeMap<String, Vec<String>>;

fn members(xml: &str, interface: &str) -> Members {
    let doc = roxmltree::Document::parse_with_options(
        xml,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("parse introspection XML");
    let iface = doc
        .descendants()
        .find(|n| n.has_tag_name("interface") && n.attribute("name") == Some(interface))
        .unwrap_or_else(|| panic!("{interface} not found in:\n{xml}"));
    let mut out = Members::new();
    for m in iface.children().filter(|n| n.is_element()) {
        let kind = m.tag_name().name();
        if kind == "annotation" {
            continue;
        }
        let name = m.attribute("name").expect("member name");
        let signature = match kind {
            "property" => vec![format!(
                "{} {}",
                m.attribute("type").unwrap_or(""),
                m.attribute("access").unwrap_or("")
            )],
            _ => m
                .children()
                .filter(|a| a.has_tag_name("arg"))
                .map(|a| {
                    format!(
                        "{} {} {}",
                        a.attribute("name").unwrap_or(""),
                        a.attribute("type").unwrap_or(""),
                        // Signal args have no direction; method args default to "in".
                        a.attribute("direction").unwrap_or(if kind == "signal" {
                            ""
                        } else {
                            "in"
                        })
                    )
                })
                .collect(),
        };
        out.insert(format!("{kind} {name}"), signature);
    }
    out
}

async fn introspect(conn: &zbus::Connection, path: &str) -> String {
    IntrospectableProxy::builder(conn)
        .destination(pib_dbus_interfaces::names::BUS_NAME)
        .path(path.to_owned())
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .expect("introspect")
}

#[tokio::test]
async fn manager_introspection_matches_the_contract() {
    let conn = system_bus().await;
    let live = introspect(&conn, MANAGER_PATH).await;
    let expected = members(MANAGER_XML, MANAGER_INTERFACE);
    assert!(!expected.is_empty());
    assert_eq!(members(&live, MANAGER_INTERFACE), expected);
}

#[tokio::test]
async fn job_introspection_matches_the_contract() {
    let conn = system_bus().await;
    let m = manager(&conn).await;
    // Registering is idempotent, so a job can be had without changing the system.
    let path = m
        .register_binfmt(Default::default())
        .await
        .expect("start a job");
    let live = introspect(&conn, path.as_str()).await;
    assert_eq!(
        members(&live, JOB_INTERFACE),
        members(JOB_XML, JOB_INTERFACE)
    );
    wait_job(&conn, path.as_str()).await;
}

#[test]
fn the_comparison_notices_a_difference() {
    // Guards the test above against comparing nothing: a changed argument type must show.
    let altered = MANAGER_XML.replace(
        r#"name="options" type="a{sv}""#,
        r#"name="options" type="s""#,
    );
    assert_ne!(
        members(&altered, MANAGER_INTERFACE),
        members(MANAGER_XML, MANAGER_INTERFACE)
    );
}
