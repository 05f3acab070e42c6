//! A classic MBR partition table (sector 0 of the image).

use std::fs::File;
use std::os::unix::fs::FileExt;

const SECTOR: u64 = 512;
const MAX_PARTITIONS: usize = 4;
const DISK_ID_OFFSET: usize = 440;
const TABLE_OFFSET: usize = 446;
const ENTRY_LEN: usize = 16;
/// MBR entries hold 32-bit sector numbers.
const MAX_SECTORS: u64 = 1 << 32;
/// The geometry LBA-only tools (sfdisk, parted) assume when filling in the
/// obsolete CHS fields: 255 heads, 63 sectors per track.
const HEADS: u64 = 255;
const SECTORS_PER_TRACK: u64 = 63;
/// What those tools write when the cylinder does not fit in 10 bits.
const CHS_BEYOND: [u8; 3] = [0xFE, 0xFF, 0xFF];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// 0x0c: FAT32 addressed by LBA; what the Raspberry Pi firmware expects
    /// for the boot partition.
    Fat32Lba,
    /// 0x83
    Linux,
}

impl PartKind {
    pub fn type_byte(self) -> u8 {
        match self {
            PartKind::Fat32Lba => 0x0C,
            PartKind::Linux => 0x83,
        }
    }
}

/// A primary partition. Its number (`PARTUUID=xxxxxxxx-NN`) is its position
/// in the slice given to [`encode`], counting from 1.
#[derive(Clone, Copy, Debug)]
pub struct Partition {
    /// Bytes from the start of the disk, a multiple of 512.
    pub start: u64,
    /// Bytes, a multiple of 512.
    pub size: u64,
    pub kind: PartKind,
    pub bootable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MbrError {
    #[error("an MBR holds at most 4 primary partitions, got {0}")]
    TooMany(usize),
    #[error(
        "partition {number}: start and size must be multiples of 512 (start {start}, size {size})"
    )]
    Misaligned {
        number: usize,
        start: u64,
        size: u64,
    },
    #[error("partition {number} is empty")]
    Empty { number: usize },
    #[error("partition {number} overlaps the MBR in sector 0")]
    OverlapsMbr { number: usize },
    #[error("partition {number} ends past sector 2^32, which an MBR cannot address")]
    BeyondLimit { number: usize },
    #[error("partitions {a} and {b} overlap")]
    Overlap { a: usize, b: usize },
    #[error(
        "disk id 0 means \"no signature\": Windows replaces it, which would change every PARTUUID"
    )]
    ZeroDiskId,
    #[error("partition {number} ends at byte {end}, past the end of the {file_len}-byte image")]
    PastEndOfImage {
        number: usize,
        end: u64,
        file_len: u64,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes sector 0: no boot code, the disk signature that
/// `PARTUUID=xxxxxxxx-NN` is made of, up to four primary partitions with
/// CHS fields as LBA-only tools set them, and the 0x55AA signature.
pub fn encode(disk_id: u32, parts: &[Partition]) -> Result<[u8; 512], MbrError> {
    validate(disk_id, parts)?;
    let mut mbr = [0u8; 512];
    mbr[DISK_ID_OFFSET..DISK_ID_OFFSET + 4].copy_from_slice(&disk_id.to_le_bytes());
    for (i, part) in parts.iter().enumerate() {
        let at = TABLE_OFFSET + i * ENTRY_LEN;
        mbr[at..at + ENTRY_LEN].copy_from_slice(&entry(part));
    }
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    Ok(mbr)
}

/// Writes the encoded MBR at offset 0 of `file`, which must already be long
/// enough to hold every partition.
pub fn write(file: &File, disk_id: u32, parts: &[Partition]) -> Result<(), MbrError> {
    let mbr = encode(disk_id, parts)?;
    // A block device's metadata says 0 bytes; seeking to its end gives its size (for a file
    // both agree). The descriptor's offset is not used by the positioned write below.
    let file_len = {
        use std::io::Seek;
        let mut f = file;
        f.seek(std::io::SeekFrom::End(0))?
    };
    for (i, part) in parts.iter().enumerate() {
        // `encode` has bounded both to 2^41, so this cannot overflow.
        let end = part.start + part.size;
        if end > file_len {
            return Err(MbrError::PastEndOfImage {
                number: i + 1,
                end,
                file_len,
            });
        }
    }
    file.write_all_at(&mbr, 0)?;
    Ok(())
}

fn validate(disk_id: u32, parts: &[Partition]) -> Result<(), MbrError> {
    if disk_id == 0 {
        return Err(MbrError::ZeroDiskId);
    }
    if parts.len() > MAX_PARTITIONS {
        return Err(MbrError::TooMany(parts.len()));
    }
    for (i, p) in parts.iter().enumerate() {
        let number = i + 1;
        if p.start % SECTOR != 0 || p.size % SECTOR != 0 {
            return Err(MbrError::Misaligned {
                number,
                start: p.start,
                size: p.size,
            });
        }
        if p.size == 0 {
            return Err(MbrError::Empty { number });
        }
        if p.start < SECTOR {
            return Err(MbrError::OverlapsMbr { number });
        }
        let end_sector = (p.start / SECTOR).checked_add(p.size / SECTOR);
        if end_sector.is_none_or(|end| end > MAX_SECTORS) {
            return Err(MbrError::BeyondLimit { number });
        }
    }
    for (i, a) in parts.iter().enumerate() {
        for (j, b) in parts.iter().enumerate().skip(i + 1) {
            if a.start < b.start + b.size && b.start < a.start + a.size {
                return Err(MbrError::Overlap { a: i + 1, b: j + 1 });
            }
        }
    }
    Ok(())
}

/// Assumes `validate` passed, so the sector numbers fit in 32 bits.
fn entry(part: &Partition) -> [u8; ENTRY_LEN] {
    let first = part.start / SECTOR;
    let count = part.size / SECTOR;
    let last = first + count - 1;
    let mut e = [0u8; ENTRY_LEN];
    e[0] = if part.bootable { 0x80 } else { 0x00 };
    e[1..4].copy_from_slice(&chs(first));
    e[4] = part.kind.type_byte();
    e[5..8].copy_from_slice(&chs(last));
    e[8..12].copy_from_slice(&(first as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(count as u32).to_le_bytes());
    e
}

/// Nothing reads CHS any more, but old BIOSes and some checkers compare it
/// with the LBA fields, so it is filled in the conventional way rather than
/// left zero.
fn chs(lba: u64) -> [u8; 3] {
    let cylinder = lba / (HEADS * SECTORS_PER_TRACK);
    if cylinder > 1023 {
        return CHS_BEYOND;
    }
    let head = (lba / SECTORS_PER_TRACK) % HEADS;
    let sector = lba % SECTORS_PER_TRACK + 1;
    // Bits 8-9 of the cylinder ride in the top of the sector byte.
    [
        head as u8,
        (sector as u8) | ((cylinder >> 2) as u8 & 0xC0),
        cylinder as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn pi_layout() -> [Partition; 2] {
        [
            Partition {
                start: 4 * MIB,
                size: 512 * MIB,
                kind: PartKind::Fat32Lba,
                bootable: false,
            },
            Partition {
                start: 516 * MIB,
                size: 2048 * MIB,
                kind: PartKind::Linux,
                bootable: false,
            },
        ]
    }

    #[test]
    fn encodes_a_raspberry_pi_layout() {
        let mbr = encode(0x1234_ABCD, &pi_layout()).unwrap();
        assert_eq!(&mbr[..440], &[0u8; 440][..]);
        assert_eq!(&mbr[440..444], &[0xCD, 0xAB, 0x34, 0x12]);
        assert_eq!(&mbr[444..446], &[0, 0]);

        // Sector 8192 is cylinder 0, head 130, sector 3; the last one,
        // 1056767, is cylinder 65, head 199, sector 6 (as sfdisk writes).
        let p1 = &mbr[446..462];
        assert_eq!(p1[0], 0x00);
        assert_eq!(&p1[1..4], &[130, 3, 0]);
        assert_eq!(p1[4], 0x0C);
        assert_eq!(&p1[5..8], &[199, 6, 65]);
        assert_eq!(&p1[8..12], &8192u32.to_le_bytes());
        assert_eq!(&p1[12..16], &(1024 * 1024u32).to_le_bytes());

        let p2 = &mbr[462..478];
        assert_eq!(p2[4], 0x83);
        assert_eq!(&p2[8..12], &(516 * 2048u32).to_le_bytes());
        assert_eq!(&p2[12..16], &(2048 * 2048u32).to_le_bytes());

        assert_eq!(&mbr[478..510], &[0u8; 32][..]);
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
    }

    #[test]
    fn chs_packs_high_cylinder_bits() {
        // Cylinder 1000 (0x3E8), head 254, sector 63.
        let lba = 1000 * 255 * 63 + 254 * 63 + 62;
        assert_eq!(chs(lba), [254, 63 | 0xC0, 0xE8]);
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(1024 * 255 * 63), CHS_BEYOND);
    }

    #[test]
    fn bootable_flag() {
        let mut parts = pi_layout();
        parts[0].bootable = true;
        let mbr = encode(1, &parts).unwrap();
        assert_eq!(mbr[446], 0x80);
        assert_eq!(mbr[462], 0x00);
    }

    #[test]
    fn empty_table_is_allowed() {
        let mbr = encode(7, &[]).unwrap();
        assert_eq!(&mbr[446..510], &[0u8; 64][..]);
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
    }

    fn part(start: u64, size: u64) -> Partition {
        Partition {
            start,
            size,
            kind: PartKind::Linux,
            bootable: false,
        }
    }

    #[test]
    fn rejects_bad_tables() {
        let err = |parts: &[Partition]| encode(1, parts).unwrap_err();
        assert!(matches!(err(&[part(MIB, MIB); 5]), MbrError::TooMany(5)));
        assert!(matches!(
            err(&[part(MIB + 1, MIB)]),
            MbrError::Misaligned { number: 1, .. }
        ));
        assert!(matches!(
            err(&[part(MIB, MIB), part(4 * MIB, 100)]),
            MbrError::Misaligned { number: 2, .. }
        ));
        assert!(matches!(
            err(&[part(MIB, 0)]),
            MbrError::Empty { number: 1 }
        ));
        assert!(matches!(
            err(&[part(0, MIB)]),
            MbrError::OverlapsMbr { number: 1 }
        ));
        assert!(matches!(
            err(&[part(MIB, MIB), part(MIB + MIB / 2, MIB)]),
            MbrError::Overlap { a: 1, b: 2 }
        ));
        // Order in the table does not hide an overlap.
        assert!(matches!(
            err(&[part(10 * MIB, MIB), part(2 * MIB, 9 * MIB)]),
            MbrError::Overlap { a: 1, b: 2 }
        ));
        let two_tib = MAX_SECTORS * SECTOR;
        assert!(matches!(
            err(&[part(two_tib - MIB, 2 * MIB)]),
            MbrError::BeyondLimit { number: 1 }
        ));
        assert!(matches!(
            err(&[part(u64::MAX - 511, 512)]),
            MbrError::BeyondLimit { number: 1 }
        ));
        assert!(matches!(
            encode(0, &[part(MIB, MIB)]),
            Err(MbrError::ZeroDiskId)
        ));
    }

    #[test]
    fn the_last_addressable_sector_is_allowed() {
        let two_tib = MAX_SECTORS * SECTOR;
        let mbr = encode(1, &[part(two_tib - MIB, MIB)]).unwrap();
        assert_eq!(&mbr[446 + 12..446 + 16], &2048u32.to_le_bytes());
        assert_eq!(&mbr[446 + 8..446 + 12], &(u32::MAX - 2047).to_le_bytes());
    }

    #[test]
    fn adjacent_partitions_do_not_overlap() {
        encode(1, &[part(MIB, MIB), part(2 * MIB, MIB)]).unwrap();
    }

    #[test]
    fn write_refuses_partitions_past_the_image() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(8 * MIB).unwrap();
        let err = write(&f, 1, &[part(MIB, 8 * MIB)]).unwrap_err();
        assert!(matches!(err, MbrError::PastEndOfImage { number: 1, .. }));
        let mut sector = [0xFFu8; 512];
        f.read_exact_at(&mut sector, 0).unwrap();
        assert_eq!(sector, [0u8; 512], "nothing written");
    }
}

#[cfg(test)]
#[path = "mbr_tests.rs"]
mod tool_tests;
