//! Bounded REGISTER load for the memory-per-binding measurement (DECISIONS.md "Measuring"):
//! registers extensions `FIRST .. FIRST+COUNT` with `CONTACTS` devices each, one REGISTER per
//! extension carrying all its contacts, with realistic contents (a 60-byte Contact, a 40-byte
//! Call-ID, a `+sip.instance` URN per device, a 30-byte User-Agent). Keeps at most `WINDOW`
//! REGISTERs unanswered, retransmits none (a lost answer is counted), and stops after `SECS`.
//!
//! usage: register_load SERVER FIRST COUNT [CONTACTS=3] [WINDOW=256] [SECS=120]
//! Prints one line: sent, 200s, other answers, unanswered, seconds, rate, other answers by code.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn register(server: SocketAddr, me: SocketAddr, ext: u64, contacts: u64) -> String {
    let mut contact_rows = String::new();
    for d in 0..contacts {
        // 60 bytes: sip:NNNNNNN@127.0.0.1:PPPPP;rinstance=HHHHHHHH;transport=udp (7-digit
        // extensions, 5-digit ports).
        let uri = format!(
            "sip:{ext}@127.0.0.1:{};rinstance={:08x};transport=udp",
            20_000 + d,
            ext * 31 + d
        );
        contact_rows += &format!(
            "Contact: <{uri}>;+sip.instance=\"<urn:uuid:{:08x}-0000-4000-8000-{:012x}>\";reg-id=1\r\n",
            d as u32,
            ext
        );
    }
    format!(
        "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{ext:x}d{contacts};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{ext}@{host}>;tag={ext:x}\r\nTo: <sip:{ext}@{host}>\r\n\
         Call-ID: {ext:020}{:020x}\r\nCSeq: 1 REGISTER\r\n{contact_rows}\
         User-Agent: Yealink SIP-T46S 66.86.0.15 ab\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n",
        ext.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        host = server.ip(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: register_load SERVER FIRST COUNT [CONTACTS=3] [WINDOW=256] [SECS=120]";
    let arg = |i: usize, default: Option<u64>| -> u64 {
        match args.get(i) {
            Some(v) => v.parse().unwrap_or_else(|_| panic!("{usage}")),
            None => default.unwrap_or_else(|| panic!("{usage}")),
        }
    };
    let server: SocketAddr = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{usage}"));
    assert!(server.ip().is_loopback(), "loopback only");
    let (first, count) = (arg(2, None), arg(3, None));
    let (contacts, window, secs) = (arg(4, Some(3)), arg(5, Some(256)), arg(6, Some(120)));
    assert!(secs <= 600 && count <= 10_000_000, "bounded runs only");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    // Room for a window's answers (each several hundred bytes plus kernel overhead).
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20);
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let me = socket.local_addr().unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let (mut sent, mut ok, mut other, mut outstanding) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 65_535];
    let mut idle_timeouts = 0;
    // The other answers by status code (a 503 from shedding reads differently from a 500).
    let mut other_codes = std::collections::BTreeMap::<String, u64>::new();
    while (sent < count || outstanding > 0) && Instant::now() < deadline {
        while sent < count && outstanding < window {
            let msg = register(server, me, first + sent, contacts);
            socket.send_to(msg.as_bytes(), server).expect("send");
            sent += 1;
            outstanding += 1;
        }
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                idle_timeouts = 0;
                outstanding = outstanding.saturating_sub(1);
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    ok += 1;
                } else {
                    other += 1;
                    let code = buf[..n].get(8..11).unwrap_or(b"???");
                    if other == 1 {
                        let line = buf[..n].split(|&b| b == b'\r').next().unwrap_or(b"");
                        eprintln!("first other answer: {}", String::from_utf8_lossy(line));
                    }
                    *other_codes
                        .entry(String::from_utf8_lossy(code).into_owned())
                        .or_default() += 1;
                }
            }
            Err(_) => {
                // Lost answers (a full socket buffer somewhere): give up on those in flight.
                idle_timeouts += 1;
                outstanding = 0;
                if idle_timeouts > 4 {
                    break;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "sent={sent} ok={ok} other={other} unanswered={} secs={elapsed:.1} rate={:.0}/s other_codes={other_codes:?}",
        sent - ok - other,
        sent as f64 / elapsed
    );
}
