//! Cards for the card tests: loop devices over sparse files, images with block maps, and the
//! `pib-client flash` calls and checks the card tests share.

use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{text, TestUser};

pub const MIB: u64 = 1 << 20;

/// A loop device over a sparse file, detached (and its file removed) on drop: a card for the
/// card tests (the dev config allows loop devices).
pub struct LoopCard {
    pub dev: String,
    file: PathBuf,
}

impl LoopCard {
    /// A card of `size` bytes in `dir`, marked at its start and end so a skipped write shows.
    pub fn new(dir: &Path, name: &str, size: u64, read_only: bool) -> LoopCard {
        let file = dir.join(name);
        mark(&file, size);
        let mut args = vec!["--find", "--show"];
        if read_only {
            args.push("--read-only");
        }
        let out = Command::new("losetup")
            .args(&args)
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {}", text(&out));
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        LoopCard { dev, file }
    }

    /// Takes the medium out, as a card reader reports a pulled card: the node stays and its
    /// capacity drops to zero (the backing file shrinks to nothing and the loop device is told).
    pub fn pull(&self) {
        let size = format!(
            "/sys/class/block/{}/size",
            self.dev.trim_start_matches("/dev/")
        );
        // Writes in flight can grow the file again between the two steps: repeat until the
        // device says it has no room at all (after that nothing can grow it).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            std::fs::File::options()
                .write(true)
                .open(&self.file)
                .unwrap()
                .set_len(0)
                .unwrap();
            let out = Command::new("losetup")
                .arg("--set-capacity")
                .arg(&self.dev)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "losetup --set-capacity: {}",
                text(&out)
            );
            if std::fs::read_to_string(&size).unwrap().trim() == "0" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} keeps its capacity",
                self.dev
            );
        }
    }

    /// The same device node over a new file `name` of the same size, marked the same way: to
    /// the kernel a different disk (a new diskseq), to a path-based check the same one.
    pub fn rebind(&mut self, dir: &Path, name: &str) {
        let size = std::fs::metadata(&self.file).unwrap().len();
        let file = dir.join(name);
        mark(&file, size);
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        // udev may still be probing the old disk for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = Command::new("losetup")
                .arg(&self.dev)
                .arg(&file)
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "losetup {} {}: {}",
                self.dev,
                file.display(),
                text(&out)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&self.file);
        self.file = file;
    }

    pub fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        let f = std::fs::File::open(&self.dev).unwrap();
        f.read_exact_at(&mut buf, offset).unwrap();
        buf
    }
}

/// A sparse file of `size` bytes marked at its start and end.
fn mark(file: &Path, size: u64) {
    let f = File::create(file).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&[0xEE; 4096], 0).unwrap();
    f.write_all_at(&[0xEE; 4096], size - 4096).unwrap();
}

impl Drop for LoopCard {
    fn drop(&mut self) {
        // Partitions added by hand outlive the loop device otherwise.
        let _ = Command::new("partx")
            .arg("--delete")
            .arg(&self.dev)
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = std::fs::remove_file(&self.file);
    }
}

pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A fresh directory for one test's images and card files, readable by the test users.
pub fn work_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pib-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A sparse image with data in a few places (the first MiB included), and its bmap.
pub fn make_image(dir: &Path, name: &str, len: u64) -> PathBuf {
    let path = dir.join(name);
    let f = File::create(&path).unwrap();
    f.set_len(len).unwrap();
    f.write_all_at(&pattern(MIB as usize + 77, 1), 0).unwrap();
    f.write_all_at(&pattern(3 * MIB as usize, 2), len / 2 + 123)
        .unwrap();
    f.write_all_at(&pattern(5000, 3), len - 5000).unwrap();
    let bmap = dir.join(format!("{name}.bmap"));
    let out = Command::new("bmaptool")
        .args(["create", "-o"])
        .arg(&bmap)
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "bmaptool create: {}", text(&out));
    for p in [&path, &bmap] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    path
}

pub fn same_as_image(card: &LoopCard, image: &Path) {
    let len = std::fs::metadata(image).unwrap().len();
    let out = Command::new("cmp")
        .arg("-n")
        .arg(len.to_string())
        .arg(image)
        .arg(&card.dev)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "card {} differs: {}",
        card.dev,
        text(&out)
    );
}

pub fn flash(user: &TestUser, image: &Path, devices: &[&str], extra: &[&str]) -> Output {
    let mut args = vec!["--json", "flash", image.to_str().unwrap()];
    args.extend_from_slice(devices);
    args.push("--yes");
    args.extend_from_slice(extra);
    user.client(&args)
}

pub fn error_name(out: &Output) -> String {
    let all = String::from_utf8_lossy(&out.stdout);
    all.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub fn refused(user: &TestUser, image: &Path, device: &str, expected: &str) {
    let out = flash(user, image, &[device], &[]);
    assert_eq!(out.status.code(), Some(1), "{device}: {}", text(&out));
    assert_eq!(
        error_name(&out),
        format!("org.pibuilder.PiBuilder1.Error.{expected}"),
        "{device}: {}",
        text(&out)
    );
}

/// The owner of the service's name (an idle daemon may still be exiting beside it).
pub fn daemon_pid() -> Option<u32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let conn = crate::system_bus().await;
        crate::daemon_pid(&conn).await
    })
}

pub fn running_flash_job(user: &TestUser) -> Option<String> {
    let out = user.client(&["--json", "jobs"]);
    let v = last_json_array(&out);
    v.into_iter()
        .find(|j| {
            j["operation"] == "flash"
                && j["state"] == "running"
                && j["progress"].as_f64().is_some_and(|p| p > 0.0)
        })
        .and_then(|j| j["path"].as_str().map(str::to_owned))
}

pub fn last_json_array(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.as_array().cloned())
        .unwrap_or_default()
}

pub fn start_flash(user: &TestUser, image: &Path, device: &str) -> std::process::Child {
    user.command(crate::client_bin())
        .args(["--json", "flash", image.to_str().unwrap(), device, "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
