//! Runs every accessor of a parsed [`Message`] and asserts that they agree with each other.
//!
//! Used by the mutation property tests and the `parse` fuzz target, so both check the same
//! invariants: slices point into the message, rows tile the header section, framing is
//! idempotent, validated essentials equal what the individual accessors return, and URI
//! comparison is reflexive.

use crate::sip::{check_request, check_response, parse, ContactValue, HeaderName, Message, Uri};

/// Exercises `msg` fully; panics on the first inconsistency.
pub fn exercise(msg: &Message<'_>) {
    let bytes = msg.bytes();
    let inside = |s: &[u8]| {
        let r = msg.offset_of(s).expect("slice lies inside the message");
        assert_eq!(&bytes[r], s);
    };
    let mut tiled = Vec::with_capacity(bytes.len());
    for h in msg.headers() {
        inside(h.row);
        inside(h.value);
        inside(h.raw_name);
        assert!(h.row.starts_with(h.raw_name), "row starts with its name");
        assert!(h.row.ends_with(b"\r\n"), "row ends with CRLF");
        assert_eq!(HeaderName::from_bytes(h.raw_name), h.name);
        tiled.extend_from_slice(h.row);
        for v in h.values() {
            inside(v);
        }
    }
    assert_eq!(tiled, msg.header_section(), "rows tile the header section");
    if let Some(n) = msg.content_length() {
        assert_eq!(
            msg.body().len(),
            n as usize,
            "body is Content-Length octets"
        );
    }
    for name in HeaderName::KNOWN {
        let first = msg.first(name);
        assert_eq!(first, msg.rows(name).next());
        assert_eq!(first.map(|h| h.value), msg.first_value(name));
        msg.values(name).for_each(inside);
    }

    // Framing is idempotent: the framed bytes parse to the same message.
    let again = parse(bytes).expect("framed bytes parse again");
    assert_eq!(again.header_count(), msg.header_count());
    assert_eq!(again.body(), msg.body());
    assert_eq!(again.kind(), msg.kind());

    if let Some(Ok(uri)) = msg.request_uri() {
        exercise_uri(&uri);
    }
    let top = msg.top_via();
    let first_via = msg.vias().next();
    if let Ok(top) = &top {
        inside(top.raw);
        assert_eq!(Some(Ok(*top)), first_via, "top_via is the first of vias()");
    }
    for via in msg.vias().flatten() {
        inside(via.raw);
        let _ = (
            via.received_ip(),
            via.has_rfc3261_branch(),
            via.params.into_iter().count(),
        );
    }
    for addr in [msg.from(), msg.to()].into_iter().flatten() {
        inside(addr.raw);
        exercise_uri(&addr.uri);
    }
    for contact in msg.contacts().flatten() {
        if let ContactValue::Addr(c) = contact {
            inside(c.addr.raw);
            exercise_uri(&c.addr.uri);
        }
    }
    for route in msg
        .routes()
        .chain(msg.record_routes())
        .chain(msg.paths())
        .flatten()
    {
        assert!(route.bracketed);
        exercise_uri(&route.uri);
    }
    for tags in [
        msg.require(),
        msg.proxy_require(),
        msg.supported(),
        msg.unsupported(),
    ] {
        tags.flatten().for_each(inside);
    }
    let _ = (
        msg.call_id(),
        msg.cseq(),
        msg.max_forwards(),
        msg.expires(),
        msg.min_expires(),
    );
    let _ = (
        msg.content_type(),
        msg.authorization(),
        msg.proxy_authorization(),
    );
    let _ = (
        msg.www_authenticate(),
        msg.proxy_authenticate(),
        msg.user_agent(),
    );
    let _ = (
        msg.reasons().count(),
        msg.retry_after(),
        msg.date().map(|d| d.map(|d| d.unix_seconds())),
    );

    if msg.is_request() {
        if let Ok(e) = check_request(msg) {
            assert_eq!(Ok(e.top_via), top);
            assert_eq!(Ok(e.cseq), msg.cseq());
            assert_eq!(Ok(e.call_id), msg.call_id());
            assert_eq!(Ok(e.from), msg.from());
            assert_eq!(Ok(e.to), msg.to());
            assert_eq!(Ok(e.max_forwards), msg.max_forwards());
            assert_eq!(Some(e.method), msg.method());
            assert_eq!(e.cseq.method, e.method);
        }
    } else if let Ok(r) = check_response(msg) {
        assert_eq!(Ok(r.top_via), top);
        assert_eq!(Some(r.status), msg.status());
        assert!((100..=699).contains(&r.status));
    }
}

fn exercise_uri(uri: &Uri<'_>) {
    assert!(uri.equivalent(uri), "URI equivalence is reflexive");
    if let Some(sip) = uri.as_sip() {
        let _ = (
            sip.user_unescaped(),
            sip.transport(),
            sip.lr(),
            sip.maddr(),
            sip.user_param(),
        );
        let _ = (
            sip.params.into_iter().count(),
            sip.headers.into_iter().count(),
        );
    }
    let reparsed = Uri::parse(uri.raw()).expect("a parsed URI's raw bytes parse again");
    assert_eq!(&reparsed, uri);
}
