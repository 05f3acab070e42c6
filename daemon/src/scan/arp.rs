//! ARP over Ethernet (RFC 826): the request a sweep sends and the replies it reads.

use std::net::Ipv4Addr;

use super::mac::Mac;

pub const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const HTYPE_ETHERNET: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;
const ETH_HEADER: usize = 14;
const ARP_LEN: usize = 28;

/// Ethernet's minimum frame (without the checksum): ARP is padded to it, as hosts send it.
pub const FRAME_LEN: usize = 60;

/// A broadcast "who has `target`? tell `source`" from `mac`.
pub fn request(mac: Mac, source: Ipv4Addr, target: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&Mac::BROADCAST.0);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let a = &mut f[ETH_HEADER..ETH_HEADER + ARP_LEN];
    a[0..2].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
    a[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&OP_REQUEST.to_be_bytes());
    a[8..14].copy_from_slice(&mac.0);
    a[14..18].copy_from_slice(&source.octets());
    // The target hardware address stays zero: that is what is asked.
    a[24..28].copy_from_slice(&target.octets());
    f
}

/// What a reply says: `sender_ip` is at `sender_mac`, told to `target_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// The reply in an Ethernet frame, `None` for anything else (requests, other protocols,
/// short or malformed frames: whatever is on the wire, nothing here panics).
pub fn parse_reply(frame: &[u8]) -> Option<Reply> {
    let a = frame.get(ETH_HEADER..ETH_HEADER + ARP_LEN)?;
    let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    if be16(&frame[12..14]) != ETHERTYPE_ARP
        || be16(&a[0..2]) != HTYPE_ETHERNET
        || be16(&a[2..4]) != ETHERTYPE_IPV4
        || a[4] != 6
        || a[5] != 4
        || be16(&a[6..8]) != OP_REPLY
    {
        return None;
    }
    let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&a[8..14]);
    Some(Reply {
        sender_mac: Mac(mac),
        sender_ip: ip(&a[14..18]),
        target_ip: ip(&a[24..28]),
    })
}

/// A reply to `request` from `mac` at `ip` (for tests: what a host would answer).
#[cfg(test)]
pub fn reply_to(request: &[u8], mac: Mac) -> [u8; FRAME_LEN] {
    let asker_mac = &request[6..12];
    let asker_ip = &request[ETH_HEADER + 14..ETH_HEADER + 18];
    let asked_ip = &request[ETH_HEADER + 24..ETH_HEADER + 28];
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(asker_mac);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[ETH_HEADER..ETH_HEADER + 8].copy_from_slice(&request[ETH_HEADER..ETH_HEADER + 8]);
    f[ETH_HEADER + 6..ETH_HEADER + 8].copy_from_slice(&OP_REPLY.to_be_bytes());
    f[ETH_HEADER + 8..ETH_HEADER + 14].copy_from_slice(&mac.0);
    f[ETH_HEADER + 14..ETH_HEADER + 18].copy_from_slice(asked_ip);
    f[ETH_HEADER + 18..ETH_HEADER + 24].copy_from_slice(asker_mac);
    f[ETH_HEADER + 24..ETH_HEADER + 28].copy_from_slice(asker_ip);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Mac = Mac([0x02, 0, 0, 0, 0, 1]);

    #[test]
    fn a_request_is_a_padded_broadcast_asking_for_the_target() {
        let f = request(OURS, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &OURS.0);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[28..32], &[10, 0, 0, 1]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 0, 0, 9]);
        assert!(f[42..].iter().all(|b| *b == 0));
        // Our own request, seen going out, is not a reply.
        assert_eq!(parse_reply(&f), None);
    }

    #[test]
    fn replies_are_read_and_anything_else_refused() {
        let pi = Mac([0xb8, 0x27, 0xeb, 1, 2, 3]);
        let req = request(OURS, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9));
        let rep = reply_to(&req, pi);
        assert_eq!(
            parse_reply(&rep),
            Some(Reply {
                sender_mac: pi,
                sender_ip: Ipv4Addr::new(10, 0, 0, 9),
                target_ip: Ipv4Addr::new(10, 0, 0, 1),
            })
        );
        // Without padding (as a packet socket may deliver it) it is the same reply.
        assert!(parse_reply(&rep[..42]).is_some());
        for cut in 0..42 {
            assert_eq!(parse_reply(&rep[..cut]), None, "{cut} bytes");
        }
        for (at, value) in [(12, 0x86), (15, 6), (16, 0x86), (18, 8), (19, 16), (21, 3)] {
            let mut bad = rep;
            bad[at] = value;
            assert_eq!(parse_reply(&bad), None, "byte {at} = {value}");
        }
    }
}
