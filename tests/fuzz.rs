//! Fuzzing the bus API as unprivileged users: random methods of every interface in the
//! introspection XML with random and mutated arguments (bin/pib-test-fuzz.rs), then the daemon
//! is checked from outside, as root: the same process still serves, its memory and descriptor
//! count did not grow beyond a bounded allowance, no job was created, nothing was written
//! (no Docker image or container, no file in the daemon's state or cache directory).
//!
//! Bounded and seeded. `make test` runs the short form; `make fuzz` the long one:
//!   PIB_FUZZ_SECS   seconds of fuzzing without a grant (default 20; the granted run gets half)
//!   PIB_FUZZ_CALLS  at most this many calls per run (default 1,000,000: time is the bound)
//!   PIB_FUZZ_SEED   the seed (default: from the clock, printed so a failure can be replayed)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::sync::Mutex;

use pib_tests::{
    daemon_pid, error_of, manager, system_bus, test_call_bin, text, PolkitRule, TestUser,
    NOT_AUTHORIZED,
};

const RULE_RELOAD: Duration = Duration::from_secs(15);

/// The two runs share the daemon; their before/after figures must not mix.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Warm-up calls before the baseline is taken: the first calls set up what the daemon keeps
/// for its lifetime (its polkit and udisks proxies, the allocator's arenas, caches of bus
/// names), which is not growth.
const WARM_UP_CALLS: &str = "300";

/// Memory allowance over a run. A leak grows with the number of calls; this run makes
/// thousands (tens of thousands with `make fuzz`), so a leak of even a few hundred bytes per
/// call exceeds it, while glibc's arenas (one per tokio worker thread) may keep up to a few
/// MiB of freed message buffers (messages here reach about 1 MiB) without that being a leak.
const RSS_SLACK_KIB: u64 = 16 * 1024;

/// Descriptor allowance: a few may stay open legitimately (a lazily made bus proxy, the
/// journal). Every fuzzed call passes one to three descriptors, so a leak of the passed fds
/// would add thousands.
const FD_SLACK: usize = 8;

struct Snapshot {
    pid: u32,
    rss_kib: u64,
    fds: usize,
    jobs: BTreeSet<String>,
    docker: BTreeSet<String>,
    files: BTreeSet<PathBuf>,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("daemon fds")
        .count()
}

/// Everything Docker holds: images and containers (by id).
fn docker_objects() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for args in [
        &["ps", "-aq", "--no-trunc"][..],
        &["images", "-aq", "--no-trunc"],
    ] {
        let o = Command::new("docker").args(args).output().expect("docker");
        assert!(o.status.success(), "docker {args:?}: {}", text(&o));
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned),
        );
    }
    out
}

