//! Writing Raspberry Pi images to SD cards: one read of the image, any
//! number of cards, each verified, none left looking valid when interrupted.
//!
//! The guarantees, in order of importance:
//! - a card whose write did not complete (error, cancel, bad source, pulled
//!   card, stall) has a zeroed first MiB, hence no partition table;
//! - a card reported Ok holds the image, read back with O_DIRECT;
//! - one bad card never stops the others, and a card stuck in the kernel
//!   is reported Stalled instead of hanging the caller;
//! - memory stays bounded (about 30-45 MiB plus the decompressor's window)
//!   whatever the image size and number of cards.

mod bmap;
mod buf;
mod error;
mod flash;
mod pipe;
mod queue;
mod reader;
mod source;
mod target;
mod writer;

pub use bmap::{parse_bmap, Bmap};
pub use error::FlashError;
#[cfg(test)]
pub use flash::flash;
pub use flash::{flash_each, Input, Options, Phase, Report};
pub use target::Target;

#[cfg(test)]
mod tests;
