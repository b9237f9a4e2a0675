//! Overload control and per-source rate limits (issue 12, point 2; docs/overload.md).
//!
//! Sans-IO: the engine reports each loop turn's work ([`LoadSample`]: how long it worked, how many
//! datagrams and letters it handled) with the turn's `now`; [`Overload::observe`] judges them per
//! window of `[overload] window_ms` against the configured thresholds and moves the *reduction*
//! (the percentage of new INVITEs refused, RFC 7339's "loss" algorithm) up by `step_up` after an
//! overloaded window, down by `step_down` after a calm one, and holds it in between.
//!
//! Overloaded: the receive queue never drained in the window — at least `backlog_share` % of
//! its (at least [`MIN_TURNS`]) busy turns each handled `backlog_high` or more datagrams and
//! letters (a full batch: the backends take up to 64 per turn) — or the loop worked `busy_high` %
//! of the window with datagrams queued. Calm: below `busy_low` % busy and fewer than half the
//! turns full. (Measured under a cgroup CPU cap, the loop's own work time is a poor signal: most
//! of a shard's CPU is kernel work inside the wait, and a throttled shard stalls anywhere; a
//! queue that never drains is the signal that holds.) The refusals are spread evenly (an accumulator, not a dice roll), so a test on
//! virtual time sees exactly which requests are shed.
//!
//! The per-source limit is a GCRA token bucket per source IP (`rate_limit` requests/s, bursts of
//! `rate_burst`), one `u64` per source, checked before the datagram is parsed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::config::overload::OverloadConfig;
use crate::config::Config;
use crate::core::context::Cx;
use crate::core::metrics::{MetricSink, ReasonCounters};
use crate::core::reply::reply_to;
use crate::sip::Message;
use crate::time::{Duration, Instant};

/// What the engine measured in one loop turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadSample {
    /// Time the turn worked (from the end of its wait to the end of its sends).
    pub worked: Duration,
    /// Datagrams and letters it handled (what was waiting when the wait ended).
    pub handled: u64,
}

/// What kind of new request a shedding decision is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// A new INVITE (outside a dialog).
    Invite,
    /// A REGISTER.
    Register,
}

/// Busy turns a window needs before its share of full turns counts (one burst is no backlog).
pub const MIN_TURNS: u32 = 8;

/// Labels of `sipfork_overload_shed_total{method}`.
const SHED_METHODS: [&str; 2] = ["INVITE", "REGISTER"];

/// One shard's overload state.
#[derive(Debug)]
pub struct Overload {
    /// Percent of new INVITEs refused now (0: not shedding).
    reduction: u32,
    /// Set by [`Overload::set_reduction`]: the engine's samples no longer move the reduction.
    pinned: bool,
    /// Even spreading of refusals: a request is refused each time this passes 100.
    acc: [u32; 2],
    window_start: Option<Instant>,
    window_busy: Duration,
    window_backlog: u64,
    window_turns: u32,
    window_full: u32,
    /// The last judged window: percent busy, and the most datagrams and letters one turn handled.
    last_busy_pct: u32,
    last_backlog: u64,
    last_full_pct: u32,
    /// Bumped whenever the reduction changes (RFC 7339 `oc-seq` goes with it).
    changes: u64,
    /// Per source IP: the GCRA theoretical arrival time (µs).
    buckets: HashMap<IpAddr, u64>,
    last_sweep: Instant,
    shed: ReasonCounters<2>,
    rate_limited: u64,
    untracked: u64,
    oc_sent: u64,
}

impl Default for Overload {
    fn default() -> Self {
        Overload::new()
    }
}

impl Overload {
    /// Not shedding, no sources known.
    pub fn new() -> Overload {
        Overload {
            reduction: 0,
            pinned: false,
            acc: [0; 2],
            window_start: None,
            window_busy: Duration::ZERO,
            window_backlog: 0,
            window_turns: 0,
            window_full: 0,
            last_busy_pct: 0,
            last_backlog: 0,
            last_full_pct: 0,
            changes: 0,
            buckets: HashMap::new(),
            last_sweep: Instant::ZERO,
            shed: ReasonCounters::default(),
            rate_limited: 0,
            untracked: 0,
            oc_sent: 0,
        }
    }

