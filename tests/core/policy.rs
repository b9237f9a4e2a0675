//! Call policy on virtual time (`core::policy`): public calls counted on the tenancy tree with
//! overselling, released exactly once on every way a call ends, trunks with DIDs, emergency
//! numbers, and a randomized simulation in which the counters must drift back to zero.
//!
//! The carrier side is a `[[trusted]]` peer (every simulated phone sends from 127.0.0.1, so the
//! caller "carrier" is trusted and outside the platform; devices register like any phone).

use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, Rng, World};
use sipfork::time::{ms, secs};

/// acme (provider, 2 calls) > u1, u2 (2 calls each: 4 sold on 2); 1000-1009 belong to u1,
/// 1010-1019 to u2, 1020-1029 to nobody (server level only, capped at 10). A PBX trunk 3000
/// (tenant pbx, 1 call) at 127.0.0.1:5090 with DIDs +31201234000-+31201234999.
pub(crate) fn config(extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:5060"
domain = "example.com"
max_public_calls = 10
[registrar]
min_expires = 10
[auth]
mode = "none"
[proxy]
timer_c = 181
[policy]
max_call_seconds = 60
{extra}
[[tenants]]
name = "acme"
max_public_calls = 2
[[tenants]]
name = "u1"
parent = "acme"
max_public_calls = 2
[[tenants]]
name = "u2"
parent = "acme"
max_public_calls = 2
[[tenants]]
name = "pbx"
max_public_calls = 1
[[extensions]]
numbers = "1000-1009"
tenant = "u1"
[[extensions]]
numbers = "1010-1019"
tenant = "u2"
[[extensions]]
numbers = "1020-1029"
[[extensions]]
numbers = "3000"
tenant = "pbx"
trunk = "127.0.0.1:5090"
[[dids]]
numbers = "+31201234000-+31201234999"
extension = "3000"
[[emergency]]
numbers = ["112"]
[[trusted]]
cidr = "127.0.0.1/32"
name = "carrier"
"#
    )
}

struct Edge {
    w: World,
    carrier: PhoneId,
}

/// The edge with one answering device for each of 1000, 1001, 1010, 1020 (answers after
/// 50 ms) and the PBX at its trunk address.
fn edge(seed: u64, extra: &str) -> (Edge, Vec<PhoneId>, PhoneId) {
    let mut w = World::new(&config(extra), 1, seed);
    let carrier = w.add_phone("carrier", "0049301234", 5070);
    let devices: Vec<PhoneId> = ["1000", "1001", "1010", "1020"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let d = w.add_phone(&format!("d{n}"), n, 5071 + i as u16);
            w.behave(d, Behaviour::answer_after(ms(50)));
            w.register(d, 3600);
            d
        })
        .collect();
    let pbx = w.add_phone("pbx", "3000", 5090);
    w.behave(pbx, Behaviour::answer_after(ms(50)));
    w.run_for(ms(100));
    (Edge { w, carrier }, devices, pbx)
}

fn live(w: &World, level: &str) -> u32 {
    let cfg = w.cores()[0].config();
    let i = if level.is_empty() {
        0
    } else {
        cfg.tenancy.find(level).unwrap()
    };
    cfg.ledger.live(i)
}

fn all_zero(w: &World) -> bool {
    let cfg = w.cores()[0].config();
    (0..cfg.tenancy.len()).all(|i| cfg.ledger.live(i) == 0)
}

