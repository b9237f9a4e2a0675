//! The admin listener and the operator's controls: `promtool check metrics` on `/metrics`,
//! slow and idle clients that must not block `/health` or a stop, `POST /reload` and its bearer
//! token, SIGHUP reloads that change passwords and ranges (and refuse a broken file), the drain
//! on SIGTERM, and a reload under the load harness with zero failed calls.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sipfork::core::registrar::digest::Algorithm;

use crate::harness::{metric_sum, metric_sum_where, Appliance, Io, Scratch, Setup, BIN};
use crate::phone::Phone;
use crate::registrar::{authorization_with, challenge, contact, devices};

const TOKEN: &str = "e2e-token-0123456789abcdef";

/// Held by the timing test and the load test, so the load does not skew the timing.
static TIMING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn quiet() -> std::sync::MutexGuard<'static, ()> {
    TIMING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One HTTP/1.1 request with `Connection: close`; the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the answer");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

#[test]
fn metrics_pass_promtool_and_carry_shard_up_and_histograms() {
    let dir = Scratch::new("promtool");
    let Some(app) = Appliance::start(&dir.0, Setup::new(Io::Mmsg)) else {
        return;
    };
    let mut phone = Phone::new(app.sip);
    let ping = phone.options();
    assert_eq!(phone.transact(&ping).status, 200);
    // A binding, so the journal is written and the group commit fsyncs it.
    let req = phone.register("1000", &[contact(&phone.contact_uri("1000"), "")], "");
    assert_eq!(phone.transact(&req).status, 200);
    std::thread::sleep(Duration::from_millis(100)); // a few group commit rounds
    let page = app.get_ok("/metrics");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/install-deps.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{page}"
    );
    for shard in 0..2 {
        assert!(
            page.contains(&format!("sipfork_shard_up{{shard=\"{shard}\"}} 1\n")),
            "{page}"
        );
    }
    for family in [
        "sipfork_loop_turn_seconds",
        "sipfork_loop_batch_size",
        "sipfork_journal_fsync_seconds",
    ] {
        assert!(
            page.contains(&format!("# TYPE {family} histogram\n")),
            "{family}\n{page}"
        );
        assert!(
            metric_sum(&page, &format!("{family}_count")) > 0,
            "{family}\n{page}"
        );
    }
    assert!(metric_sum(&page, "sipfork_requests_total") >= 1);
}

#[test]
fn slow_and_idle_clients_block_neither_health_nor_a_stop() {
    let _quiet = quiet();
    let dir = Scratch::new("slowloris");
    let Some(mut app) = Appliance::start(&dir.0, Setup::new(Io::Mmsg)) else {
        return;
    };
    let admin = app.admin;
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(admin).expect("idle connection"))
        .collect();
    // A byte every 1.5 s: the request head never completes in time.
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(admin).unwrap();
        let started = Instant::now();
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1500));
            if started.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
        // Cut off: the server closed (an error or an empty answer), never a 200.
        let mut answer = Vec::new();
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = s.read_to_end(&mut answer);
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t0 = Instant::now();
        let (status, _) = app.get("/health").expect("health");
        slowest = slowest.max(t0.elapsed());
        assert_eq!(status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("slowest /health of 20 beside 100 idle connections and a slow client: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(100),
        "/health took {slowest:?}"
    );
    let (lasted, answer) = slow.join().unwrap();
    assert!(
        lasted < Duration::from_secs(6) && !answer.contains(" 200 "),
        "the slow client was served or kept for {lasted:?}: {answer:?}"
    );
    let page = app.get_ok("/metrics");
    assert!(
        metric_sum(&page, "sipfork_admin_timeouts_total") >= 1,
        "{page}"
    );
    // Open connections do not hold up a stop.
    let more: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(admin).unwrap())
        .collect();
    let t0 = Instant::now();
    let status = app.signal_and_wait("TERM");
    assert!(status.success());
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t0.elapsed()
    );
    drop((idle, more));
}

#[test]
fn connections_beyond_the_cap_are_closed_and_the_listener_recovers() {
    let dir = Scratch::new("admin-cap");
    let Some(app) = Appliance::start(&dir.0, Setup::new(Io::Mmsg)) else {
        return;
    };
    let mut held: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(app.admin).expect("connect"))
        .collect();
    // The excess is closed at once (its read sees the end); the rest stay open until the header
    // timeout (2 s).
    std::thread::sleep(Duration::from_millis(300));
    let closed = held
        .iter_mut()
        .filter_map(|s| {
            s.set_nonblocking(true).unwrap();
            matches!(s.read(&mut [0u8; 16]), Ok(0)).then_some(())
        })
        .count();
    assert!((300 - 256..=300 - 200).contains(&closed), "{closed} closed");
    // The held ones are cut after the header timeout, and the listener serves again.
    std::thread::sleep(Duration::from_millis(2500));
    let page = app.get_ok("/metrics");
    assert!(
        metric_sum(&page, "sipfork_admin_connections_refused_total") >= 44,
        "{page}"
    );
    assert_eq!(app.get("/health").unwrap().0, 200);
    drop(held);
}