    /// Percent of new INVITEs refused now.
    pub fn reduction(&self) -> u32 {
        self.reduction
    }

    /// How often the reduction changed (for `oc-seq`).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Sets the reduction directly (`None`: back to the engine's samples).
    pub fn set_reduction(&mut self, reduction: Option<u32>) {
        self.pinned = reduction.is_some();
        self.set(reduction.unwrap_or(0).min(100));
    }

    fn set(&mut self, reduction: u32) {
        if reduction != self.reduction {
            self.reduction = reduction;
            self.changes += 1;
        }
    }

    /// Takes one turn's sample; at the end of each window, moves the reduction.
    pub fn observe(&mut self, cfg: &OverloadConfig, now: Instant, sample: LoadSample) {
        let start = *self.window_start.get_or_insert(now);
        self.window_busy += sample.worked;
        self.window_backlog = self.window_backlog.max(sample.handled);
        if sample.handled > 0 {
            self.window_turns += 1;
            if sample.handled >= u64::from(cfg.backlog_high) {
                self.window_full += 1;
            }
        }
        let span = now.saturating_since(start);
        if span < cfg.window {
            return;
        }
        let busy_pct = (self.window_busy.as_micros() * 100 / span.as_micros().max(1)) as u32;
        let full_pct = self.window_full * 100 / self.window_turns.max(1);
        let backlog = self.window_turns >= MIN_TURNS && full_pct >= cfg.backlog_share;
        // Busy alone is no overload: a shard that was preempted (wall-clock work time grows on a
        // crowded machine) while handling a few datagrams has nothing to shed; one that is busy
        // *and* finds datagrams queued (an eighth of `backlog_high`) is falling behind.
        let queued = self.window_backlog >= u64::from((cfg.backlog_high / 8).max(1));
        self.last_busy_pct = busy_pct;
        self.last_backlog = self.window_backlog;
        self.last_full_pct = full_pct;
        self.window_turns = 0;
        self.window_full = 0;
        self.window_start = Some(now);
        self.window_busy = Duration::ZERO;
        self.window_backlog = 0;
        if self.pinned || !cfg.enabled {
            return;
        }
        let next = if (busy_pct >= cfg.busy_high && queued) || backlog {
            (self.reduction + cfg.step_up).min(cfg.max_reduction)
        } else if busy_pct < cfg.busy_low && full_pct < 50 {
            self.reduction.saturating_sub(cfg.step_down)
        } else {
            self.reduction
        };
        self.set(next);
    }

    /// Whether this new request is refused now. INVITEs are refused at the reduction's rate;
    /// REGISTERs too, except that `register_share` percent of them is always served.
    pub fn sheds(&mut self, cfg: &OverloadConfig, kind: Shed) -> bool {
        let rate = match kind {
            Shed::Invite => self.reduction,
            Shed::Register => self.reduction.min(100 - cfg.register_share.min(100)),
        };
        if rate == 0 {
            return false;
        }
        let acc = &mut self.acc[kind as usize];
        *acc += rate;
        if *acc >= 100 {
            *acc -= 100;
            self.shed.bump(kind as usize);
            true
        } else {
            false
        }
    }

    /// Counts one answer that carried RFC 7339 `oc` parameters.
    pub fn count_oc(&mut self) {
        self.oc_sent += 1;
    }

