//! Disk images: a built result becomes a bootable, sparse SD-card image without mounting
//! anything and without unpacking the tree on the host (DESIGN §3 rule 4, §6).
//!
//! The container's filesystem is read twice as a tar stream from the engine. The first read
//! builds an in-memory tree and writes the boot files into the FAT partition; the second fills
//! the root filesystem's blocks, whose layout was sealed in between. The finished image lives
//! in the job's private work directory until it is copied to the caller's descriptor.

pub mod assemble;
pub mod boot;
pub mod export;
pub mod fat;
pub mod fixups;
pub mod layout;
pub mod manifest;
pub mod mbr;
pub mod request;
pub mod rootfs;
pub mod run;
pub mod sink;
#[cfg(test)]
pub mod test_tools;
pub mod tree;

pub mod bmap;
pub mod deliver;

use pib_dbus_interfaces::DBusError;

/// Why an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the container's filesystem stream is unreadable: {0}")]
    Stream(String),
    #[error("the container changed between the two reads of its filesystem (at {0:?})")]
    Changed(String),
    #[error("the boot partition: {0}")]
    Boot(String),
    #[error("the root filesystem: {0}")]
    Filesystem(String),
    #[error("{0}")]
    NoSpace(String),
    #[error("writing the image: {0}")]
    Io(#[from] std::io::Error),
    #[error("cancelled")]
    Cancelled,
}

impl ImageError {
    pub fn stream(e: impl std::fmt::Display) -> ImageError {
        ImageError::Stream(e.to_string())
    }

    /// An I/O error on the image file: a full disk is worth its own name.
    pub fn write(what: &str, e: std::io::Error) -> ImageError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => {
                ImageError::NoSpace(format!("no space left while {what}"))
            }
            _ => ImageError::Io(e),
        }
    }
}

impl From<ImageError> for DBusError {
    fn from(e: ImageError) -> DBusError {
        match e {
            ImageError::NoSpace(m) => DBusError::NoSpace(m),
            ImageError::Cancelled => DBusError::Cancelled("the image job was cancelled".into()),
            other => DBusError::Failed(other.to_string()),
        }
    }
}
