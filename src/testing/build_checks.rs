//! Holds what [`crate::sip::build`] writes to its contract: the output parses, what the builder
//! must change reads back exactly as asked, every other header row is copied byte for byte and in
//! order, and the body is unchanged with a Content-Length that counts it (RFC 3261 §8.2.6.2,
//! §16.6, §16.7 step 3, §9.1, §17.1.1.3, §12.2.1.1).
//!
//! Used by the builder property tests (`tests/core/builder.rs`) and the `build_roundtrip` fuzz
//! target, so both judge the builder by the same rules. Each `check_*` function takes the input
//! the builder was given and the bytes it wrote, and panics with both messages on the first
//! difference. [`exercise_builders`] runs every builder on one parsed message, as a proxy would.

use std::net::{IpAddr, SocketAddr};

use crate::sip::build::{self, Forward, InDialog, Reply, ViaFix};
use crate::sip::headers::name_addr::parse_single;
use crate::sip::headers::via::parse_via;
use crate::sip::scan::Cursor;
use crate::sip::{
    check_request, check_response, parse, Header, HeaderName, Kind, Message, ParseError, Via,
    MAX_ROWS,
};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn context(input: &[u8], out: &[u8]) -> String {
    format!(
        "\n--- input ---\n{}\n--- built ---\n{}",
        text(input),
        text(out)
    )
}

/// Most rows a builder adds to the ones it copies (the proxy's own bound).
const ADDED_ROWS: usize = crate::sip::build::ROWS_ADDED_BY_FORWARDING;

/// Parses what a builder wrote from `input` (`None` for builders without an input message).
///
/// A copy of a message already at the parser's limits ([`MAX_ROWS`] rows, 64 KiB) can exceed
/// them by what the builder adds: that is a limit, not a wrong copy (the proxy answers 513 at
/// intake rather than forward such a request, `Core::handle_request`), and `None` ends the
/// check.
fn parse_built<'a>(what: &str, input: Option<&Message<'_>>, out: &'a [u8]) -> Option<Message<'a>> {
    let in_bytes = input.map_or(&b""[..], |m| m.bytes());
    match parse(out) {
        Ok(m) => Some(m),
        Err(ParseError::TooManyHeaders)
            if input.is_some_and(|m| m.header_count() + ADDED_ROWS > MAX_ROWS) =>
        {
            None
        }
        Err(ParseError::MessageTooLarge) if out.len() > usize::from(u16::MAX) => None,
        Err(e) => panic!("{what} does not parse: {e:?}{}", context(in_bytes, out)),
    }
}

/// `Name: value\r\n`, as the builder writes a new row.
fn row(name: &str, value: &[u8]) -> Vec<u8> {
    let mut r = name.as_bytes().to_vec();
    r.extend_from_slice(b": ");
    r.extend_from_slice(value);
    r.extend_from_slice(b"\r\n");
    r
}

fn values<'b>(h: &Header<'b>) -> Vec<&'b [u8]> {
    h.values().collect()
}

/// The values a row keeps when its first is removed: the copy starts at the next non-empty
/// element (`a,,b` keeps `b`; `a,` keeps nothing), and the rest of the row is copied as it is.
fn values_after_first<'b>(h: &Header<'b>) -> Vec<&'b [u8]> {
    h.values().skip(1).skip_while(|v| v.is_empty()).collect()
}

/// The values of `h` left after dropping its first `n` (empty elements not counted beyond the
/// first), and how many it dropped: the model of `build`'s Route removal.
fn values_after_first_n<'b>(h: &Header<'b>, n: usize) -> (Vec<&'b [u8]>, usize) {
    if n <= 1 {
        return (values_after_first(h), 1);
    }
    let mut seen = 0;
    let left = h
        .values()
        .skip_while(|v| {
            if seen < n {
                seen += usize::from(!v.is_empty());
                true
            } else {
                v.is_empty()
            }
        })
        .collect();
    (left, seen.max(1))
}

/// Offset of `sub` (a slice of `whole`) within `whole`.
fn offset_in(whole: &[u8], sub: &[u8]) -> usize {
    let at = (sub.as_ptr() as usize)
        .checked_sub(whole.as_ptr() as usize)
        .expect("slice lies in its row");
    assert!(at + sub.len() <= whole.len(), "slice lies in its row");
    at
}

