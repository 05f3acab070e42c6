//! Rules over fake sysfs/proc/dev trees laid out like the real ones.
//!
//! Paths that must be stat'ed (protected paths, swap files, mount sources)
//! are real files here; the fake sysfs is then given whatever device numbers
//! the real stat returns, so the whole chain runs without touching real disks.

use super::*;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;
use tempfile::TempDir;

const GIB: u64 = 1 << 30;
const SECTORS_PER_GIB: u64 = GIB / SECTOR;

/// Fake majors come from here; a real device number inside this range would
/// make a test ambiguous, so such tests bail out loudly instead.
const FAKE_MAJORS: std::ops::RangeInclusive<u32> = 240..=249;

fn scratch() -> TempDir {
    // Everything the tests write stays inside the crate.
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/unit-tmp");
    fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("fake-")
        .tempdir_in(base)
        .unwrap()
}

fn dev_of(path: &Path) -> DevNum {
    DevNum::from_raw(fs::metadata(path).unwrap().dev())
}

fn num(dev: DevNum) -> (u32, u32) {
    (dev.major, dev.minor)
}

/// Some real block device node, other than `not`, for tests that need a stat
/// to report a block device.
fn real_block_node(not: DevNum) -> Option<(PathBuf, DevNum)> {
    let mut entries: Vec<PathBuf> = fs::read_dir("/dev")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries.into_iter().find_map(|path| {
        let meta = fs::symlink_metadata(&path).ok()?;
        let dev = DevNum::from_raw(meta.rdev());
        (meta.file_type().is_block_device()
            && dev != not
            && !FAKE_MAJORS.contains(&dev.major)
            && dev.major != LOOP_MAJOR)
            .then_some((path, dev))
    })
}

struct Tree {
    tmp: TempDir,
    roots: Roots,
}

impl Tree {
    fn new() -> Tree {
        let tmp = scratch();
        let r = tmp.path().to_path_buf();
        for d in [
            "sys/block",
            "sys/dev/block",
            "sys/devices/virtual/block",
            "proc/self",
            "dev",
            "udev",
            "real",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("proc/self/mountinfo"), format!("{}\n", proc_line())).unwrap();
        fs::write(
            r.join("proc/swaps"),
            "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n",
        )
        .unwrap();
        let roots = Roots {
            sys: r.join("sys"),
            proc_: r.join("proc"),
            dev: r.join("dev"),
            udev_data: r.join("udev"),
        };
        Tree { tmp, roots }
    }

    /// A real directory on the real filesystem, for protected paths and swap files.
    fn real(&self) -> PathBuf {
        self.tmp.path().join("real")
    }

    /// Protected paths that pin no disk: the real /proc, which the default
    /// mountinfo describes (tests that replace mountinfo add [`proc_line`]
    /// back). An empty list would refuse everything.
    fn unpinned(&self) -> Vec<PathBuf> {
        vec![PathBuf::from("/proc")]
    }

    /// A whole disk at `devices/<devpath>`, which ends in `block/<name>`.
    fn disk(&self, devpath: &str, dev: (u32, u32), sectors: u64) -> PathBuf {
        let dir = self.roots.sys.join("devices").join(devpath);
        fs::create_dir_all(dir.join("holders")).unwrap();
        fs::create_dir_all(dir.join("slaves")).unwrap();
        self.set(&dir, "dev", &format!("{}:{}", dev.0, dev.1));
        self.set(&dir, "size", &sectors.to_string());
        self.set(&dir, "ro", "0");
        self.set(&dir, "removable", "0");
        let name = dir.file_name().unwrap();
        symlink(
            Path::new("../devices").join(devpath),
            self.roots.sys.join("block").join(name),
        )
        .unwrap();
        symlink(
            Path::new("../../devices").join(devpath),
            self.roots
                .sys
                .join("dev/block")
                .join(format!("{}:{}", dev.0, dev.1)),
        )
        .unwrap();
        if !devpath.starts_with("virtual/") {
            // Real disks link `device` to the directory above `block/`.
            symlink("../..", dir.join("device")).unwrap();
        }
        dir
    }

