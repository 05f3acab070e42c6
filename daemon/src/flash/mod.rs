//! Writing cards: one read of an image to one or more devices, verified (DESIGN §6), and
//! giving a card the default empty layout.

pub mod busy;
pub mod engine;
pub mod format;

pub mod request;
pub mod run;
