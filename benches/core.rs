//! A whole 3-way forked call through one `Core` on virtual time, without sockets or the kernel:
//! the core's CPU per call (criterion), and beside it the heap allocations per call.
//!
//! The call is `sipfork::testing::forked_call`'s script: the caller's INVITE (about 900 bytes
//! with SDP), 3 × 180, a 200 from one device, the proxy's two CANCELs answered by 200 and 487
//! (which it ACKs), the caller's ACK and BYE through the Record-Route, the 200 to the BYE: 12
//! datagrams in, 15 out. Calls follow each other every 8 ms of virtual time and every timer runs
//! when due, so about 4,000 earlier calls (8,000 call records: each INVITE's and its BYE's) sit
//! in their RFC 3261 timers while one is measured (the steady state of a loaded proxy, timer
//! firing included in the cost).
//!
//! Beside it, in the same run, the parse floor: `sip::parse` plus `check_request` /
//! `check_response` of the call's 12 received datagrams, the least any proxy does with them.
//!
//! Only the calls into the core are timed (`handle_datagram`, `handle_timeout`): the devices'
//! answers are templated outside the measured region, and the outbox is drained outside it. A
//! counting global allocator counts allocations made inside the same region.
//!
//! Run: `cargo bench --bench core -- --warm-up-time 1 --measurement-time 3`
//! (prints a summary line first: µs and allocations per call and per datagram).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as WallClock};

use criterion::{criterion_group, Criterion, Throughput};
use sipfork::core::transport::Transport;
use sipfork::sip::{check_request, check_response, parse};
use sipfork::testing::forked_call::{CallStats, ForkedCall, Observer, Recorder};
use sipfork::time::Instant;

/// Counts allocations (calls to `alloc`, `alloc_zeroed`, `realloc`) and the bytes they asked
/// for; everything else is the system allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is the system allocator's; the counters have no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as this method's caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as this method's caller.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as this method's caller; `ptr` came from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Time and allocations of one kind of entry into the core.
#[derive(Clone, Copy, Default)]
struct Cost {
    in_core: Duration,
    allocations: u64,
    allocated_bytes: u64,
    /// Calls into the core (datagrams and timer runs).
    entries: u64,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.in_core += o.in_core;
        self.allocations += o.allocations;
        self.allocated_bytes += o.allocated_bytes;
        self.entries += o.entries;
    }
}

/// Times the calls into the core and counts their allocations, in total and (when `by_step`)
/// per kind of datagram.
#[derive(Default)]
struct Meter {
    total: Cost,
    by_step: Option<Vec<(String, Cost)>>,
}

/// What an entry into the core was: the request method or the status with its CSeq method, or
/// a timer run. Worked out before the clock starts.
fn step_of(input: Option<(SocketAddr, &[u8])>) -> String {
    let Some((_, bytes)) = input else {
        return "timers".to_owned();
    };
    match sipfork::sip::parse(bytes) {
        Ok(m) => match (m.method(), m.status(), m.cseq()) {
            (Some(method), _, _) => String::from_utf8_lossy(method.as_bytes()).into_owned(),
            (None, Some(status), Ok(cseq)) => {
                format!(
                    "{status} {}",
                    String::from_utf8_lossy(cseq.method.as_bytes())
                )
            }
            _ => "other".to_owned(),
        },
        Err(_) => "unparsed".to_owned(),
    }
}

impl Observer for Meter {
    fn around<R>(
        &mut self,
        _now: Instant,
        input: Option<(SocketAddr, &[u8])>,
        call: impl FnOnce() -> R,
    ) -> R {
        let step = self.by_step.is_some().then(|| step_of(input));
        let (a0, b0) = (
            ALLOCATIONS.load(Ordering::Relaxed),
            ALLOCATED_BYTES.load(Ordering::Relaxed),
        );
        let t0 = WallClock::now();
        let r = call();
        let cost = Cost {
            in_core: t0.elapsed(),
            allocations: ALLOCATIONS.load(Ordering::Relaxed) - a0,
            allocated_bytes: ALLOCATED_BYTES.load(Ordering::Relaxed) - b0,
            entries: 1,
        };
        self.total += cost;
        if let (Some(steps), Some(step)) = (self.by_step.as_mut(), step) {
            match steps.iter_mut().find(|(s, _)| *s == step) {
                Some((_, c)) => *c += cost,
                None => steps.push((step, cost)),
            }
        }
        r
    }
}

