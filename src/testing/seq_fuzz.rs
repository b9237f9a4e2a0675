//! The `core_sequences` fuzz target (issue 12): whole SIP conversations, not single datagrams.
//! The input drives scripted phones in a [`World`] (the real shard cores, one or two of them, a
//! lossy, jittery network, virtual time): registrations, calls, answers and rejections, CANCELs,
//! BYEs, targeted drops of one kind of message, raw junk, and time passing. So the cores see
//! sequences a byte-level fuzzer almost never builds (a CANCEL racing a 200, an ACK lost, a BYE
//! before the ACK, a refresh during a call, two shards handing datagrams over).
//!
//! Invariants, each a panic when broken:
//! - nothing panics inside the cores (or the phones);
//! - state stays bounded: the calls the cores hold never exceed the datagrams delivered to them,
//!   and their timers stay under [`TIMERS_PER_DATAGRAM`] per datagram delivered;
//! - every call ends: after the input, silence longer than any dialog (`[policy]
//!   max_call_seconds`), transaction or binding can last leaves no call, no dialog and no timer
//!   in any core.
//!
//! Input: byte 0 picks one or two shards and the loss (0–31 %), byte 1 the jitter; then actions
//! of two bytes each (`op`, `arg`) until the input ends (at most [`MAX_ACTIONS`]). [`run`] is
//! what the fuzz target calls; `tests/core/sequences.rs` runs it on the committed seeds and on
//! proptest-generated input.

use crate::core::metrics::MetricSink;
use crate::testing::phone::Behaviour;
use crate::testing::sim::{PhoneId, World, DEFAULT_CONFIG};
use crate::time::Duration;

/// Actions read from one input at most (longer inputs are cut).
pub const MAX_ACTIONS: usize = 256;
/// Timers a core may hold per datagram delivered to it (generous: a forked INVITE arms a few
/// per branch).
pub const TIMERS_PER_DATAGRAM: u64 = 16;

/// Phones: two devices of 1000, one of 1001, and two callers (1050, 1051) that also register.
const PHONES: [(&str, &str, u16); 5] = [
    ("dev-1000-a", "1000", 6001),
    ("dev-1000-b", "1000", 6002),
    ("dev-1001", "1001", 6003),
    ("caller-1050", "1050", 6004),
    ("caller-1051", "1051", 6005),
];
/// What a call may dial: registered extensions, one nobody registers, one not served.
const NUMBERS: [&str; 5] = ["1000", "1001", "1002", "1050", "9999"];
/// Messages a targeted drop may hit (first-line prefixes).
const DROPPABLE: [&str; 8] = [
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "SIP/2.0 180",
    "SIP/2.0 200",
    "SIP/2.0 487",
    "REGISTER",
];

/// The config of a fuzzed world: [`DEFAULT_CONFIG`] with `shards`.
fn config(shards: u16) -> String {
    DEFAULT_CONFIG.replace("shards = 1", &format!("shards = {shards}"))
}

/// What one run did, for tests that check their seeds still reach deep states.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Datagrams the cores received.
    pub delivered: u64,
    /// Every response status any phone received, in order.
    pub statuses: Vec<u16>,
}

