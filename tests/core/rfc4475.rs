//! RFC 4475 torture vectors: each gets the disposition recorded in `RFC4475-DISPOSITIONS.md`,
//! which agrees with `MANIFEST.tsv` (deviations are listed and explained there).
//!
//! A vector is *processed* when `parse` and `check_request`/`check_response` both succeed; the
//! semantic refusals a proxy makes afterwards (416, 420, 483, 501) are asserted here only as far as
//! the message exposes what the proxy needs to decide; the proxy tests assert the answers.

use sipfork::sip::{
    check_request, check_response, looks_like_response, parse, ContactValue, Disposition,
    HeaderName, Host, Kind, Message, Method, ParseError, Scheme, Uri,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::vectors;

/// What happens to a vector in sipfork's proxy/registrar role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Parse and check succeed.
    Process,
    /// `parse` fails with this error.
    Parse(ParseError),
    /// `parse` succeeds, `check_request`/`check_response` fails with this error.
    Check(ParseError),
}

use Outcome::{Check, Parse, Process};

const CASES: &[(&str, Outcome)] = &[
    ("wsinv", Process),
    ("intmeth", Process),
    ("esc01", Process),
    ("escnull", Process),
    ("esc02", Process),
    ("lwsdisp", Process),
    ("longreq", Process),
    ("dblreq", Process),
    ("semiuri", Process),
    ("transports", Process),
    ("mpart01", Process),
    ("unreason", Process),
    ("noreason", Process),
    ("badinv01", Check(ParseError::BadVia)),
    ("clerr", Parse(ParseError::ContentLengthTooLarge)),
    ("ncl", Parse(ParseError::BadContentLength)),
    ("scalar02", Check(ParseError::CSeqOutOfRange)),
    ("scalarlg", Check(ParseError::CSeqOutOfRange)),
    ("quotbal", Check(ParseError::UnterminatedQuote)),
    ("ltgtruri", Parse(ParseError::BadRequestUri)),
    ("lwsruri", Parse(ParseError::BadStartLine)),
    ("lwsstart", Parse(ParseError::BadStartLine)),
    ("trws", Parse(ParseError::BadStartLine)),
    ("escruri", Check(ParseError::HeadersInRequestUri)),
    ("baddate", Process),
    ("regbadct", Check(ParseError::UnbracketedUri)),
    ("badaspec", Check(ParseError::BadUri)),
    ("baddn", Parse(ParseError::UnterminatedHeaders)),
    ("badvers", Parse(ParseError::VersionNotSupported)),
    ("mismatch01", Check(ParseError::CSeqMethodMismatch)),
    ("mismatch02", Check(ParseError::CSeqMethodMismatch)),
    ("bigcode", Parse(ParseError::BadStatusCode)),
    ("badbranch", Process),
    ("insuf", Check(ParseError::MissingHeader(HeaderName::From))),
    ("unkscm", Process),
    ("novelsc", Process),
    ("unksm2", Process),
    ("bext01", Process),
    ("invut", Process),
    ("regaut01", Process),
    (
        "multi01",
        Check(ParseError::RepeatedHeader(HeaderName::From)),
    ),
    ("mcl01", Parse(ParseError::ConflictingContentLength)),
    ("bcast", Process),
    ("zeromf", Process),
    ("cparam01", Process),
    ("cparam02", Process),
    ("regescrt", Process),
    ("sdp01", Process),
    ("inv2543", Process),
    ("test", Parse(ParseError::BadStartLine)),
];

/// Vectors the manifest calls `invalid` that we process, because the RFC lets an element that
/// does not use the broken field ignore it (explained in the dispositions table).
const LIBERAL: &[&str] = &["baddate"];

fn outcome(datagram: &[u8]) -> Outcome {
    let msg = match parse(datagram) {
        Ok(m) => m,
        Err(e) => return Parse(e),
    };
    let checked = if msg.is_request() {
        check_request(&msg).map(|_| ())
    } else {
        check_response(&msg).map(|_| ())
    };
    match checked {
        Ok(()) => Process,
        Err(e) => Check(e),
    }
}

