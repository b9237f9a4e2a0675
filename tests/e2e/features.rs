//! Move (`*75`, RFC 3891 Replaces) with real user agents: three PJSIP agents (pjsua2-python,
//! installed by `scripts/install-deps.sh`) driven by `tests/e2e/pjsua_move.py` against the real
//! binary with digest on and two shards. The caller (1001) calls 1000; device A answers (B's copy
//! is refused 482 by PJSIP itself: the three accounts share one PJSIP endpoint); B dials `*75`;
//! PJSIP (the caller) accepts the INVITE with Replaces that sipfork sends it, talks to B (media
//! active on both sides) and sends A its BYE; the device overview shows B in the call. sipfork sent no BYE of its own (PJSIP ended the old dialog).
//! Then A dials `*74`: neither PJSIP party advertises `join`, so sipfork answers 420.
//! Last, a call A places to 1001 (held on 1001's shard, shard 1; 1000's lines are on shard 0) is
//! moved to B the same way: its line reached shard 0 by a core-to-core note.
//!
//! Loopback only, no hostile input: no namespace. Skipped where pjsua2 cannot be imported unless
//! `SIPFORK_REQUIRE_PJSUA` is set (as `scripts/test.sh` does).

use std::process::Command;

use crate::harness::{metric_sum_where, Appliance, Io, Scratch, Setup};

fn pjsua_available() -> bool {
    Command::new("python3")
        .args(["-c", "import pjsua2"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn pjsip_caller_moved_from_device_a_to_device_b() {
    if !pjsua_available() {
        assert!(
            std::env::var_os("SIPFORK_REQUIRE_PJSUA").is_none(),
            "pjsua2 is required (SIPFORK_REQUIRE_PJSUA is set) but python3 cannot import it"
        );
        eprintln!("skipping the PJSIP move test: python3 cannot import pjsua2 (scripts/install-deps.sh installs pjsua2-python)");
        return;
    }
    let dir = Scratch::new("features");
    let setup = Setup {
        shards: 2,
        persist: false,
        auth: "digest",
        auth_extra: "algorithms = [\"MD5\"]".into(),
        extensions: "[[extensions]]\nnumbers = \"1000-1999\"\npassword = \"pw-{number}\"\n\n\
                     [features]\nmove = \"*75\"\njoin = \"*74\"\n"
            .into(),
        ..Setup::new(Io::Mmsg)
    };
    let app = Appliance::start(&dir.0, setup).expect("the mmsg backend always starts");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/pjsua_move.py");
    let out = Command::new("timeout")
        .args(["120", "python3", script])
        .arg(app.sip.to_string())
        .arg(app.admin.to_string())
        .output()
        .expect("run pjsua_move.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!(
        "{stdout}\n{}\nsipfork log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        app.log()
    );
    assert!(out.status.success(), "{report}");
    let page = app.get_ok("/metrics");
    let count = |reason| {
        metric_sum_where(
            &page,
            "sipfork_feature_requests_total",
            &format!("reason=\"{reason}\""),
        )
    };
    assert_eq!(count("move_forwarded"), 2, "{report}");
    // The caller's call to 1000 (1001 is on shard 1) and A's call to 1001 (1000 on shard 0).
    assert_eq!(count("placed_elsewhere"), 2, "{report}");
    assert_eq!(
        count("proxy_bye"),
        0,
        "PJSIP ended the old dialog itself\n{report}"
    );
    assert_eq!(count("join_unsupported"), 1, "{report}");
    eprintln!("{stdout}");
}
