//! Dialog-aware feature codes (`docs/features.md`) on virtual time, at the carrier edge of the
//! security tests (digest on): move (`*75`, RFC 3891 Replaces) with a far end that honours it,
//! one that keeps the old dialog, one that refuses; no call to move; another extension trying;
//! join (`*74`, RFC 3911) routed to whichever party supports it; a placed call moved; and the
//! egress rule: a feature INVITE reaches nobody but the recorded peer of the call.
//!
//! Extension 1000 has device A (127.0.0.11) and device B (127.0.0.12); 1001 has device C
//! (127.0.0.13). The far end of received calls is the trusted PBX (127.0.0.60), which calls 1000.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use sipfork::core::metrics::MetricSink;
use sipfork::core::Core;
use sipfork::sip::{self, HeaderName};
use sipfork::time::secs;

use super::security::{
    addr, authenticated_invite, destinations, device_answer, dump, request, Edge, Reply, EDGE,
};

const A: &str = "127.0.0.11:5060";
const B: &str = "127.0.0.12:5060";
const C: &str = "127.0.0.13:5060";
const PBX: &str = "127.0.0.60:5060";
const TRUNK: &str = "127.0.0.50:5090";
const THIRD_PARTY: &str = "127.0.0.99:5060";

fn edge() -> Edge {
    let mut e = Edge::new(
        &format!("{EDGE}\n[features]\nmove = \"*75\"\njoin = \"*74\"\n"),
        1,
    );
    e.register_ok(A, "1000", &format!("sip:1000@{A}"));
    e.register_ok(B, "1000", &format!("sip:1000@{B}"));
    e.register_ok(C, "1001", &format!("sip:1001@{C}"));
    e
}

/// Without `[features]` no line is recorded (a line costs two dozen allocations per answered
/// call): the answered call is relayed as ever, and the overview's `in_call` stays empty.
#[test]
fn without_feature_codes_no_line_is_kept() {
    let mut e = Edge::new(EDGE, 1);
    e.register_ok(A, "1000", &format!("sip:1000@{A}"));
    let out = e.send(PBX, &pbx_invite("plain", ""));
    let fwd = requests_to(&out, A, "INVITE");
    assert_eq!(fwd.len(), 1, "{}", dump(&out));
    let m = sip::parse(&fwd[0]).unwrap();
    let ok = answer_with(&m, "a-tag", &format!("sip:1000@{A}"), "");
    let out = e.send(A, &ok);
    assert!(
        out.iter()
            .any(|(to, b)| *to == addr(PBX) && b.starts_with(b"SIP/2.0 200")),
        "{}",
        dump(&out)
    );
    assert!(e.cores[0].devices_in_call(b"1000").is_empty());
}

/// The requests in `out` that went to `to`, parsed.
fn requests_to(out: &[(SocketAddr, Vec<u8>)], to: &str, method: &str) -> Vec<Vec<u8>> {
    out.iter()
        .filter(|(d, b)| *d == addr(to) && b.starts_with(method.as_bytes()))
        .map(|(_, b)| b.clone())
        .collect()
}

