//! Call-flow messages (RFC 3261 §24, RFC 3665, RFC 5118): every file parses and passes
//! `check_request`/`check_response`, and the fields a proxy and registrar use read back exactly.
//!
//! The expected values below were written by reading the message files, not by printing parser
//! output.

use sipfork::sip::{
    check_request, check_response, parse, ContactValue, HeaderName, Host, Message, Method, Scheme,
};

use crate::vectors;

/// One expected Via: sent-by host as written, port, branch, received.
type ViaSpec<'a> = (&'a str, Option<u16>, &'a str, Option<&'a str>);
/// One expected Contact: URI as written, q in thousandths, expires.
type ContactSpec<'a> = (&'a str, Option<u16>, Option<u32>);

struct Expect<'a> {
    file: &'a str,
    start_line: &'a str,
    vias: &'a [ViaSpec<'a>],
    call_id: &'a str,
    cseq: (u32, Method<'a>),
    from: (&'a str, Option<&'a str>),
    to: (&'a str, Option<&'a str>),
    max_forwards: Option<u8>,
    contacts: &'a [ContactSpec<'a>],
    routes: &'a [&'a str],
    record_routes: &'a [&'a str],
    body_len: usize,
}

fn s(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("test vectors are ASCII here")
}

fn check(e: &Expect<'_>) {
    let bytes = vectors::read("flows", e.file);
    let m = parse(&bytes).unwrap_or_else(|err| panic!("{}: {err:?}", e.file));
    let f = e.file;
    assert_eq!(s(m.start_line()), e.start_line, "{f}");
    if m.is_request() {
        check_request(&m).unwrap_or_else(|err| panic!("{f}: {err:?}"));
    } else {
        check_response(&m).unwrap_or_else(|err| panic!("{f}: {err:?}"));
    }
    let vias: Vec<ViaSpec<'_>> = m
        .vias()
        .map(|v| {
            let v = v.unwrap();
            (
                s(v.host_raw),
                v.port,
                s(v.branch.unwrap_or_default()),
                v.received.map(s),
            )
        })
        .collect();
    assert_eq!(vias, e.vias, "{f}: vias");
    assert_eq!(s(m.call_id().unwrap()), e.call_id, "{f}");
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.number, cseq.method), e.cseq, "{f}");
    let from = m.from().unwrap();
    assert_eq!((s(from.uri.raw()), from.tag.map(s)), e.from, "{f}: from");
    let to = m.to().unwrap();
    assert_eq!((s(to.uri.raw()), to.tag.map(s)), e.to, "{f}: to");
    assert_eq!(m.max_forwards().unwrap(), e.max_forwards, "{f}");
    let contacts: Vec<ContactSpec<'_>> = m
        .contacts()
        .map(|c| match c.unwrap() {
            ContactValue::Addr(c) => (s(c.addr.uri.raw()), c.q, c.expires),
            ContactValue::Star => ("*", None, None),
        })
        .collect();
    assert_eq!(contacts, e.contacts, "{f}: contacts");
    let uris = |it: sipfork::sip::Routes<'_, '_>| -> Vec<String> {
        it.map(|r| s(r.unwrap().uri.raw()).to_owned()).collect()
    };
    assert_eq!(uris(m.routes()), e.routes, "{f}: routes");
    assert_eq!(
        uris(m.record_routes()),
        e.record_routes,
        "{f}: record-routes"
    );
    assert_eq!(m.body().len(), e.body_len, "{f}: body");
    assert_eq!(
        m.content_length(),
        Some(e.body_len as u32),
        "{f}: content-length"
    );
    assert_eq!(m.bytes().len(), bytes.len(), "{f}: nothing after the body");
}

const ATLANTA_ALICE: (&str, Option<&str>) = ("sip:alice@atlanta.example.com", Some("9fxced76sl"));
const BILOXI_BOB: &str = "sip:bob@biloxi.example.com";
const SS2_VIA: ViaSpec<'static> = ("ss2.biloxi.example.com", Some(5060), "z9hG4bK721e4.1", None);
const RR_BOTH: [&str; 2] = [
    "sip:ss2.biloxi.example.com;lr",
    "sip:ss1.atlanta.example.com;lr",
];

