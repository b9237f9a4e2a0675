//! Follow-me (`[[followme]]`) on virtual time: stage timing, a stage that fails moves on at once,
//! the forwarding tenant's permission for external targets, internal extensions in the middle of
//! a sequence ring their devices only, voicemail last and only where allowed; on one and two
//! shards (another extension's devices are reached through a spiral to sipfork itself).

use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World};
use sipfork::time::{ms, secs};

pub(crate) const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:5060"
domain = "example.com"
[registrar]
min_expires = 10
[auth]
mode = "none"
[[tenants]]
name = "fwd"
forward_external = true
voicemail = true
[[tenants]]
name = "nofwd"
forward_external = false
voicemail = false
[[extensions]]
numbers = "1000-1099"
tenant = "fwd"
[[extensions]]
numbers = "1100-1199"
tenant = "nofwd"
[[routes]]
prefix = "00"
next_hop = "sip:127.0.0.1:5099"
[[followme]]
extension = "1000"
voicemail = "sip:vm@127.0.0.1:5098"
stages = [
  { targets = ["self"], ring = 15 },
  { targets = ["1001", "0044201234567"], ring = 20 },
]
[[followme]]
extension = "1001"
voicemail = "sip:vm1001@127.0.0.1:5097"
stages = [{ targets = ["self"], ring = 5 }]
[[followme]]
extension = "1100"
voicemail = "sip:vm@127.0.0.1:5098"
stages = [
  { targets = ["self"], ring = 5 },
  { targets = ["0044201234567"], ring = 5 },
]
"#;

struct Setup {
    w: World,
    caller: PhoneId,
    own: PhoneId,
    other: PhoneId,
    external: PhoneId,
    voicemail: PhoneId,
    other_voicemail: PhoneId,
}

fn setup(shards: u16, seed: u64) -> Setup {
    let mut w = World::new(CONFIG, shards, seed);
    let caller = w.add_phone("caller", "0049301234", 5070);
    let own = w.add_phone("own", "1000", 5071);
    let other = w.add_phone("other", "1001", 5072);
    let nofwd = w.add_phone("nofwd", "1100", 5073);
    for p in [own, other, nofwd] {
        w.register(p, 3600);
    }
    let external = w.add_phone("external", "0044201234567", 5099);
    let voicemail = w.add_phone("vm", "vm", 5098);
    let other_voicemail = w.add_phone("vm1001", "vm1001", 5097);
    w.run_for(ms(100));
    Setup {
        w,
        caller,
        own,
        other,
        external,
        voicemail,
        other_voicemail,
    }
}

fn invites(w: &World, p: PhoneId) -> usize {
    w.phone_ref(p).requests_received("INVITE")
}

#[test]
fn stages_ring_in_turn_and_voicemail_answers_last() {
    for shards in [1, 2] {
        let mut s = setup(shards, 10 + u64::from(shards));
        s.w.behave(s.voicemail, Behaviour::answer_after(ms(100)));
        let call = s.w.call(s.caller, "1000");
        s.w.run_for(secs(14));
        assert_eq!(invites(&s.w, s.own), 1, "stage 1 rings the own device");
        assert_eq!(invites(&s.w, s.other) + invites(&s.w, s.external), 0);
        s.w.run_for(secs(2));
        assert!(
            s.w.phone_ref(s.own).incoming[0].cancelled,
            "stage 1 ends\n{}",
            s.w.dump()
        );
        assert_eq!(invites(&s.w, s.other), 1, "{}", s.w.dump());
        assert_eq!(invites(&s.w, s.external), 1, "forward_external allows it");
        s.w.run_for(secs(19));
        assert_eq!(
            invites(&s.w, s.voicemail),
            0,
            "not before stage 2 rang 20 s"
        );
        s.w.run_for(secs(3));
        assert_eq!(invites(&s.w, s.voicemail), 1, "{}", s.w.dump());
        assert_eq!(
            invites(&s.w, s.other_voicemail),
            0,
            "1001 mid-sequence: devices only, never its own voicemail"
        );
        s.w.run_for(secs(1));
        assert_eq!(s.w.phone_ref(s.caller).outgoing[call].finals(), vec![200]);
        s.w.hang_up(s.caller, call);
        s.w.run_for(secs(40));
        assert_eq!(s.w.proxy_calls(), 0, "{}", s.w.dump());
        let cfg = s.w.cores()[0].config();
        assert_eq!(cfg.ledger.live(0), 0);
    }
}

#[test]
fn a_stage_whose_branches_all_fail_moves_on_at_once_and_an_answer_ends_it() {
    let mut s = setup(2, 21);
    s.w.behave(s.own, Behaviour::reject_after(486, ms(200)));
    s.w.behave(s.other, Behaviour::answer_after(ms(300)));
    let call = s.w.call(s.caller, "1000");
    s.w.run_for(secs(1));
    assert_eq!(invites(&s.w, s.other), 1, "stage 2 at once\n{}", s.w.dump());
    s.w.run_for(secs(1));
    assert_eq!(s.w.phone_ref(s.caller).outgoing[call].finals(), vec![200]);
    assert!(
        s.w.phone_ref(s.external).incoming[0].cancelled,
        "the rest of the stage is cancelled"
    );
    assert_eq!(invites(&s.w, s.voicemail), 0, "{}", s.w.dump());
    s.w.hang_up(s.caller, call);
    s.w.run_for(secs(2));
    assert!(s.w.phone_ref(s.other).incoming[0].bye, "{}", s.w.dump());
    s.w.run_for(secs(40));
    assert_eq!(s.w.proxy_calls(), 0);
}

#[test]
fn external_targets_and_voicemail_need_the_tenants_permission() {
    let mut s = setup(1, 31);
    let call = s.w.call(s.caller, "1100");
    s.w.run_for(secs(30));
    assert_eq!(
        invites(&s.w, s.external),
        0,
        "forward_external is off for nofwd"
    );
    assert_eq!(invites(&s.w, s.voicemail), 0, "voicemail is off for nofwd");
    assert_eq!(
        s.w.phone_ref(s.caller).outgoing[call].finals(),
        vec![480],
        "after the last stage\n{}",
        s.w.dump()
    );
    assert!(
        s.w.phone_ref(s.own).incoming.is_empty(),
        "1000 is not part of 1100's sequence"
    );
    s.w.run_for(secs(40));
    assert_eq!(s.w.proxy_calls(), 0);
    assert_eq!(s.w.unreachable_sends().len(), 0);
}