#[test]
fn post_reload_needs_the_configured_bearer_token() {
    let dir = Scratch::new("reload-token");
    let Some(mut app) = Appliance::start(&dir.0, Setup::new(Io::Mmsg)) else {
        return;
    };
    let (status, body) = http(app.admin, "POST", "/reload", "");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin_token"), "{body}");
    assert_eq!(http(app.admin, "GET", "/reload", "").0, 405);
    // The token itself is reloadable: SIGHUP turns HTTP reloads on.
    app.rewrite_config(|s| s.server_extra = format!("admin_token = \"{TOKEN}\"\n"));
    app.signal("HUP");
    assert!(
        app.wait_log(
            "reloaded: applied server.admin_token",
            1,
            Duration::from_secs(5)
        ),
        "{}",
        app.log()
    );
    assert_eq!(http(app.admin, "POST", "/reload", "").0, 401);
    let wrong = "Authorization: Bearer e2e-token-0123456789abcdeX\r\n";
    assert_eq!(http(app.admin, "POST", "/reload", wrong).0, 401);
    let basic = format!("Authorization: Basic {TOKEN}\r\n");
    assert_eq!(http(app.admin, "POST", "/reload", &basic).0, 401);
    let right = format!("Authorization: Bearer {TOKEN}\r\n");
    let (status, body) = http(app.admin, "POST", "/reload", &right);
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "reloaded: nothing that applies without a restart changed\n"
        )
    );
    let page = app.get_ok("/metrics");
    assert_eq!(metric_sum(&page, "sipfork_admin_unauthorized_total"), 4);
    assert_eq!(
        metric_sum_where(&page, "sipfork_config_reloads_total", "result=\"applied\""),
        2
    );
    assert!(app.log().contains("POST /reload refused: bad bearer token"));
    // A file that does not validate is refused over HTTP too, with its error.
    std::fs::write(
        &app.config,
        "[server]\nlisten = \"127.0.0.1:5060\"\nshards = 0\n",
    )
    .unwrap();
    let (status, body) = http(app.admin, "POST", "/reload", &right);
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("server.shards") && body.contains("running configuration stays"),
        "{body}"
    );
}

/// REGISTERs `ext` with digest and `password`; the final status.
fn register_digest(app: &Appliance, ext: &str, password: &str) -> u16 {
    let mut phone = Phone::new(app.sip);
    let contacts = [contact(&phone.contact_uri(ext), "")];
    let req = phone.register(ext, &contacts, "Expires: 3600\r\n");
    let (nonce, _) = challenge(&phone.transact(&req));
    let auth = authorization_with(
        password,
        ext,
        &app.sip.to_string(),
        Algorithm::Sha256,
        &nonce,
        1,
    );
    let req = phone.register(ext, &contacts, &format!("{auth}Expires: 3600\r\n"));
    phone.transact(&req).status
}

#[test]
fn sighup_applies_passwords_and_ranges_keeps_bindings_and_refuses_broken_files() {
    let dir = Scratch::new("reload-sighup");
    let setup = Setup {
        auth: "digest",
        ..Setup::new(Io::Mmsg)
    };
    let Some(app) = Appliance::start(&dir.0, setup) else {
        return;
    };
    let mut app = app;
    assert_eq!(register_digest(&app, "1004", "pw-1004"), 200);
    assert_eq!(app.get("/extensions/2500/devices").unwrap().0, 404);
    app.rewrite_config(|s| {
        s.extensions =
            "[[extensions]]\nnumbers = \"1000-2999\"\npassword = \"new-{number}\"\n".into();
    });
    app.signal("HUP");
    assert!(
        app.wait_log("reloaded: applied extensions", 1, Duration::from_secs(5)),
        "{}",
        app.log()
    );
    // The binding made before the reload is still there; the new password and range apply.
    assert_eq!(devices(&app, "1004").devices.len(), 1);
    assert_eq!(register_digest(&app, "2500", "new-2500"), 200);
    assert_eq!(register_digest(&app, "1004", "pw-1004"), 403);
    assert_eq!(register_digest(&app, "1004", "new-1004"), 200);
    assert_eq!(devices(&app, "2500").devices.len(), 1);
    // A broken file is refused and the running configuration stays.
    let good = std::fs::read_to_string(&app.config).unwrap();
    std::fs::write(&app.config, good.replace("new-{number}", "{nmber}")).unwrap();
    app.signal("HUP");
    assert!(
        app.wait_log("reload refused", 1, Duration::from_secs(5)),
        "{}",
        app.log()
    );
    assert!(
        app.log().contains("extensions[0].password"),
        "{}",
        app.log()
    );
    assert_eq!(register_digest(&app, "2501", "new-2501"), 200);
    // A change that needs a restart is named and not applied: the old port keeps serving.
    std::fs::write(
        &app.config,
        good.replace(&app.sip.to_string(), "127.0.0.1:9"),
    )
    .unwrap();
    app.signal("HUP");
    assert!(
        app.wait_log(
            "not applied, needs a restart: server.listen",
            1,
            Duration::from_secs(5)
        ),
        "{}",
        app.log()
    );
    let mut phone = Phone::new(app.sip);
    let ping = phone.options();
    assert_eq!(phone.transact(&ping).status, 200);
    // SIGHUP never stops the process, and a stop after reloads still flushes.
    let status = app.signal_and_wait("TERM");
    assert!(status.success());
    assert!(app.log().contains("journals flushed"));
}

