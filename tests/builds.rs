//! Builds through pib-client on the real dockerd, arm64 under qemu: a user stage with build
//! args, running commands in the result, the cache, bad stages, cancel, and per-user images.
//!
//! Docker's images and cache are machine-wide, so the steps run in one test, in order.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pib_tests::{client_as_root, last_json, nonce, step_of, text, write_stage as stage, TestUser};

const NAME: &str = "pibtest-probe";

fn stages_dir() -> PathBuf {
    pib_tests::stages_dir("build")
}

fn build(dir: &Path, stages: &str, extra: &[&str]) -> Output {
    pib_tests::debian_build(NAME, stages, dir, extra)
}

/// (steps, cached) from a successful build's result.
fn counts(out: &Output) -> (u64, u64) {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    let r = &last_json(out)["result"];
    (
        r["steps"].as_u64().expect("steps"),
        r["cached"].as_u64().expect("cached"),
    )
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn containers() -> Vec<String> {
    docker_lines(&["ps", "-aq"])
}

/// Containers that exist now but did not in `before` (others' builds may come and go).
fn new_containers(before: &[String]) -> Vec<String> {
    containers()
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect()
}

fn shell(args: &[&str]) -> Output {
    let mut all = vec!["shell", NAME, "--"];
    all.extend_from_slice(args);
    client_as_root(&all)
}

#[test]
fn build_run_cache_refusals_cancel_and_ownership() {
    let dir = stages_dir();
    stage(
        &dir,
        "probe",
        "ARG HOSTNAME\nARG PROBE_COLOR=none\n\
         COPY stages/probe/hello.txt /etc/pib-probe/hello.txt\n\
         RUN echo \"host=${HOSTNAME} color=${PROBE_COLOR}\" > /etc/pib-probe/args && uname -m > /etc/pib-probe/arch\n",
        &[("hello.txt", &format!("hello v1 {}\n", nonce()))],
    );
    let before = containers();

    // A first build: bundled __init__ (found after the user dirs), then the user's stage.
    let out = build(
        &dir,
        "__init__ probe",
        &["--hostname", "testhost", "--set", "PROBE_COLOR=blue"],
    );
    let (steps, _) = counts(&out);
    assert!(steps >= 5, "{}", text(&out));

    let out = shell(&["uname", "-m"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "aarch64");
    let out = shell(&[
        "cat",
        "/etc/pib-probe/args",
        "/etc/pib-probe/hello.txt",
        "/etc/pib-probe/arch",
    ]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown.starts_with("host=testhost color=blue\nhello v1 ") && shown.ends_with("\naarch64\n"),
        "{shown:?}"
    );
    // The exit status of the command comes back.
    let out = shell(&["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));

    // Unchanged: every step after the header (ARG BASE_IMAGE, FROM) comes from the cache.
    let out = build(
        &dir,
        "__init__ probe",
        &["--hostname", "testhost", "--set", "PROBE_COLOR=blue"],
    );
    assert_eq!(counts(&out), (steps, steps - 2), "{}", text(&out));

    // Changing a file of the last stage re-runs from its COPY on (the COPY, the RUN and the
    // LABEL steps the engine appends for the build's labels); everything before is cached.
    // Docker's cache is machine-wide: content unique to this run keeps earlier runs' layers
    // from answering for this change.
    let v2 = format!("hello v2 {}\n", nonce());
    std::fs::write(dir.join("probe/hello.txt"), &v2).unwrap();
    let out = build(
        &dir,
        "__init__ probe",
        &["--hostname", "testhost", "--set", "PROBE_COLOR=blue"],
    );
    let copy_step = step_of(&out, "COPY stages/probe/hello.txt");
    assert_eq!(counts(&out), (steps, copy_step - 3), "{}", text(&out));
    let out = shell(&["cat", "/etc/pib-probe/hello.txt"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), v2);

    // --no-cache re-runs everything.
    let out = build(
        &dir,
        "__init__ probe",
        &["--no-cache", "--hostname", "testhost"],
    );
    assert_eq!(counts(&out).1, 0, "{}", text(&out));

    // Refusals, each a clear error, and nothing left behind.
    let images_before = docker_lines(&["images", "-q"]);
    let out = build(&dir, "__init__ missing-stage", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("missing-stage"), "{}", text(&out));
    let out = build(&dir, "__init__ probe", &["--set", "UNDECLARED=1"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("UNDECLARED"), "{}", text(&out));
    for (name, part) in [
        ("syntax", "# syntax=docker/dockerfile:1\nRUN true\n"),
        ("netflag", "RUN --network=host true\n"),
        ("fromother", "FROM debian\n"),
        ("remote", "ADD https://example.invalid/x /x\n"),
        ("copyfrom", "COPY --from=pib/u0/other /etc/shadow /x\n"),
    ] {
        stage(&dir, name, part, &[]);
        let out = build(&dir, &format!("__init__ {name}"), &[]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        assert_eq!(
            last_json(&out)["error"],
            "org.pibuilder.PiBuilder1.Error.InvalidArgs",
            "{name}: {}",
            text(&out)
        );
    }
    let escape = dir.join("escape");
    std::fs::create_dir_all(&escape).unwrap();
    std::fs::write(
        escape.join("Dockerfile.part"),
        "COPY stages/escape/link /x\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/shadow", escape.join("link")).unwrap();
    let out = build(&dir, "__init__ escape", &[]);
    // The client finds the link while packing the context and stops the job before the
    // daemon builds anything.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("escape/link"), "{}", text(&out));
    assert!(text(&out).contains("/etc/shadow"), "{}", text(&out));
    assert_eq!(
        docker_lines(&["images", "-q"]),
        images_before,
        "a refused build left images"
    );
    assert_eq!(
        new_containers(&before),
        Vec::<String>::new(),
        "a refused build left containers"
    );

    // Cancel: a stage that would run for a minute; the build stops and leaves no container.
    stage(&dir, "slow", "RUN sleep 60\n", &[]);
    let child = Command::new(pib_tests::client_bin())
        .env("PIB_BUNDLED_STAGES", pib_tests::bundled_stages())
        .args(pib_tests::debian_build_args(
            "pibtest-slow",
            "__init__ slow",
            &dir,
            &[],
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let out = client_as_root(&["--json", "jobs"]);
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let running = listed
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .flat_map(|v| v.as_array().cloned().unwrap_or_else(|| vec![v]))
            .find(|j| j["operation"] == "build" && j["state"] == "running" && j["stage"] == "slow");
        if let Some(j) = running {
            break j["path"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the slow stage never started: {listed}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    std::thread::sleep(Duration::from_secs(2));
    let out = client_as_root(&["cancel", &job]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !new_containers(&before).is_empty() {
        assert!(
            Instant::now() < deadline,
            "a cancelled build left containers"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Images are per user: another user neither sees nor removes ours.
    let out = client_as_root(&["--json", "images"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(NAME),
        "{}",
        text(&out)
    );
    let other = TestUser::ensure("pibtest-images");
    let out = other.client(&["--json", "images"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(NAME),
        "{}",
        text(&out)
    );
    let out = other.client(&["--no-ask-password", "rm", NAME]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let out = client_as_root(&["rm", NAME]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = client_as_root(&["--json", "images"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(NAME),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
