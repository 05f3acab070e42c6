//! Write-back block cache between fatfs and the window.
//!
//! fatfs 0.3 moves data at most one cluster per call and, for every cluster
//! it allocates, seeks to the FAT to read and patch 4-byte entries in both
//! copies. Unbuffered, a 30 MB kernel costs tens of thousands of syscalls.
//! `fscommon::BufStream` does not help: it drops its buffer on every seek,
//! and fatfs seeks between FAT and data all the time. Whole blocks held in
//! memory absorb both patterns; contiguous dirty blocks go out as one write.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

use super::window::seek_target;

const BLOCK_SIZE: u64 = 64 * 1024;
/// Validity is tracked per 512-byte sector, 128 of them per block.
const SECTOR: usize = 512;
/// 16 MiB: large enough that a kernel image causes only a few write-outs.
const MAX_BLOCKS: usize = 256;
/// Caps the temporary buffer used to merge neighbouring blocks.
const MAX_MERGED_WRITE: usize = 4 * 1024 * 1024;

struct Block {
    data: Vec<u8>,
    /// Bit i set: sector i of `data` holds the current contents. Sectors
    /// that writes cover entirely need no read from the disk, so streaming
    /// a file in cluster-sized writes never reads at all.
    valid: u128,
    dirty: bool,
}

/// Bits for the sectors touched by bytes `start..end` of a block.
fn touched(start: usize, end: usize) -> u128 {
    span(start / SECTOR, end.div_ceil(SECTOR))
}

/// Bits for the sectors that bytes `start..end` cover completely; a short
/// final sector counts as covered when the range reaches the block's end.
fn covered(start: usize, end: usize, block_len: usize) -> u128 {
    let last = if end == block_len {
        end.div_ceil(SECTOR)
    } else {
        end / SECTOR
    };
    span(start.div_ceil(SECTOR), last)
}

fn span(first: usize, last: usize) -> u128 {
    if first >= last {
        return 0;
    }
    let ones = if last - first >= 128 {
        u128::MAX
    } else {
        (1u128 << (last - first)) - 1
    };
    ones << first
}

pub(crate) struct BlockCache<D> {
    disk: D,
    len: u64,
    pos: u64,
    blocks: BTreeMap<u64, Block>,
}

impl<D: Read + Write + Seek> BlockCache<D> {
    pub fn new(mut disk: D) -> io::Result<Self> {
        let len = disk.seek(SeekFrom::End(0))?;
        Ok(Self {
            disk,
            len,
            pos: 0,
            blocks: BTreeMap::new(),
        })
    }

    fn block_len(&self, index: u64) -> usize {
        (self.len - index * BLOCK_SIZE).min(BLOCK_SIZE) as usize
    }

    /// The cached block, with at least the sectors in `needed` valid.
    fn block(&mut self, index: u64, needed: u128) -> io::Result<&mut Block> {
        if !self.blocks.contains_key(&index) && self.blocks.len() >= MAX_BLOCKS {
            // Dropping everything is cruder than LRU, but the working set is
            // a handful of FAT blocks that are cheap to read back, while the
            // bulk is file data that is written once and never revisited.
            self.sync()?;
            self.blocks.clear();
        }
        let len = self.block_len(index);
        let block = self.blocks.entry(index).or_insert_with(|| Block {
            data: vec![0; len],
            valid: 0,
            dirty: false,
        });
        if needed & !block.valid != 0 {
            fill(&mut self.disk, index, block)?;
        }
        Ok(block)
    }

    /// Writes every dirty block to the disk.
    pub fn sync(&mut self) -> io::Result<()> {
        let dirty: Vec<u64> = self
            .blocks
            .iter()
            .filter(|(_, b)| b.dirty)
            .map(|(&i, _)| i)
            .collect();
        let mut run: Vec<u64> = Vec::new();
        let mut run_bytes = 0;
        for index in dirty {
            let len = self.block_len(index);
            let contiguous = run.last().is_some_and(|&last| last + 1 == index);
            if !run.is_empty() && (!contiguous || run_bytes + len > MAX_MERGED_WRITE) {
                self.write_run(&run)?;
                run.clear();
                run_bytes = 0;
            }
            run.push(index);
            run_bytes += len;
        }
        if !run.is_empty() {
            self.write_run(&run)?;
        }
        self.disk.flush()
    }