    fn partition(&self, disk: &Path, name: &str, dev: (u32, u32), number: u32) -> PathBuf {
        let dir = disk.join(name);
        fs::create_dir_all(dir.join("holders")).unwrap();
        self.set(&dir, "dev", &format!("{}:{}", dev.0, dev.1));
        self.set(&dir, "partition", &number.to_string());
        self.set(&dir, "size", "2048");
        self.set(&dir, "ro", "0");
        symlink(
            &dir,
            self.roots
                .sys
                .join("dev/block")
                .join(format!("{}:{}", dev.0, dev.1)),
        )
        .unwrap();
        dir
    }

    fn set(&self, dir: &Path, attr: &str, value: &str) {
        let path = dir.join(attr);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("{value}\n")).unwrap();
    }

    /// `holders/` or `slaves/` entry in `from` pointing at `to`.
    fn link(&self, from: &Path, kind: &str, to: &Path) {
        symlink(to, from.join(kind).join(to.file_name().unwrap())).unwrap();
    }

    fn mountinfo(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(self.roots.proc_.join("self/mountinfo"), text).unwrap();
    }

    fn swaps(&self, lines: &[String]) {
        let mut text = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        fs::write(self.roots.proc_.join("swaps"), text).unwrap();
    }

    /// A name in the fake /dev that is really `target`.
    fn dev_link(&self, name: &str, target: &Path) {
        symlink(target, self.roots.dev.join(name)).unwrap();
    }

    fn usb_disk(&self, name: &str, dev: (u32, u32), sectors: u64) -> PathBuf {
        self.disk(
            &format!(
                "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:{}/block/{name}",
                dev.1
            ),
            dev,
            sectors,
        )
    }
}

/// The mountinfo line for the real /proc, keyed by its real device number.
fn proc_line() -> String {
    format!(
        "22 1 {} / /proc rw - proc proc rw",
        dev_of(Path::new("/proc"))
    )
}

fn policy(protected: Vec<PathBuf>) -> Policy {
    Policy {
        allow_loop: false,
        protected_paths: protected,
        large_disk: 256 * GIB,
    }
}

fn find<'a>(disks: &'a [Disk], name: &str) -> &'a Disk {
    disks
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("{name} not listed in {disks:#?}"))
}

fn refusal(disks: &[Disk], name: &str) -> Refusal {
    match &find(disks, name).verdict {
        Verdict::Refused(r) => r.clone(),
        other => panic!("{name}: expected a refusal, got {other:?}"),
    }
}

/// The verdict the write path would give, for trees that have no real nodes.
fn write_verdict(tree: &Tree, policy: &Policy, dev: (u32, u32), image_size: u64) -> Verdict {
    write_verdict_with(tree, policy, dev, image_size, true)
}

fn write_verdict_with(
    tree: &Tree,
    policy: &Policy,
    dev: (u32, u32),
    image_size: u64,
    judge_mounts: bool,
) -> Verdict {
    let ctx = Context::new(&tree.roots, policy).unwrap();
    let dir = ctx
        .sys
        .dir_of(DevNum {
            major: dev.0,
            minor: dev.1,
        })
        .unwrap();
    let facts = examine(&ctx, &dir, PathBuf::from("/dev/x")).unwrap();
    let mode = Mode::Write {
        image_size,
        judge_mounts,
    };
    judge(&facts, policy, mode)
}

