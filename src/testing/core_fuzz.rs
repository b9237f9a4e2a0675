//! The `core_datagrams` fuzz target (ARCHITECTURE.md §9): a sequence of `(delta_t, peer, bytes)`
//! into a [`crate::core::Core`] whose extension 1000 has three registered devices.
//!
//! Invariants, each a panic when broken:
//! - nothing panics inside the core;
//! - every datagram the core sends parses (a copy of a request already at the parser's row or
//!   size limit may exceed it by the rows a proxy adds; see `build_checks`);
//! - the core never holds more calls than it was sent datagrams (no datagram creates two);
//! - after silence longer than any call, transaction or dialog can last (64·T1 for the
//!   transactions, `[policy] max_call_seconds` for a dialog whose BYE never came), no call is
//!   left.
//!
//! Input: records of `delta_ms: u16 LE`, `peer: u8`, `len: u16 LE`, then `len` octets (fewer when
//! the input ends). [`encode`] writes that format; the seeds (every shared vector as a datagram
//! from the caller, and a whole forked call recorded by [`ForkedCall`]) come from
//! `cargo run --example core_fuzz_seeds -- DIR`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::core::transaction::TimerValues;
use crate::sip::build::ROWS_ADDED_BY_FORWARDING;
use crate::sip::{parse, ParseError, MAX_ROWS};
use crate::testing::forked_call::{device, ForkedCall, Observer, Recorder, CALLER};
use crate::time::{Duration, Instant};

/// Who may send: the caller, the three devices, a stranger, an IPv6 phone, and the proxy's own
/// address (a spoofed loop).
pub fn peers() -> [SocketAddr; 7] {
    [
        CALLER,
        device(0),
        device(1),
        device(2),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), 5060),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 5070),
        crate::testing::forked_call::PROXY,
    ]
}

/// Splits fuzz input into `(delay, source, datagram)` records.
pub fn decode(data: &[u8]) -> Vec<(Duration, SocketAddr, &[u8])> {
    let peers = peers();
    let mut records = Vec::new();
    let mut rest = data;
    while let [d0, d1, peer, l0, l1, tail @ ..] = rest {
        let delay = Duration::from_millis(u64::from(u16::from_le_bytes([*d0, *d1])));
        let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        records.push((delay, peers[usize::from(*peer) % peers.len()], bytes));
        rest = after;
    }
    records
}

/// Writes records in the input format (delays in whole milliseconds, at most 65.535 s; sources
/// not among [`peers`] become the caller).
pub fn encode(records: &[(Duration, SocketAddr, Vec<u8>)]) -> Vec<u8> {
    let peers = peers();
    let mut out = Vec::new();
    for (delay, from, bytes) in records {
        let ms = u16::try_from(delay.as_millis()).unwrap_or(u16::MAX);
        let peer = peers.iter().position(|p| p == from).unwrap_or(0) as u8;
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&ms.to_le_bytes());
        out.push(peer);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&bytes[..usize::from(len)]);
    }
    out
}

/// A whole forked call as the seed corpus holds it: the caller's and the devices' datagrams,
/// recorded from [`ForkedCall`] on a core in the same state as [`run`]'s.
pub fn recorded_call() -> Vec<u8> {
    let mut fc = ForkedCall::new();
    fc.register_if_due();
    let mut rec = Recorder::default();
    fc.call(&mut rec);
    encode(&rec.datagrams)
}

/// Checks everything the core sends.
#[derive(Default)]
struct Checks {
    /// Most header rows of any datagram handed to the core so far.
    max_input_rows: usize,
    sent: u64,
}

impl Observer for Checks {
    fn sent(&mut self, datagrams: &[(SocketAddr, Vec<u8>)]) {
        for (to, bytes) in datagrams {
            self.sent += 1;
            match parse(bytes) {
                Ok(_) => {}
                // An answer to a request at the row limit copies its Vias and may exceed it;
                // a request the core sends never does (too long ones are refused at intake).
                Err(ParseError::TooManyHeaders)
                    if crate::sip::looks_like_response(bytes)
                        && self.max_input_rows + ROWS_ADDED_BY_FORWARDING > MAX_ROWS => {}
                Err(ParseError::MessageTooLarge) if bytes.len() > usize::from(u16::MAX) => {}
                Err(e) => panic!(
                    "the core sent to {to} what does not parse ({e:?}):\n{}",
                    String::from_utf8_lossy(bytes)
                ),
            }
        }
    }
}

/// What a run did (for tests of the harness and the seeds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Datagrams handed to the core.
    pub datagrams_in: u64,
    /// Datagrams the core sent (timer runs included).
    pub datagrams_out: u64,
    /// Most calls alive at once.
    pub peak_calls: usize,
}

/// Runs one fuzz input; panics when an invariant breaks.
pub fn run(data: &[u8]) -> Summary {
    let mut fc = ForkedCall::new();
    fc.register_if_due();
    let mut checks = Checks::default();
    let mut summary = Summary::default();
    for (delay, from, bytes) in decode(data) {
        fc.idle(&mut checks, delay);
        let rows = match parse(bytes) {
            Ok(m) => m.header_count(),
            // An unparsed request is still answered from what `salvage` indexed.
            Err(_) => crate::sip::salvage(bytes).map_or(0, |m| m.header_count()),
        };
        checks.max_input_rows = checks.max_input_rows.max(rows);
        fc.inject(&mut checks, from, bytes);
        summary.datagrams_in += 1;
        let calls = fc.core().proxy_calls();
        summary.peak_calls = summary.peak_calls.max(calls);
        assert!(
            calls as u64 <= summary.datagrams_in,
            "{calls} calls from {} datagrams",
            summary.datagrams_in
        );
    }
    // Silence: every transaction ends within 64·T1 (Timer C restarts at most until a final
    // response, which Timer B/C bound too), and a dialog without BYE within max_call_seconds.
    let t = TimerValues::default();
    let quiet = fc.core().config().policy.max_call + t.t1x64() * 2 + Duration::from_secs(600);
    let until = fc.now() + quiet;
    fc.idle(&mut checks, until.saturating_since(fc.now()));
    assert_eq!(
        fc.core().proxy_calls(),
        0,
        "calls left after {:?} of silence",
        Instant::ZERO + quiet
    );
    summary.datagrams_out = checks.sent;
    summary
}