    fn write_run(&mut self, run: &[u64]) -> io::Result<()> {
        let mut merged = Vec::new();
        for &index in run {
            if let Some(block) = self.blocks.get_mut(&index) {
                // Sectors never written nor read must not go out as zeros
                // over whatever the disk holds there.
                if block.valid != span(0, block.data.len().div_ceil(SECTOR)) {
                    fill(&mut self.disk, index, block)?;
                }
                merged.extend_from_slice(&block.data);
            }
        }
        self.disk.seek(SeekFrom::Start(run[0] * BLOCK_SIZE))?;
        self.disk.write_all(&merged)?;
        for index in run {
            if let Some(b) = self.blocks.get_mut(index) {
                b.dirty = false;
            }
        }
        Ok(())
    }
}

/// Reads the block from disk into the sectors not yet valid.
fn fill<D: Read + Seek>(disk: &mut D, index: u64, block: &mut Block) -> io::Result<()> {
    let mut fresh = vec![0; block.data.len()];
    disk.seek(SeekFrom::Start(index * BLOCK_SIZE))?;
    disk.read_exact(&mut fresh)?;
    for (i, (mine, theirs)) in block
        .data
        .chunks_mut(SECTOR)
        .zip(fresh.chunks(SECTOR))
        .enumerate()
    {
        if block.valid & (1 << i) == 0 {
            mine.copy_from_slice(theirs);
        }
    }
    block.valid = span(0, block.data.len().div_ceil(SECTOR));
    Ok(())
}

impl<D: Read + Write + Seek> Read for BlockCache<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let index = self.pos / BLOCK_SIZE;
        let start = (self.pos % BLOCK_SIZE) as usize;
        let n = buf.len().min(self.block_len(index) - start);
        let block = self.block(index, touched(start, start + n))?;
        buf[..n].copy_from_slice(&block.data[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: Read + Write + Seek> Write for BlockCache<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Checked here too: a cached write would otherwise only fail much later, at sync.
        crate::image::sink::check_within(self.pos, buf.len() as u64, self.len, "volume")?;
        let mut rest = buf;
        while !rest.is_empty() {
            let index = self.pos / BLOCK_SIZE;
            let start = (self.pos % BLOCK_SIZE) as usize;
            let block_len = self.block_len(index);
            let end = start + rest.len().min(block_len - start);
            let all = touched(start, end);
            // Only sectors the write covers partly need their old contents.
            let partly = all & !covered(start, end, block_len);
            let block = self.block(index, partly)?;
            block.data[start..end].copy_from_slice(&rest[..end - start]);
            block.valid |= all;
            block.dirty = true;
            self.pos += (end - start) as u64;
            rest = &rest[end - start..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sync()
    }
}

impl<D> Seek for BlockCache<D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = seek_target(self.pos, self.len, to)?;
        Ok(self.pos)
    }
}

/// The handle fatfs owns as its disk, while `BootFs` keeps a clone.
///
/// fatfs 0.3 has no way to take the disk back out of a `FileSystem`
/// (`unmount` consumes it), so without a second handle the last dirty blocks
/// could only be written from `Drop`, where errors are lost. `Rc` suffices:
/// fatfs's `FileSystem` is not `Send` anyway.
pub(crate) struct SharedDisk<D>(Rc<RefCell<BlockCache<D>>>);

impl<D> Clone for SharedDisk<D> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<D: Read + Write + Seek> SharedDisk<D> {
    pub fn new(disk: D) -> io::Result<Self> {
        Ok(Self(Rc::new(RefCell::new(BlockCache::new(disk)?))))
    }

