//! A whole 3-way forked call through one [`Core`] on virtual time, without sockets, phones or a
//! simulated network: the core's cost per call, for `benches/core.rs`, the seed corpus of the
//! `core_datagrams` fuzz target, and a test that the script itself stays right.
//!
//! Three devices of extension 1000 register once (and again before their bindings expire). Each
//! call then runs the script of RFC 3261 §16 with parallel forking (DECISIONS.md "Proxy"):
//! the caller's INVITE; a 180 from each device; a 200 from device 1, which makes the proxy CANCEL
//! devices 0 and 2; their 200 to the CANCEL and 487 to the INVITE (ACKed hop by hop by the
//! proxy); the caller's ACK and BYE through the Record-Route; device 1's 200 to the BYE. Every
//! step advances virtual time and runs due timers, so the calls' transactions end on time while
//! later calls run (a steady state, as under load).
//!
//! The devices are not phones: their answers are templated from the requests the proxy sent
//! them with the same builder the proxy uses, so the work around the core stays small. Each
//! step checks that the proxy sent exactly the datagrams the script expects, so a figure measured
//! here is the cost of a call that went right. An [`Observer`] wraps every call into the core
//! (datagram or timer run) and is where a benchmark starts and stops its clocks and counters.
//!
//! [`ForkedCall::with_devices_over`] runs the same script with the devices registered and
//! answering over TCP (each on its own connection, as the engine hands the core their messages)
//! while the caller stays on UDP: every branch then goes over a flow and carries a double
//! Record-Route (RFC 5658), the shape of the stream paths' cost.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use crate::config::Config;
use crate::core::io::{Datagram, Inbound};
use crate::core::shard::ShardId;
use crate::core::transaction::TimerValues;
use crate::core::transport::Transport;
use crate::core::{Core, CoreParams};
use crate::sip::build::{self, InDialog, Reply, ViaFix};
use crate::sip::{parse, ContactValue, HeaderName};
use crate::testing::sim::DEFAULT_CONFIG;
use crate::time::{Duration, Instant};

/// Sees every call into the core.
pub trait Observer {
    /// Runs `call`, one call into the core: a datagram from `input`'s address, or a timer run
    /// when `input` is `None`. The default just runs it.
    fn around<R>(
        &mut self,
        now: Instant,
        input: Option<(SocketAddr, &[u8])>,
        call: impl FnOnce() -> R,
    ) -> R {
        let _ = (now, input);
        call()
    }

    /// Sees what the core sent in answer to the call just run (destination and bytes).
    fn sent(&mut self, datagrams: &[(SocketAddr, Vec<u8>)]) {
        let _ = datagrams;
    }
}

/// An observer that does nothing.
impl Observer for () {}

/// The proxy's address in [`DEFAULT_CONFIG`].
pub const PROXY: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    5060,
);
/// The caller's address.
pub const CALLER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    5070,
);
/// Number of devices registered for extension 1000.
pub const DEVICES: usize = 3;
/// The device that answers.
const WINNER: usize = 1;
/// The secret of the core (fixed, so runs and recorded seeds replay exactly).
pub const SECRET: [u8; 32] = [7; 32];
/// Wall-clock epoch of the core.
pub const WALL_EPOCH_US: u64 = 1_800_000_000_000_000;
/// Registrations are refreshed when they are this old (they are granted 7200 s).
const REFRESH_AFTER: Duration = Duration::from_secs(3000);

/// Datagrams into and out of the core for one call (timer runs included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Datagrams handed to the core.
    pub datagrams_in: u64,
    /// Datagrams the core sent.
    pub datagrams_out: u64,
    /// Datagrams the core sent from timer runs (0 in a call that went right: no retransmission).
    pub from_timers: u64,
}

/// Device `i`'s address.
pub fn device(i: usize) -> SocketAddr {
    SocketAddr::new(PROXY.ip(), 5071 + i as u16)
}

