//! Repairs the `.` and `..` entries of directories made by fatfs 0.3.6.
//!
//! fatfs 0.3.6, the newest release on crates.io, gives `.` and `..` long
//! names of their own (rafalh/rust-fatfs#117; fixed upstream after the last
//! release), so a new directory starts with four slots:
//! `LFN(".")`, `.`, `LFN("..")`, `..`. FAT requires `.` and `..` in the
//! first two slots; fsck.fat "repairs" the result by renaming them and
//! truncating the root directory, and firmware may fail to walk such paths.
//! fatfs also points `..` of a top-level directory at the root's cluster
//! where FAT wants 0. This walks the finished tree on disk and rewrites the
//! first slots of every directory into the standard shape.

use std::io::{self, Read, Seek, SeekFrom, Write};

const ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0F;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIRECTORY: u8 = 0x10;
const DELETED: u8 = 0xE5;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";
/// FAT32 entries at or above this end a chain (or mark bad clusters).
const CHAIN_END: u32 = 0x0FFF_FFF7;

/// The parts of a FAT32 boot sector needed to find directories.
struct Geometry {
    sector: u64,
    cluster: u64,
    fat_start: u64,
    data_start: u64,
    root: u32,
    clusters: u32,
}

impl Geometry {
    fn read<D: Read + Seek>(disk: &mut D) -> io::Result<Self> {
        let mut bs = [0u8; 512];
        disk.seek(SeekFrom::Start(0))?;
        disk.read_exact(&mut bs)?;
        let u16_at = |at: usize| u64::from(u16::from_le_bytes([bs[at], bs[at + 1]]));
        let u32_at = |at: usize| u32::from_le_bytes([bs[at], bs[at + 1], bs[at + 2], bs[at + 3]]);
        let sector = u16_at(0x0B);
        let reserved = u16_at(0x0E);
        let fats = u64::from(bs[0x10]);
        let per_fat = u64::from(u32_at(0x24));
        let total = u64::from(u32_at(0x20));
        let cluster = sector * u64::from(bs[0x0D]);
        let data_sectors = total.saturating_sub(reserved + fats * per_fat);
        Ok(Self {
            sector,
            cluster,
            fat_start: reserved * sector,
            data_start: (reserved + fats * per_fat) * sector,
            root: u32_at(0x2C),
            clusters: u32::try_from(data_sectors * sector / cluster).unwrap_or(u32::MAX),
        })
    }

    fn offset(&self, cluster: u32) -> u64 {
        self.data_start + u64::from(cluster - 2) * self.cluster
    }

    fn valid(&self, cluster: u32) -> bool {
        cluster >= 2 && cluster - 2 < self.clusters
    }

    fn chain<D: Read + Seek>(&self, disk: &mut D, first: u32) -> io::Result<Vec<u32>> {
        let mut chain = Vec::new();
        let mut next = first;
        // The length bound stops a corrupt, circular chain.
        while self.valid(next) && chain.len() <= self.clusters as usize {
            chain.push(next);
            let mut raw = [0u8; 4];
            disk.seek(SeekFrom::Start(self.fat_start + u64::from(next) * 4))?;
            disk.read_exact(&mut raw)?;
            next = u32::from_le_bytes(raw) & 0x0FFF_FFFF;
            if next >= CHAIN_END {
                break;
            }
        }
        Ok(chain)
    }
}

fn first_cluster(entry: &[u8]) -> u32 {
    let hi = u32::from(u16::from_le_bytes([entry[20], entry[21]]));
    let lo = u32::from(u16::from_le_bytes([entry[26], entry[27]]));
    (hi << 16) | lo
}

