//! Positioned writes into one partition of the image file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Where a filesystem builder writes: `len` bytes at `base` of the image file. The file is
/// new and sparse, so regions the builder reports as zeros are left as holes.
pub struct WindowSink<'a> {
    file: &'a File,
    base: u64,
    len: u64,
}

impl<'a> WindowSink<'a> {
    pub fn new(file: &'a File, base: u64, len: u64) -> WindowSink<'a> {
        WindowSink { file, base, len }
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(io::Error::other(format!(
                "a write at {offset}+{len} falls outside the partition of {} bytes",
                self.len
            )));
        }
        Ok(())
    }
}

impl mkext4::sink::RegionSink for WindowSink<'_> {
    fn data(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.check(offset, bytes.len() as u64)?;
        self.file.write_all_at(bytes, self.base + offset)
    }

    fn zeros(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)
    }
}
