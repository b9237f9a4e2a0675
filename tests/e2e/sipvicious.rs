//! Real attack tools against the real binary with digest on: SIPVicious (PyPI `sipvicious`,
//! installed by `scripts/install-deps.sh`).
//!
//! - `svwar` scans extensions 1000-1010 (provisioned) and 2000-2005 (not) with REGISTER, INVITE
//!   and OPTIONS, and finds nothing: every number gets the same challenge until credentials
//!   verify (README "Security model").
//! - `svcrack` guesses extension 1000's password from a 1,000-word list whose last word is the
//!   right one, and is blocked after `max_auth_failures` wrong answers, so it never finds it;
//!   meanwhile a phone on another address registers 1000 with the right password.
//!
//! Hostile input goes to a running proxy, so the test runs in a fresh network namespace with only
//! loopback (created, entered and removed by the test; skipped with a printed reason without
//! root). Skipped where SIPVicious is missing unless `SIPFORK_REQUIRE_SIPVICIOUS` is set (as
//! `scripts/test.sh` does).

use std::process::Command;

use crate::harness::{Appliance, Io, Scratch, Setup};
use crate::netns;
use crate::phone::Phone;
use crate::registrar::{authorization, challenge};
use sipfork::core::registrar::digest::Algorithm;

const TEST_NAME: &str = "sipvicious::svwar_finds_no_extension_and_svcrack_is_blocked";

#[test]
fn svwar_finds_no_extension_and_svcrack_is_blocked() {
    if netns::inside() {
        return in_namespace();
    }
    let required = std::env::var_os("SIPFORK_REQUIRE_SIPVICIOUS").is_some();
    if Command::new("sipvicious_svwar")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !required,
            "SIPVicious is required (SIPFORK_REQUIRE_SIPVICIOUS is set) but sipvicious_svwar is missing"
        );
        eprintln!("skipping the SIPVicious test: sipvicious_svwar is not installed (scripts/install-deps.sh installs it)");
        return;
    }
    netns::run_inside("sipvicious", TEST_NAME, &[]);
}

/// Runs a SIPVicious tool to its end (bounded) and returns everything it printed.
fn run_tool(tool: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("180")
        .arg(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{tool} {args:?}:\n{text}");
    assert_ne!(
        out.status.code(),
        Some(124),
        "{tool} ran past its time limit"
    );
    text
}

fn in_namespace() {
    let scratch = Scratch::new("sipvicious");
    let setup = Setup {
        auth: "digest",
        // svcrack answers MD5 challenges only.
        auth_extra: "algorithms = [\"MD5\"]".into(),
        ..Setup::new(Io::Mmsg)
    };
    let app = Appliance::start(&scratch.0, setup).expect("the mmsg backend always starts");
    let port = app.sip.port().to_string();

    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        let out = run_tool(
            "sipvicious_svwar",
            &[
                "--force",
                "-e1000-1010,2000-2005",
                "-m",
                method,
                "-p",
                &port,
                "127.0.0.1",
            ],
        );
        assert!(
            out.contains("found nothing"),
            "{method}: svwar reported:\n{out}"
        );
        for ext in ["1000", "1005", "1010", "2000"] {
            assert!(
                !out.contains(&format!("| {ext}")),
                "{method}: {ext} reported:\n{out}"
            );
        }
    }

    let words = scratch.0.join("words.txt");
    let mut list: String = (1..1000).map(|i| format!("guess{i}\n")).collect();
    list.push_str("pw-1000\n");
    std::fs::write(&words, list).unwrap();
    let out = run_tool(
        "sipvicious_svcrack",
        &[
            "-u",
            "1000",
            "-d",
            words.to_str().unwrap(),
            "-p",
            &port,
            "127.0.0.1",
        ],
    );
    assert!(
        !out.contains("pw-1000"),
        "svcrack found the password:\n{out}"
    );
    assert!(out.contains("found nothing"), "{out}");
    let log = app.log();
    assert!(
        log.contains("source blocked src=127.0.0.1 user=1000 failures=10"),
        "one log line for the block:\n{log}"
    );
    assert!(app.metric_sum("sipfork_auth_blocks_total") >= 1);
    assert!(app.metric_sum("sipfork_auth_blocked_requests_total") >= 1);

    // The real phone, on another address, registers 1000 with the right password.
    let server = app.sip.to_string();
    let mut phone = Phone::new_on("127.0.0.2", app.sip);
    let contacts = [format!("<{}>", phone.contact_uri("1000"))];
    let req = phone.register("1000", &contacts, "Expires: 3600\r\n");
    let r = phone.transact(&req);
    let (nonce, _) = challenge(&r);
    let auth = authorization("1000", &server, Algorithm::Md5, &nonce, 1);
    let req = phone.register("1000", &contacts, &format!("{auth}Expires: 3600\r\n"));
    let r = phone.transact(&req);
    assert_eq!(r.status, 200, "{}", r.text);
}