/// A driver in its steady state: registered, with the timers of earlier calls running.
fn warmed_driver() -> ForkedCall {
    warmed(ForkedCall::new())
}

/// The caller (1050) is outside the platform (no auth, not an extension here): every call is
/// public, counted on a three-level tenancy path plus the server level, with a CDR.
const POLICY_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:5060"
domain = "example.com"
shards = 1
max_public_calls = 1000000
[registrar]
min_expires = 10
[auth]
mode = "none"
[policy]
cdr = "/var/lib/sipfork/cdr.jsonl"
[[tenants]]
name = "sp"
max_public_calls = 500000
[[tenants]]
name = "org"
parent = "sp"
max_public_calls = 200000
[[tenants]]
name = "user"
parent = "org"
max_public_calls = 100000
[[extensions]]
numbers = "1000-1049"
tenant = "user"
"#;

fn warmed(mut fc: ForkedCall) -> ForkedCall {
    // 40 s of calls: every call of the warm-up has gone through all its timers once.
    for _ in 0..5_000 {
        fc.call(&mut ());
    }
    fc
}

/// The summary printed before criterion's figures: the best of three rounds (the machine is
/// shared; interference only ever adds time), with the cost of each kind of datagram; for the
/// call as it is, then with the devices on TCP (`forked_call_tcp_devices`: every branch over a
/// flow, with two Record-Route entries).
fn summary(name: &str, mut fc: ForkedCall) {
    const CALLS: u64 = 10_000;
    let live = fc.core().proxy_calls();
    // What the meter's own clock reads and counter loads cost, per entry into the core.
    let mut probe = Meter::default();
    let t0 = WallClock::now();
    for _ in 0..100_000 {
        probe.around(Instant::ZERO, None, || black_box(()));
    }
    let overhead = t0.elapsed().as_secs_f64() / 100_000.0;
    let mut best: Option<(Meter, CallStats, Duration)> = None;
    for _ in 0..3 {
        let mut meter = Meter {
            by_step: Some(Vec::new()),
            ..Meter::default()
        };
        let mut totals = CallStats::default();
        let wall = WallClock::now();
        for _ in 0..CALLS {
            let s = fc.call(&mut meter);
            totals.datagrams_in += s.datagrams_in;
            totals.datagrams_out += s.datagrams_out;
            totals.from_timers += s.from_timers;
        }
        let wall = wall.elapsed();
        if best
            .as_ref()
            .is_none_or(|(b, _, _)| meter.total.in_core < b.total.in_core)
        {
            best = Some((meter, totals, wall));
        }
    }
    let (meter, totals, wall) = best.expect("three rounds ran");
    let floor = parse_floor(&mut fc);
    let calls = CALLS as f64;
    let net = |c: &Cost| c.in_core.as_secs_f64() - overhead * c.entries as f64;
    let per_call = net(&meter.total) / calls;
    let datagrams_in = totals.datagrams_in as f64 / calls;
    let datagrams = (totals.datagrams_in + totals.datagrams_out) as f64 / calls;
    println!(
        "core/{name} summary (best of 3 × {CALLS} calls): {:.2} µs in Core per 3-way \
         forked call ({:.0} datagrams in, {:.0} out, {} from timers; {:.1} entries into Core per \
         call, meter overhead {:.0} ns each subtracted), {:.2} µs per datagram received, {:.2} µs \
         per datagram handled (in + out); {:.1} heap allocations ({:.0} bytes) per call, {:.2} \
         per datagram received; {live} calls alive in the steady state; driver included: {:.2} \
         µs per call; parse floor {:.2} µs per call (Core ÷ floor = {:.1})",
        per_call * 1e6,
        datagrams_in,
        datagrams - datagrams_in,
        totals.from_timers,
        meter.total.entries as f64 / calls,
        overhead * 1e9,
        per_call * 1e6 / datagrams_in,
        per_call * 1e6 / datagrams,
        meter.total.allocations as f64 / calls,
        meter.total.allocated_bytes as f64 / calls,
        meter.total.allocations as f64 / calls / datagrams_in,
        wall.as_secs_f64() / calls * 1e6,
        floor * 1e6,
        per_call / floor,
    );
    println!("  per kind of entry: count per call, µs each, allocations (bytes) each");
    for (step, cost) in meter.by_step.iter().flatten() {
        let n = cost.entries as f64;
        println!(
            "  {step:<12} {:>5.2} {:>7.2} µs {:>6.1} ({:.0} B)",
            n / calls,
            net(cost) / n * 1e6,
            cost.allocations as f64 / n,
            cost.allocated_bytes as f64 / n,
        );
    }
}