/// A core as the bench and the fuzz target build it: one shard, [`DEFAULT_CONFIG`] (extensions
/// 1000–1099, no auth, on 127.0.0.1:5060), fixed secret, RFC 3261 default timers.
pub fn new_core() -> Core {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    let cfg = CONFIG.get_or_init(|| {
        Arc::new(Config::from_toml(DEFAULT_CONFIG).expect("invariant: default config"))
    });
    core_with(Arc::clone(cfg))
}

/// As [`new_core`] with another configuration (it must keep [`DEFAULT_CONFIG`]'s listen
/// address, domain and auth mode, and extension 1000).
pub fn core_with(cfg: Arc<Config>) -> Core {
    Core::new(
        cfg,
        CoreParams {
            shard: ShardId(0),
            shards: 1,
            local: PROXY,
            secret: SECRET,
            wall_epoch_us: WALL_EPOCH_US,
            timers: TimerValues::default(),
        },
        Instant::ZERO,
    )
}

/// The driver: one core, the script, and reused buffers.
pub struct ForkedCall {
    core: Core,
    now: Instant,
    /// Virtual time between two steps of a call.
    pub step: Duration,
    /// Virtual time after a call before the next one starts.
    pub gap: Duration,
    calls: u64,
    registered_at: Option<Instant>,
    /// What the core sent in the last step: destination and bytes.
    sent: Vec<(SocketAddr, Vec<u8>)>,
    stats: CallStats,
    /// CDRs the core emitted (`[policy] cdr`), drained after each step like a shard does.
    pub cdrs: u64,
    /// What the devices register and answer over (the caller is on UDP).
    devices_over: Transport,
}

impl Default for ForkedCall {
    fn default() -> Self {
        Self::new()
    }
}

impl ForkedCall {
    /// A driver on a new core at time zero; steps 1 ms apart, 2 ms between calls.
    pub fn new() -> Self {
        Self::on(new_core())
    }

    /// A driver on `core` (see [`core_with`]) at time zero.
    pub fn on(core: Core) -> Self {
        ForkedCall {
            core,
            now: Instant::ZERO,
            step: Duration::from_millis(1),
            gap: Duration::from_millis(2),
            calls: 0,
            registered_at: None,
            sent: Vec::new(),
            stats: CallStats::default(),
            cdrs: 0,
            devices_over: Transport::Udp,
        }
    }

    /// The devices register and answer over `t` from now on (before the first call).
    pub fn with_devices_over(mut self, t: Transport) -> Self {
        self.devices_over = t;
        self
    }

    /// The core (for assertions on its state).
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Runs every timer due by `at`, in deadline order, then sets the clock to `at`.
    pub fn advance_to(&mut self, obs: &mut impl Observer, at: Instant) {
        while let Some(due) = self.core.poll_timeout().filter(|&t| t <= at) {
            self.now = self.now.max(due);
            let (core, now) = (&mut self.core, self.now);
            obs.around(now, None, || core.handle_timeout(now));
            let n = self.take_sent();
            obs.sent(&self.sent);
            self.stats.from_timers += n as u64;
            self.stats.datagrams_out += n as u64;
        }
        self.now = self.now.max(at);
    }

    /// Moves the outbox into `self.sent`; returns how many datagrams it held.
    fn take_sent(&mut self) -> usize {
        self.sent.clear();
        let out = self.core.outbox();
        self.sent
            .extend(out.iter().map(|(to, bytes)| (to, bytes.to_vec())));
        out.clear();
        // What the shard does after each batch (a CDR goes to the writer's queue).
        let cdrs = &mut self.cdrs;
        self.core.drain_cdrs(|_| *cdrs += 1);
        self.sent.len()
    }

    /// Hands any datagram to the core (after the timers due by now) and returns what it sent.
    pub fn inject(
        &mut self,
        obs: &mut impl Observer,
        from: SocketAddr,
        bytes: &[u8],
    ) -> &[(SocketAddr, Vec<u8>)] {
        self.deliver(obs, from, bytes);
        &self.sent
    }

