//! Devices: which disks exist, which of them pi-builder may write and why not, and the
//! udisks2 side of handling a card (names, unmounting, power-off).
//!
//! The rules are the daemon's own (DESIGN §3 rule 6), read from sysfs, mountinfo and swaps:
//! udisks2's hints never decide what is written.

pub mod rules;
pub mod service;
pub mod udisks;