fn value(bytes: &[u8], h: HeaderName) -> Option<String> {
    let m = sip::parse(bytes).unwrap();
    m.first_value(h)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn other_value(bytes: &[u8], name: &str) -> Option<String> {
    let m = sip::parse(bytes).unwrap();
    let v = m
        .rows(HeaderName::Other)
        .find(|h| h.raw_name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    v
}

fn feature_count(core: &Core, reason: &str) -> u64 {
    let mut sink = MetricSink::default();
    core.export_metrics(&mut sink);
    sink.samples
        .iter()
        .filter(|s| s.name == "sipfork_feature_requests_total")
        .filter(|s| s.labels.iter().any(|(k, v)| *k == "reason" && v == reason))
        .map(|s| s.value)
        .sum()
}

/// A plain answer to `req` (no rows added).
fn respond(req: &sip::Message<'_>, status: u16, reason: &str, to_tag: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    sip::build::response(
        req,
        &sip::build::Reply {
            status,
            reason,
            fix: sip::build::ViaFix::default(),
            to_tag,
            extra: b"",
            body: None,
        },
        &mut out,
    );
    out
}

/// The PBX's INVITE to 1000 with Call-ID `call_id` and `rows` added.
fn pbx_invite(call_id: &str, rows: &str) -> Vec<u8> {
    request(
        "INVITE",
        "sip:1000@example.com",
        PBX,
        "3000",
        "",
        call_id,
        rows,
    )
}

/// The PBX ends its dialog with A (Call-ID `live`) through the route it got, `rr`.
fn pbx_ends_a(e: &mut Edge, rr: &str) -> Vec<(SocketAddr, Vec<u8>)> {
    let bye = request(
        "BYE",
        &format!("sip:1000@{A}"),
        PBX,
        "3000",
        "a-tag",
        "live",
        &format!("Route: {rr}\r\n"),
    );
    e.send(PBX, &bye)
}

/// The PBX calls 1000 (`pbx_rows` added to its INVITE), device A answers with `a_rows` added;
/// returns the Record-Route the PBX got (its route set toward A).
fn answered_by_a(e: &mut Edge, pbx_rows: &str, a_rows: &str) -> String {
    let out = e.send(PBX, &pbx_invite("live", pbx_rows));
    let fwd = requests_to(&out, A, "INVITE");
    assert_eq!(fwd.len(), 1, "{}", dump(&out));
    let m = sip::parse(&fwd[0]).unwrap();
    let ok = answer_with(&m, "a-tag", &format!("sip:1000@{A}"), a_rows);
    let out = e.send(A, &ok);
    let (_, up) = out
        .iter()
        .find(|(to, _)| *to == addr(PBX))
        .expect("2xx upstream");
    let rr = value(up, HeaderName::RecordRoute).expect("record-routed");
    assert_eq!(e.cores[0].devices_in_call(b"1000").len(), 1);
    assert_eq!(e.cores[0].devices_in_call(b"1000")[0].0, addr(A));
    rr
}

/// A device's 200 to `invite` (tag `to_tag`, Contact `contact`) with `rows` added.
fn answer_with(invite: &sip::Message<'_>, to_tag: &str, contact: &str, rows: &str) -> Vec<u8> {
    String::from_utf8(device_answer(invite, 200, to_tag, contact))
        .unwrap()
        .replace(
            "Content-Length: 0\r\n",
            &format!("{rows}Content-Length: 0\r\n"),
        )
        .into_bytes()
}

/// Device B of 1000 dials `code`, authenticated as 1000; returns what the core sent.
fn dial(e: &mut Edge, device: &str, user: &str, code: &str) -> Vec<(SocketAddr, Vec<u8>)> {
    authenticated_invite(
        e,
        device,
        user,
        user,
        &format!("sip:{code}@example.com"),
        "",
    )
}

/// The one INVITE a feature code produced, which must go to `to` and nowhere else but the
/// dialling device (its 100 Trying).
fn feature_invite(out: &[(SocketAddr, Vec<u8>)], device: &str, to: &str) -> Vec<u8> {
    let allowed: BTreeSet<_> = [addr(device), addr(to)].into();
    assert!(destinations(out).is_subset(&allowed), "{}", dump(out));
    let invites = requests_to(out, to, "INVITE");
    assert_eq!(invites.len(), 1, "{}", dump(out));
    invites[0].clone()
}

/// `*75` from B: the PBX (which supports Replaces) gets an INVITE naming its dialog with A; it
/// answers, B gets the 2xx, the PBX hangs up A itself; B is now the device in the call and the
/// proxy sends no BYE of its own.
#[test]
fn move_with_a_far_end_that_honours_replaces() {
    let mut e = edge();
    let rr = answered_by_a(&mut e, "Supported: replaces, timer\r\n", "");
    let out = dial(&mut e, B, "1000", "*75");
    let inv = feature_invite(&out, B, PBX);
    let m = sip::parse(&inv).unwrap();
    assert_eq!(
        m.request_uri().unwrap().unwrap().raw(),
        format!("sip:3000@{PBX}").as_bytes()
    );
    assert_eq!(
        value(&inv, HeaderName::Replaces).as_deref(),
        Some("live;to-tag=att;from-tag=a-tag")
    );
    assert_eq!(
        value(&inv, HeaderName::Require).as_deref(),
        Some("replaces")
    );
    assert!(
        value(&inv, HeaderName::RecordRoute).is_some(),
        "record-routed"
    );
    assert_eq!(feature_count(&e.cores[0], "move_forwarded"), 1);

    // The PBX accepts: B gets the 2xx and is the device in the call.
    let ok = device_answer(&m, 200, "pbx-new", &format!("sip:3000@{PBX}"));
    let out = e.send(PBX, &ok);
    let to_b: Vec<_> = out.iter().filter(|(to, _)| *to == addr(B)).collect();
    assert_eq!(to_b.len(), 1, "{}", dump(&out));
    assert_eq!(Reply::of(&to_b[0].1).status, 200);

    // The PBX ends the replaced dialog with A through the old route.
    let out = pbx_ends_a(&mut e, &rr);
    assert_eq!(requests_to(&out, A, "BYE").len(), 1, "{}", dump(&out));
    let in_call = e.cores[0].devices_in_call(b"1000");
    assert_eq!(in_call.len(), 1);
    assert_eq!(in_call[0].0, addr(B));
    // No BYE of the proxy's own later on (the PBX's BYE is retransmitted: A never answers it).
    let out = e.advance(secs(10));
    let ours = requests_to(&out, A, "BYE")
        .into_iter()
        .filter(|b| value(b, HeaderName::Reason).is_some());
    assert_eq!(ours.count(), 0, "{}", dump(&out));
    assert_eq!(feature_count(&e.cores[0], "proxy_bye"), 0);
}

/// The far end accepts the new INVITE but keeps its dialog with A: after a few seconds the proxy
/// sends A a BYE in the far end's name, with a Reason, and A is no longer in a call.
#[test]
fn move_where_the_far_end_keeps_the_old_dialog() {
    let mut e = edge();
    answered_by_a(&mut e, "", "");
    let out = dial(&mut e, B, "1000", "*75");
    let inv = feature_invite(&out, B, PBX);
    // No Supported: replaces from the PBX: no Require either.
    assert_eq!(value(&inv, HeaderName::Require), None);
    let m = sip::parse(&inv).unwrap();
    let out = e.send(
        PBX,
        &device_answer(&m, 200, "pbx-new", &format!("sip:3000@{PBX}")),
    );
    assert!(requests_to(&out, A, "BYE").is_empty());
    let out = e.advance(secs(2));
    assert!(requests_to(&out, A, "BYE").is_empty(), "not yet");
    let out = e.advance(secs(3));
    let byes = proxy_bye_to_a(&out, "live", "att", "a-tag");
    let bye = sip::parse(&byes[0]).unwrap();
    assert_eq!(feature_count(&e.cores[0], "proxy_bye"), 1);
    let in_call = e.cores[0].devices_in_call(b"1000");
    assert_eq!(in_call.iter().map(|d| d.0).collect::<Vec<_>>(), [addr(B)]);
    // A answers; its BYE is over, nothing is retransmitted.
    let ok = sipfork::testing::sim::first_line(&byes[0]);
    assert!(ok.starts_with("BYE sip:1000@127.0.0.11"), "{ok}");
    let out = e.send(A, &respond(&bye, 200, "OK", None));
    assert!(out.is_empty(), "{}", dump(&out));
    let out = e.advance(secs(40));
    assert!(requests_to(&out, A, "BYE").is_empty(), "{}", dump(&out));
}

/// The proxy's BYE to A in `out` (and its retransmissions, Timer E): dialog `call_id` with the
/// far end's tag `from_tag` and A's `to_tag`, with the move's Reason.
fn proxy_bye_to_a(
    out: &[(SocketAddr, Vec<u8>)],
    call_id: &str,
    from_tag: &str,
    to_tag: &str,
) -> Vec<Vec<u8>> {
    let byes = requests_to(out, A, "BYE");
    assert!(!byes.is_empty(), "{}", dump(out));
    assert!(byes.iter().all(|b| *b == byes[0]), "{}", dump(out));
    let bye = sip::parse(&byes[0]).unwrap();
    assert_eq!(bye.call_id().unwrap(), call_id.as_bytes());
    assert_eq!(bye.from().unwrap().tag, Some(from_tag.as_bytes()));
    assert_eq!(bye.to().unwrap().tag, Some(to_tag.as_bytes()));
    assert_eq!(
        value(&byes[0], HeaderName::Reason).as_deref(),
        Some("SIP;cause=200;text=\"Call moved\"")
    );
    byes
}

/// A moved call is still a call of 1000 for call policy: with `all_busy`, a new call to 1000
/// gets 486 after the move, as it did before.
#[test]
fn a_moved_call_still_counts_for_policy() {
    let config = format!("{EDGE}\n[features]\nmove = \"*75\"\n").replace(
        "password = \"pw-{number}\"\n",
        "password = \"pw-{number}\"\nall_busy = true\n",
    );
    let mut e = Edge::new(&config, 1);
    e.register_ok(A, "1000", &format!("sip:1000@{A}"));
    e.register_ok(B, "1000", &format!("sip:1000@{B}"));
    let rr = answered_by_a(&mut e, "Supported: replaces\r\n", "");
    let busy = |e: &mut Edge, call_id: &str| {
        let out = e.send(PBX, &pbx_invite(call_id, ""));
        out.iter()
            .filter(|(to, _)| *to == addr(PBX))
            .filter_map(|(_, b)| sip::parse(b).ok()?.status())
            .any(|s| s == 486)
    };
    assert!(busy(&mut e, "second-1"), "all_busy before the move");
    let out = dial(&mut e, B, "1000", "*75");
    let inv = feature_invite(&out, B, PBX);
    let m = sip::parse(&inv).unwrap();
    e.send(
        PBX,
        &device_answer(&m, 200, "pbx-new", &format!("sip:3000@{PBX}")),
    );
    pbx_ends_a(&mut e, &rr);
    assert!(busy(&mut e, "second-2"), "all_busy after the move");
}

/// The far end refuses Replaces: B gets its answer unchanged, A stays in the call.
#[test]
fn move_refused_by_the_far_end() {
    let mut e = edge();
    answered_by_a(&mut e, "Supported: replaces\r\n", "");
    let out = dial(&mut e, B, "1000", "*75");
    let inv = feature_invite(&out, B, PBX);
    let m = sip::parse(&inv).unwrap();
    let refusal = respond(&m, 481, "Call Does Not Exist Here", Some(b"pbx-no"));
    let out = e.send(PBX, &refusal);
    let to_b: Vec<_> = out.iter().filter(|(to, _)| *to == addr(B)).collect();
    assert_eq!(to_b.len(), 1, "{}", dump(&out));
    let r = Reply::of(&to_b[0].1);
    assert_eq!(
        (r.status, r.reason.as_str()),
        (481, "Call Does Not Exist Here")
    );
    let out = e.advance(secs(10));
    assert!(requests_to(&out, A, "BYE").is_empty(), "{}", dump(&out));
    let in_call = e.cores[0].devices_in_call(b"1000");
    assert_eq!(in_call.iter().map(|d| d.0).collect::<Vec<_>>(), [addr(A)]);
}

/// No answered call: 404 with a reason; the device in the call itself cannot move it to itself.
#[test]
fn nothing_to_move() {
    let mut e = edge();
    let r = Reply::only(dial(&mut e, B, "1000", "*75"), B);
    assert_eq!(
        (r.status, r.reason.as_str()),
        (404, "Not Found - no answered call to move")
    );
    answered_by_a(&mut e, "", "");
    let r = Reply::only(dial(&mut e, A, "1000", "*75"), A);
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(feature_count(&e.cores[0], "no_call"), 2);
    // Without authentication: the challenge, as for any call.
    let out = e.send(
        B,
        &request("INVITE", "sip:*75@example.com", B, "1000", "", "x", ""),
    );
    assert_eq!(Reply::only(out, B).status, 407);
}

/// A device of 1001 cannot act on 1000's call: naming 1000 after the code is 403, claiming to
/// be 1000 is 403, and the code alone acts on 1001's own (absent) calls.
#[test]
fn another_extension_is_forbidden() {
    let mut e = edge();
    answered_by_a(&mut e, "Supported: replaces, join\r\n", "");
    let r = Reply::only(dial(&mut e, C, "1001", "*751000"), C);
    assert_eq!(r.status, 403, "{}", r.text);
    let r = Reply::only(dial(&mut e, C, "1001", "*741000"), C);
    assert_eq!(r.status, 403, "{}", r.text);
    let out = authenticated_invite(&mut e, C, "1001", "1000", "sip:*75@example.com", "");
    assert_eq!(Reply::only(out, C).status, 403);
    let r = Reply::only(dial(&mut e, C, "1001", "*75"), C);
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(feature_count(&e.cores[0], "forbidden"), 2);
    assert!(requests_to(&e.sent, PBX, "INVITE").is_empty());
    // Naming its own extension is fine.
    let out = dial(&mut e, B, "1000", "*751000");
    feature_invite(&out, B, PBX);
}

/// Join goes to the far end when it advertised `join`, else to the device in the call when that
/// did, else 420 naming the extension.
#[test]
fn join_is_routed_to_whoever_supports_it() {
    // The far end supports join.
    let mut e = edge();
    answered_by_a(&mut e, "Supported: join\r\n", "");
    let out = dial(&mut e, B, "1000", "*74");
    let inv = feature_invite(&out, B, PBX);
    assert_eq!(
        other_value(&inv, "Join").as_deref(),
        Some("live;to-tag=att;from-tag=a-tag")
    );
    assert_eq!(value(&inv, HeaderName::Require).as_deref(), Some("join"));

    // Only the device in the call does: the INVITE goes to A, naming A's side of the dialog.
    let mut e = edge();
    answered_by_a(&mut e, "", "Supported: join, replaces\r\n");
    let out = dial(&mut e, B, "1000", "*74");
    let inv = feature_invite(&out, B, A);
    assert_eq!(
        other_value(&inv, "Join").as_deref(),
        Some("live;to-tag=a-tag;from-tag=att")
    );
    let m = sip::parse(&inv).unwrap();
    assert_eq!(
        m.request_uri().unwrap().unwrap().raw(),
        format!("sip:1000@{A}").as_bytes()
    );

    // Nobody does.
    let mut e = edge();
    answered_by_a(&mut e, "Supported: replaces\r\n", "");
    let out = dial(&mut e, B, "1000", "*74");
    let r = Reply::only(out, B);
    assert_eq!(r.status, 420, "{}", r.text);
    assert_eq!(
        value(r.text.as_bytes(), HeaderName::Unsupported).as_deref(),
        Some("join")
    );
    assert_eq!(feature_count(&e.cores[0], "join_unsupported"), 1);
}

/// A call a device placed is a line of its extension too: A calls out through the trunk, B
/// moves it; the trunk gets Replaces naming its own dialog (its tag as to-tag).
#[test]
fn a_placed_call_is_moved() {
    let mut e = edge();
    let out = authenticated_invite(&mut e, A, "1000", "1000", "sip:0049301234@example.com", "");
    let fwd = requests_to(&out, TRUNK, "INVITE");
    assert_eq!(fwd.len(), 1, "{}", dump(&out));
    let m = sip::parse(&fwd[0]).unwrap();
    let ok = answer_with(
        &m,
        "trunk-tag",
        &format!("sip:x@{TRUNK}"),
        "Supported: replaces\r\n",
    );
    let call_id = String::from_utf8_lossy(m.call_id().unwrap()).into_owned();
    e.send(TRUNK, &ok);
    let in_call = e.cores[0].devices_in_call(b"1000");
    assert_eq!(in_call.iter().map(|d| d.0).collect::<Vec<_>>(), [addr(A)]);
    b_moves_placed_call(&mut e, TRUNK, &call_id, "trunk-tag", Some("replaces"));
}

/// B dials `*75` while A's placed call `call_id` (far end `far`, its tag `far_tag`) is 1000's
/// line: the far end alone gets the INVITE, with Replaces naming its dialog and `require`.
fn b_moves_placed_call(
    e: &mut Edge,
    far: &str,
    call_id: &str,
    far_tag: &str,
    require: Option<&str>,
) -> Vec<u8> {
    let out = dial(e, B, "1000", "*75");
    let inv = feature_invite(&out, B, far);
    assert_eq!(
        value(&inv, HeaderName::Replaces),
        Some(format!("{call_id};to-tag={far_tag};from-tag=att"))
    );
    assert_eq!(value(&inv, HeaderName::Require).as_deref(), require);
    inv
}

/// Whatever the dialling device writes (Routes, Contact, Request-URI parameters, a Replaces of
/// its own), a feature INVITE reaches only the recorded peer of the call, or is refused.
#[test]
fn a_feature_invite_reaches_only_the_recorded_peer() {
    let mut e = edge();
    answered_by_a(&mut e, "Supported: replaces\r\n", "");
    let tricks = [
        (
            "sip:*75@example.com",
            format!("Route: <sip:{THIRD_PARTY};lr>\r\n"),
        ),
        (
            "sip:*75@example.com;maddr=127.0.0.99",
            format!("Record-Route: <sip:{THIRD_PARTY};lr>\r\n"),
        ),
        (
            "sip:*75@example.com",
            "Replaces: other;to-tag=x;from-tag=y\r\n".into(),
        ),
        (
            "sip:*74@example.com",
            "Join: other;to-tag=x;from-tag=y\r\n".into(),
        ),
    ];
    for (ruri, rows) in &tricks {
        authenticated_invite(&mut e, B, "1000", "1000", ruri, rows);
    }
    // A code at a domain not served here is no feature code (and no relay).
    let out = e.send(
        B,
        &request("INVITE", "sip:*75@127.0.0.99", B, "1000", "", "foreign", ""),
    );
    assert_eq!(Reply::only(out, B).status, 404);
    let allowed: BTreeSet<_> = [addr(A), addr(B), addr(C), addr(PBX)].into();
    assert!(
        destinations(&e.sent).is_subset(&allowed),
        "{}",
        dump(&e.sent)
    );
    // The refused ones: a Replaces/Join of the device's own (400).
    assert_eq!(feature_count(&e.cores[0], "malformed"), 2);
    assert_eq!(feature_count(&e.cores[0], "move_forwarded"), 2);
    let invites = requests_to(&e.sent, PBX, "INVITE");
    assert_eq!(invites.len(), 2);
    for inv in &invites {
        let r = value(inv, HeaderName::Replaces);
        assert_eq!(r.as_deref(), Some("live;to-tag=att;from-tag=a-tag"));
    }
}

/// Two shards: 1000 (A, B) is owned by shard 0, 1001 (C) by shard 1, so a call A places to
/// 1001 is handled on shard 1 and recorded on shard 0 by a core-to-core note.
fn two_shards() -> Edge {
    let mut e = Edge::new(
        &format!("{EDGE}\n[features]\nmove = \"*75\"\njoin = \"*74\"\n"),
        2,
    );
    let owner = |n: &[u8]| sipfork::core::shard::owner_of(n, 2).index();
    assert_eq!((owner(b"1000"), owner(b"1001")), (0, 1));
    e.register_ok(A, "1000", &format!("sip:1000@{A}"));
    e.register_ok(B, "1000", &format!("sip:1000@{B}"));
    e.register_ok(C, "1001", &format!("sip:1001@{C}"));
    e
}

/// A (1000) calls 1001 and C answers (with `c_rows` added): the call is held on shard 1, the
/// line of 1000 on shard 0. Returns the Call-ID and the route set C got toward A.
fn placed_on_shard_1(e: &mut Edge, c_rows: &str) -> (String, String) {
    let out = authenticated_invite(e, A, "1000", "1000", "sip:1001@example.com", "");
    let fwd = requests_to(&out, C, "INVITE");
    assert_eq!(fwd.len(), 1, "{}", dump(&out));
    let m = sip::parse(&fwd[0]).unwrap();
    let rr = value(&fwd[0], HeaderName::RecordRoute).expect("record-routed");
    let call_id = String::from_utf8_lossy(m.call_id().unwrap()).into_owned();
    let ok = answer_with(&m, "c-tag", &format!("sip:1001@{C}"), c_rows);
    let out = e.send(C, &ok);
    assert!(out
        .iter()
        .any(|(to, b)| *to == addr(A) && b.starts_with(b"SIP/2.0 200")));
    assert_eq!(feature_count(&e.cores[1], "placed_elsewhere"), 1);
    let in_call = e.cores[0].devices_in_call(b"1000");
    assert_eq!(in_call, [(addr(A), call_id.clone().into_bytes())]);
    assert!(e.cores[1].devices_in_call(b"1000").is_empty());
    (call_id, rr)
}

/// C ends its dialog with A through the route it got (`rr`), Call-ID `call_id`.
fn c_ends_a(e: &mut Edge, call_id: &str, rr: &str) -> Vec<(SocketAddr, Vec<u8>)> {
    let bye = String::from_utf8(request(
        "BYE",
        &format!("sip:1000@{A}"),
        C,
        "1001",
        "att",
        call_id,
        &format!("Route: {rr}\r\n"),
    ))
    .unwrap()
    .replace("tag=att\r\nTo:", "tag=c-tag\r\nTo:")
    .replace(&format!("To: <sip:1000@{A}>"), "To: <sip:1000@example.com>");
    e.send(C, bye.as_bytes())
}

/// A placed call held on another shard is moved: B's `*75` (handled on shard 0) reaches C with
/// Replaces naming C's dialog; C accepts and ends A's dialog itself through shard 1, which
/// releases A's line on shard 0; B is the device in the call.
#[test]
fn a_placed_call_on_another_shard_is_moved() {
    let mut e = two_shards();
    let (call_id, rr) = placed_on_shard_1(&mut e, "Supported: replaces\r\n");
    let inv = b_moves_placed_call(&mut e, C, &call_id, "c-tag", Some("replaces"));
    assert_eq!(feature_count(&e.cores[0], "move_forwarded"), 1);
    let m = sip::parse(&inv).unwrap();
    let out = e.send(
        C,
        &device_answer(&m, 200, "c-new", &format!("sip:1001@{C}")),
    );
    let to_b: Vec<_> = out.iter().filter(|(to, _)| *to == addr(B)).collect();
    assert_eq!(to_b.len(), 1, "{}", dump(&out));
    assert_eq!(Reply::of(&to_b[0].1).status, 200);
    // A's old line and B's new one, until C ends the old dialog.
    assert_eq!(e.cores[0].devices_in_call(b"1000").len(), 2);
    let out = c_ends_a(&mut e, &call_id, &rr);
    let byes = requests_to(&out, A, "BYE");
    assert_eq!(byes.len(), 1, "{}", dump(&out));
    let in_call = e.cores[0].devices_in_call(b"1000");
    assert_eq!(in_call.iter().map(|d| d.0).collect::<Vec<_>>(), [addr(B)]);
    let bye = sip::parse(&byes[0]).unwrap();
    e.send(A, &respond(&bye, 200, "OK", None));
    // Nothing more from the proxy: C ended the old dialog in time.
    let out = e.advance(secs(10));
    assert!(requests_to(&out, A, "BYE").is_empty(), "{}", dump(&out));
    assert_eq!(feature_count(&e.cores[0], "proxy_bye"), 0);
    assert_eq!(feature_count(&e.cores[1], "proxy_bye"), 0);
}

/// A placed call on another shard is released on shard 0 when its dialog ends there: after C's
/// BYE, B has nothing to move (404).
#[test]
fn a_placed_call_on_another_shard_is_released_on_bye() {
    let mut e = two_shards();
    let (call_id, rr) = placed_on_shard_1(&mut e, "Supported: replaces\r\n");
    let out = c_ends_a(&mut e, &call_id, &rr);
    assert_eq!(requests_to(&out, A, "BYE").len(), 1, "{}", dump(&out));
    assert!(e.cores[0].devices_in_call(b"1000").is_empty());
    let out = dial(&mut e, B, "1000", "*75");
    assert_eq!(Reply::only(out, B).status, 404);
    assert_eq!(feature_count(&e.cores[0], "no_call"), 1);
}

/// The far end accepts the move but keeps the old dialog: after 4 s shard 0 asks shard 1, which
/// holds that dialog, and shard 1 sends A the proxy's BYE (in C's name, with the Reason) and
/// releases the line.
#[test]
fn a_placed_call_on_another_shard_gets_the_proxy_bye() {
    let mut e = two_shards();
    let (call_id, _) = placed_on_shard_1(&mut e, "");
    let inv = b_moves_placed_call(&mut e, C, &call_id, "c-tag", None);
    let m = sip::parse(&inv).unwrap();
    e.send(
        C,
        &device_answer(&m, 200, "c-new", &format!("sip:1001@{C}")),
    );
    let out = e.advance(secs(3));
    assert!(requests_to(&out, A, "BYE").is_empty(), "not yet");
    let out = e.advance(secs(2));
    let byes = proxy_bye_to_a(&out, &call_id, "c-tag", "att");
    let bye = sip::parse(&byes[0]).unwrap();
    assert_eq!(bye.cseq().unwrap().number, 1000);
    assert_eq!(feature_count(&e.cores[1], "proxy_bye"), 1);
    let in_call = e.cores[0].devices_in_call(b"1000");
    assert_eq!(in_call.iter().map(|d| d.0).collect::<Vec<_>>(), [addr(B)]);
    let out = e.send(A, &respond(&bye, 200, "OK", None));
    assert!(out.is_empty(), "{}", dump(&out));
}
