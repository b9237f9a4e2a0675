//! TCP beside UDP on the same port (`listen = ["udp:…", "tcp:…"]`): answers come back on the
//! connection the request came on, CRLFCRLF keep-alives get their CRLF, oversize and idle
//! connections are closed and counted, and SIPp registers over TCP (`-t t1`).
//!
//! One shard: a message the core hands to another shard is answered from there over UDP (see
//! docs/transports.md, "Not done yet").

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{free_port, Appliance, Io, Scratch, Setup};
use crate::sipp::sipp_present;

fn setup(io: Io) -> Setup {
    let mut s = Setup::new(io);
    s.tcp = true;
    s.shards = 1;
    s.extensions = format!("[tcp]\nidle_seconds = 2\n\n{}", s.extensions);
    s
}

fn options(local: std::net::SocketAddr, server: std::net::SocketAddr, n: u32) -> String {
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
