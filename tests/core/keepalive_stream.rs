//! Trunk OPTIONS keep-alives to addresses configured over TCP and TLS (`trunk =
//! "sip:IP:port;transport=tcp|tls"`, `core::policy::keepalive`) on virtual time, one and two
//! shards: each is probed over its own transport through the connection path a call takes (one
//! connection per address, shared by probes and calls), never over UDP; no retransmissions over
//! a connection; a refused connect marks the address dead at once and calls go to the next
//! address; an answer marks it alive again; an answer counts only from the trunk's address over
//! the probe's transport.

use std::net::SocketAddr;

use crate::outbound_tls::{certificates, config};
use crate::transport::{received, top_via};
use sipfork::core::transport::Transport;
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World};
use sipfork::time::{ms, secs};

const TLS_PBX: u16 = 5090;
const TCP_PBX: u16 = 5091;
const UDP_PBX: u16 = 5092;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// UDP 5060, TCP 5060 and TLS 5061 (with `peer_ca`), keep-alives every 30 s, and trunk 3000
/// at a TLS, a TCP and a UDP address, tried in that order.
fn trunk_config(shards: u16, dir: &std::path::Path) -> String {
    format!(
        "{}\n[policy]\ntrunk_keepalive = 30\n[[extensions]]\nnumbers = \"3000\"\n\
         trunk = [\"sip:127.0.0.1:{TLS_PBX};transport=tls\", \
         \"sip:127.0.0.1:{TCP_PBX};transport=tcp\", \"127.0.0.1:{UDP_PBX}\"]\n",
        config(shards, dir, true).replace(
            "\"tls:127.0.0.1:5061\"]",
            "\"tls:127.0.0.1:5061\", \"tcp:127.0.0.1:5060\"]"
        )
    )
}

struct Edge {
    w: World,
    caller: PhoneId,
    tls: PhoneId,
    tcp: PhoneId,
    udp: PhoneId,
}

/// A world of [`trunk_config`] with the three PBX addresses answering calls; nothing has run.
fn edge(shards: u16, dir: &std::path::Path, seed: u64) -> Edge {
    let mut w = World::new(&trunk_config(shards, dir), shards, seed);
    let caller = w.add_phone("caller", "1000", 5071);
    let tls = w.add_phone_at("tls-pbx", "3000", addr(TLS_PBX));
    let tcp = w.add_phone_at("tcp-pbx", "3000", addr(TCP_PBX));
    let udp = w.add_phone_at("udp-pbx", "3000", addr(UDP_PBX));
    for p in [tls, tcp, udp] {
        w.behave(p, Behaviour::answer_after(ms(50)));
    }
    Edge {
        w,
        caller,
        tls,
        tcp,
        udp,
    }
}

impl Edge {
    fn options_to(&self, p: PhoneId) -> Vec<&[u8]> {
        received(&self.w, p, "OPTIONS ", "OPTIONS")
    }

    /// Metric `name` summed over the shards (and its labels).
    fn metric(&self, name: &str) -> u64 {
        self.metric_with(name, None)
    }

    /// Metric `name` summed over the shards, only its samples labelled `label` when given.
    fn metric_with(&self, name: &str, label: Option<(&str, &str)>) -> u64 {
        self.w
            .cores()
            .iter()
            .map(|c| {
                let mut sink = sipfork::core::metrics::MetricSink::default();
                c.export_metrics(&mut sink);
                sink.samples
                    .iter()
                    .filter(|s| {
                        s.name == name
                            && label.is_none_or(|(k, v)| {
                                s.labels.iter().any(|(lk, lv)| *lk == k && lv == v)
                            })
                    })
                    .map(|s| s.value)
                    .sum::<u64>()
            })
            .sum()
    }

