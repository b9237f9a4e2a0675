//! The forking scenario of `benches/anchors/` through the real binary: SIPp registers every
//! extension with three device contacts, three SIPp devices (one answers, two ring and must be
//! cancelled) serve them, and a SIPp caller places calls at a steady rate. Scenarios are the
//! anchor's (`tests/sipp/uac.xml`, `uas_answer.xml`, `uas_ring_cancel.xml`; the caller with the
//! fix its header explains).
//!
//! Asserted per backend: zero failed calls at the caller; every call answered by device 1; every
//! call completed on both losers (INVITE, 180, CANCEL with its 200, 487, the ACK for it); and the
//! proxy agrees: one call and two CANCELs per call, each dialog ended by the caller's BYE (no
//! dialog left), no double answer or late 2xx.
//!
//! Each SIPp instance gets its own free port, so the test runs beside the others. Skipped like
//! the SIPp registration test when SIPp is missing (see `sipp::sipp_present`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{each_backend, free_port, metric_sum, proxy_event, Appliance, Setup};
use crate::sipp::sipp_present;

/// Extensions called in turn (each registered with three devices).
const EXTENSIONS: u32 = 20;
/// Calls placed: RATE calls/s for three seconds.
const CALLS: u32 = 300;
const RATE: u32 = 100;
/// Device 1 answers this long after its 180 (ms); the caller holds the call this long (ms).
const ANSWER_DELAY_MS: u32 = 100;
const HOLD_MS: u32 = 200;