    /// The per-source limit: `true` when a request from `ip` may go on. A source over its rate
    /// is counted once per request by the caller's [`Overload::count_rate_limited`] (it may still
    /// be exempt: trusted, an emergency call).
    pub fn source_within_rate(&mut self, cfg: &OverloadConfig, now: Instant, ip: IpAddr) -> bool {
        if cfg.rate_limit == 0 {
            return true;
        }
        let t = now.as_micros();
        if now.saturating_since(self.last_sweep) >= crate::time::secs(1) {
            // Idle sources (bucket full again) are forgotten: the map holds active senders.
            self.buckets.retain(|_, tat| *tat > t);
            self.last_sweep = now;
        }
        let interval = 1_000_000 / u64::from(cfg.rate_limit).max(1);
        let tolerance = interval * u64::from(cfg.rate_burst.saturating_sub(1));
        let len = self.buckets.len();
        let tat = match self.buckets.get_mut(&ip) {
            Some(tat) => tat,
            None if len >= cfg.rate_sources as usize => {
                // Full of active sources (a spoofed flood): a new one is not tracked.
                self.untracked += 1;
                return true;
            }
            None => self.buckets.entry(ip).or_insert(t),
        };
        let start = (*tat).max(t);
        if start - t > tolerance {
            return false;
        }
        *tat = start + interval;
        true
    }

    /// Counts a request dropped by the per-source limit.
    pub fn count_rate_limited(&mut self) {
        self.rate_limited += 1;
    }

