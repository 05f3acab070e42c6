//! Disk images through pib-client from a real arm64 build: the layout, the boot files on FAT,
//! the root filesystem read back with e2fsck and debugfs, bmaptool's copy, compression, the
//! manifest, and the failures (too small, a full disk, cancel) leaving nothing behind.
//!
//! The build and the images run in one test, in order: Docker's state is machine-wide.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pib_tests::{client_as_root, last_json, nonce, stages_dir, text, write_stage};

const NAME: &str = "pibtest-disk";
const MIB: u64 = 1 << 20;

/// A stage that makes what a card needs and what the image must carry unchanged.
const DISK_STAGE: &str = r#"ARG HOSTNAME
COPY stages/disk/config.txt /boot/firmware/config.txt
COPY stages/disk/cmdline.txt /boot/firmware/cmdline.txt
RUN set -e; mkdir -p /boot/firmware/overlays /var/lib/pibtest \
 && head -c 2097152 /dev/urandom > /boot/firmware/kernel8.img \
 && echo overlay > /boot/firmware/overlays/vc4-kms-v3d-pi4.dtbo \
 && cp /etc/pib-nonce /var/lib/pibtest/stage-file \
 && cp /bin/true /var/lib/pibtest/setuid && chmod 4755 /var/lib/pibtest/setuid \
 && cp /bin/true /var/lib/pibtest/pinger \
 && mknod /var/lib/pibtest/null c 1 3 \
 && ln -s /etc/shadow /var/lib/pibtest/absolute-link \
 && ln -s ../../../../../etc/shadow /var/lib/pibtest/climbing-link \
 && ln /var/lib/pibtest/stage-file /var/lib/pibtest/hard-link \
 && truncate -s 512M /var/lib/pibtest/sparse \
 && printf 'middle' | dd of=/var/lib/pibtest/sparse bs=1 seek=268435456 conv=notrunc 2>/dev/null
"#;

fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool runs");
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn at(image: &Path, offset: u64) -> String {
    format!("{}?offset={offset}", image.display())
}

fn debugfs(image: &Path, offset: u64, request: &str) -> String {
    run(Command::new("debugfs").args(["-R", request, &at(image, offset)]))
}