/// The disposition column of the table: `process`, a status code, or `drop`.
fn disposition_word(datagram: &[u8], outcome: Outcome) -> String {
    let err = match outcome {
        Process => return "process".into(),
        Parse(e) | Check(e) => e,
    };
    match err.disposition(!looks_like_response(datagram)) {
        Disposition::Reply(code, _) => code.to_string(),
        Disposition::Drop(_) => "drop".into(),
    }
}

fn error_word(outcome: Outcome) -> String {
    match outcome {
        Process => "-".into(),
        Parse(e) | Check(e) => format!("{e:?}"),
    }
}

/// `vector -> (disposition, error)` from the markdown table.
fn documented() -> BTreeMap<String, (String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/core/RFC4475-DISPOSITIONS.md"
    );
    let text = std::fs::read_to_string(path).expect("invariant: dispositions table exists");
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            let unquote = |s: &str| s.trim_matches('`').to_owned();
            (unquote(cols[1]), (unquote(cols[4]), unquote(cols[5])))
        })
        .collect()
}

#[test]
fn every_vector_gets_its_documented_disposition() {
    let manifest = vectors::manifest("rfc4475");
    let table = documented();
    assert_eq!(manifest.len(), CASES.len(), "a vector was added or removed");
    assert_eq!(
        table.len(),
        CASES.len(),
        "the dispositions table misses a vector"
    );
    for row in &manifest {
        let (name, expected, bytes) = (&row[0], &row[2], &row[6]);
        let datagram = vectors::read("rfc4475", &format!("{name}.dat"));
        assert_eq!(
            datagram.len().to_string(),
            *bytes,
            "{name}: file differs from the manifest"
        );
        let want = CASES
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} has no case"))
            .1;
        let got = outcome(&datagram);
        assert_eq!(got, want, "{name}");
        match expected.as_str() {
            "valid" => assert_eq!(got, Process, "{name}: manifest says valid"),
            "invalid" if LIBERAL.contains(&name.as_str()) => assert_eq!(got, Process),
            "invalid" => assert_ne!(got, Process, "{name}: manifest says invalid"),
            "valid-but-semantic" => assert!(!matches!(got, Parse(_)), "{name}: must parse"),
            other => panic!("{name}: unknown manifest class {other}"),
        }
        let (doc_disposition, doc_error) = table
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in the dispositions table"));
        assert_eq!(
            *doc_disposition,
            disposition_word(&datagram, got),
            "{name}: table disposition"
        );
        assert_eq!(*doc_error, error_word(got), "{name}: table error");
    }
}

fn load(name: &str) -> Vec<u8> {
    vectors::read("rfc4475", &format!("{name}.dat"))
}

fn parse_ok(bytes: &[u8]) -> Message<'_> {
    parse(bytes).expect("vector parses")
}

fn sip_uri<'b>(uri: &Uri<'b>) -> sipfork::sip::SipUri<'b> {
    *uri.as_sip().expect("a SIP URI")
}

/// Transport, sent-by host and branch of one Via, owned for comparison.
type ViaTriple = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

fn via_fields(m: &Message<'_>) -> Vec<ViaTriple> {
    m.vias()
        .map(|v| {
            let v = v.expect("via parses");
            (
                v.transport.to_vec(),
                v.host_raw.to_vec(),
                v.branch.map(<[u8]>::to_vec),
            )
        })
        .collect()
}

fn owned(items: &[&[u8]]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.to_vec()).collect()
}

