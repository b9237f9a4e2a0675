//! Registrar figures, measured through `Core::handle_datagram` (no engine, no kernel):
//!
//! - memory: heap bytes per binding with 1,000,000 bindings of realistic contents (60-byte
//!   Contact, 40-byte Call-ID, a `+sip.instance` URN, a 30-byte User-Agent, IPv4 source), counted
//!   by a counting global allocator (requested bytes; the allocator's own overhead shows in the
//!   resident-memory figure printed beside it);
//! - timing: CPU time per REGISTER, first registration and refresh, without and with digest
//!   (the phone reuses its nonce with an increasing nc, as DECISIONS.md asks).
//!
//! usage: `cargo run --release --example registrar_figures [-- memory|memory-4|timing]`
//! (`memory`: 1,000,000 extensions with one device each, the worst case for per-extension
//! overhead; `memory-4`: 250,000 extensions with four devices each.)
//! Bounded: at most 1,000,000 REGISTERs for memory and 200,000 for timing per scenario.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sipfork::config::Config;
use sipfork::core::io::Datagram;
use sipfork::core::metrics::MetricSink;
use sipfork::core::registrar::digest::{compute_response, Algorithm, Ha1, ResponseInput};
use sipfork::core::shard::ShardId;
use sipfork::core::transaction::TimerValues;
use sipfork::core::{Core, CoreParams};
use sipfork::sip::parse;
use sipfork::time::Instant;

/// Counts live heap bytes (as requested by callers) and forwards everything to the system
/// allocator.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Calls to `alloc`, `alloc_zeroed` and `realloc` (heap churn).
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is the system allocator's; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as this method's caller.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as this method's caller.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as this method's caller; `ptr` came from `System`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const FIRST: u64 = 1_000_000;
const USER_AGENT: &str = "Yealink SIP-T54W 96.86.0.70 v1";

fn config(auth: &str) -> Arc<Config> {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:5060\"\ndomain = \"example.com\"\n\
         [registrar]\nmax_contacts = 20\nmax_expires = 7200\n\
         [auth]\nrealm = \"example.com\"\n{auth}\n\
         [[extensions]]\nnumbers = \"1000000-1999999\"\npassword = \"pw-{{number}}\"\n"
    );
    Arc::new(Config::from_toml(&text).expect("valid configuration"))
}

fn core(cfg: Arc<Config>) -> Core {
    let params = CoreParams {
        shard: ShardId(0),
        shards: 1,
        local: "127.0.0.1:5060".parse().expect("address"),
        secret: [3; 32],
        wall_epoch_us: 1_700_000_000_000_000,
        timers: TimerValues::default(),
    };
    Core::new(cfg, params, Instant::ZERO)
}

/// Where device `device` of extension `number` registers from.
fn source(number: u64, device: u32) -> SocketAddr {
    let n = number - FIRST;
    SocketAddr::new(
        Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8).into(),
        5060 + device as u16,
    )
}

fn pad(mut s: String, len: usize, fill: char) -> String {
    while s.len() < len {
        s.push(fill);
    }
    s.truncate(len);
    s
}

/// Appends a REGISTER of device `device` of `number` with realistic field sizes.
fn write_register(out: &mut Vec<u8>, number: u64, device: u32, cseq: u32, authorization: &str) {
    use std::io::Write;
    let src = source(number, device);
    let contact = pad(
        format!(
            "sip:{number}@{}:{};transport=udp;line=",
            src.ip(),
            src.port()
        ),
        60,
        'x',
    );
    let call_id = pad(
        format!("{number:x}{device:04x}-reg@phone.example.net"),
        40,
        '0',
    );
    let instance = format!("<urn:uuid:{number:08x}-0000-4000-8000-{device:012x}>");
    debug_assert_eq!((contact.len(), call_id.len(), instance.len()), (60, 40, 47));
    let _ = write!(
        out,
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {src};branch=z9hG4bK{number}-{device}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{number}@example.com>;tag=t{number}x{device}\r\n\
         To: <sip:{number}@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <{contact}>;+sip.instance=\"{instance}\";reg-id=1\r\n\
         User-Agent: {USER_AGENT}\r\n\
         {authorization}Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n"
    );
}