#[test]
fn session_through_two_proxies_rfc3665_3_2() {
    let call = "3848276298220188511@atlanta.example.com";
    check(&Expect {
        file: "rfc3665-3.2-F1-invite-preloaded-route-sdp.sip",
        start_line: "INVITE sip:bob@biloxi.example.com SIP/2.0",
        vias: &[(
            "client.atlanta.example.com",
            Some(5060),
            "z9hG4bK74b43",
            None,
        )],
        call_id: call,
        cseq: (1, Method::Invite),
        from: ATLANTA_ALICE,
        to: (BILOXI_BOB, None),
        max_forwards: Some(70),
        contacts: &[(
            "sip:alice@client.atlanta.example.com;transport=tcp",
            None,
            None,
        )],
        routes: &["sip:ss1.atlanta.example.com;lr"],
        record_routes: &[],
        body_len: 151,
    });
    check(&Expect {
        file: "rfc3665-3.2-F7-invite-3-vias-2-record-routes.sip",
        start_line: "INVITE sip:bob@client.biloxi.example.com SIP/2.0",
        vias: &[
            SS2_VIA,
            (
                "ss1.atlanta.example.com",
                Some(5060),
                "z9hG4bK2d4790.1",
                Some("192.0.2.111"),
            ),
            (
                "client.atlanta.example.com",
                Some(5060),
                "z9hG4bK74bf9",
                Some("192.0.2.101"),
            ),
        ],
        call_id: call,
        cseq: (2, Method::Invite),
        from: ATLANTA_ALICE,
        to: (BILOXI_BOB, None),
        max_forwards: Some(68),
        contacts: &[(
            "sip:alice@client.atlanta.example.com;transport=tcp",
            None,
            None,
        )],
        routes: &[],
        record_routes: &RR_BOTH,
        body_len: 151,
    });
    check(&Expect {
        file: "rfc3665-3.2-F9-180-ringing-record-route.sip",
        start_line: "SIP/2.0 180 Ringing",
        vias: &[
            (
                "ss2.biloxi.example.com",
                Some(5060),
                "z9hG4bK721e4.1",
                Some("192.0.2.222"),
            ),
            (
                "ss1.atlanta.example.com",
                Some(5060),
                "z9hG4bK2d4790.1",
                Some("192.0.2.111"),
            ),
            (
                "client.atlanta.example.com",
                Some(5060),
                "z9hG4bK74bf9",
                Some("192.0.2.101"),
            ),
        ],
        call_id: call,
        cseq: (2, Method::Invite),
        from: ATLANTA_ALICE,
        to: (BILOXI_BOB, Some("314159")),
        max_forwards: None,
        contacts: &[(
            "sip:bob@client.biloxi.example.com;transport=tcp",
            None,
            None,
        )],
        routes: &[],
        record_routes: &RR_BOTH,
        body_len: 0,
    });
    check(&Expect {
        file: "rfc3665-3.2-F15-ack-route-set.sip",
        start_line: "ACK sip:bob@client.biloxi.example.com SIP/2.0",
        vias: &[(
            "client.atlanta.example.com",
            Some(5060),
            "z9hG4bK74b76",
            None,
        )],
        call_id: call,
        cseq: (2, Method::Ack),
        from: ATLANTA_ALICE,
        to: (BILOXI_BOB, Some("314159")),
        max_forwards: Some(70),
        contacts: &[],
        routes: &[
            "sip:ss1.atlanta.example.com;lr",
            "sip:ss2.biloxi.example.com;lr",
        ],
        record_routes: &[],
        body_len: 0,
    });
    check(&Expect {
        file: "rfc3665-3.2-F20-bye-3-vias.sip",
        start_line: "BYE sip:alice@client.atlanta.example.com SIP/2.0",
        vias: &[
            (
                "ss1.atlanta.example.com",
                Some(5060),
                "z9hG4bK2d4790.1",
                None,
            ),
            (
                "ss2.biloxi.example.com",
                Some(5060),
                "z9hG4bK721e4.1",
                Some("192.0.2.222"),
            ),
            (
                "client.biloxi.example.com",
                Some(5060),
                "z9hG4bKnashds7",
                Some("192.0.2.201"),
            ),
        ],
        call_id: call,
        cseq: (1, Method::Bye),
        from: (BILOXI_BOB, Some("314159")),
        to: ATLANTA_ALICE,
        max_forwards: Some(68),
        contacts: &[],
        routes: &[],
        record_routes: &[],
        body_len: 0,
    });
}

