//! The splicing builder (`sipfork::sip::build`) against structured, valid SIP messages: whatever
//! it writes parses back to the fields it was built from (RFC 3261 §8.2.6.2 responses, §16.6
//! forwarding, §16.7 step 3 response forwarding, §9.1 CANCEL, §17.1.1.3 ACK, §12.2.1.1
//! in-dialog requests).
//!
//! The strategies write legal messages in many shapes: extension methods, Request-URIs with IPv6
//! hosts, escaped users and parameters, Via lists as separate rows and as comma lists (compact
//! names, folded commas, rport/received/branch variants), From/To with and without display names
//! and tags, Route/Record-Route/Contact lists, unknown headers with odd but legal values, folded
//! rows, bodies with and without Content-Length, rows in any order. The judging is done by
//! `sipfork::testing::build_checks`, which the `build_roundtrip` fuzz target shares.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proptest::sample::select;
use sipfork::sip::build::{self, Forward, InDialog, Reply, ViaFix};
use sipfork::sip::{check_request, check_response, parse, HeaderName};
use sipfork::testing::build_checks::{
    check_ack, check_cancel, check_forward_request, check_forward_response, check_in_dialog,
    check_response_to, exercise_builders,
};
use sipfork::testing::sip_checks::exercise;

// ---------------------------------------------------------------- pieces of a message

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,10}"
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<[u16; 8]>().prop_map(Ipv6Addr::from),
        // Mostly zeros, so `::` compression shows up in every position.
        (0usize..8, any::<u16>()).prop_map(|(i, v)| {
            let mut s = [0u16; 8];
            s[i] = v;
            Ipv6Addr::from(s)
        }),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![ipv4().prop_map(IpAddr::V4), ipv6().prop_map(IpAddr::V6)]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]([a-z0-9-]{0,6}[a-z0-9])?(\\.[a-z]([a-z0-9]{0,5})){0,3}",
        ipv4().prop_map(|a| a.to_string()),
        ipv6().prop_map(|a| format!("[{a}]")),
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), (1u16..).prop_map(|p| format!(":{p}"))]
}

/// A user part; `semicolon` allows `;` in it (only where the URI is in brackets: in an addr-spec
/// the URI ends at the first `;`, RFC 3261 §20.10).
fn user(semicolon: bool) -> impl Strategy<Value = String> {
    let users = prop_oneof![
        "[a-z0-9]{1,8}",
        Just("+1-555-0100".to_owned()),
        Just("%41lice".to_owned()),
        Just("a.b_c~d!e*f'(g)".to_owned()),
        Just("user%20name".to_owned()),
        Just("1000".to_owned()),
        Just("alice;day=tuesday".to_owned()),
        Just("*21#".to_owned()),
    ];
    users.prop_filter("no ; outside brackets", move |u| {
        semicolon || !u.contains(';')
    })
}

fn uri_params() -> impl Strategy<Value = String> {
    prop::collection::vec(
        select(vec![
            ";transport=udp",
            ";transport=TCP",
            ";lr",
            ";user=phone",
            ";maddr=127.0.0.1",
            ";x-odd=%41b",
            ";ob",
            ";method=INVITE",
        ]),
        0..3,
    )
    .prop_map(|v| v.concat())
}

/// A SIP URI; `params` allows `;uri-params` (not for addr-specs without brackets).
fn sip_uri(params: bool) -> impl Strategy<Value = String> {
    (
        select(vec!["sip", "sip", "sip", "sips", "SIP"]),
        prop::option::weighted(0.8, user(params)),
        prop::option::weighted(0.1, Just(":secret".to_owned())),
        host(),
        port(),
        uri_params(),
    )
        .prop_map(move |(scheme, user, password, host, port, p)| {
            let userinfo = match user {
                Some(u) => format!("{u}{}@", password.unwrap_or_default()),
                None => String::new(),
            };
            let p = if params { p } else { String::new() };
            format!("{scheme}:{userinfo}{host}{port}{p}")
        })
}