fn sha256(path: &Path) -> String {
    run(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pib-disk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn image(args: &[&str]) -> Output {
    let mut all = vec!["--json", "image", NAME];
    all.extend_from_slice(args);
    client_as_root(&all)
}

fn export_containers() -> Vec<String> {
    docker_lines(&["ps", "-aq", "--filter", "label=org.pibuilder.export"])
}

fn build() {
    let dir = stages_dir("disk");
    // Docker's cache is machine-wide: the nonce makes this build's files its own.
    write_stage(
        &dir,
        "disk",
        &format!("RUN echo {} > /etc/pib-nonce\n{DISK_STAGE}", nonce()),
        &[
            ("config.txt", "arm_64bit=1\nenable_uart=1\n"),
            ("cmdline.txt", "console=ttyS1,115200 root=LABEL=PIROOT rw\n"),
        ],
    );
    let out = pib_tests::debian_build(NAME, "__init__ disk", &dir, &["--hostname", "diskhost"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

fn check_image(img: &Path, partitions: &serde_json::Value) {
    let table: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(img))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[1]["type"], "83");
    let boot = partitions[0]["start"].as_u64().unwrap();
    let root = partitions[1]["start"].as_u64().unwrap();
    assert_eq!(parts[0]["start"].as_u64().unwrap() * 512, boot);
    assert_eq!(parts[1]["start"].as_u64().unwrap() * 512, root);

    let fat = format!("{}@@{boot}", img.display());
    let mtools = |args: &[&str]| {
        run(Command::new(args[0])
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &fat])
            .args(&args[1..]))
    };
    assert!(mtools(&["minfo"]).contains("PIBOOT"));
    assert_eq!(
        mtools(&["mtype", "::config.txt"]),
        "arm_64bit=1\nenable_uart=1\n"
    );
    assert_eq!(
        mtools(&["mtype", "::cmdline.txt"]),
        "console=ttyS1,115200 root=LABEL=PIROOT rw\n"
    );
    let listing = mtools(&["mdir", "-/", "-b", "::"]);
    assert!(listing.contains("kernel8.img"), "{listing}");
    assert!(listing.contains("vc4-kms-v3d-pi4.dtbo"), "{listing}");

    run(Command::new("e2fsck").args(["-fn", &at(img, root)]));
    assert!(debugfs(img, root, "stats").contains("Filesystem volume name:   PIROOT"));
    let nonce = debugfs(img, root, "cat /etc/pib-nonce");
    assert_eq!(debugfs(img, root, "cat /var/lib/pibtest/stage-file"), nonce);
    assert!(debugfs(img, root, "stat /var/lib/pibtest/hard-link").contains("Links: 2"));
    assert!(debugfs(img, root, "stat /var/lib/pibtest/setuid").contains("Mode:  04755"));
    let null = debugfs(img, root, "stat /var/lib/pibtest/null");
    assert!(null.contains("Type: character special"), "{null}");
    assert!(null.contains("01:03"), "{null}");
    let link = debugfs(img, root, "stat /var/lib/pibtest/absolute-link");
    assert!(
        link.contains("Type: symlink") && link.contains("\"/etc/shadow\""),
        "{link}"
    );
    let climb = debugfs(img, root, "stat /var/lib/pibtest/climbing-link");
    assert!(climb.contains("../../../../../etc/shadow"), "{climb}");
    let sparse = debugfs(img, root, "stat /var/lib/pibtest/sparse");
    assert!(sparse.contains(&format!("Size: {}", 512 * MIB)), "{sparse}");
    assert!(
        sparse.contains("Blockcount: 8\n") || sparse.contains("Blockcount: 16\n"),
        "{sparse}"
    );
    // The fix-ups: hostname from the build, Docker's file gone, the boot files only on FAT.
    assert_eq!(debugfs(img, root, "cat /etc/hostname"), "diskhost\n");
    assert!(debugfs(img, root, "cat /etc/hosts").contains("127.0.1.1\tdiskhost"));
    assert!(!debugfs(img, root, "ls -p /").contains(".dockerenv"));
    assert!(!debugfs(img, root, "ls -p /boot/firmware").contains("kernel8"));
}

fn start_image_in_background(output: &Path) -> std::process::Child {
    Command::new(pib_tests::client_bin())
        .args(["--json", "image", NAME, "-o"])
        .arg(output)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn images_from_a_real_build() {
    build();

    // A plain image with its side files.
    let dir = out_dir("plain");
    let img = dir.join("card.img");
    let out = image(&["-o", img.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        files_in(&dir),
        [
            "card.img",
            "card.img.bmap",
            "card.img.json",
            "card.img.sha256"
        ]
    );
    let result = &last_json(&out)["result"];
    let partitions: serde_json::Value =
        serde_json::from_str(result["partitions"].as_str().unwrap()).unwrap();
    check_image(&img, &partitions);
    let digest = sha256(&img);
    assert_eq!(result["image_sha256"], digest.as_str());
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("card.img.sha256")
        .current_dir(&dir));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("card.img.json")).unwrap()).unwrap();
    let entry = &manifest["os_list"][0];
    assert_eq!(entry["name"], NAME);
    assert_eq!(entry["url"], "card.img");
    assert_eq!(entry["extract_sha256"], digest.as_str());
    assert_eq!(
        entry["extract_size"],
        std::fs::metadata(&img).unwrap().len()
    );
    assert_eq!(entry["devices"][0], "pi4-64bit");
    // The output stays sparse.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&img).unwrap();
    assert!(meta.blocks() * 512 < meta.len(), "the image is not sparse");

    // bmaptool itself writes it from the block map, byte for byte.
    let copy = dir.join("copy.img");
    run(Command::new("bmaptool")
        .args(["copy", "--bmap"])
        .arg(dir.join("card.img.bmap"))
        .arg(&img)
        .arg(&copy));
    assert_eq!(sha256(&copy), digest, "bmaptool's copy differs");
    std::fs::remove_file(&copy).unwrap();

    // Install: the build straight to a card, the same layout read back from the card.
    let card = pib_tests::LoopCard::new(&dir, "card", 1024 * MIB, false);
    let out = client_as_root(&["--json", "install", NAME, &card.dev, "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let result = &last_json(&out)["result"];
    assert_eq!(result["verified"], 1, "{result}");
    check_image(Path::new(&card.dev), &partitions);
    drop(card);

    // Compressed: the .zst holds the same image.
    let zdir = out_dir("zstd");
    let out = image(&[
        "-o",
        zdir.join("card.img").to_str().unwrap(),
        "--compress",
        "zstd",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        files_in(&zdir),
        [
            "card.img.bmap",
            "card.img.json",
            "card.img.zst",
            "card.img.zst.sha256"
        ]
    );
    let unpacked = zdir.join("unpacked.img");
    run(Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&unpacked)
        .arg(zdir.join("card.img.zst")));
    let result = &last_json(&out)["result"];
    assert_eq!(sha256(&unpacked), result["image_sha256"].as_str().unwrap());
    assert_eq!(
        sha256(&zdir.join("card.img.zst")),
        result["output_sha256"].as_str().unwrap()
    );

    // Too small a size: NoSpace, saying what is needed, and no file.
    let small = out_dir("small");
    let out = image(&[
        "-o",
        small.join("card.img").to_str().unwrap(),
        "--size",
        "300M",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NoSpace"), "{}", text(&out));
    assert!(text(&out).contains("needs at least"), "{}", text(&out));
    assert!(files_in(&small).is_empty(), "{:?}", files_in(&small));

    // A full disk where the output goes: NoSpace, and nothing left there.
    let full = out_dir("full");
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "pibtest-full"])
        .arg(&full));
    let out = image(&["-o", full.join("card.img").to_str().unwrap()]);
    let listed = files_in(&full);
    run(Command::new("umount").arg(&full));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NoSpace"), "{}", text(&out));
    assert!(listed.is_empty(), "{listed:?}");

    // Cancel (Ctrl-C) while the filesystem is read: no file, no container left.
    let cancelled = out_dir("cancel");
    let before = export_containers();
    let child = start_image_in_background(&cancelled.join("card.img"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while export_containers().len() <= before.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        files_in(&cancelled).is_empty(),
        "{:?}",
        files_in(&cancelled)
    );
    assert!(
        pib_tests::eventually(Duration::from_secs(20), || export_containers() == before),
        "the export container was left"
    );
    assert!(
        pib_tests::eventually(Duration::from_secs(20), || {
            let work = Path::new("/var/lib/pi-builder/work");
            std::fs::read_dir(work).map_or(true, |d| d.count() == 0)
        }),
        "the job's work directory was left"
    );
}

fn interrupt(pid: u32) {
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
