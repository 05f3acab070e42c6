//! Checks our MBR against util-linux's sfdisk: it must read back what we
//! wrote, and write the very same bytes for the same table.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};

use crate::image::mbr::{self, MbrError, PartKind, Partition};
use crate::image::test_tools::{run, tool};

const MIB: u64 = 1024 * 1024;
const DISK_ID: u32 = 0x1234_ABCD;

fn layout() -> Vec<Partition> {
    vec![
        Partition {
            start: 4 * MIB,
            size: 256 * MIB,
            kind: PartKind::Fat32Lba,
            bootable: true,
        },
        Partition {
            start: 260 * MIB,
            size: 9 * 1024 * MIB,
            kind: PartKind::Linux,
            bootable: false,
        },
    ]
}

fn sparse_image(len: u64) -> tempfile::NamedTempFile {
    let img = tempfile::NamedTempFile::new().unwrap();
    img.as_file().set_len(len).unwrap();
    img
}

#[test]
fn sfdisk_reads_back_the_table() {
    let img = sparse_image(10 * 1024 * MIB);
    mbr::write(img.as_file(), DISK_ID, &layout()).unwrap();

    let out = run(Command::new(tool("sfdisk")).arg("--json").arg(img.path()));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let table = &json["partitiontable"];
    assert_eq!(table["label"], "dos");
    assert_eq!(table["id"], "0x1234abcd");
    assert_eq!(table["sectorsize"], 512);
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);

    assert_eq!(parts[0]["start"], 8192);
    assert_eq!(parts[0]["size"], 256 * 2048);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["bootable"], true);

    assert_eq!(parts[1]["start"], 260 * 2048);
    assert_eq!(parts[1]["size"], 9 * 1024 * 2048);
    assert_eq!(parts[1]["type"], "83");
    assert!(parts[1].get("bootable").is_none());

    // Only sector 0 was written; the rest of the image is still a hole.
    let meta = img.as_file().metadata().unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) <= 64);
}

#[test]
fn bytes_match_what_sfdisk_writes() {
    // The second partition ends past cylinder 1023, so both CHS cases
    // (encoded and saturated) are compared.
    let ours = sparse_image(10 * 1024 * MIB);
    mbr::write(ours.as_file(), DISK_ID, &layout()).unwrap();

    let theirs = sparse_image(10 * 1024 * MIB);
    let script = format!(
        "label: dos\nlabel-id: {DISK_ID:#010x}\n\
         start=8192, size={}, type=c, bootable\n\
         start={}, size={}, type=83\n",
        256 * 2048,
        260 * 2048,
        9 * 1024 * 2048
    );
    let mut child = Command::new(tool("sfdisk"))
        .arg("--quiet")
        .arg("--no-reread")
        .arg("--no-tell-kernel")
        .arg(theirs.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let read = |f: &std::fs::File| {
        let mut s = [0u8; 512];
        f.read_exact_at(&mut s, 0).unwrap();
        s
    };
    let (a, b) = (read(ours.as_file()), read(theirs.as_file()));
    // sfdisk leaves the boot code area alone and so do we, so the whole
    // sector should agree.
    assert_eq!(
        a[440..],
        b[440..],
        "ours {:02x?}\nsfdisk {:02x?}",
        &a[440..],
        &b[440..]
    );
    assert_eq!(a, b);
}

#[test]
fn errors_are_reported_before_anything_is_written() {
    let img = sparse_image(64 * MIB);
    let f = img.as_file();
    let part = |start, size| Partition {
        start,
        size,
        kind: PartKind::Linux,
        bootable: false,
    };
    type Expect = fn(&MbrError) -> bool;
    let cases: Vec<(Vec<Partition>, Expect)> = vec![
        (vec![part(MIB, MIB); 5], |e| {
            matches!(e, MbrError::TooMany(5))
        }),
        (vec![part(MIB, 1000)], |e| {
            matches!(e, MbrError::Misaligned { .. })
        }),
        (vec![part(MIB, 0)], |e| matches!(e, MbrError::Empty { .. })),
        (vec![part(0, MIB)], |e| {
            matches!(e, MbrError::OverlapsMbr { .. })
        }),
        (vec![part(MIB, 2 * MIB), part(2 * MIB, MIB)], |e| {
            matches!(e, MbrError::Overlap { a: 1, b: 2 })
        }),
        (vec![part(1 << 41, MIB)], |e| {
            matches!(e, MbrError::BeyondLimit { .. })
        }),
        (vec![part(MIB, 64 * MIB)], |e| {
            matches!(e, MbrError::PastEndOfImage { .. })
        }),
    ];
    for (parts, expected) in cases {
        let err = mbr::write(f, DISK_ID, &parts).unwrap_err();
        assert!(expected(&err), "{parts:?}: {err:?}");
    }
    let mut sector = [0xFFu8; 512];
    f.read_exact_at(&mut sector, 0).unwrap();
    assert_eq!(sector, [0u8; 512]);

    // And sfdisk agrees there is no table.
    let out = Command::new(tool("sfdisk"))
        .arg("--json")
        .arg(img.path())
        .output()
        .unwrap();
    assert!(!out.status.success() || out.stdout.is_empty());
}