#[test]
fn classifies_by_bus_and_flags() {
    let t = Tree::new();
    let reader = t.usb_disk("sdb", (240, 16), 32 * SECTORS_PER_GIB);
    t.set(&reader, "removable", "1");
    t.set(&reader, "device/model", "Card  Reader    ");
    t.set(&reader, "device/vendor", "Generic ");
    t.usb_disk("sdc", (240, 32), 500 * SECTORS_PER_GIB / 4); // USB SSD, removable=0
    t.usb_disk("sdd", (240, 48), 512 * SECTORS_PER_GIB);
    let ro = t.usb_disk("sde", (240, 64), 8 * SECTORS_PER_GIB);
    t.set(&ro, "ro", "1");
    t.disk(
        "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
        (240, 0),
        100 * SECTORS_PER_GIB,
    );
    t.disk(
        "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1",
        (241, 0),
        100 * SECTORS_PER_GIB,
    );
    let sd = t.disk(
        "platform/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
        (242, 0),
        16 * SECTORS_PER_GIB,
    );
    t.set(&sd, "device/type", "SD");
    let emmc = t.disk(
        "platform/fe330000.mmc/mmc_host/mmc1/mmc1:0001/block/mmcblk1",
        (242, 8),
        16 * SECTORS_PER_GIB,
    );
    t.set(&emmc, "device/type", "MMC");
    t.disk(
        "pci0000:00/0000:00:05.0/virtio3/block/vdb",
        (243, 16),
        SECTORS_PER_GIB,
    );
    t.disk("virtual/block/zram0", (244, 0), SECTORS_PER_GIB);
    let lp = t.disk("virtual/block/loop3", (7, 3), 2048);
    t.set(&lp, "loop/backing_file", "/srv/card.img");
    // Unbound loop: no loop/ directory, size 0.
    t.disk("virtual/block/loop4", (7, 4), 0);

    let pol = policy(t.unpinned());
    let disks = list(&t.roots, &pol).unwrap();
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "loop3", "mmcblk0", "mmcblk1", "nvme0n1", "sda", "sdb", "sdc", "sdd", "sde", "vdb",
            "zram0"
        ]
    );

    let sdb = find(&disks, "sdb");
    assert_eq!(sdb.verdict, Verdict::Ok);
    assert_eq!(sdb.bus.as_deref(), Some("usb"));
    assert_eq!(sdb.model.as_deref(), Some("Card  Reader"));
    assert_eq!(sdb.vendor.as_deref(), Some("Generic"));
    assert_eq!(sdb.node, t.roots.dev.join("sdb"));
    assert!(sdb.removable);
    assert_eq!(
        sdb.identity,
        Identity {
            major: 240,
            minor: 16,
            diskseq: None,
            size: 32 * GIB,
            serial: None
        }
    );

    assert_eq!(
        find(&disks, "sdc").verdict,
        Verdict::Ok,
        "USB SSD with removable=0"
    );
    assert!(matches!(
        &find(&disks, "sdd").verdict,
        Verdict::NeedsSystemGrant(why) if why.contains("more than")
    ));
    assert_eq!(refusal(&disks, "sde"), Refusal::ReadOnly);
    let sda = find(&disks, "sda");
    assert_eq!(sda.bus.as_deref(), Some("sata"));
    assert!(
        matches!(&sda.verdict, Verdict::NeedsSystemGrant(why) if why.contains("not a removable"))
    );
    let nvme = find(&disks, "nvme0n1");
    assert_eq!(nvme.bus.as_deref(), Some("nvme"));
    assert!(matches!(nvme.verdict, Verdict::NeedsSystemGrant(_)));
    let mmc = find(&disks, "mmcblk0");
    assert_eq!(mmc.bus.as_deref(), Some("mmc"));
    assert_eq!(mmc.verdict, Verdict::Ok);
    assert!(
        matches!(
            find(&disks, "mmcblk1").verdict,
            Verdict::NeedsSystemGrant(_)
        ),
        "eMMC is not removable class"
    );
    assert_eq!(find(&disks, "vdb").bus.as_deref(), Some("virtio"));
    assert!(matches!(
        find(&disks, "vdb").verdict,
        Verdict::NeedsSystemGrant(_)
    ));
    assert_eq!(find(&disks, "zram0").bus.as_deref(), Some("virtual"));
    let lp = find(&disks, "loop3");
    assert_eq!(lp.bus.as_deref(), Some("loop"));
    assert_eq!(lp.verdict, Verdict::Refused(Refusal::LoopNotAllowed));

    let allow = Policy {
        allow_loop: true,
        ..pol.clone()
    };
    let disks = list(&t.roots, &allow).unwrap();
    assert_eq!(find(&disks, "loop3").verdict, Verdict::Ok);
    assert!(!disks.iter().any(|d| d.name == "loop4"));
    let tiny = Policy {
        large_disk: 1024,
        ..allow
    };
    let disks = list(&t.roots, &tiny).unwrap();
    assert!(matches!(
        find(&disks, "loop3").verdict,
        Verdict::NeedsSystemGrant(_)
    ));
}

