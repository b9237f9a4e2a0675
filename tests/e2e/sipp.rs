//! SIPp registers 1,000 extensions with 3 contacts each through `tests/sipp/register.xml` (the
//! anchor scenario: `Contact: *` removal, then one REGISTER with all 3 contacts); every final
//! 200 must list exactly the 3 bindings, as `benches/anchors/run_forking_bench.sh` checks.
//!
//! Skipped with a printed reason when `sipp` is not installed, unless `SIPFORK_REQUIRE_SIPP=1`
//! (set by `scripts/test.sh`, which installs it) makes its absence a failure.

use std::process::Command;

use crate::harness::{free_port, Appliance, Io, Scratch, Setup};

const EXTENSIONS: u32 = 1000;

pub fn sipp_present() -> bool {
    let present = Command::new("sipp").arg("-v").output().is_ok();
    if !present {
        assert!(
            std::env::var_os("SIPFORK_REQUIRE_SIPP").is_none(),
            "sipp is required (SIPFORK_REQUIRE_SIPP is set) but not installed"
        );
        eprintln!(
            "skipping the SIPp test: sipp is not installed (scripts/install-deps.sh installs it)"
        );
    }
    present
}

/// Bindings listed in each final 200 to a CSeq 2 REGISTER, from SIPp's `-trace_msg` log.
fn bindings_per_final_200(log: &str) -> Vec<usize> {
    let mut counts = Vec::new();
    for message in log.split("\n-----------") {
        let lines: Vec<&str> = message
            .lines()
            .skip_while(|l| !l.starts_with("SIP/2.0"))
            .collect();
        let is_final_200 = lines.first().is_some_and(|l| l.starts_with("SIP/2.0 200"))
            && lines.iter().any(|l| l.starts_with("CSeq: 2 REGISTER"));
        if is_final_200 {
            counts.push(
                lines
                    .iter()
                    .filter(|l| l.starts_with("Contact:") || l.starts_with("m:"))
                    .map(|l| l.matches("<sip:").count())
                    .sum(),
            );
        }
    }
    counts
}

#[test]
fn sipp_registers_1000_extensions_with_3_contacts_each() {
    if !sipp_present() {
        return;
    }
    let dir = Scratch::new("sipp");
    let Some(app) = Appliance::start(&dir.0, Setup::new(Io::Uring))
        .or_else(|| Appliance::start(&dir.0, Setup::new(Io::Mmsg)))
    else {
        unreachable!("the mmsg backend always starts");
    };
    let csv = dir.0.join("reg.csv");
    let mut rows = String::from("SEQUENTIAL\n");
    for ext in 1000..1000 + EXTENSIONS {
        rows += &format!(
            "{ext};<sip:{ext}@127.0.0.1:5071>, <sip:{ext}@127.0.0.1:5072>, <sip:{ext}@127.0.0.1:5073>\n"
        );
    }
    std::fs::write(&csv, rows).unwrap();
    let messages = dir.0.join("msgs.log");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/register.xml");
    let out = Command::new("timeout")
        .args(["60", "sipp", &app.sip.to_string(), "-sf", scenario])
        .arg("-inf")
        .arg(&csv)
        .args([
            "-m",
            &EXTENSIONS.to_string(),
            "-r",
            "500",
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
        .args(["-recv_timeout", "5000", "-trace_msg", "-message_file"])
        .arg(&messages)
        .output()
        .expect("run sipp");
    let log = std::fs::read_to_string(&messages).unwrap_or_default();
    assert!(
        out.status.success(),
        "sipp: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = bindings_per_final_200(&log);
    assert_eq!(counts.len(), EXTENSIONS as usize, "final 200s");
    assert!(
        counts.iter().all(|&n| n == 3),
        "bindings per 200: {counts:?}"
    );
    assert_eq!(
        app.metric_sum("sipfork_bindings"),
        3 * u64::from(EXTENSIONS)
    );
    assert_eq!(
        app.metric_sum("sipfork_journal_puts_total"),
        3 * u64::from(EXTENSIONS)
    );
}