/// Runs one input; panics when an invariant breaks.
pub fn run(data: &[u8]) -> Summary {
    let (head, actions) = match data {
        [a, b, rest @ ..] => ([*a, *b], rest),
        _ => return Summary::default(),
    };
    let shards = 1 + u16::from(head[0] & 1);
    let seed = u64::from(u16::from_le_bytes(head));
    let mut w = World::new(&config(shards), shards, seed);
    w.netem.loss = f64::from((head[0] >> 1) & 31) / 100.0;
    w.netem.jitter = Duration::from_micros(u64::from(head[1]) * 100);
    let phones: Vec<PhoneId> = PHONES
        .iter()
        .map(|(name, user, port)| w.add_phone(name, user, *port))
        .collect();
    let mut calls: Vec<(PhoneId, usize)> = Vec::new();
    for pair in actions.chunks_exact(2).take(MAX_ACTIONS) {
        let (op, arg) = (pair[0], pair[1]);
        let phone = phones[usize::from(arg) % phones.len()];
        match op % 11 {
            0 | 1 => w.start_register(phone, [0, 10, 60, 3600][usize::from(arg >> 4) % 4]),
            2 | 3 => {
                let number = NUMBERS[usize::from(arg >> 4) % NUMBERS.len()];
                calls.push((phone, w.call(phone, number)));
            }
            4 => {
                if let Some(&(p, c)) = pick(&calls, arg) {
                    w.cancel(p, c);
                }
            }
            5 => {
                if let Some(&(p, c)) = pick(&calls, arg) {
                    w.hang_up(p, c);
                }
            }
            6 => {
                let after = Duration::from_millis(u64::from(arg >> 3) * 50);
                let b = match arg & 7 {
                    0 => Behaviour::default(),
                    1 | 2 => Behaviour::answer_after(after),
                    3 => Behaviour::reject_after(486, after),
                    4 => Behaviour::reject_after(603, after),
                    5 => Behaviour::silent(),
                    _ => Behaviour {
                        trying: true,
                        ..Behaviour::answer_after(after)
                    },
                };
                w.behave(phone, b);
            }
            7 => {
                let what = DROPPABLE[usize::from(arg >> 4) % DROPPABLE.len()];
                w.drop_next(1 + usize::from(arg & 3), what, None, None, None);
            }
            8 => {
                let method = ["OPTIONS", "MESSAGE", "INFO"][usize::from(arg >> 4) % 3];
                let number = NUMBERS[usize::from(arg >> 2) % NUMBERS.len()];
                w.request(phone, method, number, "", "");
            }
            9 => w.send_raw(phone, JUNK[usize::from(arg >> 4) % JUNK.len()]),
            _ => w.run_for(Duration::from_millis(u64::from(arg) * 20)),
        }
        w.run_for(Duration::from_millis(5));
        check_bounded(&w);
    }
    // Silence: longer than a dialog without BYE (`[policy] max_call_seconds`), every
    // transaction timer, and any binding (3600 s at most).
    let max_call = w.cores()[0].config().policy.max_call;
    w.run_for(max_call + Duration::from_secs(2 * 3600));
    check_bounded(&w);
    for (i, core) in w.cores().iter().enumerate() {
        let left = (core.proxy_calls(), core.proxy_dialogs(), timers(core));
        assert_eq!(
            left,
            (0, 0, 0),
            "shard {i}: calls, dialogs and timers left after silence\n{}",
            w.dump()
        );
    }
    Summary {
        delivered: delivered(&w),
        statuses: phones
            .iter()
            .flat_map(|&p| w.phone_ref(p).statuses())
            .collect(),
    }
}

/// Datagrams delivered to the cores so far.
fn delivered(w: &World) -> u64 {
    w.log
        .iter()
        .filter(|t| t.to == w.proxy && t.fate == "sent")
        .count() as u64
}

/// Datagrams that are not a conversation: a truncated INVITE, a stray response, garbage.
const JUNK: [&[u8]; 4] = [
    b"INVITE sip:1000@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6004;branch=z9hG4bKjunk\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-nope\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"\r\n\r\n",
    b"\x00\xffnot sip at all",
];

fn pick<T>(items: &[T], arg: u8) -> Option<&T> {
    match items.len() {
        0 => None,
        n => items.get(usize::from(arg) % n),
    }
}

/// A core's armed timers, as its `sipfork_timers` gauge reports them.
fn timers(core: &crate::core::Core) -> u64 {
    let mut sink = MetricSink::default();
    core.export_metrics(&mut sink);
    sink.samples
        .iter()
        .find(|s| s.name == "sipfork_timers")
        .map_or(0, |s| s.value)
}

fn check_bounded(w: &World) {
    let delivered = delivered(w);
    let calls: usize = w.cores().iter().map(|c| c.proxy_calls()).sum();
    let timers: u64 = w.cores().iter().map(timers).sum();
    assert!(
        calls as u64 <= delivered,
        "{calls} calls from {delivered} datagrams\n{}",
        w.dump()
    );
    assert!(
        timers <= TIMERS_PER_DATAGRAM * delivered.max(1),
        "{timers} timers from {delivered} datagrams\n{}",
        w.dump()
    );
}
