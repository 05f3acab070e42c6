//! The daemon's only `unsafe` code: thin, reviewed wrappers over calls whose contracts the
//! compiler cannot check, each with a safe signature that upholds the contract by itself.
//!
//! Every other module is compiled with `unsafe_code` denied (see the workspace's `[lints]`),
//! and tests/unsafe_scan.rs fails the suite if `unsafe` appears anywhere else. Anything new
//! that needs `unsafe` (ioctls without a rustix wrapper, raw sockets) goes here, next to a
//! `SAFETY:` comment that says why the call is sound.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Registers a descriptor with tokio's reactor, taking ownership of it.
///
/// Must be called within a tokio runtime (tokio panics otherwise).
pub fn async_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `register` requires the descriptor to stay open and to refer to the same open
    // file description while registered. `fd` is an OwnedFd moved into the AsyncFd, so only
    // the AsyncFd can close it (on drop or into_inner), and OwnedFd::as_raw_fd always returns
    // the same number.
    unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
}
