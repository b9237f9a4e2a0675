//! Captured-style datagrams for the steering tests (the model here, the loaded program in
//! `engine::steer`): responses, in-dialog requests, REGISTERs, INVITEs, compact headers, junk and
//! truncations, with branches and route tokens minted by [`Ids`] as the proxy writes them.

use crate::core::ids::Ids;
use crate::core::shard::ShardId;
use crate::core::slab::Key;

/// The configuration the corpus is checked against: extensions 1000–1999 and a DID range of
/// 12 characters (`+` and 11 digits) leading to 1000.
pub const CONFIG: &str = "[server]\nlisten = \"127.0.0.1:5060\"\n[auth]\nmode = \"none\"\n\
    [[extensions]]\nnumbers = \"1000-1999\"\n\
    [[dids]]\nnumbers = \"+31201234000-+31201234999\"\nextension = \"1000\"\n";

fn branch(shard: u16) -> String {
    let ids = Ids::new([7; 16], ShardId(shard));
    let mut out = Vec::new();
    ids.write_branch(
        0x1234_5678,
        Key {
            index: 42,
            generation: 3,
        },
        1,
        &mut out,
    );
    String::from_utf8(out).unwrap()
}

fn token(shard: u16, call_id: &str) -> String {
    let ids = Ids::new([7; 16], ShardId(shard));
    let mut out = Vec::new();
    ids.write_route_token(
        Key {
            index: 9,
            generation: 1,
        },
        call_id.as_bytes(),
        &mut out,
    );
    String::from_utf8(out).unwrap()
}

fn response(status: &str, via: &str, rest: &str) -> String {
    format!(
        "SIP/2.0 {status}\r\n{via}\r\nFrom: <sip:2000@example.com>;tag=a1\r\n\
         To: <sip:1000@example.com>;tag=b2\r\nCall-ID: c1@host\r\nCSeq: 1 INVITE\r\n{rest}\
         Content-Length: 0\r\n\r\n"
    )
}