    fn lock(&self) -> io::Result<RefMut<'_, BlockCache<D>>> {
        // fatfs never re-enters its disk, and `BootFs` only touches its own
        // handle between fatfs calls, so this cannot fail in practice; an
        // error is still kinder than a panic if that ever changes.
        self.0
            .try_borrow_mut()
            .map_err(|_| io::Error::other("block cache is already in use"))
    }

    pub fn sync(&self) -> io::Result<()> {
        self.lock()?.sync()
    }
}

impl<D: Read + Write + Seek> Read for SharedDisk<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.lock()?.read(buf)
    }
}

impl<D: Read + Write + Seek> Write for SharedDisk<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Deliberately not a sync: fatfs flushes its disk whenever any `File`
        // is dropped, including the clones it makes internally for each
        // directory scan, which would defeat the cache. `BootFs::finish`
        // syncs once at the end and reports the error.
        Ok(())
    }
}

impl<D: Read + Write + Seek> Seek for SharedDisk<D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.lock()?.seek(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Counts the calls that would be syscalls on a real window.
    struct Counting {
        inner: Cursor<Vec<u8>>,
        reads: usize,
        writes: usize,
    }

    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            self.inner.read(buf)
        }
    }
    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Counting {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    fn counting(len: usize) -> Counting {
        Counting {
            inner: Cursor::new(vec![0xEE; len]),
            reads: 0,
            writes: 0,
        }
    }

    #[test]
    fn sequential_cluster_writes_are_merged() {
        let len = 8 * 1024 * 1024;
        let mut cache = BlockCache::new(counting(len)).unwrap();
        // Mimic fatfs: 4 KiB of data, then a 4-byte FAT patch, repeated.
        for i in 0..1024u64 {
            cache.seek(SeekFrom::Start(1024 * 1024 + i * 4096)).unwrap();
            cache.write_all(&[i as u8; 4096]).unwrap();
            cache.seek(SeekFrom::Start(4096 + i * 4)).unwrap();
            cache.write_all(&(i as u32).to_le_bytes()).unwrap();
        }
        cache.sync().unwrap();
        let disk = &cache.disk;
        assert!(disk.writes <= 4, "{} writes", disk.writes);
        // Only the FAT block, which is patched 4 bytes at a time, is read.
        assert_eq!(disk.reads, 1);
        let bytes = disk.inner.get_ref();
        assert_eq!(bytes[1024 * 1024 + 4096 * 7], 7);
        assert_eq!(&bytes[4096 + 4 * 9..4096 + 4 * 10], &9u32.to_le_bytes());
        assert_eq!(bytes[0], 0xEE, "untouched bytes were read, not zeroed");
    }

    #[test]
    fn eviction_keeps_data() {
        let len = (MAX_BLOCKS as u64 + 10) * BLOCK_SIZE;
        let mut cache = BlockCache::new(counting(len as usize)).unwrap();
        for i in 0..(MAX_BLOCKS as u64 + 10) {
            cache.seek(SeekFrom::Start(i * BLOCK_SIZE + 3)).unwrap();
            cache.write_all(&[i as u8 ^ 0x55]).unwrap();
        }
        for i in 0..(MAX_BLOCKS as u64 + 10) {
            cache.seek(SeekFrom::Start(i * BLOCK_SIZE + 2)).unwrap();
            let mut two = [0; 2];
            cache.read_exact(&mut two).unwrap();
            assert_eq!(two, [0xEE, i as u8 ^ 0x55]);
        }
    }

    #[test]
    fn refuses_writes_past_the_end() {
        let mut cache = BlockCache::new(counting(100)).unwrap();
        cache.seek(SeekFrom::Start(98)).unwrap();
        assert!(cache.write(&[1, 2, 3]).is_err());
        cache.write_all(&[1, 2]).unwrap();
        let mut b = [0; 1];
        assert_eq!(cache.read(&mut b).unwrap(), 0);
    }
}