fn one_via(value: &[u8]) -> Via<'_> {
    parse_via(&mut Cursor::new(value)).unwrap_or_else(|e| {
        panic!(
            "Via value does not parse ({e:?}): {}",
            String::from_utf8_lossy(value)
        )
    })
}

/// Walks the rows of a built message, failing with context when one is missing.
struct Built<'m, 'b> {
    rows: Vec<Header<'b>>,
    at: usize,
    ctx: &'m str,
}

impl<'b> Built<'_, 'b> {
    fn next(&mut self, what: &str) -> Header<'b> {
        let h = self.rows.get(self.at).copied();
        self.at += 1;
        h.unwrap_or_else(|| panic!("missing row: {what}{}", self.ctx))
    }

    /// The rows not consumed yet, concatenated.
    fn rest(&self) -> Vec<u8> {
        self.rows
            .iter()
            .skip(self.at)
            .flat_map(|h| h.row.iter().copied())
            .collect()
    }
}

/// `got` is the row `orig` (the first Via row) with `fix` applied to its first value: the name
/// and the other values unchanged, the first value the same Via with `received`/`rport` added.
fn check_fixed_via_row(orig: &Header<'_>, got: &Header<'_>, fix: ViaFix, ctx: &str) {
    assert_eq!(got.name, HeaderName::Via, "fixed top Via row{ctx}");
    if fix == ViaFix::default() {
        assert_eq!(
            got.row, orig.row,
            "top Via row unchanged without a fix{ctx}"
        );
        return;
    }
    let (ov, gv) = (values(orig), values(got));
    assert_eq!(ov.len(), gv.len(), "values of the top Via row{ctx}");
    let (Some(&o_first), Some(&g_first)) = (ov.first(), gv.first()) else {
        panic!("top Via row without a value{ctx}");
    };
    // Octets around the first value are copied: name, colon, spacing, later values.
    let (o_at, g_at) = (offset_in(orig.row, o_first), offset_in(got.row, g_first));
    assert_eq!(
        got.row[..g_at],
        orig.row[..o_at],
        "before the fixed Via{ctx}"
    );
    assert_eq!(
        got.row[g_at + g_first.len()..],
        orig.row[o_at + o_first.len()..],
        "after the fixed Via{ctx}"
    );
    check_fixed_via(&one_via(o_first), &one_via(g_first), fix, ctx);
}

/// The Via `got` is `orig` with `fix` applied (RFC 3261 §18.2.1, RFC 3581 §4).
pub fn check_fixed_via(orig: &Via<'_>, got: &Via<'_>, fix: ViaFix, ctx: &str) {
    assert_eq!(
        (got.protocol, got.version, got.transport),
        (orig.protocol, orig.version, orig.transport),
        "sent-protocol{ctx}"
    );
    assert_eq!(
        (got.host_raw, got.port, got.branch, got.maddr, got.ttl),
        (orig.host_raw, orig.port, orig.branch, orig.maddr, orig.ttl),
        "sent-by and branch{ctx}"
    );
    let rport = match (orig.rport, fix.rport) {
        (Some(None), Some(port)) => Some(Some(port)),
        (kept, _) => kept,
    };
    assert_eq!(got.rport, rport, "rport{ctx}");
    match (orig.received, fix.received) {
        // Ours replaces whatever the sender claimed (RFC 3581 §4), at the end of the value.
        (_, Some(ip)) => {
            assert_eq!(got.received_ip(), Some(ip), "received{ctx}");
            if ip.is_ipv6() {
                assert!(
                    got.received.is_some_and(|r| r.starts_with(b"[")),
                    "IPv6 received in brackets (RFC 5118 §4.5){ctx}"
                );
            }
        }
        (kept, _) => assert_eq!(got.received, kept, "received{ctx}"),
    }
    let mut names: Vec<&[u8]> = orig.params.into_iter().map(|(n, _)| n).collect();
    if fix.received.is_some() {
        names.retain(|n| !n.eq_ignore_ascii_case(b"received"));
        names.push(b"received");
    }
    let got_names: Vec<&[u8]> = got.params.into_iter().map(|(n, _)| n).collect();
    assert_eq!(got_names, names, "Via parameters in order{ctx}");
}

