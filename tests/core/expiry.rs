//! `[policy] max_call_seconds` on virtual time: a dialog whose BYE was lost is ended with a BYE
//! to each leg (`core::proxy::dialog::expiry`), as Kamailio's dialog module does on its timeout,
//! each BYE sent as that leg's peer and carrying `Reason: SIP;cause=408;text="max_call_seconds"`.

use std::net::SocketAddr;

use sipfork::core::cdr::Cause;
use sipfork::testing::phone::Behaviour;
use sipfork::testing::sim::{PhoneId, World};
use sipfork::time::{ms, secs};

/// The BYEs phone `p` received, as text.
fn byes(w: &World, p: PhoneId) -> Vec<String> {
    w.phone_ref(p)
        .inbox
        .iter()
        .filter(|(_, b)| b.starts_with(b"BYE "))
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect()
}

/// Header `name` of a message as text.
fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .split("\r\n")
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

fn tag(value: &str) -> &str {
    value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("tag="))
        .unwrap_or_else(|| panic!("no tag in {value}"))
}

fn cseq(value: &str) -> u32 {
    value.split(' ').next().unwrap().parse().unwrap()
}

/// The carrier (a trusted peer, so the call is public) calls 1000, whose device answers;
/// `max_call_seconds = 60`, CDRs on. Returns one second later.
fn answered_call(seed: u64) -> (World, PhoneId, PhoneId, usize) {
    let mut w = World::new(
        &super::policy::config("cdr = \"/var/lib/sipfork/cdr.jsonl\""),
        1,
        seed,
    );
    let carrier = w.add_phone("carrier", "0049301234", 5070);
    let device = w.add_phone("d1000", "1000", 5071);
    w.behave(device, Behaviour::answer_after(ms(50)));
    w.register(device, 3600);
    w.run_for(ms(100));
    let call = w.call(carrier, "1000");
    w.run_for(secs(1));
    (w, carrier, device, call)
}

#[test]
fn a_lost_bye_ends_with_a_bye_to_each_leg_at_max_call_seconds() {
    let (mut w, carrier, device, call) = answered_call(71);
    assert_eq!(w.phone_ref(carrier).outgoing[call].finals(), vec![200]);

    // The caller hangs up; its BYE and every retransmission are lost.
    let carrier_addr: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    w.drop_next(20, "BYE", None, Some(carrier_addr), None);
    w.hang_up(carrier, call);
    w.run_for(secs(55));
    assert!(!w.phone_ref(device).incoming[0].bye, "{}", w.dump());
    assert!(
        byes(&w, carrier).is_empty(),
        "nothing before max_call_seconds"
    );

    w.run_for(secs(6));
    let invite = String::from_utf8_lossy(&w.phone_ref(device).incoming[0].invite).into_owned();
    let (caller_from, invite_cseq) = (header(&invite, "From"), cseq(header(&invite, "CSeq")));
    let device_tag = w.phone_ref(carrier).outgoing[call].dialogs[0]
        .to_tag
        .clone();

    // To the callee, as the caller: its From, the callee's To, a higher CSeq.
    let d = &w.phone_ref(device).incoming[0];
    assert!(d.bye, "the callee gets a BYE\n{}", w.dump());
    assert_eq!(
        d.bye_reason.as_deref(),
        Some("SIP;cause=408;text=\"max_call_seconds\"")
    );
    let to_callee = byes(&w, device);
    assert_eq!(to_callee.len(), 1, "answered at once: {to_callee:?}");
    assert_eq!(header(&to_callee[0], "From"), caller_from);
    assert_eq!(tag(header(&to_callee[0], "To")), device_tag);
    assert_eq!(header(&to_callee[0], "Call-ID"), header(&invite, "Call-ID"));
    assert_eq!(
        header(&to_callee[0], "CSeq"),
        format!("{} BYE", invite_cseq + 1)
    );

    // To the caller, as the callee: the tags the other way round, at the caller's Contact.
    let to_caller = byes(&w, carrier);
    assert_eq!(to_caller.len(), 1, "{to_caller:?}");
    let bye = &to_caller[0];
    assert!(
        bye.starts_with("BYE sip:0049301234@127.0.0.1:5070"),
        "the caller's Contact: {bye}"
    );
    assert_eq!(header(bye, "To"), caller_from);
    assert_eq!(tag(header(bye, "From")), device_tag);
    assert_eq!(
        header(bye, "Reason"),
        "SIP;cause=408;text=\"max_call_seconds\""
    );
    assert_eq!(
        header(bye, "CSeq"),
        "1 BYE",
        "the callee sent no request yet"
    );

    // The BYE transactions end (answered), the call is freed, every count is back to zero.
    w.run_for(secs(40));
    assert_eq!(w.proxy_calls(), 0, "{}", w.dump());
    let cfg = w.cores()[0].config();
    assert_eq!(cfg.ledger.live(0), 0);
    let cdr = w.cdrs.last().expect("a CDR");
    assert_eq!(cdr.cause(), sipfork::core::cdr::Cause::MaxDuration);
}

#[test]
fn a_call_ended_by_its_bye_gets_no_bye_from_the_proxy() {
    let (mut w, carrier, device, call) = answered_call(72);
    w.hang_up(carrier, call);
    w.run_for(secs(120));
    assert_eq!(byes(&w, device).len(), 1, "the caller's BYE only");
    assert_eq!(
        w.phone_ref(device).incoming[0].bye_reason,
        None,
        "not one of ours"
    );
    assert!(byes(&w, carrier).is_empty());
    assert_eq!(w.proxy_calls(), 0);
}