    /// Hands one datagram to the core (after the timers due by now), keeping what it sent.
    fn deliver(&mut self, obs: &mut impl Observer, from: SocketAddr, bytes: &[u8]) {
        self.advance_to(obs, self.now);
        let (core, now) = (&mut self.core, self.now);
        let d = Datagram {
            from,
            local: PROXY,
            bytes,
            transport: if from == CALLER {
                Transport::Udp
            } else {
                self.devices_over
            },
            peer_cert: None,
        };
        let inbound = obs.around(now, Some((from, bytes)), || core.handle_datagram(now, d));
        assert_eq!(inbound, Inbound::Handled, "one shard handles everything");
        self.stats.datagrams_in += 1;
        self.stats.datagrams_out += self.take_sent() as u64;
        obs.sent(&self.sent);
    }

    /// The datagrams of the last step, checked against the destinations the script expects
    /// (in any order); panics with the exchange when they differ.
    fn expect_sent(&self, what: &str, to: &[SocketAddr]) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut got: Vec<SocketAddr> = self.sent.iter().map(|(a, _)| *a).collect();
        let mut want = to.to_vec();
        got.sort();
        want.sort();
        if got != want {
            let dump: String = self
                .sent
                .iter()
                .map(|(a, b)| format!("-> {a}\n{}\n", String::from_utf8_lossy(b)))
                .collect();
            panic!(
                "call {}: {what}: sent to {got:?}, expected {want:?}\n{dump}",
                self.calls
            );
        }
        self.sent.clone()
    }

    /// Registers (or refreshes) the devices when their bindings are new or getting old.
    /// Registrations are not part of a call: they bypass the observer.
    pub fn register_if_due(&mut self) {
        if self
            .registered_at
            .is_some_and(|at| self.now.saturating_since(at) < REFRESH_AFTER)
        {
            return;
        }
        let round = self.calls;
        let (via, param) = (self.devices_over.via_token(), self.devices_over.param());
        for i in 0..DEVICES {
            let addr = device(i);
            let register = format!(
                "REGISTER sip:example.com SIP/2.0\r\n\
                 Via: SIP/2.0/{via} {addr};branch=z9hG4bK-reg-{i}-{round};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:1000@example.com>;tag=reg{i}\r\n\
                 To: <sip:1000@example.com>\r\nCall-ID: reg-{i}@127.0.0.1\r\n\
                 CSeq: {cseq} REGISTER\r\n\
                 Contact: <sip:1000@{addr};transport={param}>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-00000000000{i}>\"\r\n\
                 Expires: 7200\r\nUser-Agent: DeskPhone/3.2\r\nContent-Length: 0\r\n\r\n",
                cseq = round + 1,
            );
            self.deliver(&mut (), addr, register.as_bytes());
            let ok = self.expect_sent("REGISTER", &[addr]);
            let status = parse(&ok[0].1).ok().and_then(|m| m.status());
            assert_eq!(status, Some(200), "device {i} registered");
        }
        self.registered_at = Some(self.now);
    }

    /// Runs one whole forked call; returns its datagram counts.
    pub fn call(&mut self, obs: &mut impl Observer) -> CallStats {
        self.register_if_due();
        self.stats = CallStats::default();
        let n = self.calls;
        self.calls += 1;
        let call_id = format!("{n:08x}-7b2c1a7e9f3d4e21a84b4c76e66710@127.0.0.1");

        // The caller's INVITE: 100 Trying upstream, one INVITE per device.
        let invite = caller_invite(n, &call_id);
        self.deliver(obs, CALLER, &invite);
        let mut to = vec![CALLER];
        to.extend((0..DEVICES).map(device));
        let sent = self.expect_sent("INVITE", &to);
        let mut forwarded: Vec<Vec<u8>> = vec![Vec::new(); DEVICES];
        for (addr, bytes) in sent {
            if let Some(i) = (0..DEVICES).find(|&i| device(i) == addr) {
                forwarded[i] = bytes;
            }
        }
        let tags: Vec<String> = (0..DEVICES).map(|i| format!("dev{i}-{n:x}")).collect();

        // Each device rings.
        self.tick(obs);
        for i in 0..DEVICES {
            let ringing = device_response(
                &forwarded[i],
                180,
                "Ringing",
                &tags[i],
                i,
                false,
                self.devices_over,
            );
            self.deliver(obs, device(i), &ringing);
            self.expect_sent("180", &[CALLER]);
        }

        // Device 1 answers: the 200 goes upstream, the others are cancelled.
        self.tick(obs);
        let ok = device_response(
            &forwarded[WINNER],
            200,
            "OK",
            &tags[WINNER],
            WINNER,
            true,
            self.devices_over,
        );
        self.deliver(obs, device(WINNER), &ok);
        let losers: Vec<usize> = (0..DEVICES).filter(|&i| i != WINNER).collect();
        let mut to: Vec<SocketAddr> = losers.iter().map(|&i| device(i)).collect();
        to.push(CALLER);
        let sent = self.expect_sent("200 to INVITE", &to);
        let answer = sent
            .iter()
            .find(|(a, _)| *a == CALLER)
            .map(|(_, b)| b.clone())
            .expect("checked by expect_sent");

        // The losers answer the CANCEL and end their INVITE with 487, which the proxy ACKs.
        self.tick(obs);
        for &i in &losers {
            let (_, cancel) = sent
                .iter()
                .find(|(a, _)| *a == device(i))
                .expect("checked by expect_sent");
            let cancelled =
                device_response(cancel, 200, "OK", &tags[i], i, false, self.devices_over);
            self.deliver(obs, device(i), &cancelled);
            self.expect_sent("200 to CANCEL", &[]);
            let terminated = device_response(
                &forwarded[i],
                487,
                "Request Terminated",
                &tags[i],
                i,
                false,
                self.devices_over,
            );
            self.deliver(obs, device(i), &terminated);
            self.expect_sent("487", &[device(i)]);
        }

        // The caller ACKs the 200 and later hangs up, both through the Record-Route.
        self.tick(obs);
        let ack = caller_in_dialog(&invite, &answer, b"ACK", 1, n);
        self.deliver(obs, CALLER, &ack);
        self.expect_sent("ACK to 200", &[device(WINNER)]);
        self.tick(obs);
        let bye = caller_in_dialog(&invite, &answer, b"BYE", 2, n);
        self.deliver(obs, CALLER, &bye);
        let sent = self.expect_sent("BYE", &[device(WINNER)]);
        self.tick(obs);
        let bye_ok = device_response(
            &sent[0].1,
            200,
            "OK",
            &tags[WINNER],
            WINNER,
            false,
            self.devices_over,
        );
        self.deliver(obs, device(WINNER), &bye_ok);
        self.expect_sent("200 to BYE", &[CALLER]);

        let next = self.now + self.gap;
        self.advance_to(obs, next);
        self.stats
    }

    fn tick(&mut self, obs: &mut impl Observer) {
        let next = self.now + self.step;
        self.advance_to(obs, next);
    }

    /// Lets `d` of virtual time pass with no traffic (timers run).
    pub fn idle(&mut self, obs: &mut impl Observer, d: Duration) {
        let until = self.now + d;
        self.advance_to(obs, until);
    }
}

