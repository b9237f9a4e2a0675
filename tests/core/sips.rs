//! `sips:` and the transport rules left open by issue 16, on virtual time with one and two
//! shards: a `sips:` or `;transport=tls` target whose address has a plain TCP flow open is never
//! sent over it (RFC 3261 §26.2.2 as amended by RFC 5630: TLS on every hop); a UDP caller's
//! final is retransmitted over UDP (Timer G) while sipfork holds a connection to its address
//! (RFC 3261 §18.2.2, §17.2.1).

use std::net::SocketAddr;

use crate::outbound_tls::{certificates, config, setup};
use sipfork::core::transport::Transport;
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World, DEFAULT_CONFIG};
use sipfork::time::{ms, secs};

/// A REGISTER without Contact (it only asks for the bindings) for `user` from `addr`: sent
/// over a connection, it makes the shard owning `user` see that flow.
fn query_register(user: &str, addr: SocketAddr, transport: &str) -> String {
    format!(
        "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/{transport} {addr};branch=z9hG4bKq{user}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1:5060>;tag=q{user}\r\n\
         To: <sip:{user}@127.0.0.1:5060>\r\nCall-ID: query-{user}@test\r\nCSeq: 1 REGISTER\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The final statuses of each call phone `id` placed.
pub(crate) fn finals(w: &World, id: PhoneId) -> Vec<Vec<u16>> {
    w.phone_ref(id)
        .outgoing
        .iter()
        .map(|o| o.finals())
        .collect()
}

#[test]
fn a_tls_or_sips_contact_is_never_reached_over_a_plain_tcp_flow_open_to_its_address() {
    let dir = certificates("sips-tcpflow");
    for shards in [1, 2] {
        let mut s = setup(&config(shards, &dir, true), shards, 601);
        // Both devices (registered over UDP, a `;transport=tls` and a `sips:` Contact) also
        // hold a plain TCP connection to sipfork from the address they registered.
        for (id, user) in [(s.tls, "1001"), (s.sips, "1002")] {
            s.w.connect(id, Transport::Tcp);
            let addr = s.w.phone_ref(id).addr;
            s.w.send_raw(id, query_register(user, addr, "TCP").as_bytes());
        }
        s.w.run_for(ms(100));
        for number in ["1001", "1002"] {
            s.w.call(s.caller, number);
            s.w.run_for(secs(1));
        }
        // Neither is rung over the TCP flow, and no TLS connection can be opened beside it:
        // each was its extension's only device, 480.
        assert!(
            s.w.phone_ref(s.tls).incoming.is_empty(),
            "{shards} shards\n{}",
            s.w.dump()
        );
        assert!(s.w.phone_ref(s.sips).incoming.is_empty(), "{}", s.w.dump());
        assert!(s.w.connects.is_empty(), "{:?}", s.w.connects);
        assert_eq!(
            finals(&s.w, s.caller),
            vec![vec![480], vec![480]],
            "{shards} shards"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_next_hop_configured_for_tls_is_not_reached_over_a_plain_tcp_flow_to_its_address() {
    let dir = certificates("sips-hopflow");
    for shards in [1, 2] {
        let hop: SocketAddr = "127.0.0.1:5090".parse().unwrap();
        let cfg = format!(
            "{}\n[[routes]]\nprefix = \"00\"\nnext_hop = \"sip:{hop};transport=tls\"\n",
            config(shards, &dir, true)
        );
        let mut w = World::new(&cfg, shards, 602);
        let caller = w.add_phone("caller", "1000", 5071);
        let trunk = w.add_phone_at("trunk", "0049301234", hop);
        // The next hop connected to sipfork over plain TCP (a REGISTER for the number makes the
        // shard owning it see the flow; it is no extension of ours: 404).
        w.connect(trunk, Transport::Tcp);
        w.send_raw(trunk, query_register("0049301234", hop, "TCP").as_bytes());
        w.run_for(ms(100));
        w.call(caller, "0049301234");
        w.run_for(secs(1));
        assert!(
            w.phone_ref(trunk).incoming.is_empty(),
            "{shards} shards\n{}",
            w.dump()
        );
        assert!(w.connects.is_empty(), "{:?}", w.connects);
        // A transport error (RFC 3261 §8.1.3.1: 503), relayed as 500 (§16.7).
        assert_eq!(
            finals(&w, caller),
            vec![vec![500]],
            "{shards} shards\n{}",
            w.dump()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn timer_g_retransmits_a_udp_callers_final_over_udp_while_it_also_has_a_tcp_connection() {
    for shards in [1, 2] {
        let cfg = DEFAULT_CONFIG
            .replace("shards = 1", &format!("shards = {shards}"))
            .replace(
                "listen = \"127.0.0.1:5060\"",
                "listen = [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5060\"]",
            );
        let mut w = World::new(&cfg, shards, 603);
        let caller = w.add_phone("caller", "1000", 5071);
        let dev = w.add_phone("dev", "1002", 5073);
        w.register(dev, 300);
        w.behave(dev, Behaviour::reject_after(486, ms(100)));
        // The caller holds a TCP connection to sipfork (seen by the shard owning 1002)...
        let me = w.phone_ref(caller).addr;
        w.connect(caller, Transport::Tcp);
        w.send_raw(caller, query_register("1002", me, "TCP").as_bytes());
        w.run_for(ms(100));
        // ...and sends an INVITE over UDP from the same address, never ACKing the 486.
        w.connect(caller, Transport::Udp);
        let invite = format!(
            "INVITE sip:1002@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKnoackg\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=g\r\nTo: <sip:1002@127.0.0.1>\r\n\
             Call-ID: noack-g\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@{me}>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let (log, kept) = (w.log.len(), w.kept_udp.len());
        w.send_raw(caller, invite.as_bytes());
        w.run_for(secs(10));
        let to_caller = |line: &str| {
            w.log[log..]
                .iter()
                .filter(|t| t.from == w.proxy && t.to == me && t.line.starts_with(line))
                .count()
        };
        let finals = to_caller("SIP/2.0 486");
        assert!(finals >= 4, "Timer G over UDP: {finals}\n{}", w.dump());
        // Every answer to the caller (its 100 and each copy of the 486) is marked for UDP.
        let marked = w.kept_udp[kept..].iter().filter(|&&a| a == me).count();
        assert_eq!(
            marked,
            to_caller("SIP/2.0"),
            "{shards} shards\n{}",
            w.dump()
        );
    }
}
