//! The worked examples of docs/api-examples.md, taken out of the document and run as written,
//! each as an unprivileged user granted build and flash by a polkit rule, on the real bus:
//! gdbus and Python (python3-dbus) build a small image and write it to a loop card, busctl
//! installs a build to one. The card must then hold the image, and the image the stage's file.
//!
//! Docker's images and the loop devices are machine-wide, so the examples run in one test.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pib_tests::cards::{same_as_image, work_dir, MIB};
use pib_tests::{eventually, repo_root, text, write_stage, LoopCard, PolkitRule, TestUser};

/// The fenced blocks of the document whose info string names a file: (language, name, code).
fn examples(doc: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String, String)> = None;
    for line in doc.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                if let (Some(lang), Some(name)) = (words.next(), words.next()) {
                    current = Some((lang.to_owned(), name.to_owned(), String::new()));
                }
            }
            (Some(_), Some("")) => out.push(current.take().unwrap()),
            (Some((_, _, code)), _) => {
                code.push_str(line);
                code.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// A stand-in root filesystem: enough for an import, a COPY-only build and a disk image.
fn base_tarball(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("rootfs");
    for d in ["etc", "usr/bin", "boot"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/os-release"), "ID=archarm\n").unwrap();
    std::fs::write(root.join("boot/config.txt"), "arm_64bit=1\n").unwrap();
    let tarball = dir.join("rootfs.tar.gz");
    let out = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {}", text(&out));
    tarball
}

fn chown(user: &TestUser, path: &Path) {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "chown: {}", text(&out));
}

/// The file at `path` in the ext4 root partition (p2) of `image`.
fn root_file(image: &Path, path: &str) -> String {
    let out = Command::new("sfdisk")
        .args(["--dump"])
        .arg(image)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    let start: u64 = dump
        .lines()
        .find(|l| l.contains("2 : start="))
        .and_then(|l| l.split("start=").nth(1))
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no second partition in {dump}"));
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(format!("{}?offset={}", image.display(), start * 512))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const BUSCTL_BUILD: &str = "example-busctl";

/// The build the busctl example installs: the same stages as the others', by pib-client.
fn build_for_busctl(user: &TestUser, here: &Path) {
    let stages = here.join("stages");
    write_stage(&stages, "__init__", "ENV PIB_EXAMPLE=1\n", &[]);
    write_stage(
        &stages,
        "hello",
        "COPY stages/hello/motd /etc/motd\n",
        &[("motd", "Built through the D-Bus API.\n")],
    );
    chown(user, here);
    let out = user.client(&[
        "--json",
        "build",
        "--distro",
        "arch",
        "--arch",
        "aarch64",
        "--board",
        "zero2w",
        "--stages",
        "__init__ hello",
        "--stages-dir",
        stages.to_str().unwrap(),
        "--base",
        "pib-base/arch-zero2w-aarch64:latest",
        "--name",
        BUSCTL_BUILD,
    ]);
    assert!(out.status.success(), "build: {}", text(&out));
}

#[test]
fn the_documented_examples_build_and_flash_a_card() {
    let doc = std::fs::read_to_string(repo_root().join("docs/api-examples.md")).unwrap();
    let examples = examples(&doc);
    let names: Vec<&str> = examples.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["busctl-install.sh", "gdbus-flash.sh", "pib-flash.py"]
    );

    let user = TestUser::ensure("pibtest-api");
    let _grant = PolkitRule::from_text(
        "api-examples",
        &format!(
            "// pi-builder integration test (api examples)\n\
             polkit.addRule(function(action, subject) {{\n\
             \x20   if ((action.id == \"org.pibuilder.build\" || action.id == \"org.pibuilder.flash\")\n\
             \x20       && subject.user == \"{}\") {{\n\
             \x20       return polkit.Result.YES;\n\
             \x20   }}\n\
             }});\n",
            user.name
        ),
    );
    // Removing an image that does not exist needs the build grant first: NotFound once the
    // rule is read, NotAuthorized before.
    assert!(
        eventually(Duration::from_secs(20), || {
            let out = user.client(&["--json", "rm", "pibtest-no-such-image"]);
            !String::from_utf8_lossy(&out.stdout).contains("NotAuthorized")
        }),
        "polkitd did not pick up the rule"
    );

    let dir = work_dir("api-examples");
    let tarball = base_tarball(&dir);
    // gdbus and Python build and flash; busctl, which cannot pass descriptors, installs a
    // build made here with pib-client from the base they imported.
    for name in ["gdbus-flash.sh", "pib-flash.py", "busctl-install.sh"] {
        let (lang, _, code) = examples.iter().find(|(_, n, _)| n == name).unwrap();
        let here = dir.join(name.replace('.', "-"));
        std::fs::create_dir_all(&here).unwrap();
        let script = here.join(name);
        std::fs::write(&script, code).unwrap();
        chown(&user, &here);
        let card = LoopCard::new(&dir, &format!("card-{name}"), 256 * MIB, false);
        let first = if name == "busctl-install.sh" {
            build_for_busctl(&user, &here);
            BUSCTL_BUILD.to_owned()
        } else {
            tarball.to_str().unwrap().to_owned()
        };
        let interpreter = if lang == "python" {
            "/usr/bin/python3"
        } else {
            "/bin/bash"
        };
        let out = user
            .command("timeout")
            .arg("300")
            .arg(interpreter)
            .arg(&script)
            .arg(&first)
            .arg(&card.dev)
            .current_dir(&here)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("{} holds ", card.dev)),
            "{name}: {}",
            text(&out)
        );
        if name == "busctl-install.sh" {
            assert_eq!(
                root_file(Path::new(&card.dev), "/etc/motd"),
                "Built through the D-Bus API.\n",
                "{name}"
            );
        } else {
            let image = here.join("card.img");
            assert_eq!(
                std::fs::metadata(&image).unwrap().len(),
                128 * MIB,
                "{name}"
            );
            same_as_image(&card, &image);
            assert_eq!(
                root_file(&image, "/etc/motd"),
                "Built through the D-Bus API.\n",
                "{name}"
            );
        }
        // The example removed its build.
        let listed = user.client(&["--json", "images"]);
        assert!(
            !String::from_utf8_lossy(&listed.stdout).contains("example-"),
            "{name} left its image: {}",
            text(&listed)
        );
    }
    let _ = Command::new("docker")
        .args(["rmi", "pib-base/arch-zero2w-aarch64:latest"])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn examples_are_found_in_markdown() {
    let doc = "text\n```bash a.sh\necho 1\n```\n```\nplain\n```\n```python b.py\nprint()\n```\n";
    let found = examples(doc);
    assert_eq!(
        found,
        [
            ("bash".into(), "a.sh".into(), "echo 1\n".into()),
            ("python".into(), "b.py".into(), "print()\n".into())
        ]
    );
}