/// What the engine does per datagram: hand it over, then drain the journal log and the outbox.
fn handle_quiet(core: &mut Core, from: SocketAddr, bytes: &[u8]) {
    core.handle_datagram(
        Instant::ZERO,
        Datagram {
            from,
            local: "127.0.0.1:5060".parse().expect("address"),
            bytes,
            transport: sipfork::core::transport::Transport::Udp,
            peer_cert: None,
        },
    );
    core.drain_persist(|_| {});
    core.outbox().clear();
}

fn handle(core: &mut Core, from: SocketAddr, bytes: &[u8]) -> u16 {
    core.handle_datagram(
        Instant::ZERO,
        Datagram {
            from,
            local: "127.0.0.1:5060".parse().expect("address"),
            bytes,
            transport: sipfork::core::transport::Transport::Udp,
            peer_cert: None,
        },
    );
    core.drain_persist(|_| {});
    let out = core.outbox();
    let status = out
        .iter()
        .next()
        .and_then(|(_, b)| parse(b).ok().and_then(|m| m.status()))
        .unwrap_or(0);
    out.clear();
    status
}

fn gauge(core: &Core, name: &str) -> u64 {
    let mut sink = MetricSink::default();
    core.export_metrics(&mut sink);
    sink.samples
        .iter()
        .find(|s| s.name == name)
        .map_or(0, |s| s.value)
}

fn memory(extensions: u64, per_extension: u32) {
    let mut core = core(config("mode = \"none\""));
    let mut buf = Vec::with_capacity(1024);
    // Warm the per-request buffers (outbox, journal log, plan) so they do not count.
    write_register(&mut buf, FIRST, 99, 1, "");
    handle(&mut core, source(FIRST, 99), &buf);
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), resident_bytes());
    for device in 0..per_extension {
        for number in FIRST..FIRST + extensions {
            buf.clear();
            write_register(&mut buf, number, device, 1, "");
            let status = handle(&mut core, source(number, device), &buf);
            assert_eq!(status, 200);
        }
    }
    let (heap1, rss1) = (LIVE.load(Ordering::Relaxed), resident_bytes());
    let bindings = gauge(&core, "sipfork_bindings") - 1;
    assert_eq!(bindings, extensions * u64::from(per_extension));
    println!(
        "memory: {bindings} bindings ({extensions} extensions x {per_extension}): heap {:.1} bytes/binding \
         (counting allocator), resident {:.1} bytes/binding (RSS growth, glibc overhead included)",
        (heap1 - heap0) as f64 / bindings as f64,
        rss1.saturating_sub(rss0) as f64 / bindings as f64,
    );
}

/// The nonce of a 401 (the first challenge row's).
fn nonce_of(response: &[u8]) -> String {
    let m = parse(response).expect("401 parses");
    let c = m.www_authenticate().expect("challenge").expect("parses");
    String::from_utf8_lossy(c.nonce).into_owned()
}

fn authorization(number: u64, nonce: &str, nc: u32) -> String {
    let user = number.to_string();
    let password = format!("pw-{user}");
    let ha1 = Ha1::from_password(
        Algorithm::Sha256,
        user.as_bytes(),
        b"example.com",
        password.as_bytes(),
    );
    let nc = format!("{nc:08x}");
    let response = compute_response(
        Algorithm::Sha256,
        &ha1,
        &ResponseInput {
            method: b"REGISTER",
            uri: b"sip:example.com",
            nonce: nonce.as_bytes(),
            nc: nc.as_bytes(),
            cnonce: b"4f1c9e2a",
            qop: b"auth",
        },
    );
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"example.com\", nonce=\"{nonce}\", \
         uri=\"sip:example.com\", response=\"{}\", algorithm=SHA-256, cnonce=\"4f1c9e2a\", \
         qop=auth, nc={nc}\r\n",
        response.as_str()
    )
}