/// The seed example: users sold 2 + 2 on a provider of 2. Any one user may take 2; together
/// they take at most 2; the third call gets 503 with Q.850 cause 34.
#[test]
fn oversold_limits_hold_at_every_level() {
    let (mut e, _devices, _) = edge(1, "");
    let a = e.w.call(e.carrier, "1000");
    let b = e.w.call(e.carrier, "1001");
    e.w.run_for(secs(1));
    assert_eq!(e.w.phone_ref(e.carrier).outgoing[a].finals(), vec![200]);
    assert_eq!(e.w.phone_ref(e.carrier).outgoing[b].finals(), vec![200]);
    assert_eq!(
        (live(&e.w, "u1"), live(&e.w, "acme"), live(&e.w, "")),
        (2, 2, 2)
    );
    // u2 has room of its own (2) but acme is full.
    let c = e.w.call(e.carrier, "1010");
    e.w.run_for(secs(1));
    assert_eq!(
        e.w.phone_ref(e.carrier).outgoing[c].finals(),
        vec![503],
        "{}",
        e.w.dump()
    );
    let refused =
        e.w.phone_ref(e.carrier)
            .inbox
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .find(|t| t.starts_with("SIP/2.0 503"))
            .unwrap();
    assert!(
        refused.contains("Reason: Q.850;cause=34;text=\"No circuit/channel available\""),
        "{refused}"
    );
    assert_eq!(
        e.w.cores()[0]
            .config()
            .ledger
            .refused(e.w.cores()[0].config().tenancy.find("acme").unwrap()),
        1
    );
    // An extension outside every tenant counts on the server level only.
    let d = e.w.call(e.carrier, "1020");
    e.w.run_for(secs(1));
    assert_eq!(e.w.phone_ref(e.carrier).outgoing[d].finals(), vec![200]);
    // One u1 call ends: u2 may call now.
    e.w.hang_up(e.carrier, a);
    e.w.run_for(secs(1));
    assert_eq!(live(&e.w, "acme"), 1);
    let f = e.w.call(e.carrier, "1010");
    e.w.run_for(secs(1));
    assert_eq!(e.w.phone_ref(e.carrier).outgoing[f].finals(), vec![200]);
    for call in [b, d, f] {
        e.w.hang_up(e.carrier, call);
    }
    e.w.run_for(secs(40));
    assert!(all_zero(&e.w), "{}", e.w.dump());
    assert_eq!(e.w.proxy_calls(), 0);
}

/// `refuse_with = 486` answers Busy Here (Q.850 cause 17) instead.
#[test]
fn refusal_status_is_configurable() {
    let (mut e, _, _) = edge(2, "refuse_with = 486");
    e.w.call(e.carrier, "1000");
    e.w.call(e.carrier, "1001");
    e.w.run_for(secs(1));
    let c = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    assert_eq!(e.w.phone_ref(e.carrier).outgoing[c].finals(), vec![486]);
}

/// Released exactly once on every way a call ends: a final failure, the caller's CANCEL,
/// the caller's BYE, Timer C, and a BYE that never comes (max_call_seconds).
#[test]
fn every_way_a_call_ends_releases_it_once() {
    // Failure: the device is busy.
    let (mut e, devices, _) = edge(3, "");
    e.w.behave(devices[0], Behaviour::reject_after(486, ms(20)));
    let a = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    assert_eq!(e.w.phone_ref(e.carrier).outgoing[a].finals(), vec![486]);
    assert!(all_zero(&e.w));

    // CANCEL while ringing.
    e.w.behave(devices[0], Behaviour::default());
    let b = e.w.call(e.carrier, "1000");
    e.w.run_for(ms(100));
    assert_eq!(live(&e.w, "u1"), 1);
    e.w.cancel(e.carrier, b);
    e.w.run_for(secs(1));
    assert!(all_zero(&e.w), "{}", e.w.dump());

    // BYE.
    e.w.behave(devices[0], Behaviour::answer_after(ms(20)));
    let c = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    assert_eq!(live(&e.w, "u1"), 1);
    e.w.hang_up(e.carrier, c);
    e.w.run_for(secs(1));
    assert!(all_zero(&e.w));

    // A lost BYE: the dialog is forgotten after max_call_seconds, and the call released.
    let d = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    e.w.drop_next(10, "BYE", None, None, None);
    e.w.hang_up(e.carrier, d);
    e.w.run_for(secs(30));
    assert_eq!(live(&e.w, "u1"), 1, "still held within max_call_seconds");
    e.w.run_for(secs(40));
    assert!(all_zero(&e.w), "{}", e.w.dump());

    // Timer C: the device rings for ever.
    let (mut e, devices, _) = edge(4, "");
    e.w.behave(devices[0], Behaviour::default());
    let f = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(200));
    assert_eq!(e.w.phone_ref(e.carrier).outgoing[f].finals(), vec![408]);
    assert!(all_zero(&e.w));
    e.w.run_for(secs(40));
    assert_eq!(e.w.proxy_calls(), 0);
}

