//! Carrier-edge security (README "Security model"): one deterministic test per attack, on virtual
//! time, and a property test of the egress rule.
//!
//! The edge here: digest on, extensions 1000-1099 (`pw-<number>`), a `[[routes]]` trunk for
//! numbers starting `00` at 127.0.0.50:5090, a trusted PBX at 127.0.0.60. The attacker sends from
//! 127.0.0.66; 127.0.0.99 stands for any third party. Nothing may ever be sent to a third party,
//! and the trunk may only be reached by a request that authenticated.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use proptest::prelude::*;
use sipfork::config::Config;
use sipfork::core::io::{Datagram, Inbound};
use sipfork::core::metrics::MetricSink;
use sipfork::core::registrar::digest::{compute_response, Algorithm, Ha1, ResponseInput};
use sipfork::core::shard::ShardId;
use sipfork::core::transaction::TimerValues;
use sipfork::core::{Core, CoreParams};
use sipfork::sip::{self, HeaderName};
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{World, DEFAULT_CONFIG};
use sipfork::time::{ms, secs, Duration, Instant};

pub(super) const EDGE: &str = r#"
[server]
listen = "127.0.0.1:5060"
domain = "example.com"
[registrar]
min_expires = 10
[auth]
mode = "digest"
realm = "example.com"
algorithms = ["MD5"]
[security]
max_auth_failures = 10
auth_window = 60
block_seconds = 300
[[extensions]]
numbers = "1000-1099"
password = "pw-{number}"
[[routes]]
prefix = "00"
next_hop = "sip:127.0.0.50:5090"
[[trusted]]
cidr = "127.0.0.60/32"
name = "pbx"
"#;

const ATTACKER: &str = "127.0.0.66:5060";
const THIRD_PARTY: &str = "127.0.0.99:5060";
/// A sender of stray datagrams (answers to it are fine: it asked).
const STRANGER: &str = "127.0.0.77:5060";
const TRUNK: &str = "127.0.0.50:5090";
const PBX: &str = "127.0.0.60:5060";

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The proxy's shards on virtual time, every datagram they sent kept in order.
pub(super) struct Edge {
    pub(super) cores: Vec<Core>,
    now: Instant,
    pub(super) sent: Vec<(SocketAddr, Vec<u8>)>,
    /// The lines the core handed the operator's log (`core::notice`).
    log: Vec<String>,
    counter: u64,
}

impl Edge {
    pub(super) fn new(config: &str, shards: u16) -> Edge {
        let cfg = Arc::new(Config::from_toml(config).unwrap_or_else(|e| panic!("{e}")));
        let cores = (0..shards)
            .map(|s| {
                Core::new(
                    Arc::clone(&cfg),
                    CoreParams {
                        shard: ShardId(s),
                        shards,
                        local: addr("127.0.0.1:5060"),
                        secret: [9; 32],
                        wall_epoch_us: 1_800_000_000_000_000,
                        timers: TimerValues::default(),
                    },
                    Instant::ZERO,
                )
            })
            .collect();
        Edge {
            cores,
            now: Instant::ZERO,
            sent: Vec::new(),
            log: Vec::new(),
            counter: 0,
        }
    }

    fn flush(&mut self, s: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let out: Vec<_> = self.cores[s]
            .outbox()
            .iter()
            .map(|(to, b)| (to, b.to_vec()))
            .collect();
        self.cores[s].outbox().clear();
        self.cores[s].drain_persist(|_| {});
        let log = &mut self.log;
        self.cores[s].drain_notices(|n| log.push(n.to_string()));
        self.sent.extend(out.iter().cloned());
        // Core-to-core notes (lines of placed calls across shards) reach their shard at once.
        let mut notes = Vec::new();
        self.cores[s].drain_shard_notes(|to, bytes| notes.push((to, bytes.to_vec())));
        let mut out = out;
        for (to, bytes) in notes {
            let now = self.now;
            self.cores[to.index()].handle_shard_note(now, ShardId(s as u16), &bytes);
            out.extend(self.flush(to.index()));
        }
        out
    }

    /// Hands `bytes` from `from` to the shard the kernel would pick (here: the first), and on to
    /// the owner; returns what the core sent.
    pub(super) fn send(&mut self, from: &str, bytes: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        self.send_over(from, bytes, sipfork::core::transport::Transport::Udp, None)
    }

    /// As [`Edge::send`], over a connection of `transport` whose peer presented the verified
    /// client certificate `cert` (when given).
    pub(super) fn send_over(
        &mut self,
        from: &str,
        bytes: &[u8],
        transport: sipfork::core::transport::Transport,
        cert: Option<&sipfork::core::transport::peer_cert::PeerCert>,
    ) -> Vec<(SocketAddr, Vec<u8>)> {
        self.now += ms(1);
        let mut shard = 0;
        let mut out = Vec::new();
        for _ in 0..2 {
            let d = Datagram {
                from: addr(from),
                local: addr("127.0.0.1:5060"),
                bytes,
                transport,
                peer_cert: cert,
            };
            let r = self.cores[shard].handle_datagram(self.now, d);
            out.extend(self.flush(shard));
            match r {
                Inbound::Handled => break,
                Inbound::ForShard(s) => shard = s.index(),
            }
        }
        out
    }

