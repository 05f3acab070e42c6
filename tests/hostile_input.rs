//! Hostile input from unprivileged callers (SECURITY.md): stage names and options of every
//! malformed kind, and input descriptors of every kind a caller could pass. Each gets a clear,
//! typed error; nothing runs; the daemon keeps serving with bounded memory; a stream that sends
//! nothing, or never ends, ends its job within the configured limits.

use serde_json::{json, Value};

use pib_tests::cards::{daemon_pid, make_image, work_dir, MIB};
use pib_tests::{
    error_of, jobs_started_by, DaemonConfig, LoopCard, PolkitRule, TestUser, INVALID_ARGS,
};

/// The fd test restarts the daemon, which the options test must not see.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn build_options(stages: Value) -> Value {
    json!({"distro": "debian", "arch": "aarch64", "board": "rpi4", "stages": stages})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

/// The job outcome of a `--wait` call: (state, error name, message).
fn ended(out: &Value) -> (String, String, String) {
    let j = &out["ok"][0];
    let s = |k: &str| j[k].as_str().unwrap_or_else(|| panic!("{out}")).to_owned();
    (s("state"), s("error_name"), s("message"))
}

#[test]
fn malformed_stage_names_and_options_are_invalid_args_with_bounded_memory() {
    // No grants at all: validation comes first, and if it ever did not, the call would fail
    // with NotAuthorized instead and this test with it.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let user = TestUser::ensure("pibtest-hostile");
    assert_eq!(error_of(&user.call(&["status"])), "", "daemon up");
    let pid = daemon_pid().expect("daemon pid");
    let rss_before = vm_rss_kib(pid);

    let many: Vec<String> = std::iter::once("__init__".to_owned())
        .chain((0..100_000).map(|i| format!("s{i}")))
        .collect();
    let cases: Vec<(&str, Value)> = vec![
        ("parent", build_options(json!(["__init__", "../x"]))),
        ("absolute", build_options(json!(["__init__", "/etc"]))),
        ("empty", build_options(json!(["__init__", ""]))),
        (
            "10 kB",
            build_options(json!(["__init__", "a".repeat(10_000)])),
        ),
        ("newline", build_options(json!(["__init__", "a\nb"]))),
        ("leading dash", build_options(json!(["__init__", "-rf"]))),
        ("100,000 stages", build_options(json!(many))),
        ("no stages", build_options(json!([]))),
        (
            "non-UTF-8 bytes",
            build_options(json!({"bytes": [0x5f, 0xff, 0xfe]})),
        ),
        ("stages as a string", build_options(json!("__init__"))),
        (
            "unknown key",
            with(build_options(json!(["__init__"])), "colour", json!("blue")),
        ),
        (
            "wrong variant type",
            with(
                build_options(json!(["__init__"])),
                "distro",
                json!({"u32": 7}),
            ),
        ),
        (
            "deep nesting",
            with(
                build_options(json!(["__init__"])),
                "distro",
                json!({"nest": 30, "value": "debian"}),
            ),
        ),
        (
            "a dictionary where a string belongs",
            with(
                build_options(json!(["__init__"])),
                "hostname",
                json!({"dict": {"a": {"dict": {"b": "c"}}}}),
            ),
        ),
        (
            "10 kB hostname",
            with(
                build_options(json!(["__init__"])),
                "hostname",
                json!("h".repeat(10_000)),
            ),
        ),
        (
            "10 kB image name",
            with(
                build_options(json!(["__init__"])),
                "name",
                json!("n".repeat(10_000)),
            ),
        ),
        (
            "a shell injection in a word",
            with(
                build_options(json!(["__init__"])),
                "timezone",
                json!("UTC; rm -rf /"),
            ),
        ),
    ];
    let dir = work_dir("hostile-options");
    let file = dir.join("options.json");
    for (what, options) in &cases {
        std::fs::write(&file, options.to_string()).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let out = user.call(&["build", &format!("@{}", file.display()), "silent"]);
        assert_eq!(error_of(&out), INVALID_ARGS, "{what}: {out}");
        let message = out["message"].as_str().unwrap_or_default();
        assert!(
            message.len() < 400,
            "{what}: the message is not bounded: {}",
            message.len()
        );
    }
    // The same battery against the tarball import: unknown keys and wrong types.
    let import = json!({"distro": "debian", "arch": "aarch64", "board": {"bytes": [1]}});
    assert_eq!(
        error_of(&user.call(&["import", &import.to_string(), "silent"])),
        INVALID_ARGS
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    assert!(
        rt.block_on(jobs_started_by(user.uid)).is_empty(),
        "a job was started"
    );
    assert_eq!(daemon_pid(), Some(pid), "the daemon restarted");
    let grown = vm_rss_kib(pid).saturating_sub(rss_before);
    // 100,000 names are ~1 MB on the wire; the daemon may keep allocator slack, not copies.
    assert!(grown < 32 * 1024, "the daemon grew by {grown} KiB");
    assert_eq!(
        error_of(&user.call(&["status"])),
        "",
        "daemon still serving"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn input_descriptors_of_every_kind_get_clear_errors_within_the_stall_limit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let user = TestUser::ensure("pibtest-fds");
    let _build = PolkitRule::grant("fds-build", &user.name, "org.pibuilder.build");
    let _flash = PolkitRule::grant("fds-flash", &user.name, "org.pibuilder.flash");
    let _config = DaemonConfig::with(&[
        ("", "input_stall_secs", "3"),
        ("build", "max_context_bytes", "16777216"),
    ]);
    let dir = work_dir("hostile-fds");
    let image = make_image(&dir, "pi.img", 16 * MIB);
    let card = LoopCard::new(&dir, "card", 64 * MIB, false);
    let truncated = dir.join("truncated.zst");
    let packed = zstd_of(&image);
    std::fs::write(&truncated, &packed[..packed.len() / 2]).unwrap();
    for p in [&image, &truncated] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let tmp = std::env::temp_dir();
    let options = build_options(json!(["__init__"])).to_string();
    let opath = format!("opath:{}", image.display());
    let dirfd = format!("dir:{}", tmp.display());
    let write_only = format!("write-only:{}", dir.join("wo").display());
    std::fs::write(dir.join("wo"), b"").unwrap();
    std::fs::set_permissions(
        dir.join("wo"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();

    // Refused at the call, before anything is read: O_PATH, a directory, a socket, a
    // descriptor open only for writing.
    for fd in [
        opath.as_str(),
        dirfd.as_str(),
        "socket",
        write_only.as_str(),
    ] {
        for call in [
            vec!["build", options.as_str(), fd],
            vec!["flash", card.dev.as_str(), fd],
        ] {
            let out = user.call(&call);
            assert_eq!(error_of(&out), INVALID_ARGS, "{call:?}: {out}");
        }
    }

    // A pipe nobody writes to: the job fails after the stall limit (3 s here), typed.
    let started = std::time::Instant::now();
    let out = user.call(&["build", &options, "silent", "--wait"]);
    let (state, error, message) = ended(&out);
    assert_eq!(
        (state.as_str(), error.as_str()),
        ("failed", INVALID_ARGS),
        "{out}"
    );
    assert!(message.contains("sent nothing"), "{out}");
    let out = user.call(&["flash", &card.dev, "silent", "--wait"]);
    let (state, _error, message) = ended(&out);
    assert_eq!(state, "failed", "{out}");
    assert!(message.contains("sent nothing"), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the stall limit did not end the jobs"
    );

    // A pipe that never ends: the context limit ends the build; an endless uncompressed stream
    // is no image.
    let out = user.call(&["build", &options, "endless", "--wait"]);
    let (state, error, message) = ended(&out);
    assert_eq!(
        (state.as_str(), error.as_str()),
        ("failed", INVALID_ARGS),
        "{out}"
    );
    assert!(message.contains("larger than the limit"), "{out}");
    let out = user.call(&["flash", &card.dev, "endless", "--wait"]);
    let (state, error, _) = ended(&out);
    assert_eq!(
        (state.as_str(), error.as_str()),
        ("failed", INVALID_ARGS),
        "{out}"
    );

    // A pipe that closes early: a truncated compressed image fails and leaves no partition
    // table; an empty context is no context.
    let out = user.call(&[
        "flash",
        &card.dev,
        &format!("pipe:{}", truncated.display()),
        "--wait",
    ]);
    let (state, _, message) = ended(&out);
    assert_eq!(state, "failed", "{out}");
    assert!(!message.is_empty(), "{out}");
    assert!(
        card.read(510, 2) != [0x55, 0xAA],
        "a partition table was written from a truncated image"
    );
    let out = user.call(&["build", &options, "pipe:/dev/null", "--wait"]);
    let (state, error, _) = ended(&out);
    assert_eq!(
        (state.as_str(), error.as_str()),
        ("failed", INVALID_ARGS),
        "{out}"
    );
    drop(card);
    let _ = std::fs::remove_dir_all(&dir);
}

fn zstd_of(path: &std::path::Path) -> Vec<u8> {
    let out = std::process::Command::new("zstd")
        .args(["-q", "-c", "-3"])
        .arg(path)
        .output()
        .expect("zstd");
    assert!(out.status.success(), "zstd failed");
    out.stdout
}