/// A call to a DID goes to the trunk's static address with the DID in the Request-URI and To,
/// and counts on the trunk's tenant; calls from the trunk's address are IP-authenticated and
/// count on the trunk's path only; the trunk may not register.
#[test]
fn trunks_take_their_dids_and_count_on_their_tenant() {
    let (mut e, _, pbx) = edge(5, "");
    let a = e.w.call(e.carrier, "+31201234567");
    e.w.run_for(secs(1));
    assert_eq!(
        e.w.phone_ref(e.carrier).outgoing[a].finals(),
        vec![200],
        "{}",
        e.w.dump()
    );
    let invite = String::from_utf8_lossy(&e.w.phone_ref(pbx).incoming[0].invite).into_owned();
    assert!(
        invite.starts_with("INVITE sip:+31201234567@127.0.0.1:5090 SIP/2.0"),
        "{invite}"
    );
    assert!(invite.contains("To: <sip:+31201234567@"), "{invite}");
    assert_eq!((live(&e.w, "pbx"), live(&e.w, "")), (1, 1));
    // The trunk is full (1): its next call, either way, is refused.
    let b = e.w.call(e.carrier, "+31201234000");
    let c = e.w.call(pbx, "1020");
    e.w.run_for(secs(1));
    assert_eq!(e.w.phone_ref(e.carrier).outgoing[b].finals(), vec![503]);
    assert_eq!(e.w.phone_ref(pbx).outgoing[c].finals(), vec![503]);
    e.w.hang_up(e.carrier, a);
    e.w.run_for(secs(1));
    // The PBX calls an extension of another tenant: the trunk's path only.
    let d = e.w.call(pbx, "1000");
    e.w.run_for(secs(1));
    assert_eq!(
        e.w.phone_ref(pbx).outgoing[d].finals(),
        vec![200],
        "{}",
        e.w.dump()
    );
    assert_eq!(
        (live(&e.w, "pbx"), live(&e.w, "u1"), live(&e.w, "")),
        (1, 0, 1)
    );
    e.w.hang_up(pbx, d);
    e.w.run_for(secs(1));
    assert!(all_zero(&e.w));
    // A trunk never registers.
    e.w.send_raw(
        pbx,
        b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKtrunkreg\r\n\
          Max-Forwards: 70\r\nFrom: <sip:3000@example.com>;tag=t\r\nTo: <sip:3000@example.com>\r\n\
          Call-ID: trunk-reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:3000@127.0.0.1:5090>\r\n\
          Content-Length: 0\r\n\r\n",
    );
    e.w.run_for(secs(1));
    assert_eq!(e.w.phone_ref(pbx).statuses().last(), Some(&403));
}

/// Emergency numbers are never limited, even with every level full.
#[test]
fn emergency_calls_are_never_limited() {
    let extra = "";
    let cfg = config(extra).replace(
        "numbers = \"1000-1009\"\ntenant = \"u1\"",
        "numbers = [\"1000-1009\", \"112\"]\ntenant = \"u1\"",
    );
    let mut w = World::new(&cfg, 1, 6);
    let carrier = w.add_phone("carrier", "0049301234", 5070);
    let psap = w.add_phone("psap", "112", 5080);
    w.behave(psap, Behaviour::answer_after(ms(10)));
    w.register(psap, 3600);
    let d = w.add_phone("d", "1000", 5071);
    w.behave(d, Behaviour::answer_after(ms(10)));
    w.register(d, 3600);
    w.run_for(ms(100));
    w.call(carrier, "1000");
    w.call(carrier, "1000");
    w.run_for(secs(1));
    let calls: Vec<usize> = (0..3).map(|_| w.call(carrier, "112")).collect();
    w.run_for(secs(1));
    for c in calls {
        assert_eq!(
            w.phone_ref(carrier).outgoing[c].finals(),
            vec![200],
            "{}",
            w.dump()
        );
    }
}