/// Seconds to parse and check the datagrams one call hands the core (best of three rounds).
fn parse_floor(fc: &mut ForkedCall) -> f64 {
    let mut rec = Recorder::default();
    fc.call(&mut rec);
    let datagrams: Vec<Vec<u8>> = rec.datagrams.into_iter().map(|(_, _, b)| b).collect();
    const ROUNDS: u32 = 20_000;
    (0..3)
        .map(|_| {
            let t0 = WallClock::now();
            for _ in 0..ROUNDS {
                for d in &datagrams {
                    let m = parse(black_box(d)).expect("the call's datagrams parse");
                    let ok = if m.is_request() {
                        check_request(&m).is_ok()
                    } else {
                        check_response(&m).is_ok()
                    };
                    black_box(ok);
                }
            }
            t0.elapsed().as_secs_f64() / f64::from(ROUNDS)
        })
        .fold(f64::INFINITY, f64::min)
}

fn forked_call(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(1));
    let mut fc = warmed_driver();
    // Time in the core only (the driver's templating and outbox copies excluded).
    g.bench_function("forked_call", |b| {
        b.iter_custom(|iters| {
            let mut meter = Meter::default();
            for _ in 0..iters {
                fc.call(&mut meter);
            }
            meter.total.in_core
        })
    });
    // The same, driver included: what the exclusion above leaves out.
    g.bench_function("forked_call_with_driver", |b| b.iter(|| fc.call(&mut ())));
    // The same call with call policy configured (tenancy levels, CDRs), in the same run.
    let cfg = sipfork::config::Config::from_toml(POLICY_CONFIG).expect("bench config parses");
    let mut fp = warmed(ForkedCall::on(sipfork::testing::forked_call::core_with(
        std::sync::Arc::new(cfg),
    )));
    let calls = 5_000; // the warm-up
    assert!(
        fp.cdrs + 1 >= calls,
        "every warm-up call is public and writes its CDR"
    );
    g.bench_function("forked_call_policy", |b| {
        b.iter_custom(|iters| {
            let mut meter = Meter::default();
            for _ in 0..iters {
                fp.call(&mut meter);
            }
            meter.total.in_core
        })
    });
    g.finish();
}

/// Policy admission on the hot path (`core::policy::ledger`): a public call taken on a
/// three-level tenancy path plus the server level, then given back (an atomic add and one
/// subtract per level), beside the same call when the levels are not limited.
fn policy_admission(c: &mut Criterion) {
    use sipfork::config::Config;
    let cfg = Config::from_toml(
        "[server]\nlisten = \"127.0.0.1:5060\"\nmax_public_calls = 100000\n[auth]\nmode = \"none\"\n\
         [[tenants]]\nname = \"sp\"\nmax_public_calls = 50000\n\
         [[tenants]]\nname = \"org\"\nparent = \"sp\"\nmax_public_calls = 20000\n\
         [[tenants]]\nname = \"user\"\nparent = \"org\"\nmax_public_calls = 10000\n",
    )
    .expect("bench config parses");
    let user = cfg.tenancy.find("user").expect("tenant");
    let levels: Vec<usize> = cfg.tenancy.path(user).collect();
    let mut g = c.benchmark_group("policy");
    g.bench_function("admission", |b| {
        b.iter(|| {
            let a = cfg.ledger.admit(black_box(&levels)).expect("room");
            a.release();
        })
    });
    g.finish();
}

criterion_group!(benches, forked_call, policy_admission);

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs each bench once without it.
    if std::env::args().any(|a| a == "--bench") {
        summary("forked_call", warmed_driver());
        summary(
            "forked_call_tcp_devices",
            warmed(ForkedCall::new().with_devices_over(Transport::Tcp)),
        );
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