/// `forward_request(req, fwd)` wrote `out` (RFC 3261 §16.6).
pub fn check_forward_request(req: &Message<'_>, fwd: &Forward<'_>, out: &[u8]) {
    let ctx = context(req.bytes(), out);
    let Kind::Request { method, uri } = req.kind() else {
        assert!(out.is_empty(), "a response is not forwarded as a request");
        return;
    };
    let Some(f) = parse_built("forwarded request", Some(req), out) else {
        return;
    };
    assert_eq!(f.method(), Some(method), "method{ctx}");
    assert_eq!(
        f.request_uri_raw(),
        Some(fwd.request_uri.unwrap_or(uri)),
        "Request-URI{ctx}"
    );
    let mut o = Built {
        rows: f.headers().collect(),
        at: 0,
        ctx: &ctx,
    };
    assert_eq!(o.next("our Via").row, row("Via", fwd.via), "our Via{ctx}");
    if let Some(rr) = fwd.record_route {
        let mut value = b"<".to_vec();
        value.extend_from_slice(rr);
        value.push(b'>');
        assert_eq!(
            o.next("Record-Route").row,
            row("Record-Route", &value),
            "our Record-Route on top{ctx}"
        );
        if let Some(rr) = fwd.record_route_in {
            let value = [&b"<"[..], rr, b">"].concat();
            assert_eq!(
                o.next("second Record-Route").row,
                row("Record-Route", &value),
                "our incoming-side Record-Route below it{ctx}"
            );
        }
    }
    let max_forwards = fwd.max_forwards.to_string();
    let mut top_via = true;
    let mut drop_routes =
        usize::from(fwd.drop_first_route) * (1 + usize::from(fwd.drop_second_route));
    let (mut wrote_max_forwards, mut has_content_length) = (false, false);
    for h in req.headers() {
        match h.name {
            HeaderName::Via if top_via => {
                top_via = false;
                check_fixed_via_row(&h, &o.next("received top Via"), fwd.fix, &ctx);
            }
            HeaderName::MaxForwards => {
                if !wrote_max_forwards {
                    wrote_max_forwards = true;
                    let got = o.next("Max-Forwards");
                    assert_eq!(
                        got.row,
                        row("Max-Forwards", max_forwards.as_bytes()),
                        "{ctx}"
                    );
                }
            }
            HeaderName::Route if drop_routes > 0 => {
                let (left, dropped) = values_after_first_n(&h, drop_routes);
                drop_routes -= dropped;
                if !left.is_empty() {
                    let got = o.next("Route row after dropping its first values");
                    assert_eq!(got.raw_name, h.raw_name, "{ctx}");
                    assert_eq!(values(&got), left, "Route values left{ctx}");
                }
            }
            HeaderName::PAssertedIdentity | HeaderName::PPreferredIdentity
                if fwd.strip_identity => {}
            HeaderName::ProxyAuthorization
                if fwd
                    .consume_realm
                    .is_some_and(|realm| build::credentials_for_realm(&h, realm)) => {}
            _ => {
                has_content_length |= h.name == HeaderName::ContentLength;
                assert_eq!(o.next("copied row").row, h.row, "row copied verbatim{ctx}");
            }
        }
    }
    let mut tail = Vec::new();
    if !wrote_max_forwards {
        tail.extend_from_slice(&row("Max-Forwards", max_forwards.as_bytes()));
    }
    tail.extend_from_slice(fwd.extra);
    if !has_content_length {
        tail.extend_from_slice(&row(
            "Content-Length",
            req.body().len().to_string().as_bytes(),
        ));
    }
    assert_eq!(text(&o.rest()), text(&tail), "rows after the copies{ctx}");
    assert_eq!(f.body(), req.body(), "body{ctx}");
    assert_eq!(
        f.content_length().map(|n| n as usize),
        Some(req.body().len()),
        "Content-Length{ctx}"
    );

    // Read back through the typed accessors, as the next hop will.
    assert_eq!(
        f.max_forwards(),
        Ok(Some(fwd.max_forwards)),
        "Max-Forwards{ctx}"
    );
    assert_eq!(f.top_via().map(|v| v.raw), Ok(fwd.via), "top Via{ctx}");
    let below: Vec<_> = f.vias().skip(2).collect();
    let received: Vec<_> = req.vias().skip(1).collect();
    assert_eq!(below, received, "Vias below ours, in order{ctx}");
    let routes: Vec<_> = f.values(HeaderName::Route).collect();
    let mut expected: Vec<_> = Vec::new();
    let mut to_drop = usize::from(fwd.drop_first_route) * (1 + usize::from(fwd.drop_second_route));
    for h in req.rows(HeaderName::Route) {
        if to_drop > 0 {
            let (left, dropped) = values_after_first_n(&h, to_drop);
            to_drop -= dropped;
            expected.extend(left);
        } else {
            expected.extend(h.values());
        }
    }
    assert_eq!(routes, expected, "Route values{ctx}");
    let rrs: Vec<_> = f.values(HeaderName::RecordRoute).collect();
    let mut expected: Vec<Vec<u8>> = Vec::new();
    if let Some(rr) = fwd.record_route {
        expected.push([&b"<"[..], rr, b">"].concat());
        if let Some(rr) = fwd.record_route_in {
            expected.push([&b"<"[..], rr, b">"].concat());
        }
    }
    expected.extend(req.values(HeaderName::RecordRoute).map(<[u8]>::to_vec));
    assert_eq!(rrs, expected, "Record-Route values{ctx}");
    if let Ok(e) = check_request(req) {
        let fe = check_request(&f).unwrap_or_else(|err| panic!("{err:?}{ctx}"));
        assert_eq!(
            (fe.method, fe.call_id, fe.cseq, fe.from, fe.to),
            (e.method, e.call_id, e.cseq, e.from, e.to),
            "dialog fields{ctx}"
        );
    }
}