fn request_uri() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => sip_uri(true),
        1 => Just("tel:+1-555-0100".to_owned()),
        1 => Just("tel:7042;phone-context=example.com".to_owned()),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("INVITE".to_owned()),
        6 => select(vec![
            "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "NOTIFY", "SUBSCRIBE", "REFER", "INFO",
            "UPDATE", "PRACK", "PUBLISH", "REGISTER",
        ])
        .prop_map(str::to_owned),
        2 => "[A-Za-z][A-Za-z0-9.!%*_+`'~-]{0,12}",
    ]
}

/// `Name` + HCOLON + SWS as rows write it.
fn colon() -> impl Strategy<Value = &'static str> {
    prop_oneof![6 => Just(": "), 1 => Just(":"), 1 => Just(" : "), 1 => Just("\t:\t"), 1 => Just(":  ")]
}

/// Header name in its long, compact or odd-case spelling.
fn name(long: &'static str, compact: Option<&'static str>) -> impl Strategy<Value = String> {
    let mut names = vec![long.to_owned(), long.to_owned(), long.to_ascii_uppercase()];
    if let Some(c) = compact {
        names.push(c.to_owned());
        names.push(c.to_ascii_uppercase());
    }
    select(names)
}

/// Separator between list values in one row, folded now and then.
fn comma() -> impl Strategy<Value = &'static str> {
    select(vec![", ", ",", " , ", ",\r\n ", " ,\t"])
}

/// Splits `values` into rows of `name`: each value either starts a new row or joins the last.
fn list_rows(
    long: &'static str,
    compact: Option<&'static str>,
    values: Vec<String>,
) -> impl Strategy<Value = Vec<String>> {
    let n = values.len();
    (
        prop::collection::vec((any::<bool>(), name(long, compact), colon(), comma()), n),
        Just(values),
    )
        .prop_map(|(layout, values)| {
            let mut rows: Vec<String> = Vec::new();
            for (i, (v, (new_row, name, colon, comma))) in values.iter().zip(layout).enumerate() {
                match rows.last_mut() {
                    Some(last) if !new_row && i > 0 => {
                        last.push_str(comma);
                        last.push_str(v);
                    }
                    _ => rows.push(format!("{name}{colon}{v}")),
                }
            }
            rows
        })
}

fn via_value() -> impl Strategy<Value = String> {
    (
        select(vec!["UDP", "UDP", "TCP", "TLS", "SCTP", "WS", "udp"]),
        host(),
        port(),
        prop::option::weighted(0.9, token()),
        0u8..3,
        prop::option::weighted(0.2, ip()),
        prop::option::weighted(0.1, any::<u8>()),
        prop::option::weighted(
            0.2,
            select(vec![";x-flag", ";alias", ";x=\"q, v\"", ";keep=1"]),
        ),
        select(vec![";", ";", " ;", " ; ", ";\r\n "]),
        any::<prop::sample::Index>(),
    )
        .prop_map(
            |(transport, host, port, branch, rport, received, ttl, extra, semi, order)| {
                let mut params: Vec<String> = Vec::new();
                if let Some(b) = branch {
                    params.push(format!("branch=z9hG4bK{b}"));
                }
                match rport {
                    1 => params.push("rport".to_owned()),
                    2 => params.push("rport=5062".to_owned()),
                    _ => {}
                }
                if let Some(ip) = received {
                    params.push(match ip {
                        IpAddr::V4(v4) => format!("received={v4}"),
                        IpAddr::V6(v6) => format!("received=[{v6}]"),
                    });
                }
                if let Some(t) = ttl {
                    params.push(format!("ttl={t}"));
                }
                if let Some(e) = extra {
                    params.push(e.trim_start_matches(';').to_owned());
                }
                if !params.is_empty() {
                    let k = order.index(params.len());
                    params.rotate_left(k);
                }
                let mut v = format!("SIP/2.0/{transport} {host}{port}");
                for p in params {
                    v.push_str(semi);
                    v.push_str(&p);
                }
                v
            },
        )
}