#[test]
fn cancel_flow_rfc3665_3_8() {
    let call = "2xTb9vxSit55XU7p8@atlanta.example.com";
    check(&Expect {
        file: "rfc3665-3.8-F9-cancel.sip",
        start_line: "CANCEL sip:bob@biloxi.example.com SIP/2.0",
        vias: &[(
            "client.atlanta.example.com",
            Some(5060),
            "z9hG4bK74bf9",
            None,
        )],
        call_id: call,
        cseq: (1, Method::Cancel),
        from: ATLANTA_ALICE,
        to: (BILOXI_BOB, None),
        max_forwards: Some(70),
        contacts: &[],
        routes: &["sip:ss1.atlanta.example.com;lr"],
        record_routes: &[],
        body_len: 0,
    });
    check(&Expect {
        file: "rfc3665-3.8-F13-cancel-proxy2-to-callee.sip",
        start_line: "CANCEL sip:bob@client.biloxi.example.com SIP/2.0",
        vias: &[SS2_VIA],
        call_id: call,
        cseq: (1, Method::Cancel),
        from: ATLANTA_ALICE,
        to: (BILOXI_BOB, None),
        max_forwards: Some(70),
        contacts: &[],
        routes: &[],
        record_routes: &[],
        body_len: 0,
    });
    check(&Expect {
        file: "rfc3665-3.8-F15-487-request-terminated.sip",
        start_line: "SIP/2.0 487 Request Terminated",
        vias: &[
            (
                "ss2.biloxi.example.com",
                Some(5060),
                "z9hG4bK721e4.1",
                Some("192.0.2.222"),
            ),
            (
                "ss1.atlanta.example.com",
                Some(5060),
                "z9hG4bK2d4790.1",
                Some("192.0.2.111"),
            ),
            (
                "client.atlanta.example.com",
                Some(5060),
                "z9hG4bK74bf9",
                Some("192.0.2.101"),
            ),
        ],
        call_id: call,
        cseq: (1, Method::Invite),
        from: ATLANTA_ALICE,
        to: (BILOXI_BOB, Some("314159")),
        max_forwards: None,
        contacts: &[],
        routes: &[],
        record_routes: &[],
        body_len: 0,
    });
}

#[test]
fn registrations() {
    let bob = "sips:bob@biloxi.example.com";
    let call = "1j9FpLxk3uxtm8tn@biloxi.example.com";
    let tls = (
        "client.biloxi.example.com",
        Some(5061),
        "z9hG4bKnashds7",
        None,
    );
    check(&Expect {
        file: "rfc3665-2.1-F1-register.sip",
        start_line: "REGISTER sips:ss2.biloxi.example.com SIP/2.0",
        vias: &[tls],
        call_id: call,
        cseq: (1, Method::Register),
        from: (bob, Some("a73kszlfl")),
        to: (bob, None),
        max_forwards: Some(70),
        contacts: &[("sips:bob@client.biloxi.example.com", None, None)],
        routes: &[],
        record_routes: &[],
        body_len: 0,
    });
    check(&Expect {
        file: "rfc3665-2.2-F2-200-two-contacts.sip",
        start_line: "SIP/2.0 200 OK",
        vias: &[(
            "client.biloxi.example.com",
            Some(5061),
            "z9hG4bKnashds7",
            Some("192.0.2.201"),
        )],
        call_id: call,
        cseq: (1, Method::Register),
        from: (bob, Some("a73kszlfl")),
        to: (bob, Some("34095828jh")),
        max_forwards: None,
        contacts: &[
            ("sips:bob@client.biloxi.example.com", None, Some(3600)),
            ("mailto:bob@biloxi.example.com", None, Some(4294967295)),
        ],
        routes: &[],
        record_routes: &[],
        body_len: 0,
    });
    check(&Expect {
        file: "rfc3665-2.4-F1-register-contact-star-expires-0.sip",
        start_line: "REGISTER sips:ss2.biloxi.example.com SIP/2.0",
        vias: &[tls],
        call_id: call,
        cseq: (1, Method::Register),
        from: (bob, Some("a73kszlfl")),
        to: (bob, None),
        max_forwards: Some(70),
        contacts: &[("*", None, None)],
        routes: &[],
        record_routes: &[],
        body_len: 0,
    });
    check(&Expect {
        file: "composed-register-multi-contact-q-expires.sip",
        start_line: "REGISTER sip:bell-telephone.com SIP/2.0",
        vias: &[(
            "worcester.bell-telephone.com",
            Some(5060),
            "z9hG4bKnashds7",
            None,
        )],
        call_id: "843817637684230@998sdasdh09",
        cseq: (1826, Method::Register),
        from: ("sip:watson@bell-telephone.com", Some("456248")),
        to: ("sip:watson@bell-telephone.com", None),
        max_forwards: Some(70),
        contacts: &[
            (
                "sip:watson@worcester.bell-telephone.com",
                Some(700),
                Some(3600),
            ),
            ("mailto:watson@bell-telephone.com", Some(100), None),
            (
                "sip:watson@192.0.2.44:5062;transport=tcp",
                Some(500),
                Some(60),
            ),
        ],
        routes: &[],
        record_routes: &[],
        body_len: 0,
    });
    check(&Expect {
        file: "rfc3261-24.1-F1-register.sip",
        start_line: "REGISTER sip:registrar.biloxi.com SIP/2.0",
        vias: &[("bobspc.biloxi.com", Some(5060), "z9hG4bKnashds7", None)],
        call_id: "843817637684230@998sdasdh09",
        cseq: (1826, Method::Register),
        from: ("sip:bob@biloxi.com", Some("456248")),
        to: ("sip:bob@biloxi.com", None),
        max_forwards: Some(70),
        contacts: &[("sip:bob@192.0.2.4", None, None)],
        routes: &[],
        record_routes: &[],
        body_len: 0,
    });
}