/// SDP offer of the caller (a desk phone's usual audio offer).
const SDP_OFFER: &str = "v=0\r\n\
o=- 1712000000 1712000000 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 8000 RTP/AVP 0 8 9 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// SDP answer of the device that picks up.
const SDP_ANSWER: &[u8] = b"v=0\r\n\
o=- 2890844527 2890844527 IN IP4 127.0.0.1\r\n\
s=-\r\n\
c=IN IP4 127.0.0.1\r\n\
t=0 0\r\n\
m=audio 9000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// Call `n`'s INVITE as a desk phone sends it: about 900 bytes with SDP.
pub fn caller_invite(n: u64, call_id: &str) -> Vec<u8> {
    format!(
        "INVITE sip:1000@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-524287-1---{n:016x};rport\r\n\
         Max-Forwards: 70\r\n\
         Contact: <sip:1050@{CALLER};transport=udp>;+sip.instance=\"<urn:uuid:6a1f4c2e-0b7d-4c1e-9a55-3f2b8d7e6c10>\"\r\n\
         To: <sip:1000@example.com>\r\n\
         From: \"Alice Example\" <sip:1050@example.com>;tag=6d2f{n:x}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
         Content-Type: application/sdp\r\n\
         Supported: replaces, norefersub, extended-refer, timer, outbound, path\r\n\
         Session-Expires: 1800\r\n\
         Min-SE: 90\r\n\
         User-Agent: ExamplePhone/5.4.1 (build 2210)\r\n\
         Allow-Events: presence, kpml, talk, hold\r\n\
         Content-Length: {len}\r\n\r\n{SDP_OFFER}",
        len = SDP_OFFER.len(),
    )
    .into_bytes()
}

