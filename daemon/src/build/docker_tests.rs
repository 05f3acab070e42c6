//! The generated Dockerfile and the re-written context, built for real by the classic builder.
//!
//! Needs a reachable Docker engine (the `docker` CLI on PATH; `make dev-up` starts one): without
//! it the test fails rather than passing unchecked. Images cannot be pulled here,
//! so the base is `docker import`ed from a tiny tarball made by the test; with no shell in it,
//! the stages use only COPY, ENV, LABEL, WORKDIR, ARG and CMD.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use super::context::{ContextReader, DEFAULT_LIMIT};
use super::dockerfile::{self, Generated};

fn require_docker() {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "the Docker engine is not reachable: run `make dev-up`");
}

fn docker(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker");
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(data).expect("write to docker");
    }
    let out = child.wait_with_output().expect("wait for docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Removes the test's images however the test ends.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker")
                .args(["rmi", "-f", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A base root filesystem with nothing but /etc.
fn base_tarball() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    builder
        .append_data(&mut header, "etc", std::io::empty())
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(5);
    builder
        .append_data(&mut header, "etc/base-marker", &b"base\n"[..])
        .unwrap();
    builder.into_inner().unwrap()
}

const STAGES: [(&str, &str); 5] = [
    (
        "__init__",
        "# the base is already there\nENV PIB_INIT=1\nLABEL org.pibuilder.test.init=yes\n",
    ),
    (
        "os",
        "ARG HOSTNAME\n\
         COPY stages/os/files/ /etc/pib/\n\
         ENV OS_A=1 \\\n    # comment inside a continuation\n    OS_B=2\n\
         \n\
         LABEL org.pibuilder.test.hostname=${HOSTNAME} \\\n      org.pibuilder.test.board=${BOARD}\n\
         ARG BOARD\n\
         LABEL org.pibuilder.test.board2=${BOARD}\n\
         WORKDIR /opt/os\n",
    ),
    (
        "extra",
        "ARG WIFI_SSID=none\nLABEL org.pibuilder.test.wifi=\"${WIFI_SSID}\"\n",
    ),
    (
        "ssh-keygen",
        "ARG PIB_BUILD_ID\nLABEL org.pibuilder.test.build-id=${PIB_BUILD_ID}\n",
    ),
    (
        "__cleanup__",
        "COPY stages/__cleanup__/done /done\nCMD [\"/nothing\"]\n",
    ),
];

/// (stage, instruction) of every step the builder should print.
const EXPECTED_STEPS: [(&str, &str); 17] = [
    ("__init__", "ARG"),
    ("__init__", "FROM"),
    ("__init__", "ENV"),
    ("__init__", "LABEL"),
    ("os", "ARG"),
    ("os", "COPY"),
    ("os", "ENV"),
    ("os", "LABEL"),
    ("os", "ARG"),
    ("os", "LABEL"),
    ("os", "WORKDIR"),
    ("extra", "ARG"),
    ("extra", "LABEL"),
    ("ssh-keygen", "ARG"),
    ("ssh-keygen", "LABEL"),
    ("__cleanup__", "COPY"),
    ("__cleanup__", "CMD"),
];

/// The context as the client sends it: parts first, in build order, then the other files.
fn client_context() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let file = |builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        builder.append_data(&mut h, path, data).unwrap();
    };
    let dir = |builder: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        builder.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    for (name, part) in STAGES {
        dir(&mut builder, &format!("stages/{name}"));
        file(
            &mut builder,
            &format!("stages/{name}/Dockerfile.part"),
            part.as_bytes(),
            0o644,
        );
    }
    dir(&mut builder, "stages/os/files");
    file(
        &mut builder,
        "stages/os/files/motd",
        b"hello from os\n",
        0o640,
    );
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    builder
        .append_link(&mut h, "stages/os/files/motd-link", "motd")
        .unwrap();
    file(&mut builder, "stages/__cleanup__/done", b"", 0o600);
    builder.into_inner().unwrap()
}

/// Runs the daemon's side: parts, Dockerfile, argument check, re-written context.
fn daemon_side(user_args: &BTreeMap<String, String>) -> (Generated, Vec<u8>) {
    let input = client_context();
    let stages: Vec<String> = STAGES.iter().map(|(n, _)| n.to_string()).collect();
    let mut reader = ContextReader::new(&input[..], DEFAULT_LIMIT);
    let parts = reader.read_parts(&stages).unwrap();
    let generated = dockerfile::generate(&parts).unwrap();
    dockerfile::check_user_args(user_args, &generated.declared_args).unwrap();
    let mut context = Vec::new();
    reader.restream_into(&mut context, &generated.text).unwrap();
    (generated, context)
}

struct Step {
    number: u32,
    total: u32,
    instruction: String,
    cached: bool,
}

/// The `Step N/M : ...` lines of the classic builder's output, with whether each was served
/// from the cache (the builder prints " ---> Using cache" right after such a step).
fn steps(output: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in output.lines() {
        if let Some((number, total)) = dockerfile::parse_step_line(line) {
            let text = line.split_once(" : ").map(|(_, t)| t).unwrap_or_default();
            steps.push(Step {
                number,
                total,
                instruction: text
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_uppercase(),
                cached: false,
            });
        } else if line.trim() == "---> Using cache" {
            if let Some(last) = steps.last_mut() {
                last.cached = true;
            }
        }
    }
    steps
}

