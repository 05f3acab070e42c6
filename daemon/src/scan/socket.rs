//! A packet socket that sends and receives ARP frames on one interface.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    bind, eth, recv, send, socket_with, AddressFamily, RecvFlags, SendFlags, SocketFlags,
    SocketType,
};

use super::arp::ETHERTYPE_ARP;
use crate::sys::LinkAddr;

/// What a sweep needs from the wire; the real one is [`ArpSocket`], tests use a fake network.
pub trait Link {
    /// Sends one whole Ethernet frame.
    fn send(&self, frame: &[u8]) -> io::Result<()>;
    /// Receives one frame into `buf`, waiting at most `wait`; `None` when nothing came.
    fn recv(&self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>>;
}

/// `AF_PACKET`/`SOCK_RAW` bound to one interface and to ARP frames only (needs
/// CAP_NET_RAW). Raw rather than datagram: the frame is built whole, and a bound raw socket
/// sends without naming a destination each time.
pub struct ArpSocket {
    fd: OwnedFd,
}

/// A full transmit queue is waited out this long before the frame counts as lost.
const SEND_WAIT: Duration = Duration::from_millis(50);

impl ArpSocket {
    pub fn open(ifindex: u32) -> io::Result<ArpSocket> {
        let fd = socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            Some(eth::ARP),
        )?;
        bind(&fd, &LinkAddr::new(ifindex, ETHERTYPE_ARP))?;
        Ok(ArpSocket { fd })
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match recv(&self.fd, &mut *buf, RecvFlags::empty()) {
                Ok((n, _)) => return Ok(Some(n)),
                Err(Errno::AGAIN) => return Ok(None),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until the socket is ready for `flags` or `wait` passed; whether it is ready.
    fn wait(&self, flags: PollFlags, wait: Duration) -> io::Result<bool> {
        let mut fds = [PollFd::new(&self.fd, flags)];
        let timeout = Timespec {
            tv_sec: wait.as_secs().min(60) as _,
            tv_nsec: wait.subsec_nanos() as _,
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(n) => Ok(n > 0),
            Err(Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl Link for ArpSocket {
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        for attempt in 0..2 {
            match send(&self.fd, frame, SendFlags::empty()) {
                Ok(_) => return Ok(()),
                Err(Errno::AGAIN | Errno::NOBUFS) if attempt == 0 => {
                    self.wait(PollFlags::OUT, SEND_WAIT)?;
                }
                Err(Errno::AGAIN | Errno::NOBUFS) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // Still full: this request is lost, like one dropped on the wire; the next round
        // asks again.
        Ok(())
    }

    fn recv(&self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
        if let Some(n) = self.try_recv(buf)? {
            return Ok(Some(n));
        }
        if wait.is_zero() || !self.wait(PollFlags::IN, wait)? {
            return Ok(None);
        }
        self.try_recv(buf)
    }
}
