//! The system bus policy: only root may own the service's name; anyone may call it.

use pib_tests::{text, TestUser};

#[test]
fn an_unprivileged_process_cannot_own_the_bus_name() {
    let user = TestUser::ensure("pibtest-owner");
    let out = user
        .command("dbus-send")
        .args([
            "--system",
            "--print-reply",
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            "string:org.pibuilder.PiBuilder1",
            "uint32:4",
        ])
        .output()
        .expect("dbus-send");
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_unprivileged_process_may_call_the_service() {
    let user = TestUser::ensure("pibtest-owner");
    let out = user.busctl(&[
        "get-property",
        "org.pibuilder.PiBuilder1",
        "/org/pibuilder/PiBuilder1",
        "org.pibuilder.PiBuilder1.Manager",
        "Version",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("s \""));
}
