//! Sans-IO Ethernet / 802.1Q VLAN / IPv4 / IPv6 / UDP codec for the AF_XDP backend: parses a
//! received frame into addresses and payload, and writes a frame for a datagram with the IPv4
//! header checksum and the UDP checksum computed (frames from veth or a NIC with TX checksum
//! offload carry only a partial checksum, so nothing is ever copied from the request).
//!
//! No I/O, no allocation on the receive path; plain functions over byte slices.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A MAC address.
pub type Mac = [u8; 6];

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_UDP: u8 = 17;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
/// Hop limit / TTL of frames we build.
const TTL: u8 = 64;

/// The link-layer side of a frame: who sent it, to whom, on which VLAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// The 802.1Q tag control (PCP, DEI, VID) when the frame was tagged.
    pub vlan: Option<u16>,
}

/// A parsed UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// Link-layer header.
    pub link: Link,
    /// Source address and port.
    pub from: SocketAddr,
    /// Destination address and port.
    pub to: SocketAddr,
    /// The UDP payload (bounded by the UDP length, not the frame).
    pub payload: &'a [u8],
}

/// Why a frame was not a datagram for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than its headers or lengths claim.
    Short,
    /// Not IPv4/IPv6 (after at most one VLAN tag).
    NotIp,
    /// Not UDP, or an IPv6 extension header precedes it.
    NotUdp,
    /// An IPv4 fragment (the XDP program passes those to the kernel; one seen here is counted).
    Fragment,
    /// A header field is inconsistent (IHL, version, UDP length).
    Malformed,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses an Ethernet frame carrying one UDP datagram.
pub fn parse(frame: &[u8]) -> Result<Parsed<'_>, ParseError> {
    if frame.len() < ETH_HLEN {
        return Err(ParseError::Short);
    }
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&frame[0..6]);
    src.copy_from_slice(&frame[6..12]);
    let mut ethertype = be16(frame, 12).ok_or(ParseError::Short)?;
    let mut at = ETH_HLEN;
    let mut vlan = None;
    if ethertype == ETH_P_8021Q {
        vlan = Some(be16(frame, 14).ok_or(ParseError::Short)?);
        ethertype = be16(frame, 16).ok_or(ParseError::Short)?;
        at += VLAN_HLEN;
    }
    let link = Link { dst, src, vlan };
    let l3 = &frame[at..];
    let (from_ip, to_ip, udp): (IpAddr, IpAddr, &[u8]) = match ethertype {
        ETH_P_IPV4 => {
            if l3.len() < IPV4_HLEN {
                return Err(ParseError::Short);
            }
            if l3[0] >> 4 != 4 {
                return Err(ParseError::Malformed);
            }
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            let total = usize::from(be16(l3, 2).ok_or(ParseError::Short)?);
            if ihl < IPV4_HLEN || total < ihl {
                return Err(ParseError::Malformed);
            }
            if total > l3.len() {
                return Err(ParseError::Short);
            }
            if l3[9] != IPPROTO_UDP {
                return Err(ParseError::NotUdp);
            }
            if be16(l3, 6).ok_or(ParseError::Short)? & 0x3fff != 0 {
                return Err(ParseError::Fragment);
            }
            let s: [u8; 4] = l3[12..16].try_into().map_err(|_| ParseError::Short)?;
            let d: [u8; 4] = l3[16..20].try_into().map_err(|_| ParseError::Short)?;
            (
                Ipv4Addr::from(s).into(),
                Ipv4Addr::from(d).into(),
                &l3[ihl..total],
            )
        }
        ETH_P_IPV6 => {
            if l3.len() < IPV6_HLEN {
                return Err(ParseError::Short);
            }
            if l3[0] >> 4 != 6 {
                return Err(ParseError::Malformed);
            }
            if l3[6] != IPPROTO_UDP {
                return Err(ParseError::NotUdp);
            }
            let plen = usize::from(be16(l3, 4).ok_or(ParseError::Short)?);
            if IPV6_HLEN + plen > l3.len() {
                return Err(ParseError::Short);
            }
            let s: [u8; 16] = l3[8..24].try_into().map_err(|_| ParseError::Short)?;
            let d: [u8; 16] = l3[24..40].try_into().map_err(|_| ParseError::Short)?;
            (
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                &l3[IPV6_HLEN..IPV6_HLEN + plen],
            )
        }
        _ => return Err(ParseError::NotIp),
    };
    if udp.len() < UDP_HLEN {
        return Err(ParseError::Short);
    }
    let sport = be16(udp, 0).ok_or(ParseError::Short)?;
    let dport = be16(udp, 2).ok_or(ParseError::Short)?;
    let ulen = usize::from(be16(udp, 4).ok_or(ParseError::Short)?);
    if ulen < UDP_HLEN || ulen > udp.len() {
        return Err(ParseError::Malformed);
    }
    Ok(Parsed {
        link,
        from: socket_addr(from_ip, sport),
        to: socket_addr(to_ip, dport),
        payload: &udp[UDP_HLEN..ulen],
    })
}