/// A name-addr or addr-spec (From, To, Contact), with optional tag.
fn address(tag: Option<String>) -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(None),
            Just(Some("Alice Smith".to_owned())),
            Just(Some("\"A, \\\"B\\\" <c>\"".to_owned())),
            Just(Some("\"\"".to_owned())),
            Just(Some("Bob".to_owned())),
        ],
        any::<bool>(),
        sip_uri(true),
        sip_uri(false),
        prop::option::weighted(0.2, select(vec![";x=1", ";expires=60", ";q=0.5", ";foo"])),
        Just(tag),
    )
        .prop_map(|(display, bracket, with_params, without, extra, tag)| {
            let mut s = match (display, bracket) {
                (Some(d), _) => format!("{d} <{with_params}>"),
                (None, true) => format!("<{with_params}>"),
                (None, false) => without,
            };
            if let Some(t) = tag {
                s.push_str(";tag=");
                s.push_str(&t);
            }
            if let Some(e) = extra {
                s.push_str(e);
            }
            s
        })
}

/// An address with a tag in `percent` % of cases.
fn tagged_address(percent: u32) -> BoxedStrategy<String> {
    let tag = match percent {
        0 => Just(None).boxed(),
        100.. => token().prop_map(Some).boxed(),
        p => prop_oneof![100 - p => Just(None), p => token().prop_map(Some)].boxed(),
    };
    tag.prop_flat_map(address).boxed()
}

fn route_value() -> impl Strategy<Value = String> {
    (
        host(),
        port(),
        select(vec![";lr", ";lr", ";lr;sft=abc", "", ";lr;transport=udp"]),
        select(vec!["", "", "\"proxy\" ", "Edge "]),
        select(vec!["", "", ";x=y"]),
    )
        .prop_map(|(host, port, params, display, after)| {
            format!("{display}<sip:{host}{port}{params}>{after}")
        })
}

fn contact_value() -> impl Strategy<Value = String> {
    prop_oneof![
        tagged_address(0),
        (user(true), host(), port()).prop_map(|(u, h, p)| format!(
            "<sip:{u}@{h}{p};transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1"
        )),
    ]
}

fn call_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9.!%*_+`'~()<>:\\\\\"/\\[\\]?{}-]{1,24}",
        ("[a-f0-9]{8,32}", host()).prop_map(|(w, h)| format!("{w}@{}", h.trim_matches(['[', ']']))),
    ]
    .prop_filter("a word, or word@word", |c| {
        !c.starts_with('@') && c.matches('@').count() <= 1
    })
}

/// Rows a proxy never looks into, with odd but legal values.
fn other_row() -> impl Strategy<Value = String> {
    let value = select(vec![
        "",
        "plain text",
        "a, b; c=\"d, e\"",
        "tab\there",
        "ünïcödé ✓",
        "line one\r\n line two",
        "line one\r\n\tline two\r\n  three",
        "\"quoted\" <weird>;;",
        "trailing spaces   ",
        "%00%ff",
    ]);
    prop_oneof![
        ("X-[A-Za-z0-9-]{1,10}", colon(), value.clone()).prop_map(|(n, c, v)| format!("{n}{c}{v}")),
        (
            "[a-z!%*_+`'~.-]{1,8}".prop_filter("a name the parser does not know", |n| {
                HeaderName::from_bytes(n.as_bytes()) == HeaderName::Other
            }),
            colon(),
            value
        )
            .prop_map(|(n, c, v)| format!("{n}{c}{v}")),
        select(vec![
            "Subject: I know\r\n you're there",
            "s: lunch",
            "User-Agent: phone/1.0 (lab)",
            "Supported: timer, 100rel",
            "k: path",
            "Allow: INVITE, ACK, CANCEL, BYE",
            "Expires: 60",
            "Accept: application/sdp",
            "P-Asserted-Identity: <sip:+15550100@example.com>",
            "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        ])
        .prop_map(str::to_owned),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        2 => Just(SDP.to_vec()),
        2 => prop::collection::vec(any::<u8>(), 1..200),
        1 => Just(b"\r\n\r\nline\r\n".to_vec()),
    ]
}