#[test]
fn partitions_listed_in_number_order_and_holders_refuse() {
    let t = Tree::new();
    let sdb = t.usb_disk("sdb", (240, 16), 32 * SECTORS_PER_GIB);
    t.partition(&sdb, "sdb10", (240, 26), 10);
    let p2 = t.partition(&sdb, "sdb2", (240, 18), 2);
    let dm = t.disk("virtual/block/dm-3", (245, 3), 2048);
    t.link(&p2, "holders", &dm);
    t.link(&dm, "slaves", &p2);

    let disks = list(&t.roots, &policy(t.unpinned())).unwrap();
    let disk = find(&disks, "sdb");
    assert_eq!(disk.partitions, ["sdb2", "sdb10"]);
    assert_eq!(
        disk.verdict,
        Verdict::Refused(Refusal::Holders(vec!["dm-3".into()]))
    );
}

#[test]
fn system_disk_through_partition() {
    let t = Tree::new();
    let root = dev_of(&t.real());
    if FAKE_MAJORS.contains(&root.major) {
        eprintln!("skipped: real device {root} collides with fake majors");
        return;
    }
    let sdx = t.disk(
        "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sdx",
        (240, 0),
        SECTORS_PER_GIB,
    );
    t.partition(&sdx, "sdx2", num(root), 2);
    t.usb_disk("sdy", (240, 16), SECTORS_PER_GIB);

    // The second: a state directory the daemon has not made yet, which will live on the
    // disk of its parent.
    for protected in [t.real(), t.real().join("state/pi-builder")] {
        let disks = list(&t.roots, &policy(vec![protected.clone()])).unwrap();
        assert_eq!(
            refusal(&disks, "sdx"),
            Refusal::SystemDisk(format!("holds {}", protected.display()))
        );
        assert_eq!(find(&disks, "sdy").verdict, Verdict::Ok);
    }
}

#[test]
fn system_disk_through_dm_md_and_volumes_on_it() {
    let t = Tree::new();
    let root = dev_of(&t.real());
    if FAKE_MAJORS.contains(&root.major) || root.major == 9 {
        eprintln!("skipped: real device {root} collides with fake majors");
        return;
    }
    // / on dm-0 (e.g. LUKS or LVM) on md0 (RAID1 over sda1 and sdb1).
    let dm0 = t.disk("virtual/block/dm-0", num(root), 2048);
    let md0 = t.disk("virtual/block/md0", (9, 0), 2048);
    let sda = t.disk(
        "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
        (240, 0),
        SECTORS_PER_GIB,
    );
    let sdb = t.disk(
        "pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0/block/sdb",
        (240, 16),
        SECTORS_PER_GIB,
    );
    let sda1 = t.partition(&sda, "sda1", (240, 1), 1);
    let sda2 = t.partition(&sda, "sda2", (240, 2), 2);
    let sdb1 = t.partition(&sdb, "sdb1", (240, 17), 1);
    t.link(&dm0, "slaves", &md0);
    t.link(&md0, "holders", &dm0);
    for part in [&sda1, &sdb1] {
        t.link(&md0, "slaves", part);
        t.link(part, "holders", &md0);
    }
    // An LV that holds nothing protected but lives on the system disk.
    let dm1 = t.disk("virtual/block/dm-1", (246, 1), 2048);
    t.link(&dm1, "slaves", &sda2);
    t.link(&sda2, "holders", &dm1);
    t.usb_disk("sdc", (240, 32), SECTORS_PER_GIB);

    let protected = t.real();
    let disks = list(&t.roots, &policy(vec![protected.clone()])).unwrap();
    let why = format!("holds {}", protected.display());
    for name in ["dm-0", "md0", "sda", "sdb"] {
        assert_eq!(
            refusal(&disks, name),
            Refusal::SystemDisk(why.clone()),
            "{name}"
        );
    }
    assert_eq!(
        refusal(&disks, "dm-1"),
        Refusal::SystemDisk(format!("built on sda which {why}"))
    );
    assert_eq!(find(&disks, "sdc").verdict, Verdict::Ok);
}

