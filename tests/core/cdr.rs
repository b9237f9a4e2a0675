//! CDRs of public calls (`[policy] cdr`, `core::cdr`) on virtual time: every way a call ends
//! yields exactly one record, with the final status and cause of that ending, the times of
//! start, answer and end, the tenancy path and the public side; a configuration without `cdr`
//! yields none.
//!
//! The carrier is a `[[trusted]]` peer (outside the platform) at 127.0.0.1:5070, like in
//! `policy.rs`; the devices answer after 50 ms.

use sipfork::core::cdr::{Cause, Cdr, PublicSide};
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World};
use sipfork::time::{ms, secs};

/// `policy.rs`'s edge (acme > u1 with 1000-1009, the PBX trunk 3000 with its DIDs, the
/// trusted carrier), with or without `[policy] cdr`.
fn config(cdr: bool) -> String {
    super::policy::config(if cdr {
        "cdr = \"/var/lib/sipfork/cdr.jsonl\""
    } else {
        ""
    })
}

struct Edge {
    w: World,
    carrier: PhoneId,
    device: PhoneId,
}

fn edge(seed: u64, cdr: bool) -> Edge {
    let mut w = World::new(&config(cdr), 1, seed);
    let carrier = w.add_phone("carrier", "0049301234", 5070);
    let device = w.add_phone("d1000", "1000", 5071);
    w.behave(device, Behaviour::answer_after(ms(50)));
    w.register(device, 3600);
    let pbx = w.add_phone("pbx", "3000", 5090);
    w.behave(pbx, Behaviour::answer_after(ms(50)));
    w.run_for(ms(100));
    Edge { w, carrier, device }
}

impl Edge {
    /// Has the carrier's call `call` a CDR yet?
    fn has_cdr(&self, call: usize) -> bool {
        let id = &self.w.phone_ref(self.carrier).outgoing[call].call_id;
        self.w.cdrs.iter().any(|c| c.call_id() == id)
    }

    /// The one CDR of the carrier's call `call` (panics when there is none or more than one).
    fn cdr_of(&self, call: usize) -> &Cdr {
        let id = &self.w.phone_ref(self.carrier).outgoing[call].call_id;
        let mut found = self.w.cdrs.iter().filter(|c| c.call_id() == id);
        let cdr = found
            .next()
            .unwrap_or_else(|| panic!("no CDR for {id}: {:?}", self.w.cdrs));
        assert!(
            found.next().is_none(),
            "two CDRs for {id}: {:?}",
            self.w.cdrs
        );
        cdr
    }
}

fn tenants(c: &Cdr) -> Vec<&str> {
    c.tenants().collect()
}

/// Failure, CANCEL, BYE from either side, a lost BYE (max_call_seconds), Timer C and a refusal
/// by a limit: one record each, with that ending's status and cause.
#[test]
fn each_way_a_public_call_ends_yields_exactly_one_cdr() {
    let mut e = edge(1, true);

    // Rejected by the device.
    e.w.behave(e.device, Behaviour::reject_after(486, ms(20)));
    let failed = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    let c = e.cdr_of(failed);
    assert_eq!((c.status(), c.cause()), (486, Cause::Failed));
    assert_eq!(c.side(), PublicSide::Caller);
    assert_eq!(tenants(c), ["u1", "acme"]);
    let (start, answer, end) = c.times_us();
    assert_eq!(answer, None);
    assert!(end > start);

    // Cancelled while ringing.
    e.w.behave(e.device, Behaviour::default());
    let cancelled = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(2));
    e.w.cancel(e.carrier, cancelled);
    e.w.run_for(secs(1));
    let c = e.cdr_of(cancelled);
    assert_eq!((c.status(), c.cause()), (487, Cause::Cancelled));
    let (start, answer, end) = c.times_us();
    assert_eq!(answer, None);
    assert!((2_000_000..2_100_000).contains(&(end - start)), "{c:?}");

    // Answered, the caller hangs up after 5 s.
    e.w.behave(e.device, Behaviour::answer_after(ms(50)));
    let by_caller = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    assert!(!e.has_cdr(by_caller), "no CDR while the call lasts");
    e.w.run_for(secs(4));
    e.w.hang_up(e.carrier, by_caller);
    e.w.run_for(secs(1));
    let c = e.cdr_of(by_caller);
    assert_eq!((c.status(), c.cause()), (200, Cause::CallerBye));
    let (start, answer, end) = c.times_us();
    let answer = answer.expect("answered");
    assert!((40_000..100_000).contains(&(answer - start)), "{c:?}");
    assert!((4_900_000..5_000_000).contains(&(end - answer)), "{c:?}");

    // Answered, the callee hangs up.
    let by_callee = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    let incoming = e.w.phone_ref(e.device).incoming.len() - 1;
    e.w.hang_up_incoming(e.device, incoming);
    e.w.run_for(secs(1));
    let c = e.cdr_of(by_callee);
    assert_eq!(
        (c.status(), c.cause()),
        (200, Cause::CalleeBye),
        "{}",
        e.w.dump()
    );

    // Answered, the BYE is lost: max_call_seconds (60) ends it.
    let lost = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    // Every retransmission too (the caller gives up after 64*T1 = 32 s).
    e.w.drop_next(20, "BYE", None, None, None);
    e.w.hang_up(e.carrier, lost);
    e.w.run_for(secs(30));
    assert!(!e.has_cdr(lost), "not ended before max_call_seconds");
    e.w.run_for(secs(40));
    let c = e.cdr_of(lost);
    assert_eq!((c.status(), c.cause()), (200, Cause::MaxDuration));
    let (_, answer, end) = c.times_us();
    let lasted = end - answer.expect("answered");
    assert!((59_000_000..61_000_000).contains(&lasted), "{c:?}");

    // Refused by the provider's limit (2): the third call at once.
    let a = e.w.call(e.carrier, "1000");
    let b = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    let refused = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    assert_eq!(
        e.w.phone_ref(e.carrier).outgoing[refused].finals(),
        vec![503]
    );
    let c = e.cdr_of(refused);
    assert_eq!((c.status(), c.cause()), (503, Cause::Refused));
    assert_eq!(tenants(c), ["u1", "acme"]);
    for call in [a, b] {
        e.w.hang_up(e.carrier, call);
    }
    e.w.run_for(secs(1));
    e.cdr_of(a);
    e.cdr_of(b);

    // Timer C (181 s): the device rings for ever; 408.
    e.w.behave(e.device, Behaviour::default());
    let timer_c = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(200));
    let c = e.cdr_of(timer_c);
    assert_eq!((c.status(), c.cause()), (408, Cause::Failed));

    // Nothing more comes later, and every call placed has its one record.
    e.w.run_for(secs(400));
    assert_eq!(e.w.proxy_calls(), 0);
    let placed = e.w.phone_ref(e.carrier).outgoing.len();
    assert_eq!(e.w.cdrs.len(), placed, "{:?}", e.w.cdrs);
    for call in 0..placed {
        e.cdr_of(call);
    }
}

