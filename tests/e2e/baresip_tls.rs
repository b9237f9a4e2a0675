//! A real phone over TLS beside a UDP phone of the same extension: sipfork listens on
//! `["udp:…", "tls:…"]` with a certificate the test generates for 127.0.0.1; baresip registers
//! over TLS (`;transport=tls` in its account, `sip_cafile` naming that certificate), a second
//! baresip registers over UDP, both as 1000, and a third calls 1000 over UDP. Both ring, each
//! over its own transport; the TLS phone answers (200, the caller's ACK and later its BYE reach
//! it over its TLS connection), the UDP phone gets its CANCEL over UDP, answers 487 and gets the
//! ACK; the caller hangs up and the dialog ends in sipfork.
//!
//! baresip 1.0 (libre 1.1) loads the CA file but accepts any server certificate: tried with a
//! CA file naming another certificate, the phone registered all the same. So this test shows
//! the TLS transport with a real phone; certificate verification by the client is shown by the
//! rustls client in `tls`.
//!
//! Like `baresip`, it runs in a fresh network namespace of its own (only loopback and a veth
//! pair inside it), and is skipped with a printed reason where baresip is missing or was built
//! without TLS.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::baresip::{
    account, assert_cancelled_elsewhere, enter_namespace, traced, wait_dialog_ended,
    write_phone_config, write_tone, Baresip, Traced,
};
use crate::harness::{proxy_event, Appliance, Io, Scratch, Setup};
use crate::netns;
use crate::tls::write_certificate;

#[test]
fn baresip_over_tls_and_a_udp_phone_both_ring_one_answers() {
    if netns::inside() {
        let dir = Scratch::new("baresip-tls");
        write_certificate(&dir.0);
        let setup = Setup {
            shards: 2,
            persist: false,
            auth: "digest",
            auth_extra: "algorithms = [\"MD5\"]".into(),
            tls: true,
            ..Setup::new(Io::Mmsg)
        };
        let app = Appliance::start(&dir.0, setup).expect("mmsg always starts");
        return tls_and_udp_phones(&app, &dir);
    }
    enter_namespace(
        "baresip-tls",
        "baresip_tls::baresip_over_tls_and_a_udp_phone_both_ring_one_answers",
    );
}

/// A phone registered through sipfork's TLS listener `proxy`, verifying its certificate
/// against `ca`.
fn tls_phone(dir: &Path, port: u16, tone: &Path, ext: u32, proxy: &str, ca: &Path) {
    let account = format!(
        "<sip:{ext}@127.0.0.1;transport=tls>;auth_pass=pw-{ext};regint=300;\
         outbound=\"sip:{proxy};transport=tls\";answermode=auto"
    );
    write_phone_config(dir, port, tone, &account);
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("config"))
        .unwrap();
    writeln!(config, "sip_cafile {}", ca.display()).unwrap();
}

