//! Known security advisories against crates the daemon links: every version of those crates in
//! Cargo.lock is at or above the release that fixed them.
//!
//! `cargo deny check advisories` needs the RustSec database, which is fetched from a git host
//! that the development and CI machines cannot reach (SECURITY.md, "Dependencies"). This test
//! is the offline part: the advisories below were looked up by hand, and each is one the
//! daemon is exposed to through what it parses or whom it trusts. A crate that is absent from
//! the lock file passes (it cannot be vulnerable), except those the daemon must link.

use std::collections::BTreeMap;

use pib_tests::repo_root;

struct Advisory {
    /// RustSec ids (and CVE aliases where known) this entry covers.
    ids: &'static str,
    krate: &'static str,
    /// The first fixed release; every version in the lock file must be at or above it.
    fixed: &'static str,
    /// Why it matters here.
    why: &'static str,
    /// The daemon links this crate: its absence means the lock file is not the one expected.
    required: bool,
}

const ADVISORIES: &[Advisory] = &[
    Advisory {
        ids: "RUSTSEC-2026-0067 (CVE-2026-33056), RUSTSEC-2026-0068 (CVE-2026-33055); \
              earlier RUSTSEC-2021-0080, RUSTSEC-2018-0002",
        krate: "tar",
        fixed: "0.4.45",
        why: "the daemon parses callers' build contexts and base tarballs and exported \
              container filesystems: a PAX size header ignored (0068) lets one archive look \
              different to tar-rs and to Docker; unpack_in following symlinks (0067) chmods \
              outside the target",
        required: true,
    },
    Advisory {
        ids: "RUSTSEC-2026-0278 (CVE-2026-78422)",
        krate: "zbus_polkit",
        // The first release checked by reading its source: Subject sends the uid as the i32
        // polkit expects. The daemon uses system-bus-name subjects from the message header,
        // which the advisory does not affect, but a future unix-process subject must not be.
        fixed: "6.0.0",
        why: "polkit authorization: a unix-process subject's uid was sent with the wrong \
              D-Bus type, so polkit fell back to a racy /proc lookup (PID reuse)",
        required: true,
    },
    Advisory {
        ids: "RUSTSEC-2026-0194, RUSTSEC-2026-0195",
        krate: "quick-xml",
        fixed: "0.41.0",
        why: "zbus_xml parses introspection XML with it; quadratic attribute checks and \
              unbounded namespace allocation are denial of service (not linked today)",
        required: false,
    },
    Advisory {
        ids: "RUSTSEC-2024-0421 (CVE-2024-12224)",
        krate: "idna",
        fixed: "1.0.0",
        why: "base tarball URLs are parsed by url/idna; masked Punycode labels compare equal \
              to other host names",
        required: true,
    },
    Advisory {
        ids: "RUSTSEC-2025-0009",
        krate: "ring",
        fixed: "0.17.12",
        why: "TLS for base downloads; AES functions may panic with overflow checks on",
        required: false,
    },
    Advisory {
        ids: "RUSTSEC-2024-0336 (CVE-2024-32650)",
        krate: "rustls",
        fixed: "0.23.5",
        why: "TLS for base downloads; a close_notify during the handshake loops forever",
        required: false,
    },
];

/// A release version as numbers (build metadata and pre-release tags dropped: a pre-release of
/// the fixed version counts as the fixed version's predecessor, which the strict compare gives).
fn parse(version: &str) -> (Vec<u64>, bool) {
    let version = version.split('+').next().unwrap();
    let (release, pre) = match version.split_once('-') {
        Some((r, _)) => (r, true),
        None => (version, false),
    };
    let nums = release
        .split('.')
        .map(|n| n.parse().unwrap_or_else(|_| panic!("version {version:?}")))
        .collect();
    (nums, pre)
}

/// `version >= fixed` in semver order.
fn at_or_above(version: &str, fixed: &str) -> bool {
    let (v, v_pre) = parse(version);
    let (f, _) = parse(fixed);
    match v.cmp(&f) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => !v_pre,
    }
}

/// Every crate in Cargo.lock with all its versions.
fn locked() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let lock: toml::Table = text.parse().expect("Cargo.lock is TOML");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in lock["package"].as_array().expect("[[package]]") {
        let name = package["name"].as_str().unwrap().to_owned();
        let version = package["version"].as_str().unwrap().to_owned();
        out.entry(name).or_default().push(version);
    }
    out
}

#[test]
fn version_order_is_semver_order() {
    assert!(at_or_above("0.4.45", "0.4.45"));
    assert!(at_or_above("0.4.46", "0.4.45"));
    assert!(at_or_above("0.5.0", "0.4.45"));
    assert!(!at_or_above("0.4.44", "0.4.45"));
    assert!(!at_or_above("0.4.9", "0.4.45"), "numeric, not text, order");
    assert!(!at_or_above("6.0.0-beta.1", "6.0.0"));
    assert!(at_or_above("2.1.3+zstd.1.5.7", "2.1.3"));
}

#[test]
fn locked_crates_are_at_or_above_their_fixed_releases() {
    let locked = locked();
    let mut problems = Vec::new();
    for a in ADVISORIES {
        match locked.get(a.krate) {
            None if a.required => problems.push(format!(
                "{} is not in Cargo.lock, but the daemon links it ({})",
                a.krate, a.ids
            )),
            None => {}
            Some(versions) => {
                for v in versions.iter().filter(|v| !at_or_above(v, a.fixed)) {
                    problems.push(format!(
                        "{} {v} < {} (fixes {}): {}",
                        a.krate, a.fixed, a.ids, a.why
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The design requires a single zbus 6 (zbus_polkit, udisks2 and the daemon share one
/// connection type); two copies would also mean two sets of advisories to follow.
#[test]
fn one_zbus_6() {
    let locked = locked();
    let zbus = locked.get("zbus").expect("zbus in Cargo.lock");
    assert_eq!(zbus.len(), 1, "several zbus versions: {zbus:?}");
    assert!(
        zbus[0].starts_with("6."),
        "zbus {} is not the 6 line",
        zbus[0]
    );
}