#[test]
fn wsinv_short_tortuous_invite() {
    let bytes = load("wsinv");
    let m = parse_ok(&bytes);
    let e = check_request(&m).unwrap();
    assert_eq!(e.method, Method::Invite);
    let ruri = sip_uri(&e.request_uri);
    assert_eq!(
        (ruri.user, ruri.host),
        (
            Some(&b"vivekg"[..]),
            Host::Domain(b"chair-dnrc.example.com")
        )
    );
    assert_eq!(ruri.param("unknownparam"), Some(None));
    assert_eq!(e.to.uri.raw(), b"sip:vivekg@chair-dnrc.example.com");
    assert_eq!(e.to.tag, Some(&b"1918181833n"[..]));
    assert_eq!(e.from.display, Some(&br#"J Rosenberg \\\""#[..]));
    assert_eq!(e.from.tag, Some(&b"98asjd8"[..]));
    assert_eq!(e.max_forwards, Some(68));
    assert_eq!(e.call_id, b"wsinv.ndaksdj@192.0.2.1");
    assert_eq!((e.cseq.number, e.cseq.method), (9, Method::Invite));
    assert_eq!(
        via_fields(&m),
        vec![
            (
                b"UDP".to_vec(),
                b"192.0.2.2".to_vec(),
                Some(b"390skdjuw".to_vec())
            ),
            (
                b"TCP".to_vec(),
                b"spindle.example.com".to_vec(),
                Some(b"z9hG4bK9ikj8".to_vec())
            ),
            (
                b"UDP".to_vec(),
                b"192.168.255.111".to_vec(),
                Some(b"z9hG4bK30239".to_vec())
            ),
        ]
    );
    let subject = m.first(HeaderName::Subject).unwrap();
    assert_eq!((subject.raw_name, subject.value), (&b"s"[..], &b""[..]));
    let unknown: Vec<_> = m
        .headers()
        .filter(|h| h.name == HeaderName::Other)
        .collect();
    assert_eq!(unknown[0].raw_name, b"NewFangledHeader");
    assert_eq!(
        unknown[0].value,
        b"newfangled value\r\n continued newfangled value"
    );
    assert_eq!(unknown[1].value, b";;,,;;,;");
    assert_eq!(
        unknown[1].row,
        b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
    );
    assert_eq!(
        unknown[1].values().collect::<Vec<_>>(),
        vec![&b";;,,;;,;"[..]]
    );
    let route = m.routes().next().unwrap().unwrap();
    assert_eq!(
        route.uri.raw(),
        b"sip:services.example.com;lr;unknownwith=value;unknown-no-value"
    );
    assert!(sip_uri(&route.uri).lr());
    let ContactValue::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!("star")
    };
    assert_eq!(c.addr.display, Some(&br#"Quoted string \"\""#[..]));
    assert_eq!(c.q, Some(330));
    assert_eq!(c.addr.params.get("newparam"), Some(Some(&b"newvalue"[..])));
    assert_eq!(c.addr.params.get("secondparam"), Some(None));
    assert_eq!(m.content_length(), Some(150));
    assert_eq!(m.body().len(), 150);
    assert!(m.body().starts_with(b"v=0\r\n"));
}

#[test]
fn intmeth_wide_range_of_characters() {
    let bytes = load("intmeth");
    let m = parse_ok(&bytes);
    let e = check_request(&m).unwrap();
    let method = b"!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(e.method, Method::Other(method));
    assert_eq!(
        (e.cseq.number, e.cseq.method),
        (139122385, Method::Other(method))
    );
    let ruri = sip_uri(&e.request_uri);
    assert_eq!(
        ruri.user,
        Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
    );
    assert_eq!(
        ruri.password,
        Some(&b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"[..])
    );
    assert_eq!(ruri.host, Host::Domain(b"example.com"));
    assert_eq!(e.to.display, Some(&b"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"[..]));
    assert_eq!(sip_uri(&e.to.uri).user, ruri.user);
    assert_eq!(e.from.display, Some(&b"token1~` token2'+_ token3*%!.-"[..]));
    assert_eq!(e.from.tag, Some(&b"_token~1'+`*%!-."[..]));
    let from_param = e.from.params.get("fromParam''~+*_!.-%").flatten().unwrap();
    assert!(from_param.starts_with(b"\"") && from_param.ends_with(b"\""));
    assert_eq!(e.call_id, b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
    assert_eq!(e.max_forwards, Some(255));
    assert_eq!(e.top_via.branch, Some(&b"z9hG4bK-.!%66*_+`'~"[..]));
    let ext = m.headers().find(|h| h.name == HeaderName::Other).unwrap();
    assert_eq!(ext.raw_name, b"extensionHeader-!.%*+_`'~");
    assert_eq!(
        &ext.row[ext.raw_name.len() + 1..ext.row.len() - 2],
        ext.value
    );
    assert!(ext.value.starts_with(&[0xef, 0xbb, 0xbf]));
}

#[test]
fn esc01_escapes_decode_once_inside_uris() {
    let bytes = load("esc01");
    let m = parse_ok(&bytes);
    let e = check_request(&m).unwrap();
    let ruri = sip_uri(&e.request_uri);
    assert_eq!(ruri.user, Some(&b"sips%3Auser%40example.com"[..]));
    assert_eq!(
        ruri.user_unescaped().unwrap().as_ref(),
        b"sips:user@example.com"
    );
    assert_eq!(ruri.host, Host::Domain(b"example.net"));
    assert_eq!(
        sip_uri(&e.to.uri).user_unescaped().unwrap().as_ref(),
        b"user"
    );
    assert_eq!(
        sip_uri(&e.from.uri).user_unescaped().unwrap().as_ref(),
        b"I have spaces"
    );
    assert_eq!(e.call_id, b"esc01.239409asdfakjkn23onasd0-3234");
    assert!(m.content_type().unwrap().unwrap().is("application", "sdp"));
    let ContactValue::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!("star")
    };
    let curi = sip_uri(&c.addr.uri);
    assert_eq!(curi.user_unescaped().unwrap().as_ref(), b"caller");
    assert!(curi.lr());
    let name = curi.param("name").flatten().unwrap();
    assert_eq!(sipfork::sip::uri::unescape(name).as_ref(), b"value%41");
}

#[test]
fn escnull_keeps_escaped_nulls_distinct() {
    let bytes = load("escnull");
    let m = parse_ok(&bytes);
    let e = check_request(&m).unwrap();
    assert_eq!(
        sip_uri(&e.to.uri).user_unescaped().unwrap().as_ref(),
        b"null-\0-null"
    );
    let users: Vec<Vec<u8>> = m
        .contacts()
        .map(|c| match c.unwrap() {
            ContactValue::Addr(c) => sip_uri(&c.addr.uri).user_unescaped().unwrap().into_owned(),
            ContactValue::Star => panic!("star"),
        })
        .collect();
    assert_eq!(users, vec![b"\0".to_vec(), b"\0\0".to_vec()]);
    assert_eq!(m.content_length(), Some(0));
    assert_eq!(m.first(HeaderName::ContentLength).unwrap().raw_name, b"L");
}

#[test]
fn esc02_percent_outside_escapes_is_literal() {
    let bytes = load("esc02");
    let m = parse_ok(&bytes);
    let e = check_request(&m).unwrap();
    assert_eq!(e.method, Method::Other(b"RE%47IST%45R"));
    assert_eq!(e.to.display, Some(&b"%Z%45"[..]));
    assert_eq!(e.top_via.branch, Some(&b"z9hG4bK209%fzsnel234"[..]));
    assert_eq!(m.contacts().count(), 2);
    let other = m.headers().find(|h| h.name == HeaderName::Other).unwrap();
    assert_eq!(other.raw_name, b"C%6Fntact");
}

#[test]
fn lwsdisp_and_semiuri_and_transports() {
    let bytes = load("lwsdisp");
    let e = check_request(&parse_ok(&bytes)).unwrap();
    assert_eq!(
        (e.from.display, e.from.tag),
        (Some(&b"caller"[..]), Some(&b"323"[..]))
    );

    let bytes = load("semiuri");
    let m = parse_ok(&bytes);
    let ruri = sip_uri(&check_request(&m).unwrap().request_uri);
    assert_eq!(ruri.user, Some(&b"user;par=u%40example.net"[..]));
    assert_eq!(
        ruri.user_unescaped().unwrap().as_ref(),
        b"user;par=u@example.net"
    );
    assert_eq!(ruri.host, Host::Domain(b"example.com"));
    assert!(ruri.params.raw().is_empty());
    let accept: Vec<&[u8]> = m.values(HeaderName::Accept).collect();
    assert_eq!(
        accept,
        vec![
            &b"application/sdp"[..],
            b"application/pkcs7-mime",
            b"multipart/mixed",
            b"multipart/signed",
            b"message/sip",
            b"message/sipfrag"
        ]
    );

    let bytes = load("transports");
    let m = parse_ok(&bytes);
    let transports: Vec<Vec<u8>> = via_fields(&m).into_iter().map(|v| v.0).collect();
    assert_eq!(
        transports,
        owned(&[b"UDP", b"SCTP", b"TLS", b"UNKNOWN", b"TCP"])
    );
}

#[test]
fn longreq_keeps_every_via_in_order() {
    let bytes = load("longreq");
    let m = parse_ok(&bytes);
    let e = check_request(&m).unwrap();
    let hosts: Vec<Vec<u8>> = via_fields(&m).into_iter().map(|v| v.1).collect();
    let mut expected: Vec<Vec<u8>> = (1..=33)
        .rev()
        .map(|i| format!("sip{i}.example.com").into_bytes())
        .collect();
    expected.push(b"host.example.com".to_vec());
    assert_eq!(hosts, expected);
    let last = m.vias().last().unwrap().unwrap();
    assert_eq!(last.received, Some(&b"192.0.2.5"[..]));
    assert!(last.branch.unwrap().starts_with(b"verylonglong"));
    let raw_names: Vec<&[u8]> = m.rows(HeaderName::Via).map(|h| h.raw_name).collect();
    assert_eq!(
        &raw_names[..12],
        &[
            &b"Via"[..],
            b"v",
            b"V",
            b"Via",
            b"ViA",
            b"VIa",
            b"VIA",
            b"via",
            b"viA",
            b"vIa",
            b"vIA",
            b"V"
        ]
    );
    assert!(e
        .to
        .display
        .unwrap()
        .starts_with(b"I have a user name of extremeextreme"));
    assert_eq!(sip_uri(&e.to.uri).port, Some(6000));
    assert!(sip_uri(&e.to.uri)
        .param("unknownparam1")
        .flatten()
        .unwrap()
        .starts_with(b"verylonglong"));
    assert!(e.from.tag.unwrap().starts_with(b"1298298298"));
    assert!(
        e.call_id.starts_with(b"longreq.onereallyreally") && e.call_id.ends_with(b"longcallid")
    );
    let unknown = m.headers().find(|h| h.name == HeaderName::Other).unwrap();
    assert!(
        unknown.raw_name.starts_with(b"Unknown-LongLong") && unknown.raw_name.ends_with(b"-Name")
    );
    assert_eq!(m.content_length(), Some(150));
    assert_eq!(m.body().len(), 150);
}

#[test]
fn dblreq_frames_one_register_and_drops_the_rest() {
    let bytes = load("dblreq");
    let m = parse_ok(&bytes);
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(m.bytes(), &bytes[..end]);
    assert!(m.body().is_empty());
    let e = check_request(&m).unwrap();
    assert_eq!(e.method, Method::Register);
    assert_eq!(e.call_id, b"dblreq.0ha0isndaksdj99sdfafnl3lk233412");
    assert_eq!(m.contacts().count(), 1);
}

#[test]
fn mpart01_body_framed_strictly_by_content_length() {
    let bytes = load("mpart01");
    let m = parse_ok(&bytes);
    check_request(&m).unwrap();
    assert_eq!(m.body().len(), 553);
    assert!(m.body().ends_with(b"--7a9cbec02ceef655--\r\n"));
    let ct = m.content_type().unwrap().unwrap();
    assert!(ct.is("multipart", "mixed"));
    assert_eq!(
        ct.params.get("boundary"),
        Some(Some(&b"7a9cbec02ceef655"[..]))
    );
    let via = m.top_via().unwrap();
    assert_eq!(
        (via.host, via.port, via.rport),
        (Host::V4(Ipv4Addr::LOCALHOST), Some(5070), Some(None))
    );
    assert_eq!(
        m.routes().next().unwrap().unwrap().uri.raw(),
        b"sip:127.0.0.1:5080"
    );
    let date = m.date().unwrap().unwrap();
    assert_eq!(
        (date.year, date.month, date.day, date.hour),
        (2005, 10, 15, 4)
    );
    assert_eq!(m.user_agent(), Some(&b"SIPimp.org/0.2.5 (curses)"[..]));
}

#[test]
fn reason_phrases_are_opaque() {
    let bytes = load("unreason");
    let m = parse_ok(&bytes);
    let line_end = bytes.windows(2).position(|w| w == b"\r\n").unwrap();
    assert_eq!(
        m.kind(),
        Kind::Response {
            status: 200,
            reason: &bytes[12..line_end]
        }
    );
    assert!(check_response(&m).is_ok());
    let bytes = load("noreason");
    let m = parse_ok(&bytes);
    assert_eq!(
        m.kind(),
        Kind::Response {
            status: 100,
            reason: b""
        }
    );
}

#[test]
fn invalid_vectors_fail_where_expected() {
    let bytes = load("badinv01");
    let m = parse_ok(&bytes);
    assert_eq!(m.top_via().unwrap_err(), ParseError::BadVia);
    assert_eq!(
        m.contacts().next().unwrap().unwrap_err(),
        ParseError::BadParam
    );

    let bytes = load("scalar02");
    let m = parse_ok(&bytes);
    assert_eq!(m.max_forwards(), Err(ParseError::BadMaxForwards));
    assert_eq!(m.expires(), Err(ParseError::BadExpires));
    assert_eq!(
        m.contacts().next().unwrap().unwrap_err(),
        ParseError::BadExpires
    );

    let bytes = load("scalarlg");
    let m = parse_ok(&bytes);
    assert_eq!(
        m.retry_after().unwrap().unwrap_err(),
        ParseError::BadRetryAfter
    );

    // baddn's real subject: unquoted display names with "," (the archive copy lacks the final
    // empty line, so framing fails first; with it added, the From is rejected).
    let mut fixed = vectors::read("rfc4475", "baddn.dat");
    fixed.extend_from_slice(b"\r\n");
    let m = parse(&fixed).unwrap();
    assert_eq!(check_request(&m).unwrap_err(), ParseError::BadUri);
}

#[test]
fn semantic_vectors_expose_what_the_proxy_decides_on() {
    let bytes = load("badbranch");
    let via = check_request(&parse_ok(&bytes)).unwrap().top_via;
    assert_eq!(via.branch, Some(&b"z9hG4bK"[..]));
    assert!(!via.has_rfc3261_branch());

    let bytes = load("unkscm");
    let e = check_request(&parse_ok(&bytes)).unwrap();
    assert_eq!(
        e.request_uri.scheme(),
        Scheme::Other(b"nobodyKnowsThisScheme")
    );
    let bytes = load("novelsc");
    let e = check_request(&parse_ok(&bytes)).unwrap();
    assert_eq!(e.request_uri.scheme(), Scheme::Other(b"soap.beep"));

    let bytes = load("unksm2");
    let m = parse_ok(&bytes);
    let e = check_request(&m).unwrap();
    assert_eq!(e.to.uri.scheme(), Scheme::Other(b"isbn"));
    assert_eq!(e.from.uri.scheme(), Scheme::Other(b"http"));
    let ContactValue::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!("star")
    };
    assert_eq!(c.addr.uri.scheme(), Scheme::Other(b"name"));

    let bytes = load("bext01");
    let m = parse_ok(&bytes);
    check_request(&m).unwrap();
    let tags: Vec<&[u8]> = m.proxy_require().map(Result::unwrap).collect();
    assert_eq!(
        tags,
        vec![&b"noProxiesSupportThis"[..], b"norDoAnyProxiesSupportThis"]
    );
    let tags: Vec<&[u8]> = m.require().map(Result::unwrap).collect();
    assert_eq!(
        tags,
        vec![&b"nothingSupportsThis"[..], b"nothingSupportsThisEither"]
    );

    let bytes = load("zeromf");
    assert_eq!(
        check_request(&parse_ok(&bytes)).unwrap().max_forwards,
        Some(0)
    );

    let bytes = load("bcast");
    let m = parse_ok(&bytes);
    check_response(&m).unwrap();
    let second = m.vias().nth(1).unwrap().unwrap();
    assert_eq!(second.host, Host::V4(Ipv4Addr::BROADCAST));

    let bytes = load("insuf");
    let m = parse_ok(&bytes);
    assert_eq!(
        m.call_id(),
        Err(ParseError::MissingHeader(HeaderName::CallId))
    );
    assert_eq!(m.max_forwards(), Ok(None));
}

#[test]
fn valid_application_layer_vectors() {
    let bytes = load("invut");
    let m = parse_ok(&bytes);
    assert!(m
        .content_type()
        .unwrap()
        .unwrap()
        .is("application", "unknownformat"));
    assert_eq!(m.body().len(), 40);

    let bytes = load("regaut01");
    let m = parse_ok(&bytes);
    assert_eq!(
        m.authorization(),
        Some(Err(ParseError::UnsupportedAuthScheme))
    );
    assert_eq!(m.content_length(), Some(0));

    let bytes = load("cparam01");
    let m = parse_ok(&bytes);
    let ContactValue::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!("star")
    };
    assert!(!c.addr.bracketed);
    assert_eq!(c.addr.uri.raw(), b"sip:+19725552222@gw1.example.net");
    assert!(sip_uri(&c.addr.uri).params.raw().is_empty());
    assert_eq!(c.addr.params.get("unknownparam"), Some(None));

    let bytes = load("cparam02");
    let m = parse_ok(&bytes);
    let ContactValue::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!("star")
    };
    assert_eq!(sip_uri(&c.addr.uri).param("unknownparam"), Some(None));
    assert!(c.addr.params.is_empty());

    let bytes = load("regescrt");
    let m = parse_ok(&bytes);
    let ContactValue::Addr(c) = m.contacts().next().unwrap().unwrap() else {
        panic!("star")
    };
    assert_eq!(
        sip_uri(&c.addr.uri).headers.raw(),
        b"Route=%3Csip:sip.example.com%3E"
    );
    assert_eq!(m.first(HeaderName::Contact).unwrap().raw_name, b"M");

    let bytes = load("sdp01");
    let m = parse_ok(&bytes);
    assert_eq!(
        m.values(HeaderName::Accept).collect::<Vec<_>>(),
        vec![&b"text/nobodyKnowsThis"[..]]
    );

    let bytes = load("inv2543");
    let m = parse_ok(&bytes);
    let e = check_request(&m).unwrap();
    assert_eq!(m.content_length(), None);
    let body_start = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(m.body(), &bytes[body_start..]);
    assert_eq!(
        (e.top_via.branch, e.from.tag, e.max_forwards),
        (None, None, None)
    );
    let rr = m.record_routes().next().unwrap().unwrap();
    assert_eq!(sip_uri(&rr.uri).maddr(), Some(&b"ss1.example.com"[..]));
    // `To: sip:...;user=phone` is an addr-spec: the parameter belongs to the header, while the
    // bracketed From keeps it in the URI.
    assert_eq!(e.to.params.get("user"), Some(Some(&b"phone"[..])));
    assert_eq!(sip_uri(&e.from.uri).user_param(), Some(&b"phone"[..]));

    let bytes = load("baddate");
    let m = parse_ok(&bytes);
    assert_eq!(m.date(), Some(Err(ParseError::BadDate)));
}