const SDP: &[u8] = b"v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 10.0.0.9\r\n\
s=-\r\n\
c=IN IP4 10.0.0.9\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 97 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:97 iLBC/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// Content-Length row for `body` (or none when the datagram's end delimits it).
fn content_length(len: usize) -> impl Strategy<Value = Option<String>> {
    (
        select(vec![0u8, 1, 1, 1, 2]),
        name("Content-Length", Some("l")),
        colon(),
    )
        .prop_map(move |(how, name, colon)| match how {
            0 => None,
            1 => Some(format!("{name}{colon}{len}")),
            _ => Some(format!("{name}{colon}000{len}")),
        })
}

// ---------------------------------------------------------------- whole messages

/// A generated message with the fields it was written from.
#[derive(Clone)]
struct Generated {
    bytes: Vec<u8>,
    method: String,
    request_uri: String,
    call_id: String,
    cseq: u32,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Shrunk failures print as the message they are.
        write!(f, "\n{}", String::from_utf8_lossy(&self.bytes))
    }
}

/// The rows every message has, before shuffling.
#[allow(clippy::type_complexity)]
fn common_rows(
    cseq_method: impl Strategy<Value = String> + 'static,
    to_tag: u32,
) -> BoxedStrategy<(Vec<String>, String, u32, String)> {
    (
        prop::collection::vec(via_value(), 1..5).prop_flat_map(|v| list_rows("Via", Some("v"), v)),
        (name("From", Some("f")), colon(), tagged_address(90)),
        (name("To", Some("t")), colon(), tagged_address(to_tag)),
        (name("Call-ID", Some("i")), colon(), call_id()),
        (
            colon(),
            0u32..=0x7fff_ffff,
            cseq_method,
            select(vec![" ", "  ", "\t"]),
        ),
        prop::collection::vec(route_value(), 0..4)
            .prop_flat_map(|v| list_rows("Record-Route", None, v)),
        prop::collection::vec(contact_value(), 0..3)
            .prop_flat_map(|v| list_rows("Contact", Some("m"), v)),
        prop::collection::vec(other_row(), 0..6),
    )
        .prop_map(|(vias, from, to, cid, cseq, rr, contacts, others)| {
            let mut rows = vias;
            rows.push(format!("{}{}{}", from.0, from.1, from.2));
            rows.push(format!("{}{}{}", to.0, to.1, to.2));
            rows.push(format!("{}{}{}", cid.0, cid.1, cid.2));
            let (c, number, method, space) = cseq;
            rows.push(format!("CSeq{c}{number}{space}{method}"));
            rows.extend(rr);
            rows.extend(contacts);
            rows.extend(others);
            (rows, cid.2, number, method)
        })
        .boxed()
}

