//! Bad input gets a typed InvalidArgs error, before any password prompt, and the daemon keeps
//! serving.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use pib_dbus_interfaces::DBusError;
use pib_tests::{daemon_pid, error_of, manager, system_bus, wait_job, TestUser, INVALID_ARGS};
use zbus::Variant;

fn assert_invalid(result: Result<zbus::OwnedObjectPath, DBusError>, needle: &str) {
    match result {
        Err(DBusError::InvalidArgs(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected InvalidArgs mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_options_are_refused_by_name_and_the_daemon_keeps_serving() {
    let conn = system_bus().await;
    let m = manager(&conn).await;
    m.get_status().await.expect("daemon up");
    let pid = daemon_pid(&conn).await.expect("daemon pid");

    let unknown_arch = HashMap::from([("arch", Variant::from("x86_64"))]);
    assert_invalid(m.register_binfmt(unknown_arch).await, "x86_64");

    let wrong_type = HashMap::from([("arch", Variant::from(64u32))]);
    assert_invalid(m.register_binfmt(wrong_type).await, "must be a string");

    let unknown_key = HashMap::from([
        ("arch", Variant::from("arm")),
        ("force", Variant::from(true)),
    ]);
    assert_invalid(m.unregister_binfmt(unknown_key).await, "force");

    // A string wrapped in a variant inside the option's variant (signature v, not s).
    let nested = HashMap::from([(
        "arch",
        Variant::Variant(Box::new(Variant::Variant(Box::new(Variant::from(
            "aarch64",
        ))))),
    )]);
    assert_invalid(m.register_binfmt(nested).await, "must be a string");

    let huge = "a".repeat(10_000);
    let huge_key = HashMap::from([(huge.as_str(), Variant::from("x"))]);
    match m.register_binfmt(huge_key).await {
        Err(DBusError::InvalidArgs(msg)) => assert!(msg.len() < 300, "message not bounded"),
        other => panic!("expected InvalidArgs, got {other:?}"),
    }

    assert_eq!(daemon_pid(&conn).await, Some(pid), "the daemon restarted");
    m.get_status().await.expect("daemon still serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn arguments_of_the_wrong_type_are_refused_by_the_bus_library() {
    let conn = system_bus().await;
    let m = manager(&conn).await;
    let result: zbus::Result<zbus::OwnedObjectPath> =
        m.inner().call("RegisterBinfmt", &("aarch64",)).await;
    match result {
        Err(zbus::Error::FDO(e)) => {
            assert!(matches!(*e, zbus::fdo::Error::InvalidArgs(_)), "{e:?}")
        }
        Err(zbus::Error::MethodError(name, _, _)) => {
            assert_eq!(name.as_str(), "org.freedesktop.DBus.Error.InvalidArgs")
        }
        other => panic!("expected InvalidArgs, got {other:?}"),
    }
    let result: zbus::Result<zbus::OwnedObjectPath> = m
        .inner()
        .call("RegisterBinfmt", &(HashMap::<&str, Variant>::new(), 7u32))
        .await;
    assert!(result.is_err(), "extra argument accepted");
    m.get_status().await.expect("daemon still serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_comes_before_authorization() {
    // An unprivileged caller with no grant learns its input is wrong, not that it may not
    // ask: a password prompt for a call bound to fail would be worse.
    let user = TestUser::ensure("pibtest-badinput");
    let out = user.call(&["register", "sparc"]);
    assert_eq!(error_of(&out), INVALID_ARGS, "{out}");
    let out = user.call(&["register-option", "color", "blue"]);
    assert_eq!(error_of(&out), INVALID_ARGS, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_descriptors_that_are_not_writable_pipes_or_files_are_refused() {
    let conn = system_bus().await;
    let path = manager(&conn)
        .await
        .register_binfmt(Default::default())
        .await
        .expect("job")
        .to_string();
    let job = pib_tests::job(&conn, &path).await;

    let dir: OwnedFd = std::fs::File::open("/").expect("open /").into();
    let socket: OwnedFd = std::os::unix::net::UnixStream::pair()
        .expect("pair")
        .0
        .into();
    let (read_end, _write_end) = std::io::pipe().expect("pipe");
    let read_end: OwnedFd = read_end.into();
    for (what, fd) in [
        ("directory", dir),
        ("socket", socket),
        ("read end", read_end),
    ] {
        match job.attach_log(zbus::Fd::from(&fd)).await {
            Err(DBusError::InvalidArgs(_)) => {}
            other => panic!("{what}: expected InvalidArgs, got {other:?}"),
        }
    }
    wait_job(&conn, &path).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_build_api_method_refuses_bad_arguments_by_name() {
    // An unprivileged user without grants: validation comes first, so each malformed call is
    // InvalidArgs (the list calls take no arguments and are not part of this).
    let user = TestUser::ensure("pibtest-badapi");
    let dir = std::env::temp_dir().join(format!("pib-badapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let card = pib_tests::LoopCard::new(&dir, "card", 64 << 20, false);
    let out = user.call(&["probe-all", "bad", &card.dev]);
    let calls = out["ok"].as_object().unwrap_or_else(|| panic!("{out}"));
    for method in [
        "FetchBase",
        "ImportBase",
        "Build",
        "RemoveImage",
        "Clean",
        "Shell",
        "MakeDiskImage",
        "ListDevices",
        "Flash",
        "FormatDevice",
        "Install",
        "Scan",
    ] {
        assert_eq!(calls[method], INVALID_ARGS, "{method}: {out}");
    }
    drop(card);
    let _ = std::fs::remove_dir_all(&dir);
}
