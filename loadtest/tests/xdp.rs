//! `io = "xdp"` between two network namespaces this test creates, joined by a veth pair with as
//! many queues as shards: sipfork (in this process, its shard threads in the proxy's namespace)
//! on one end with the AF_XDP backend, the `sipfork-load` binary on the other running 3-way
//! forked calls with digest authentication. Native mode over IPv4, generic mode over IPv6. Beside
//! the SIP traffic through AF_XDP: ping and an unrelated TCP connection still work through the
//! kernel, a fragmented request arrives through the kernel socket and is answered, and the
//! start-up checks name what is missing (a capability, queues).
//!
//! Needs root, ip(8) and a kernel with AF_XDP; without them it prints why and passes without
//! running.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use sipfork::app::shard::Shard;
use sipfork::config::Config;
use sipfork::core::transaction::TimerValues;
use sipfork::core::{Core, CoreParams};
use sipfork::engine::io::IoStats;
use sipfork::engine::{start, Engine, Pinning};
use sipfork_load::plan::Plan;
use sipfork_load::result::RunResult;
use sipfork_load::scenario::Scenario;
use sipfork_load::sim::{sipfork_config, ProxyOptions};

mod common;
use common::netns::{enter, in_ns, xdp_unavailable, Namespaces};
use common::{run_fork3_from_harness, run_fork3_with};

const SHARDS: u16 = 2;

/// sipfork serving `cfg` as the app configures it (io, interface, mode from the file).
fn start_sipfork(cfg: &str) -> Result<Engine<Shard>, String> {
    let cfg = Arc::new(Config::from_toml(cfg).map_err(|e| e.to_string())?);
    let listen = cfg.server.listen;
    let shards = cfg.server.shards;
    let mut engine = sipfork::app::engine_config(&cfg);
    engine.pinning = Pinning::Off;
    start(engine, move |id, clock| {
        let core = Core::new(
            Arc::clone(&cfg),
            CoreParams {
                shard: id,
                shards,
                local: listen,
                secret: [9; 32],
                wall_epoch_us: 1_800_000_000_000_000,
                timers: TimerValues::default(),
            },
            clock.now(),
        );
        Shard::new(core, None)
    })
    .map_err(|e| e.to_string())
}

fn scenario(local: std::net::IpAddr) -> Scenario {
    let mut s = Scenario::preset("fork3").unwrap();
    s.topology.extensions = 10;
    s.topology.ip = local;
    s.load.rate = 100.0;
    s.load.duration_s = 0.3;
    s.load.max = 30;
    s.registration.digest = true;
    s.caller.digest = true;
    s.caller.hold_ms = sipfork_load::scenario::Dist::Const(50.0);
    s
}

fn config_for(target: SocketAddr, local: &str, interface: &str, mode: &str) -> String {
    let plan = Plan::new(scenario(local.parse().unwrap()), target, false, 1).unwrap();
    let cfg = sipfork_config(
        &plan,
        &ProxyOptions {
            digest: true,
            shards: SHARDS,
            io: Some("xdp".into()),
            ..ProxyOptions::default()
        },
    );
    cfg.replacen(
        "[server]\n",
        &format!("[server]\ninterface = \"{interface}\"\nxdp_mode = \"{mode}\"\n"),
        1,
    )
}

fn sum_io(engine: &Engine<Shard>) -> IoStats {
    let mut total = [0u64; IoStats::LEN];
    for s in engine.stats() {
        assert_eq!(s.backend, "xdp");
        for (t, v) in total.iter_mut().zip(s.io.to_array()) {
            *t += v;
        }
    }
    IoStats::from_array(total)
}