fn assemble(start: &str, rows: &[String], body: &[u8]) -> Vec<u8> {
    let mut b = format!("{start}\r\n").into_bytes();
    for r in rows {
        b.extend_from_slice(r.as_bytes());
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(body);
    b
}

fn request_with(method: impl Strategy<Value = String> + 'static) -> BoxedStrategy<Generated> {
    method
        .prop_flat_map(|m| {
            (
                Just(m.clone()),
                request_uri(),
                common_rows(Just(m), 30),
                prop::option::weighted(0.7, (colon(), any::<u8>())),
                prop::collection::vec(route_value(), 0..4)
                    .prop_flat_map(|v| list_rows("Route", None, v)),
                body(),
            )
        })
        .prop_flat_map(|(m, ruri, (rows, cid, cseq, _), mf, routes, body)| {
            let mut rows = rows;
            if let Some((c, n)) = mf {
                rows.push(format!("Max-Forwards{c}{n}"));
            }
            rows.extend(routes);
            (
                Just((m, ruri, cid, cseq, body.clone())),
                Just(rows).prop_shuffle(),
                content_length(body.len()),
            )
        })
        .prop_map(
            |((method, request_uri, call_id, cseq, body), mut rows, cl)| {
                rows.extend(cl);
                Generated {
                    bytes: assemble(&format!("{method} {request_uri} SIP/2.0"), &rows, &body),
                    method,
                    request_uri,
                    call_id,
                    cseq,
                }
            },
        )
        .boxed()
}

fn request() -> BoxedStrategy<Generated> {
    request_with(method())
}

fn response() -> BoxedStrategy<Generated> {
    (
        100u16..=699,
        select(vec![
            "OK",
            "Ringing",
            "",
            "Très bien",
            "Busy  Here ",
            "Session Progress",
        ]),
        common_rows(method(), 90),
        body(),
    )
        .prop_flat_map(|(status, reason, (rows, cid, cseq, method), body)| {
            (
                Just((status, reason, cid, cseq, method, body.clone())),
                Just(rows).prop_shuffle(),
                content_length(body.len()),
            )
        })
        .prop_map(
            |((status, reason, call_id, cseq, method, body), mut rows, cl)| {
                rows.extend(cl);
                Generated {
                    bytes: assemble(&format!("SIP/2.0 {status} {reason}"), &rows, &body),
                    method,
                    request_uri: String::new(),
                    call_id,
                    cseq,
                }
            },
        )
        .boxed()
}

// ---------------------------------------------------------------- builder parameters

#[derive(Clone, Debug)]
struct ForwardParams {
    request_uri: Option<String>,
    via: String,
    record_route: Option<String>,
    drop_first_route: bool,
    max_forwards: u8,
    fix: ViaFix,
    extra: &'static str,
}

impl ForwardParams {
    fn forward(&self) -> Forward<'_> {
        Forward {
            request_uri: self.request_uri.as_deref().map(str::as_bytes),
            via: self.via.as_bytes(),
            record_route: self.record_route.as_deref().map(str::as_bytes),
            record_route_in: None,
            drop_first_route: self.drop_first_route,
            drop_second_route: false,
            max_forwards: self.max_forwards,
            fix: self.fix,
            extra: self.extra.as_bytes(),
            strip_identity: false,
            consume_realm: None,
        }
    }
}

fn via_fix() -> impl Strategy<Value = ViaFix> {
    (prop::option::of(ip()), prop::option::of(any::<u16>()))
        .prop_map(|(received, rport)| ViaFix { received, rport })
}

fn our_address() -> impl Strategy<Value = String> {
    select(vec!["127.0.0.1:5060", "[::1]:5060", "10.1.2.3:5080"]).prop_map(str::to_owned)
}

fn forward_params() -> impl Strategy<Value = ForwardParams> {
    (
        prop::option::weighted(0.8, sip_uri(true)),
        (our_address(), "[A-Za-z0-9]{4,30}"),
        prop::option::of((our_address(), "[A-Za-z0-9]{4,20}")),
        any::<bool>(),
        any::<u8>(),
        via_fix(),
        select(vec![
            "",
            "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n",
            "X-A: 1\r\nX-B: 2\r\n",
        ]),
    )
        .prop_map(
            |(ruri, (addr, branch), rr, drop, mf, fix, extra)| ForwardParams {
                request_uri: ruri,
                via: format!("SIP/2.0/UDP {addr};branch=z9hG4bK{branch}"),
                record_route: rr.map(|(a, t)| format!("sip:{a};lr;sft={t}")),
                drop_first_route: drop,
                max_forwards: mf,
                fix,
                extra,
            },
        )
}

#[derive(Clone, Debug)]
struct ReplyParams {
    status: u16,
    reason: &'static str,
    fix: ViaFix,
    to_tag: Option<String>,
    extra: &'static str,
    body: Option<(&'static str, Vec<u8>)>,
}

impl ReplyParams {
    fn reply(&self) -> Reply<'_> {
        Reply {
            status: self.status,
            reason: self.reason,
            fix: self.fix,
            to_tag: self.to_tag.as_deref().map(str::as_bytes),
            extra: self.extra.as_bytes(),
            body: self.body.as_ref().map(|(t, b)| (*t, &b[..])),
        }
    }
}

