//! Real user agents: two baresip instances (Debian `baresip-core`) register as extension 1000
//! through sipfork with digest, a third registers as 1001 and calls 1000. Both devices ring; the
//! one with `answermode=auto` answers and the call is established; the other is cancelled by
//! sipfork with `Reason: SIP;cause=200;text="Call completed elsewhere"` (RFC 3326), answers 487
//! and gets the ACK; the caller hangs up, its BYE reaches the answering phone through sipfork,
//! and the dialog ends in sipfork too.
//!
//! baresip refuses to run without a non-loopback address ("Protocol not supported"), so the test
//! runs in a network namespace of its own with a veth pair whose both ends stay inside it
//! (`benches/anchors/baresip/README.md`); SIP still goes over 127.0.0.1 there. The test creates
//! the namespace, runs itself again inside it (`ip netns exec`, marked by `SIPFORK_E2E_NETNS`),
//! and removes it. Skipped with a printed reason where baresip is not installed, or where the
//! namespace cannot be created without root; `SIPFORK_REQUIRE_BARESIP=1` (set by
//! `scripts/test.sh`) makes a missing baresip a failure.
//!
//! The same call runs twice: on a generated configuration, and on the shipped
//! `examples/sipfork.toml` (only its listen port, data_dir and admin address changed), which must
//! work with baresip as shipped.
//!
//! Digest offers MD5 only here (and in the example): baresip 1.0 (libre) gives up on a challenge set that contains a
//! SHA-256 challenge ("Register: Function not implemented"), whatever its position.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{metric_sum, metric_sum_where, proxy_event, Appliance, Io, Scratch, Setup};
use crate::netns;

#[test]
fn two_baresip_phones_ring_one_answers_the_other_is_cancelled() {
    if netns::inside() {
        let dir = Scratch::new("baresip");
        let setup = |io| Setup {
            shards: 2,
            persist: false,
            auth: "digest",
            auth_extra: "algorithms = [\"MD5\"]".into(),
            ..Setup::new(io)
        };
        let Some(app) = Appliance::start(&dir.0, setup(Io::Uring))
            .or_else(|| Appliance::start(&dir.0, setup(Io::Mmsg)))
        else {
            unreachable!("the mmsg backend always starts");
        };
        return two_phones_ring_one_answers(&app, &dir);
    }
    enter_namespace(
        "baresip",
        "baresip::two_baresip_phones_ring_one_answers_the_other_is_cancelled",
    );
}

/// The same call through the shipped `examples/sipfork.toml` (only its listen port, data_dir and
/// admin address changed, see `harness::example_config`): baresip 1.0 registers and calls with
/// the example's digest settings as shipped.
#[test]
fn baresip_phones_call_through_the_shipped_example() {
    if netns::inside() {
        let dir = Scratch::new("baresip-example");
        let app = Appliance::start_example(&dir.0);
        return two_phones_ring_one_answers(&app, &dir);
    }
    enter_namespace(
        "baresip-example",
        "baresip::baresip_phones_call_through_the_shipped_example",
    );
}

/// Runs test `test_name` again inside a fresh namespace `sipfork-e2e-LABEL-PID` (skipped with a
/// printed reason where baresip is missing, unless required, or where there is no root).
pub(crate) fn enter_namespace(label: &str, test_name: &str) {
    let required = std::env::var_os("SIPFORK_REQUIRE_BARESIP").is_some();
    if Command::new("baresip").arg("-h").output().is_err() {
        assert!(
            !required,
            "baresip is required (SIPFORK_REQUIRE_BARESIP is set) but not installed"
        );
        eprintln!("skipping the baresip test: baresip is not installed (scripts/install-deps.sh installs baresip-core)");
        return;
    }
    // baresip needs an address besides loopback: a veth pair with both ends in the namespace,
    // never connected to the host.
    netns::run_inside(
        label,
        test_name,
        &[
            "ip link add v0 type veth peer name v1",
            "ip addr add 10.77.0.1/24 dev v0",
            "ip link set v0 up",
            "ip link set v1 up",
            "ip route add default dev v0",
        ],
    );
}

/// baresip's `config` and `accounts` (from `benches/anchors/baresip/*.template`).
pub(crate) fn write_phone_config(dir: &Path, port: u16, tone: &Path, account: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{port}\naudio_player aufile,/dev/null\n\
         audio_source aufile,{tone}\naudio_alert aufile,/dev/null\n\
         module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
         module_app account.so\nmodule_app menu.so\n",
        tone = tone.display()
    );
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(dir.join("accounts"), format!("{account}\n")).unwrap();
}

