//! Base root filesystems through the daemon: the Arch Linux ARM download path against a
//! loopback mirror (checksums, truncation, caching, nothing left behind), a real Debian arm64
//! bootstrap with mmdebstrap, and importing a tarball the client opened.
//!
//! The daemon's development config points its Arch mirror at 127.0.0.1:18473 (scripts/dev-up).
//! Base images and the download cache are machine-wide, so the Arch checks run as one test.

use std::path::Path;
use std::process::Command;

use pib_tests::http::{Reply, Server};
use pib_tests::{client_as_root, last_json, text};

const PORT: u16 = 18473;
const TARBALL: &str = "ArchLinuxARM-rpi-aarch64-latest.tar.gz";
const CACHE: &str = "/var/cache/pi-builder/bases";

/// A small but real rootfs tarball (gzip), distinct per `marker`.
fn rootfs_tarball(dir: &Path, marker: &str) -> Vec<u8> {
    let root = dir.join(format!("root-{marker}"));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        format!("ID=archarm\nMARK={marker}\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    let out = dir.join(format!("{marker}.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

fn md5_line(data: &[u8], dir: &Path) -> Vec<u8> {
    let f = dir.join("md5-input");
    std::fs::write(&f, data).unwrap();
    let out = Command::new("md5sum").arg(&f).output().unwrap();
    let sum = String::from_utf8(out.stdout).unwrap();
    format!("{}  {TARBALL}\n", sum.split_whitespace().next().unwrap()).into_bytes()
}

fn fetch_arch(refresh: bool) -> std::process::Output {
    let mut args = vec![
        "--json", "base", "fetch", "--distro", "arch", "--arch", "aarch64", "--board", "rpi4",
    ];
    if refresh {
        args.push("--refresh");
    }
    client_as_root(&args)
}

fn partial_downloads() -> Vec<String> {
    std::fs::read_dir(CACHE)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".part"))
                .collect()
        })
        .unwrap_or_default()
}

fn arch_base_id() -> Option<String> {
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            "{{.Id}}",
            "pib-base/arch-rpi4-aarch64:latest",
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn arch_download_is_verified_cached_and_leaves_nothing_on_failure() {
    let dir = tempfile_dir("arch");
    let server = Server::start(PORT);
    let path = format!("/archlinuxarm/{TARBALL}");
    let md5_path = format!("{path}.md5");
    // Start from a clean slate for this base.
    let _ = Command::new("docker")
        .args(["rmi", "-f", "pib-base/arch-rpi4-aarch64:latest"])
        .output();
    // Only this base's files: the Debian test may be bootstrapping in the same directory.
    if let Ok(entries) = std::fs::read_dir(CACHE) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("ArchLinuxARM-rpi-aarch64")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    // A wrong checksum: refused, nothing cached or imported.
    let v1 = rootfs_tarball(&dir, "v1");
    server.set(&path, Reply::Body(v1.clone()));
    server.set(&md5_path, Reply::Body(md5_line(b"not the tarball", &dir)));
    let out = fetch_arch(false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("checksum"),
        "{}",
        text(&out)
    );
    assert!(partial_downloads().is_empty(), "{:?}", partial_downloads());
    assert_eq!(arch_base_id(), None);

    // A truncated download: refused, nothing left.
    server.set(&path, Reply::Truncated(v1.clone()));
    server.set(&md5_path, Reply::Body(md5_line(&v1, &dir)));
    let out = fetch_arch(false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(partial_downloads().is_empty());
    assert_eq!(arch_base_id(), None);

    // A redirect to a local file: refused.
    server.set(&path, Reply::Redirect("file:///etc/shadow".into()));
    let out = fetch_arch(false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(arch_base_id(), None);

    // The good tarball: imported, labelled, then served from the cache.
    server.set(&path, Reply::Body(v1.clone()));
    let out = fetch_arch(false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = arch_base_id().expect("base imported");
    let tarball_hits = server.hits(&path);
    let out = fetch_arch(false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        server.hits(&path),
        tarball_hits,
        "a cached base was downloaded again"
    );
    assert_eq!(arch_base_id().as_deref(), Some(first.as_str()));

    let out = client_as_root(&["--json", "base", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("pib-base/arch-rpi4-aarch64"), "{listed}");
    assert!(
        listed.contains(&format!("127.0.0.1:{PORT}")),
        "origin missing: {listed}"
    );

    // Refresh with an unchanged mirror: no new download.
    let out = fetch_arch(true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(server.hits(&path), tarball_hits);

    // Refresh after the mirror published a newer tarball: downloaded and re-imported.
    let v2 = rootfs_tarball(&dir, "v2");
    server.set(&path, Reply::Body(v2.clone()));
    server.set(&md5_path, Reply::Body(md5_line(&v2, &dir)));
    let out = fetch_arch(true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(server.hits(&path) > tarball_hits);
    assert_ne!(arch_base_id().as_deref(), Some(first.as_str()));
    assert!(partial_downloads().is_empty());
}

#[test]
fn a_real_debian_arm64_bootstrap_runs_arm64_code() {
    let out = client_as_root(&[
        "--json", "base", "fetch", "--distro", "debian", "--arch", "aarch64",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let result = last_json(&out);
    let image = result["result"]["image"]
        .as_str()
        .unwrap_or_else(|| panic!("no image in {result}"))
        .to_owned();
    let run = Command::new("docker")
        .args(["run", "--rm", "--network=none", &image, "uname", "-m"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        "aarch64",
        "{run:?}"
    );
}

#[test]
fn a_tarball_the_client_opened_is_imported() {
    let dir = tempfile_dir("import");
    let data = rootfs_tarball(&dir, "imported");
    let file = dir.join("rootfs.tar.gz");
    std::fs::write(&file, data).unwrap();
    let out = client_as_root(&[
        "--json",
        "base",
        "import",
        file.to_str().unwrap(),
        "--distro",
        "arch",
        "--arch",
        "arm",
        "--board",
        "rpi2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            "{{index .Config.Labels \"org.pibuilder.origin\"}}",
            "pib-base/arch-rpi2-arm:latest",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "local tarball");

    // A directory is not a tarball: the client cannot even open it as one.
    let out = client_as_root(&[
        "base",
        "import",
        dir.to_str().unwrap(),
        "--distro",
        "arch",
        "--arch",
        "arm",
        "--board",
        "rpi2",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
}

fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pib-bases-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
