//! Call policy with the real binary:
//! - CDRs (`[policy] cdr`) reach the file, one JSON line per public call, and a rotation
//!   (rename + SIGHUP, as logrotate does) moves writing to a new file. The "PBX" is a UDP socket
//!   on 127.0.0.2 (a trunk at a static address) that answers every INVITE 486; the caller is an
//!   unauthenticated phone on 127.0.0.1 (outside the platform), so each call is public on both
//!   sides.
//! - A SIPp "PBX" at a trunk's static address (127.0.0.2) places calls to its tenant's
//!   `max_public_calls` and past it: exactly the limit is in progress (answered and held by a
//!   SIPp device), the rest get `503` with `Reason: Q.850;cause=34`.
//! - Follow-me: stage 2's external number is reached through the `[[routes]]` next hop (a SIPp
//!   device on 127.0.0.3) only when the tenant has `forward_external = true`; with `false` the
//!   next hop gets nothing and the caller a final 480 after stage 1.
//!
//! The SIPp tests are skipped like the other SIPp tests when SIPp is missing
//! (`sipp::sipp_present`).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use super::forking::{scenario, Sipp};
use super::harness::{free_port, Appliance, Io, Scratch, Setup};
use super::phone::Phone;
use super::sipp::sipp_present;

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

/// Whether something is bound to UDP `ip`:`port` (from `/proc/net/udp`, which shows the address
/// as the hex of its in-memory `u32`, so 127.0.0.2 is `0200007F`).
fn udp_bound_on(ip: Ipv4Addr, port: u16) -> bool {
    let needle = format!("{:08X}:{port:04X} ", u32::from_ne_bytes(ip.octets()));
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|t| t.contains(&needle))
}

