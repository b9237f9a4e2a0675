//! Call policy with the real binary: CDRs (`[policy] cdr`) reach the file, one JSON line per
//! public call, and a rotation (rename + SIGHUP, as logrotate does) moves writing to a new file.
//!
//! The "PBX" is a UDP socket on 127.0.0.2 (a trunk at a static address) that answers every
//! INVITE 486; the caller is an unauthenticated phone on 127.0.0.1 (outside the platform), so
//! each call is public on both sides.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use super::harness::{Appliance, Io, Scratch, Setup};
use super::phone::Phone;

/// A PBX that answers each INVITE `486 Busy Here` (and swallows the ACK).
fn busy_pbx() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.2:0").expect("bind the PBX on 127.0.0.2");
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_535];
        // The test process ends the thread; a bounded loop all the same.
        for _ in 0..1000 {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !text.starts_with("INVITE ") {
                continue;
            }
            let mut answer = String::from("SIP/2.0 486 Busy Here\r\n");
            for line in text.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
                let name = line.split(':').next().unwrap_or("").trim();
                if name.eq_ignore_ascii_case("To") {
                    answer += &format!("{line};tag=pbx\r\n");
                } else if ["Via", "From", "Call-ID", "CSeq"]
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h))
                {
                    answer += &format!("{line}\r\n");
                }
            }
            answer += "Content-Length: 0\r\n\r\n";
            let _ = socket.send_to(answer.as_bytes(), from);
        }
    });
    addr
}

/// The carrier calls DID `did`; returns the final status.
fn call(carrier: &Phone, did: &str, call_id: &str) -> u16 {
    let invite = format!(
        "INVITE sip:{did}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:0049301234@{me}>;tag=c-{call_id}\r\nTo: <sip:{did}@{server}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:0049301234@{me}>\r\n\
         Content-Length: 0\r\n\r\n",
        server = carrier.server,
        me = carrier.addr,
    );
    let answer = carrier.transact(&invite);
    let to = answer.header("To").unwrap_or_default().to_owned();
    carrier.send(&format!(
        "ACK sip:{did}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:0049301234@{me}>;tag=c-{call_id}\r\nTo: {to}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        server = carrier.server,
        me = carrier.addr,
    ));
    answer.status
}

/// The JSON lines of `path` once it has `n` (waits up to 5 s: the writer flushes every 200 ms).
fn lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cdrs_reach_the_file_and_follow_a_rotation() {
    let dir = Scratch::new("cdr");
    let path = dir.0.join("cdr.jsonl");
    let pbx = busy_pbx();
    let mut setup = Setup::new(Io::Mmsg);
    setup.persist = false;
    setup.extensions = format!(
        "[policy]\ncdr = \"{}\"\n\n[[tenants]]\nname = \"pbx\"\nmax_public_calls = 5\n\n\
         [[extensions]]\nnumbers = \"3000\"\ntenant = \"pbx\"\ntrunk = \"{pbx}\"\n\n\
         [[dids]]\nnumbers = \"+31201234000-+31201234999\"\nextension = \"3000\"\n",
        path.display()
    );
    let Some(app) = Appliance::start(&dir.0, setup) else {
        return;
    };
    let carrier = Phone::new(app.sip);

    assert_eq!(call(&carrier, "+31201234567", "cdr-one"), 486);
    let first = lines(&path, 1);
    assert_eq!(first.len(), 1, "{first:?}\n{}", app.log());
    let c = &first[0];
    assert_eq!(c["call_id"], "cdr-one");
    assert_eq!(c["status"], 486);
    assert_eq!(c["cause"], "failed");
    assert_eq!(c["public_side"], "both");
    assert_eq!(c["tenants"], serde_json::json!(["pbx"]));
    assert!(c["answer"].is_null());
    assert!(c["end"].as_f64().unwrap() >= c["start"].as_f64().unwrap());
    assert!(c["caller"].as_str().unwrap().starts_with("sip:0049301234@"));
    assert!(c["callee"]
        .as_str()
        .unwrap()
        .starts_with("sip:+31201234567@"));

    // logrotate: rename, then SIGHUP; the next record goes to a new file at the same path.
    let rotated = dir.0.join("cdr.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    app.signal("HUP");
    assert!(
        app.wait_log("CDR file (re)opened", 1, Duration::from_secs(5)),
        "{}",
        app.log()
    );
    assert_eq!(call(&carrier, "+31201234000", "cdr-two"), 486);
    let second = lines(&path, 1);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(second[0]["call_id"], "cdr-two");
    assert_eq!(
        lines(&rotated, 1).len(),
        1,
        "the old file keeps its one line"
    );

    let page = app.get_ok("/metrics");
    assert_eq!(
        super::harness::metric_sum_where(&page, "sipfork_cdr_records_total", "result=\"written\""),
        2,
        "{page}"
    );
    assert_eq!(
        super::harness::metric_sum(&page, "sipfork_cdr_records_total"),
        2,
        "nothing dropped or failed"
    );
}