    /// Places a call to 3000, hangs it up, and says which PBX address took it.
    fn call_lands_on(&mut self) -> PhoneId {
        let pbxs = [self.tls, self.tcp, self.udp];
        let before = pbxs.map(|p| self.w.phone_ref(p).incoming.len());
        let call = self.w.call(self.caller, "3000");
        self.w.run_for(secs(1));
        assert_eq!(
            self.w.phone_ref(self.caller).outgoing[call].finals(),
            vec![200],
            "{}",
            self.w.dump()
        );
        self.w.hang_up(self.caller, call);
        self.w.run_for(secs(1));
        let after = pbxs.map(|p| self.w.phone_ref(p).incoming.len());
        let took: Vec<PhoneId> = (0..3)
            .filter(|&i| after[i] > before[i])
            .map(|i| pbxs[i])
            .collect();
        assert_eq!(took.len(), 1, "{took:?}\n{}", self.w.dump());
        took[0]
    }

    /// The last INVITE `p` received.
    fn last_invite(&self, p: PhoneId) -> Vec<u8> {
        let incoming = &self.w.phone_ref(p).incoming;
        incoming.last().expect("an INVITE").invite.clone()
    }

    /// The proxy's transmissions to `to` whose first line starts with `start`.
    fn sent_to(&self, to: SocketAddr, start: &str) -> usize {
        self.w
            .log
            .iter()
            .filter(|t| t.from == self.w.proxy && t.to == to && t.line.starts_with(start))
            .count()
    }
}