#[test]
fn anonymous_device_is_traced_through_mountinfo() {
    let t = Tree::new();
    let root = dev_of(&t.real());
    let Some((node, real)) = real_block_node(root) else {
        eprintln!("skipped: no block device node in /dev");
        return;
    };
    if FAKE_MAJORS.contains(&root.major) {
        eprintln!("skipped: real device {root} collides with fake majors");
        return;
    }
    // btrfs: st_dev is anonymous, the mount source names the partition.
    t.dev_link("rootpart", &node);
    t.mountinfo(&[format!(
        "30 1 {root} /@ / rw,relatime shared:1 - btrfs /dev/rootpart rw,subvol=/@"
    )]);
    let nvme = t.disk(
        "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1",
        (241, 0),
        SECTORS_PER_GIB,
    );
    t.partition(&nvme, "nvme0n1p3", num(real), 3);

    let pol = policy(vec![t.real()]);
    let disks = list(&t.roots, &pol).unwrap();
    assert!(matches!(refusal(&disks, "nvme0n1"), Refusal::SystemDisk(_)));

    // overlay: the layers are followed (a layer given as a device node here,
    // since every real directory would share the temp dir's device).
    let layer = node.display();
    t.mountinfo(&[format!(
        "30 1 {root} / / rw - overlay overlay rw,lowerdir=/missing-layer::{layer},upperdir={layer},workdir={layer}"
    )]);
    let err = Context::new(&t.roots, &pol).unwrap().system.unwrap_err();
    assert!(err.contains("cannot stat /missing-layer"), "{err}");
    t.mountinfo(&[format!(
        "30 1 {root} / / rw - overlay overlay rw,lowerdir={layer},upperdir={layer},workdir={layer}"
    )]);
    let found = Context::new(&t.roots, &pol).unwrap().system.unwrap();
    assert!(found.contains_key(&DevNum {
        major: 241,
        minor: 0
    }));
}

#[test]
fn untraceable_protected_path_fails_closed() {
    let t = Tree::new();
    let root = dev_of(&t.real());
    t.usb_disk("sdb", (240, 16), SECTORS_PER_GIB);
    let cases = [
        (
            vec![format!("30 1 {root} / / rw - zfs rpool/ROOT/debian rw")],
            t.real(),
            "zfs filesystem from rpool/ROOT/debian",
        ),
        (vec![], t.real(), "no mount has device"),
        // Not made yet: traced through its parent, which this mount table cannot place.
        (vec![], t.real().join("missing"), "no mount has device"),
    ];
    for (mounts, path, expect) in cases {
        t.mountinfo(&mounts);
        let disks = list(&t.roots, &policy(vec![path])).unwrap();
        match refusal(&disks, "sdb") {
            Refusal::SystemDisk(why) => assert!(why.contains(expect), "{why}"),
            other => panic!("{other:?}"),
        }
    }
    // Memory filesystems hold no disk: nothing is pinned.
    t.mountinfo(&[format!("30 1 {root} / /run rw - tmpfs tmpfs rw")]);
    let disks = list(&t.roots, &policy(vec![t.real()])).unwrap();
    assert_eq!(find(&disks, "sdb").verdict, Verdict::Ok);
}