/// Device `i`'s response to a request the proxy sent it: the proxy's rows copied by
/// [`build::response`], the device's To tag, Contact, the Record-Route echoed on a dialog-creating
/// response (§12.1.1), and the SDP answer on a 200 when `sdp`.
fn device_response(
    req: &[u8],
    status: u16,
    reason: &str,
    tag: &str,
    i: usize,
    sdp: bool,
    over: Transport,
) -> Vec<u8> {
    let req = parse(req).expect("the proxy sends what parses");
    let mut extra = format!(
        "Contact: <sip:1000@{};transport={}>\r\n",
        device(i),
        over.param()
    )
    .into_bytes();
    if status < 300 {
        for h in req.rows(HeaderName::RecordRoute) {
            extra.extend_from_slice(h.row);
        }
    }
    extra.extend_from_slice(b"User-Agent: DeskPhone/3.2\r\n");
    let mut out = Vec::with_capacity(req.bytes().len() + 256);
    build::response(
        &req,
        &Reply {
            status,
            reason,
            fix: ViaFix::default(),
            to_tag: Some(tag.as_bytes()),
            extra: &extra,
            body: sdp.then_some(("application/sdp", SDP_ANSWER)),
        },
        &mut out,
    );
    out
}

/// The caller's ACK or BYE in the dialog the 200 `answer` set up (§12.2.1.1): the answer's
/// Contact as the target, its Record-Route reversed as the route set.
fn caller_in_dialog(invite: &[u8], answer: &[u8], method: &[u8], cseq: u32, n: u64) -> Vec<u8> {
    let invite = parse(invite).expect("our own INVITE parses");
    let answer = parse(answer).expect("the proxy sends what parses");
    let target = answer
        .contacts()
        .find_map(|c| match c {
            Ok(ContactValue::Addr(a)) => Some(a.addr.uri.raw()),
            _ => None,
        })
        .expect("the 200 has a Contact");
    let mut routes: Vec<&[u8]> = answer.values(HeaderName::RecordRoute).collect();
    routes.reverse();
    let via = format!(
        "SIP/2.0/UDP {CALLER};branch=z9hG4bK-{}-{n:x};rport",
        String::from_utf8_lossy(method)
    );
    let mut out = Vec::with_capacity(600);
    build::in_dialog(
        &InDialog {
            method,
            target,
            routes: &routes,
            via: via.as_bytes(),
            from: invite.first_value(HeaderName::From).unwrap_or_default(),
            to: answer.first_value(HeaderName::To).unwrap_or_default(),
            call_id: invite.call_id().unwrap_or_default(),
            cseq,
            extra: b"",
        },
        &mut out,
    );
    out
}

/// The inbound datagrams of a call, in order, with the time since the previous one: what the
/// `core_datagrams` fuzz target's seed of a recorded call holds.
#[derive(Default, Debug)]
pub struct Recorder {
    /// `(time since the previous datagram, source, bytes)`.
    pub datagrams: Vec<(Duration, SocketAddr, Vec<u8>)>,
    last: Instant,
}

impl Observer for Recorder {
    fn around<R>(
        &mut self,
        now: Instant,
        input: Option<(SocketAddr, &[u8])>,
        call: impl FnOnce() -> R,
    ) -> R {
        if let Some((from, bytes)) = input {
            self.datagrams
                .push((now.saturating_since(self.last), from, bytes.to_vec()));
            self.last = now;
        }
        call()
    }
}