pub(crate) fn account(ext: u32, proxy: &str, answermode: &str) -> String {
    format!(
        "<sip:{ext}@127.0.0.1;transport=udp>;auth_pass=pw-{ext};regint=300;\
         outbound=\"sip:{proxy};transport=udp\";answermode={answermode}"
    )
}

/// Waits (at most 10 s) until sipfork holds no dialog and ended exactly one.
pub(crate) fn wait_dialog_ended(app: &Appliance) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metric_sum("sipfork_proxy_dialogs") != 0
        || proxy_event(&app.get_ok("/metrics"), "dialog_ended") != 1
    {
        assert!(
            Instant::now() < deadline,
            "the dialog did not end in sipfork:\n{}",
            app.get_ok("/metrics")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `seconds` of a 440 Hz tone, 8 kHz 16-bit mono WAV: `aufile`'s source (`ausine` only does
/// 48 kHz and a failing source drops the call). baresip hangs up when its source file ends.
pub(crate) fn write_tone(path: &Path, seconds: u32) {
    let samples: Vec<i16> = (0..8000 * seconds)
        .map(|i| (8000.0 * (std::f64::consts::TAU * 440.0 * f64::from(i) / 8000.0).sin()) as i16)
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes()); // sample rate
    wav.extend_from_slice(&16000u32.to_le_bytes()); // byte rate
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, wav).unwrap();
}

/// A running baresip with its SIP trace (`-s`) and log in a file; killed when dropped.
pub(crate) struct Baresip {
    child: Option<Child>,
    log: PathBuf,
}