/// RFC 4028 session timers: like [`answered_call`], but with `max_call_seconds = max` and the
/// device answering INVITEs and UPDATEs with the rows `answer_extra` (a Session-Expires).
fn answered_with(seed: u64, max: u32, answer_extra: &str) -> (World, PhoneId, PhoneId, usize) {
    let config = super::policy::config("cdr = \"/var/lib/sipfork/cdr.jsonl\"").replace(
        "max_call_seconds = 60",
        &format!("max_call_seconds = {max}"),
    );
    let mut w = World::new(&config, 1, seed);
    let carrier = w.add_phone("carrier", "0049301234", 5070);
    let device = w.add_phone("d1000", "1000", 5071);
    w.behave(device, Behaviour::answer_after(ms(50)));
    w.phone(device).answer_extra = answer_extra.to_owned();
    w.register(device, 3600);
    w.run_for(ms(100));
    let call = w.call(carrier, "1000");
    w.run_for(secs(1));
    assert_eq!(w.phone_ref(carrier).outgoing[call].finals(), vec![200]);
    (w, carrier, device, call)
}

/// Both legs got exactly one BYE from the proxy, with `reason`; the call is freed, counts are
/// back to zero and the CDR ends with `cause`.
fn ended_both_ways(w: &mut World, carrier: PhoneId, device: PhoneId, reason: &str, cause: Cause) {
    for p in [carrier, device] {
        let b = byes(w, p);
        assert_eq!(b.len(), 1, "{b:?}\n{}", w.dump());
        assert_eq!(header(&b[0], "Reason"), reason);
    }
    w.run_for(secs(40));
    assert_eq!(w.proxy_calls(), 0, "{}", w.dump());
    assert_eq!(w.cores()[0].config().ledger.live(0), 0);
    assert_eq!(w.cdrs.last().expect("a CDR").cause(), cause);
}

/// Neither leg got a BYE from the proxy yet.
fn no_byes(w: &World, carrier: PhoneId, device: PhoneId) {
    assert!(
        byes(w, carrier).is_empty() && byes(w, device).is_empty(),
        "{}",
        w.dump()
    );
}

/// Nothing from the proxy for `quiet` more seconds, then (within 3 s) a BYE each way.
fn ends_after(
    w: &mut World,
    carrier: PhoneId,
    device: PhoneId,
    quiet: u64,
    reason: &str,
    cause: Cause,
) {
    w.run_for(secs(quiet));
    no_byes(w, carrier, device);
    w.run_for(secs(3));
    ended_both_ways(w, carrier, device, reason, cause);
}

const SESSION_EXPIRED: &str = "SIP;cause=408;text=\"session expired\"";
const MAX_CALL: &str = "SIP;cause=408;text=\"max_call_seconds\"";

#[test]
fn refreshes_keep_a_session_alive_and_a_missing_one_ends_it_at_its_interval() {
    let (mut w, carrier, device, call) =
        answered_with(81, 600, "Session-Expires: 120;refresher=uac\r\n");
    // Refreshed every 60 s, the call outlives its 120 s interval twice over.
    for i in 0..4 {
        w.run_for(secs(60));
        w.update(
            carrier,
            call,
            10 + i,
            "Session-Expires: 120;refresher=uac\r\n",
        );
    }
    w.run_for(secs(60));
    no_byes(&w, carrier, device);
    assert_eq!(w.phone_ref(device).requests_received("UPDATE"), 4);
    // The last refresh was at about 241 s: the session expires at about 361 s, not before.
    ends_after(
        &mut w,
        carrier,
        device,
        59,
        SESSION_EXPIRED,
        Cause::SessionExpired,
    );
}

#[test]
fn a_session_never_refreshed_ends_at_its_interval_with_a_bye_each_way() {
    // Compact form, an interval below the 90 s floor of Min-SE is not honoured below it.
    let (mut w, carrier, device, _) = answered_with(82, 600, "x: 100\r\n");
    ends_after(
        &mut w,
        carrier,
        device,
        98,
        SESSION_EXPIRED,
        Cause::SessionExpired,
    );

    let (mut w, carrier, device, _) = answered_with(83, 600, "Session-Expires: 30\r\n");
    // Never below Min-SE (90 s).
    ends_after(
        &mut w,
        carrier,
        device,
        88,
        SESSION_EXPIRED,
        Cause::SessionExpired,
    );
}

#[test]
fn a_refresh_never_extends_a_call_past_max_call_seconds() {
    let (mut w, carrier, device, call) = answered_with(84, 150, "Session-Expires: 120\r\n");
    w.run_for(secs(100));
    w.update(carrier, call, 10, "Session-Expires: 120\r\n");
    ends_after(&mut w, carrier, device, 48, MAX_CALL, Cause::MaxDuration);
}

#[test]
fn without_session_expires_only_max_call_seconds_applies() {
    let (mut w, carrier, device, call) = answered_with(85, 600, "");
    w.update(carrier, call, 10, "");
    w.run_for(secs(597));
    no_byes(&w, carrier, device);
    assert_eq!(w.proxy_calls(), 1);
    w.run_for(secs(3));
    ended_both_ways(&mut w, carrier, device, MAX_CALL, Cause::MaxDuration);
}