/// The daemon's writable places, two levels deep (per-job work dirs, images, caches).
fn daemon_files() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.insert(p.clone());
            if depth > 1 && p.is_dir() {
                walk(&p, depth - 1, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for dir in [
        "/var/lib/pi-builder",
        "/var/cache/pi-builder",
        "/run/pi-builder",
    ] {
        walk(Path::new(dir), 2, &mut out);
    }
    out
}

async fn snapshot() -> Snapshot {
    let conn = system_bus().await;
    let m = manager(&conn).await;
    // As root: activates the daemon if it idled out, and lists every user's jobs.
    let jobs = m
        .list_jobs()
        .await
        .expect("list jobs as root")
        .into_iter()
        .map(|p| p.to_string())
        .collect();
    let pid = daemon_pid(&conn).await.expect("daemon pid");
    Snapshot {
        pid,
        rss_kib: rss_kib(pid),
        fds: fd_count(pid),
        jobs,
        docker: docker_objects(),
        files: daemon_files(),
    }
}

/// Runs the fuzzer as `user`; returns its tally.
fn run_fuzzer(
    user: &TestUser,
    seed: u64,
    calls: &str,
    secs: &str,
    jobs: &[String],
) -> serde_json::Value {
    let out = user
        .command(fuzz_bin())
        .arg(seed.to_string())
        .arg(calls)
        .arg(secs)
        .args(jobs)
        .output()
        .expect("run pib-test-fuzz");
    assert!(out.status.success(), "the fuzzer failed: {}", text(&out));
    pib_tests::last_json(&out)
}

/// The fuzzer, copied where every user can run it (next to pib-test-call).
fn fuzz_bin() -> PathBuf {
    let dst = test_call_bin().with_file_name("pib-test-fuzz");
    let src = pib_tests::target_dir().join("pib-test-fuzz");
    std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    std::fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dst
}

/// Fuzzes as `user` (whose polkit rule is in place) and checks the daemon afterwards.
/// `may_succeed` lists the pi-builder methods allowed to answer with success.
async fn fuzz_and_check(user: &TestUser, secs: u64, may_succeed: &[&str]) {
    let seed = std::env::var("PIB_FUZZ_SEED")
        .ok()
        .map(|s| s.parse().expect("PIB_FUZZ_SEED"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let calls = env_u64("PIB_FUZZ_CALLS", 1_000_000).to_string();
    println!(
        "fuzzing as {} for {secs} s, seed {seed} (PIB_FUZZ_SEED={seed} replays it)",
        user.name
    );

    // Jobs of earlier tests, still exported: fuzzed calls aim at them too.
    let existing: Vec<String> = snapshot().await.jobs.into_iter().collect();
    run_fuzzer(user, seed ^ 0x5eed, WARM_UP_CALLS, "30", &existing);
    let before = snapshot().await;
    let tally = run_fuzzer(user, seed, &calls, &secs.to_string(), &existing);
    let after = snapshot().await;

    let n = tally["calls"].as_u64().unwrap();
    println!(
        "{n} calls; daemon pid {} -> {}, VmRSS {} -> {} KiB, fds {} -> {}",
        before.pid, after.pid, before.rss_kib, after.rss_kib, before.fds, after.fds
    );
    let outcomes: BTreeMap<String, BTreeMap<String, u64>> =
        serde_json::from_value(tally["outcomes"].clone()).unwrap();
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for seen in outcomes.values() {
        for (outcome, count) in seen {
            *totals.entry(outcome.as_str()).or_default() += count;
        }
    }
    println!(
        "{} methods called; outcomes {totals:?}; dropped mid-call {}; refused before sending {}",
        outcomes.len(),
        tally["dropped_mid_call"],
        tally["not_sent"]
    );
    // The whole tally, for a closer look after a failure.
    let dump = pib_tests::target_dir().join(format!("pib-fuzz-{}.json", user.name));
    let _ = std::fs::write(&dump, tally.to_string());
    assert!(n >= 100, "only {n} calls were made in {secs} s: {tally}");
    assert_eq!(
        tally["timeouts"].as_array().unwrap().len(),
        0,
        "calls without an answer: {}",
        tally["timeouts"]
    );

    // Same process: it neither crashed nor was replaced (the calls kept it from idling out).
    assert_eq!(
        after.pid, before.pid,
        "the daemon was restarted during the run"
    );
    assert!(
        after.rss_kib <= before.rss_kib + RSS_SLACK_KIB,
        "VmRSS grew from {} to {} KiB over {n} calls",
        before.rss_kib,
        after.rss_kib
    );
    assert!(
        after.fds <= before.fds + FD_SLACK,
        "descriptors grew from {} to {} over {n} calls",
        before.fds,
        after.fds
    );
    let new_jobs: Vec<_> = after.jobs.difference(&before.jobs).collect();
    assert!(new_jobs.is_empty(), "jobs were created: {new_jobs:?}");
    let new_docker: Vec<_> = after.docker.difference(&before.docker).collect();
    assert!(
        new_docker.is_empty(),
        "Docker objects appeared: {new_docker:?}"
    );
    let new_files: Vec<_> = after.files.difference(&before.files).collect();
    assert!(new_files.is_empty(), "files appeared: {new_files:?}");

    // Every pi-builder method answered with an error, except the ones granted; the errors
    // are the typed ones or the bus library's refusals of a wrong signature or name.
    let mut unexpected = Vec::new();
    for (method, seen) in &outcomes {
        let ours = method.starts_with("org.pibuilder.");
        let short = method.rsplit('.').next().unwrap();
        for outcome in seen.keys() {
            let fine = match outcome.as_str() {
                "ok" => !ours || may_succeed.contains(&short),
                // zbus answers a call that names no interface with a generic error before any
                // of the daemon's code runs.
                "org.freedesktop.DBus.Error.Failed" => method.starts_with("(none)."),
                o => EXPECTED_ERRORS.contains(&o),
            };
            if !fine {
                unexpected.push(format!("{method}: {outcome} x{}", seen[outcome]));
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "unexpected outcomes:\n{}",
        unexpected.join("\n")
    );
    // The run reached the authorization gate, not only the bus library's type checks.
    let denied: u64 = outcomes
        .values()
        .filter_map(|s| s.get(NOT_AUTHORIZED))
        .sum();
    assert!(denied > 0, "no call reached polkit: {}", tally["outcomes"]);
}

/// What a fuzzed call may get back. The device errors come from the device rules, which run
/// before polkit because the polkit details name the device; none of them touches the device
/// beyond looking it up. Not here, among others: Failed (an internal error), DockerUnavailable
/// (Docker was reached), NoSpace, Busy.
const EXPECTED_ERRORS: &[&str] = &[
    NOT_AUTHORIZED,
    pib_tests::INVALID_ARGS,
    "org.pibuilder.PiBuilder1.Error.NotFound",
    "org.pibuilder.PiBuilder1.Error.DeviceRefused",
    "org.pibuilder.PiBuilder1.Error.SystemDisk",
    "org.pibuilder.PiBuilder1.Error.DeviceBusy",
    "org.freedesktop.DBus.Error.UnknownMethod",
    "org.freedesktop.DBus.Error.UnknownObject",
    "org.freedesktop.DBus.Error.UnknownInterface",
    "org.freedesktop.DBus.Error.UnknownProperty",
    "org.freedesktop.DBus.Error.InvalidArgs",
    "org.freedesktop.DBus.Error.PropertyReadOnly",
    "org.freedesktop.DBus.Error.InvalidSignature",
];

async fn wait_for_rule(user: &TestUser, status_allowed: bool) {
    assert!(
        pib_tests::eventually(RULE_RELOAD, || {
            let status = user.call(&["status"]);
            let register = user.call(&["register", "aarch64"]);
            (error_of(&status).is_empty() == status_allowed)
                && error_of(&register) == NOT_AUTHORIZED
        }),
        "polkit did not apply the test's rule for {}",
        user.name
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn random_calls_without_a_grant_change_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let user = TestUser::ensure("pibtest-fuzz");
    let _rule = PolkitRule::deny_all("fuzz", &user.name);
    wait_for_rule(&user, false).await;
    fuzz_and_check(&user, env_u64("PIB_FUZZ_SECS", 20), &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn random_calls_with_only_the_inspect_grant_change_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let user = TestUser::ensure("pibtest-fuzzread");
    let name = &user.name;
    let _rule = PolkitRule::from_text(
        "fuzzread",
        &format!(
            "// pi-builder integration test (fuzzread): status and job lists only\n\
             polkit.addRule(function(action, subject) {{\n\
             \x20   if (subject.user != \"{name}\") return polkit.Result.NOT_HANDLED;\n\
             \x20   if (action.id == \"org.pibuilder.inspect\") return polkit.Result.YES;\n\
             \x20   if (action.id.indexOf(\"org.pibuilder.\") == 0) return polkit.Result.NO;\n\
             }});\n"
        ),
    );
    wait_for_rule(&user, true).await;
    let secs = env_u64("PIB_FUZZ_SECS", 20).div_ceil(2);
    fuzz_and_check(
        &user,
        secs,
        &[
            "GetStatus",
            "ListJobs",
            "ListBases",
            "ListImages",
            "ListDevices",
        ],
    )
    .await;
}
