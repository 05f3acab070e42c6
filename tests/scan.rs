//! `pib-client scan` against a network of namespaces: boards with Raspberry Pi MAC addresses
//! are listed with their names, a host with another MAC is not, a subnet too large to sweep
//! is skipped and reported (and a Pi in it stays unseen), and the scan needs its polkit grant.

use std::time::{Duration, Instant};

use pib_tests::netlab::{self, Host, NetLab};
use pib_tests::{client_as_root, last_json, text, PolkitRule, TestUser};
use serde_json::Value;

const RULE_RELOAD: Duration = Duration::from_secs(15);

/// The private test subnets (RFC 2544's benchmarking range, never routed): a /24 to sweep and
/// a /16 that is larger than the daemon sweeps per interface.
const SMALL: &str = "198.18.213.1/24";
const LARGE: &str = "198.19.0.1/16";

fn hosts() -> Vec<Host> {
    vec![
        Host {
            cidr: "198.18.213.11/24",
            mac: "b8:27:eb:13:57:01",
            name: Some("pibscan-kiosk"),
        },
        Host {
            cidr: "198.18.213.12/24",
            mac: "dc:a6:32:13:57:02",
            name: Some("pibscan-pi4"),
        },
        Host {
            cidr: "198.18.213.13/24",
            mac: "2c:cf:67:13:57:03",
            name: Some("pibscan-pi5"),
        },
        // Not a Raspberry Pi: answers, but must not be listed.
        Host {
            cidr: "198.18.213.14/24",
            mac: "02:13:57:00:00:04",
            name: None,
        },
        // A Pi in the subnet that is too large to sweep: never asked, never listed.
        Host {
            cidr: "198.19.7.7/16",
            mac: "d8:3a:dd:13:57:05",
            name: None,
        },
    ]
}

fn hosts_of(result: &Value) -> Vec<(String, String, String, String)> {
    result["result"]["hosts"]
        .as_array()
        .unwrap_or_else(|| panic!("no hosts in {result}"))
        .iter()
        .map(|h| {
            let s = |k: &str| {
                h[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {h}"))
                    .to_owned()
            };
            (s("ip"), s("mac"), s("interface"), s("hostname"))
        })
        .collect()
}

#[test]
fn a_granted_user_finds_the_pis_and_only_them() {
    let lab = NetLab::new(&[SMALL, LARGE], &hosts());
    let br = lab.bridge.clone();
    let user = TestUser::ensure("pibtest-scan");
    let args = [
        "--json",
        "scan",
        "--interface",
        br.as_str(),
        "--timeout",
        "3",
    ];

    // No grant: the policy's default outside an active session asks for the admin password,
    // which nobody can give here.
    let out = user.client(&args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        last_json(&out)["error"],
        "org.pibuilder.PiBuilder1.Error.NotAuthorized"
    );

    let _rule = PolkitRule::grant("scan", &user.name, "org.pibuilder.scan");
    let mut out = user.client(&args);
    assert!(
        pib_tests::eventually(RULE_RELOAD, || {
            out = user.client(&args);
            out.status.success()
        }),
        "still not allowed after the grant: {}",
        text(&out)
    );
    let started = Instant::now();
    let out = user.client(&args);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let result = last_json(&out);
    assert_eq!(result["operation"], "scan", "{result}");
    assert_eq!(result["state"], "succeeded", "{result}");
    // The other host did answer (so it was reached, and left out for its MAC).
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Found 3 Raspberry Pis (1 other host answered")),
        "{result}"
    );
    let row = |ip: &str, mac: &str, name: &str| {
        (ip.to_owned(), mac.to_owned(), br.clone(), name.to_owned())
    };
    assert_eq!(
        hosts_of(&result),
        [
            row("198.18.213.11", "b8:27:eb:13:57:01", "pibscan-kiosk"),
            row("198.18.213.12", "dc:a6:32:13:57:02", "pibscan-pi4"),
            row("198.18.213.13", "2c:cf:67:13:57:03", "pibscan-pi5"),
        ],
        "{result}"
    );
    assert_eq!(
        result["result"]["swept"],
        serde_json::json!([{"interface": br, "subnet": "198.18.213.0/24",
            "addresses": 253, "asked": 253}]),
        "{result}"
    );
    let skipped = result["result"]["skipped"].as_array().expect("skipped");
    assert_eq!(skipped.len(), 1, "{result}");
    assert_eq!(skipped[0]["interface"], br.as_str());
    assert_eq!(skipped[0]["subnet"], "198.19.0.0/16");
    assert!(
        skipped[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("too large") && r.contains("65534")),
        "{result}"
    );
    // The sweep is bounded by --timeout, the names by two seconds more; the rest is the
    // client, polkit and the bus.
    assert!(
        took < Duration::from_secs(3 + 2 + 10),
        "the scan took {took:?}"
    );

    // For people: a table of the boards and the skipped subnet said in words.
    let out = user.client(&["scan", "-i", &br, "--timeout", "2", "--no-names"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("IP "), "{stdout}");
    for shown in [
        "198.18.213.11",
        "b8:27:eb:13:57:01",
        "2c:cf:67:13:57:03",
        "Found 3 Raspberry Pis",
    ] {
        assert!(stdout.contains(shown), "{shown} missing from\n{stdout}");
    }
    for hidden in [
        "198.18.213.14",
        "02:13:57:00:00:04",
        "198.19.7.7",
        "pibscan-kiosk",
    ] {
        assert!(!stdout.contains(hidden), "{hidden} shown in\n{stdout}");
    }
    assert!(
        stdout.contains("not swept: pibscan-br 198.19.0.0/16: too large"),
        "{stdout}"
    );

    drop(lab);
    assert_eq!(netlab::leftovers(), Vec::<String>::new());
}

#[test]
fn unknown_and_malformed_interfaces_are_refused_before_anything_is_sent() {
    let out = client_as_root(&["--json", "scan", "-i", "pibnosuch0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = last_json(&out);
    assert_eq!(
        err["error"], "org.pibuilder.PiBuilder1.Error.NotFound",
        "{err}"
    );
    assert!(err.to_string().contains("pibnosuch0"), "{err}");

    let out = client_as_root(&["--json", "scan", "-i", "../etc"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        last_json(&out)["error"],
        "org.pibuilder.PiBuilder1.Error.InvalidArgs"
    );

    // Loopback exists but is never swept: the job succeeds and says why.
    let out = client_as_root(&["--json", "scan", "-i", "lo", "--no-names"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let result = last_json(&out);
    assert_eq!(result["result"]["hosts"], serde_json::json!([]), "{result}");
    assert_eq!(
        result["result"]["skipped"],
        serde_json::json!([{"interface": "lo", "subnet": "", "reason": "loopback"}]),
        "{result}"
    );
}
