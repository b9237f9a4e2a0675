//! Forking across cluster nodes (issue 18) on virtual time: two nodes' cores, A on 127.0.0.1
//! and B on 127.0.0.2, with the directory snapshot the directory thread would publish; scripted
//! devices answer on their own addresses. Covers: a call at either node rings the devices on
//! both, the first answer wins and the other node's branch is cancelled, the remote node rings
//! its local devices only (no loop back), a dead node's branch is given up within 2 s, and the
//! attacks: a forged, replayed, stale or wrongly sourced cluster mark gets 403 and no fork.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use sipfork::config::Config;
use sipfork::core::cluster::{self, Directory, Node};
use sipfork::core::io::{Datagram, Inbound};
use sipfork::core::shard::ShardId;
use sipfork::core::transaction::TimerValues;
use sipfork::core::{Core, CoreParams};
use sipfork::sip::build::{self, Reply, ViaFix};
use sipfork::time::{ms, secs, Duration, Instant};

const SECRET: &str = "cluster-test-secret-0123456789";

fn node_config(node: &str, ip: &str, peer: &str) -> String {
    format!(
        r#"
[server]
listen = "{ip}:5060"
domain = "example.com"
shards = 1
[auth]
mode = "none"
[[extensions]]
numbers = "1000-1099"
[cluster]
node = "{node}"
advertise = "{ip}:5060"
redis = ["redis://127.0.0.1:7000"]
peers = ["{peer}/32"]
secret = "{SECRET}"
ttl = 60
"#
    )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const A: &str = "127.0.0.1:5060";
const B: &str = "127.0.0.2:5060";
const DEV_A: &str = "127.0.0.1:6001";
const DEV_B: &str = "127.0.0.2:6002";
/// Extension 1002's device, on B.
const DEV_B2: &str = "127.0.0.2:6003";
/// A second device of 1001 on A.
const DEV_A2: &str = "127.0.0.1:6004";
const CALLER: &str = "127.0.0.1:7000";
const ATTACKER: &str = "127.0.0.66:5060";

/// A scripted endpoint: rings on INVITE (180), answers when told, handles CANCEL and BYE.
#[derive(Default)]
struct Device {
    /// Every datagram received, as text.
    got: Vec<String>,
    /// The INVITE being rung (bytes) and who sent it.
    ringing: Option<(Vec<u8>, SocketAddr)>,
}

struct Net {
    now: Instant,
    nodes: Vec<(SocketAddr, Core)>,
    devices: HashMap<SocketAddr, Device>,
    queue: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Every datagram delivered or dropped: (from, to, first line).
    log: Vec<(SocketAddr, SocketAddr, String)>,
    /// Addresses whose node is dead (datagrams to them vanish).
    dead: Vec<SocketAddr>,
}

/// A device's response to `req` (To tag and Contact of the device at `me`).
fn respond(me: SocketAddr, req: &sipfork::sip::Message<'_>, status: u16, reason: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let contact = format!("Contact: <sip:dev@{me}>\r\n");
    let tag = format!("tag{}", me.port());
    build::response(
        req,
        &Reply {
            status,
            reason,
            fix: ViaFix::default(),
            to_tag: Some(tag.as_bytes()),
            extra: contact.as_bytes(),
            body: None,
        },
        &mut out,
    );
    out
}

fn first_line(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn directory(holders: &[&str]) -> Arc<Directory> {
    let nodes = vec![
        Node {
            name: "a".into(),
            advertise: addr(A),
            admin: None,
        },
        Node {
            name: "b".into(),
            advertise: addr(B),
            admin: None,
        },
    ];
    let idx: Vec<u16> = holders
        .iter()
        .map(|h| if *h == "a" { 0 } else { 1 })
        .collect();
    let mut d = Directory {
        nodes,
        extensions: HashMap::new(),
    };
    d.extensions
        .insert(b"1001".to_vec().into_boxed_slice(), idx);
    Arc::new(d)
}

impl Net {
    fn new() -> Net {
        Net::with_config("")
    }

    /// Two nodes whose configuration ends in `extra` (TOML appended to [`node_config`]).
    fn with_config(extra: &str) -> Net {
        let mk = |node: &str, ip: &str, peer: &str, secret: u8| {
            let text = node_config(node, ip, peer) + extra;
            let cfg = Arc::new(Config::from_toml(&text).unwrap());
            Core::new(
                cfg,
                CoreParams {
                    shard: ShardId(0),
                    shards: 1,
                    local: addr(&format!("{ip}:5060")),
                    secret: [secret; 32],
                    wall_epoch_us: 1_800_000_000_000_000,
                    timers: TimerValues::default(),
                },
                Instant::ZERO,
            )
        };
        let mut devices = HashMap::new();
        for d in [DEV_A, DEV_A2, DEV_B, DEV_B2, CALLER, ATTACKER] {
            devices.insert(addr(d), Device::default());
        }
        let mut net = Net {
            now: Instant::ZERO,
            nodes: vec![
                (addr(A), mk("a", "127.0.0.1", "127.0.0.2", 1)),
                (addr(B), mk("b", "127.0.0.2", "127.0.0.1", 2)),
            ],
            devices,
            queue: VecDeque::new(),
            log: Vec::new(),
            dead: Vec::new(),
        };
        net.set_directory(directory(&["a", "b"]));
        net
    }

    fn set_directory(&mut self, d: Arc<Directory>) {
        for (_, core) in &mut self.nodes {
            core.set_directory(Arc::clone(&d));
        }
    }

    fn node(&mut self, at: SocketAddr) -> Option<&mut Core> {
        self.nodes
            .iter_mut()
            .find(|(a, _)| *a == at)
            .map(|(_, c)| c)
    }

    fn collect(&mut self, at: SocketAddr) {
        let core = self.node(at).unwrap();
        let out: Vec<_> = core
            .outbox()
            .iter()
            .map(|(to, b)| (to, b.to_vec()))
            .collect();
        core.outbox().clear();
        core.drain_persist(|_| {});
        core.drain_notices(|_| {});
        for (to, b) in out {
            self.queue.push_back((at, to, b));
        }
    }

    fn send(&mut self, from: &str, to: &str, bytes: &[u8]) {
        self.queue.push_back((addr(from), addr(to), bytes.to_vec()));
        self.pump();
    }

    fn pump(&mut self) {
        while let Some((from, to, bytes)) = self.queue.pop_front() {
            self.now += ms(1);
            let dead = self.dead.contains(&to);
            self.log.push((from, to, first_line(&bytes)));
            if dead {
                continue;
            }
            let now = self.now;
            if let Some(core) = self.node(to) {
                let r = core.handle_datagram(
                    now,
                    Datagram {
                        from,
                        local: to,
                        bytes: &bytes,
                        transport: sipfork::core::transport::Transport::Udp,
                        peer_cert: None,
                    },
                );
                assert!(matches!(r, Inbound::Handled));
                self.collect(to);
            } else if self.devices.contains_key(&to) {
                self.device_receives(to, from, &bytes);
            }
        }
    }

    fn device_receives(&mut self, me: SocketAddr, from: SocketAddr, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes).into_owned();
        self.devices.get_mut(&me).unwrap().got.push(text.clone());
        let Ok(msg) = sipfork::sip::parse(bytes) else {
            return;
        };
        if !msg.is_request() {
            return;
        }
        let reply = |status: u16, reason: &str, req: &sipfork::sip::Message<'_>| {
            respond(me, req, status, reason)
        };
        let line = first_line(bytes);
        if line.starts_with("INVITE") {
            let r = reply(180, "Ringing", &msg);
            self.devices.get_mut(&me).unwrap().ringing = Some((bytes.to_vec(), from));
            self.queue.push_back((me, from, r));
        } else if line.starts_with("CANCEL") {
            let r = reply(200, "OK", &msg);
            self.queue.push_back((me, from, r));
            if let Some((inv, to)) = self.devices.get_mut(&me).unwrap().ringing.take() {
                let inv = sipfork::sip::parse(&inv).unwrap();
                let r = reply(487, "Request Terminated", &inv);
                self.queue.push_back((me, to, r));
            }
        } else if line.starts_with("BYE") {
            let r = reply(200, "OK", &msg);
            self.queue.push_back((me, from, r));
        }
    }

    /// The ringing device answers 200 OK.
    fn answer(&mut self, dev: &str) {
        let (inv, to) = self
            .devices
            .get_mut(&addr(dev))
            .unwrap()
            .ringing
            .take()
            .unwrap();
        let msg = sipfork::sip::parse(&inv).unwrap();
        let out = respond(addr(dev), &msg, 200, "OK");
        self.send(dev, &to.to_string(), &out);
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self
                .nodes
                .iter()
                .filter(|(a, _)| !self.dead.contains(a))
                .filter_map(|(_, c)| c.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for i in 0..self.nodes.len() {
                        let at = self.nodes[i].0;
                        if self.dead.contains(&at) {
                            continue;
                        }
                        if self.nodes[i].1.poll_timeout().is_some_and(|t| t <= now) {
                            self.nodes[i].1.handle_timeout(now);
                            self.collect(at);
                        }
                    }
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn register(&mut self, dev: &str, node: &str) {
        self.register_as(dev, node, "1001");
    }

    fn register_as(&mut self, dev: &str, node: &str, number: &str) {
        let got = self.try_register(dev, node, number);
        assert!(got.starts_with("SIP/2.0 200"), "{got}");
    }

    /// Registers `dev` as `number` at `node`; the answer it got.
    fn try_register(&mut self, dev: &str, node: &str, number: &str) -> String {
        let port = addr(dev).port();
        let msg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {dev};branch=z9hG4bKreg{port}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{number}@example.com>;tag=r1\r\nTo: <sip:{number}@example.com>\r\n\
             Call-ID: reg-{dev}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{number}@{dev}>\r\nExpires: 3600\r\n\
             Content-Length: 0\r\n\r\n"
        );
        self.send(dev, node, msg.as_bytes());
        self.devices[&addr(dev)].got.last().unwrap().clone()
    }

    fn invite(&mut self, node: &str, call_id: &str, max_forwards: u8) {
        let msg = invite_text(node, call_id, max_forwards, "");
        self.send(CALLER, node, msg.as_bytes());
    }

    /// First lines of what `to` received from `from`.
    fn lines(&self, from: &str, to: &str) -> Vec<String> {
        self.log
            .iter()
            .filter(|(f, t, _)| *f == addr(from) && *t == addr(to))
            .map(|(_, _, l)| l.clone())
            .collect()
    }

    fn caller_statuses(&self) -> Vec<u16> {
        self.devices[&addr(CALLER)]
            .got
            .iter()
            .filter_map(|t| t.strip_prefix("SIP/2.0 "))
            .filter_map(|t| t[..3].parse().ok())
            .collect()
    }
}

fn invite_text(node: &str, call_id: &str, max_forwards: u8, uri_params: &str) -> String {
    let ip = node.split(':').next().unwrap();
    format!(
        "INVITE sip:1001@{ip}:5060{uri_params} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: {max_forwards}\r\nFrom: <sip:caller@example.com>;tag=c1\r\nTo: <sip:1001@example.com>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{CALLER}>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn two_devices() -> Net {
    let mut net = Net::new();
    net.register(DEV_A, A);
    net.register(DEV_B, B);
    net
}

fn count(lines: &[String], start: &str) -> usize {
    lines.iter().filter(|l| l.starts_with(start)).count()
}

#[test]
fn a_call_at_either_node_rings_both_devices_and_the_first_answer_wins() {
    for (entry, winner, loser) in [(A, DEV_A, DEV_B), (B, DEV_A, DEV_B), (A, DEV_B, DEV_A)] {
        let mut net = two_devices();
        net.invite(entry, "call-1", 70);
        assert_eq!(
            net.devices[&addr(DEV_A)].got.len(),
            2,
            "REGISTER answer + INVITE"
        );
        assert!(net.devices[&addr(DEV_A)].got[1].starts_with("INVITE sip:1001@127.0.0.1:6001"));
        assert!(net.devices[&addr(DEV_B)].got[1].starts_with("INVITE sip:1001@127.0.0.2:6002"));
        // The remote node rang its own device only: no cluster branch back.
        let (other, _) = if entry == A { (B, A) } else { (A, B) };
        assert_eq!(count(&net.lines(other, entry), "INVITE"), 0, "no loop");
        assert_eq!(
            count(&net.lines(entry, other), "INVITE"),
            1,
            "one cluster branch"
        );
        assert!(net.caller_statuses().contains(&180));
        net.answer(winner);
        let st = net.caller_statuses();
        assert_eq!(st.iter().filter(|s| **s == 200).count(), 1, "{st:?}");
        assert!(!st.contains(&487), "{st:?}");
        let loser_got = &net.devices[&addr(loser)].got;
        assert!(
            loser_got.iter().any(|t| t.starts_with("CANCEL")),
            "the other device was cancelled: {entry} {winner}"
        );
    }
}

#[test]
fn caller_cancel_reaches_the_remote_node_and_its_device() {
    let mut net = two_devices();
    net.invite(A, "call-c", 70);
    net.advance(secs(5));
    let text = invite_text(A, "call-c", 70, "");
    let cancel = text
        .replace("INVITE sip:", "CANCEL sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    net.send(CALLER, A, cancel.as_bytes());
    for d in [DEV_A, DEV_B] {
        assert!(
            net.devices[&addr(d)]
                .got
                .iter()
                .any(|t| t.starts_with("CANCEL")),
            "{d}"
        );
    }
    assert!(net.caller_statuses().contains(&487));
}

#[test]
fn the_branch_to_a_dead_node_is_given_up_within_two_seconds() {
    let mut net = two_devices();
    net.dead.push(addr(B));
    net.invite(A, "call-d", 70);
    net.advance(ms(2100));
    let retrans = count(&net.lines(A, B), "INVITE");
    net.advance(secs(10));
    assert_eq!(
        count(&net.lines(A, B), "INVITE"),
        retrans,
        "no resends after 2 s"
    );
    // The local device still rings and answers: no 408 for the caller.
    net.answer(DEV_A);
    let st = net.caller_statuses();
    assert!(st.contains(&200) && !st.contains(&408), "{st:?}");

    // Only the dead node held the number: the caller hears 408 after 2 s, not Timer B's 32 s.
    let mut net = Net::new();
    net.set_directory(directory(&["b"]));
    net.dead.push(addr(B));
    net.invite(A, "call-e", 70);
    net.advance(ms(1900));
    assert!(!net.caller_statuses().iter().any(|s| *s >= 300));
    net.advance(ms(200));
    assert!(
        net.caller_statuses().contains(&408),
        "{:?}",
        net.caller_statuses()
    );
}

#[test]
fn max_forwards_is_respected_across_nodes() {
    let mut net = two_devices();
    net.invite(A, "call-mf", 1);
    assert!(net.lines(B, A).iter().any(|l| l.starts_with("SIP/2.0 483")));
    assert_eq!(
        net.devices[&addr(DEV_B)].got.len(),
        1,
        "REGISTER answer only"
    );
}

/// Attack: marks that are forged, stale, replayed onto another call, or sent from outside
/// `peers` get 403 and ring nothing.
#[test]
fn a_forged_cluster_mark_gets_no_fork() {
    let mut net = two_devices();
    let dev_b_before = net.devices[&addr(DEV_B)].got.len();
    // A MAC made up by the attacker, sent from a peer's address (spoofed) and from its own.
    let forged = format!(
        ";{}=6b49d200.00112233445566778899aabbccddeeff",
        cluster::MARK_PARAM
    );
    for from in [A, ATTACKER] {
        let text = invite_text(B, "forged-1", 70, &forged).replace(CALLER, from);
        net.devices.entry(addr(from)).or_default();
        net.send(from, B, text.as_bytes());
    }
    // A bare mark.
    let bare = format!(";{}", cluster::MARK_PARAM);
    net.send(CALLER, B, invite_text(B, "forged-2", 70, &bare).as_bytes());
    // A real mark written for another call, another branch, or too long ago.
    let now_secs = 1_800_000_000 + net.now.as_micros() / 1_000_000;
    let real = |call: &str, branch: &str, t: u64| {
        let mut m = Vec::new();
        cluster::write_mark(
            SECRET.as_bytes(),
            b"1001",
            call.as_bytes(),
            branch.as_bytes(),
            t,
            &mut m,
        );
        format!(";{}={}", cluster::MARK_PARAM, String::from_utf8(m).unwrap())
    };
    let cases = [
        ("replay-1", real("other-call", "z9hG4bKreplay-1", now_secs)),
        (
            "replay-2",
            real("replay-2", "z9hG4bKsomething-else", now_secs),
        ),
        ("stale", real("stale", "z9hG4bKstale", now_secs - 120)),
    ];
    for (call, params) in &cases {
        let text = invite_text(B, call, 70, params).replace(CALLER, A);
        net.send(A, B, text.as_bytes());
    }
    // A valid mark from outside `peers` (the secret leaked, the address did not).
    let text = invite_text(
        B,
        "outsider",
        70,
        &real("outsider", "z9hG4bKoutsider", now_secs),
    )
    .replace(CALLER, ATTACKER);
    net.send(ATTACKER, B, text.as_bytes());
    assert_eq!(
        net.devices[&addr(DEV_B)].got.len(),
        dev_b_before,
        "nothing reached the device: {:?}",
        &net.devices[&addr(DEV_B)].got[dev_b_before..]
    );
    let refused = net
        .log
        .iter()
        .filter(|(f, _, l)| {
            *f == addr(B) && l.starts_with("SIP/2.0 403 Forbidden - bad cluster mark")
        })
        .count();
    assert_eq!(refused, 7);
    // The control: the same kind of mark, right call, right branch, from the peer, rings.
    let text =
        invite_text(B, "good", 70, &real("good", "z9hG4bKgood", now_secs)).replace(CALLER, A);
    net.devices.entry(addr(A)).or_default();
    net.send(A, B, text.as_bytes());
    assert!(net.devices[&addr(DEV_B)]
        .got
        .last()
        .unwrap()
        .starts_with("INVITE"));
    let mut sink = sipfork::core::metrics::MetricSink::default();
    net.node(addr(B)).unwrap().export_metrics(&mut sink);
    let value = |name: &str| {
        sink.samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    };
    assert_eq!(value("sipfork_cluster_marks_refused_total"), Some(7));
    assert_eq!(value("sipfork_cluster_marks_accepted_total"), Some(1));
}

/// Only the nodes the directory names for the number get a branch.
#[test]
fn only_nodes_the_directory_names_get_branches() {
    let mut net = two_devices();
    net.set_directory(directory(&["a"]));
    net.invite(A, "call-local", 70);
    assert_eq!(count(&net.lines(A, B), "INVITE"), 0);
    assert_eq!(net.devices[&addr(DEV_B)].got.len(), 1);
}

/// Follow-me across nodes: extension 1001 rings `self` for 5 s, then extension 1002 for 5 s.
const FOLLOWME: &str = r#"
[[followme]]
extension = "1001"
stages = [
  { targets = ["self"], ring = 5 },
  { targets = ["1002"], ring = 5 },
]
"#;

/// A stage's `self` rings the extension's devices on every node (a cluster branch in that
/// stage), and the stage's end cancels the remote devices too; a stage naming another
/// extension rings that extension's devices on the other node.
#[test]
fn a_followme_stage_rings_the_devices_on_every_node_and_its_end_cancels_them() {
    let mut net = Net::with_config(FOLLOWME);
    net.register(DEV_A, A);
    net.register(DEV_B, B);
    net.register_as(DEV_B2, B, "1002");
    let mut d = (*directory(&["a", "b"])).clone();
    d.extensions
        .insert(b"1002".to_vec().into_boxed_slice(), vec![1]);
    net.set_directory(Arc::new(d));
    net.invite(A, "call-fm", 70);
    let invites = |net: &Net, dev: &str| count(&net.devices[&addr(dev)].got, "INVITE");
    let cancels = |net: &Net, dev: &str| count(&net.devices[&addr(dev)].got, "CANCEL");
    // Stage 1: the devices of 1001 on both nodes, not yet 1002's.
    assert_eq!(invites(&net, DEV_A), 1);
    assert_eq!(
        invites(&net, DEV_B),
        1,
        "the remote device rings in stage 1"
    );
    assert_eq!(invites(&net, DEV_B2), 0);
    assert_eq!(count(&net.lines(A, B), "INVITE"), 1);
    net.advance(ms(4_900));
    assert_eq!((cancels(&net, DEV_A), cancels(&net, DEV_B)), (0, 0));
    assert_eq!(
        invites(&net, DEV_B2),
        0,
        "stage 2 waits for stage 1's ring time"
    );
    // Stage 1 ends: both nodes' devices are cancelled, stage 2 rings 1002's device on B.
    net.advance(ms(200));
    assert_eq!(cancels(&net, DEV_A), 1, "local device cancelled");
    assert_eq!(cancels(&net, DEV_B), 1, "remote device cancelled");
    assert_eq!(
        invites(&net, DEV_B2),
        1,
        "stage 2: 1002's device on the other node"
    );
    assert_eq!(
        count(&net.lines(A, B), "INVITE"),
        2,
        "one cluster branch per stage"
    );
    assert_eq!(count(&net.lines(A, B), "CANCEL"), 1);
    // B rang its local devices only: nothing came back to A as a new INVITE.
    assert_eq!(count(&net.lines(B, A), "INVITE"), 0, "no loop");
    net.answer(DEV_B2);
    let st = net.caller_statuses();
    assert_eq!(st.iter().filter(|s| **s == 200).count(), 1, "{st:?}");
    assert!(!st.iter().any(|s| *s >= 300), "{st:?}");
    let mut sink = sipfork::core::metrics::MetricSink::default();
    net.node(addr(A)).unwrap().export_metrics(&mut sink);
    let branches: u64 = sink
        .samples
        .iter()
        .filter(|s| s.name == "sipfork_cluster_branches_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(branches, 2);
}

/// Without other holders a follow-me stage rings the local devices only, as before.
#[test]
fn a_followme_stage_sends_no_cluster_branch_when_no_other_node_holds_the_number() {
    let mut net = Net::with_config(FOLLOWME);
    net.register(DEV_A, A);
    net.set_directory(directory(&["a"]));
    net.invite(A, "call-fm-local", 70);
    assert_eq!(count(&net.devices[&addr(DEV_A)].got, "INVITE"), 1);
    assert_eq!(count(&net.lines(A, B), "INVITE"), 0);
}

/// `max_contacts` is a per-node quota (docs/cluster.md "Limits across the cluster"): a node
/// refuses a device beyond it as it would alone, and never counts the other nodes' bindings, so
/// a phone re-registering on another node (its node died, or DNS SRV moved it) is never
/// refused for bindings the directory still shows elsewhere. With K nodes an extension rings
/// at most K x max_contacts devices.
#[test]
fn max_contacts_is_a_per_node_quota() {
    let mut net = Net::with_config("\n[registrar]\nmax_contacts = 1\non_limit = \"reject\"\n");
    net.register(DEV_A, A);
    // A holds 1001's one binding (the directory says so); a second device on A is refused.
    let refused = net.try_register(DEV_A2, A, "1001");
    assert!(refused.starts_with("SIP/2.0 403"), "{refused}");
    // B admits its own quota, though the directory shows A holding 1001.
    net.register(DEV_B, B);
    net.invite(A, "call-quota", 70);
    for (dev, rang) in [(DEV_A, 1), (DEV_B, 1), (DEV_A2, 0)] {
        assert_eq!(count(&net.devices[&addr(dev)].got, "INVITE"), rang, "{dev}");
    }
}