/// Thousands of calls on two shards with 10 % loss on every leg, crossing BYEs, cancels and
/// busy devices: when everything has timed out, every counter is back at zero and no call is
/// left (scripted proxies are known for counters that drift when BYEs are lost).
#[test]
fn counters_never_drift_under_loss_and_races() {
    for seed in 0..4 {
        let mut w = World::new(&config(""), 2, 1000 + seed);
        w.netem.loss = 0.10;
        let carrier = w.add_phone("carrier", "0049301234", 5070);
        let pbx = w.add_phone("pbx", "3000", 5090);
        let numbers = ["1000", "1001", "1010", "1011", "1020", "1021"];
        let devices: Vec<PhoneId> = numbers
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let d = w.add_phone(&format!("d{n}"), n, 5071 + i as u16);
                w.register(d, 3600);
                d
            })
            .collect();
        w.run_for(secs(5));
        let mut rng = Rng::new(seed);
        let mut placed: Vec<(PhoneId, usize)> = Vec::new();
        let mut peak = 0;
        for _ in 0..250 {
            for &d in &devices {
                let b = match rng.below(4) {
                    0 => Behaviour::answer_after(ms(rng.below(300))),
                    1 => Behaviour::reject_after(486, ms(rng.below(200))),
                    2 => Behaviour::default(),
                    _ => Behaviour::answer_after(ms(5)),
                };
                w.behave(d, b);
            }
            w.behave(pbx, Behaviour::answer_after(ms(rng.below(100))));
            let (from, to) = match rng.below(3) {
                0 => (
                    carrier,
                    numbers[rng.below(numbers.len() as u64) as usize].to_owned(),
                ),
                1 => (carrier, format!("+3120123{:04}", rng.below(10_000))),
                _ => (
                    pbx,
                    numbers[rng.below(numbers.len() as u64) as usize].to_owned(),
                ),
            };
            let call = w.call(from, &to);
            placed.push((from, call));
            w.run_for(ms(rng.below(400)));
            peak = peak.max(live(&w, ""));
            // End some calls now: a BYE (crossing the callee's answer, maybe lost) or a CANCEL.
            if let Some(&(who, c)) = placed.get(rng.below(placed.len() as u64) as usize) {
                if rng.chance(0.5) {
                    w.hang_up(who, c);
                } else {
                    w.cancel(who, c);
                }
            }
        }
        for &(who, c) in &placed {
            w.hang_up(who, c);
        }
        // Past max_call_seconds and every transaction timer.
        w.run_for(secs(400));
        assert!(
            peak >= 5,
            "seed {seed}: the limits were exercised (peak {peak})"
        );
        assert!(all_zero(&w), "seed {seed}: counters left");
        assert_eq!(w.proxy_calls(), 0, "seed {seed}");
    }
}

/// `max_outgoing_calls`: the devices of one number place at most that many calls at once
/// (403 beyond); `all_busy`: while one device is in a confirmed call, a new call gets 486 and no
/// other device rings; both free again when the call ends.
#[test]
fn outgoing_limits_and_all_busy() {
    let cfg = config("").replace(
        "[[trusted]]\ncidr = \"127.0.0.1/32\"\nname = \"carrier\"\n",
        "",
    ) + "[[extensions]]\nnumbers = \"1030-1039\"\nmax_outgoing_calls = 1\n\
           [[extensions]]\nnumbers = \"1040\"\nall_busy = true\n";
    let mut w = World::new(&cfg, 2, 8);
    let caller = w.add_phone("caller", "1030", 5070);
    let other = w.add_phone("other", "1031", 5069);
    let target = w.add_phone("target", "1020", 5071);
    w.behave(target, Behaviour::answer_after(ms(10)));
    w.register(target, 3600);
    let a = w.add_phone("a", "1040", 5072);
    let b = w.add_phone("b", "1040", 5073);
    w.behave(a, Behaviour::answer_after(ms(50)));
    for d in [a, b] {
        w.register(d, 3600);
    }
    w.run_for(ms(100));
    let first = w.call(caller, "1020");
    w.run_for(secs(1));
    let second = w.call(caller, "1020");
    let elsewhere = w.call(other, "1020");
    w.run_for(secs(1));
    assert_eq!(w.phone_ref(caller).outgoing[first].finals(), vec![200]);
    assert_eq!(
        w.phone_ref(caller).outgoing[second].finals(),
        vec![403],
        "{}",
        w.dump()
    );
    assert_eq!(
        w.phone_ref(other).outgoing[elsewhere].finals(),
        vec![200],
        "another number"
    );
    w.hang_up(caller, first);
    w.run_for(secs(1));
    let third = w.call(caller, "1020");
    w.run_for(secs(1));
    assert_eq!(
        w.phone_ref(caller).outgoing[third].finals(),
        vec![200],
        "{}",
        w.dump()
    );

    // all_busy: 1040 answers on a; the next call to it is busy, b does not ring.
    w.hang_up(other, elsewhere);
    w.hang_up(caller, third);
    w.run_for(secs(1));
    let busy_call = w.call(other, "1040");
    w.run_for(secs(1));
    assert_eq!(w.phone_ref(other).outgoing[busy_call].finals(), vec![200]);
    let invites = |w: &World| {
        w.phone_ref(a).requests_received("INVITE") + w.phone_ref(b).requests_received("INVITE")
    };
    let before = invites(&w);
    let refused = w.call(caller, "1040");
    w.run_for(secs(1));
    assert_eq!(
        w.phone_ref(caller).outgoing[refused].finals(),
        vec![486],
        "{}",
        w.dump()
    );
    assert_eq!(invites(&w), before, "no device rang");
    w.hang_up(other, busy_call);
    w.run_for(secs(1));
    let again = w.call(caller, "1040");
    w.run_for(secs(1));
    assert_eq!(w.phone_ref(caller).outgoing[again].finals(), vec![200]);
}
