//! Trunk OPTIONS keep-alives (`[policy] trunk_keepalive`, `core::policy::keepalive`) on virtual
//! time: every trunk address is probed, and only trunk addresses; an address that answers no
//! probe within Timer F (32 s) is marked dead and calls go to the next one; an answer marks it
//! alive again and calls return to it; with every address dead, the first is tried anyway.

use std::net::SocketAddr;

use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World};
use sipfork::time::{ms, secs};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:5060"
domain = "example.com"
[registrar]
min_expires = 10
[auth]
mode = "none"
[policy]
trunk_keepalive = 30
[[extensions]]
numbers = "3000"
trunk = ["127.0.0.1:5090", "127.0.0.1:5091"]
[[dids]]
numbers = "+31201234000-+31201234999"
extension = "3000"
[[trusted]]
cidr = "127.0.0.1/32"
name = "carrier"
"#;

struct Edge {
    w: World,
    carrier: PhoneId,
    a: PhoneId,
    b: PhoneId,
}

fn edge(shards: u16, seed: u64) -> Edge {
    let mut w = World::new(CONFIG, shards, seed);
    let carrier = w.add_phone("carrier", "0049301234", 5070);
    let a = w.add_phone("pbx-a", "3000", 5090);
    let b = w.add_phone("pbx-b", "3000", 5091);
    for p in [a, b] {
        w.behave(p, Behaviour::answer_after(ms(50)));
    }
    Edge { w, carrier, a, b }
}

impl Edge {
    /// Places a call to a DID, hangs it up, and says which PBX address took it.
    fn call_lands_on(&mut self) -> PhoneId {
        let before = [self.a, self.b].map(|p| self.w.phone_ref(p).requests_received("INVITE"));
        let call = self.w.call(self.carrier, "+31201234567");
        self.w.run_for(secs(1));
        assert_eq!(
            self.w.phone_ref(self.carrier).outgoing[call].finals(),
            vec![200],
            "{}",
            self.w.dump()
        );
        self.w.hang_up(self.carrier, call);
        self.w.run_for(secs(1));
        let after = [self.a, self.b].map(|p| self.w.phone_ref(p).requests_received("INVITE"));
        match (after[0] - before[0], after[1] - before[1]) {
            (1, 0) => self.a,
            (0, 1) => self.b,
            other => panic!("INVITEs to a, b: {other:?}\n{}", self.w.dump()),
        }
    }

    fn addr(&self, p: PhoneId) -> SocketAddr {
        self.w.phone_ref(p).addr
    }

    fn options_to(&self, p: PhoneId) -> usize {
        self.w.phone_ref(p).requests_received("OPTIONS")
    }
}

#[test]
fn a_silent_trunk_address_is_skipped_until_it_answers_again() {
    for shards in [1, 2] {
        let mut e = edge(shards, 40 + u64::from(shards));
        e.w.run_for(secs(1));
        // Each shard probes each address once at start.
        assert_eq!(e.options_to(e.a), usize::from(shards), "{}", e.w.dump());
        assert_eq!(e.options_to(e.b), usize::from(shards));
        assert_eq!(e.call_lands_on(), e.a, "the first address, alive");

        // A stops answering for two probe rounds.
        let a = e.addr(e.a);
        e.w.drop_next(22 * usize::from(shards), "OPTIONS", None, None, Some(a));
        e.w.run_for(secs(68));
        assert_eq!(e.call_lands_on(), e.b, "A is dead: B takes the call");
        // Probes keep going to A; once one is answered, A takes calls again.
        e.w.run_for(secs(90));
        assert_eq!(e.call_lands_on(), e.a, "A answered again\n{}", e.w.dump());

        // Egress rule: the proxy sends OPTIONS to trunk addresses only, and keeps probing at
        // the interval (not more often).
        let proxy = e.w.proxy;
        let probes: Vec<_> =
            e.w.log
                .iter()
                .filter(|t| t.from == proxy && t.line.starts_with("OPTIONS "))
                .collect();
        assert!(probes.iter().all(|t| t.to == a || t.to == e.addr(e.b)));
        let to_b = probes.iter().filter(|t| t.to == e.addr(e.b)).count();
        // B answers every probe: one per shard per 30 s over ~164 s.
        assert!(
            (5 * usize::from(shards)..=7 * usize::from(shards)).contains(&to_b),
            "{to_b} probes to B"
        );
    }
}

#[test]
fn with_every_address_dead_the_first_is_tried() {
    let mut e = edge(1, 50);
    e.w.run_for(secs(1));
    let (a, b) = (e.addr(e.a), e.addr(e.b));
    e.w.drop_next(40, "OPTIONS", None, None, Some(a));
    e.w.drop_next(40, "OPTIONS", None, None, Some(b));
    e.w.run_for(secs(68));
    assert_eq!(e.call_lands_on(), e.a);
}

#[test]
fn no_probes_without_the_setting() {
    let cfg = CONFIG.replace("trunk_keepalive = 30\n", "");
    let mut w = World::new(&cfg, 1, 60);
    let a = w.add_phone("pbx-a", "3000", 5090);
    w.run_for(secs(120));
    assert_eq!(w.phone_ref(a).requests_received("OPTIONS"), 0);
}