    /// Runs every timer up to `d` from now; returns what the core sent.
    pub(super) fn advance(&mut self, d: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
        let end = self.now + d;
        let mut out = Vec::new();
        loop {
            let next = self.cores.iter().filter_map(Core::poll_timeout).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for s in 0..self.cores.len() {
                        if self.cores[s].poll_timeout().is_some_and(|t| t <= self.now) {
                            self.cores[s].handle_timeout(self.now);
                            out.extend(self.flush(s));
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = end;
        out
    }

    pub(super) fn fresh(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// A REGISTER of `user` from `from` (Contact = `contact`), with `auth` rows.
    fn register(&mut self, from: &str, user: &str, contact: &str, auth: &str) -> Reply {
        let n = self.fresh();
        let msg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKr{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=r{n}\r\nTo: <sip:{user}@example.com>\r\n\
             Call-ID: reg-{user}-{from}\r\nCSeq: {n} REGISTER\r\nContact: <{contact}>\r\nExpires: 3600\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        );
        Reply::only(self.send(from, msg.as_bytes()), from)
    }

    /// Registers `user` from `from` with the right password (401, then 200).
    pub(super) fn register_ok(&mut self, from: &str, user: &str, contact: &str) {
        let r = self.register(from, user, contact, "");
        assert_eq!(r.status, 401, "{}", r.text);
        let auth = authorization(
            "Authorization",
            user,
            &format!("pw-{user}"),
            "REGISTER",
            "sip:example.com",
            &r.nonce(),
            1,
        );
        let r = self.register(from, user, contact, &auth);
        assert_eq!(r.status, 200, "{}", r.text);
    }
}

/// The single answer a request got.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) reason: String,
    pub(super) text: String,
}

impl Reply {
    /// The one datagram `out` holds, which must go back to `to`.
    pub(super) fn only(out: Vec<(SocketAddr, Vec<u8>)>, to: &str) -> Reply {
        assert_eq!(out.len(), 1, "one answer expected, got {}", dump(&out));
        assert_eq!(out[0].0, addr(to), "{}", dump(&out));
        Reply::of(&out[0].1)
    }

    pub(super) fn of(bytes: &[u8]) -> Reply {
        let m = sip::parse(bytes).expect("the core sends what parses");
        Reply {
            status: m.status().unwrap_or(0),
            reason: match m.kind() {
                sip::Kind::Response { reason, .. } => String::from_utf8_lossy(reason).into_owned(),
                sip::Kind::Request { .. } => String::new(),
            },
            text: String::from_utf8_lossy(bytes).into_owned(),
        }
    }

    fn nonce(&self) -> String {
        let m = sip::parse(self.text.as_bytes()).unwrap();
        let c = m
            .www_authenticate()
            .or_else(|| m.proxy_authenticate())
            .expect("a challenge")
            .unwrap();
        String::from_utf8_lossy(c.nonce).into_owned()
    }

    fn stale(&self) -> bool {
        let m = sip::parse(self.text.as_bytes()).unwrap();
        m.www_authenticate()
            .or_else(|| m.proxy_authenticate())
            .expect("a challenge")
            .unwrap()
            .stale
    }
}

pub(super) fn dump(out: &[(SocketAddr, Vec<u8>)]) -> String {
    out.iter()
        .map(|(to, b)| format!("\n  -> {to}: {}", sipfork::testing::sim::first_line(b)))
        .collect()
}

/// An `Authorization`/`Proxy-Authorization` row (MD5, qop=auth).
fn authorization(
    header: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: u32,
) -> String {
    let ha1 = Ha1::from_password(
        Algorithm::Md5,
        user.as_bytes(),
        b"example.com",
        password.as_bytes(),
    );
    let nc = format!("{nc:08x}");
    let response = compute_response(
        Algorithm::Md5,
        &ha1,
        &ResponseInput {
            method: method.as_bytes(),
            uri: uri.as_bytes(),
            nonce: nonce.as_bytes(),
            nc: nc.as_bytes(),
            cnonce: b"c0ffee",
            qop: b"auth",
        },
    );
    format!(
        "{header}: Digest username=\"{user}\", realm=\"example.com\", nonce=\"{nonce}\", \
         uri=\"{uri}\", response=\"{}\", algorithm=MD5, cnonce=\"c0ffee\", qop=auth, nc={nc}\r\n",
        response.as_str()
    )
}

/// A request from `from` (Via sent-by = `from`), with `extra` rows.
pub(super) fn request(
    method: &str,
    ruri: &str,
    from: &str,
    from_user: &str,
    to_tag: &str,
    call_id: &str,
    extra: &str,
) -> Vec<u8> {
    let to_tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK{method}{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{from_user}@example.com>;tag=att\r\nTo: <{ruri}>{to_tag}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:{from_user}@{from}>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

pub(super) fn destinations(out: &[(SocketAddr, Vec<u8>)]) -> BTreeSet<SocketAddr> {
    out.iter().map(|(to, _)| *to).collect()
}

/// Forged in-dialog requests (To tag, Routes of the attacker's choosing, forged tokens) are
/// refused and reach nobody: not the trunk, not a third party, not a registered phone.
#[test]
fn forged_in_dialog_requests_reach_nobody() {
    let mut e = Edge::new(EDGE, 1);
    e.register_ok("127.0.0.11:5060", "1000", "sip:1000@127.0.0.11:5060");
    let forged_token = "Route: <sip:127.0.0.1:5060;lr;sf=0000.1.1.0123456789abcdef>\r\n";
    let cases: Vec<(&str, &str, &str, u16)> = vec![
        // The trunk through the Request-URI.
        ("INVITE", "sip:0049301234@127.0.0.50:5090", "", 403),
        // Any address through the Request-URI (Timer A used to retransmit it 7 times).
        ("INVITE", "sip:x@127.0.0.99:5060", "", 403),
        // A registered phone through its NAT pinhole.
        ("MESSAGE", "sip:1000@127.0.0.11:5060", "", 403),
        (
            "NOTIFY",
            "sip:1000@127.0.0.11:5060",
            "Event: message-summary\r\n",
            403,
        ),
        // Loose routing through us to the trunk.
        (
            "BYE",
            "sip:x@127.0.0.99",
            "Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.50:5090;lr>\r\n",
            403,
        ),
        // A made-up token: our address, but the MAC does not verify.
        (
            "INVITE",
            "sip:0049301234@127.0.0.50:5090",
            forged_token,
            481,
        ),
        ("BYE", "sip:1000@127.0.0.11:5060", forged_token, 481),
    ];
    for (i, (method, ruri, extra, status)) in cases.into_iter().enumerate() {
        let bytes = request(
            method,
            ruri,
            ATTACKER,
            "1001",
            "any",
            &format!("forged-{i}"),
            extra,
        );
        let r = Reply::only(e.send(ATTACKER, &bytes), ATTACKER);
        assert_eq!(r.status, status, "{method} {ruri}: {}", r.text);
    }
    let later = e.advance(secs(64));
    assert!(later.is_empty(), "nothing retransmitted: {}", dump(&later));
    let reached = destinations(&e.sent);
    assert!(
        !reached.contains(&addr(TRUNK)) && !reached.contains(&addr(THIRD_PARTY)),
        "{reached:?}"
    );
    let to_phone: Vec<_> = e
        .sent
        .iter()
        .filter(|(to, b)| *to == addr("127.0.0.11:5060") && !b.starts_with(b"SIP/2.0"))
        .collect();
    assert!(to_phone.is_empty(), "no request reached the phone");
}

/// An ACK that fits no transaction and no dialog is dropped, never forwarded or answered;
/// a malformed ACK gets no answer either (an ACK is never answered).
#[test]
fn stray_and_malformed_acks_are_dropped() {
    let mut e = Edge::new(EDGE, 1);
    for ruri in ["sip:x@127.0.0.99:5060", "sip:0049301234@127.0.0.50:5090"] {
        let ack = request("ACK", ruri, ATTACKER, "1001", "t", "stray-ack", "");
        assert!(e.send(ATTACKER, &ack).is_empty(), "{ruri}");
    }
    let routed = request(
        "ACK",
        "sip:x@127.0.0.99:5060",
        ATTACKER,
        "1001",
        "t",
        "stray-ack-2",
        "Route: <sip:127.0.0.1:5060;lr;sf=0000.0.1.00000000deadbeef>\r\n",
    );
    assert!(e.send(ATTACKER, &routed).is_empty());
    let malformed = b"ACK sip:x@127.0.0.99 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.66:5060;branch=z9hG4bKm\r\nCSeq: nonsense\r\nContent-Length: 0\r\n\r\n";
    let out = e.send(ATTACKER, malformed);
    assert!(out.is_empty(), "{}", dump(&out));
}

/// Digest is asked before the number is looked up: a known and an unknown number get the very
/// same answers, for INVITE, OPTIONS, MESSAGE and REGISTER, with and without wrong credentials.
#[test]
fn extensions_cannot_be_enumerated() {
    let mut e = Edge::new(EDGE, 1);
    for method in ["INVITE", "OPTIONS", "MESSAGE"] {
        let answers: Vec<(u16, String)> = ["1000", "2000", "1099", "9999"]
            .iter()
            .map(|n| {
                let ruri = format!("sip:{n}@example.com");
                let bytes = request(
                    method,
                    &ruri,
                    ATTACKER,
                    "1001",
                    "",
                    &format!("enum-{method}-{n}"),
                    "",
                );
                let r = Reply::only(e.send(ATTACKER, &bytes), ATTACKER);
                (r.status, r.reason)
            })
            .collect();
        assert!(
            answers.iter().all(|a| a == &answers[0]),
            "{method}: {answers:?}"
        );
        assert_eq!(answers[0].0, 407, "{method}");
    }
    // REGISTER: 401 for both, then 403 with the same phrase for a wrong password of a known
    // number and any password of an unknown one.
    let mut finals = Vec::new();
    for n in ["1000", "2000"] {
        let r = e.register(ATTACKER, n, &format!("sip:{n}@127.0.0.66"), "");
        assert_eq!(r.status, 401);
        let auth = authorization(
            "Authorization",
            n,
            "guess",
            "REGISTER",
            "sip:example.com",
            &r.nonce(),
            1,
        );
        let r = e.register(ATTACKER, n, &format!("sip:{n}@127.0.0.66"), &auth);
        finals.push((r.status, r.reason));
    }
    assert_eq!(finals[0], finals[1]);
    assert_eq!(finals[0].0, 403);
}

/// The nonce is checked before the response: guesses on a made-up nonce all get a plain
/// challenge (no 403, no stale=true oracle for the right password) and do not count.
#[test]
fn guesses_need_a_fresh_nonce_of_ours() {
    let mut e = Edge::new(EDGE, 1);
    let contact = "sip:1000@127.0.0.66";
    for password in (0..200)
        .map(|i| format!("guess-{i}"))
        .chain(["pw-1000".to_owned()])
    {
        let auth = authorization(
            "Authorization",
            "1000",
            &password,
            "REGISTER",
            "sip:example.com",
            "made-up",
            1,
        );
        let r = e.register(ATTACKER, "1000", contact, &auth);
        assert_eq!((r.status, r.stale()), (401, false), "{password}");
    }
    // None of them counted: the right password on a fresh nonce still registers.
    e.register_ok(ATTACKER, "1000", contact);
}

/// The sum of metric `name`'s samples labelled `kind`.
pub(super) fn counter(core: &Core, name: &str, kind: &str) -> u64 {
    let mut sink = MetricSink::default();
    core.export_metrics(&mut sink);
    sink.samples
        .iter()
        .filter(|s| s.name == name && s.labels.iter().any(|(k, v)| *k == "kind" && v == kind))
        .map(|s| s.value)
        .sum()
}

/// A device's answer to a forwarded INVITE (its tag, the Record-Route copied, its Contact).
pub(super) fn device_answer(
    invite: &sip::Message<'_>,
    status: u16,
    to_tag: &str,
    contact: &str,
) -> Vec<u8> {
    let mut extra = Vec::new();
    for h in invite.rows(HeaderName::RecordRoute) {
        extra.extend_from_slice(h.row);
    }
    extra.extend_from_slice(format!("Contact: <{contact}>\r\n").as_bytes());
    let mut out = Vec::new();
    sip::build::response(
        invite,
        &sip::build::Reply {
            status,
            reason: if status == 200 { "OK" } else { "Ringing" },
            fix: sip::build::ViaFix::default(),
            to_tag: Some(to_tag.as_bytes()),
            extra: &extra,
            body: None,
        },
        &mut out,
    );
    out
}

/// `[security]`: ten wrong answers to fresh nonces block (source, username) for
/// `block_seconds`; blocked requests are dropped unanswered, even with the right password;
/// another phone on another address, and another user behind the same address, keep working.
#[test]
fn password_guessing_is_blocked_and_ends_after_the_block() {
    let mut e = Edge::new(EDGE, 1);
    let contact = "sip:1000@127.0.0.66";
    for i in 0..10 {
        let r = e.register(ATTACKER, "1000", contact, "");
        assert_eq!(r.status, 401);
        let auth = authorization(
            "Authorization",
            "1000",
            &format!("guess-{i}"),
            "REGISTER",
            "sip:example.com",
            &r.nonce(),
            1,
        );
        let r = e.register(ATTACKER, "1000", contact, &auth);
        assert_eq!(r.status, 403, "guess {i}");
    }
    assert_eq!(counter(&e.cores[0], "sipfork_auth_blocks_total", "user"), 1);
    // One log line per refused digest and one for the block, in fail2ban's format.
    let refused = e
        .log
        .iter()
        .filter(|l| l.starts_with("digest refused src=127.0.0.66 user=1000"))
        .count();
    assert_eq!(refused, 10, "{:?}", e.log);
    assert!(
        e.log
            .contains(&"source blocked src=127.0.0.66 user=1000 failures=10".to_owned()),
        "{:?}",
        e.log
    );
    // Blocked: even the right password gets no answer.
    let r = e.register(ATTACKER, "1000", contact, "");
    let auth = authorization(
        "Authorization",
        "1000",
        "pw-1000",
        "REGISTER",
        "sip:example.com",
        &r.nonce(),
        1,
    );
    let n = e.fresh();
    let msg = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {ATTACKER};branch=z9hG4bKb{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1000@example.com>;tag=b{n}\r\nTo: <sip:1000@example.com>\r\n\
         Call-ID: blocked-{n}\r\nCSeq: 1 REGISTER\r\nContact: <{contact}>\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    assert!(
        e.send(ATTACKER, msg.as_bytes()).is_empty(),
        "dropped unanswered"
    );
    assert!(counter(&e.cores[0], "sipfork_auth_blocked_requests_total", "user") >= 1);
    // The real phone elsewhere, and another user behind the attacker's NAT, still register.
    e.register_ok("127.0.0.11:5060", "1000", "sip:1000@127.0.0.11:5060");
    e.register_ok(ATTACKER, "1001", "sip:1001@127.0.0.66");
    // After block_seconds the pair may try again, and the unblock is logged.
    e.advance(secs(301));
    assert!(
        e.log
            .contains(&"source unblocked src=127.0.0.66 user=1000".to_owned()),
        "{:?}",
        e.log
    );
    e.register_ok(ATTACKER, "1000", contact);
}

/// Wrong passwords for ten usernames in turn from the attacker, until it gets no answer (five
/// times the limit blocks the whole address).
fn guess_until_the_address_is_blocked(e: &mut Edge) {
    guess_from_until_blocked(e, ATTACKER);
}

/// As [`guess_until_the_address_is_blocked`], from `attacker`.
pub(super) fn guess_from_until_blocked(e: &mut Edge, attacker: &str) {
    for i in 0..50u32 {
        let user = format!("{}", 1000 + i % 10);
        let r = e.register(attacker, &user, "sip:x@127.0.0.66", "");
        if r.status != 401 {
            break;
        }
        let auth = authorization(
            "Authorization",
            &user,
            "guess",
            "REGISTER",
            "sip:example.com",
            &r.nonce(),
            1,
        );
        e.register(attacker, &user, "sip:x@127.0.0.66", &auth);
    }
}

/// Past five times the limit, guesses over many usernames block the whole address: then every
/// request from it is dropped before any work.
#[test]
fn an_address_guessing_many_accounts_is_blocked_whole() {
    let mut e = Edge::new(EDGE, 1);
    guess_until_the_address_is_blocked(&mut e);
    assert_eq!(
        counter(&e.cores[0], "sipfork_auth_blocks_total", "address"),
        1
    );
    let options = request(
        "OPTIONS",
        "sip:1000@example.com",
        ATTACKER,
        "1001",
        "",
        "after",
        "",
    );
    assert!(e.send(ATTACKER, &options).is_empty());
    let r = Reply::only(
        e.send(
            "127.0.0.67:5060",
            &request(
                "OPTIONS",
                "sip:1000@example.com",
                "127.0.0.67:5060",
                "1001",
                "",
                "other",
                "",
            ),
        ),
        "127.0.0.67:5060",
    );
    assert_eq!(r.status, 407, "another address is not blocked");
}

/// Authenticates an INVITE from `from` as `user` to `ruri` with `extra` rows; returns what the
/// core sent for the authenticated copy.
pub(super) fn authenticated_invite(
    e: &mut Edge,
    from: &str,
    user: &str,
    from_user: &str,
    ruri: &str,
    extra: &str,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let n = e.fresh();
    let call_id = format!("auth-{n}");
    let first = request("INVITE", ruri, from, from_user, "", &call_id, extra);
    let r = Reply::only(e.send(from, &first), from);
    assert_eq!(r.status, 407, "{}", r.text);
    let auth = authorization(
        "Proxy-Authorization",
        user,
        &format!("pw-{user}"),
        "INVITE",
        ruri,
        &r.nonce(),
        1,
    );
    let second = String::from_utf8(request(
        "INVITE", ruri, from, from_user, "", &call_id, extra,
    ))
    .unwrap()
    .replace(
        "CSeq: 1 INVITE",
        &format!("CSeq: 2 INVITE\r\n{}", auth.trim_end()),
    )
    .replace(
        &format!("branch=z9hG4bKINVITE{call_id}"),
        &format!("branch=z9hG4bKINVITE{call_id}-2"),
    );
    e.send(from, second.as_bytes())
}

/// Phone `from` calls an outside number authenticated as 1000 with `rows` added: the request
/// the trunk got.
fn call_out_as_1000(e: &mut Edge, from: &str, rows: &str) -> Vec<u8> {
    let out = authenticated_invite(e, from, "1000", "1000", "sip:0049301234@example.com", rows);
    only_to_trunk(&out)
}

/// The one request of `out` that went to the trunk.
fn only_to_trunk(out: &[(SocketAddr, Vec<u8>)]) -> Vec<u8> {
    let to_trunk: Vec<_> = out.iter().filter(|(to, _)| *to == addr(TRUNK)).collect();
    assert_eq!(to_trunk.len(), 1, "{}", dump(out));
    to_trunk[0].1.clone()
}

/// RFC 3325: a request authenticated as 1000 may not say it is from 1001 (403); toward the
/// trunk it carries `P-Asserted-Identity: <sip:1000@example.com>` and none of the identities the
/// phone claimed; a trusted PBX's own PAI passes.
#[test]
fn identity_is_bound_to_the_authenticated_user() {
    let mut e = Edge::new(EDGE, 1);
    let phone = "127.0.0.11:5060";
    let out = authenticated_invite(
        &mut e,
        phone,
        "1000",
        "1001",
        "sip:0049301234@example.com",
        "",
    );
    let r = Reply::only(out, phone);
    assert_eq!(r.status, 403, "{}", r.text);

    let claims = "P-Asserted-Identity: <sip:1001@example.com>\r\nP-Preferred-Identity: <sip:boss@example.com>\r\n";
    let sent = call_out_as_1000(&mut e, phone, claims);
    let m = sip::parse(&sent).unwrap();
    let pai: Vec<_> = m.values(HeaderName::PAssertedIdentity).collect();
    assert_eq!(pai, vec![&b"<sip:1000@example.com>"[..]]);
    assert_eq!(m.values(HeaderName::PPreferredIdentity).count(), 0);

    // A trusted PBX is not challenged and its assertion is its own.
    let bytes = request(
        "INVITE",
        "sip:0049301234@example.com",
        PBX,
        "3000",
        "",
        "pbx-1",
        "P-Asserted-Identity: <sip:+31201234000@example.com>\r\n",
    );
    let out = e.send(PBX, &bytes);
    let sent = only_to_trunk(&out);
    let m = sip::parse(&sent).unwrap();
    let pai: Vec<_> = m.values(HeaderName::PAssertedIdentity).collect();
    assert_eq!(pai, vec![&b"<sip:+31201234000@example.com>"[..]]);
}

/// RFC 3261 §22.3: the credentials a caller gave sipfork are consumed here, never handed to the
/// next hop (a callee or trunk would otherwise receive the caller's digest response); credentials
/// for another realm (a downstream proxy's) pass unchanged.
#[test]
fn our_credentials_are_consumed_not_forwarded() {
    let mut e = Edge::new(EDGE, 1);
    let phone = "127.0.0.11:5060";
    let theirs = "Proxy-Authorization: Digest username=\"acme\", realm=\"carrier.example\", nonce=\"n1\", uri=\"sip:0049301234@example.com\", response=\"0123456789abcdef0123456789abcdef\"\r\n";
    let sent = call_out_as_1000(&mut e, phone, theirs);
    let m = sip::parse(&sent).unwrap();
    let left: Vec<_> = m.values(HeaderName::ProxyAuthorization).collect();
    assert_eq!(left.len(), 1, "{}", String::from_utf8_lossy(&sent));
    assert!(
        left[0]
            .windows(23)
            .any(|w| w == b"realm=\"carrier.example\""),
        "the other realm's credentials pass: {}",
        String::from_utf8_lossy(left[0])
    );
}

fn padded_invite(rows: usize, call_id: &str) -> Vec<u8> {
    let base = request(
        "INVITE",
        "sip:1000@example.com",
        PBX,
        "3000",
        "",
        call_id,
        "",
    );
    let text = String::from_utf8(base).unwrap();
    let have = sip::parse(text.as_bytes()).unwrap().header_count();
    let pad: String = (have..rows)
        .map(|i| format!("X-Pad-{i}: {i}\r\n"))
        .collect();
    text.replacen("Content-Length: 0", &format!("{pad}Content-Length: 0"), 1)
        .into_bytes()
}

/// A request whose forwarded copy would exceed the row index is refused at intake (513), before
/// any branch exists; one just under the bound forks and can be cancelled (its CANCEL used to be
/// lost when the stored copy did not parse again).
#[test]
fn requests_too_long_to_forward_are_refused_at_intake() {
    let mut e = Edge::new(EDGE, 1);
    for i in 0..3 {
        e.register_ok(
            &format!("127.0.0.{}:5060", 11 + i),
            "1000",
            &format!("sip:1000@127.0.0.{}:5060", 11 + i),
        );
    }
    let too_long = padded_invite(sip::MAX_ROWS - 2, "rows-too-long");
    let r = Reply::only(e.send(PBX, &too_long), PBX);
    assert_eq!(r.status, 513, "{}", r.reason);
    assert_eq!(e.cores[0].proxy_calls(), 0);

    let fits = padded_invite(
        sip::MAX_ROWS - sip::build::ROWS_ADDED_BY_FORWARDING,
        "rows-fit",
    );
    let out = e.send(PBX, &fits);
    let invites: Vec<_> = out
        .iter()
        .filter(|(_, b)| b.starts_with(b"INVITE"))
        .collect();
    assert_eq!(invites.len(), 3, "{}", dump(&out));
    for (to, inv) in invites.clone() {
        let m = sip::parse(inv).expect("a forwarded copy parses");
        let ringing = device_answer(
            &m,
            180,
            &format!("dev{}", to.port()),
            &format!("sip:1000@{to}"),
        );
        e.send(&to.to_string(), &ringing);
    }
    let cancel = String::from_utf8(fits.clone())
        .unwrap()
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let out = e.send(PBX, cancel.as_bytes());
    let cancels = out.iter().filter(|(_, b)| b.starts_with(b"CANCEL")).count();
    assert_eq!(
        cancels,
        3,
        "every ringing device is cancelled{}",
        dump(&out)
    );
}

/// A CANCEL is accepted only from the flow its INVITE came from.
#[test]
fn a_cancel_from_another_address_cancels_nothing() {
    let mut s = World::new(DEFAULT_CONFIG, 1, 91);
    let alice = s.add_phone("alice", "1050", 5070);
    let dev = s.add_phone("a", "1000", 5071);
    let mallory = s.add_phone("mallory", "1051", 5099);
    s.register(dev, 3600);
    s.run_for(ms(50));
    let call = s.call(alice, "1000");
    s.run_for(ms(50));
    // Mallory copies the INVITE's identifiers (branch, Call-ID, tags) into a CANCEL.
    let invite = s.phone_ref(dev).incoming[0].invite.clone();
    let m = sip::parse(&invite).unwrap();
    let vias: Vec<_> = m.values(HeaderName::Via).collect();
    let caller_via = String::from_utf8_lossy(vias[1]).into_owned();
    let cancel = format!(
        "CANCEL sip:1000@127.0.0.1:5060 SIP/2.0\r\nVia: {caller_via}\r\nMax-Forwards: 70\r\n\
         From: {}\r\nTo: <sip:1000@127.0.0.1:5060>\r\nCall-ID: {}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
        String::from_utf8_lossy(m.first_value(HeaderName::From).unwrap()),
        String::from_utf8_lossy(m.call_id().unwrap()),
    );
    s.send_raw(mallory, cancel.as_bytes());
    s.run_for(ms(50));
    assert_eq!(s.phone_ref(mallory).statuses(), vec![481], "{}", s.dump());
    assert!(!s.phone_ref(dev).incoming[0].cancelled, "{}", s.dump());
    // The caller's own CANCEL works.
    s.cancel(alice, call);
    s.run_for(secs(1));
    assert!(s.phone_ref(dev).incoming[0].cancelled, "{}", s.dump());
}

/// Phones behind NAT (Contact and Via name a private address nobody can reach), on two shards:
/// the INVITE, the ACK of the 2xx, and the BYE each reach the leg's flow, whichever shard
/// handles them; nothing is ever sent to a private address.
#[test]
fn calls_between_phones_behind_nat_reach_their_flows_on_two_shards() {
    for seed in 0..8 {
        let mut w = World::new(DEFAULT_CONFIG, 2, 100 + seed);
        let alice = w.add_phone_behind_nat("alice", "1050", 5070, addr("192.168.1.10:5060"));
        let devs: Vec<_> = (0..3)
            .map(|i| {
                // One LAN: a private address each.
                let private = addr(&format!("192.168.1.{}:5060", 20 + i));
                w.add_phone_behind_nat(["a", "b", "c"][i], "1000", 5071 + i as u16, private)
            })
            .collect();
        for &d in &devs {
            w.register(d, 3600);
        }
        w.run_for(ms(50));
        let answerer = devs[(seed % 3) as usize];
        w.behave(answerer, Behaviour::answer_after(ms(100)));
        let call = w.call(alice, "1000");
        w.run_for(secs(2));
        assert_eq!(
            w.phone_ref(alice).outgoing[call].finals(),
            vec![200],
            "seed {seed}\n{}",
            w.dump()
        );
        assert_eq!(
            w.phone_ref(answerer).requests_received("ACK"),
            1,
            "ACK of the 2xx reached the flow\n{}",
            w.dump()
        );
        w.hang_up(alice, call);
        w.run_for(secs(2));
        assert!(
            w.phone_ref(answerer).incoming[0].bye,
            "seed {seed}\n{}",
            w.dump()
        );
        assert!(
            w.unreachable_sends().is_empty(),
            "seed {seed}: {:?}\n{}",
            w.unreachable_sends(),
            w.dump()
        );
        w.run_for(secs(40));
        assert_eq!(w.proxy_calls(), 0, "seed {seed}\n{}", w.dump());
    }
}

/// `tel:` Request-URIs go to the shard that owns the number, like `sip:` ones.
#[test]
fn tel_uris_are_routed_to_the_owner_shard() {
    for number in ["1000", "1001", "1002", "1003"] {
        let mut w = World::new(DEFAULT_CONFIG, 2, 7);
        let alice = w.add_phone("alice", "1050", 5070);
        let dev = w.add_phone("a", number, 5071);
        w.register(dev, 3600);
        w.run_for(ms(50));
        let invite = format!(
            "INVITE tel:{number} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtel{number}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1050@127.0.0.1>;tag=t\r\nTo: <tel:{number}>\r\nCall-ID: tel-{number}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:1050@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
        );
        w.send_raw(alice, invite.as_bytes());
        w.run_for(ms(50));
        assert_eq!(
            w.phone_ref(dev).requests_received("INVITE"),
            1,
            "{number}\n{}",
            w.dump()
        );
    }
}

/// What an attacker may throw at the edge while a real call is up.
#[derive(Clone, Debug)]
enum Attack {
    /// An in-dialog request with the live call's token, Call-ID and tags as seen on the wire,
    /// or with some of them changed.
    Reuse {
        method: usize,
        keep_call_id: bool,
        swap_tags: bool,
        ruri: usize,
    },
    /// An in-dialog request with a forged token.
    Forged {
        method: usize,
        token: u64,
        ruri: usize,
    },
    /// An ACK or CANCEL for nothing, aimed anywhere.
    Stray { cancel: bool, ruri: usize },
    /// An initial request without credentials.
    Initial { method: usize, ruri: usize },
    /// Let time pass (timers fire).
    Wait { ms: u64 },
}

const METHODS: [&str; 7] = [
    "INVITE", "BYE", "MESSAGE", "NOTIFY", "INFO", "UPDATE", "ACK",
];
const TARGETS: [&str; 6] = [
    "sip:0049301234@127.0.0.50:5090",
    "sip:x@127.0.0.99:5060",
    "sip:1000@127.0.0.11:5060",
    "sip:1000@example.com",
    "sip:0049301234@example.com",
    "sip:x@192.0.2.1",
];

fn attack() -> impl Strategy<Value = Attack> {
    prop_oneof![
        (
            0..METHODS.len(),
            any::<bool>(),
            any::<bool>(),
            0..TARGETS.len()
        )
            .prop_map(|(method, keep_call_id, swap_tags, ruri)| Attack::Reuse {
                method,
                keep_call_id,
                swap_tags,
                ruri
            }),
        (0..METHODS.len(), any::<u64>(), 0..TARGETS.len()).prop_map(|(method, token, ruri)| {
            Attack::Forged {
                method,
                token,
                ruri,
            }
        }),
        (any::<bool>(), 0..TARGETS.len()).prop_map(|(cancel, ruri)| Attack::Stray { cancel, ruri }),
        (0..METHODS.len() - 1, 0..TARGETS.len())
            .prop_map(|(method, ruri)| Attack::Initial { method, ruri }),
        (0u64..40_000).prop_map(|ms| Attack::Wait { ms }),
    ]
}

/// The live call: a trusted PBX calls 1000, device 127.0.0.11 answers. Returns the Route value
/// (our token), the Call-ID and the two tags as an eavesdropper would have seen them.
fn live_call(e: &mut Edge) -> (String, String, String, String) {
    e.register_ok("127.0.0.11:5060", "1000", "sip:1000@127.0.0.11:5060");
    let invite = request(
        "INVITE",
        "sip:1000@example.com",
        PBX,
        "3000",
        "",
        "live",
        "",
    );
    let out = e.send(PBX, &invite);
    let (_, fwd) = out
        .iter()
        .find(|(to, b)| *to == addr("127.0.0.11:5060") && b.starts_with(b"INVITE"))
        .expect("forked");
    let m = sip::parse(fwd).unwrap();
    let ok = device_answer(&m, 200, "callee-tag", "sip:1000@127.0.0.11:5060");
    let out = e.send("127.0.0.11:5060", &ok);
    let (_, up) = out
        .iter()
        .find(|(to, _)| *to == addr(PBX))
        .expect("2xx upstream");
    let resp = sip::parse(up).unwrap();
    let rr =
        String::from_utf8_lossy(resp.first_value(HeaderName::RecordRoute).unwrap()).into_owned();
    (rr, "live".into(), "att".into(), "callee-tag".into())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever untrusted senders do, the core sends requests only to the registered device or
    /// the live call's legs, answers only to whoever asked (the attacker, the stranger), and
    /// sends nothing at all to the trunk or to any third party named in a request.
    #[test]
    fn untrusted_datagrams_never_widen_the_egress(attacks in proptest::collection::vec(attack(), 1..24)) {
        let mut e = Edge::new(EDGE, 2);
        let (route, call_id, caller_tag, callee_tag) = live_call(&mut e);
        let before = e.sent.len();
        let legs = [addr("127.0.0.11:5060"), addr(PBX)];
        for (i, a) in attacks.iter().enumerate() {
            let (from, bytes) = match a {
                Attack::Reuse { method, keep_call_id, swap_tags, ruri } => {
                    let cid = if *keep_call_id { call_id.clone() } else { format!("other-{i}") };
                    let (ft, tt) = if *swap_tags { (&callee_tag, &caller_tag) } else { (&caller_tag, &callee_tag) };
                    let text = String::from_utf8(request(METHODS[*method], TARGETS[*ruri], ATTACKER, "3000", tt, &cid, &format!("Route: {route}\r\n"))).unwrap()
                        .replace(";tag=att", &format!(";tag={ft}"))
                        .replace(&format!("branch=z9hG4bK{}{cid}", METHODS[*method]), &format!("branch=z9hG4bKp{i}"));
                    (ATTACKER, text.into_bytes())
                }
                Attack::Forged { method, token, ruri } => {
                    let extra = format!("Route: <sip:127.0.0.1:5060;lr;sf=000{}.1.1.{token:016x}>\r\n", token % 2);
                    (ATTACKER, request(METHODS[*method], TARGETS[*ruri], ATTACKER, "3000", "t", &format!("f{i}"), &extra))
                }
                Attack::Stray { cancel, ruri } => {
                    let m = if *cancel { "CANCEL" } else { "ACK" };
                    (STRANGER, request(m, TARGETS[*ruri], STRANGER, "3000", "", &format!("s{i}"), ""))
                }
                Attack::Initial { method, ruri } => {
                    (ATTACKER, request(METHODS[*method], TARGETS[*ruri], ATTACKER, "3000", "", &format!("i{i}"), ""))
                }
                Attack::Wait { ms: d } => {
                    e.advance(ms(*d));
                    continue;
                }
            };
            e.send(from, &bytes);
        }
        e.advance(secs(64));
        for (to, bytes) in &e.sent[before..] {
            prop_assert!(*to != addr(TRUNK) && *to != addr(THIRD_PARTY) && to.ip() != "192.0.2.1".parse::<std::net::IpAddr>().unwrap(),
                "sent to {to}: {}", String::from_utf8_lossy(bytes));
            if bytes.starts_with(b"SIP/2.0") {
                prop_assert!(legs.contains(to) || [addr(ATTACKER), addr(STRANGER)].contains(to),
                    "answer to {to}: {}", String::from_utf8_lossy(bytes));
            } else {
                prop_assert!(legs.contains(to), "request to {to}: {}", String::from_utf8_lossy(bytes));
            }
        }
    }
}

/// Pre-authentication work is bounded: a request whose URIs carry hundreds of parameters costs
/// no more than a bounded multiple of its size before its digest is looked at (pairwise
/// comparison of 330 parameters took 1.8 ms a request; bytewise it is microseconds).
#[test]
fn hundreds_of_uri_parameters_cost_linear_time_before_authentication() {
    let mut e = Edge::new(EDGE, 1);
    let params: String = (0..330).map(|i| format!(";p{i}=v{i}")).collect();
    let ruri = format!("sip:1000@example.com{params}");
    // The digest-uri differs in its last parameter: compared, then refused.
    let auth = authorization(
        "Proxy-Authorization",
        "1000",
        "guess",
        "INVITE",
        &format!("{ruri};x=y"),
        "made-up",
        1,
    );
    let bytes = request("INVITE", &ruri, ATTACKER, "1000", "", "params", &auth);
    let start = std::time::Instant::now();
    for _ in 0..50 {
        let out = e.send(ATTACKER, &bytes);
        assert_eq!(out.len(), 1);
    }
    let each = start.elapsed() / 50;
    assert!(
        each < std::time::Duration::from_micros(500),
        "{each:?} per request"
    );
}

/// A digest-uri naming sipfork itself (SIPp 3.6 writes `sip:PROXY_IP:PORT` whatever the
/// Request-URI) is accepted with the right password; one naming anything else is refused.
#[test]
fn a_digest_uri_naming_the_proxy_itself_is_accepted() {
    let mut e = Edge::new(EDGE, 1);
    let phone = "127.0.0.11:5060";
    e.register_ok(phone, "1001", "sip:1001@127.0.0.11:5060");
    for (uri, forwarded) in [("sip:127.0.0.1:5060", true), ("sip:127.0.0.99:5060", false)] {
        let n = e.fresh();
        let call_id = format!("uri-{n}");
        let ruri = "sip:1001@example.com";
        let r = Reply::only(
            e.send(
                phone,
                &request("INVITE", ruri, phone, "1000", "", &call_id, ""),
            ),
            phone,
        );
        let auth = authorization(
            "Proxy-Authorization",
            "1000",
            "pw-1000",
            "INVITE",
            uri,
            &r.nonce(),
            1,
        );
        let second = String::from_utf8(request("INVITE", ruri, phone, "1000", "", &call_id, &auth))
            .unwrap()
            .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
            .replace(
                &format!("branch=z9hG4bKINVITE{call_id}"),
                &format!("branch=z9hG4bKINVITE{call_id}-2"),
            );
        let out = e.send(phone, second.as_bytes());
        let reached = out.iter().any(|(_, b)| b.starts_with(b"INVITE"));
        assert_eq!(reached, forwarded, "{uri}: {}", dump(&out));
    }
}

/// `[[emergency]]` numbers are never blocked: an address blocked for guessing still reaches 112
/// (its INVITE is challenged as usual), while anything else from it is dropped.
#[test]
fn an_address_block_does_not_stop_emergency_calls() {
    let config = format!("{EDGE}[[emergency]]\nnumbers = [\"112\"]\n");
    let mut e = Edge::new(&config, 1);
    guess_until_the_address_is_blocked(&mut e);
    let other = request(
        "INVITE",
        "sip:1000@example.com",
        ATTACKER,
        "1001",
        "",
        "blocked-call",
        "",
    );
    assert!(e.send(ATTACKER, &other).is_empty(), "blocked");
    let emergency = request(
        "INVITE",
        "sip:112@example.com",
        ATTACKER,
        "1001",
        "",
        "sos",
        "",
    );
    let r = Reply::only(e.send(ATTACKER, &emergency), ATTACKER);
    assert_eq!(r.status, 407, "answered, not dropped: {}", r.text);
}

/// Dialogs live in memory: after a restart (a fresh core) a BYE through a route recorded before
/// it is answered 481 and reaches nobody (README "Security model").
#[test]
fn a_bye_after_a_restart_gets_481() {
    let mut before = Edge::new(EDGE, 2);
    let (route, call_id, caller_tag, callee_tag) = live_call(&mut before);
    let mut after = Edge::new(EDGE, 2);
    let bye = String::from_utf8(request(
        "BYE",
        "sip:1000@127.0.0.11:5060",
        PBX,
        "3000",
        &callee_tag,
        &call_id,
        &format!("Route: {route}\r\n"),
    ))
    .unwrap()
    .replace(";tag=att", &format!(";tag={caller_tag}"));
    let r = Reply::only(after.send(PBX, bye.as_bytes()), PBX);
    assert_eq!(r.status, 481, "{}", r.text);
}

/// Ownership is read from the validated message: a valid request for an extension that another
/// shard owns is handed to that shard, untouched; an invalid one is answered where it arrived
/// (a stateless 400 to its source) and never handed on, so a stream of broken requests cannot
/// make one shard wake another.
#[test]
fn an_invalid_request_is_refused_where_it_arrives_and_a_valid_one_goes_to_its_owner() {
    let mut e = Edge::new(EDGE, 2);
    let ext = (1000..1100)
        .find(|n| sipfork::core::shard::owner_of(n.to_string().as_bytes(), 2) == ShardId(1))
        .unwrap();
    let ruri = format!("sip:{ext}@127.0.0.1:5060");
    let valid = request("INVITE", &ruri, STRANGER, "2000", "", "own-1", "");
    let invalid = String::from_utf8(valid.clone())
        .unwrap()
        .replace("CSeq: 1 INVITE", "CSeq: 1 BYE")
        .into_bytes();
    let on_shard_0 = |e: &mut Edge, bytes: &[u8]| {
        let d = Datagram {
            from: addr(STRANGER),
            local: addr("127.0.0.1:5060"),
            bytes,
            transport: sipfork::core::transport::Transport::Udp,
            peer_cert: None,
        };
        let r = e.cores[0].handle_datagram(Instant::ZERO + ms(1), d);
        let sent = e.flush(0);
        (r, sent)
    };
    let (r, sent) = on_shard_0(&mut e, &valid);
    assert!(matches!(r, Inbound::ForShard(ShardId(1))), "{r:?}");
    assert!(
        sent.is_empty(),
        "the receiving shard answered a request it does not own"
    );
    let (r, sent) = on_shard_0(&mut e, &invalid);
    assert!(matches!(r, Inbound::Handled), "{r:?}");
    let statuses: Vec<_> = sent
        .iter()
        .map(|(to, b)| (*to, sip::parse(b).unwrap().status()))
        .collect();
    assert_eq!(statuses, vec![(addr(STRANGER), Some(400))]);
}