#[test]
fn loop_over_a_system_block_device_is_the_system_disk() {
    let t = Tree::new();
    let Some((node, real)) = real_block_node(DevNum { major: 0, minor: 0 }) else {
        eprintln!("skipped: no block device node in /dev");
        return;
    };
    let sdq = t.disk(
        "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sdq",
        (240, 48),
        SECTORS_PER_GIB,
    );
    t.partition(&sdq, "sdq1", num(real), 1);
    let name = node.file_name().unwrap();
    t.dev_link(&name.to_string_lossy(), &node);
    let lp = t.disk("virtual/block/loop5", (7, 5), 2048);
    t.set(&lp, "loop/backing_file", &node.display().to_string());

    let pol = Policy {
        allow_loop: true,
        ..policy(vec![node.clone()])
    };
    let disks = list(&t.roots, &pol).unwrap();
    assert_eq!(
        refusal(&disks, "loop5"),
        Refusal::SystemDisk(format!("built on sdq which holds {}", node.display()))
    );
}

#[test]
fn swap_is_matched_by_number_not_name() {
    let t = Tree::new();
    let root = dev_of(&t.real());
    let Some((node, real)) = real_block_node(root) else {
        eprintln!("skipped: no block device node in /dev");
        return;
    };
    if FAKE_MAJORS.contains(&root.major) {
        eprintln!("skipped: real device {root} collides with fake majors");
        return;
    }
    // /proc/swaps says "sdz9", but that name is really sdc1's number.
    t.dev_link("sdz9", &node);
    let sdc = t.usb_disk("sdc", (240, 32), SECTORS_PER_GIB);
    t.partition(&sdc, "sdc1", num(real), 1);
    let sdz = t.usb_disk("sdz", (240, 144), SECTORS_PER_GIB);
    t.partition(&sdz, "sdz9", (240, 153), 9);
    // A swap file pins the disk whose filesystem holds it.
    let sdf = t.usb_disk("sdf", (240, 80), SECTORS_PER_GIB);
    t.partition(&sdf, "sdf1", num(root), 1);
    let swapfile = t.real().join("swap file");
    fs::write(&swapfile, b"").unwrap();
    t.swaps(&[
        "/dev/sdz9                               partition\t1024\t0\t-2".to_string(),
        format!(
            "{}\tfile\t1024\t0\t-3",
            swapfile.display().to_string().replace(' ', "\\040")
        ),
    ]);

    let disks = list(&t.roots, &policy(t.unpinned())).unwrap();
    assert_eq!(refusal(&disks, "sdc"), Refusal::Swap("/dev/sdz9".into()));
    assert_eq!(find(&disks, "sdz").verdict, Verdict::Ok);
    assert_eq!(
        refusal(&disks, "sdf"),
        Refusal::Swap(swapfile.display().to_string())
    );

    // A swap device we cannot find might be on any disk.
    t.swaps(&["/dev/gone partition 1024 0 -2".to_string()]);
    let disks = list(&t.roots, &policy(t.unpinned())).unwrap();
    assert!(matches!(refusal(&disks, "sdz"), Refusal::Swap(why) if why.contains("/dev/gone")));
}

#[test]
fn mounted_is_shown_when_listing_and_refused_last_when_writing() {
    let t = Tree::new();
    let sdb = t.usb_disk("sdb", (240, 16), SECTORS_PER_GIB);
    t.partition(&sdb, "sdb1", (240, 17), 1);
    t.mountinfo(&[
        proc_line(),
        "40 27 240:17 / /media/pi/my\\040card rw,nosuid shared:7 master:1 - vfat /dev/sdb1 rw"
            .to_string(),
        "41 27 240:17 / /srv/bind rw - vfat /dev/sdb1 rw".to_string(),
    ]);
    let pol = policy(t.unpinned());
    let disks = list(&t.roots, &pol).unwrap();
    let disk = find(&disks, "sdb");
    assert_eq!(
        disk.mounted,
        [
            PathBuf::from("/media/pi/my card"),
            PathBuf::from("/srv/bind")
        ]
    );
    assert_eq!(disk.verdict, Verdict::Ok);

    assert_eq!(
        write_verdict(&t, &pol, (240, 16), 1024),
        Verdict::Refused(Refusal::Mounted(disk.mounted.clone()))
    );
    // A writer that unmounts first gets the disk, mounts and all.
    assert_eq!(
        write_verdict_with(&t, &pol, (240, 16), 1024, false),
        Verdict::Ok
    );
    assert_eq!(
        write_verdict_with(&t, &pol, (240, 16), 2 * GIB, false),
        Verdict::Refused(Refusal::TooSmall {
            need: 2 * GIB,
            have: GIB
        })
    );
    assert_eq!(
        write_verdict(&t, &pol, (240, 16), 2 * GIB),
        Verdict::Refused(Refusal::TooSmall {
            need: 2 * GIB,
            have: GIB
        }),
        "Mounted only when nothing else is wrong"
    );
}