fn reply_params() -> impl Strategy<Value = ReplyParams> {
    (
        100u16..=699,
        select(vec!["Trying", "OK", "Request Terminated", "", "Très bien"]),
        via_fix(),
        prop::option::weighted(0.8, "[A-Za-z0-9-]{1,24}"),
        select(vec![
            "",
            "Retry-After: 5\r\n",
            "Allow: INVITE, ACK\r\nAccept: application/sdp\r\n",
        ]),
        prop::option::weighted(0.2, (select(vec!["text/plain", "application/sdp"]), body())),
    )
        .prop_map(|(status, reason, fix, to_tag, extra, body)| ReplyParams {
            status,
            reason,
            fix,
            to_tag,
            extra,
            body,
        })
}

// ---------------------------------------------------------------- properties

fn parsed(g: &Generated) -> sipfork::sip::Message<'_> {
    parse(&g.bytes).unwrap_or_else(|e| {
        panic!(
            "generated message does not parse: {e:?}\n{}",
            String::from_utf8_lossy(&g.bytes)
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// The generator writes what it means: each message parses, validates, and reads back the
    /// fields it was written from (otherwise the properties below would prove little).
    #[test]
    fn generated_messages_read_back(g in request(), r in response()) {
        let m = parsed(&g);
        exercise(&m);
        let e = check_request(&m).unwrap_or_else(|err| {
            panic!("{err:?}\n{}", String::from_utf8_lossy(&g.bytes))
        });
        prop_assert_eq!(e.method.as_bytes(), g.method.as_bytes());
        prop_assert_eq!(e.request_uri.raw(), g.request_uri.as_bytes());
        prop_assert_eq!(e.call_id, g.call_id.as_bytes());
        prop_assert_eq!(e.cseq.number, g.cseq);
        let m = parsed(&r);
        exercise(&m);
        let e = check_response(&m).unwrap_or_else(|err| {
            panic!("{err:?}\n{}", String::from_utf8_lossy(&r.bytes))
        });
        prop_assert_eq!(e.call_id, r.call_id.as_bytes());
        prop_assert_eq!((e.cseq.number, e.cseq.method.as_bytes()), (r.cseq, r.method.as_bytes()));
    }

    /// §16.6: new Request-URI, our Via on top and the received ones below in order (the top one
    /// fixed), Max-Forwards as asked, the first Route dropped iff asked, our Record-Route on
    /// top, every other row byte-identical and in order, body identical, Content-Length right.
    #[test]
    fn forward_request_reads_back(g in request(), p in forward_params()) {
        let m = parsed(&g);
        let fwd = p.forward();
        let mut out = Vec::new();
        build::forward_request(&m, &fwd, &mut out);
        check_forward_request(&m, &fwd, &out);
        let f = parse(&out).expect("checked");
        let expected_uri = p.request_uri.as_deref().unwrap_or(&g.request_uri);
        prop_assert_eq!(f.request_uri_raw(), Some(expected_uri.as_bytes()));
        prop_assert_eq!(f.call_id(), Ok(g.call_id.as_bytes()));
    }

    /// §16.7 step 3: only the first Via value goes, also when it shares a row with others.
    #[test]
    fn forward_response_reads_back(r in response()) {
        let m = parsed(&r);
        let mut out = Vec::new();
        build::forward_response(&m, &mut out);
        check_forward_response(&m, &out);
    }

    /// §8.2.6.2: Via rows (the top one fixed), From, To (tag added iff it had none), Call-ID and
    /// CSeq copied; the extra rows and the body after them.
    #[test]
    fn response_reads_back(g in request(), p in reply_params()) {
        let m = parsed(&g);
        let reply = p.reply();
        let mut out = Vec::new();
        build::response(&m, &reply, &mut out);
        check_response_to(&m, &reply, &out);
    }

    /// §9.1 and §17.1.1.3: the CANCEL and the ACK for a forwarded INVITE carry its
    /// Request-URI, its top Via alone, its Route rows, From, To (the response's for the ACK),
    /// Call-ID and CSeq number with their own method.
    #[test]
    fn cancel_and_ack_read_back(
        g in request_with(Just("INVITE".to_owned())),
        p in forward_params(),
        r in response(),
        reason in prop::option::of(select(vec![
            "SIP;cause=200;text=\"Call completed elsewhere\"",
            "SIP;cause=487",
        ])),
    ) {
        let m = parsed(&g);
        let mut sent = Vec::new();
        build::forward_request(&m, &p.forward(), &mut sent);
        let sent = parse(&sent).expect("checked by forward_request_reads_back");
        let mut cancel = Vec::new();
        build::cancel_for(&sent, reason.map(str::as_bytes), &mut cancel);
        check_cancel(&sent, reason.map(str::as_bytes), &cancel);
        let resp = parsed(&r);
        let mut ack = Vec::new();
        build::ack_for(&sent, &resp, &mut ack);
        check_ack(&sent, &resp, &ack);
    }

    /// §12.2.1.1: the ACK/BYE sipfork sends in a device's dialog has exactly the fields given.
    #[test]
    fn in_dialog_reads_back(
        method in select(vec!["ACK", "BYE"]),
        target in sip_uri(true),
        routes in prop::collection::vec(route_value(), 0..4),
        via in via_value(),
        from in tagged_address(100),
        to in tagged_address(100),
        call_id in call_id(),
        cseq in any::<u32>(),
        extra in select(vec!["", "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\n"]),
    ) {
        let routes: Vec<&[u8]> = routes.iter().map(|r| r.as_bytes()).collect();
        let d = InDialog {
            method: method.as_bytes(),
            target: target.as_bytes(),
            routes: &routes,
            via: via.as_bytes(),
            from: from.as_bytes(),
            to: to.as_bytes(),
            call_id: call_id.as_bytes(),
            cseq,
            extra: extra.as_bytes(),
        };
        let mut out = Vec::new();
        build::in_dialog(&d, &mut out);
        check_in_dialog(&d, &out);
        let f = parse(&out).expect("checked");
        check_request(&f).unwrap_or_else(|e| panic!("{e:?}\n{}", String::from_utf8_lossy(&out)));
    }

    /// Every builder, chained as the proxy chains them (forward, CANCEL, 487, ACK, BYE), on
    /// generated requests and responses: the checks the fuzz target runs.
    #[test]
    fn every_builder_as_the_proxy_uses_them(g in request(), r in response(), variant in any::<u8>()) {
        exercise_builders(&parsed(&g), variant);
        exercise_builders(&parsed(&r), variant);
    }
}

// ---------------------------------------------------------------- fixed cases

fn forward_with(bytes: &[u8], fwd: &Forward<'_>) -> Vec<u8> {
    let m = parse(bytes).unwrap();
    let mut out = Vec::new();
    build::forward_request(&m, fwd, &mut out);
    check_forward_request(&m, fwd, &out);
    out
}

const OUR_VIA: &[u8] = b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf1";

fn forward(fix: ViaFix, drop_first_route: bool) -> Forward<'static> {
    Forward {
        request_uri: Some(b"sip:1000@[2001:db8::7]:5071"),
        via: OUR_VIA,
        record_route: Some(b"sip:127.0.0.1:5060;lr;sft=x"),
        record_route_in: None,
        drop_first_route,
        drop_second_route: false,
        max_forwards: 69,
        fix,
        extra: b"",
        strip_identity: false,
        consume_realm: None,
    }
}

/// A compact, folded, comma-listed top Via row: only its first value gets received/rport.
#[test]
fn fix_applies_to_the_first_value_of_a_folded_compact_via_row() {
    let req = b"INVITE sip:1000@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP [2001:db8::9]:5070 ;rport; branch=z9hG4bKa ,\r\n SIP/2.0/TCP p.example.com;branch=z9hG4bKb;rport\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:1000@example.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
    let fix = ViaFix {
        received: Some("2001:db8::99".parse().unwrap()),
        rport: Some(5070),
    };
    let out = forward_with(req, &forward(fix, false));
    let f = parse(&out).unwrap();
    let vias: Vec<_> = f.vias().map(|v| v.unwrap().raw).collect();
    assert_eq!(
        vias,
        vec![
            OUR_VIA,
            b"SIP/2.0/UDP [2001:db8::9]:5070 ;rport=5070; branch=z9hG4bKa;received=[2001:db8::99]",
            b"SIP/2.0/TCP p.example.com;branch=z9hG4bKb;rport",
        ]
    );
}

/// The first Route row holds two values: only the first goes, the row and the second stay.
#[test]
fn dropping_the_first_route_keeps_the_rest_of_its_row() {
    let req = b"BYE sip:dev@10.0.0.7:5071 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKa\r\n\
Route: <sip:127.0.0.1:5060;lr;sft=x>,\r\n <sip:edge.example.com;lr>\r\nRoute: <sip:last;lr>\r\n\
From: <sip:a@example.com>;tag=1\r\nTo: <sip:1000@example.com>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nMax-Forwards: 0\r\n\r\n";
    let out = forward_with(req, &forward(ViaFix::default(), true));
    let f = parse(&out).unwrap();
    assert_eq!(
        f.values(HeaderName::Route).collect::<Vec<_>>(),
        vec![&b"<sip:edge.example.com;lr>"[..], b"<sip:last;lr>"]
    );
    let out = forward_with(req, &forward(ViaFix::default(), false));
    assert_eq!(parse(&out).unwrap().values(HeaderName::Route).count(), 3);
}

/// A request without Content-Length: the body runs to the datagram's end, and the forwarded
/// copy says how long it is.
#[test]
fn body_without_content_length_gets_one() {
    let req = b"MESSAGE sip:1000@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKa\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:1000@example.com>\r\n\
Call-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\r\nhello\r\n\r\n";
    let out = forward_with(req, &forward(ViaFix::default(), false));
    let f = parse(&out).unwrap();
    assert_eq!(f.body(), b"hello\r\n\r\n");
    assert_eq!(f.content_length(), Some(9));
}

/// A To in addr-spec form gets its tag as a header parameter; a tagged To is left alone.
#[test]
fn to_tag_added_only_when_missing() {
    for (to, expected) in [
        (
            &b"To: sip:1000@example.com"[..],
            &b"To: sip:1000@example.com;tag=t1\r\n"[..],
        ),
        (
            b"t:  \"Bob\" <sip:1000@example.com> ;x=y  ",
            b"t:  \"Bob\" <sip:1000@example.com> ;x=y;tag=t1  \r\n",
        ),
        (
            b"To: <sip:1000@example.com>;tag=dev",
            b"To: <sip:1000@example.com>;tag=dev\r\n",
        ),
    ] {
        let mut req = b"OPTIONS sip:1000@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKa\r\n\
From: <sip:a@example.com>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
            .to_vec();
        req.extend_from_slice(to);
        req.extend_from_slice(b"\r\n\r\n");
        let m = parse(&req).unwrap();
        let reply = Reply {
            status: 404,
            reason: "Not Found",
            fix: ViaFix::default(),
            to_tag: Some(b"t1"),
            extra: b"",
            body: None,
        };
        let mut out = Vec::new();
        build::response(&m, &reply, &mut out);
        check_response_to(&m, &reply, &out);
        let r = parse(&out).unwrap();
        assert_eq!(r.first(HeaderName::To).unwrap().row, expected);
    }
}

/// Our Via alone in the top row of a response: the row disappears; sharing a row with the
/// caller's Via: only our value goes.
#[test]
fn forwarded_response_loses_our_via_whatever_the_layout() {
    for (vias, left) in [
        (
            &b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf1\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKa\r\n"[..],
            &b"Via: SIP/2.0/UDP a;branch=z9hG4bKa\r\n"[..],
        ),
        (
            b"v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf1 ,\r\n\tSIP/2.0/UDP a;branch=z9hG4bKa, SIP/2.0/UDP b\r\n",
            b"v: SIP/2.0/UDP a;branch=z9hG4bKa, SIP/2.0/UDP b\r\n",
        ),
    ] {
        let mut resp = b"SIP/2.0 180 Ringing\r\n".to_vec();
        resp.extend_from_slice(vias);
        resp.extend_from_slice(b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n");
        let m = parse(&resp).unwrap();
        let mut out = Vec::new();
        build::forward_response(&m, &mut out);
        check_forward_response(&m, &out);
        let f = parse(&out).unwrap();
        assert_eq!(f.first(HeaderName::Via).unwrap().row, left);
    }
}
