//! The kernel's neighbour table (ARP / NDP) through one rtnetlink request: `RTM_GETNEIGH` for one
//! address on one interface. The AF_XDP path bypasses the kernel's own resolution, so a
//! destination without a usable entry is sent through the kernel socket instead, which resolves
//! it; the next lookup then finds the entry.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::packet::Mac;

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
// Usable states: REACHABLE, STALE, DELAY, PROBE, NOARP, PERMANENT.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

/// A NETLINK_ROUTE socket for neighbour lookups.
#[derive(Debug)]
pub struct Neighbours {
    fd: OwnedFd,
    seq: u32,
}

impl Neighbours {
    /// Opens the netlink socket.
    pub fn open() -> io::Result<Self> {
        // SAFETY: socket() takes no pointers; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor this process owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: `tv` is a live timeval of the size passed. A failure leaves reads blocking,
        // which the kernel answers at once anyway.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(Self { fd, seq: 0 })
    }

    /// The MAC of `ip` on interface `ifindex` when the kernel holds a usable entry.
    pub fn lookup(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<Option<Mac>> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(self.seq, ifindex, ip);
        // SAFETY: `req` is a live buffer of the length passed.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            match parse_reply(&buf[..n as usize], self.seq) {
                Reply::Other => continue, // a stale answer to an earlier (timed-out) request
                Reply::Missing => return Ok(None),
                Reply::Found(mac) => return Ok(Some(mac)),
            }
        }
    }
}

/// Builds the `RTM_GETNEIGH` request (nlmsghdr + ndmsg + NDA_DST).
fn request(seq: u32, ifindex: u32, ip: IpAddr) -> Vec<u8> {
    let (family, addr): (u8, Vec<u8>) = match ip {
        IpAddr::V4(v4) => (libc::AF_INET as u8, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, v6.octets().to_vec()),
    };
    let attr_len = 4 + addr.len();
    let len = 16 + 12 + attr_len;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // ndmsg: family, pad, pad16, ifindex, state, flags, type.
    m.extend_from_slice(&[family, 0, 0, 0]);
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&NDA_DST.to_ne_bytes());
    m.extend_from_slice(&addr);
    m
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Found(Mac),
    Missing,
    Other,
}

fn ne16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn ne32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads one netlink answer to request `seq`.
fn parse_reply(b: &[u8], seq: u32) -> Reply {
    let (Some(len), Some(kind), Some(got)) = (ne32(b, 0), ne16(b, 4), ne32(b, 8)) else {
        return Reply::Other;
    };
    if got != seq || (len as usize) > b.len() {
        return Reply::Other;
    }
    let msg = &b[..len as usize];
    match kind {
        NLMSG_ERROR => Reply::Missing, // ENOENT: no entry (or any error: the kernel sends)
        RTM_NEWNEIGH => {
            let Some(state) = ne16(msg, 16 + 8) else {
                return Reply::Other;
            };
            if state & NUD_USABLE == 0 {
                return Reply::Missing; // INCOMPLETE or FAILED
            }
            let mut at = 16 + 12;
            while let (Some(alen), Some(atype)) = (ne16(msg, at), ne16(msg, at + 2)) {
                let alen = usize::from(alen);
                if alen < 4 {
                    break;
                }
                if atype == NDA_LLADDR && alen == 4 + 6 {
                    if let Some(mac) = msg.get(at + 4..at + 10) {
                        return Reply::Found(mac.try_into().expect("invariant: six bytes"));
                    }
                }
                at += (alen + 3) & !3;
            }
            Reply::Missing
        }
        _ => Reply::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(seq: u32, state: u16, mac: Option<Mac>) -> Vec<u8> {
        let mut m = vec![0u8; 16];
        m[4..6].copy_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&[2, 0, 0, 0, 3, 0, 0, 0]);
        m.extend_from_slice(&state.to_ne_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&NDA_DST.to_ne_bytes());
        m.extend_from_slice(&[10, 0, 0, 9]);
        if let Some(mac) = mac {
            m.extend_from_slice(&10u16.to_ne_bytes());
            m.extend_from_slice(&NDA_LLADDR.to_ne_bytes());
            m.extend_from_slice(&mac);
            m.extend_from_slice(&[0, 0]);
        }
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn answers_are_read_by_state_and_sequence() {
        let mac = [2, 0, 0, 0, 0, 9];
        assert_eq!(
            parse_reply(&reply(5, 0x02, Some(mac)), 5),
            Reply::Found(mac)
        );
        assert_eq!(
            parse_reply(&reply(5, 0x80, Some(mac)), 5),
            Reply::Found(mac)
        );
        assert_eq!(parse_reply(&reply(5, 0x01, Some(mac)), 5), Reply::Missing);
        assert_eq!(parse_reply(&reply(5, 0x02, None), 5), Reply::Missing);
        assert_eq!(parse_reply(&reply(4, 0x02, Some(mac)), 5), Reply::Other);
        assert_eq!(parse_reply(&[1, 2, 3], 5), Reply::Other);
    }

    #[test]
    fn the_request_names_the_interface_and_address() {
        let r = request(9, 3, "10.0.0.9".parse().unwrap());
        assert_eq!(r.len(), 16 + 12 + 8);
        assert_eq!(ne16(&r, 4), Some(RTM_GETNEIGH));
        assert_eq!(ne32(&r, 16 + 4), Some(3));
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 9]);
    }
}
