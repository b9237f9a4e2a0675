//! The shipped `examples/sipfork.toml` works with the tools the project installs: SIPp 3.6
//! registers with `-au/-ap` (SIPp's digest is MD5 only) and a call reaches the registered device.
//! The test runs that very file; `harness::example_config` changes only its listen port,
//! data_dir and admin address (so tests run in parallel and leave /tmp/sipfork-example alone).
//! The baresip counterpart (which answers both the 401 and the 407) is
//! `baresip::baresip_phones_call_through_the_shipped_example`.
//!
//! The SIPp caller sends from 127.0.0.2, the example's `[[trusted]]` "local-test-pbx", so its
//! INVITE is not challenged: SIPp 3.6 computes its digest over `uri="sip:REMOTE_IP:PORT"`
//! whatever the Request-URI (and ignores `[authentication uri=...]` for MD5), which sipfork
//! answers with `400 digest uri does not match the Request-URI` (RFC 7616 §3.4.6), so a SIPp
//! caller cannot answer a 407 for `sip:1000@...`. Registration is not affected (its
//! Request-URI is `sip:REMOTE_IP:PORT`).

use std::time::{Duration, Instant};

use crate::forking::{scenario, udp_bound, Sipp};
use crate::harness::{free_port, metric_sum, metric_sum_where, proxy_event, Appliance, Scratch};
use crate::sipp::sipp_present;

#[test]
fn sipp_registers_and_calls_through_the_shipped_example() {
    if !sipp_present() {
        return;
    }
    let dir = Scratch::new("example-sipp");
    let app = Appliance::start_example(&dir.0);
    let device_port = free_port();

    // The device registers 1000 with digest (401, then Authorization), as SIPp does it.
    let reg_csv = dir.0.join("register.csv");
    std::fs::write(
        &reg_csv,
        format!("SEQUENTIAL\n1000;sip:1000@127.0.0.1:{device_port}\n"),
    )
    .unwrap();
    let args: Vec<String> = [
        app.sip.to_string(),
        "-sf".into(),
        scenario("register_auth.xml"),
        "-inf".into(),
        reg_csv.display().to_string(),
        "-au".into(),
        "1000".into(),
        "-ap".into(),
        "pw-1000".into(),
        "-m".into(),
        "1".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        free_port().to_string(),
    ]
    .into();
    let register = Sipp::start(&dir.0, "register", &args).finish();
    assert_eq!(
        (register.successful, register.failed),
        (1, 0),
        "{register:?}"
    );
    assert_eq!(app.metric_sum("sipfork_bindings"), 1);

    // The device answers one call; the trusted PBX address calls 1000.
    let device_args: Vec<String> = [
        "-sf".into(),
        scenario("uas_answer.xml"),
        "-d".into(),
        "100".into(),
        "-m".into(),
        "1".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        device_port.to_string(),
    ]
    .into();
    let device = Sipp::start(&dir.0, "device", &device_args);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !udp_bound(device_port) {
        assert!(Instant::now() < deadline, "the SIPp device did not bind");
        std::thread::sleep(Duration::from_millis(20));
    }
    let call_csv = dir.0.join("call.csv");
    std::fs::write(&call_csv, "SEQUENTIAL\n1000\n").unwrap();
    let caller_args: Vec<String> = [
        app.sip.to_string(),
        "-sf".into(),
        scenario("uac.xml"),
        "-inf".into(),
        call_csv.display().to_string(),
        "-d".into(),
        "200".into(),
        "-m".into(),
        "1".into(),
        "-i".into(),
        "127.0.0.2".into(),
        "-p".into(),
        free_port().to_string(),
    ]
    .into();
    let caller = Sipp::start(&dir.0, "caller", &caller_args).finish();
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

    let page = app.get_ok("/metrics");
    assert_eq!(proxy_event(&page, "call"), 1, "{page}");
    assert_eq!(proxy_event(&page, "dialog_ended"), 1, "{page}");
    // The REGISTER was challenged (401) and answered with MD5, the trusted caller was not.
    let challenges = |header: &str| {
        metric_sum_where(
            &page,
            "sipfork_auth_challenges_total",
            &format!("header=\"{header}\""),
        )
    };
    assert_eq!(challenges("www-authenticate"), 1, "{page}");
    assert_eq!(challenges("proxy-authenticate"), 0, "{page}");
    assert_eq!(
        metric_sum(&page, "sipfork_auth_successes_total"),
        1,
        "{page}"
    );
}