#[test]
fn folded_and_comma_separated_vias() {
    check(&Expect {
        file: "derived-200-ok-via-comma-list-folded.sip",
        start_line: "SIP/2.0 200 OK",
        vias: &[
            (
                "ss2.biloxi.example.com",
                Some(5060),
                "z9hG4bK721e4.1",
                Some("192.0.2.222"),
            ),
            (
                "ss1.atlanta.example.com",
                Some(5060),
                "z9hG4bK2d4790.1",
                Some("192.0.2.111"),
            ),
            (
                "client.atlanta.example.com",
                Some(5060),
                "z9hG4bK74bf9",
                Some("192.0.2.101"),
            ),
        ],
        call_id: "3848276298220188511@atlanta.example.com",
        cseq: (2, Method::Invite),
        from: ATLANTA_ALICE,
        to: (BILOXI_BOB, Some("314159")),
        max_forwards: None,
        contacts: &[(
            "sip:bob@client.biloxi.example.com;transport=tcp",
            None,
            None,
        )],
        routes: &[],
        record_routes: &RR_BOTH,
        body_len: 147,
    });
    check(&Expect {
        file: "derived-invite-via-comma-list.sip",
        start_line: "INVITE sip:bob@client.biloxi.example.com SIP/2.0",
        vias: &[
            SS2_VIA,
            (
                "ss1.atlanta.example.com",
                Some(5060),
                "z9hG4bK2d4790.1",
                Some("192.0.2.111"),
            ),
            (
                "client.atlanta.example.com",
                Some(5060),
                "z9hG4bK74bf9",
                Some("192.0.2.101"),
            ),
        ],
        call_id: "3848276298220188511@atlanta.example.com",
        cseq: (2, Method::Invite),
        from: ATLANTA_ALICE,
        to: (BILOXI_BOB, None),
        max_forwards: Some(68),
        contacts: &[(
            "sip:alice@client.atlanta.example.com;transport=tcp",
            None,
            None,
        )],
        routes: &[],
        record_routes: &RR_BOTH,
        body_len: 151,
    });
    check(&Expect {
        file: "rfc3261-24.2-F6-180-ringing-3-vias.sip",
        start_line: "SIP/2.0 180 Ringing",
        vias: &[
            (
                "server10.biloxi.com",
                None,
                "z9hG4bK4b43c2ff8.1",
                Some("192.0.2.3"),
            ),
            (
                "bigbox3.site3.atlanta.com",
                None,
                "z9hG4bK77ef4c2312983.1",
                Some("192.0.2.2"),
            ),
            (
                "pc33.atlanta.com",
                None,
                "z9hG4bKnashds8",
                Some("192.0.2.1"),
            ),
        ],
        call_id: "a84b4c76e66710",
        cseq: (314159, Method::Invite),
        from: ("sip:alice@atlanta.com", Some("1928301774")),
        to: ("sip:bob@biloxi.com", Some("a6c85cf")),
        max_forwards: None,
        contacts: &[("sip:bob@192.0.2.4", None, None)],
        routes: &[],
        record_routes: &[],
        body_len: 0,
    });
}

