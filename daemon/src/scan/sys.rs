//! The scan's only `unsafe`: the link-layer socket address (`sockaddr_ll`) that binds a packet
//! socket to one interface. rustix opens, binds, sends and receives safely, but has no type
//! for this address family, so this module gives it one.

use std::mem::size_of;

use rustix::net::addr::{SocketAddrArg, SocketAddrLen, SocketAddrOpaque};

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
unsafe impl SocketAddrArg for LinkAddr {
    unsafe fn with_sockaddr<R>(
        &self,
        f: impl FnOnce(*const SocketAddrOpaque, SocketAddrLen) -> R,
    ) -> R {
        f(
            (&self.0 as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as SocketAddrLen,
        )
    }
}