fn tls_and_udp_phones(app: &Appliance, dir: &Scratch) {
    let (udp_proxy, tls_proxy) = (app.sip.to_string(), app.tls.to_string());
    let (short_tone, long_tone) = (dir.0.join("short.wav"), dir.0.join("long.wav"));
    write_tone(&short_tone, 1);
    write_tone(&long_tone, 30);
    // Ports spaced by 10: baresip also listens for TLS on its SIP port + 1.
    let (tls_dir, udp_dir, caller_dir) =
        (dir.0.join("tls"), dir.0.join("udp"), dir.0.join("caller"));
    tls_phone(
        &tls_dir,
        5110,
        &long_tone,
        1000,
        &tls_proxy,
        &dir.0.join("cert.pem"),
    );
    write_phone_config(
        &udp_dir,
        5120,
        &long_tone,
        &account(1000, &udp_proxy, "manual"),
    );
    write_phone_config(
        &caller_dir,
        5130,
        &short_tone,
        &account(1001, &udp_proxy, "manual"),
    );
    let mut tls = Baresip::start(&tls_dir, 30, &[]);
    let mut udp = Baresip::start(&udp_dir, 30, &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.metric_sum("sipfork_bindings") < 2 {
        let log = tls.log();
        if ["tls_alloc() failed", "SIP/TLS transport failed"]
            .iter()
            .any(|e| log.contains(e))
        {
            eprintln!("skipping the baresip TLS test: this baresip has no TLS transport:\n{log}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the two phones did not register:\n--- tls:\n{log}\n--- udp:\n{}\n--- sipfork:\n{}",
            udp.log(),
            app.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let devices = app.get_ok("/extensions/1000/devices");
    assert!(
        devices.contains("TLS") && devices.contains("UDP"),
        "{devices}"
    );

    let mut caller = Baresip::start(&caller_dir, 15, &["/dial 1000"]);
    tls.wait_for("Call established", "the TLS phone");
    caller.wait_for("Call established", "the caller");
    udp.wait_for("SIP/2.0 487", "the UDP phone");
    tls.wait_for("terminated", "the TLS phone after the caller hung up");
    wait_dialog_ended(app);
    for phone in [&mut tls, &mut udp, &mut caller] {
        phone.stop();
    }

    let (tls_log, udp_log, caller_log) = (tls.log(), udp.log(), caller.log());
    let all = format!("--- tls:\n{tls_log}\n--- udp:\n{udp_log}\n--- caller:\n{caller_log}");
    let t = traced(&tls_log);
    let u = traced(&udp_log);
    let from = |msgs: &[Traced], proxy: &str, start: &str| {
        msgs.iter()
            .filter(|m| m.from == proxy && m.text.starts_with(start))
            .count()
    };
    // What a phone sent (libre traces a response to its top Via's address, though it sends it
    // over the connection the request came on).
    let sent = |msgs: &[Traced], start: &str| {
        msgs.iter()
            .filter(|m| m.from != tls_proxy && m.from != udp_proxy && m.text.starts_with(start))
            .count()
    };
    // The TLS phone: registered, rung, answered and hung up, all over its TLS connection to
    // sipfork's TLS listener; its trace has no UDP message.
    assert!(tls_log.contains("\nTLS 127.0.0.1:"), "{all}");
    assert!(!tls_log.contains("\nUDP 127.0.0.1:"), "{all}");
    assert!(
        t.iter()
            .any(|m| m.to == tls_proxy && m.text.starts_with("REGISTER ")),
        "{all}"
    );
    assert_eq!(from(&t, &tls_proxy, "INVITE "), 1, "{all}");
    assert!(sent(&t, "SIP/2.0 180") >= 1, "{all}");
    assert!(sent(&t, "SIP/2.0 200") >= 1, "{all}");
    assert!(from(&t, &tls_proxy, "ACK ") >= 1, "{all}");
    assert!(from(&t, &tls_proxy, "BYE ") >= 1, "{all}");
    assert_eq!(from(&t, &udp_proxy, ""), 0, "{all}");
    // The UDP phone rang over UDP and got its CANCEL there, for the right reason.
    assert_eq!(from(&u, &udp_proxy, "INVITE "), 1, "{all}");
    assert!(sent(&u, "SIP/2.0 180") >= 1, "{all}");
    assert!(!udp_log.contains("Call established"), "{all}");
    assert_cancelled_elsewhere(&u, &udp_proxy, &all);
    assert!(sent(&u, "SIP/2.0 487") >= 1, "{all}");
    assert!(from(&u, &udp_proxy, "ACK ") >= 1, "{all}");

    let page = app.get_ok("/metrics");
    assert_eq!(proxy_event(&page, "call"), 1, "{page}");
    assert_eq!(proxy_event(&page, "cancel_sent"), 1, "{page}");
    assert!(app.metric_sum("sipfork_tcp_accepted_total") >= 1, "{page}");
}