/// A call to a DID reaches the trunk: both parties face the public side (carrier and trunk);
/// the record counts on the trunk's tenant and keeps the DID as dialled.
#[test]
fn a_trunk_call_names_the_trunks_tenant() {
    let mut e = edge(2, true);
    let call = e.w.call(e.carrier, "+31201234567");
    e.w.run_for(secs(1));
    e.w.hang_up(e.carrier, call);
    e.w.run_for(secs(1));
    let c = e.cdr_of(call);
    assert_eq!((c.status(), c.cause()), (200, Cause::CallerBye));
    assert_eq!(c.side(), PublicSide::Both);
    assert_eq!(tenants(c), ["pbx"]);
    let line: serde_json::Value = serde_json::from_str(&c.to_json_line()).unwrap();
    assert!(
        line["callee"]
            .as_str()
            .unwrap()
            .starts_with("sip:+31201234567@"),
        "{line}"
    );
    assert_eq!(line["public_side"], "both");
    assert_eq!(line["cause"], "caller_bye");
    assert_eq!(line["status"], 200);
    assert_eq!(line["tenants"], serde_json::json!(["pbx"]));
    assert!(line["answer"].as_f64().unwrap() >= line["start"].as_f64().unwrap());
    assert!(line["end"].as_f64().unwrap() >= line["answer"].as_f64().unwrap());
}

/// Without `[policy] cdr` the core keeps no records at all.
#[test]
fn no_cdrs_without_the_setting() {
    let mut e = edge(3, false);
    let call = e.w.call(e.carrier, "1000");
    e.w.run_for(secs(1));
    e.w.hang_up(e.carrier, call);
    e.w.run_for(secs(1));
    assert_eq!(e.w.phone_ref(e.carrier).outgoing[call].finals(), vec![200]);
    assert!(e.w.cdrs.is_empty());
}

/// Follow-me from one extension to another whose stage 2 reaches an external number: the call
/// becomes public when that stage starts (`public_side: callee`, on the forwarding extension's
/// tenant), and its CDR starts then.
#[test]
fn follow_me_to_an_external_number_yields_a_callee_side_cdr() {
    let cfg = format!(
        "{}\n[policy]\ncdr = \"/var/lib/sipfork/cdr.jsonl\"\n",
        super::followme::CONFIG
    );
    let mut w = World::new(&cfg, 1, 70);
    let own = w.add_phone("own", "1000", 5071);
    let caller = w.add_phone("caller", "1001", 5072);
    for p in [own, caller] {
        w.register(p, 3600);
    }
    let external = w.add_phone("external", "0044201234567", 5099);
    w.behave(external, Behaviour::answer_after(ms(100)));
    w.run_for(ms(100));
    let placed = w.now().as_micros();
    let call = w.call(caller, "1000");
    w.run_for(secs(14));
    assert!(w.cdrs.is_empty(), "internal while stage 1 rings");
    w.run_for(secs(3));
    assert_eq!(
        w.phone_ref(caller).outgoing[call].finals(),
        vec![200],
        "{}",
        w.dump()
    );
    w.hang_up(caller, call);
    w.run_for(secs(1));
    assert_eq!(w.cdrs.len(), 1, "{:?}", w.cdrs);
    let c = &w.cdrs[0];
    assert_eq!((c.status(), c.cause()), (200, Cause::CallerBye));
    assert_eq!(c.side(), PublicSide::Callee);
    assert_eq!(tenants(c), ["fwd"]);
    let (start, answer, _) = c.times_us();
    let after_invite = start - 1_800_000_000_000_000 - placed;
    assert!(
        (15_000_000..15_200_000).contains(&after_invite),
        "starts with stage 2: {c:?}"
    );
    assert!(answer.is_some());
}