pub fn scenario(name: &str) -> String {
    format!("{}/tests/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Whether something is bound to UDP 127.0.0.1:`port` (from `/proc/net/udp`, so probing does not
/// take the port away from the process that is about to bind it).
pub fn udp_bound(port: u16) -> bool {
    udp_bound_at(Ipv4Addr::LOCALHOST, port)
}

/// Whether something is bound to UDP `ip`:`port` in the calling thread's network namespace
/// (`/proc/thread-self/net/udp` shows the address as the hex of its in-memory `u32`).
pub fn udp_bound_at(ip: Ipv4Addr, port: u16) -> bool {
    let needle = format!("{:08X}:{port:04X} ", u32::from_ne_bytes(ip.octets()));
    std::fs::read_to_string("/proc/thread-self/net/udp").is_ok_and(|t| t.contains(&needle))
}

/// A SIPp process, killed if the test fails before it exits by itself.
pub struct Sipp {
    label: String,
    child: Option<Child>,
    stats: PathBuf,
    dir: PathBuf,
}

impl Sipp {
    /// Starts `sipp ARGS` in `dir`, bounded by `timeout`, with its statistics in `LABEL.csv`.
    pub fn start(dir: &Path, label: &str, args: &[String]) -> Sipp {
        let stats = dir.join(format!("{label}.csv"));
        let child = Command::new("timeout")
            .args(["60", "sipp"])
            .args(args)
            .args(["-nostdin", "-timeout", "50s", "-recv_timeout", "10000"])
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(&stats)
            .args(["-trace_err", "-error_file"])
            .arg(dir.join(format!("{label}_err.log")))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sipp");
        Sipp {
            label: label.to_owned(),
            child: Some(child),
            stats,
            dir: dir.to_owned(),
        }
    }

    /// Waits for the exit (SIPp's own `-timeout` bounds it) and returns the final statistics;
    /// panics with SIPp's output when it failed.
    pub fn finish(mut self) -> SippStats {
        let out = self
            .child
            .take()
            .expect("running")
            .wait_with_output()
            .expect("wait for sipp");
        let stats = SippStats::read(&self.stats);
        let errors = std::fs::read_to_string(self.dir.join(format!("{}_err.log", self.label)))
            .unwrap_or_default();
        assert!(
            out.status.success(),
            "sipp {}: {}; {stats:?}\n{}\nerrors:\n{}",
            self.label,
            out.status,
            String::from_utf8_lossy(&out.stderr),
            errors.chars().take(4000).collect::<String>()
        );
        stats
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The cumulative counters of a SIPp `-trace_stat` file (its last row).
#[derive(Debug, Default)]
pub struct SippStats {
    pub created: u64,
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
}

impl SippStats {
    fn read(path: &Path) -> SippStats {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let (Some(head), Some(last)) = (lines.next(), lines.next_back()) else {
            return SippStats::default();
        };
        let value = |name: &str| {
            head.split(';')
                .position(|h| h == name)
                .and_then(|i| last.split(';').nth(i))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        SippStats {
            created: value("TotalCallCreated"),
            successful: value("SuccessfulCall(C)"),
            failed: value("FailedCall(C)"),
            retransmissions: value("Retransmissions(C)"),
        }
    }
}

/// Registers `EXTENSIONS` extensions, each with a contact on every device port of `ip`.
fn register_devices(app: &Appliance, dir: &Path, ip: Ipv4Addr, device_ports: &[u16]) {
    let mut rows = String::from("SEQUENTIAL\n");
    for ext in 1000..1000 + EXTENSIONS {
        let contacts: Vec<String> = device_ports
            .iter()
            .map(|p| format!("<sip:{ext}@{ip}:{p}>"))
            .collect();
        rows += &format!("{ext};{}\n", contacts.join(", "));
    }
    let csv = dir.join("reg.csv");
    std::fs::write(&csv, rows).unwrap();
    let args: Vec<String> = [
        app.sip.to_string(),
        "-sf".into(),
        scenario("register.xml"),
        "-inf".into(),
        csv.display().to_string(),
        "-m".into(),
        EXTENSIONS.to_string(),
        "-r".into(),
        "200".into(),
        "-i".into(),
        ip.to_string(),
        "-p".into(),
        free_port().to_string(),
    ]
    .into();
    let stats = Sipp::start(dir, "register", &args).finish();
    assert_eq!(stats.successful, u64::from(EXTENSIONS), "{stats:?}");
    assert_eq!(
        app.metric_sum("sipfork_bindings"),
        u64::from(EXTENSIONS) * device_ports.len() as u64
    );
}

fn sipp_common(ip: Ipv4Addr, port: u16) -> Vec<String> {
    vec![
        "-i".into(),
        ip.to_string(),
        "-p".into(),
        port.to_string(),
        "-m".into(),
        CALLS.to_string(),
    ]
}

#[test]
fn sipp_caller_and_three_devices_one_answers_two_are_cancelled() {
    if !sipp_present() {
        return;
    }
    each_backend(
        "forking",
        |io| Setup {
            persist: false,
            ..Setup::new(io)
        },
        |app| fork_calls(app, Ipv4Addr::LOCALHOST),
    );
}

/// The forking scenario against `app` with every SIPp instance on `ip` (the test's own
/// namespace: 127.0.0.1 here, the far end of a veth pair in `xdp`).
pub fn fork_calls(app: &mut Appliance, ip: Ipv4Addr) {
    let dir = app.config.parent().expect("scratch dir").to_owned();
    let device_ports = [free_port(), free_port(), free_port()];
    register_devices(app, &dir, ip, &device_ports);

    // Devices: each handles exactly CALLS calls and then exits by itself.
    let mut devices = Vec::new();
    for (i, port) in device_ports.iter().enumerate() {
        let mut args = sipp_common(ip, *port);
        if i == 0 {
            args.extend([
                "-sf".into(),
                scenario("uas_answer.xml"),
                "-d".into(),
                ANSWER_DELAY_MS.to_string(),
            ]);
        } else {
            args.extend(["-sf".into(), scenario("uas_ring_cancel.xml")]);
        }
        devices.push(Sipp::start(&dir, &format!("device{}", i + 1), &args));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !device_ports.iter().all(|p| udp_bound_at(ip, *p)) {
        assert!(Instant::now() < deadline, "SIPp devices did not bind");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The caller: CALLS calls at RATE calls/s, round-robin over the extensions.
    let users = dir.join("users.csv");
    let rows: String = (1000..1000 + EXTENSIONS)
        .map(|e| format!("{e}\n"))
        .collect();
    std::fs::write(&users, format!("SEQUENTIAL\n{rows}")).unwrap();
    let mut args = vec![
        app.sip.to_string(),
        "-sf".into(),
        scenario("uac.xml"),
        "-inf".into(),
        users.display().to_string(),
        "-r".into(),
        RATE.to_string(),
        "-rp".into(),
        "1000".into(),
        "-l".into(),
        "1000".into(),
        "-d".into(),
        HOLD_MS.to_string(),
    ];
    args.extend(sipp_common(ip, free_port()));
    let started = Instant::now();
    let caller = Sipp::start(&dir, "caller", &args).finish();
    let took = started.elapsed();
    let calls = u64::from(CALLS);
    assert_eq!(
        (caller.created, caller.successful, caller.failed),
        (calls, calls, 0),
        "caller: {caller:?}"
    );
    let devices: Vec<SippStats> = devices.into_iter().map(Sipp::finish).collect();
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(
            (d.successful, d.failed),
            (calls, 0),
            "device {}: {d:?}",
            i + 1
        );
    }
    eprintln!(
        "{:?}: {CALLS} calls at {RATE}/s in {took:.1?}, retransmissions caller {} devices {:?}",
        app.setup.io,
        caller.retransmissions,
        devices
            .iter()
            .map(|d| d.retransmissions)
            .collect::<Vec<_>>()
    );

    // The proxy saw the same: one forked call and two CANCELs per call, every dialog
    // ended by its BYE (the caller got the 200 to each BYE, so they have passed).
    let page = app.get_ok("/metrics");
    assert_eq!(proxy_event(&page, "call"), calls, "{page}");
    assert_eq!(proxy_event(&page, "cancel_sent"), 2 * calls, "{page}");
    assert_eq!(proxy_event(&page, "dialog_ended"), calls, "{page}");
    assert_eq!(metric_sum(&page, "sipfork_proxy_dialogs"), 0, "{page}");
    for reason in [
        "race_double_answer",
        "race_2xx_after_cancel",
        "late_answer_torn_down",
        "branch_timeout",
        "cancel_unmatched",
    ] {
        assert_eq!(proxy_event(&page, reason), 0, "{reason}:\n{page}");
    }

    // Kernel steering (on by default; 2 shards here): the shard that reads a datagram
    // owns it, so (almost) nothing goes through the mailbox.
    let rx = metric_sum(&page, "sipfork_io_rx_datagrams_total");
    let handoffs = metric_sum(&page, "sipfork_handoffs_total");
    eprintln!("{:?}: {handoffs} hand-offs of {rx} datagrams", app.setup.io);
    if page.contains("sipfork_steering{state=\"kernel\"} 1") {
        assert!(
            handoffs * 100 <= rx,
            "{handoffs} hand-offs of {rx} datagrams"
        );
    } else {
        eprintln!("kernel steering unavailable here: hand-offs not checked");
    }
}