#[test]
fn mount_found_through_its_source_device() {
    let t = Tree::new();
    let Some((node, real)) = real_block_node(DevNum { major: 0, minor: 0 }) else {
        eprintln!("skipped: no block device node in /dev");
        return;
    };
    t.dev_link("sdb1", &node);
    let sdb = t.usb_disk("sdb", (240, 16), SECTORS_PER_GIB);
    t.partition(&sdb, "sdb1", num(real), 1);
    // btrfs reports an anonymous number; only the source leads to the disk.
    t.mountinfo(&[
        proc_line(),
        "50 27 0:55 / /mnt/stick rw - btrfs /dev/sdb1 rw".to_string(),
    ]);
    let disks = list(&t.roots, &policy(t.unpinned())).unwrap();
    assert_eq!(find(&disks, "sdb").mounted, [PathBuf::from("/mnt/stick")]);
}

#[test]
fn serial_prefers_udev_then_sysfs() {
    let t = Tree::new();
    let sdb = t.usb_disk("sdb", (240, 16), SECTORS_PER_GIB);
    let vdb = t.disk(
        "pci0000:00/0000:00:05.0/virtio3/block/vdb",
        (243, 16),
        SECTORS_PER_GIB,
    );
    let mmc = t.disk(
        "platform/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
        (242, 0),
        SECTORS_PER_GIB,
    );
    t.set(&vdb, "serial", "disk-serial");
    t.set(&mmc, "device/serial", "0x1234abcd");
    t.set(&sdb, "diskseq", "42");
    fs::write(
        t.roots.udev_data.join("b240:16"),
        "S:disk/by-id/usb-Foo\nE:ID_SERIAL=Foo_Bar_123-0:0\nE:ID_SERIAL_SHORT=123\n",
    )
    .unwrap();
    let disks = list(&t.roots, &policy(t.unpinned())).unwrap();
    let sdb = &find(&disks, "sdb").identity;
    assert_eq!(sdb.serial.as_deref(), Some("Foo_Bar_123-0:0"));
    assert_eq!(sdb.diskseq, Some(42));
    assert_eq!(
        find(&disks, "vdb").identity.serial.as_deref(),
        Some("disk-serial")
    );
    assert_eq!(
        find(&disks, "mmcblk0").identity.serial.as_deref(),
        Some("0x1234abcd")
    );

    fs::write(t.roots.udev_data.join("b240:16"), "E:ID_SERIAL_SHORT=123\n").unwrap();
    let disks = list(&t.roots, &policy(t.unpinned())).unwrap();
    assert_eq!(find(&disks, "sdb").identity.serial.as_deref(), Some("123"));
}

#[test]
fn empty_protected_list_refuses_everything() {
    let t = Tree::new();
    t.usb_disk("sdb", (240, 16), SECTORS_PER_GIB);
    let disks = list(&t.roots, &policy(vec![])).unwrap();
    assert!(
        matches!(refusal(&disks, "sdb"), Refusal::SystemDisk(why) if why.contains("no protected paths"))
    );
}

#[test]
fn sysfs_links_leading_outside_are_errors() {
    let t = Tree::new();
    let outside = t.tmp.path().join("outside/block/sdq");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("dev"), "240:0\n").unwrap();
    fs::write(outside.join("size"), "2048\n").unwrap();
    symlink(&outside, t.roots.sys.join("block/sdq")).unwrap();
    assert!(list(&t.roots, &policy(t.unpinned())).is_err());
}