/// The rows named `name` of a SIP message, in order.
fn rows<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn recv(sock: &UdpSocket) -> String {
    let mut buf = [0u8; 8192];
    let (n, _) = sock.recv_from(&mut buf).expect("a datagram in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The next request (skipping responses such as retransmitted 200s) on `sock`.
fn recv_request(sock: &UdpSocket, method: &str) -> String {
    loop {
        let m = recv(sock);
        if m.starts_with(method) {
            return m;
        }
    }
}

/// The next final response to `method` on `sock`.
fn recv_final(sock: &UdpSocket, method: &str) -> String {
    loop {
        let m = recv(sock);
        let status: u16 = m
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if m.starts_with("SIP/2.0") && status >= 200 && rows(&m, "CSeq")[0].ends_with(method) {
            return m;
        }
    }
}

/// The answer to `req` that the device at `me` gives: `status`, its To tag, every Via and
/// Record-Route of the request.
fn answer(req: &str, status: &str, me: SocketAddr) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for v in rows(req, "Via") {
        out += &format!("Via: {v}\r\n");
    }
    for r in rows(req, "Record-Route") {
        out += &format!("Record-Route: {r}\r\n");
    }
    let to = rows(req, "To")[0];
    let to = if to.contains("tag=") {
        to.to_owned()
    } else {
        format!("{to};tag=dev")
    };
    out += &format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:1000@{me}>\r\nContent-Length: 0\r\n\r\n",
        rows(req, "From")[0],
        rows(req, "Call-ID")[0],
        rows(req, "CSeq")[0],
    );
    out
}

