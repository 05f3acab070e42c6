//! pib-client against the real daemon, as root and as an unprivileged user: following jobs,
//! plain-words errors, exit codes.

use pib_tests::{client_as_root, last_json, text, TestUser};

#[test]
fn status_reports_docker_and_binfmt() {
    let out = client_as_root(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = last_json(&out);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    // make dev-up starts dockerd; the daemon must negotiate the engine's older API.
    assert_eq!(status["docker_reachable"], true, "{status}");
    assert!(status["docker_api_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    let arches: Vec<&str> = status["binfmt"]
        .as_array()
        .expect("binfmt list")
        .iter()
        .map(|m| m["arch"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["arm", "aarch64"]);
}

#[test]
fn register_follows_the_job_and_streams_its_log() {
    let out = client_as_root(&["--json", "binfmt", "register", "--arch", "arm"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#"{"log":"arm: interpreter "#),
        "log lines missing:\n{stdout}"
    );
    let result = last_json(&out);
    assert_eq!(result["state"], "succeeded", "{result}");
    assert_eq!(result["operation"], "binfmt-register");
    let job = result["job"].as_str().expect("job path");

    let out = client_as_root(&["--json", "jobs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(job));
}

#[test]
fn an_unprivileged_user_gets_plain_words_and_exit_3() {
    let user = TestUser::ensure("pibtest-cli");
    let out = user.client(&["--no-ask-password", "binfmt", "unregister"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not allowed"), "{stderr}");
    assert!(stderr.contains("org.pibuilder.binfmt"), "{stderr}");

    let out = user.client(&["--json", "binfmt", "register"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        last_json(&out)["error"],
        "org.pibuilder.PiBuilder1.Error.NotAuthorized"
    );
}

#[test]
fn unknown_jobs_and_bad_arguments_are_clear_errors() {
    let out = client_as_root(&["cancel", "999999"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such job"),
        "{}",
        text(&out)
    );

    let out = client_as_root(&["binfmt", "register", "--arch", "sparc"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = client_as_root(&["scan", "--interface", "pibnosuch0"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pibnosuch0"),
        "{}",
        text(&out)
    );

    // A card command without its device and without a terminal to pick one on is a usage
    // error, before anything is opened.
    let out = client_as_root(&["flash", "/nonexistent.img"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Without a terminal to ask on, writing a card needs --yes.
    let out = client_as_root(&["format", "/dev/null"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{}",
        text(&out)
    );
}
