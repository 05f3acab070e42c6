//! Positioned writes into one partition of the image file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Refuses a write of `len` bytes at `offset` that would pass the end of an area of `limit`
/// bytes (`what` names it). All or nothing: a short write would invite a retry loop, and the
/// only writer that gets here is a filesystem builder whose geometry is wrong, which must stop.
pub fn check_within(offset: u64, len: u64, limit: u64, what: &str) -> io::Result<()> {
    if offset.checked_add(len).is_some_and(|end| end <= limit) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("write of {len} bytes at {offset} would pass the end of the {limit}-byte {what}"),
    ))
}

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
        check_within(offset, len, self.len, "partition")
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
