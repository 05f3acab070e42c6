//! `base`, `build`, `images`, `rm` and `clean` against the stand-in daemon on a private bus:
//! what the client sends (options, descriptors, the context stream) and what it prints.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::{serve, write_stages, PrivateBus, Script, Stand, IMAGE};
use zbus::Variant;

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Runs the client with `input` on its stdin, through a pipe.
async fn run_with_input(mut cmd: Command, input: &'static [u8]) -> Output {
    tokio::task::spawn_blocking(move || {
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn calls(stand: &Stand) -> Vec<String> {
    stand.calls.lock().unwrap().clone()
}

async fn setup(script: Script) -> (PrivateBus, Stand) {
    let bus = PrivateBus::start();
    let stand = serve(&bus.address, script).await;
    (bus, stand)
}

const STAGES: &[(&str, &str)] = &[
    ("__init__", "FROM scratch\n"),
    ("hello", "COPY stages/hello/files/motd /etc/motd\n"),
    ("__cleanup__", "RUN true\n"),
];

#[tokio::test(flavor = "multi_thread")]
async fn build_streams_the_stages_and_prints_the_result() {
    let (bus, stand) = setup(Script::Succeed).await;
    let dir = bus.scratch("build");
    write_stages(&dir.join("mine"), STAGES);
    let mut cmd = bus.client(&[
        "build",
        "--stages-dir",
        "mine",
        "--stages",
        "__init__ hello __cleanup__",
        "--hostname",
        "pi",
        "--set",
        "GREETING=hi there",
        "--name",
        "hello-pi",
    ]);
    cmd.current_dir(&dir);
    let out = run(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        text(&out.stdout),
        "Built hello-pi (abcdef012345): 6 steps, 1 from the cache.\n"
    );
    assert!(
        stderr.starts_with(
            "Building hello-pi: debian for rpi4 on aarch64\n  stages: __init__ hello __cleanup__\n"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("  hostname pi\n"), "{stderr}");
    assert!(
        stderr.contains("  build args: GREETING=hi there\n"),
        "{stderr}"
    );
    assert!(stderr.contains("working on it"), "{stderr}");

    let calls = calls(&stand);
    assert_eq!(calls[0], "Build interactive pipe", "{calls:?}");
    let context = calls.iter().find(|c| c.starts_with("context: ")).unwrap();
    for entry in [
        "stages/__init__/Dockerfile.part",
        "stages/hello/Dockerfile.part",
        "stages/hello/files/motd",
        "stages/__cleanup__/Dockerfile.part",
    ] {
        assert!(context.contains(entry), "{entry} missing from {context}");
    }
    let o = stand.options_of("Build");
    assert_eq!(*o["distro"], Variant::from("debian"));
    assert_eq!(*o["board"], Variant::from("rpi4"));
    assert_eq!(*o["arch"], Variant::from("aarch64"));
    assert_eq!(*o["name"], Variant::from("hello-pi"));
    assert_eq!(*o["hostname"], Variant::from("pi"));
    assert_eq!(
        *o["stages"],
        Variant::from(vec!["__init__", "hello", "__cleanup__"])
    );
    let args: std::collections::HashMap<String, String> =
        o["args"].try_clone().unwrap().try_into().unwrap();
    assert_eq!(args["GREETING"], "hi there");
    assert!(
        !o.contains_key("base") && !o.contains_key("no_cache"),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn build_from_a_project_file_in_json() {
    let (bus, stand) = setup(Script::Succeed).await;
    let dir = bus.scratch("project");
    write_stages(&dir.join("stages"), STAGES);
    std::fs::write(
        dir.join("pib.toml"),
        "name = \"kiosk\"\ndistro = \"arch\"\nboard = \"rpi3\"\narch = \"arm\"\n\
         stages = [\"__init__\", \"hello\", \"__cleanup__\"]\nstage_dirs = [\"stages\"]\n\
         mirror = \"http://mirror.example/\"\n[set]\nA = \"1\"\n",
    )
    .unwrap();
    // Run from elsewhere: stage_dirs are found from the file's directory.
    let mut cmd = bus.client(&[
        "--json",
        "build",
        "-c",
        dir.join("pib.toml").to_str().unwrap(),
        "--board",
        "zero2w",
        "--no-cache",
    ]);
    cmd.current_dir("/");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    let config = &lines[0]["config"];
    assert_eq!(config["name"], "kiosk");
    assert_eq!(config["board"], "zero2w", "the flag overrides the file");
    assert_eq!(config["distro"], "arch");
    assert_eq!(config["repo_url"], "http://mirror.example/");
    assert_eq!(
        config["stage_dirs"][0],
        dir.join("stages").to_str().unwrap()
    );
    assert_eq!(config["no_cache"], true);
    assert_eq!(config["stage_sources"][1]["name"], "hello");
    assert_eq!(config["stage_sources"][1]["origin"], "user");
    assert_eq!(
        config["stage_sources"][1]["dir"],
        dir.join("stages/hello").to_str().unwrap()
    );
    assert!(
        lines.iter().any(|l| l["log"] == "working on it"),
        "{lines:?}"
    );
    let result = lines.last().unwrap();
    assert_eq!(result["state"], "succeeded");
    assert_eq!(result["result"]["image"], "kiosk");
    assert_eq!(result["result"]["steps"], 6);
    assert_eq!(result["result"]["cached"], 1);
    let o = stand.options_of("Build");
    assert_eq!(*o["board"], Variant::from("zero2w"));
    assert_eq!(*o["repo_url"], Variant::from("http://mirror.example/"));
    assert_eq!(*o["no_cache"], Variant::from(true));
    assert_eq!(calls(&stand)[0], "Build silent pipe");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_file_is_imported_first_and_built_from() {
    let (bus, stand) = setup(Script::Succeed).await;
    let dir = bus.scratch("base-file");
    write_stages(&dir.join("stages"), STAGES);
    std::fs::write(dir.join("root.tar"), "pretend rootfs").unwrap();
    let mut cmd = bus.client(&[
        "-q",
        "build",
        "--stages-dir",
        "stages",
        "--stages",
        "__init__,hello,__cleanup__",
        "--base-file",
        "root.tar",
    ]);
    cmd.current_dir(&dir);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Built debian-rpi4-aarch64 (abcdef012345): 6 steps, 1 from the cache.\n"
    );
    let calls = calls(&stand);
    assert_eq!(calls[0], "ImportBase interactive file");
    assert_eq!(calls[1], "tarball: pretend rootfs");
    assert_eq!(calls[2], "Build interactive pipe");
    let import = stand.options_of("ImportBase");
    assert_eq!(*import["distro"], Variant::from("debian"));
    assert_eq!(*import["arch"], Variant::from("aarch64"));
    assert_eq!(*import["board"], Variant::from("rpi4"));
    let build = stand.options_of("Build");
    assert_eq!(*build["base"], Variant::from("pib-base/imported:local"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_build_exits_3_and_sends_nothing_further() {
    let (bus, stand) = setup(Script::Deny).await;
    let dir = bus.scratch("denied");
    write_stages(&dir.join("stages"), STAGES);
    let mut cmd = bus.client(&[
        "--no-ask-password",
        "build",
        "--stages-dir",
        "stages",
        "--stages",
        "__init__ hello __cleanup__",
    ]);
    cmd.current_dir(&dir);
    let out = run(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("You are not allowed to build an image. Ask an administrator to grant the polkit action org.pibuilder.build"),
        "{stderr}"
    );
    assert_eq!(calls(&stand), ["Build silent pipe"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn base_list_fetch_and_import() {
    let (bus, stand) = setup(Script::Succeed).await;
    let out = run(bus.client(&["base", "list"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let mut lines = listing.lines();
    assert_eq!(
        lines.next().unwrap(),
        "NAME                              DISTRO  BOARD  ARCH     SIZE        CREATED     ORIGIN"
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with("pib-base/debian-aarch64:bookworm  debian         aarch64  300.00 MiB  2023-11-14  mmdebstrap bookworm"), "{row}");

    let out = run(bus.client(&["base", "list", "--json"])).await;
    let v = json_lines(&out).pop().unwrap();
    assert_eq!(
        v[0]["origin"],
        "mmdebstrap bookworm http://deb.example/debian"
    );
    assert_eq!(v[0]["created_iso"], "2023-11-14T22:13:20Z");

    let out = run(bus.client(&[
        "base",
        "fetch",
        "--distro",
        "arch",
        "--arch",
        "arm",
        "--board",
        "rpi2",
        "--refresh",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Base pib-base/arch-arm:fetched (feedfacecafe) is ready.\n"
    );
    let o = stand.options_of("FetchBase");
    assert_eq!(o.len(), 4);
    assert_eq!(*o["board"], Variant::from("rpi2"));
    assert_eq!(*o["refresh"], Variant::from(true));

    // A tarball on a pipe goes as a pipe; the client never names a path to the daemon.
    let out = run_with_input(
        bus.client(&["base", "import", "-", "--distro", "debian", "--arch", "arm"]),
        b"rootfs on a pipe",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Base pib-base/imported:local (111122223333) imported.\n"
    );
    let c = calls(&stand);
    assert!(
        c.contains(&"ImportBase interactive pipe".to_owned()),
        "{c:?}"
    );
    assert!(c.contains(&"tarball: rootfs on a pipe".to_owned()), "{c:?}");
    let o = stand.options_of("ImportBase");
    assert_eq!(o.len(), 2, "no board given: {o:?}");

    // /dev/null, which the daemon refuses, is relayed through a pipe.
    let out = run(bus.client(&[
        "--json", "base", "import", "-", "--distro", "debian", "--arch", "arm",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result = json_lines(&out).pop().unwrap();
    assert_eq!(result["result"]["image"], "pib-base/imported:local");
    assert_eq!(calls(&stand).last().unwrap(), "tarball: ");
}

#[tokio::test(flavor = "multi_thread")]
async fn images_rm_and_clean() {
    let (bus, stand) = setup(Script::Succeed).await;
    let out = run(bus.client(&["images"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "NAME                 DISTRO  BOARD  ARCH     SIZE        CREATED     OWNER  STAGES\n\
         debian-rpi4-aarch64  debian  rpi4   aarch64  700.00 MiB  2023-11-14  4242   __init__ os __cleanup__\n"
    );
    let out = run(bus.client(&["images", "--json"])).await;
    let v = json_lines(&out).pop().unwrap();
    assert_eq!(v[0]["name"], IMAGE);
    assert_eq!(v[0]["owner_uid"], 4242);
    assert_eq!(v[0]["stages"][1], "os");

    let out = run(bus.client(&["rm", IMAGE])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("Removed {IMAGE}.\n"));
    assert_eq!(
        calls(&stand).last().unwrap(),
        &format!("RemoveImage interactive {IMAGE}")
    );

    let out = run(bus.client(&["rm", "old"])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("pib-client: No image named old; see `pib-client images`.\n"),
        "{stderr}"
    );
    let out = run(bus.client(&["--json", "rm", "old"])).await;
    let err = json_lines(&out).pop().unwrap();
    assert_eq!(err["error"], "org.pibuilder.PiBuilder1.Error.NotFound");
    assert_eq!(err["detail"], "no image named \"old\"");

    let out = run(bus.client(&["clean", "--all-users"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "2 removed, 3.00 GiB reclaimed.\n");
    let o = stand.options_of("Clean");
    assert_eq!(o.len(), 1);
    assert_eq!(*o["all_users"], Variant::from(true));
    let out = run(bus.client(&["--json", "clean"])).await;
    let result = json_lines(&out).pop().unwrap();
    assert_eq!(result["result"]["removed"], 2);
    assert!(stand.options_of("Clean").is_empty());
}

/// A stage that cannot be packed (a FIFO in it) is found while the context streams: the job is
/// cancelled and the stage's problem, not the daemon's reaction, is what the user reads.
#[tokio::test(flavor = "multi_thread")]
async fn a_stage_that_cannot_be_packed_cancels_the_build_and_is_named() {
    let (bus, stand) = setup(Script::Succeed).await;
    let dir = bus.scratch("fifo");
    write_stages(&dir.join("stages"), STAGES);
    let fifo = dir.join("stages/hello/files/pipe");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let mut cmd = bus.client(&[
        "build",
        "--stages-dir",
        "stages",
        "--stages",
        "__init__ hello __cleanup__",
    ]);
    cmd.current_dir(&dir);
    let out = run(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("pib-client: Could not send the build context: ")
            && last.contains("files/pipe"),
        "{stderr}"
    );
    assert!(
        calls(&stand).contains(&"Cancel interactive".to_owned()),
        "{:?}",
        calls(&stand)
    );
}
