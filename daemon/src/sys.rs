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

// The LAN scan binds its packet sockets to one interface with a link-layer address
// (`sockaddr_ll`), which rustix has no type for.

/// `struct sockaddr_ll` naming an interface and an EtherType.
pub struct LinkAddr(libc::sockaddr_ll);

impl LinkAddr {
    /// Frames of `ethertype` on the interface with index `ifindex`.
    pub fn new(ifindex: u32, ethertype: u16) -> LinkAddr {
        LinkAddr(libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: ethertype.to_be(),
            sll_ifindex: ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        })
    }
}

// SAFETY: the pointer handed to `f` is to a fully initialized `sockaddr_ll` that `self` owns
// and that outlives the call, and the length passed is exactly that struct's size, which is
// what the kernel expects for AF_PACKET addresses.
unsafe impl rustix::net::addr::SocketAddrArg for LinkAddr {
    // SAFETY: the trait's method is unsafe to call, not to implement; see above.
    unsafe fn with_sockaddr<R>(
        &self,
        f: impl FnOnce(
            *const rustix::net::addr::SocketAddrOpaque,
            rustix::net::addr::SocketAddrLen,
        ) -> R,
    ) -> R {
        f(
            (&self.0 as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as rustix::net::addr::SocketAddrLen,
        )
    }
}