impl Baresip {
    /// Starts baresip on the configuration in `dir`, quitting by itself after `secs`.
    pub(crate) fn start(dir: &Path, secs: u32, commands: &[&str]) -> Baresip {
        let log = dir.join("baresip.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("baresip");
        cmd.arg("-f").arg(dir).args(["-s", "-t", &secs.to_string()]);
        for c in commands {
            cmd.args(["-e", c]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("run baresip");
        Baresip {
            child: Some(child),
            log,
        }
    }

    /// The log so far, without terminal colour codes, with the SIP trace's CRLFs as LFs and the
    /// call status line's CRs (it rewrites itself in place) as LFs.
    pub(crate) fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
            .replace("\r\n", "\n")
            .replace('\r', "\n")
    }

    /// Waits until the log contains `text`.
    pub(crate) fn wait_for(&self, text: &str, who: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{who}: no {text:?} within 15 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it with SIGTERM (it unregisters and exits) and waits, at most 10 s.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One SIP message of a baresip trace: `#`, then `UDP FROM -> TO` (or `TLS …`), then the message.
#[derive(Debug)]
pub(crate) struct Traced {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) text: String,
}

pub(crate) fn traced(log: &str) -> Vec<Traced> {
    log.split("\n#\n")
        .skip(1)
        .filter_map(|block| {
            let (head, text) = block.split_once('\n')?;
            let (from, to) = ["UDP ", "TLS "]
                .iter()
                .find_map(|t| head.strip_prefix(t))?
                .split_once(" -> ")?;
            Some(Traced {
                from: from.trim().to_owned(),
                to: to.trim().to_owned(),
                text: text.split("\n\n").next().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// The phone whose trace is `msgs` got a CANCEL from `proxy` with `Reason: SIP;cause=200`
/// (RFC 3326: the call was answered elsewhere).
pub(crate) fn assert_cancelled_elsewhere(msgs: &[Traced], proxy: &str, all: &str) {
    let cancel = msgs
        .iter()
        .find(|m| m.from == proxy && m.text.starts_with("CANCEL "))
        .unwrap_or_else(|| panic!("no CANCEL from {proxy} reached the ringing phone:\n{all}"));
    assert!(
        cancel
            .text
            .contains("\nReason: SIP;cause=200;text=\"Call completed elsewhere\""),
        "{}",
        cancel.text
    );
}

/// Inside the namespace: two phones register as 1000 through `app`, a third calls 1000 as 1001;
/// both ring, one answers, the other is cancelled, the caller hangs up.
fn two_phones_ring_one_answers(app: &Appliance, dir: &Scratch) {
    let proxy = app.sip.to_string();
    // The caller's tone lasts one second, so it hangs up (BYE) one second into the call; the
    // devices' tones outlast the test.
    let (short_tone, long_tone) = (dir.0.join("short.wav"), dir.0.join("long.wav"));
    write_tone(&short_tone, 1);
    write_tone(&long_tone, 30);
    // Ports spaced by 10: baresip also listens for TLS on its SIP port + 1. The namespace is
    // fresh, so these are free.
    let phones = [
        ("answers", 5110, 1000, "auto", &long_tone),
        ("rings", 5120, 1000, "manual", &long_tone),
        ("caller", 5130, 1001, "manual", &short_tone),
    ];
    for (name, port, ext, mode, tone) in phones {
        write_phone_config(&dir.0.join(name), port, tone, &account(ext, &proxy, mode));
    }
    let mut answers = Baresip::start(&dir.0.join("answers"), 30, &[]);
    let mut rings = Baresip::start(&dir.0.join("rings"), 30, &[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.metric_sum("sipfork_bindings") < 2 {
        assert!(
            Instant::now() < deadline,
            "the two phones did not register:\n{}\n{}\n{}",
            answers.log(),
            rings.log(),
            app.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The caller registers, dials (answering the 407 with its credentials), and hangs up when
    // its tone ends.
    let mut caller = Baresip::start(&dir.0.join("caller"), 15, &["/dial 1000"]);
    answers.wait_for("Call established", "the auto-answer phone");
    caller.wait_for("Call established", "the caller");
    rings.wait_for("SIP/2.0 487", "the ringing phone");
    answers.wait_for(
        "terminated",
        "the auto-answer phone after the caller hung up",
    );
    wait_dialog_ended(app);
    for phone in [&mut answers, &mut rings, &mut caller] {
        phone.stop();
    }

    let (answers_log, rings_log, caller_log) = (answers.log(), rings.log(), caller.log());
    let all =
        format!("--- answers:\n{answers_log}\n--- rings:\n{rings_log}\n--- caller:\n{caller_log}");
    let a = traced(&answers_log);
    let r = traced(&rings_log);
    let invite_to = |msgs: &[Traced]| {
        msgs.iter()
            .filter(|m| m.from == proxy && m.text.starts_with("INVITE "))
            .count()
    };
    let sent = |msgs: &[Traced], start: &str| {
        msgs.iter()
            .filter(|m| m.to == proxy && m.text.starts_with(start) && m.text.contains(" INVITE\n"))
            .count()
    };
    // Both rang: each got the INVITE from sipfork and answered 180.
    assert_eq!((invite_to(&a), invite_to(&r)), (1, 1), "{all}");
    assert!(sent(&a, "SIP/2.0 180") >= 1, "{all}");
    assert!(sent(&r, "SIP/2.0 180") >= 1, "{all}");
    assert!(rings_log.contains("Incoming call"), "{all}");
    assert!(answers_log.contains("answering call"), "{all}");
    // The auto phone answered; the other never connected, was cancelled for the right reason,
    // answered 487 and got sipfork's ACK.
    assert!(sent(&a, "SIP/2.0 200") >= 1, "{all}");
    assert!(!rings_log.contains("Call established"), "{all}");
    assert_cancelled_elsewhere(&r, &proxy, &all);
    assert!(sent(&r, "SIP/2.0 487") >= 1, "{all}");
    assert!(
        r.iter()
            .any(|m| m.from == proxy && m.text.starts_with("ACK ")),
        "{all}"
    );
    // The caller's BYE reached the answering phone through sipfork.
    assert!(
        a.iter()
            .any(|m| m.from == proxy && m.text.starts_with("BYE ")),
        "{all}"
    );
    assert!(
        !a.iter()
            .any(|m| m.to == proxy && m.text.starts_with("BYE ")),
        "{all}"
    );

    // sipfork: one call, one CANCEL, the dialog ended by the BYE; the caller's INVITE was
    // challenged with 407 and every phone authenticated.
    let page = app.get_ok("/metrics");
    assert_eq!(proxy_event(&page, "call"), 1, "{page}");
    assert_eq!(proxy_event(&page, "cancel_sent"), 1, "{page}");
    assert!(
        metric_sum_where(
            &page,
            "sipfork_auth_challenges_total",
            "header=\"proxy-authenticate\""
        ) >= 1,
        "{page}"
    );
    assert!(
        metric_sum(&page, "sipfork_auth_successes_total") >= 3,
        "{page}"
    );
}