fn invite(proxy: SocketAddr, me: SocketAddr, call: &str) -> String {
    format!(
        "INVITE sip:1000@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{call};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{me}>;tag=c-{call}\r\nTo: <sip:1000@{proxy}>\r\n\
         Call-ID: {call}@e2e\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An in-dialog request of the caller at `me` after the 2xx `ok`: the route set is the 2xx's
/// Record-Route rows in reverse, the target its Contact.
fn in_dialog(method: &str, cseq: u32, ok: &str, me: SocketAddr, branch: &str) -> String {
    let target = rows(ok, "Contact")[0].trim_matches(['<', '>']);
    let mut routes: Vec<&str> = rows(ok, "Record-Route")
        .iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
        .collect();
    routes.reverse();
    let route_rows: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{branch};rport\r\n\
         Max-Forwards: 70\r\n{route_rows}From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        rows(ok, "From")[0],
        rows(ok, "To")[0],
        rows(ok, "Call-ID")[0],
    )
}

fn udp() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

#[test]
fn drain_answers_new_invites_503_while_an_established_call_ends() {
    const DRAIN_S: u64 = 4;
    let dir = Scratch::new("drain");
    let setup = Setup {
        shards: 1,
        server_extra: format!("drain_seconds = {DRAIN_S}\n"),
        ..Setup::new(Io::Mmsg)
    };
    let Some(mut app) = Appliance::start(&dir.0, setup) else {
        return;
    };
    let proxy = app.sip;
    // The device registers; the caller calls it and the device answers.
    let (dev, dev_addr) = udp();
    let mut phone = Phone::new(proxy);
    let req = phone.register(
        "1000",
        &[format!("<sip:1000@{dev_addr}>")],
        "Expires: 3600\r\n",
    );
    assert_eq!(phone.transact(&req).status, 200);
    let (caller, caller_addr) = udp();
    caller
        .send_to(invite(proxy, caller_addr, "established").as_bytes(), proxy)
        .unwrap();
    let inv = recv_request(&dev, "INVITE");
    dev.send_to(answer(&inv, "200 OK", dev_addr).as_bytes(), proxy)
        .unwrap();
    let ok = recv_final(&caller, "INVITE");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let ack = in_dialog("ACK", 1, &ok, caller_addr, "ack-1");
    caller.send_to(ack.as_bytes(), proxy).unwrap();
    recv_request(&dev, "ACK");

    app.signal("TERM");
    assert!(
        app.wait_log("draining", 1, Duration::from_secs(3)),
        "{}",
        app.log()
    );
    // A new call is refused with 503 and Retry-After.
    let (other, other_addr) = udp();
    other
        .send_to(invite(proxy, other_addr, "during-drain").as_bytes(), proxy)
        .unwrap();
    let refused = recv_final(&other, "INVITE");
    assert!(refused.starts_with("SIP/2.0 503"), "{refused}");
    assert_eq!(rows(&refused, "Retry-After"), [DRAIN_S.to_string()]);
    // The established call's BYE still goes through, and its 200 comes back.
    let bye = in_dialog("BYE", 2, &ok, caller_addr, "bye-1");
    caller.send_to(bye.as_bytes(), proxy).unwrap();
    let bye_in = recv_request(&dev, "BYE");
    dev.send_to(answer(&bye_in, "200 OK", dev_addr).as_bytes(), proxy)
        .unwrap();
    let bye_ok = recv_final(&caller, "BYE");
    assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");
    // Then the process stops by itself within the drain time, journals flushed.
    let status = app.wait_exit(Duration::from_secs(DRAIN_S + 3), "TERM");
    assert!(status.success(), "{}", app.log());
    assert!(app.log().contains("journals flushed"), "{}", app.log());
}

/// `target/release/sipfork-load` beside the binary under test, built when missing.
fn load_harness() -> std::path::PathBuf {
    let bin = std::path::Path::new(BIN).with_file_name("sipfork-load");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = if BIN.contains("/release/") {
            "--release"
        } else {
            "--quiet"
        };
        let built = Command::new(cargo)
            .args(["build", profile, "-p", "sipfork-load"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build -p sipfork-load");
        assert!(built.success(), "building the load harness failed");
    }
    bin
}

/// The load harness's fork3 preset (each call: three devices ring, one answers, two are
/// cancelled) at 200 calls/s for 5 s against the binary, in a fresh network namespace with only
/// loopback; two SIGHUPs during the run, the second applying a change. Zero failed calls.
#[test]
fn reload_under_load_fails_no_call() {
    let _quiet = quiet();
    let dir = Scratch::new("reload-load");
    let lt = load_harness();
    let script = format!(
        r#"set -u
ip link set lo up
cd {dir}
{lt} proxy-config --preset fork3 --shards 2 --io mmsg > sf.toml || exit 10
sed -i 's/^shards = 2$/shards = 2\nadmin = "127.0.0.1:5080"/' sf.toml
{sf} --config sf.toml 2> sf.log &
SF=$!
for i in $(seq 100); do curl -sf -m 1 http://127.0.0.1:5080/health > /dev/null && break; sleep 0.05; done
( sleep 2; kill -HUP $SF; sleep 1; printf '\n[[trusted]]\ncidr = "10.0.0.0/8"\n' >> sf.toml; kill -HUP $SF ) &
HUP=$!
timeout 60 {lt} run --preset fork3 --rate 200 --duration 5 --quiet --proxy-pid none --out {dir} --label reload > lt.out 2>&1
RC=$?
wait $HUP
kill -TERM $SF; wait $SF
echo "sipfork exit $?" >> sf.log
exit $RC
"#,
        dir = dir.0.display(),
        lt = lt.display(),
        sf = BIN,
    );
    let out = Command::new("timeout")
        .args(["120", "unshare", "--net", "bash", "-c", &script])
        .output()
        .expect("unshare");
    let read = |name: &str| std::fs::read_to_string(dir.0.join(name)).unwrap_or_default();
    let (lt_out, sf_log) = (read("lt.out"), read("sf.log"));
    let context = format!(
        "{}{}\n--- harness\n{lt_out}\n--- sipfork\n{sf_log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{context}");
    assert!(lt_out.contains("RESULT"), "{context}");
    eprintln!(
        "{}",
        lt_out
            .lines()
            .filter(|l| l.contains("RESULT"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        sf_log.contains("reloaded: nothing that applies"),
        "{context}"
    );
    assert!(sf_log.contains("reloaded: applied trusted"), "{context}");
    assert!(sf_log.contains("sipfork exit 0"), "{context}");
}
