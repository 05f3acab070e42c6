//! Load: 50 clients on connections of their own call GetStatus and ListJobs as fast as they
//! are answered for 10 s, as an unprivileged user, while a real build runs. Every call is
//! answered and none fails. Latency is measured, not asserted: the figures and their baseline
//! are scripts/bench-load's job (BENCHMARKS.md).

use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

use pib_tests::{client_as_root, manager, system_bus, text, write_stage, TestUser};

const NAME: &str = "pibtest-load";
const CLIENTS: &str = "50";
const SECONDS: &str = "10";

async fn running_builds() -> BTreeSet<String> {
    let conn = system_bus().await;
    let mut out = BTreeSet::new();
    for path in manager(&conn).await.list_jobs().await.expect("list jobs") {
        let job = pib_tests::job(&conn, path.as_str()).await;
        if job.operation().await.unwrap_or_default() == "build"
            && job.state().await.unwrap_or_default() == "running"
        {
            out.insert(path.to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_clients_are_all_answered_while_a_build_runs() {
    // A stage that keeps the build busy (under emulation) for longer than the load lasts; the
    // nonce keeps Docker's cache from skipping it.
    let dir = pib_tests::stages_dir("load");
    write_stage(
        &dir,
        "pibload",
        &format!(
            "RUN echo {} > /etc/pib-load && sleep 40\n",
            pib_tests::nonce()
        ),
        &[],
    );
    // ARM programs run through qemu: registered machine-wide, as `make demo` would.
    let binfmt = client_as_root(&["binfmt", "register"]);
    assert!(binfmt.status.success(), "{}", text(&binfmt));
    let before = running_builds().await;
    let build = std::thread::spawn({
        let dir = dir.clone();
        move || pib_tests::debian_build(NAME, "__init__ pibload", &dir, &[])
    });

    // The load starts once the build is running (the base may have to be made first).
    let deadline = Instant::now() + Duration::from_secs(300);
    let job = loop {
        let now: Vec<String> = running_builds()
            .await
            .difference(&before)
            .cloned()
            .collect();
        if let Some(j) = now.into_iter().next() {
            break j;
        }
        assert!(
            !build.is_finished(),
            "the build ended before the load began"
        );
        assert!(Instant::now() < deadline, "the build did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let user = TestUser::ensure("pibtest-load");
    let load_bin = pib_tests::test_call_bin().with_file_name("pib-test-load");
    std::fs::copy(pib_tests::target_dir().join("pib-test-load"), &load_bin).unwrap();
    let out = user
        .command(&load_bin)
        .args([CLIENTS, SECONDS, "status-jobs"])
        .output()
        .expect("run pib-test-load");
    assert!(out.status.success(), "{}", text(&out));
    let r = pib_tests::last_json(&out);
    println!("under load while {job} builds: {r}");

    let conn = system_bus().await;
    let state = pib_tests::job(&conn, &job).await.state().await.unwrap();
    if state != "running" {
        let built = build.join().unwrap();
        panic!(
            "the build ended ({state}) during the load: {r}\n{}",
            text(&built)
        );
    }

    assert_eq!(r["errors"], 0, "calls failed: {r}");
    assert_eq!(r["sent"], r["answered"], "calls unanswered: {r}");
    assert!(
        r["min_calls_of_a_client"].as_u64().unwrap() > 0,
        "a client got no answer at all: {r}"
    );

    let built: Output = build.join().unwrap();
    assert_eq!(built.status.code(), Some(0), "{}", text(&built));
    let removed = client_as_root(&["rm", NAME]);
    assert!(removed.status.success(), "{}", text(&removed));
    let _ = std::fs::remove_dir_all(&dir);
}