#[test]
fn mountinfo_parsing() {
    let text = b"27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                 44 27 7:0 / /a\\040b\\011c\\134d rw,relatime shared:1 master:2 - ext4 /dev/loop0 rw\n";
    let mounts = parse_mountinfo(text).unwrap();
    assert_eq!(mounts.len(), 2);
    assert_eq!(
        mounts[0].dev,
        DevNum {
            major: 254,
            minor: 0
        }
    );
    assert_eq!(mounts[1].mount_point, PathBuf::from("/a b\tc\\d"));
    assert_eq!(mounts[1].fstype, "ext4");
    assert_eq!(mounts[1].source, PathBuf::from("/dev/loop0"));
    assert!(parse_mountinfo(b"27 1 254:0 / / rw,relatime ext4 /dev/vda rw\n").is_err());
    assert!(parse_mountinfo(b"27 1 x:0 / / rw - ext4 /dev/vda rw\n").is_err());
    // Non-UTF-8 mount points survive byte for byte.
    let odd = parse_mountinfo(b"1 1 8:1 / /m\xff rw - vfat /dev/sdb1 rw\n").unwrap();
    assert_eq!(odd[0].mount_point.as_os_str().as_encoded_bytes(), b"/m\xff");
    assert_eq!(unescape(b"\\04"), b"\\04");
    assert_eq!(unescape(b"x\\777"), b"x\\777");
}

#[test]
fn swaps_parsing() {
    let text = b"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                 /dev/loop0                              partition\t16380\t\t0\t\t-2\n\
                 /swap\\040file                            file\t\t1024\t\t0\t\t-3\n";
    let swaps = parse_swaps(text).unwrap();
    assert_eq!(
        swaps,
        [
            SwapLine {
                name: "/dev/loop0".into(),
                kind: "partition".into()
            },
            SwapLine {
                name: "/swap file".into(),
                kind: "file".into()
            }
        ]
    );
    assert!(parse_swaps(b"header\n/dev/sda2\n").is_err());
}

#[test]
fn device_numbers_split_like_glibc() {
    fn makedev(major: u64, minor: u64) -> u64 {
        ((major & 0xffff_f000) << 32)
            | ((major & 0x0fff) << 8)
            | ((minor & 0xffff_ff00) << 12)
            | (minor & 0xff)
    }
    for (major, minor) in [(8, 1), (259, 1_048_575), (4095, 255), (65_536, 70_000)] {
        assert_eq!(
            DevNum::from_raw(makedev(major, minor)),
            DevNum {
                major: major as u32,
                minor: minor as u32
            }
        );
    }
    let null = fs::metadata("/dev/null").unwrap();
    assert_eq!(DevNum::from_raw(null.rdev()), DevNum { major: 1, minor: 3 });
}

#[test]
fn recheck_rejects_a_regular_file() {
    let tmp = scratch();
    let path = tmp.path().join("f");
    fs::write(&path, b"x").unwrap();
    let file = fs::File::open(&path).unwrap();
    let expected = Identity {
        major: 7,
        minor: 0,
        diskseq: None,
        size: 1,
        serial: None,
    };
    assert_eq!(
        recheck(file.as_fd(), &expected, &Roots::default()),
        Err(Changed::NotBlockDevice)
    );
}

#[test]
fn serialized_shape() {
    let v = Verdict::Refused(Refusal::TooSmall { need: 2, have: 1 });
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"Refused":{"TooSmall":{"need":2,"have":1}}}"#
    );
    assert_eq!(
        Refusal::Holders(vec!["dm-0".into(), "md0".into()]).to_string(),
        "in use by dm-0, md0"
    );
    assert_eq!(
        Changed::DeviceNumber {
            expected: (7, 1),
            found: (7, 2)
        }
        .to_string(),
        "device number is 7:2, expected 7:1"
    );
}