/// `forward_response(resp)` wrote `out`: only the first Via value is gone (§16.7 step 3).
pub fn check_forward_response(resp: &Message<'_>, out: &[u8]) {
    let ctx = context(resp.bytes(), out);
    let Some(f) = parse_built("forwarded response", Some(resp), out) else {
        return;
    };
    assert_eq!(f.start_line(), resp.start_line(), "status line{ctx}");
    let mut o = Built {
        rows: f.headers().collect(),
        at: 0,
        ctx: &ctx,
    };
    let mut top_via = true;
    for h in resp.headers() {
        if h.name == HeaderName::Via && top_via {
            top_via = false;
            let left = values_after_first(&h);
            if !left.is_empty() {
                let got = o.next("Via row after removing our value");
                let at = offset_in(h.row, h.value);
                assert_eq!(got.row[..at], h.row[..at], "Via row name{ctx}");
                assert_eq!(values(&got), left, "Via values left in the row{ctx}");
            }
            continue;
        }
        assert_eq!(o.next("copied row").row, h.row, "row copied verbatim{ctx}");
    }
    assert!(o.rest().is_empty(), "no rows added{ctx}");
    assert_eq!(f.body(), resp.body(), "body{ctx}");
    assert_eq!(f.content_length(), resp.content_length(), "{ctx}");
    let got: Vec<_> = f.values(HeaderName::Via).collect();
    let mut expected: Vec<_> = Vec::new();
    for (i, h) in resp.rows(HeaderName::Via).enumerate() {
        if i == 0 {
            expected.extend(values_after_first(&h));
        } else {
            expected.extend(h.values());
        }
    }
    assert_eq!(got, expected, "Via values{ctx}");
    if resp.vias().all(|v| v.is_ok()) {
        let got: Vec<_> = f.vias().collect();
        let expected: Vec<_> = resp.vias().skip(1).collect();
        assert_eq!(got, expected, "Vias{ctx}");
    }
    if check_response(resp).is_ok() && resp.vias().nth(1).is_some_and(|v| v.is_ok()) {
        check_response(&f).unwrap_or_else(|err| panic!("{err:?}{ctx}"));
    }
}