fn socket_addr(ip: IpAddr, port: u16) -> SocketAddr {
    match ip {
        IpAddr::V4(ip) => SocketAddr::V4(SocketAddrV4::new(ip, port)),
        IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
    }
}

/// Bytes of headers in front of the payload of a frame from `from` with `vlan`.
pub fn header_len(from: &SocketAddr, vlan: Option<u16>) -> usize {
    let l3 = if from.is_ipv4() { IPV4_HLEN } else { IPV6_HLEN };
    ETH_HLEN + if vlan.is_some() { VLAN_HLEN } else { 0 } + l3 + UDP_HLEN
}

/// Writes a frame for `payload` from `from` to `to` over `link` into `buf`; returns its length,
/// or `None` when `buf` is too small, the families differ, or the payload exceeds what a UDP
/// length field can say.
pub fn write(
    buf: &mut [u8],
    link: &Link,
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
) -> Option<usize> {
    let hlen = header_len(&from, link.vlan);
    let total = hlen + payload.len();
    let ulen = UDP_HLEN + payload.len();
    if buf.len() < total || u16::try_from(ulen + IPV6_HLEN).is_err() {
        return None;
    }
    let buf = &mut buf[..total];
    buf[0..6].copy_from_slice(&link.dst);
    buf[6..12].copy_from_slice(&link.src);
    let mut at = 12;
    if let Some(tci) = link.vlan {
        buf[12..14].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
        buf[14..16].copy_from_slice(&tci.to_be_bytes());
        at = 16;
    }
    let (l3_start, pseudo) = match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            buf[at..at + 2].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
            let ip = &mut buf[at + 2..at + 2 + IPV4_HLEN];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&((IPV4_HLEN + ulen) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&[0, 0]); // identification: DF is set, never fragmented
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[8] = TTL;
            ip[9] = IPPROTO_UDP;
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = !fold(sum(0, ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let mut p = sum(0, &s.octets());
            p = sum(p, &d.octets());
            p += u64::from(IPPROTO_UDP) + ulen as u64;
            (at + 2 + IPV4_HLEN, p)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            buf[at..at + 2].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
            let ip = &mut buf[at + 2..at + 2 + IPV6_HLEN];
            ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            ip[4..6].copy_from_slice(&(ulen as u16).to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = TTL;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            let mut p = sum(0, &s.octets());
            p = sum(p, &d.octets());
            p += u64::from(IPPROTO_UDP) + ulen as u64;
            (at + 2 + IPV6_HLEN, p)
        }
        _ => return None,
    };
    let udp = &mut buf[l3_start..];
    udp[0..2].copy_from_slice(&from.port().to_be_bytes());
    udp[2..4].copy_from_slice(&to.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(ulen as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    udp[UDP_HLEN..].copy_from_slice(payload);
    let mut c = !fold(sum(pseudo, udp));
    if c == 0 {
        c = 0xffff; // RFC 768: a computed zero is sent as all ones
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

/// One's-complement sum of big-endian 16-bit words (an odd tail byte padded with zero), added
/// to `acc` without folding.
fn sum(mut acc: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for w in &mut chunks {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Verifies the UDP checksum of a parsed frame (tests and diagnostics; the backend does not
/// reject on it because veth delivers partial checksums).
pub fn udp_checksum_ok(frame: &[u8]) -> bool {
    let Ok(p) = parse(frame) else { return false };
    let udp_len = UDP_HLEN + p.payload.len();
    let payload_at = p.payload.as_ptr() as usize - frame.as_ptr() as usize;
    let udp = &frame[payload_at - UDP_HLEN..payload_at - UDP_HLEN + udp_len];
    let mut acc = match (p.from.ip(), p.to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum(sum(0, &s.octets()), &d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => sum(sum(0, &s.octets()), &d.octets()),
        _ => return false,
    };
    acc += u64::from(IPPROTO_UDP) + udp_len as u64;
    fold(sum(acc, udp)) == 0xffff
}

/// Verifies the IPv4 header checksum of a frame (tests and diagnostics).
pub fn ipv4_checksum_ok(frame: &[u8]) -> bool {
    let at = if be16(frame, 12) == Some(ETH_P_8021Q) {
        ETH_HLEN + VLAN_HLEN
    } else {
        ETH_HLEN
    };
    frame
        .get(at..at + IPV4_HLEN)
        .is_some_and(|ip| fold(sum(0, ip)) == 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x02, 0, 0, 0, 0, 0xaa];
    const B: Mac = [0x02, 0, 0, 0, 0, 0xbb];

    fn link(vlan: Option<u16>) -> Link {
        Link {
            dst: B,
            src: A,
            vlan,
        }
    }

    #[test]
    fn ipv4_round_trip_with_valid_checksums() {
        let from: SocketAddr = "10.99.0.1:5062".parse().unwrap();
        let to: SocketAddr = "10.99.0.2:5060".parse().unwrap();
        let payload = b"OPTIONS sip:x SIP/2.0\r\n\r\n";
        let mut buf = [0u8; 256];
        let n = write(&mut buf, &link(None), from, to, payload).unwrap();
        assert_eq!(n, 14 + 20 + 8 + payload.len());
        let p = parse(&buf[..n]).unwrap();
        assert_eq!((p.from, p.to, p.payload), (from, to, &payload[..]));
        assert_eq!(p.link, link(None));
        assert!(ipv4_checksum_ok(&buf[..n]));
        assert!(udp_checksum_ok(&buf[..n]));
        // Flip one payload bit: the UDP checksum must notice.
        buf[n - 1] ^= 1;
        assert!(!udp_checksum_ok(&buf[..n]));
    }

    #[test]
    fn ipv4_checksum_matches_a_known_header() {
        // The RFC 1071 worked example header (Wikipedia's "IPv4 header checksum" example):
        // 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
        let hdr: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(!fold(sum(0, &hdr)), 0xb861);
    }

    #[test]
    fn ipv6_and_vlan_round_trip() {
        let from: SocketAddr = "[fd00:5f::2]:5070".parse().unwrap();
        let to: SocketAddr = "[fd00:5f::1]:5060".parse().unwrap();
        let payload = vec![b'x'; 1001]; // odd length: the checksum pads
        let mut buf = vec![0u8; 2048];
        let n = write(&mut buf, &link(Some(0x2064)), from, to, &payload).unwrap();
        assert_eq!(n, 18 + 40 + 8 + 1001);
        assert_eq!(&buf[12..16], &[0x81, 0x00, 0x20, 0x64]);
        let p = parse(&buf[..n]).unwrap();
        assert_eq!((p.from, p.to), (from, to));
        assert_eq!(p.payload, &payload[..]);
        assert_eq!(p.link.vlan, Some(0x2064));
        assert!(udp_checksum_ok(&buf[..n]));
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let to: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let mut buf = [0u8; 128];
        let n = write(&mut buf, &link(None), from, to, b"hello").unwrap();
        for cut in [0, 10, 20, 40] {
            assert_eq!(parse(&buf[..cut]), Err(ParseError::Short), "cut at {cut}");
        }
        let mut frag = buf;
        frag[14 + 6] = 0x20; // MF
        assert_eq!(parse(&frag[..n]), Err(ParseError::Fragment));
        let mut tcp = buf;
        tcp[14 + 9] = 6;
        assert_eq!(parse(&tcp[..n]), Err(ParseError::NotUdp));
        let mut arp = buf;
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse(&arp[..n]), Err(ParseError::NotIp));
        let mut ulen = buf;
        ulen[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&500u16.to_be_bytes());
        assert_eq!(parse(&ulen[..n]), Err(ParseError::Malformed));
        // Padding after the IP total length (short frames padded to 60 bytes) is ignored.
        let p = parse(&buf[..60.max(n)]).unwrap();
        assert_eq!(p.payload, b"hello");
        // Mixed families, or a buffer too small, write nothing.
        let v6: SocketAddr = "[::1]:5060".parse().unwrap();
        assert_eq!(write(&mut buf, &link(None), from, v6, b"x"), None);
        assert_eq!(write(&mut buf[..40], &link(None), from, to, b"x"), None);
    }

    #[test]
    fn a_zero_udp_checksum_is_sent_as_all_ones() {
        // Search a payload whose checksum computes to zero; the written field must be 0xffff.
        let from: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let to: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let mut buf = [0u8; 128];
        let mut found = false;
        for x in 0..=u16::MAX {
            let n = write(&mut buf, &link(None), from, to, &x.to_be_bytes()).unwrap();
            let c = u16::from_be_bytes([buf[40], buf[41]]);
            assert_ne!(c, 0);
            if c == 0xffff {
                assert!(udp_checksum_ok(&buf[..n]));
                found = true;
            }
        }
        assert!(found);
    }
}
