//! polkit decides every call: real polkitd, real .rules files, real unprivileged users.
//!
//! Each test uses users of its own, so rule files written by one test cannot affect another
//! running in parallel.

use std::time::{Duration, Instant};

use pib_tests::{
    error_of, jobs_started_by, manager, system_bus, wait_job, PolkitRule, TestUser, NOT_AUTHORIZED,
};

const RULE_RELOAD: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn a_user_is_denied_without_the_action_and_allowed_once_a_rule_grants_it() {
    let user = TestUser::ensure("pibtest-auth");
    // Without a session the policy's default for binfmt is auth_admin_keep: no.
    // (Jobs of earlier runs may still be retained on the bus, hence before/after.)
    let before = jobs_started_by(user.uid).await;
    let denied = user.call(&["register", "aarch64"]);
    assert_eq!(error_of(&denied), NOT_AUTHORIZED, "{denied}");
    assert_eq!(
        jobs_started_by(user.uid).await,
        before,
        "a denied call must not create a job"
    );

    let rule = PolkitRule::grant("auth", &user.name, "org.pibuilder.binfmt");
    let mut granted = serde_json::Value::Null;
    assert!(
        pib_tests::eventually(RULE_RELOAD, || {
            granted = user.call(&["register", "aarch64"]);
            error_of(&granted).is_empty()
        }),
        "still denied after the rule was installed: {granted}"
    );
    let path = granted["ok"].as_str().expect("job path").to_owned();
    let conn = system_bus().await;
    let end = wait_job(&conn, &path).await;
    assert_eq!(end.state, "succeeded", "{end:?}");
    let job = pib_tests::job(&conn, &path).await;
    assert_eq!(job.started_by_uid().await.unwrap(), user.uid);
    assert_eq!(job.operation().await.unwrap(), "binfmt-register");

    // Its own job's log is readable without any further grant.
    let log = user.call(&["attach-log", &path]);
    assert!(error_of(&log).is_empty(), "{log}");
    assert!(log["ok"].as_str().unwrap().contains("aarch64"), "{log}");

    drop(rule);
    assert!(
        pib_tests::eventually(RULE_RELOAD, || {
            error_of(&user.call(&["register", "aarch64"])) == NOT_AUTHORIZED
        }),
        "still allowed after the rule was removed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn other_users_jobs_stay_private_unless_manage_is_granted() {
    let conn = system_bus().await;
    let root_job = manager(&conn)
        .await
        .register_binfmt(Default::default())
        .await
        .expect("root starts a job")
        .to_string();
    wait_job(&conn, &root_job).await;

    let other = TestUser::ensure("pibtest-other");
    let listed = other.call(&["list-jobs"]);
    assert!(error_of(&listed).is_empty(), "{listed}");
    assert!(
        !listed["ok"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &*root_job),
        "another user's job is listed: {listed}"
    );
    assert_eq!(
        error_of(&other.call(&["cancel", &root_job])),
        NOT_AUTHORIZED
    );
    assert_eq!(
        error_of(&other.call(&["attach-log", &root_job])),
        NOT_AUTHORIZED
    );

    let _rule = PolkitRule::grant("manage", &other.name, "org.pibuilder.manage");
    assert!(
        pib_tests::eventually(RULE_RELOAD, || {
            let listed = other.call(&["list-jobs"]);
            listed["ok"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p == &*root_job))
        }),
        "manage grant did not reveal the job"
    );
    let log = other.call(&["attach-log", &root_job]);
    assert!(error_of(&log).is_empty(), "{log}");
    // Cancelling a job that already ended is allowed and does nothing.
    let cancel = other.call(&["cancel", &root_job]);
    assert!(error_of(&cancel).is_empty(), "{cancel}");
    let state = pib_tests::job(&conn, &root_job)
        .await
        .state()
        .await
        .unwrap();
    assert_eq!(state, "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn even_read_only_calls_go_through_polkit() {
    let user = TestUser::ensure("pibtest-denied");
    let ok = user.call(&["status"]);
    assert!(
        error_of(&ok).is_empty(),
        "inspect is granted by default: {ok}"
    );
    let _rule = PolkitRule::deny_all("denied", &user.name);
    assert!(
        pib_tests::eventually(RULE_RELOAD, || {
            error_of(&user.call(&["status"])) == NOT_AUTHORIZED
        }),
        "a rule denying everything did not block GetStatus"
    );
    assert_eq!(error_of(&user.call(&["list-jobs"])), NOT_AUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn interactive_authorization_without_an_agent_is_denied_promptly() {
    let user = TestUser::ensure("pibtest-noagent");
    let started = Instant::now();
    let out = user.call(&["--interactive", "register", "arm"]);
    assert_eq!(error_of(&out), NOT_AUTHORIZED, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "denial took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_build_api_method_is_denied_without_a_grant() {
    // Valid arguments, a user polkit refuses everything: each call must be NotAuthorized
    // (and so must not reach Docker, the base cache or any file).
    let user = TestUser::ensure("pibtest-buildapi");
    let _rule = PolkitRule::deny_all("buildapi", &user.name);
    // A card the device rules accept, so the card methods get as far as polkit.
    let dir = std::env::temp_dir().join(format!("pib-authz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let card = pib_tests::LoopCard::new(&dir, "card", 64 << 20, false);
    let mut outcome = serde_json::Value::Null;
    assert!(
        pib_tests::eventually(RULE_RELOAD, || {
            outcome = user.call(&["probe-all", &card.dev]);
            outcome["ok"]
                .as_object()
                .is_some_and(|m| m.values().all(|e| e == NOT_AUTHORIZED))
        }),
        "not every method was denied: {outcome}"
    );
    assert_eq!(outcome["ok"].as_object().unwrap().len(), 14, "{outcome}");
    drop(card);
    let _ = std::fs::remove_dir_all(&dir);
}
