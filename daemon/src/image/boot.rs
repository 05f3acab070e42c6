//! The boot partition's side of the first read: files under the boot directory go into FAT.

use std::io::Read;

use super::fat::{BootFs, FatError};
use super::ImageError;

/// Receives the boot directory's content (paths relative to it, '/'-separated).
pub trait BootFiles {
    fn dir(&mut self, path: &str, mtime: i64) -> Result<(), ImageError>;
    fn file(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        mtime: i64,
    ) -> Result<(), ImageError>;
    /// A hard link: FAT has none, so the file is copied.
    fn link(&mut self, existing: &str, path: &str) -> Result<(), ImageError>;
}

fn fat_error(e: FatError) -> ImageError {
    match e {
        FatError::NoSpace { .. } => ImageError::NoSpace(format!(
            "the boot partition is too small for the boot files ({e}); give a larger boot_size"
        )),
        FatError::Io(io) => ImageError::write("writing the boot partition", io),
        other => ImageError::Boot(other.to_string()),
    }
}

impl BootFiles for BootFs {
    fn dir(&mut self, path: &str, mtime: i64) -> Result<(), ImageError> {
        self.mkdir(path, mtime).map_err(fat_error)
    }

    fn file(
        &mut self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        mtime: i64,
    ) -> Result<(), ImageError> {
        self.write_file(path, data, size, mtime).map_err(fat_error)
    }

    fn link(&mut self, existing: &str, path: &str) -> Result<(), ImageError> {
        self.copy_within(existing, path).map_err(fat_error)
    }
}

/// Where each family keeps the files the firmware reads.
pub fn boot_dir(distro: &str) -> &'static str {
    match distro {
        "arch" => "boot",
        _ => "boot/firmware",
    }
}

/// Flushes the boot partition.
pub fn finish(fat: BootFs) -> Result<(), ImageError> {
    fat.finish().map(|_| ()).map_err(fat_error)
}