#[test]
fn compact_forms_and_ipv6() {
    check(&Expect {
        file: "derived-invite-compact-header-forms.sip",
        start_line: "INVITE sip:bob@biloxi.example.com SIP/2.0",
        vias: &[(
            "client.atlanta.example.com",
            Some(5060),
            "z9hG4bK74bf9",
            None,
        )],
        call_id: "3848276298220188511@atlanta.example.com",
        cseq: (1, Method::Invite),
        from: ATLANTA_ALICE,
        to: (BILOXI_BOB, None),
        max_forwards: Some(70),
        contacts: &[(
            "sip:alice@client.atlanta.example.com;transport=tcp",
            None,
            None,
        )],
        routes: &[],
        record_routes: &[],
        body_len: 151,
    });
    check(&Expect {
        file: "rfc5118-4.7-bye-mixed-ipv4-ipv6-vias.sip",
        start_line: "BYE sip:user@host.example.net SIP/2.0",
        vias: &[
            ("[2001:db8::9:1]", Some(6050), "z9hG4bKas3-111", None),
            ("192.0.2.1", None, "z9hG4bKjhja8781hjuaij65144", None),
            (
                "[2001:db8::9:255]",
                None,
                "z9hG4bK451jj",
                Some("192.0.2.200"),
            ),
        ],
        call_id: "997077@lau_4100",
        cseq: (89187, Method::Bye),
        from: ("sip:user@example.com", Some("81x2")),
        to: ("sip:user@example.net", Some("9817--94")),
        max_forwards: Some(70),
        contacts: &[],
        routes: &[],
        record_routes: &[],
        body_len: 0,
    });
    check(&Expect {
        file: "rfc5118-4.9-invite-ipv4-mapped-ipv6.sip",
        start_line: "INVITE sip:user@example.com SIP/2.0",
        vias: &[
            ("[::ffff:192.0.2.10]", Some(19823), "z9hG4bKbh19", None),
            ("[::ffff:192.0.2.2]", None, "z9hG4bKas3-111", None),
        ],
        call_id: "SSG9559905523997077@hlau_4100",
        cseq: (612, Method::Invite),
        from: ("sip:user@east.example.com", Some("81x2")),
        to: ("sip:user@example.com", None),
        max_forwards: Some(70),
        contacts: &[("sip:ted@[::ffff:192.0.2.2]", None, None)],
        routes: &[],
        record_routes: &[],
        body_len: 245,
    });
}

fn load(file: &str) -> Vec<u8> {
    vectors::read("flows", file)
}

fn parse_ok(bytes: &[u8]) -> Message<'_> {
    parse(bytes).expect("flow parses")
}

#[test]
fn ipv6_hosts_are_addresses() {
    let bytes = load("rfc5118-4.4-register-ipv6-with-port.sip");
    let m = parse_ok(&bytes);
    let ruri = check_request(&m).unwrap().request_uri;
    let sip = ruri.as_sip().unwrap();
    assert_eq!(sip.host, Host::V6("2001:db8::10".parse().unwrap()));
    assert_eq!(sip.port, Some(5070));
    let bytes = load("rfc5118-4.5-bye-via-received-ipv6.sip");
    let via = parse_ok(&bytes).top_via().unwrap();
    assert_eq!(via.host, Host::V6("2001:db8::9:1".parse().unwrap()));
    assert_eq!(via.received, Some(&b"[2001:db8::9:255]"[..]));
    assert_eq!(via.received_ip(), Some("2001:db8::9:255".parse().unwrap()));
    assert_eq!(via.branch, Some(&b"z9hG4bKas3-111"[..]));
}

#[test]
fn digest_challenges_and_credentials() {
    let bytes = load("rfc3665-2.1-F2-401-www-authenticate.sip");
    let c = parse_ok(&bytes).www_authenticate().unwrap().unwrap();
    assert_eq!(c.realm, b"atlanta.example.com");
    assert_eq!(c.nonce, b"ea9c8e88df84f1cec4341ae6cbe5a359");
    assert_eq!(
        (c.qop, c.opaque, c.stale),
        (Some(&b"auth"[..]), Some(&b""[..]), false)
    );
    assert_eq!(c.algorithm, Some(&b"MD5"[..]));

    let bytes = load("rfc3665-3.2-F2-407-proxy-authenticate.sip");
    let c = parse_ok(&bytes).proxy_authenticate().unwrap().unwrap();
    assert_eq!(c.nonce, b"f84f1cec41e6cbe5aea9c8e88d359");

    let bytes = load("rfc3665-2.2-F1-register-mailto-contact.sip");
    let m = parse_ok(&bytes);
    let d = m.authorization().unwrap().unwrap();
    assert_eq!(
        (d.username, d.realm),
        (&b"bob"[..], &b"atlanta.example.com"[..])
    );
    assert_eq!(d.nonce, b"1cec4341ae6cbe5a359ea9c8e88df84f");
    assert_eq!(d.uri, b"sips:ss2.biloxi.example.com");
    assert_eq!(d.response, b"71ba27c64bd01de719686aa4590d5824");
    assert_eq!((d.qop, d.opaque), (Some(&b"auth"[..]), Some(&b""[..])));
    let ContactValue::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!("star")
    };
    assert_eq!(c.addr.uri.scheme(), Scheme::Other(b"mailto"));

    let bytes = load("rfc3665-3.8-F1-invite-udp-proxy-authorization.sip");
    let d = parse_ok(&bytes).proxy_authorization().unwrap().unwrap();
    assert_eq!(d.username, b"alice");
    assert_eq!(d.uri, b"sip:bob@biloxi.example.com");
    assert_eq!(d.response, b"b00b416324679d7e243f55708d44be7b");
}

