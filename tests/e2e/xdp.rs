//! The real binary on `io = "xdp"` across a veth pair between two network namespaces the test
//! creates (`loadtest/tests/common/netns.rs`, 2 queues per end for the 2 shards): sipfork in one
//! (`ip netns exec`), SIPp and this test's thread in the other, so every SIP datagram crosses the
//! pair and reaches the shards through the XDP program and their AF_XDP sockets, and the admin API
//! is reached over TCP through the kernel path beside it.
//!
//! - `forking::fork_calls` unchanged (the same SIPp scenarios and assertions as the loopback
//!   test: 300 calls, one device answers, two are cancelled, no race, no dialog left), once in
//!   native and once in generic mode; every datagram received and at least 99 % of those sent
//!   went through AF_XDP; the program is attached in the asked mode while it runs and gone after
//!   SIGTERM.
//! - `kill -9`, then a start on the same interface: the new process attaches its own program, a
//!   REGISTER gets its 200 through AF_XDP; a clean stop detaches it.
//!
//! Skipped with a printed reason without root, ip(8) or AF_XDP (and, for the first, SIPp).

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::forking::fork_calls;
use crate::harness::{metric_sum, Appliance, Io, Scratch, Setup};
use crate::phone::Phone;
use crate::sipp::sipp_present;
use crate::veth::{in_ns, xdp_unavailable, Namespaces};

/// The configuration for a proxy at `ip` on the proxy's end of `ns` in `mode`.
fn xdp_setup(ns: &Namespaces, ip: Ipv4Addr, mode: &str) -> Setup {
    Setup {
        ip: ip.into(),
        netns: Some(ns.proxy.clone()),
        server_extra: format!("interface = \"{}\"\nxdp_mode = \"{mode}\"\n", ns.dev),
        ..Setup::new(Io::Xdp)
    }
}

/// The XDP program on `dev` in namespace `netns` as `ip link show` names it: its mode (`xdp` for
/// native, `xdpgeneric`) and id; `None` when none is attached.
fn attached(netns: &str, dev: &str) -> Option<(String, u32)> {
    let out = Command::new("ip")
        .args(["-n", netns, "link", "show", "dev", dev])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    // `... mtu 1500 xdpgeneric qdisc ...`, then `prog/xdp id 42 ...` (for either mode).
    let kind = text
        .split_whitespace()
        .find(|w| ["xdp", "xdpgeneric", "xdpoffload", "xdpmulti"].contains(w))?;
    let at = text.find("prog/xdp")?;
    let words = text[at..].split_whitespace();
    let id = words.skip_while(|w| *w != "id").nth(1)?.parse().ok()?;
    Some((kind.to_owned(), id))
}