/// `response(req, reply)` wrote `out` (§8.2.6.2).
pub fn check_response_to(req: &Message<'_>, reply: &Reply<'_>, out: &[u8]) {
    let ctx = context(req.bytes(), out);
    let Some(f) = parse_built("response", Some(req), out) else {
        return;
    };
    assert_eq!(
        f.kind(),
        Kind::Response {
            status: reply.status,
            reason: reply.reason.as_bytes()
        },
        "status line{ctx}"
    );
    let mut o = Built {
        rows: f.headers().collect(),
        at: 0,
        ctx: &ctx,
    };
    let mut top_via = true;
    for h in req.headers() {
        match h.name {
            HeaderName::Via if top_via => {
                top_via = false;
                check_fixed_via_row(&h, &o.next("top Via"), reply.fix, &ctx);
            }
            HeaderName::To => check_to_row(&h, &o.next("To"), reply.to_tag, &ctx),
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                assert_eq!(o.next("copied row").row, h.row, "row copied verbatim{ctx}");
            }
            _ => {}
        }
    }
    let mut tail = reply.extra.to_vec();
    match reply.body {
        Some((content_type, body)) => {
            tail.extend_from_slice(&row("Content-Type", content_type.as_bytes()));
            tail.extend_from_slice(&row("Content-Length", body.len().to_string().as_bytes()));
            assert_eq!(f.body(), body, "body{ctx}");
        }
        None => {
            tail.extend_from_slice(b"Content-Length: 0\r\n");
            assert_eq!(f.body(), b"", "no body{ctx}");
        }
    }
    assert_eq!(text(&o.rest()), text(&tail), "rows after the copies{ctx}");
    assert_eq!(f.content_length().map(|n| n as usize), Some(f.body().len()));
    if let Ok(e) = check_request(req) {
        let r = check_response(&f).unwrap_or_else(|err| panic!("{err:?}{ctx}"));
        assert_eq!(
            (r.call_id, r.cseq, r.from),
            (e.call_id, e.cseq, e.from),
            "{ctx}"
        );
        assert_eq!((r.to.uri, r.to.display), (e.to.uri, e.to.display), "{ctx}");
        let tag = e.to.tag.or(reply.to_tag);
        assert_eq!(r.to.tag, tag, "To tag{ctx}");
    }
}

/// A To row copied, with `;tag=` appended to its value when it had none and a tag was given.
fn check_to_row(orig: &Header<'_>, got: &Header<'_>, tag: Option<&[u8]>, ctx: &str) {
    let untagged = parse_single(orig.value).is_ok_and(|na| na.tag.is_none());
    match tag {
        Some(tag) if untagged => {
            let end = offset_in(orig.row, orig.value) + orig.value.len();
            let expected = [&orig.row[..end], b";tag=", tag, &orig.row[end..]].concat();
            assert_eq!(text(got.row), text(&expected), "To with our tag{ctx}");
        }
        _ => assert_eq!(got.row, orig.row, "To copied verbatim{ctx}"),
    }
}

/// `cancel_for(sent, reason)` wrote `out` (§9.1, RFC 3326).
pub fn check_cancel(sent: &Message<'_>, reason: Option<&[u8]>, out: &[u8]) {
    let f = check_hop_by_hop(sent, b"CANCEL", None, out);
    let ctx = context(sent.bytes(), out);
    let got: Vec<_> = f.rows(HeaderName::Reason).map(|h| h.value).collect();
    assert_eq!(got, reason.into_iter().collect::<Vec<_>>(), "Reason{ctx}");
}

/// `ack_for(sent, resp)` wrote `out` (§17.1.1.3).
pub fn check_ack(sent: &Message<'_>, resp: &Message<'_>, out: &[u8]) {
    let f = check_hop_by_hop(sent, b"ACK", resp.first(HeaderName::To), out);
    let ctx = context(sent.bytes(), out);
    assert!(f.first(HeaderName::Reason).is_none(), "{ctx}");
    if check_response(resp).is_ok() && check_request(sent).is_ok() {
        assert_eq!(f.to(), resp.to(), "the response's To{ctx}");
    }
}

