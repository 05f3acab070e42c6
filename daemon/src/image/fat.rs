//! A FAT32 boot filesystem written straight into a window of an image file.
//!
//! Nothing is mounted: fatfs works on a [`Window`] of the image through a
//! write-back block cache, and [`BootFs::finish`] writes the cache out.

mod cache;
mod clock;
mod dotfix;
mod names;
mod window;

pub use window::Window;

use std::fs::File;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};

use fatfs::{DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions};

use cache::SharedDisk;
use clock::Pin;

type Disk = SharedDisk<Window<File>>;
type Fs = FileSystem<Disk>;
type FatDir<'a> = fatfs::Dir<'a, Disk>;
type FatEntry<'a> = fatfs::DirEntry<'a, Disk>;

/// The Raspberry Pi firmware only reads FAT with 512-byte sectors.
const SECTOR: u64 = 512;
/// FAT32 is defined by its cluster count, not by a flag: with fewer
/// clusters every implementation reads the volume as FAT16.
const FAT32_MIN_CLUSTERS: u64 = 65_525;
/// fatfs 0.3's FAT32 layout; `format` checks what fatfs really wrote.
const RESERVED_SECTORS: u64 = 8;
const FATS: u64 = 2;
/// FAT32 keeps file sizes in 32 bits.
const MAX_FILE_SIZE: u64 = u32::MAX as u64;
const COPY_CHUNK: u64 = 1024 * 1024;
/// Used by [`BootFs::format`]; `vol_id` only matters to tools that mount by
/// `UUID=`, and a fixed value keeps images reproducible.
pub const DEFAULT_VOLUME_ID: u32 = 0x5049_4254;

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("not enough space: need {needed} bytes, {available} free")]
    NoSpace { needed: u64, available: u64 },
    #[error("bad name: {0}")]
    BadName(String),
    #[error("bad volume label: {0}")]
    BadLabel(String),
    /// Two names that FAT, being case-insensitive, treats as one.
    #[error("name clash (FAT ignores case): {0}")]
    Clash(String),
    #[error("already exists: {0}")]
    Exists(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("not a directory: {0}")]
    NotADirectory(String),
    #[error("is a directory: {0}")]
    IsADirectory(String),
    #[error("{len} bytes is too small for FAT32 with 512-byte sectors; the minimum is {min}")]
    TooSmall { len: u64, min: u64 },
    #[error("{len} bytes is too large for FAT32 with 512-byte sectors; the maximum is {max}")]
    TooLarge { len: u64, max: u64 },
    #[error("volume offset {0} is not a multiple of 512")]
    Misaligned(u64),
    #[error("volume at {offset}+{len} ends past the end of the {file_len}-byte image")]
    OutsideImage {
        offset: u64,
        len: u64,
        file_len: u64,
    },
    #[error("{path}: {size} bytes exceeds FAT's file size limit of 4 GiB - 1")]
    FileTooLarge { path: String, size: u64 },
    #[error("{path}: reader ended after {actual} bytes, expected {expected}")]
    ShortRead {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// A FAT32 volume being filled. Call [`finish`](Self::finish) at the end:
/// dropping it instead discards whatever is still in the cache.
///
/// Not `Send`: fatfs 0.3 keeps its time and code-page providers as plain
/// `&'static dyn` references. Build each filesystem on a single thread.
pub struct BootFs {
    // Declared before `disk` so that, if dropped, fatfs unmounts into the
    // cache while it still exists.
    fs: Fs,
    disk: Disk,
}

impl BootFs {
    /// Formats `len` bytes at `offset` of `file` as FAT32 labelled `label`,
    /// then opens it. The file must already be at least `offset + len` long.
    ///
    /// Clusters are 4 KiB where the volume is large enough to still have
    /// 65525 of them, and smaller otherwise (down to one 512-byte sector per
    /// cluster, below which [`FatError::TooSmall`] gives the minimum size).
    /// Volumes over 8 GiB get larger clusters, as Microsoft's defaults do.
    /// A trailing partial sector, and in rare cases one more sector that
    /// would push the cluster count just below the FAT32 limit, stays unused.
    pub fn format(file: &File, offset: u64, len: u64, label: &str) -> Result<BootFs, FatError> {
        Self::format_with_volume_id(file, offset, len, label, DEFAULT_VOLUME_ID)
    }

    /// [`format`](Self::format) with a chosen volume serial number (what
    /// Linux shows as the `XXXX-XXXX` filesystem UUID).
    pub fn format_with_volume_id(
        file: &File,
        offset: u64,
        len: u64,
        label: &str,
        volume_id: u32,
    ) -> Result<BootFs, FatError> {
        let label = names::volume_label(label)?;
        if !offset.is_multiple_of(SECTOR) {
            return Err(FatError::Misaligned(offset));
        }
        let max = u64::from(u32::MAX) * SECTOR;
        if len > max {
            return Err(FatError::TooLarge { len, max });
        }
        let file_len = file.metadata()?.len();
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(FatError::OutsideImage {
                offset,
                len,
                file_len,
            });
        }
        let (sectors, cluster) = layout(len / SECTOR).ok_or(FatError::TooSmall {
            len,
            min: min_fat32_len(),
        })?;

        let disk = SharedDisk::new(Window::new(file.try_clone()?, offset, sectors * SECTOR)?)?;
        // The casts are exact: `layout` returns at most `u32::MAX` sectors
        // and clusters of at most 32 KiB.
        let options = FormatVolumeOptions::new()
            .bytes_per_sector(SECTOR as u16)
            .total_sectors(sectors as u32)
            .bytes_per_cluster(cluster as u32)
            .fat_type(FatType::Fat32)
            .fats(FATS as u8)
            .heads(255)
            .sectors_per_track(63)
            .volume_id(volume_id)
            .volume_label(label);
        fatfs::format_volume(disk.clone(), options)?;
        set_hidden_sectors(&mut disk.clone(), offset / SECTOR)?;

        let mut fs_disk = disk.clone();
        fs_disk.seek(SeekFrom::Start(0))?;
        let fs = FileSystem::new(fs_disk, FsOptions::new().time_provider(&clock::CLOCK))?;
        let stats = fs.stats()?;
        if fs.fat_type() != FatType::Fat32
            || u64::from(stats.cluster_size()) != cluster
            || u64::from(stats.total_clusters()) < FAT32_MIN_CLUSTERS
        {
            return Err(FatError::Io(io::Error::other(format!(
                "fatfs laid out {:?} with {} clusters of {} bytes; expected FAT32 with {cluster}-byte clusters",
                fs.fat_type(),
                stats.total_clusters(),
                stats.cluster_size()
            ))));
        }
        Ok(BootFs { fs, disk })
    }

    /// Creates a directory, and any missing parents, like `mkdir -p`.
    ///
    /// Parents created on the way get the same time. A directory that
    /// already exists under exactly this name is left as it is.
    ///
    /// fatfs restamps a directory whenever it adds an entry to it, with the
    /// time of the call doing so; a directory therefore ends up with the
    /// time of the last file or directory created in it, not `mtime_unix`.
    /// fatfs 0.3 offers no way to set a directory's time afterwards.
    pub fn mkdir(&mut self, path: &str, mtime_unix: i64) -> Result<(), FatError> {
        let parts = names::components(path)?;
        let _pin = Pin::new(clock::dos_time(mtime_unix));
        let mut created = false;
        let result = make_dirs(&self.fs, &parts, &mut created);
        if created {
            // Also after a failure part-way, so that no directory is left in
            // fatfs's shape; done while the new ones are still empty, so the
            // result is exactly what mkfs-style tools produce.
            dotfix::fix_dot_entries(&mut self.disk.clone())?;
        }
        result
    }

    /// Writes a new file from a reader that yields exactly `size` bytes.
    ///
    /// The parent directory must exist. Only `size` bytes are read, so the
    /// reader may be a longer stream. Nothing is left behind on failure.
    pub fn write_file(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        mtime_unix: i64,
    ) -> Result<(), FatError> {
        write_into(&self.fs, path, data, size, clock::dos_time(mtime_unix))
    }

    /// Copies a file already written to a new path, keeping its time; this
    /// is how hard links are represented, as FAT has none.
    pub fn copy_within(&mut self, src: &str, dst: &str) -> Result<(), FatError> {
        let (dir, name) = parent_of(&self.fs, src)?;
        let entry = match find(&dir, name)? {
            Found::Exact(e) if e.is_dir() => return Err(FatError::IsADirectory(src.into())),
            Found::Exact(e) => e,
            Found::Folded(old) => {
                return Err(FatError::NotFound(format!(
                    "{src} (there is {old:?}, which differs in case)"
                )));
            }
            Found::Missing => return Err(FatError::NotFound(src.into())),
        };
        let mut reader = entry.to_file();
        write_into(&self.fs, dst, &mut reader, entry.len(), entry.modified())
    }

    /// Bytes available for file data (whole free clusters).
    #[cfg(test)]
    pub fn free_bytes(&self) -> Result<u64, FatError> {
        let stats = self.fs.stats()?;
        Ok(u64::from(stats.free_clusters()) * u64::from(stats.cluster_size()))
    }

    #[cfg(test)]
    pub fn cluster_size(&self) -> u64 {
        cluster_size(&self.fs)
    }

    /// Writes everything out and returns the bytes in allocated clusters
    /// (file data, directories including the root; not the FATs).
    pub fn finish(self) -> Result<u64, FatError> {
        let stats = self.fs.stats()?;
        let used = u64::from(stats.total_clusters() - stats.free_clusters())
            * u64::from(stats.cluster_size());
        let BootFs { fs, disk } = self;
        fs.unmount()?;
        disk.sync()?;
        Ok(used)
    }
}