/// Waits (the link's release may lag the process's exit by a moment) until `dev` has no XDP
/// program; panics with what is still attached after 3 s.
fn wait_detached(netns: &str, dev: &str, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(prog) = attached(netns, dev) {
        assert!(
            Instant::now() < deadline,
            "{prog:?} still attached to {dev} 3 s after {after}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unique namespace tags (interface names stay under 16 bytes).
fn tag(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100_000)
}

#[test]
fn sipp_forking_runs_unchanged_over_af_xdp_native_and_generic() {
    if let Some(why) = xdp_unavailable() {
        eprintln!("skipping the AF_XDP forking test: {why}");
        return;
    }
    if !sipp_present() {
        return;
    }
    let ns = Namespaces::create(&tag("xf"), Some(2), "10.216.0", "fd00:5f")
        .expect("namespaces and veth pair");
    for (mode, kind) in [("native", "xdp"), ("generic", "xdpgeneric")] {
        let setup = xdp_setup(&ns, Ipv4Addr::new(10, 216, 0, 1), mode);
        let (netns, dev) = (ns.proxy.clone(), ns.dev.clone());
        in_ns(&ns.harness, move || {
            let dir = Scratch::new(&format!("xdp-forking-{mode}"));
            let mut app = match Appliance::try_start(&dir.0, setup) {
                Ok(app) => app,
                Err(e) => panic!("sipfork on io = \"xdp\" ({mode}) did not start: {e:?}"),
            };
            let prog = attached(&netns, &dev);
            assert_eq!(prog.as_ref().map(|p| p.0.as_str()), Some(kind), "{mode}");

            fork_calls(&mut app, Ipv4Addr::new(10, 216, 0, 2));

            let page = app.get_ok("/metrics");
            assert!(page.contains("backend=\"xdp\""), "{page}");
            let rx = metric_sum(&page, "sipfork_io_rx_datagrams_total");
            let tx = metric_sum(&page, "sipfork_io_tx_datagrams_total");
            let xdp_rx = metric_sum(&page, "sipfork_io_xdp_rx_total");
            let xdp_tx = metric_sum(&page, "sipfork_io_xdp_tx_total");
            let kernel_tx = metric_sum(&page, "sipfork_io_xdp_kernel_tx_total");
            eprintln!(
                "xdp {mode}: received {rx} ({xdp_rx} through AF_XDP), sent {tx} ({xdp_tx} \
                 through AF_XDP, {kernel_tx} handed to the kernel socket)"
            );
            // Every request reached a shard through its AF_XDP socket (the admin API is TCP);
            // sends go to learned MACs (one host: the SIPp instances on 10.216.0.2).
            assert_eq!(xdp_rx, rx, "{mode}: received through the kernel socket");
            assert!(
                xdp_tx * 100 >= tx * 99,
                "{mode}: {xdp_tx} of {tx} sends through AF_XDP"
            );

            let status = app.signal_and_wait("TERM");
            assert!(status.success(), "{mode}: {status}\n{}", app.log());
            wait_detached(&netns, &dev, "SIGTERM");
        });
    }
}

/// `phone`'s REGISTER of its one contact for 1000 must get its 200.
fn register(phone: &mut Phone, app: &Appliance) {
    let contact = format!("<{}>", phone.contact_uri("1000"));
    let register = phone.register("1000", &[contact], "");
    let answer = phone.transact(&register);
    assert_eq!(answer.status, 200, "{}\nlog:\n{}", answer.text, app.log());
}

#[test]
fn xdp_after_kill_9_a_restart_attaches_anew_and_a_clean_stop_detaches() {
    if let Some(why) = xdp_unavailable() {
        eprintln!("skipping the AF_XDP restart test: {why}");
        return;
    }
    let ns = Namespaces::create(&tag("xk"), Some(2), "10.217.0", "fd00:60")
        .expect("namespaces and veth pair");
    let setup = xdp_setup(&ns, Ipv4Addr::new(10, 217, 0, 1), "native");
    let (netns, dev) = (ns.proxy.clone(), ns.dev.clone());
    in_ns(&ns.harness, move || {
        let dir = Scratch::new("xdp-restart");
        let mut app = match Appliance::try_start(&dir.0, setup) {
            Ok(app) => app,
            Err(e) => panic!("sipfork on io = \"xdp\" did not start: {e:?}"),
        };
        let (_, first) = attached(&netns, &dev).expect("attached after the start");
        let mut phone = Phone::new_on("10.217.0.2", app.sip);
        register(&mut phone, &app);
        assert!(app.metric_sum("sipfork_io_xdp_rx_total") >= 1);

        let status = app.signal_and_wait("KILL");
        assert!(!status.success(), "{status}");
        // The program hangs on a bpf_link whose descriptors died with the process: it goes with
        // it, so nothing stale stays on the interface.
        wait_detached(&netns, &dev, "kill -9");

        app.restart(|_| {});
        let (kind, second) = attached(&netns, &dev).expect("attached after the restart");
        assert_eq!(kind, "xdp");
        assert_ne!(first, second, "a program of its own");
        register(&mut phone, &app);
        let page = app.get_ok("/metrics");
        assert!(
            metric_sum(&page, "sipfork_io_xdp_rx_total") >= 1,
            "the REGISTER came through AF_XDP:\n{page}"
        );
        // The binding from before the kill (journal) and its refresh are one binding.
        assert_eq!(metric_sum(&page, "sipfork_bindings"), 1, "{page}");

        let status = app.signal_and_wait("TERM");
        assert!(status.success(), "{status}\n{}", app.log());
        wait_detached(&netns, &dev, "SIGTERM");
    });
}
