//! binfmt_misc through the daemon, on the real kernel: ARM binaries run after registering,
//! registering twice changes nothing, and another package's registration is reported, never
//! overwritten.
//!
//! The kernel's table is global, so everything happens in one test, step by step.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pib_dbus_interfaces::types::Arch;
use pib_tests::{elf::hello_elf, manager, system_bus, wait_job, JobEnd};
use zbus::{Connection, Variant};

const BINFMT: &str = "/proc/sys/fs/binfmt_misc";
const FOREIGN: &str = "pibtest-foreign-aarch64";
const AARCH64_MAGIC: &str =
    r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00";
const AARCH64_MASK: &str =
    r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff";

async fn binfmt_job(conn: &Connection, register: bool, arch: Option<Arch>) -> JobEnd {
    let m = manager(conn).await;
    let mut options = std::collections::HashMap::new();
    if let Some(a) = arch {
        options.insert("arch", Variant::from(a.as_str()));
    }
    let path = if register {
        m.register_binfmt(options).await
    } else {
        m.unregister_binfmt(options).await
    }
    .expect("start binfmt job");
    wait_job(conn, path.as_str()).await
}

fn entry(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new(BINFMT).join(name)).ok()
}

/// Removes a foreign test entry even when an assertion fails half-way.
struct ForeignEntry;

impl ForeignEntry {
    fn add(flags: &str) -> ForeignEntry {
        let line = format!(
            ":{FOREIGN}:M:0:{AARCH64_MAGIC}:{AARCH64_MASK}:/usr/bin/qemu-aarch64-static:{flags}"
        );
        std::fs::write(Path::new(BINFMT).join("register"), line).expect("register foreign");
        ForeignEntry
    }
}

impl Drop for ForeignEntry {
    fn drop(&mut self) {
        let _ = std::fs::write(Path::new(BINFMT).join(FOREIGN), "-1");
    }
}

fn write_hello(dir: &Path, arch: Arch) -> PathBuf {
    let path = dir.join(format!("hello-{arch}"));
    std::fs::write(&path, hello_elf(arch, &format!("hello from {arch}\n"))).expect("write elf");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Runs `path`; Ok(stdout) or Err(errno of the failed exec).
fn run(path: &Path) -> Result<String, i32> {
    match Command::new(path).output() {
        Ok(out) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn register_run_idempotence_and_foreign_registrations() {
    let conn = system_bus().await;
    let dir = std::env::temp_dir().join(format!("pib-binfmt-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hello64 = write_hello(&dir, Arch::Aarch64);
    let hello32 = write_hello(&dir, Arch::Arm);

    // A clean slate: none of ours, and nobody else's for these machines.
    let end = binfmt_job(&conn, false, None).await;
    assert_eq!(end.state, "succeeded", "{end:?}");
    assert!(entry("pib-qemu-aarch64").is_none() && entry("pib-qemu-arm").is_none());
    assert_eq!(
        run(&hello64),
        Err(libc_enoexec()),
        "an aarch64 binary ran with nothing registered: another package handles aarch64 \
         on this machine; the test needs it disabled"
    );

    // Register aarch64 only: its binary now runs, the arm one still does not.
    let end = binfmt_job(&conn, true, Some(Arch::Aarch64)).await;
    assert_eq!(end.state, "succeeded", "{end:?}");
    let ours = entry("pib-qemu-aarch64").expect("entry registered");
    assert!(ours.lines().any(|l| l == "enabled"), "{ours}");
    assert!(
        ours.lines()
            .any(|l| l.starts_with("flags:") && l.contains('F')),
        "{ours}"
    );
    assert_eq!(run(&hello64).as_deref(), Ok("hello from aarch64\n"));
    assert_eq!(run(&hello32), Err(libc_enoexec()));

    // Registering everything: arm is added, aarch64 is left exactly as it was.
    let end = binfmt_job(&conn, true, None).await;
    assert_eq!(end.state, "succeeded", "{end:?}");
    assert!(end.message.contains("already"), "{end:?}");
    assert_eq!(entry("pib-qemu-aarch64").as_deref(), Some(ours.as_str()));
    assert_eq!(run(&hello32).as_deref(), Ok("hello from arm\n"));

    // A second time is a no-op for both.
    let arm_entry = entry("pib-qemu-arm").expect("arm entry");
    let end = binfmt_job(&conn, true, None).await;
    assert_eq!(end.state, "succeeded", "{end:?}");
    assert_eq!(entry("pib-qemu-arm"), Some(arm_entry));
    assert_eq!(entry("pib-qemu-aarch64"), Some(ours));

    // Another package's registration without the F flag: reported as a conflict, untouched.
    assert_eq!(
        binfmt_job(&conn, false, Some(Arch::Aarch64)).await.state,
        "succeeded"
    );
    let foreign = ForeignEntry::add("");
    let before = entry(FOREIGN).expect("foreign entry");
    let end = binfmt_job(&conn, true, Some(Arch::Aarch64)).await;
    assert_eq!(end.state, "failed", "{end:?}");
    assert_eq!(end.error_name, "org.pibuilder.PiBuilder1.Error.Conflict");
    assert!(end.message.contains(FOREIGN), "{end:?}");
    assert_eq!(entry(FOREIGN), Some(before));
    assert!(
        entry("pib-qemu-aarch64").is_none(),
        "ours registered over a foreign entry"
    );
    drop(foreign);

    // With the F flag it serves containers: reported and used, still untouched.
    let foreign = ForeignEntry::add("F");
    let before = entry(FOREIGN).expect("foreign entry");
    let end = binfmt_job(&conn, true, Some(Arch::Aarch64)).await;
    assert_eq!(end.state, "succeeded", "{end:?}");
    assert!(end.message.contains(FOREIGN), "{end:?}");
    assert_eq!(entry(FOREIGN), Some(before));
    assert!(entry("pib-qemu-aarch64").is_none());
    drop(foreign);

    // Leave the machine registered, as the demo and the builds expect.
    let end = binfmt_job(&conn, true, None).await;
    assert_eq!(end.state, "succeeded", "{end:?}");
    assert_eq!(run(&hello64).as_deref(), Ok("hello from aarch64\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn libc_enoexec() -> i32 {
    8
}