fn make_dirs(fs: &Fs, parts: &[&str], created: &mut bool) -> Result<(), FatError> {
    let cluster = cluster_size(fs);
    let mut dir = fs.root_dir();
    for (i, name) in parts.iter().enumerate() {
        let so_far = parts[..=i].join("/");
        dir = match find(&dir, name)? {
            Found::Exact(e) if e.is_dir() => e.to_dir(),
            Found::Exact(_) => return Err(FatError::NotADirectory(so_far)),
            Found::Folded(old) => return Err(clash(&so_far, &old)),
            Found::Missing => {
                // fatfs allocates the new directory's cluster before the
                // parent's entry; if the parent then cannot grow, that
                // cluster is lost (fsck reports it). Insisting on room for
                // both avoids this, at the price of refusing a directory
                // that would just have fitted.
                let needed = 2 * cluster;
                let available = u64::from(fs.stats()?.free_clusters()) * cluster;
                if available < needed {
                    return Err(FatError::NoSpace { needed, available });
                }
                *created = true;
                dir.create_dir(name).map_err(|e| classify(e, fs, needed))?
            }
        };
    }
    Ok(())
}

fn write_into(
    fs: &Fs,
    path: &str,
    data: &mut dyn Read,
    size: u64,
    at: DateTime,
) -> Result<(), FatError> {
    if size > MAX_FILE_SIZE {
        return Err(FatError::FileTooLarge {
            path: path.into(),
            size,
        });
    }
    let (dir, name) = parent_of(fs, path)?;
    match find(&dir, name)? {
        Found::Exact(_) => return Err(FatError::Exists(path.into())),
        Found::Folded(old) => return Err(clash(path, &old)),
        Found::Missing => {}
    }
    // Checked up front so that the common failure leaves nothing to undo;
    // a directory that must grow can still run out later, see `classify`.
    let cluster = cluster_size(fs);
    let needed = size.div_ceil(cluster) * cluster;
    let available = u64::from(fs.stats()?.free_clusters()) * cluster;
    if needed > available {
        return Err(FatError::NoSpace { needed, available });
    }

    let _pin = Pin::new(at);
    let mut file = dir
        .create_file(name)
        .map_err(|e| classify(e, fs, needed + cluster))?;
    let written = copy_exact(&mut file, data, size, path).and_then(|()| Ok(file.flush()?));
    if let Err(err) = written {
        drop(file);
        // A truncated kernel that looks complete is worse than none. If the
        // removal fails too, the first error is the one worth reporting.
        let _ = dir.remove(name);
        return Err(match err {
            FatError::Io(e) => classify(e, fs, needed),
            other => other,
        });
    }
    Ok(())
}