fn timing(digest: bool) {
    const EXTENSIONS: u64 = 5_000;
    const ROUNDS: u32 = 40;
    let auth = if digest {
        "mode = \"digest\"\nalgorithms = [\"SHA-256\"]\nnonce_ttl = 3600"
    } else {
        "mode = \"none\""
    };
    let mut core = core(config(auth));
    let mut nonces = Vec::new();
    if digest {
        let mut buf = Vec::new();
        for number in FIRST..FIRST + EXTENSIONS {
            buf.clear();
            write_register(&mut buf, number, 0, 1, "");
            core.handle_datagram(
                Instant::ZERO,
                Datagram {
                    from: source(number, 0),
                    local: "127.0.0.1:5060".parse().expect("address"),
                    bytes: &buf,
                    transport: sipfork::core::transport::Transport::Udp,
                    peer_cert: None,
                },
            );
            let out = core.outbox();
            let (_, response) = out.iter().next().expect("a 401");
            nonces.push(nonce_of(response));
            out.clear();
        }
    }
    // Messages are built before the clock starts: the phone's work is not the registrar's.
    let mut rounds: Vec<Vec<Vec<u8>>> = Vec::new();
    for round in 0..ROUNDS {
        let mut msgs = Vec::with_capacity(EXTENSIONS as usize);
        for (i, number) in (FIRST..FIRST + EXTENSIONS).enumerate() {
            let auth = match nonces.get(i) {
                Some(nonce) => authorization(number, nonce, round + 1),
                None => String::new(),
            };
            let mut buf = Vec::new();
            write_register(&mut buf, number, 0, round + 2, &auth);
            msgs.push(buf);
        }
        rounds.push(msgs);
    }
    let mut per_round = Vec::with_capacity(rounds.len());
    let mut refresh_allocations = 0;
    for (round, msgs) in rounds.iter().enumerate() {
        let calls = CALLS.load(Ordering::Relaxed);
        let start = std::time::Instant::now();
        for (i, m) in msgs.iter().enumerate() {
            handle_quiet(&mut core, source(FIRST + i as u64, 0), m);
        }
        per_round.push(start.elapsed().as_nanos() as f64 / EXTENSIONS as f64);
        if round > 0 {
            refresh_allocations += CALLS.load(Ordering::Relaxed) - calls;
        }
    }
    let first = per_round[0];
    let mut refresh: Vec<f64> = per_round[1..].to_vec();
    refresh.sort_by(f64::total_cmp);
    let median = refresh[refresh.len() / 2];
    println!(
        "timing ({}): first registration {first:.0} ns/REGISTER, refresh median {median:.0} ns/REGISTER \
         (min {:.0}, max {:.0}) over {} refreshes of {EXTENSIONS} extensions; {:.2} heap allocations \
         per refresh",
        if digest { "digest SHA-256, nonce reused, nc+1" } else { "no auth" },
        refresh[0],
        refresh[refresh.len() - 1],
        (ROUNDS - 1) as u64 * EXTENSIONS,
        refresh_allocations as f64 / ((ROUNDS - 1) as u64 * EXTENSIONS) as f64,
    );
    assert_eq!(gauge(&core, "sipfork_bindings"), EXTENSIONS);
    let mut sink = MetricSink::default();
    core.export_metrics(&mut sink);
    let updated = sink
        .samples
        .iter()
        .find(|s| {
            s.name == "sipfork_registrations_total" && s.labels.iter().any(|l| l.1 == "updated")
        })
        .map_or(0, |s| s.value);
    assert_eq!(
        updated,
        EXTENSIONS * u64::from(ROUNDS),
        "every REGISTER got its 200"
    );
}

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    // One memory scenario per process, so the resident figure starts from a clean heap.
    match what.as_str() {
        "memory" | "all" => memory(1_000_000, 1),
        "memory-4" => memory(250_000, 4),
        _ => {}
    }
    if what == "timing" || what == "timing-plain" || what == "all" {
        timing(false);
    }
    if what == "timing" || what == "timing-digest" || what == "all" {
        timing(true);
    }
}