/// Waits until SIPp processes have bound their ports.
fn wait_bound(addrs: &[(Ipv4Addr, u16)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !addrs.iter().all(|&(ip, port)| udp_bound_on(ip, port)) {
        assert!(Instant::now() < deadline, "SIPp did not bind {addrs:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Registers `<sip:EXT@127.0.0.1:PORT>` as the one device of extension `ext`.
fn register_device(app: &Appliance, ext: &str, port: u16) {
    let mut phone = Phone::new(app.sip);
    let register = phone.register(ext, &[format!("<sip:{ext}@127.0.0.1:{port}>")], "");
    let answer = phone.transact(&register);
    assert_eq!(answer.status, 200, "{}\n{}", answer.text, app.log());
}

/// The messages SIPp received, from its `-trace_msg` file: (first line, whole message).
fn received(log: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.split("\n-----------")
        .filter(|chunk| chunk.contains("message received"))
        .filter_map(|chunk| {
            let start = chunk
                .lines()
                .position(|l| l.starts_with("SIP/2.0 ") || l.contains(" sip:"))?;
            let lines: Vec<&str> = chunk.lines().skip(start).collect();
            Some((lines[0].to_owned(), lines.join("\n")))
        })
        .collect()
}

/// The value of header `name` in a message from [`received`].
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The tenant's `public_calls` and `refused` from `GET /tenants/{name}`.
fn tenant_calls(app: &Appliance, name: &str) -> (u64, u64) {
    let page: serde_json::Value =
        serde_json::from_str(&app.get_ok(&format!("/tenants/{name}"))).expect("JSON");
    (
        page["public_calls"].as_u64().expect("public_calls"),
        page["refused"].as_u64().expect("refused"),
    )
}

const TRUNK_LIMIT: u32 = 3;
const TRUNK_EXTRA: u32 = 3;
/// The PBX holds each answered call this long, so all of them overlap.
const TRUNK_HOLD_MS: u32 = 3000;

#[test]
fn sipp_pbx_on_a_trunk_gets_exactly_its_limit_and_503_beyond() {
    if !sipp_present() {
        return;
    }
    let dir = Scratch::new("pbx-limit");
    let (pbx_port, device_port) = (free_port(), free_port());
    let pbx_ip = Ipv4Addr::new(127, 0, 0, 2);
    let mut setup = Setup::new(Io::Mmsg);
    setup.persist = false;
    setup.extensions = format!(
        "[[tenants]]\nname = \"pbx\"\nmax_public_calls = {TRUNK_LIMIT}\n\n\
         [[extensions]]\nnumbers = \"1000\"\ntenant = \"pbx\"\n\n\
         [[extensions]]\nnumbers = \"3000\"\ntenant = \"pbx\"\ntrunk = \"{pbx_ip}:{pbx_port}\"\n"
    );
    let Some(app) = Appliance::start(&dir.0, setup) else {
        return;
    };
    register_device(&app, "1000", device_port);

    // The device answers every call 100 ms after its 180 and waits for the PBX's BYE.
    let device = Sipp::start(
        &dir.0,
        "device",
        &[
            "-sf".into(),
            scenario("uas_answer.xml"),
            "-d".into(),
            "100".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            device_port.to_string(),
            "-m".into(),
            TRUNK_LIMIT.to_string(),
        ],
    );
    wait_bound(&[(Ipv4Addr::LOCALHOST, device_port)]);

    // The PBX places all its calls within a quarter second; each answered one lasts 3 s.
    let messages = dir.0.join("pbx_msgs.log");
    let calls = TRUNK_LIMIT + TRUNK_EXTRA;
    let pbx = Sipp::start(
        &dir.0,
        "pbx",
        &[
            app.sip.to_string(),
            "-sf".into(),
            scenario("pbx_uac.xml"),
            "-s".into(),
            "1000".into(),
            "-i".into(),
            pbx_ip.to_string(),
            "-p".into(),
            pbx_port.to_string(),
            "-m".into(),
            calls.to_string(),
            "-r".into(),
            "20".into(),
            "-d".into(),
            TRUNK_HOLD_MS.to_string(),
            "-trace_msg".into(),
            "-message_file".into(),
            messages.display().to_string(),
        ],
    );

    // While the answered calls are held: exactly the limit in progress, the rest refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = tenant_calls(&app, "pbx");
    while seen.1 < u64::from(TRUNK_EXTRA) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        seen = tenant_calls(&app, "pbx");
    }
    assert_eq!(
        seen,
        (u64::from(TRUNK_LIMIT), u64::from(TRUNK_EXTRA)),
        "(public_calls, refused) while the answered calls are held\n{}",
        app.log()
    );

    let stats = pbx.finish();
    assert_eq!(
        (stats.created, stats.successful, stats.failed),
        (u64::from(calls), u64::from(calls), 0),
        "every call ends either answered or refused with Q.850 cause 34: {stats:?}"
    );
    let device = device.finish();
    assert_eq!(
        (device.successful, device.failed),
        (u64::from(TRUNK_LIMIT), 0),
        "{device:?}"
    );

    let (mut answered, mut refused) = (BTreeSet::new(), BTreeSet::new());
    for (first, message) in received(&messages) {
        let call_id = header(&message, "Call-ID").unwrap_or_default().to_owned();
        let cseq = header(&message, "CSeq").unwrap_or_default();
        if first.starts_with("SIP/2.0 200") && cseq.ends_with("INVITE") {
            answered.insert(call_id);
        } else if first.starts_with("SIP/2.0 503") {
            let reason = header(&message, "Reason").unwrap_or_default();
            assert!(
                reason.starts_with("Q.850;cause=34"),
                "503 without the Reason: {message}"
            );
            refused.insert(call_id);
        }
    }
    assert_eq!(answered.len(), TRUNK_LIMIT as usize, "{answered:?}");
    assert_eq!(refused.len(), TRUNK_EXTRA as usize, "{refused:?}");
    assert!(answered.is_disjoint(&refused));

    // Every answered call was ended by the PBX's BYE: the ledger is back to zero.
    assert_eq!(
        tenant_calls(&app, "pbx"),
        (0, u64::from(TRUNK_EXTRA)),
        "{}",
        app.log()
    );
}

/// An extension whose follow-me rings its own device 1 s, then an external number through the
/// `[[routes]]` next hop `hop`; `forward_external` as given on its tenant.
fn followme_appliance(dir: &Path, forward_external: bool, hop: SocketAddr) -> Option<Appliance> {
    let mut setup = Setup::new(Io::Mmsg);
    setup.persist = false;
    setup.extensions = format!(
        "[[tenants]]\nname = \"office\"\nforward_external = {forward_external}\n\n\
         [[extensions]]\nnumbers = \"1000\"\ntenant = \"office\"\n\n\
         [[routes]]\nprefix = \"00\"\nnext_hop = \"sip:{hop}\"\n\n\
         [[followme]]\nextension = \"1000\"\nstages = [\n\
         \x20 {{ targets = [\"self\"], ring = 1 }},\n\
         \x20 {{ targets = [\"0044201234567\"], ring = 10 }},\n]\n"
    );
    Appliance::start(dir, setup)
}

/// The extension's own device: rings, and must be cancelled when stage 1 ends.
fn ringing_device(dir: &Path, port: u16) -> Sipp {
    let device = Sipp::start(
        dir,
        "own",
        &[
            "-sf".into(),
            scenario("uas_ring_cancel.xml"),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            "1".into(),
        ],
    );
    wait_bound(&[(Ipv4Addr::LOCALHOST, port)]);
    device
}

#[test]
fn followme_reaches_an_external_number_through_a_route_with_forward_external() {
    if !sipp_present() {
        return;
    }
    let dir = Scratch::new("fm-ext");
    let hop_ip = Ipv4Addr::new(127, 0, 0, 3);
    let (hop_port, own_port) = (free_port(), free_port());
    let Some(app) = followme_appliance(&dir.0, true, (hop_ip, hop_port).into()) else {
        return;
    };
    register_device(&app, "1000", own_port);
    let own = ringing_device(&dir.0, own_port);
    let hop_messages = dir.0.join("hop_msgs.log");
    let hop = Sipp::start(
        &dir.0,
        "hop",
        &[
            "-sf".into(),
            scenario("uas_answer.xml"),
            "-d".into(),
            "100".into(),
            "-i".into(),
            hop_ip.to_string(),
            "-p".into(),
            hop_port.to_string(),
            "-m".into(),
            "1".into(),
            "-trace_msg".into(),
            "-message_file".into(),
            hop_messages.display().to_string(),
        ],
    );
    wait_bound(&[(hop_ip, hop_port)]);

    let users = dir.0.join("users.csv");
    std::fs::write(&users, "SEQUENTIAL\n1000;\n").unwrap();
    let started = Instant::now();
    let caller = Sipp::start(
        &dir.0,
        "caller",
        &[
            app.sip.to_string(),
            "-sf".into(),
            scenario("uac.xml"),
            "-inf".into(),
            users.display().to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-m".into(),
            "1".into(),
            "-d".into(),
            "200".into(),
        ],
    )
    .finish();
    let took = started.elapsed();
    assert_eq!((caller.successful, caller.failed), (1, 0), "{caller:?}");
    assert!(
        took >= Duration::from_secs(1),
        "stage 2 starts after stage 1's 1 s: {took:?}"
    );
    let own = own.finish();
    assert_eq!(
        (own.successful, own.failed),
        (1, 0),
        "stage 1 rang, then cancelled"
    );
    let hop = hop.finish();
    assert_eq!((hop.successful, hop.failed), (1, 0), "{hop:?}");
    let invites: Vec<String> = received(&hop_messages)
        .into_iter()
        .map(|(first, _)| first)
        .filter(|first| first.starts_with("INVITE "))
        .collect();
    assert_eq!(invites.len(), 1, "{invites:?}");
    assert!(
        invites[0].starts_with("INVITE sip:0044201234567@"),
        "the external number, dialled at the route: {invites:?}"
    );
}

#[test]
fn followme_never_dials_the_external_number_without_forward_external() {
    if !sipp_present() {
        return;
    }
    let dir = Scratch::new("fm-noext");
    // The route's next hop: a bare socket that must receive nothing.
    let hop = UdpSocket::bind("127.0.0.3:0").expect("bind the next hop on 127.0.0.3");
    let Some(app) = followme_appliance(&dir.0, false, hop.local_addr().unwrap()) else {
        return;
    };
    let own_port = free_port();
    register_device(&app, "1000", own_port);
    let own = ringing_device(&dir.0, own_port);

    let caller = Phone::new(app.sip);
    let started = Instant::now();
    assert_eq!(
        call(&caller, "1000", "fm-noext"),
        480,
        "after stage 1, nothing left to ring\n{}",
        app.log()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    let own = own.finish();
    assert_eq!(
        (own.successful, own.failed),
        (1, 0),
        "stage 1 rang, then cancelled"
    );
    hop.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    if let Ok((n, from)) = hop.recv_from(&mut buf) {
        panic!(
            "the next hop got a datagram from {from}:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}