    /// Requests dropped by the per-source limit.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited
    }

    /// Requests refused by shedding, INVITEs and REGISTERs.
    pub fn shed_count(&self, kind: Shed) -> u64 {
        self.shed.get(kind as usize)
    }

    /// Writes the overload metrics of one shard.
    pub fn export_metrics(&self, sink: &mut MetricSink, labels: &[(&'static str, &str)]) {
        sink.gauge(
            "sipfork_overload_reduction",
            "Current load level: percent of new INVITEs refused with 503 (0: not shedding)",
            labels,
            u64::from(self.reduction),
        );
        sink.gauge(
            "sipfork_overload_busy_pct",
            "Percent of the last load window the shard's loop worked",
            labels,
            u64::from(self.last_busy_pct),
        );
        sink.gauge(
            "sipfork_overload_full_turns_pct",
            "Percent of the last load window's busy turns that handled a full batch (backlog_high)",
            labels,
            u64::from(self.last_full_pct),
        );
        sink.gauge(
            "sipfork_overload_backlog",
            "Most datagrams and letters one loop turn handled in the last load window",
            labels,
            self.last_backlog,
        );
        for (i, method) in SHED_METHODS.iter().enumerate() {
            let mut l = labels.to_vec();
            l.push(("method", method));
            l.push(("reason", "load"));
            sink.counter(
                "sipfork_overload_shed_total",
                "New requests refused with 503 + Retry-After because the shard was overloaded",
                &l,
                self.shed.get(i),
            );
        }
        sink.counter(
            "sipfork_rate_limited_total",
            "Requests dropped unparsed because their source IP exceeded [overload] rate_limit",
            labels,
            self.rate_limited,
        );
        sink.gauge(
            "sipfork_rate_limit_sources",
            "Source addresses the per-source rate limit tracks",
            labels,
            self.buckets.len() as u64,
        );
        sink.counter(
            "sipfork_rate_limit_untracked_total",
            "Requests from new sources not tracked because rate_sources were all active",
            labels,
            self.untracked,
        );
        sink.counter(
            "sipfork_overload_oc_total",
            "Responses that carried RFC 7339 oc parameters to a peer announcing support",
            labels,
            self.oc_sent,
        );
    }
}

/// Answers a shed request statelessly: `503` with `Retry-After`, and RFC 7339 values in the
/// top Via when the sender announced `oc` support (counted).
pub fn refuse(cx: &mut Cx<'_>, req: &Message<'_>, from: SocketAddr) {
    let (retry_after, validity) = (cx.cfg.overload.retry_after, cx.cfg.overload.oc_validity_ms);
    let reduction = cx.overload.reduction();
    let retry = format!("Retry-After: {retry_after}\r\n");
    reply_to(
        cx,
        req,
        from,
        503,
        "Service Unavailable - overloaded",
        retry.as_bytes(),
    );
    let announces = req
        .top_via()
        .is_ok_and(|v| v.params.get("oc") == Some(None));
    let Some(i) = cx.out.len().checked_sub(1).filter(|_| announces) else {
        return;
    };
    let Some(t) = cx.out.transmits().get(i) else {
        return;
    };
    let mut copy = cx.out.bytes(t).to_vec();
    if !add_oc_params(&mut copy, 0, reduction, validity, cx.env.wall_us(cx.now)) {
        return;
    }
    cx.out.replace(i, |buf| buf.extend_from_slice(&copy));
    cx.overload.count_oc();
}

/// RFC 7339 §5.2 on a response to a call's client (relayed, our Via already removed, or written
/// here: 100 Trying, 408, 480…): when the client announced `oc` in its Via, the response tells
/// it this shard's current reduction
/// (0 when not overloaded), so a supporting client throttles its new requests before any of them
/// is refused. Counted like the 503s' values. Off with `[overload] enabled = false`.
pub fn mark_response(cx: &mut Cx<'_>, bytes: &mut Vec<u8>) {
    // Almost no response announces: a scan for the parameter spares them the parse.
    if !cx.cfg.overload.enabled || crate::sip::scan::find_short(bytes, b";oc").is_none() {
        return;
    }
    let (reduction, validity) = (cx.overload.reduction(), cx.cfg.overload.oc_validity_ms);
    if add_oc_params(bytes, 0, reduction, validity, cx.env.wall_us(cx.now)) {
        cx.overload.count_oc();
    }
}

/// Whether a datagram from `from` is exempt from the per-source limit once over it: sipfork
/// itself and the host's own loopback addresses (local tools, the load harness), trusted peers, trunks and route next hops, and requests to an emergency number (the
/// Request-URI of the first line, parsed on its own).
pub fn exempt_source(cfg: &Config, local: SocketAddr, d: &crate::core::io::Datagram<'_>) -> bool {
    let (from, datagram) = (d.from, d.bytes);
    from == local
        || from.ip().is_loopback()
        || cfg.is_trusted(from.ip())
        || cfg
            .trunk_of(from, d.transport, d.peer_cert.map(|c| &**c))
            .is_some()
        || cfg.is_route_hop(from.ip())
        || request_uri_of(datagram)
            .and_then(|u| crate::sip::Uri::parse(u).ok())
            .is_some_and(|u| cfg.policy.is_emergency(&crate::core::number::of_uri(&u)))
}

/// The cheap look at a request before it is parsed: the Request-URI of its first line, if the
/// datagram starts with one (`METHOD SP URI SP SIP/2.0`).
pub fn request_uri_of(datagram: &[u8]) -> Option<&[u8]> {
    let head = &datagram[..datagram.len().min(512)];
    let line_end = head.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let mut parts = head[..line_end].split(|&b| b == b' ');
    let _method = parts.next()?;
    parts.next().filter(|u| !u.is_empty())
}

/// Writes RFC 7339 §5.2 values into the first via-parm of the response in `buf[start..]`
/// (`oc` → `oc=R;oc-validity=MS;oc-seq=S.mmm;oc-algo="loss"`) when that via-parm carries a bare
/// `oc`: the peer announced support (the response copies the request's Via). Returns whether it
/// did.
pub fn add_oc_params(
    buf: &mut Vec<u8>,
    start: usize,
    reduction: u32,
    validity_ms: u32,
    seq_wall_us: u64,
) -> bool {
    let Ok(msg) = crate::sip::parse(&buf[start..]) else {
        return false;
    };
    let Ok(via) = msg.top_via() else {
        return false;
    };
    // The peer's bare `oc` (announced support) becomes `oc=R` with the other values after it
    // (RFC 7339 §5.2); an `oc` with a value (a peer echoing a server's) is no announcement.
    let Some(name) = via
        .params
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"oc"))
        .and_then(|(name, value)| value.is_none().then_some(name))
    else {
        return false;
    };
    let base = buf[start..].as_ptr() as usize;
    let end = name.as_ptr() as usize - base + name.len() + start;
    let params = format!(
        "={reduction};oc-validity={validity_ms};oc-seq={}.{:03};oc-algo=\"loss\"",
        seq_wall_us / 1_000_000,
        seq_wall_us / 1000 % 1000
    );
    buf.splice(end..end, params.bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OverloadConfig {
        OverloadConfig::default()
    }

    #[test]
    fn reduction_rises_with_busy_windows_and_falls_when_calm() {
        let cfg = cfg();
        let mut o = Overload::new();
        let mut now = Instant::ZERO;
        // One turn at `now` that worked `ms` and handled `handled` datagrams.
        let turn = |o: &mut Overload, now: Instant, ms: u64, handled: u64| {
            let worked = crate::time::ms(ms);
            o.observe(&cfg, now, LoadSample { worked, handled });
        };
        turn(&mut o, now, 0, 0);
        // (advance one window, last turn's work, its datagrams, the reduction after it)
        let windows: [(u64, u64, u32, &str); 4] = [
            (95, 40, 10, "busy with datagrams queued"),
            (95, 40, 20, "again"),
            (
                99,
                2,
                20,
                "busy with nothing queued (a preempted shard): held",
            ),
            (80, 1, 20, "between busy_low and busy_high: held"),
        ];
        for (ms, handled, after, why) in windows {
            now += crate::time::ms(100);
            turn(&mut o, now, ms, handled);
            assert_eq!(o.reduction(), after, "{why}");
        }
        now += crate::time::ms(100);
        turn(&mut o, now, 0, 0);
        assert_eq!(o.reduction(), 18, "calm");
        // A queue that never drains is overload, however little the loop's own work: eleven
        // full turns in the window.
        for _ in 0..10 {
            turn(&mut o, now, 0, 64);
        }
        now += crate::time::ms(100);
        turn(&mut o, now, 1, 64);
        assert_eq!(o.reduction(), 28);
        // One burst (a single full turn) is not: held.
        now += crate::time::ms(100);
        turn(&mut o, now, 1, 64);
        assert_eq!(o.reduction(), 28);
    }

    #[test]
    fn refusals_are_spread_evenly_and_registers_keep_their_share() {
        let cfg = cfg();
        let mut o = Overload::new();
        o.set_reduction(Some(80));
        let invites = (0..100).filter(|_| o.sheds(&cfg, Shed::Invite)).count();
        let registers = (0..100).filter(|_| o.sheds(&cfg, Shed::Register)).count();
        assert_eq!(invites, 80);
        assert_eq!(registers, 50, "register_share = 50 % always served");
        o.set_reduction(Some(0));
        assert!(!o.sheds(&cfg, Shed::Invite));
    }

    #[test]
    fn gcra_allows_the_rate_and_the_burst() {
        let cfg = OverloadConfig {
            rate_limit: 100,
            rate_burst: 10,
            ..cfg()
        };
        let mut o = Overload::new();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let now = Instant::from_micros(5_000_000);
        let burst = (0..50)
            .filter(|_| o.source_within_rate(&cfg, now, ip))
            .count();
        assert_eq!(burst, 10);
        // 10 ms later: one more token.
        let later = now + crate::time::ms(10);
        assert!(o.source_within_rate(&cfg, later, ip));
        assert!(!o.source_within_rate(&cfg, later, ip));
    }

    #[test]
    fn request_line_uri() {
        assert_eq!(
            request_uri_of(b"INVITE sip:112@example.net SIP/2.0\r\nVia: x\r\n"),
            Some(&b"sip:112@example.net"[..])
        );
        assert_eq!(request_uri_of(b"garbage"), None);
    }

    #[test]
    fn oc_params_go_only_to_an_announcing_via() {
        let resp = b"SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;oc, SIP/2.0/UDP 10.0.0.2\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let mut buf = b"xx".to_vec();
        buf.extend_from_slice(resp);
        assert!(add_oc_params(&mut buf, 2, 40, 500, 1_282_321_615_781_000));
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains(
            "branch=z9hG4bKa;oc=40;oc-validity=500;oc-seq=1282321615.781;oc-algo=\"loss\", SIP/2.0/UDP 10.0.0.2"
        ));
        let plain = String::from_utf8(resp.to_vec())
            .unwrap()
            .replace(";oc,", ",");
        let mut buf = plain.into_bytes();
        assert!(!add_oc_params(&mut buf, 0, 40, 500, 1));
    }
}