fn set_first_cluster(entry: &mut [u8], cluster: u32) {
    entry[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    entry[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
}

/// Fixes every directory below the root; returns how many it changed.
pub(crate) fn fix_dot_entries<D: Read + Write + Seek>(disk: &mut D) -> io::Result<usize> {
    let geo = Geometry::read(disk)?;
    if geo.sector == 0 || geo.cluster == 0 || !geo.valid(geo.root) {
        return Err(io::Error::other("not a FAT32 boot sector"));
    }
    let mut fixed = 0;
    // (directory's first cluster, whether its parent is the root)
    let mut pending = vec![(geo.root, false)];
    let mut seen = 0usize;
    while let Some((dir, parent_is_root)) = pending.pop() {
        seen += 1;
        if seen > geo.clusters as usize {
            return Err(io::Error::other("directory tree has a cycle"));
        }
        let chain = geo.chain(disk, dir)?;
        let mut bytes = vec![0u8; chain.len() * geo.cluster as usize];
        for (i, &c) in chain.iter().enumerate() {
            disk.seek(SeekFrom::Start(geo.offset(c)))?;
            let part = &mut bytes[i * geo.cluster as usize..][..geo.cluster as usize];
            disk.read_exact(part)?;
        }
        if dir != geo.root && normalise(&mut bytes[..geo.cluster as usize], parent_is_root) {
            disk.seek(SeekFrom::Start(geo.offset(dir)))?;
            disk.write_all(&bytes[..geo.cluster as usize])?;
            fixed += 1;
        }
        for entry in bytes.chunks(ENTRY) {
            let (first, attr) = (entry[0], entry[11]);
            if first == 0 {
                break;
            }
            let is_subdir = first != DELETED
                && attr != ATTR_LFN
                && attr & ATTR_VOLUME == 0
                && attr & ATTR_DIRECTORY != 0
                && &entry[..11] != DOT
                && &entry[..11] != DOTDOT;
            if is_subdir && geo.valid(first_cluster(entry)) {
                pending.push((first_cluster(entry), dir == geo.root));
            }
        }
    }
    Ok(fixed)
}

/// Rewrites the first cluster of a directory whose `.` and `..` are in
/// fatfs's four-slot layout. Returns whether anything changed.
fn normalise(cluster: &mut [u8], parent_is_root: bool) -> bool {
    let slot = |i: usize| i * ENTRY..(i + 1) * ENTRY;
    let four_slot = cluster[slot(0)][11] == ATTR_LFN
        && &cluster[slot(1)][..11] == DOT
        && cluster[slot(2)][11] == ATTR_LFN
        && &cluster[slot(3)][..11] == DOTDOT;
    let mut changed = false;
    if four_slot {
        let dot: Vec<u8> = cluster[slot(1)].to_vec();
        let dotdot: Vec<u8> = cluster[slot(3)].to_vec();
        cluster[slot(0)].copy_from_slice(&dot);
        cluster[slot(1)].copy_from_slice(&dotdot);
        // Slots 2 and 3 become free. If entries follow they must stay
        // visible, so the slots are marked deleted rather than zeroed
        // (a zero first byte would end the directory there).
        let more_follow = cluster.get(slot(4)).is_some_and(|e| e[0] != 0);
        for i in [2, 3] {
            cluster[slot(i)].fill(0);
            if more_follow {
                cluster[slot(i)][0] = DELETED;
            }
        }
        changed = true;
    }
    if parent_is_root && &cluster[slot(1)][..11] == DOTDOT && first_cluster(&cluster[slot(1)]) != 0
    {
        set_first_cluster(&mut cluster[slot(1)], 0);
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sfn(name: &[u8; 11], cluster: u32) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(name);
        e[11] = ATTR_DIRECTORY;
        set_first_cluster(&mut e, cluster);
        e
    }

    fn lfn() -> [u8; 32] {
        let mut e = [0xFFu8; 32];
        e[0] = 0x41;
        e[11] = ATTR_LFN;
        e
    }

    fn fatfs_layout(extra: Option<[u8; 32]>) -> Vec<u8> {
        let mut c = Vec::new();
        c.extend_from_slice(&lfn());
        c.extend_from_slice(&sfn(DOT, 0x12_3456));
        c.extend_from_slice(&lfn());
        c.extend_from_slice(&sfn(DOTDOT, 2));
        c.extend_from_slice(&extra.unwrap_or([0; 32]));
        c.resize(512, 0);
        c
    }

    #[test]
    fn empty_directory_gets_the_standard_layout() {
        let mut c = fatfs_layout(None);
        assert!(normalise(&mut c, true));
        assert_eq!(&c[..32], &sfn(DOT, 0x12_3456));
        assert_eq!(&c[32..64], &sfn(DOTDOT, 0));
        assert!(c[64..].iter().all(|&b| b == 0));
        assert!(!normalise(&mut c, true), "idempotent");
    }

    #[test]
    fn later_entries_stay_reachable() {
        let file = sfn(b"README     ", 99);
        let mut c = fatfs_layout(Some(file));
        assert!(normalise(&mut c, false));
        assert_eq!(&c[32..64], &sfn(DOTDOT, 2), "parent is not the root");
        assert_eq!(c[64], DELETED);
        assert_eq!(c[96], DELETED);
        assert_eq!(&c[128..160], &file);
    }
}