fn run_load(ns: &Namespaces, target: SocketAddr, local: &str, label: &str, dir: &std::path::Path) {
    let out = run_fork3_from_harness(ns, target, local, label, dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{label}: exit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = RunResult::read(&dir.join(format!("{label}.json"))).unwrap();
    assert!(r.passed, "{label}: {:?}", r.failed_because);
    assert_eq!(r.registration.registered, 30, "{label}");
    let v = r.verdicts.as_ref().unwrap();
    assert_eq!((v.calls, v.ok), (30, 30), "{label}: {v:#?}");
}

/// An OPTIONS request of `size` bytes (larger than the MTU: the kernel fragments it).
fn big_options(target: SocketAddr, local: SocketAddr, size: usize) -> Vec<u8> {
    let head = format!(
        "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-frag-1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=frag\r\nTo: <sip:{target}>\r\n\
         Call-ID: frag-{size}@test\r\nCSeq: 1 OPTIONS\r\nX-Padding: "
    );
    let mut m = head.into_bytes();
    m.resize(size - 24, b'p');
    m.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    m.truncate(size);
    m
}

#[test]
fn forked_calls_run_over_af_xdp_and_the_kernel_path_stays_alive() {
    if let Some(why) = xdp_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let tag = format!("xd{}", std::process::id() % 100_000);
    let ns = Namespaces::create(&tag, Some(SHARDS), "10.214.0", "fd00:5e")
        .expect("namespaces and veth pair");
    let dir = std::env::temp_dir().join(format!("sipfork-load-xdp-{}", std::process::id()));
    for (target, local, mode, label) in [
        ("10.214.0.1:5060", "10.214.0.2", "native", "xdp-native4"),
        ("[fd00:5e::1]:5060", "fd00:5e::2", "generic", "xdp-generic6"),
    ] {
        let target: SocketAddr = target.parse().unwrap();
        let cfg = config_for(target, local, &ns.dev, mode);
        let (ready_tx, ready) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let (stats_tx, stats_rx) = mpsc::channel();
        let ns_proxy = ns.proxy.clone();
        let proxy = std::thread::spawn(move || {
            enter(&ns_proxy).expect("setns");
            match start_sipfork(&cfg) {
                Ok(engine) => {
                    let _ = ready_tx.send(Ok(()));
                    while stop_rx.recv().is_ok() {
                        let _ = stats_tx.send(sum_io(&engine));
                    }
                    let _ = engine.shutdown();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        ready.recv().unwrap().expect("sipfork starts with io = xdp");
        let attached = Command::new("ip")
            .args(["-n", &ns.proxy, "link", "show", &ns.dev])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&attached.stdout).to_string();
        let want = if mode == "native" {
            "xdp "
        } else {
            "xdpgeneric"
        };
        assert!(shown.contains(want), "{mode}: program attached: {shown}");

        run_load(&ns, target, local, label, &dir);
        stop.send(()).unwrap();
        let after_load = stats_rx.recv().unwrap();
        assert!(
            after_load.xdp_rx > 0 && after_load.xdp_tx > 0,
            "{label}: {after_load:?}"
        );
        eprintln!("{label}: {after_load:?}");

        // An ICMP echo (ARP/NDP had to work before any SIP did) is answered by the kernel.
        let to = target.ip();
        let replied = in_ns(&ns.harness, move || ping(to));
        assert!(replied, "{mode}: no echo reply from {to}");

        // An unrelated TCP connection through the kernel.
        let tcp_at = SocketAddr::new(target.ip(), 7001);
        let listener = in_ns(&ns.proxy, move || {
            TcpListener::bind(tcp_at).expect("tcp bind")
        });
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).unwrap();
            c.write_all(&b).unwrap();
        });
        let echoed = in_ns(&ns.harness, move || {
            let mut c = TcpStream::connect_timeout(&tcp_at, Duration::from_secs(3)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            c.write_all(b"hello").unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).unwrap();
            b
        });
        server.join().unwrap();
        assert_eq!(&echoed, b"hello");

        // A request larger than the MTU: fragmented on the wire, reassembled by the kernel,
        // received through the kernel socket, answered.
        let local_sock = SocketAddr::new(local.parse().unwrap(), 0);
        let answer = in_ns(&ns.harness, move || {
            let s = UdpSocket::bind(local_sock).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let me = s.local_addr().unwrap();
            s.send_to(&big_options(target, me, 3000), target).unwrap();
            let mut b = [0u8; 4096];
            let (n, _) = s
                .recv_from(&mut b)
                .expect("an answer to the fragmented request");
            String::from_utf8_lossy(&b[..n]).to_string()
        });
        assert!(answer.starts_with("SIP/2.0 "), "{answer}");
        assert!(answer.contains("frag-3000@test"), "{answer}");
        // A shard publishes its counters at the end of the turn whose answer we already hold:
        // read until that turn has published (or 2 s have passed).
        let kernel_rx = |s: &IoStats| s.rx_datagrams - s.xdp_rx;
        let mut after_frag = after_load;
        for _ in 0..100 {
            stop.send(()).unwrap();
            after_frag = stats_rx.recv().unwrap();
            if kernel_rx(&after_frag) > kernel_rx(&after_load) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            kernel_rx(&after_frag),
            kernel_rx(&after_load) + 1,
            "{mode}: the fragmented request came through the kernel socket"
        );
        assert_eq!(after_frag.xdp_rx, after_load.xdp_rx);
        drop(stop);
        proxy.join().unwrap();
        // Detached on clean shutdown (the link's release may lag the close by a moment).
        let mut shown = String::new();
        for _ in 0..20 {
            let out = Command::new("ip")
                .args(["-n", &ns.proxy, "link", "show", &ns.dev])
                .output()
                .unwrap();
            shown = String::from_utf8_lossy(&out.stdout).to_string();
            if !shown.contains("prog/xdp") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !shown.contains("prog/xdp"),
            "{mode}: still attached: {shown}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn start_up_names_a_missing_capability_and_too_few_queues() {
    if let Some(why) = xdp_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let tag = format!("xq{}", std::process::id() % 100_000);
    // One queue, two shards.
    let ns =
        Namespaces::create(&tag, Some(1), "10.214.0", "fd00:5e").expect("namespaces and veth pair");
    let target: SocketAddr = "10.214.0.1:5060".parse().unwrap();
    let c = config_for(target, "10.214.0.2", &ns.dev, "auto");
    let err = in_ns(&ns.proxy, move || {
        start_sipfork(&c).map(|_| ()).unwrap_err()
    });
    // The failed start's kernel socket may still be closing: the second start uses another port.
    let cfg = config_for(
        "10.214.0.1:5062".parse().unwrap(),
        "10.214.0.2",
        &ns.dev,
        "auto",
    );
    assert!(
        err.contains("has 1 queue(s)") && err.contains("shards = 2"),
        "{err}"
    );
    // Without CAP_NET_RAW (dropped from this thread's effective set only).
    let err = in_ns(&ns.proxy, move || {
        drop_effective_cap(13);
        start_sipfork(&cfg).map(|_| ()).unwrap_err()
    });
    assert!(
        err.contains(
            "needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF (or root); missing: CAP_NET_RAW"
        ),
        "{err}"
    );
}

/// The harness's null reflector (`sipfork-load reflect --xdp`) on AF_XDP in the proxy's namespace:
/// the harness's 30 fork3 calls in reflector mode run through it and pass, and what it received
/// and sent went through its AF_XDP sockets (the `DONE` lines it prints at the stop).
#[test]
fn the_null_reflector_runs_on_af_xdp() {
    use std::io::BufRead;
    if let Some(why) = xdp_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let tag = format!("xr{}", std::process::id() % 100_000);
    let ns = Namespaces::create(&tag, Some(SHARDS), "10.214.1", "fd00:61")
        .expect("namespaces and veth pair");
    let target: SocketAddr = "10.214.1.1:5060".parse().unwrap();
    let mut reflector = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.proxy,
            env!("CARGO_BIN_EXE_sipfork-load"),
        ])
        .args(["reflect", "--listen", &target.to_string(), "--xdp", &ns.dev])
        .args(["--xdp-mode", "native", "--shards", &SHARDS.to_string()])
        .args(["--secs", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sipfork-load reflect runs");
    let mut lines = std::io::BufReader::new(reflector.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    if !first.starts_with("reflector listening") {
        let _ = reflector.kill();
        panic!(
            "the reflector did not start on AF_XDP: {first:?} {:?}",
            reflector.wait()
        );
    }
    let dir = std::env::temp_dir().join(format!("sipfork-load-xdpr-{}", std::process::id()));
    let out = run_fork3_with(
        &ns,
        target,
        "10.214.1.2",
        "xdp-reflect",
        &dir,
        &["--reflector"],
    );
    // SAFETY: kill() with the PID of the child this test started (ip netns exec execs it).
    unsafe { libc::kill(reflector.id() as i32, libc::SIGTERM) };
    let done: Vec<String> = lines.map_while(Result::ok).collect();
    let status = reflector.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reflector run: exit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = RunResult::read(&dir.join("xdp-reflect.json")).unwrap();
    let v = r.verdicts.as_ref().unwrap();
    assert_eq!((v.calls, v.ok), (30, 30), "{v:#?}");
    assert!(status.success(), "reflector: {status}\n{done:?}");
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let done: Vec<&String> = done.iter().filter(|l| l.starts_with("DONE ")).collect();
    assert_eq!(done.len(), usize::from(SHARDS), "{done:?}");
    assert!(done.iter().all(|l| l.contains("backend=xdp")), "{done:?}");
    let sum = |name: &str| done.iter().map(|l| field(l, name)).sum::<u64>();
    eprintln!("reflector on xdp: {done:?}");
    assert!(sum("received") > 0 && sum("sent") > 0, "{done:?}");
    assert_eq!(
        sum("xdp_rx"),
        sum("received"),
        "every datagram through AF_XDP: {done:?}"
    );
    assert!(sum("xdp_tx") > 0, "{done:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends ICMP echo requests to `to` from a raw socket (root) and waits for a reply.
fn ping(to: std::net::IpAddr) -> bool {
    use std::os::fd::{FromRawFd, OwnedFd};
    let v4 = to.is_ipv4();
    let (domain, proto, request, reply) = if v4 {
        (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8)
    } else {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8, 129u8)
    };
    // SAFETY: socket() takes no pointers; the result is checked and owned below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW, proto) };
    assert!(
        fd >= 0,
        "raw ICMP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor this test owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 300_000,
    };
    // SAFETY: a live timeval of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    let mut msg = vec![request, 0, 0, 0, 0x51, 0xf0, 0, 1];
    msg.extend_from_slice(b"sipfork-xdp-ping");
    if v4 {
        // ICMPv4 carries its own checksum (the kernel fills ICMPv6's).
        let mut sum: u32 = msg
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        msg[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        std::net::IpAddr::V4(ip) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe {
                &mut *(&mut sa as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        std::net::IpAddr::V6(ip) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut sa as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = ip.octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    for _ in 0..3 {
        // SAFETY: `msg` and `sa` are live for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                fd,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_storage).cast(),
                len as libc::socklen_t,
            )
        };
        assert!(
            sent > 0,
            "echo request: {}",
            std::io::Error::last_os_error()
        );
        for _ in 0..8 {
            let mut buf = [0u8; 512];
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            let got = &buf[..n as usize];
            // A raw IPv4 socket delivers the IP header too.
            let icmp = if v4 {
                &got[usize::from(got[0] & 0x0f) * 4..]
            } else {
                got
            };
            if icmp.first() == Some(&reply) && icmp.get(4..6) == Some(&[0x51, 0xf0][..]) {
                drop(owned);
                return true;
            }
        }
    }
    false
}

/// Removes capability `cap` from the calling thread's effective set.
fn drop_effective_cap(cap: u32) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget/capset with a live header and two data records (version 3 layout).
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()), 0);
        d[(cap / 32) as usize].effective &= !(1 << (cap % 32));
        assert_eq!(libc::syscall(libc::SYS_capset, &h, d.as_ptr()), 0);
    }
}