fn check_hop_by_hop<'a>(
    sent: &Message<'_>,
    method: &[u8],
    to: Option<Header<'_>>,
    out: &'a [u8],
) -> Message<'a> {
    let ctx = context(sent.bytes(), out);
    // Fewer rows than the request it cancels or acknowledges: always within limits.
    let f = parse_built("CANCEL/ACK", None, out).expect("checked by parse_built");
    assert_eq!(
        f.method().map(|m| m.as_bytes()),
        Some(method),
        "method{ctx}"
    );
    assert_eq!(
        f.request_uri_raw(),
        sent.request_uri_raw(),
        "Request-URI{ctx}"
    );
    let vias: Vec<_> = f.rows(HeaderName::Via).map(|h| h.value).collect();
    let top = sent
        .first(HeaderName::Via)
        .and_then(|h| h.values().next())
        .map(|v| vec![v])
        .unwrap_or_default();
    assert_eq!(vias, top, "one Via: the request's top Via{ctx}");
    let rows_of = |m: &Message<'_>, name: HeaderName| -> Vec<Vec<u8>> {
        m.rows(name).map(|h| h.row.to_vec()).collect()
    };
    for name in [HeaderName::Route, HeaderName::From, HeaderName::CallId] {
        assert_eq!(
            rows_of(&f, name),
            rows_of(sent, name),
            "{name:?} copied{ctx}"
        );
    }
    let to_rows = match to {
        Some(h) => vec![h.row.to_vec()],
        None => rows_of(sent, HeaderName::To),
    };
    assert_eq!(rows_of(&f, HeaderName::To), to_rows, "To{ctx}");
    let cseq = f.cseq().unwrap_or_else(|e| panic!("CSeq {e:?}{ctx}"));
    assert_eq!(cseq.method.as_bytes(), method, "CSeq method{ctx}");
    let number = sent.cseq().map(|c| c.number).unwrap_or(0);
    assert_eq!(cseq.number, number, "CSeq number{ctx}");
    assert_eq!(f.max_forwards(), Ok(Some(70)), "{ctx}");
    assert_eq!((f.body(), f.content_length()), (&b""[..], Some(0)), "{ctx}");
    for h in f.headers() {
        assert!(
            matches!(
                h.name,
                HeaderName::Via
                    | HeaderName::Route
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::MaxForwards
                    | HeaderName::CSeq
                    | HeaderName::Reason
                    | HeaderName::ContentLength
            ),
            "unexpected row {}{ctx}",
            text(h.row)
        );
    }
    if check_request(sent).is_ok() {
        check_request(&f).unwrap_or_else(|err| panic!("{err:?}{ctx}"));
    }
    f
}

/// `in_dialog(d)` wrote `out` (§12.2.1.1).
pub fn check_in_dialog(d: &InDialog<'_>, out: &[u8]) {
    let ctx = context(b"(InDialog fields)", out);
    let f = parse_built("in-dialog request", None, out).expect("a new request within limits");
    assert_eq!(f.method().map(|m| m.as_bytes()), Some(d.method), "{ctx}");
    assert_eq!(f.request_uri_raw(), Some(d.target), "{ctx}");
    let single = |name: HeaderName| -> Vec<&[u8]> { f.rows(name).map(|h| h.value).collect() };
    assert_eq!(single(HeaderName::Via), vec![d.via], "{ctx}");
    let routes: Vec<&[u8]> = f.values(HeaderName::Route).collect();
    assert_eq!(routes, d.routes.to_vec(), "route set in order{ctx}");
    assert!(f.count_rows(HeaderName::Route) <= 1, "one Route row{ctx}");
    assert_eq!(single(HeaderName::From), vec![d.from], "{ctx}");
    assert_eq!(single(HeaderName::To), vec![d.to], "{ctx}");
    assert_eq!(single(HeaderName::CallId), vec![d.call_id], "{ctx}");
    let cseq = f.cseq().unwrap_or_else(|e| panic!("CSeq {e:?}{ctx}"));
    assert_eq!(
        (cseq.number, cseq.method.as_bytes()),
        (d.cseq, d.method),
        "{ctx}"
    );
    assert_eq!(f.max_forwards(), Ok(Some(70)), "{ctx}");
    let section = f.header_section();
    assert!(
        d.extra.is_empty() || section.windows(d.extra.len()).any(|w| w == d.extra),
        "extra rows{ctx}"
    );
    assert_eq!((f.body(), f.content_length()), (&b""[..], Some(0)), "{ctx}");
}

