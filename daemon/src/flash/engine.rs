//! Writing Raspberry Pi images to SD cards: one read of the image, any
//! number of cards, each verified, none left looking valid when interrupted.

mod bmap;
mod buf;
mod error;
mod flash;
mod queue;
mod source;
mod target;

pub use bmap::{parse_bmap, Bmap};
pub use error::FlashError;
pub use flash::{flash, Input, Options, Phase, Report};
pub use target::Target;

#[cfg(test)]
#[path = "engine/tests.rs"]
mod tests;