#[test]
fn folded_unknown_and_list_headers() {
    let bytes = load("derived-options-folded-subject-htab.sip");
    let m = parse_ok(&bytes);
    let subject = m.first(HeaderName::Subject).unwrap();
    assert_eq!(
        subject.value,
        b"I know you're there,\r\n         pick up the phone\r\n         and talk to me!"
    );
    assert!(subject.row.starts_with(b"Subject: ") && subject.row.ends_with(b"me!\r\n"));
    let accept: Vec<&[u8]> = m.values(HeaderName::Accept).collect();
    assert_eq!(
        accept,
        vec![
            &b"application/sdp"[..],
            b"application/simple-message-summary"
        ]
    );

    let bytes = load("rfc3261-11.2-options-200-no-body.sip");
    let m = parse_ok(&bytes);
    let allow: Vec<&[u8]> = m.values(HeaderName::Allow).collect();
    assert_eq!(
        allow,
        vec![&b"INVITE"[..], b"ACK", b"CANCEL", b"OPTIONS", b"BYE"]
    );
    assert_eq!(
        m.supported().map(Result::unwrap).collect::<Vec<_>>(),
        vec![&b"foo"[..]]
    );
    assert_eq!(m.contacts().count(), 2);

    let bytes = load("composed-notify-mwi-message-summary.sip");
    let m = parse_ok(&bytes);
    assert_eq!(check_request(&m).unwrap().method, Method::Notify);
    assert_eq!(
        m.first_value(HeaderName::Event),
        Some(&b"message-summary"[..])
    );
    assert_eq!(
        m.first_value(HeaderName::SubscriptionState),
        Some(&b"active;expires=3599"[..])
    );
    assert!(m
        .content_type()
        .unwrap()
        .unwrap()
        .is("application", "simple-message-summary"));
    assert!(m.body().starts_with(b"Messages-Waiting: yes\r\n"));

    let bytes = load("composed-subscribe-mwi.sip");
    let m = parse_ok(&bytes);
    assert_eq!(m.expires(), Ok(Some(3600)));
    let bytes = load("rfc3261-24.1-F1-register.sip");
    assert_eq!(parse_ok(&bytes).expires(), Ok(Some(7200)));
}

#[test]
fn every_flow_message_parses_and_checks() {
    let manifest = vectors::manifest("flows");
    assert!(
        manifest.len() >= 50,
        "flows manifest lists {} files",
        manifest.len()
    );
    for row in manifest {
        let file = &row[0];
        let bytes = vectors::read("flows", file);
        assert_eq!(
            bytes.len().to_string(),
            row[5],
            "{file}: size differs from the manifest"
        );
        let m = parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e:?}"));
        let kind_ok = if m.is_request() {
            check_request(&m).map(|e| e.method.as_bytes() == row[1].as_bytes())
        } else {
            check_response(&m).map(|r| row[1].starts_with(&r.status.to_string()))
        };
        assert_eq!(kind_ok, Ok(true), "{file}");
        assert_eq!(m.content_length(), Some(m.body().len() as u32), "{file}");
        assert!(m.vias().all(|v| v.is_ok()), "{file}: vias");
        assert!(m.contacts().all(|c| c.is_ok()), "{file}: contacts");
        assert!(
            m.routes().chain(m.record_routes()).all(|r| r.is_ok()),
            "{file}: routes"
        );
        // Rows tile the header section exactly: a builder copying every row loses nothing.
        let rows: Vec<u8> = m.headers().flat_map(|h| h.row.iter().copied()).collect();
        assert_eq!(rows, m.header_section(), "{file}: rows");
    }
}
