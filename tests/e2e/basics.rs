//! Start-up, OPTIONS, admin endpoints and the clean stop.

use crate::harness::{each_backend, metric_sum, Setup};
use crate::phone::Phone;
use crate::registrar::contact;

#[test]
fn answers_options_reports_its_backend_and_stops_cleanly_on_sigterm() {
    each_backend("options", Setup::new, |app| {
        let mut phone = Phone::new(app.sip);
        for _ in 0..3 {
            let options = phone.options();
            let answer = phone.transact(&options);
            assert_eq!(answer.status, 200, "{}", answer.text);
            assert!(answer
                .header("Allow")
                .is_some_and(|a| a.contains("REGISTER")));
        }
        let health = app.get_ok("/health");
        assert!(health.contains("\"status\": \"ok\"") && health.contains("\"shards\": 2"));
        let page = app.get_ok("/metrics");
        let backend = app.setup.io.metric_name();
        for shard in 0..2 {
            let info = format!("sipfork_shard_info{{shard=\"{shard}\",backend=\"{backend}\"}} 1");
            assert!(page.contains(&info), "missing {info}:\n{page}");
        }
        assert_eq!(metric_sum(&page, "sipfork_requests_total"), 3, "{page}");
        assert!(metric_sum(&page, "sipfork_io_rx_datagrams_total") >= 3);
        assert!(metric_sum(&page, "sipfork_io_tx_datagrams_total") >= 3);
        assert!(page.contains("# TYPE sipfork_loop_turns_total counter"));
        assert!(
            page.contains("sipfork_journal_bytes{shard=\"1\"} 16"),
            "{page}"
        );
        assert!(metric_sum(&page, "sipfork_loop_control_jobs_total") >= 2);
        // The first group commit round runs 10 ms after start (then it sleeps while nothing
        // is written).
        let t0 = std::time::Instant::now();
        while app.metric_sum("sipfork_journal_sync_rounds_total") == 0 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(2),
                "no group commit round"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // With every journal clean the persistence thread sleeps: no rounds every 10 ms...
        let ms = std::time::Duration::from_millis;
        let mut rounds = app.metric_sum("sipfork_journal_sync_rounds_total");
        loop {
            std::thread::sleep(ms(150));
            let now = app.metric_sum("sipfork_journal_sync_rounds_total");
            if now == rounds {
                break;
            }
            assert!(
                t0.elapsed() < ms(3000),
                "the group commit never went to sleep"
            );
            rounds = now;
        }
        // ...and the first binding after that wakes it: the binding is fsynced at once.
        let syncs = app.metric_sum("sipfork_journal_syncs_total");
        let req = phone.register("1000", &[contact(&phone.contact_uri("1000"), "")], "");
        assert_eq!(phone.transact(&req).status, 200);
        let woke = std::time::Instant::now();
        while app.metric_sum("sipfork_journal_syncs_total") == syncs {
            assert!(woke.elapsed() < ms(1000), "the binding was not synced");
            std::thread::sleep(ms(2));
        }
        // Start-up names each shard's backend in the log too.
        let log = app.log();
        assert_eq!(
            log.matches(&format!("backend=\"{backend}\"")).count(),
            2,
            "{log}"
        );

        let status = app.signal_and_wait("TERM");
        assert!(status.success(), "exit status {status}:\n{}", app.log());
        let log = app.log();
        assert!(log.contains("stopped cleanly; journals flushed"), "{log}");
        for shard in 0..2 {
            let journal = app.data_dir.join(format!("shard-{shard}-of-2.journal"));
            let bytes = std::fs::read(&journal).expect("journal exists");
            assert_eq!(&bytes[..8], b"SIPFKJNL");
        }
        // Nothing listens any more.
        assert!(std::net::UdpSocket::bind(app.sip).is_ok(), "port released");
    });
}

#[test]
fn sigint_stops_it_like_sigterm() {
    each_backend(
        "sigint",
        |io| Setup {
            shards: 1,
            persist: false,
            ..Setup::new(io)
        },
        |app| {
            let status = app.signal_and_wait("INT");
            assert!(status.success(), "exit status {status}:\n{}", app.log());
            assert!(app.log().contains("signal=Interrupt"));
        },
    );
}

#[test]
fn admin_api_refuses_what_it_does_not_serve() {
    each_backend("admin-refusals", Setup::new, |app| {
        assert_eq!(app.get("/nothing").unwrap().0, 404);
        assert_eq!(app.get("/extensions/5000/devices").unwrap().0, 404);
        assert_eq!(app.get("/extensions/1000/devices").unwrap().0, 200);
        // A request line that is not HTTP gets 400; a POST gets 405.
        let raw = |req: &str| {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(app.admin).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert!(raw("hello\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(raw("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // A client that connects and says nothing is cut off; the listener keeps serving.
        let _silent = std::net::TcpStream::connect(app.admin).unwrap();
        assert_eq!(app.get("/health").unwrap().0, 200);
    });
}

/// A request longer than the receive buffers is answered 513 (the shard sees only its head) and
/// counted; the next normal request is served as usual.
#[test]
fn a_request_longer_than_the_receive_buffer_gets_513() {
    each_backend(
        "oversize",
        |io| Setup {
            shards: 1,
            persist: false,
            ..Setup::new(io)
        },
        |app| {
            let mut phone = Phone::new(app.sip);
            let options = phone.options();
            let pad = format!("X-Pad: {}\r\n", "a".repeat(9000));
            let big = options.replacen(
                "Max-Forwards: 70\r\n",
                &format!("Max-Forwards: 70\r\n{pad}"),
                1,
            );
            assert!(big.len() > 9000);
            let answer = phone.transact(&big);
            assert_eq!(answer.status, 513, "{}", answer.text);
            assert!(answer.text.starts_with("SIP/2.0 513 Message Too Large\r\n"));
            let options = phone.options();
            assert_eq!(phone.transact(&options).status, 200);
            assert_eq!(app.metric_sum("sipfork_io_truncated_total"), 1);
        },
    );
}