fn build(
    base: &str,
    tag: &str,
    build_id: &str,
    user_args: &BTreeMap<String, String>,
) -> (Generated, Vec<Step>) {
    let (generated, context) = daemon_side(user_args);
    let mut args: Vec<String> = vec![
        "build".into(),
        "--rm".into(),
        "--force-rm".into(),
        "-t".into(),
        tag.into(),
    ];
    let fixed = [
        ("BASE_IMAGE", base),
        ("BOARD", "rpi4"),
        ("ARCH", "aarch64"),
        ("DISTRO", "debian"),
        ("HOSTNAME", "pi-test"),
        ("LOCALE", "C.UTF-8"),
        ("TIMEZONE", "UTC"),
        ("REPO_URL", "http://deb.example/debian"),
        ("PIB_BUILD_ID", build_id),
    ];
    for (k, v) in fixed {
        args.push("--build-arg".into());
        args.push(format!("{k}={v}"));
    }
    for (k, v) in user_args {
        args.push("--build-arg".into());
        args.push(format!("{k}={v}"));
    }
    args.push("-".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker(&args, Some(&context));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (generated, steps(&stdout))
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

#[test]
fn generated_dockerfile_builds_with_the_classic_builder() {
    require_docker();
    let id = unique();
    let base = format!("pib-test-ctx-base:{id}");
    let first = format!("pib-test-ctx-result:{id}-1");
    let second = format!("pib-test-ctx-result:{id}-2");
    let _cleanup = Images(vec![second.clone(), first.clone(), base.clone()]);

    docker(&["import", "-", &base], Some(&base_tarball()));
    let user_args: BTreeMap<String, String> = [("WIFI_SSID".into(), "home net".into())].into();

    let (generated, steps1) = build(&base, &first, "build-one", &user_args);
    assert_eq!(generated.total_steps as usize, EXPECTED_STEPS.len());
    assert_eq!(
        steps1.len(),
        EXPECTED_STEPS.len(),
        "steps printed by the builder"
    );
    for (step, (stage, instruction)) in steps1.iter().zip(EXPECTED_STEPS) {
        assert_eq!(step.total, generated.total_steps);
        assert_eq!(step.instruction, instruction, "step {}", step.number);
        assert_eq!(
            generated.stage_of_step(step.number),
            Some(stage),
            "step {}",
            step.number
        );
    }

    // What the stages did is in the image.
    let inspect = docker(
        &[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Labels}}|{{json .Config.Env}}|{{.Config.WorkingDir}}",
            &first,
        ],
        None,
    );
    let inspect = String::from_utf8_lossy(&inspect.stdout).into_owned();
    for expected in [
        "\"org.pibuilder.test.init\":\"yes\"",
        "\"org.pibuilder.test.hostname\":\"pi-test\"",
        // BOARD is read before the stage declares it: empty, as Docker defines.
        "\"org.pibuilder.test.board\":\"\"",
        "\"org.pibuilder.test.board2\":\"rpi4\"",
        "\"org.pibuilder.test.wifi\":\"home net\"",
        "\"org.pibuilder.test.build-id\":\"build-one\"",
        "\"PIB_INIT=1\"",
        "\"OS_A=1\"",
        "\"OS_B=2\"",
        "|/opt/os",
    ] {
        assert!(
            inspect.contains(expected),
            "{expected} missing in {inspect}"
        );
    }

    // The files arrived with their modes, and the symlink as a symlink.
    let container = docker(&["create", &first], None);
    let container = String::from_utf8_lossy(&container.stdout).trim().to_owned();
    let copied = Command::new("docker")
        .args(["cp", &format!("{container}:/etc/pib"), "-"])
        .output();
    let _ = Command::new("docker")
        .args(["rm", "-f", &container])
        .stdout(Stdio::null())
        .status();
    let copied = copied.expect("docker cp");
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let mut found = BTreeMap::new();
    let mut archive = tar::Archive::new(&copied.stdout[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap();
        let detail = if kind.is_symlink() {
            format!("-> {}", entry.link_name().unwrap().unwrap().display())
        } else {
            let mut s = String::new();
            entry.read_to_string(&mut s).unwrap();
            s
        };
        found.insert(path, (mode & 0o7777, detail));
    }
    assert_eq!(
        found.get("pib/motd"),
        Some(&(0o640, "hello from os\n".to_string())),
        "{found:?}"
    );
    assert_eq!(
        found.get("pib/motd-link").map(|(_, d)| d.as_str()),
        Some("-> motd"),
        "{found:?}"
    );

    // A new build id re-runs only what follows the stage that declares it.
    let (_, steps2) = build(&base, &second, "build-two", &user_args);
    let first_uncached = steps2
        .iter()
        .find(|s| s.number > 2 && !s.cached)
        .map(|s| s.number);
    let keygen_label = EXPECTED_STEPS
        .iter()
        .position(|(stage, i)| *stage == "ssh-keygen" && *i == "LABEL")
        .map(|p| p as u32 + 1);
    assert_eq!(
        first_uncached,
        keygen_label,
        "cache use: {:?}",
        steps2
            .iter()
            .map(|s| (s.number, s.cached))
            .collect::<Vec<_>>()
    );
}