/// Our address in the fixed parameter sets of [`exercise_builders`].
const LOCAL: &[u8] = b"127.0.0.1:5060";

/// Runs every builder on `msg` with a few parameter sets chosen by `variant`, as the proxy
/// would use them, and checks each output. Messages that fail `check_request` /
/// `check_response` are only answered (`response`), as the core does.
pub fn exercise_builders(msg: &Message<'_>, variant: u8) {
    let sources: [SocketAddr; 3] = [
        ([203, 0, 113, 9], 40000).into(),
        (IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 9]), 5062).into(),
        ([127, 0, 0, 1], 5070).into(),
    ];
    let source = sources[usize::from(variant) % sources.len()];
    if !msg.is_request() {
        let mut out = Vec::new();
        build::forward_response(msg, &mut out);
        check_forward_response(msg, &out);
        if check_response(msg).is_ok() {
            // The ACK for this response, as if it answered a forwarded INVITE of ours.
            let invite = canned_forwarded_invite();
            let sent = parse(&invite).expect("invariant: canned INVITE parses");
            let mut ack = Vec::new();
            build::ack_for(&sent, msg, &mut ack);
            check_ack(&sent, msg, &ack);
        }
        return;
    }
    let fix = msg
        .top_via()
        .map(|v| ViaFix::for_source(&v, source))
        .unwrap_or_default();
    let mut out = Vec::new();
    let reply = Reply {
        status: [100, 180, 487, 503][usize::from(variant >> 2) % 4],
        reason: "Any Reason",
        fix,
        to_tag: (variant & 1 == 0).then_some(&b"sf-tag"[..]),
        extra: if variant & 2 == 0 {
            b""
        } else {
            b"Retry-After: 5\r\n"
        },
        body: (variant & 8 != 0).then_some(("text/plain", &b"why\r\n"[..])),
    };
    build::response(msg, &reply, &mut out);
    check_response_to(msg, &reply, &out);
    let Ok(e) = check_request(msg) else { return };
    // Given the top Via as parsed, the same bytes.
    let mut out_with = Vec::new();
    build::response_with(msg, &reply, Some(&e.top_via), &mut out_with);
    assert_eq!(out_with, out, "response_with: other bytes than response");

    let mut via = b"SIP/2.0/UDP ".to_vec();
    via.extend_from_slice(LOCAL);
    via.extend_from_slice(b";branch=z9hG4bKsf-fuzz-");
    via.push(b'0' + variant % 10);
    let fwd = Forward {
        request_uri: (variant & 1 == 1).then_some(&b"sip:dev@127.0.0.1:5071;transport=udp"[..]),
        via: &via,
        record_route: (variant & 2 == 0).then_some(&b"sip:127.0.0.1:5060;lr;sft=abc"[..]),
        record_route_in: (variant & 128 != 0)
            .then_some(&b"sip:127.0.0.1:5060;transport=tcp;lr;sft=abc"[..]),
        drop_first_route: variant & 4 != 0,
        drop_second_route: variant & 64 != 0,
        max_forwards: e.max_forwards.map_or(70, |m| m.saturating_sub(1)),
        fix,
        extra: if variant & 8 == 0 {
            b""
        } else {
            b"Reason: SIP;cause=480\r\n"
        },
        strip_identity: variant & 16 != 0,
        consume_realm: (variant & 32 != 0).then_some(&b"sipfork"[..]),
    };
    let mut sent = Vec::new();
    build::forward_request(msg, &fwd, &mut sent);
    // Given the top Via as parsed, the same bytes.
    let mut sent_with = Vec::new();
    build::forward_request_with(msg, &fwd, Some(&e.top_via), &mut sent_with);
    assert_eq!(
        sent_with, sent,
        "forward_request_with: other bytes than forward_request"
    );
    check_forward_request(msg, &fwd, &sent);
    // Noting the CANCEL's and ACK's parts while writing: the same bytes.
    let mut sent_hop = b"earlier message in the buffer".to_vec();
    let hop = build::forward_request_hop(msg, &fwd, Some(&e.top_via), &mut sent_hop);
    let sent_hop = sent_hop.split_off(29);
    assert_eq!(
        sent_hop, sent,
        "forward_request_hop: other bytes than forward_request"
    );
    // Notes wherever they fit: no extra rows, no more rows to note than it keeps runs, offsets
    // within 64 KiB.
    let noted = msg
        .headers()
        .filter(|h| {
            matches!(
                h.name,
                HeaderName::Route | HeaderName::From | HeaderName::To | HeaderName::CallId
            )
        })
        .count();
    if !fwd.extra.is_empty() {
        assert!(
            hop.is_none(),
            "forward_request_hop: notes despite extra rows"
        );
    } else if noted <= 6 && sent.len() <= usize::from(u16::MAX) {
        assert!(
            hop.is_some(),
            "forward_request_hop: no notes where they fit"
        );
    }
    let Ok(sent_msg) = parse(&sent) else { return };

    let mut cancel = Vec::new();
    let reason =
        (variant & 1 == 0).then_some(&b"SIP;cause=200;text=\"Call completed elsewhere\""[..]);
    build::cancel_for(&sent_msg, reason, &mut cancel);
    check_cancel(&sent_msg, reason, &cancel);
    if let Some(hop) = &hop {
        let mut cancel_from = Vec::new();
        build::cancel_from(&sent, hop, reason, &mut cancel_from);
        assert_eq!(
            cancel_from, cancel,
            "cancel_from: other bytes than cancel_for"
        );
    }

    // The device's 487, then the ACK for it.
    let mut final_response = Vec::new();
    let device = Reply {
        status: 487,
        reason: "Request Terminated",
        fix: ViaFix::default(),
        to_tag: Some(b"dev-1"),
        extra: b"",
        body: None,
    };
    build::response(&sent_msg, &device, &mut final_response);
    check_response_to(&sent_msg, &device, &final_response);
    let Ok(resp) = parse(&final_response) else {
        return;
    };
    let mut ack = Vec::new();
    build::ack_for(&sent_msg, &resp, &mut ack);
    check_ack(&sent_msg, &resp, &ack);
    if let Some(hop) = &hop {
        let mut ack_from = Vec::new();
        build::ack_from(&sent, hop, &resp, &mut ack_from);
        assert_eq!(ack_from, ack, "ack_from: other bytes than ack_for");
    }

    // A BYE in the dialog this request would set up.
    // The route set as the proxy keeps it: the Record-Route entries that parse.
    let routes: Vec<&[u8]> = msg
        .record_routes()
        .map_while(Result::ok)
        .map(|r| r.raw)
        .collect();
    let to = msg.first_value(HeaderName::To).unwrap_or(b"<sip:x@y>");
    let d = InDialog {
        method: b"BYE",
        target: e.request_uri.raw(),
        routes: &routes,
        via: &via,
        from: msg.first_value(HeaderName::From).unwrap_or(b"<sip:x@y>"),
        to,
        call_id: e.call_id,
        cseq: e.cseq.number.wrapping_add(1),
        extra: b"",
    };
    let mut bye = Vec::new();
    build::in_dialog(&d, &mut bye);
    check_in_dialog(&d, &bye);
}

/// A forwarded INVITE as sipfork sends it (our Via on top, Record-Route, one Route left).
fn canned_forwarded_invite() -> Vec<u8> {
    b"INVITE sip:1000@127.0.0.1:5071 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf-canned\r\n\
Record-Route: <sip:127.0.0.1:5060;lr;sft=abc>\r\n\
Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK-abc;rport=5070;received=10.0.0.9\r\n\
Max-Forwards: 69\r\n\
Route: <sip:10.9.9.9;lr>\r\n\
From: <sip:caller@10.0.0.9:5070>;tag=ft1\r\n\
To: <sip:1000@127.0.0.1:5060>\r\n\
Call-ID: call-1@10.0.0.9\r\n\
CSeq: 7 INVITE\r\n\
Content-Length: 0\r\n\r\n"
        .to_vec()
}
