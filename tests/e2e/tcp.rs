//! TCP beside UDP on the same port (`listen = ["udp:…", "tcp:…"]`): answers come back on the
//! connection the request came on, CRLFCRLF keep-alives get their CRLF, oversize and idle
//! connections are closed and counted, and SIPp registers over TCP (`-t t1`). With two shards:
//! devices registered over TCP are called by a UDP caller over their connections whichever shard
//! owns them, a 3 KB INVITE from a TCP caller goes over TCP, and a device whose connection
//! closed is not called (480). A device registered over UDP with a `;transport=tcp` Contact is
//! called over a connection sipfork opens (in a network namespace, with attacks naming a third
//! party), and so is SIPp listening on TCP only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{free_port, Appliance, Io, Scratch, Setup};
use crate::netns;
use crate::sipp::sipp_present;

fn setup(io: Io) -> Setup {
    let mut s = Setup::new(io);
    s.tcp = true;
    s.shards = 1;
    s.extensions = format!("[tcp]\nidle_seconds = 2\n\n{}", s.extensions);
    s
}

pub(crate) fn options(local: std::net::SocketAddr, server: std::net::SocketAddr, n: u32) -> String {
    format!(
        "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-tcp-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:ping@{local}>;tag=t{n}\r\nTo: <sip:{server}>\r\n\
         Call-ID: tcp-{n}@e2e\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Reads until `until` is in what arrived, or the peer closes (then `closed` is true).
fn read_until(s: &mut TcpStream, until: &[u8]) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if !until.is_empty() && got.windows(until.len()).any(|w| w == until) {
            return (got, false);
        }
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
}

fn connect(app: &Appliance) -> TcpStream {
    let s = TcpStream::connect(app.sip).expect("connect over TCP");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Waits (bounded) for a counter of `/metrics` to reach `want`.
fn wait_metric(app: &Appliance, name: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = app.metric_sum(name);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn options_keepalive_oversize_and_idle_over_tcp() {
    for io in [Io::Mmsg, Io::Uring] {
        let dir = Scratch::new(&format!("tcp-basics-{}", io.metric_name()));
        let Some(app) = Appliance::start(&dir.0, setup(io)) else {
            continue;
        };
        // Two OPTIONS pipelined in one write, each answered 200 on this connection.
        let mut c = connect(&app);
        let local = c.local_addr().unwrap();
        let two = format!(
            "{}{}",
            options(local, app.sip, 1),
            options(local, app.sip, 2)
        );
        c.write_all(two.as_bytes()).unwrap();
        let (got, closed) = read_until(&mut c, b"CSeq: 2 OPTIONS");
        let text = String::from_utf8_lossy(&got);
        assert!(!closed, "{io:?}: {text}");
        assert_eq!(text.matches("SIP/2.0 200").count(), 2, "{io:?}: {text}");
        // The keep-alive ping gets its pong (RFC 5626 §4.4.1).
        c.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        c.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\r\n");
        assert_eq!(wait_metric(&app, "sipfork_tcp_pings_total", 1), 1);
        assert!(wait_metric(&app, "sipfork_tcp_messages_total", 2) >= 2);

        // A body over the 64 KiB default: the connection is closed as soon as the header says so.
        let mut big = connect(&app);
        let header =
            options(local, app.sip, 3).replace("Content-Length: 0", "Content-Length: 70000");
        big.write_all(header.as_bytes()).unwrap();
        assert!(read_until(&mut big, b"").1, "{io:?}: closed");
        assert_eq!(wait_metric(&app, "sipfork_tcp_closed_oversize_total", 1), 1);

        // Silent for longer than idle_seconds = 2: closed and counted.
        drop(c);
        let mut idle = connect(&app);
        let t = Instant::now();
        assert!(
            read_until(&mut idle, b"").1,
            "{io:?}: idle connection closed"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(1900),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(wait_metric(&app, "sipfork_tcp_closed_idle_total", 1), 1);
    }
}

#[test]
fn sipp_registers_over_tcp() {
    if !sipp_present() {
        return;
    }
    const EXTENSIONS: u32 = 50;
    let dir = Scratch::new("tcp-sipp");
    let app = Appliance::start(&dir.0, setup(Io::Mmsg)).expect("mmsg always starts");
    let csv = dir.0.join("reg.csv");
    let mut rows = String::from("SEQUENTIAL\n");
    for ext in 1000..1000 + EXTENSIONS {
        rows += &format!(
            // (`;` separates SIPp's CSV fields, so no `;transport=tcp` here.)
            "{ext};<sip:{ext}@127.0.0.1:5071>, <sip:{ext}@127.0.0.1:5072>\n"
        );
    }
    std::fs::write(&csv, rows).unwrap();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/register.xml");
    let out = Command::new("timeout")
        .args([
            "60",
            "sipp",
            &app.sip.to_string(),
            "-sf",
            scenario,
            "-t",
            "t1",
        ])
        .arg("-inf")
        .arg(&csv)
        .args([
            "-m",
            &EXTENSIONS.to_string(),
            "-r",
            "100",
            "-i",
            "127.0.0.1",
        ])
        .args([
            "-p",
            &free_port().to_string(),
            "-nostdin",
            "-timeout",
            "50s",
        ])
        .args(["-recv_timeout", "5000"])
        .output()
        .expect("run sipp");
    assert!(
        out.status.success(),
        "sipp over TCP: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        app.metric_sum("sipfork_bindings"),
        2 * u64::from(EXTENSIONS)
    );
    // Two REGISTERs per extension, all over one TCP connection, none over UDP.
    assert_eq!(
        app.metric_sum("sipfork_tcp_messages_total"),
        2 * u64::from(EXTENSIONS)
    );
    assert_eq!(app.metric_sum("sipfork_tcp_accepted_total"), 1);
}

pub(crate) fn register(local: SocketAddr, server: SocketAddr, ext: u32) -> String {
    format!(
        "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-reg-{ext};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{ext}@{server}>;tag=r{ext}\r\nTo: <sip:{ext}@{server}>\r\n\
         Call-ID: reg-{ext}@e2e\r\nCSeq: 1 REGISTER\r\nContact: <sip:{ext}@{local};transport=tcp>\r\n\
         Expires: 300\r\nContent-Length: 0\r\n\r\n"
    )
}

pub(crate) fn invite(
    via: &str,
    local: SocketAddr,
    server: SocketAddr,
    ext: u32,
    n: u32,
    pad: usize,
) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0\r\na=x-pad:{}\r\n",
        "x".repeat(pad)
    );
    format!(
        "INVITE sip:{ext}@{server} SIP/2.0\r\nVia: SIP/2.0/{via} {local};branch=z9hG4bK-inv-{ext}-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1000@{server}>;tag=c{n}\r\nTo: <sip:{ext}@{server}>\r\n\
         Call-ID: inv-{ext}-{n}@e2e\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@{local}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// Reads one whole message (header block and Content-Length body) from a connection.
pub(crate) fn read_message(s: &mut impl Read, pending: &mut Vec<u8>) -> String {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(msg) = take_message(pending) {
            return msg;
        }
        let n = s.read(&mut buf).expect("read a message");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&buf[..n]);
    }
}

/// The first whole message in `pending` (header block and Content-Length body), taken out.
pub(crate) fn take_message(pending: &mut Vec<u8>) -> Option<String> {
    let end = pending.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&pending[..end]).to_string();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if pending.len() < end + 4 + body {
        return None;
    }
    let msg: Vec<u8> = pending.drain(..end + 4 + body).collect();
    Some(String::from_utf8_lossy(&msg).into_owned())
}

/// The next INVITE on a connection (the ACKs of earlier failed calls are skipped).
fn read_invite(s: &mut TcpStream, pending: &mut Vec<u8>) -> String {
    loop {
        let m = read_message(s, pending);
        if !m.starts_with("ACK ") {
            return m;
        }
    }
}

/// The response to `invite` the caller's UDP socket gets that is final (>= 200).
pub(crate) fn final_over_udp(sock: &UdpSocket) -> String {
    let mut buf = [0u8; 65536];
    loop {
        let n = sock.recv(&mut buf).expect("a response over UDP");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let status: u16 = text[8..11].parse().unwrap_or(0);
        if status >= 200 {
            return text;
        }
    }
}

/// The response to a request with `n` as its header `name` value copied (To tag, Via) for a
/// device answering `status`.
pub(crate) fn answer(req: &str, status: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for l in req.lines() {
        let keep = ["Via:", "v:", "From:", "Call-ID:", "CSeq:", "Record-Route:"];
        if keep.iter().any(|k| l.starts_with(k)) {
            out += l;
            out += "\r\n";
        } else if l.starts_with("To:") {
            out += l;
            out += ";tag=dev\r\n";
        }
    }
    out + "Content-Length: 0\r\n\r\n"
}

#[test]
fn devices_on_tcp_are_called_across_shards_and_not_after_their_connection_closed() {
    const DEVICES: u32 = 12;
    let dir = Scratch::new("tcp-shards");
    let mut setup = setup(Io::Mmsg);
    setup.shards = 2;
    setup.extensions = setup
        .extensions
        .replace("idle_seconds = 2", "idle_seconds = 60");
    let app = Appliance::start(&dir.0, setup).expect("mmsg always starts");
    // Each device on its own connection: the kernel spreads them over the two shards, and each
    // extension's bindings live on the shard its number hashes to.
    let mut devices = Vec::new();
    for k in 0..DEVICES {
        let ext = 1001 + k;
        let mut c = connect(&app);
        let local = c.local_addr().unwrap();
        c.write_all(register(local, app.sip, ext).as_bytes())
            .unwrap();
        let mut pending = Vec::new();
        let ok = read_message(&mut c, &mut pending);
        assert!(ok.starts_with("SIP/2.0 200"), "{ext}: {ok}");
        devices.push((ext, c, pending));
    }
    let devices_page = app.get_ok("/extensions/1001/devices");
    assert!(devices_page.contains("TCP"), "{devices_page}");

    // A UDP caller rings each: the INVITE arrives on the device's connection with a TCP Via,
    // the device's 486 reaches the caller over UDP.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let caller = udp.local_addr().unwrap();
    for (n, (ext, c, pending)) in devices.iter_mut().enumerate() {
        let inv = invite("UDP", caller, app.sip, *ext, n as u32, 0);
        udp.send_to(inv.as_bytes(), app.sip).unwrap();
        let got = read_invite(c, pending);
        assert!(got.starts_with("INVITE "), "{ext}: {got}");
        assert!(got.contains("Via: SIP/2.0/TCP "), "{ext}: {got}");
        c.write_all(answer(&got, "486 Busy Here").as_bytes())
            .unwrap();
        let fin = final_over_udp(&udp);
        assert!(fin.starts_with("SIP/2.0 486"), "{ext}: {fin}");
    }
    // Some went to another shard's connection (12 connections and numbers on 2 shards).
    assert!(app.metric_sum("sipfork_tcp_relayed_total") > 0);

    // A 3 KB INVITE from a caller on TCP to a device on TCP goes over TCP.
    let mut tc = connect(&app);
    let tlocal = tc.local_addr().unwrap();
    let (ext, c, pending) = &mut devices[0];
    let big = invite("TCP", tlocal, app.sip, *ext, 99, 3000);
    assert!(big.len() > 3000);
    tc.write_all(big.as_bytes()).unwrap();
    let got = read_invite(c, pending);
    assert!(got.starts_with("INVITE ") && got.len() > 3000, "{got}");
    c.write_all(answer(&got, "486 Busy Here").as_bytes())
        .unwrap();
    let mut tpending = Vec::new();
    loop {
        let r = read_message(&mut tc, &mut tpending);
        if !r.starts_with("SIP/2.0 1") {
            assert!(r.starts_with("SIP/2.0 486"), "{r}");
            break;
        }
    }

    // Every device hangs up its connection: a call to any of them gets 480.
    let closed_before = app.metric_sum("sipfork_tcp_closed_peer_total");
    devices.clear();
    assert!(
        wait_metric(
            &app,
            "sipfork_tcp_closed_peer_total",
            closed_before + u64::from(DEVICES)
        ) >= closed_before + u64::from(DEVICES)
    );
    for k in 0..DEVICES {
        let ext = 1001 + k;
        let inv = invite("UDP", caller, app.sip, ext, 100 + k, 0);
        udp.send_to(inv.as_bytes(), app.sip).unwrap();
        let fin = final_over_udp(&udp);
        assert!(fin.starts_with("SIP/2.0 480"), "{ext}: {fin}");
    }
}

// --- Connections sipfork opens itself (issue 16 point 4) ---

const OUTBOUND_TEST: &str =
    "tcp::a_tcp_contact_registered_over_udp_is_called_over_a_connection_sipfork_opens";

/// A REGISTER over UDP from `local` whose Contact is `contact`.
pub(crate) fn register_udp(
    local: SocketAddr,
    server: SocketAddr,
    ext: u32,
    contact: &str,
) -> String {
    format!(
        "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ureg-{ext};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{ext}@{server}>;tag=u{ext}\r\nTo: <sip:{ext}@{server}>\r\n\
         Call-ID: ureg-{ext}@e2e\r\nCSeq: 1 REGISTER\r\nContact: <{contact}>\r\n\
         Expires: 300\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Inside a fresh network namespace (it feeds hostile requests naming a third party): a device
/// registered over UDP with a `;transport=tcp` Contact (a test-side TCP listener on the same
/// port) is rung over a connection sipfork opens, with a TCP Via and two Record-Routes; its 486
/// reaches the UDP caller; a 3 KB INVITE from the UDP caller goes over the same connection
/// (no second connection, no 513); a device whose TCP port refuses gets its branch ended at
/// once (the caller's 500 well before Timer B); and requests naming a third party with
/// `;transport=tcp` (Request-URI, Route, a REGISTER's Contact) never make sipfork connect
/// to it: its listener on 127.0.0.23 sees no connection.
#[test]
fn a_tcp_contact_registered_over_udp_is_called_over_a_connection_sipfork_opens() {
    if !netns::inside() {
        netns::run_inside("tcp-out", OUTBOUND_TEST, &[]);
        return;
    }
    let dir = Scratch::new("tcp-out");
    let mut setup = setup(Io::Mmsg);
    setup.shards = 2;
    setup.extensions = setup
        .extensions
        .replace("idle_seconds = 2", "idle_seconds = 60\nconnect_seconds = 2");
    let app = Appliance::start(&dir.0, setup).expect("mmsg always starts");
    let third = std::net::TcpListener::bind("127.0.0.23:0").expect("bind the third party");
    third.set_nonblocking(true).unwrap();
    let third_addr = third.local_addr().unwrap();

    // The device: TCP and UDP on one port; it registers over UDP naming TCP.
    let port = free_port();
    let dev_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listener = std::net::TcpListener::bind(dev_addr).expect("device TCP port");
    let dev_udp = UdpSocket::bind(dev_addr).expect("device UDP port");
    dev_udp
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let contact = format!("sip:1001@{dev_addr};transport=tcp");
    dev_udp
        .send_to(
            register_udp(dev_addr, app.sip, 1001, &contact).as_bytes(),
            app.sip,
        )
        .unwrap();
    let ok = final_over_udp(&dev_udp);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    // A UDP caller rings it: sipfork connects.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let caller = udp.local_addr().unwrap();
    udp.send_to(
        invite("UDP", caller, app.sip, 1001, 1, 0).as_bytes(),
        app.sip,
    )
    .unwrap();
    let (mut conn, _) = listener.accept().expect("sipfork connects");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut pending = Vec::new();
    let got = read_invite(&mut conn, &mut pending);
    assert!(got.starts_with(&format!("INVITE {contact} ")), "{got}");
    assert!(got.contains("Via: SIP/2.0/TCP "), "{got}");
    assert_eq!(
        got.matches("Record-Route:").count() + got.matches(">, <").count(),
        2,
        "{got}"
    );
    conn.write_all(answer(&got, "486 Busy Here").as_bytes())
        .unwrap();
    let fin = final_over_udp(&udp);
    assert!(fin.starts_with("SIP/2.0 486"), "{fin}");

    // A 3 KB INVITE from the UDP caller: over the same connection, not 513.
    let big = invite("UDP", caller, app.sip, 1001, 2, 3000);
    assert!(big.len() > 3000);
    udp.send_to(big.as_bytes(), app.sip).unwrap();
    let got = read_invite(&mut conn, &mut pending);
    assert!(got.starts_with("INVITE ") && got.len() > 3000, "{got}");
    conn.write_all(answer(&got, "486 Busy Here").as_bytes())
        .unwrap();
    let fin = final_over_udp(&udp);
    assert!(fin.starts_with("SIP/2.0 486"), "{fin}");
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "a second connection");
    assert_eq!(app.metric_sum("sipfork_tcp_connects_total"), 1);

    // Hostile: a REGISTER for 1002 naming the third party (reached at its source instead,
    // `nat = auto`, where nothing listens on TCP: refused, the branch ends at once), an INVITE
    // to the third party's URI, and one with a Route to it.
    let evil = UdpSocket::bind("127.0.0.1:0").unwrap();
    evil.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let evil_addr = evil.local_addr().unwrap();
    let third_contact = format!("sip:1002@{third_addr};transport=tcp");
    evil.send_to(
        register_udp(evil_addr, app.sip, 1002, &third_contact).as_bytes(),
        app.sip,
    )
    .unwrap();
    assert!(final_over_udp(&evil).starts_with("SIP/2.0 200"));
    let started = Instant::now();
    udp.send_to(
        invite("UDP", caller, app.sip, 1002, 3, 0).as_bytes(),
        app.sip,
    )
    .unwrap();
    let fin = final_over_udp(&udp);
    assert!(fin.starts_with("SIP/2.0 500"), "{fin}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(wait_metric(&app, "sipfork_tcp_connect_failed_total", 1) >= 1);
    let to_third = invite("UDP", caller, app.sip, 1001, 4, 0).replacen(
        &format!("INVITE sip:1001@{} ", app.sip),
        &format!("INVITE sip:1001@{third_addr};transport=tcp "),
        1,
    );
    let routed = invite("UDP", caller, app.sip, 1003, 5, 0).replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nRoute: <sip:{third_addr};transport=tcp;lr>\r\n"),
        1,
    );
    for req in [to_third, routed] {
        udp.send_to(req.as_bytes(), app.sip).unwrap();
        let fin = final_over_udp(&udp);
        assert!(fin.starts_with("SIP/2.0 4"), "{fin}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        third.accept().is_err(),
        "sipfork connected to the third party"
    );
    assert_eq!(app.metric_sum("sipfork_tcp_connects_total"), 2);
}

/// Whether something listens on TCP `127.0.0.1:port` (`/proc/net/tcp`, state 0A), without
/// connecting to it.
fn tcp_listening(port: u16) -> bool {
    let needle = format!("0100007F:{port:04X} 00000000:0000 0A");
    std::fs::read_to_string("/proc/thread-self/net/tcp").is_ok_and(|t| t.contains(&needle))
}

/// SIPp as the device, listening on TCP only (`-t tn`), registered over UDP (a raw socket on
/// its port) with a `;transport=tcp` Contact: a SIPp caller over UDP calls it through sipfork,
/// which opens a connection to it; the device answers, the caller's ACK and BYE reach it over
/// the same connection (one opened, none refused), and both SIPp instances count the call
/// successful.
#[test]
fn sipp_on_tcp_answers_a_call_over_a_connection_sipfork_opens() {
    if !sipp_present() {
        return;
    }
    use crate::forking::{scenario, Sipp};
    let dir = Scratch::new("tcp-out-sipp");
    let app = Appliance::start(&dir.0, setup(Io::Mmsg)).expect("mmsg always starts");
    let port = free_port();
    let dev: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    {
        let reg = UdpSocket::bind(dev).expect("the device's UDP port");
        reg.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let contact = format!("sip:1001@{dev};transport=tcp");
        reg.send_to(
            register_udp(dev, app.sip, 1001, &contact).as_bytes(),
            app.sip,
        )
        .unwrap();
        assert!(final_over_udp(&reg).starts_with("SIP/2.0 200"));
    }
    let device = Sipp::start(
        &dir.0,
        "device",
        &[
            "-sf".into(),
            scenario("uas_answer.xml"),
            "-d".into(),
            "200".into(),
            "-t".into(),
            "tn".into(),
            // (SIPp refuses TCP when its default 50,000 sockets exceed the open-files limit.)
            "-max_socket".into(),
            "100".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            "1".into(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tcp_listening(port) {
        assert!(Instant::now() < deadline, "SIPp did not listen on TCP");
        std::thread::sleep(Duration::from_millis(20));
    }
    let users = dir.0.join("users.csv");
    std::fs::write(&users, "SEQUENTIAL\n1001\n").unwrap();
    let caller = Sipp::start(
        &dir.0,
        "caller",
        &[
            app.sip.to_string(),
            "-sf".into(),
            scenario("uac.xml"),
            "-inf".into(),
            users.display().to_string(),
            "-d".into(),
            "100".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            free_port().to_string(),
            "-m".into(),
            "1".into(),
        ],
    )
    .finish();
    assert_eq!(
        (caller.successful, caller.failed),
        (1, 0),
        "caller: {caller:?}"
    );
    let device = device.finish();
    assert_eq!(
        (device.successful, device.failed),
        (1, 0),
        "device: {device:?}"
    );
    assert_eq!(app.metric_sum("sipfork_tcp_connects_total"), 1);
    assert_eq!(app.metric_sum("sipfork_tcp_connect_failed_total"), 0);
    // INVITE, ACK and BYE written to it (and the answers to the caller over UDP).
    assert!(app.metric_sum("sipfork_tcp_sent_total") >= 3);
}