/// A request valid as the core checks it (its CSeq names its method), so the tests can hold
/// the core's ownership to the program's choices on it.
fn request(line: &str, route: &str, to: &str, body: &str) -> String {
    let method = line.split(' ').next().unwrap_or_default();
    format!(
        "{line}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-uac-1;rport\r\n{route}\
         Max-Forwards: 70\r\nFrom: <sip:2000@example.com>;tag=a1\r\n{to}\r\n\
         Call-ID: c1@host\r\nCSeq: 1 {method}\r\nContact: <sip:2000@127.0.0.1:5070>\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
                   t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// Labelled datagrams for a proxy with `shards` shards (tokens name shard `shards - 1`).
pub fn datagrams(shards: u16) -> Vec<(String, Vec<u8>)> {
    let last = shards - 1;
    let b = branch(last);
    let t = token(last, "c1@host");
    let mut out: Vec<(String, String)> = vec![
        ("180 ours".into(), response("180 Ringing", &format!("Via: SIP/2.0/UDP 127.0.0.1:5060;branch={b}"), "")),
        ("200 ours, two Via values".into(), response("200 OK", &format!("Via: SIP/2.0/UDP 127.0.0.1:5060;branch={b},SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx"), "Contact: <sip:1000@127.0.0.1:5080>\r\n")),
        ("200 compact v".into(), response("200 OK", &format!("v: SIP/2.0/UDP 127.0.0.1:5060;rport=5060;branch={b}"), "")),
        ("200 VIA upper, blank".into(), response("200 OK", &format!("VIA : SIP/2.0/UDP 127.0.0.1:5060;branch={b}"), "")),
        ("200 Via after From".into(), format!("SIP/2.0 200 OK\r\nFrom: <sip:a@b>;tag=1\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={b}\r\nContent-Length: 0\r\n\r\n")),
        ("487 foreign branch".into(), response("487 Request Terminated", "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK776asdhds", "")),
        ("200 branch upper-case digit".into(), response("200 OK", "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf000A.1.2.3.4.5", "")),
        ("200 shard out of range".into(), response("200 OK", "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf00ff.1.2.3.4.5", "")),
        ("100 no Via".into(), "SIP/2.0 100 Trying\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n".into()),
        ("BYE in-dialog".into(), request("BYE sip:1000@127.0.0.1:5080 SIP/2.0", &format!("Route: <sip:127.0.0.1:5060;lr;sf={t}>\r\n"), "To: <sip:1000@example.com>;tag=b2", "")),
        ("ACK in-dialog, two routes".into(), request("ACK sip:1000@127.0.0.1:5080 SIP/2.0", &format!("Route: <sip:127.0.0.1:5060;lr;sf={t}>, <sip:10.0.0.9;lr>\r\n"), "To: <sip:1000@example.com>;tag=b2", "")),
        ("BYE route lower-case name".into(), request("BYE sip:1001@127.0.0.1:5080 SIP/2.0", &format!("route: <sip:127.0.0.1:5060;lr;sf={t}>\r\n"), "To: <sip:1001@example.com>;tag=b2", "")),
        ("BYE foreign first route".into(), request("BYE sip:1001@127.0.0.1:5080 SIP/2.0", &format!("Route: <sip:10.0.0.9;lr>\r\nRoute: <sip:127.0.0.1:5060;lr;sf={t}>\r\n"), "To: <sip:1001@example.com>;tag=b2", "")),
        ("BYE garbled token".into(), request("BYE sip:1001@127.0.0.1:5080 SIP/2.0", "Route: <sip:127.0.0.1:5060;lr;sf=zz01.9.1.00>\r\n", "To: <sip:1001@example.com>;tag=b2", "")),
        ("INVITE".into(), request("INVITE sip:1000@example.com SIP/2.0", "", "To: <sip:1000@example.com>", SDP)),
        ("INVITE 1001".into(), request("INVITE sip:1001@example.com SIP/2.0", "", "To: <sip:1001@example.com>", SDP)),
        ("INVITE 1002 sips".into(), request("INVITE sips:1002@example.com SIP/2.0", "", "To: <sips:1002@example.com>", SDP)),
        ("CANCEL".into(), request("CANCEL sip:1003@example.com SIP/2.0", "", "To: <sip:1003@example.com>", "")),
        ("MESSAGE".into(), request("MESSAGE sip:1004@example.com SIP/2.0", "", "To: <sip:1004@example.com>", "hello")),
        ("INVITE tel".into(), request("INVITE tel:1005 SIP/2.0", "", "To: <tel:1005>", SDP)),
        ("INVITE escaped user".into(), request("INVITE sip:%31006@example.com SIP/2.0", "", "To: <sip:1006@example.com>", SDP)),
        ("INVITE feature code".into(), request("INVITE sip:*721000@example.com SIP/2.0", "", "To: <sip:*721000@example.com>", SDP)),
        ("INVITE DID".into(), request("INVITE sip:+31201234007@example.com SIP/2.0", "", "To: <sip:+31201234007@example.com>", SDP)),
        ("INVITE no user".into(), request("INVITE sip:example.com SIP/2.0", "", "To: <sip:example.com>", SDP)),
        ("OPTIONS user param".into(), request("OPTIONS sip:1007;x=y@example.com SIP/2.0", "", "To: <sip:1007@example.com>", "")),
        ("REGISTER".into(), request("REGISTER sip:example.com SIP/2.0", "", "To: <sip:1008@example.com>", "")),
        ("REGISTER compact t".into(), request("REGISTER sip:example.com SIP/2.0", "", "t: sip:1009@example.com", "")),
        ("REGISTER display name".into(), request("REGISTER sip:example.com SIP/2.0", "", "To: \"Desk: left\" <sip:1010@example.com>", "")),
        ("REGISTER TO upper".into(), request("REGISTER sip:example.com SIP/2.0", "", "TO : <sip:1011@example.com>", "")),
        ("REGISTER tel".into(), request("REGISTER sip:example.com SIP/2.0", "", "To: <tel:1012>", "")),
        ("REGISTER no To".into(), "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n".into()),
        ("keepalive".into(), "\r\n\r\n".into()),
        ("junk text".into(), "hello hello hello hello hello hello\r\n\r\n".into()),
        ("junk sip-ish".into(), "SIP/2.0 \r\n\r\nVia: ;branch=z9hG4bKsf0001.\r\n".into()),
        ("long header block".into(), {
            let pad: String = (0..60).map(|i| format!("X-Pad-{i}: {}\r\n", "p".repeat(20))).collect();
            request("INVITE sip:1013@example.com SIP/2.0", &pad, "To: <sip:1013@example.com>", "")
        }),
        ("long user".into(), request(&format!("INVITE sip:{}@example.com SIP/2.0", "9".repeat(70)), "", "To: <sip:1@example.com>", "")),
    ];
    // Every user of a small range, so both shards are named.
    for ext in 1100..1116 {
        out.push((
            format!("REGISTER {ext}"),
            request(
                "REGISTER sip:example.com SIP/2.0",
                "",
                &format!("To: <sip:{ext}@example.com>"),
                "",
            ),
        ));
    }
    let mut datagrams: Vec<(String, Vec<u8>)> =
        out.into_iter().map(|(l, d)| (l, d.into_bytes())).collect();
    // Truncations of a response, an in-dialog request and a REGISTER at every length.
    let truncate: Vec<(String, Vec<u8>)> = datagrams
        .iter()
        .filter(|(l, _)| ["180 ours", "BYE in-dialog", "REGISTER", "INVITE"].contains(&l.as_str()))
        .cloned()
        .collect();
    for (label, d) in truncate {
        for len in 0..d.len() {
            datagrams.push((format!("{label} cut at {len}"), d[..len].to_vec()));
        }
    }
    datagrams.push(("binary".into(), (0..=255u8).cycle().take(1400).collect()));
    datagrams.push(("oversized".into(), {
        let mut d = request(
            "INVITE sip:1014@example.com SIP/2.0",
            "",
            "To: <sip:1014@example.com>",
            "",
        );
        d.push_str(&"a".repeat(3000));
        d.into_bytes()
    }));
    datagrams
}