fn copy_exact(
    out: &mut impl Write,
    data: &mut dyn Read,
    size: u64,
    path: &str,
) -> Result<(), FatError> {
    let mut buf = vec![0; size.min(COPY_CHUNK) as usize];
    let mut done = 0;
    while done < size {
        let want = (size - done).min(buf.len() as u64) as usize;
        let n = match data.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(FatError::ShortRead {
                    path: path.into(),
                    expected: size,
                    actual: done,
                });
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        out.write_all(&buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// fatfs 0.3 reports a full volume only as `ErrorKind::Other` with this
/// text; matching it is the one way to tell it apart from real I/O errors.
fn classify(err: io::Error, fs: &Fs, needed: u64) -> FatError {
    if err.kind() == ErrorKind::Other && err.to_string() == "No space left on device" {
        let available = fs
            .stats()
            .map(|s| u64::from(s.free_clusters()) * u64::from(s.cluster_size()))
            .unwrap_or(0);
        return FatError::NoSpace { needed, available };
    }
    FatError::Io(err)
}

fn cluster_size(fs: &Fs) -> u64 {
    u64::from(fs.cluster_size())
}

fn clash(path: &str, existing: &str) -> FatError {
    FatError::Clash(format!(
        "{path:?} is the same to FAT as existing {existing:?}"
    ))
}

enum Found<'a> {
    Exact(FatEntry<'a>),
    /// Holds the existing entry's long name.
    Folded(String),
    Missing,
}

fn find<'a>(dir: &FatDir<'a>, name: &str) -> Result<Found<'a>, FatError> {
    for entry in dir.iter() {
        let entry = entry?;
        let long = entry.file_name();
        if long == name {
            return Ok(Found::Exact(entry));
        }
        // fatfs's lookup also matches each file's generated 8.3 alias
        // ("VC4-KM~1.DTB"); a new name equal to one would make create_file
        // silently open that other file.
        if names::same_to_fat(&long, name) || names::same_to_fat(&entry.short_file_name(), name) {
            return Ok(Found::Folded(long));
        }
    }
    Ok(Found::Missing)
}

/// Opens the existing parent directory of `path`; returns it and the last
/// component.
fn parent_of<'a, 'p>(fs: &'a Fs, path: &'p str) -> Result<(FatDir<'a>, &'p str), FatError> {
    let parts = names::components(path)?;
    let Some((name, parents)) = parts.split_last() else {
        return Err(FatError::BadName(format!("{path:?}: empty path")));
    };
    let mut dir = fs.root_dir();
    for (i, part) in parents.iter().enumerate() {
        let so_far = parents[..=i].join("/");
        dir = match find(&dir, part)? {
            Found::Exact(e) if e.is_dir() => e.to_dir(),
            Found::Exact(_) => return Err(FatError::NotADirectory(so_far)),
            Found::Folded(old) => return Err(clash(&so_far, &old)),
            Found::Missing => return Err(FatError::NotFound(so_far)),
        };
    }
    Ok((dir, name))
}

/// Clusters fatfs lays out for a FAT32 volume of `sectors` sectors with
/// `per_cluster` sectors per cluster: the FAT must hold an entry for every
/// data cluster plus two reserved ones, and the FATs eat into the data area.
/// Same arithmetic as fatfs 0.3, so the choice is made before formatting.
fn fat32_clusters(sectors: u64, per_cluster: u64) -> u64 {
    let after_reserved = sectors.saturating_sub(RESERVED_SECTORS);
    let entries_per_sector = SECTOR / 4;
    let per_fat =
        (after_reserved + 2 * per_cluster).div_ceil(per_cluster * entries_per_sector + FATS);
    after_reserved.saturating_sub(FATS * per_fat) / per_cluster
}

/// Picks (sectors to use, cluster bytes) for a window of `sectors`.
fn layout(sectors: u64) -> Option<(u64, u64)> {
    const GIB: u64 = 1 << 30;
    let bytes = sectors * SECTOR;
    // Microsoft's FAT32 defaults, capped at 32 KiB: larger clusters are not
    // read by every implementation.
    let mut cluster = match bytes {
        b if b <= 8 * GIB => 4096,
        b if b <= 16 * GIB => 8192,
        b if b <= 32 * GIB => 16384,
        _ => 32768,
    };
    loop {
        // One sector fewer can help because the cluster count is not
        // monotonic in the size: a sector that makes both FATs one sector
        // longer costs a cluster. This keeps every size at or above
        // `min_fat32_len` formattable.
        for used in [sectors, sectors.saturating_sub(1)] {
            if fat32_clusters(used, cluster / SECTOR) >= FAT32_MIN_CLUSTERS {
                return Some((used, cluster));
            }
        }
        if cluster == SECTOR {
            return None;
        }
        cluster /= 2;
    }
}

/// The smallest window, in bytes, that can hold FAT32 (about 32.5 MiB).
pub fn min_fat32_len() -> u64 {
    // A volume needs at least the clusters plus reserved sectors, and the
    // two FATs add only about 1000 sectors more, so this scan is short.
    let mut sectors = FAT32_MIN_CLUSTERS + RESERVED_SECTORS;
    while fat32_clusters(sectors, 1) < FAT32_MIN_CLUSTERS {
        sectors += 1;
    }
    sectors * SECTOR
}

/// Records where the volume starts on the disk (the BPB "hidden sectors"),
/// in the boot sector and its backup, as mkfs.fat does for a partition and
/// as Raspberry Pi OS images have it; fatfs 0.3 always writes 0. Linux
/// ignores the field, but boot code that locates the volume by it does not.
fn set_hidden_sectors(disk: &mut Disk, start_sector: u64) -> io::Result<()> {
    // A start beyond 32 bits cannot be described by an MBR either, and 0 is
    // the conventional "unknown".
    let value = u32::try_from(start_sector).unwrap_or(0).to_le_bytes();
    let mut backup = [0; 2];
    disk.seek(SeekFrom::Start(0x32))?;
    disk.read_exact(&mut backup)?;
    for sector in [0, u64::from(u16::from_le_bytes(backup))] {
        disk.seek(SeekFrom::Start(sector * SECTOR + 0x1C))?;
        disk.write_all(&value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_fat32_rules() {
        let mib = 1024 * 1024 / SECTOR;
        // 256 MiB cannot reach 65525 clusters of 4 KiB, so 2 KiB it is.
        assert_eq!(layout(256 * mib).map(|l| l.1), Some(2048));
        assert_eq!(layout(512 * mib).map(|l| l.1), Some(4096));
        assert_eq!(layout(64 * mib).map(|l| l.1), Some(512));
        assert_eq!(layout(32 * mib), None);
        assert_eq!(layout(20 * 1024 * mib).map(|l| l.1), Some(16384));
    }

    #[test]
    fn every_size_from_the_minimum_up_is_formattable() {
        let min = min_fat32_len() / SECTOR;
        assert!(layout(min - 1).is_none());
        for sectors in min..min + 200_000 {
            let (used, cluster) = layout(sectors).expect("formattable");
            assert!(used <= sectors && sectors - used <= 1);
            assert!(fat32_clusters(used, cluster / SECTOR) >= FAT32_MIN_CLUSTERS);
        }
    }
}

#[cfg(test)]
#[path = "fat/tool_tests.rs"]
mod tool_tests;