#[test]
fn tcp_and_tls_trunk_addresses_are_probed_over_their_transport_on_the_calls_connection() {
    let dir = certificates("ka-stream");
    for shards in [1, 2] {
        let mut e = edge(shards, &dir, 701);
        let n = usize::from(shards);
        e.w.run_for(secs(1));
        // One connection per stream address (a second shard's probe takes the first's).
        let mut connects = e.w.connects.clone();
        connects.sort_by_key(|(a, _)| *a);
        assert_eq!(
            connects,
            vec![
                (addr(TLS_PBX), Transport::Tls),
                (addr(TCP_PBX), Transport::Tcp)
            ],
            "{shards} shards\n{}",
            e.w.dump()
        );
        for (p, via, line) in [
            (
                e.tls,
                "Via: SIP/2.0/TLS 127.0.0.1:5061;branch=",
                format!("OPTIONS sip:127.0.0.1:{TLS_PBX};transport=tls SIP/2.0\r\n"),
            ),
            (
                e.tcp,
                "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=",
                format!("OPTIONS sip:127.0.0.1:{TCP_PBX};transport=tcp SIP/2.0\r\n"),
            ),
            (
                e.udp,
                "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=",
                format!("OPTIONS sip:127.0.0.1:{UDP_PBX} SIP/2.0\r\n"),
            ),
        ] {
            let probes = e.options_to(p);
            assert_eq!(probes.len(), n, "{shards} shards\n{}", e.w.dump());
            for probe in probes {
                assert!(probe.starts_with(line.as_bytes()), "{line}");
                assert!(top_via(probe).starts_with(via), "{}", top_via(probe));
            }
        }
        assert_eq!(e.metric("sipfork_trunk_probes_total"), 3 * n as u64);
        assert_eq!(
            e.metric("sipfork_trunk_probes_answered_total"),
            3 * n as u64
        );
        assert_eq!(e.metric("sipfork_trunk_addresses_dead"), 0);
        assert_eq!(e.metric("sipfork_trunk_probe_connect_failures_total"), 0);

        // A call to the trunk takes the first address over the probes' TLS connection.
        assert_eq!(e.call_lands_on(), e.tls);
        assert!(top_via(&e.last_invite(e.tls)).starts_with("Via: SIP/2.0/TLS "));
        // Later probes keep to the same connections, one per interval (every 30 s).
        e.w.run_for(secs(61));
        assert_eq!(e.w.connects.len(), 2, "{:?}", e.w.connects);
        for p in [e.tls, e.tcp, e.udp] {
            assert_eq!(e.options_to(p).len(), 3 * n, "{shards} shards");
        }
        assert_eq!(
            e.metric("sipfork_trunk_probes_answered_total"),
            9 * n as u64
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_refused_connect_marks_the_address_dead_at_once_and_an_answer_alive_again() {
    let dir = certificates("ka-refused");
    for shards in [1, 2] {
        let mut e = edge(shards, &dir, 702);
        let n = shards as u64;
        // Nothing listens on the TLS address (a refused TCP connect, or a failed handshake:
        // the engine reports both alike).
        e.w.connect_refused.push(addr(TLS_PBX));
        e.w.run_for(ms(100));
        assert!(e.options_to(e.tls).is_empty());
        assert_eq!(
            e.metric("sipfork_trunk_addresses_dead"),
            n,
            "{}",
            e.w.dump()
        );
        assert!(e.metric("sipfork_trunk_probe_connect_failures_total") >= 1);
        // Dead at once, well before Timer F: the call goes to the next address, over TCP.
        assert_eq!(e.call_lands_on(), e.tcp, "{shards} shards\n{}", e.w.dump());
        assert!(top_via(&e.last_invite(e.tcp)).starts_with("Via: SIP/2.0/TCP "));
        // Never over UDP instead, neither the probes nor the call.
        assert_eq!(e.sent_to(addr(TLS_PBX), ""), 0, "{}", e.w.dump());

        // The PBX is back: the next probe connects, is answered, and calls return to it.
        e.w.connect_refused.clear();
        e.w.run_for(secs(30));
        assert_eq!(e.options_to(e.tls).len(), usize::from(shards));
        assert_eq!(
            e.metric("sipfork_trunk_addresses_dead"),
            0,
            "{}",
            e.w.dump()
        );
        assert_eq!(e.call_lands_on(), e.tls, "{shards} shards\n{}", e.w.dump());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_silent_stream_trunk_is_dead_at_timer_f_with_one_probe_sent() {
    let dir = certificates("ka-silent");
    for shards in [1, 2] {
        let mut e = edge(shards, &dir, 703);
        let n = usize::from(shards);
        // The TLS PBX stays connected but answers no OPTIONS.
        e.w.drop_next(100, "SIP/2.0 ", Some("OPTIONS"), Some(addr(TLS_PBX)), None);
        e.w.run_for(secs(31));
        // No retransmissions over a connection (RFC 3261 §17.1.2.1): one probe per shard.
        assert_eq!(e.options_to(e.tls).len(), n, "{}", e.w.dump());
        assert_eq!(e.sent_to(addr(TLS_PBX), "OPTIONS "), n);
        assert_eq!(e.metric("sipfork_trunk_addresses_dead"), 0);
        // Timer F (32 s): dead, and the next probe goes at once.
        e.w.run_for(secs(2));
        assert_eq!(e.metric("sipfork_trunk_addresses_dead"), n as u64);
        assert_eq!(e.options_to(e.tls).len(), 2 * n);
        assert_eq!(e.metric("sipfork_trunk_probe_connect_failures_total"), 0);
        assert_eq!(e.call_lands_on(), e.tcp, "{shards} shards\n{}", e.w.dump());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A response to `probe` (an OPTIONS as the PBX received it) with `status`.
fn answer_to(probe: &[u8], status: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(probe);
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in text.split("\r\n").skip(1) {
        let name = line.split(':').next().unwrap_or_default();
        if ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            out.push_str(line);
            out.push_str("\r\n");
        } else if name.eq_ignore_ascii_case("To") {
            out.push_str(line);
            out.push_str(";tag=forged\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

#[test]
fn a_probe_answer_counts_only_from_the_trunk_over_the_probes_transport() {
    let dir = certificates("ka-forged");
    for shards in [1, 2] {
        let mut e = edge(shards, &dir, 704);
        let n = shards as u64;
        let evil = e.w.add_phone("evil", "1001", 5099);
        // The TLS PBX answers no OPTIONS: dead at Timer F.
        e.w.drop_next(
            100,
            "SIP/2.0 200",
            Some("OPTIONS"),
            Some(addr(TLS_PBX)),
            None,
        );
        e.w.run_for(secs(33));
        assert_eq!(e.metric("sipfork_trunk_addresses_dead"), n);
        // Answers to the probes in flight (the second round, sent at Timer F), with their
        // branch, sent from elsewhere: over UDP and over TLS from another address, and from
        // the PBX's own address over UDP once its connection is gone.
        let probes: Vec<Vec<u8>> = e.options_to(e.tls)[shards.into()..]
            .iter()
            .map(|p| answer_to(p, "405 Method Not Allowed"))
            .collect();
        assert_eq!(probes.len(), usize::from(shards));
        let stray_responses =
            |e: &Edge| e.metric_with("sipfork_refused_total", Some(("reason", "stray_response")));
        let stray = stray_responses(&e);
        let forge = |e: &mut Edge, from: PhoneId, how: &str| {
            for forged in &probes {
                e.w.send_raw(from, forged);
            }
            e.w.run_for(ms(100));
            assert_eq!(
                e.metric("sipfork_trunk_addresses_dead"),
                n,
                "{shards} shards, {how}\n{}",
                e.w.dump()
            );
        };
        forge(&mut e, evil, "another address over UDP");
        e.w.connect(evil, Transport::Tls);
        forge(&mut e, evil, "another address over TLS");
        let tls = e.tls;
        // The probe in flight is sent again at once when its connection closes: that connect
        // is refused here, so the PBX's address has no connection while it sends over UDP.
        e.w.connect_refused.push(addr(TLS_PBX));
        e.w.close_flow(tls);
        forge(&mut e, tls, "the trunk's address over UDP");
        e.w.connect_refused.clear();
        assert_eq!(e.metric("sipfork_trunk_probes_answered_total"), 4 * n);
        assert_eq!(stray_responses(&e), stray + 3 * n, "counted as strays");
        assert_eq!(e.call_lands_on(), e.tcp, "{shards} shards");
        // The same answers over the PBX's TLS connection are its answers: alive again.
        e.w.connect(e.tls, Transport::Tls);
        for forged in &probes {
            e.w.send_raw(e.tls, forged);
        }
        e.w.run_for(secs(1));
        assert_eq!(
            e.metric("sipfork_trunk_addresses_dead"),
            0,
            "{}",
            e.w.dump()
        );
        // The probes they answer were dropped when the connection closed: a late answer marks
        // the address alive but is no answered probe.
        assert_eq!(e.metric("sipfork_trunk_probes_answered_total"), 4 * n);
        assert_eq!(e.call_lands_on(), e.tls, "{shards} shards");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_probe_on_a_connection_that_closes_is_sent_again_and_the_trunk_stays_alive() {
    let dir = certificates("ka-closed");
    for shards in [1, 2] {
        let mut e = edge(shards, &dir, 705);
        let n = usize::from(shards);
        // The first probe to the TLS PBX gets no answer: its connection closes first.
        e.w.drop_next(n, "SIP/2.0 ", Some("OPTIONS"), Some(addr(TLS_PBX)), None);
        e.w.run_for(ms(500));
        assert_eq!(e.options_to(e.tls).len(), n, "{}", e.w.dump());
        let tls = e.tls;
        e.w.close_flow(tls);
        // The probe is sent again at once over a new connection, and answered.
        e.w.run_for(secs(1));
        assert_eq!(
            e.options_to(e.tls).len(),
            2 * n,
            "{shards} shards\n{}",
            e.w.dump()
        );
        let tls_connects = e.w.connects.iter().filter(|c| c.0 == addr(TLS_PBX)).count();
        assert_eq!(tls_connects, 2, "{:?}", e.w.connects);
        // Never marked dead: no Timer F on the closed connection's probe.
        e.w.run_for(secs(33));
        assert_eq!(
            e.metric("sipfork_trunk_addresses_dead"),
            0,
            "{shards} shards\n{}",
            e.w.dump()
        );
        assert_eq!(e.metric("sipfork_trunk_probe_connect_failures_total"), 0);
        assert_eq!(e.call_lands_on(), e.tls, "{shards} shards");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
