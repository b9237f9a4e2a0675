//! Parser benchmarks (criterion). Each parse benchmark has, in the same group and on the same
//! bytes, the floor from DECISIONS.md: one `memchr::memchr_iter(b'\n', bytes).count()` pass. The
//! ratio parse ÷ floor is the robust figure on a noisy machine.
//!
//! `memchr_floor` counts newlines with memchr's vectorised count (no per-line work at all);
//! `memchr2_per_line` is the floor of any line-oriented parser, one `memchr2(CR, LF)` call per
//! line of the whole message, body included (the parser stops at the body). Both are reported so
//! the ratio can be read against either.
//!
//! Run: `cargo bench --bench parse -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, Criterion, Throughput};
use sipfork::sip::{parse, parse_into, Message};

/// Joins header lines with CRLF, sets Content-Length to the body's length, appends the body.
fn message(head: &[&str], body: &[&str]) -> Vec<u8> {
    let body: String = body.iter().map(|l| format!("{l}\r\n")).collect();
    let mut m: String = head.iter().map(|l| format!("{l}\r\n")).collect();
    m.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    m.push_str(&body);
    m.into_bytes()
}

const SDP_OFFER: &[&str] = &[
    "v=0",
    "o=- 1712000000 1712000000 IN IP4 192.0.2.10",
    "s=-",
    "c=IN IP4 192.0.2.10",
    "t=0 0",
    "m=audio 8000 RTP/AVP 0 8 9 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=sendrecv",
];

/// A phone's INVITE as it reaches the proxy: about 900 bytes with SDP.
fn invite() -> Vec<u8> {
    message(
        &[
            "INVITE sip:1001@pbx.example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---7b2c1a7e9f3d4e21;rport",
            "Max-Forwards: 70",
            "Contact: <sip:2002@192.0.2.10:5060;transport=udp>;+sip.instance=\"<urn:uuid:6a1f4c2e-0b7d-4c1e-9a55-3f2b8d7e6c10>\"",
            "To: <sip:1001@pbx.example.com>",
            "From: \"Alice Example\" <sip:2002@pbx.example.com>;tag=6d2f1c0e",
            "Call-ID: 7b2c1a7e9f3d4e21a84b4c76e66710@192.0.2.10",
            "CSeq: 1 INVITE",
            "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE",
            "Content-Type: application/sdp",
            "Supported: replaces, norefersub, extended-refer, timer, outbound, path",
            "Session-Expires: 1800",
            "Min-SE: 90",
            "User-Agent: ExamplePhone/5.4.1 (build 2210)",
            "Allow-Events: presence, kpml, talk, hold",
        ],
        SDP_OFFER,
    )
}

/// A device's 180 as it reaches the proxy: two Vias, Record-Route, To tag.
fn ringing() -> Vec<u8> {
    message(
        &[
            "SIP/2.0 180 Ringing",
            "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKsf1.0a3e5c7d9b1f2a4c.1",
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---7b2c1a7e9f3d4e21;rport=5060;received=192.0.2.10",
            "Record-Route: <sip:198.51.100.1;lr>",
            "Contact: <sip:1001@203.0.113.20:5062;transport=udp>",
            "To: <sip:1001@pbx.example.com>;tag=8a6f2c91",
            "From: \"Alice Example\" <sip:2002@pbx.example.com>;tag=6d2f1c0e",
            "Call-ID: 7b2c1a7e9f3d4e21a84b4c76e66710@192.0.2.10",
            "CSeq: 1 INVITE",
            "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS",
            "User-Agent: DeskPhone/3.2",
        ],
        &[],
    )
}

/// The answering device's 200 OK with its SDP answer.
fn ok_200() -> Vec<u8> {
    message(
        &[
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKsf1.0a3e5c7d9b1f2a4c.1",
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---7b2c1a7e9f3d4e21;rport=5060;received=192.0.2.10",
            "Record-Route: <sip:198.51.100.1;lr>",
            "Contact: <sip:1001@203.0.113.20:5062;transport=udp>",
            "To: <sip:1001@pbx.example.com>;tag=8a6f2c91",
            "From: \"Alice Example\" <sip:2002@pbx.example.com>;tag=6d2f1c0e",
            "Call-ID: 7b2c1a7e9f3d4e21a84b4c76e66710@192.0.2.10",
            "CSeq: 1 INVITE",
            "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS",
            "Supported: replaces, timer",
            "Session-Expires: 1800;refresher=uac",
            "Require: timer",
            "Content-Type: application/sdp",
            "User-Agent: DeskPhone/3.2",
        ],
        &[
            "v=0",
            "o=- 38291 38291 IN IP4 203.0.113.20",
            "s=-",
            "c=IN IP4 203.0.113.20",
            "t=0 0",
            "m=audio 40000 RTP/AVP 0 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            "a=sendrecv",
        ],
    )
}

/// A REGISTER with three contacts (RFC 5626 instance ids, q values, expires).
fn register() -> Vec<u8> {
    message(
        &[
            "REGISTER sip:pbx.example.com SIP/2.0",
            "Via: SIP/2.0/UDP 192.0.2.44:5062;branch=z9hG4bK-d8754z-1f2e3d4c5b6a7980;rport",
            "Max-Forwards: 70",
            "Contact: <sip:1001@192.0.2.44:5062;transport=udp>;q=1.0;expires=600;+sip.instance=\"<urn:uuid:0c5e7a1b-9d2f-4e3a-8b6c-1a2b3c4d5e6f>\";reg-id=1",
            "Contact: <sip:1001@198.51.100.7:5060>;q=0.7;expires=3600",
            "Contact: \"Desk\" <sip:1001@203.0.113.9:5080;transport=tcp>;q=0.5",
            "To: <sip:1001@pbx.example.com>",
            "From: <sip:1001@pbx.example.com>;tag=fb1a9c22",
            "Call-ID: 5f2a7c9e1b3d4f60@192.0.2.44",
            "CSeq: 41 REGISTER",
            "Expires: 3600",
            "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE",
            "Supported: path, outbound, gruu",
            "User-Agent: ExamplePhone/5.4.1 (build 2210)",
        ],
        &[],
    )
}

fn floor(bytes: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', bytes).count()
}

/// The per-message typed access a proxy does: top Via branch, Call-ID, CSeq, To tag.
fn proxy_fields(m: &Message<'_>) -> usize {
    let branch = m.top_via().map_or(0, |v| v.branch.map_or(0, <[u8]>::len));
    let call_id = m.call_id().map_or(0, <[u8]>::len);
    let cseq = m.cseq().map_or(0, |c| c.number as usize);
    let to_tag = m.to().map_or(0, |t| t.tag.map_or(0, <[u8]>::len));
    branch + call_id + cseq + to_tag
}

fn benches(c: &mut Criterion) {
    let cases = [
        ("invite", invite()),
        ("180", ringing()),
        ("200", ok_200()),
        ("register", register()),
    ];
    for (name, bytes) in &cases {
        let parsed = parse(bytes).expect("bench message parses");
        assert_eq!(parsed.bytes().len(), bytes.len());
        sipfork::testing::sip_checks::exercise(&parsed);
        let mut g = c.benchmark_group(format!("parse/{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("memchr_floor", |b| b.iter(|| floor(black_box(bytes))));
        g.bench_function("memchr2_per_line", |b| {
            b.iter(|| {
                let bytes = black_box(bytes);
                let (mut pos, mut n) = (0, 0);
                while let Some(i) = memchr::memchr2(b'\r', b'\n', &bytes[pos..]) {
                    pos += i + 2;
                    n += 1;
                    if pos >= bytes.len() {
                        break;
                    }
                }
                n
            })
        });
        g.bench_function("parse_index", |b| {
            b.iter(|| {
                parse(black_box(bytes))
                    .map(|m| m.header_count())
                    .unwrap_or(0)
            })
        });
        // The hot path's shape: one caller-owned index filled in place (no Message moved).
        let mut index = Message::empty();
        g.bench_function("parse_into_index", |b| {
            b.iter(|| {
                parse_into(&mut index, black_box(bytes))
                    .map(|()| index.header_count())
                    .unwrap_or(0)
            })
        });
        g.bench_function("parse_and_proxy_fields", |b| {
            b.iter(|| {
                parse(black_box(bytes))
                    .map(|m| proxy_fields(&m))
                    .unwrap_or(0)
            })
        });
        g.finish();
        let mut g = c.benchmark_group(format!("typed/{name}"));
        g.bench_function("proxy_fields", |b| {
            b.iter(|| proxy_fields(black_box(&parsed)))
        });
        g.bench_function("check", |b| {
            b.iter(|| {
                let m = black_box(&parsed);
                if m.is_request() {
                    sipfork::sip::check_request(m).is_ok()
                } else {
                    sipfork::sip::check_response(m).is_ok()
                }
            })
        });
        g.finish();
    }
    println!(
        "sizes: invite {} B, 180 {} B, 200 {} B, register {} B",
        cases[0].1.len(),
        cases[1].1.len(),
        cases[2].1.len(),
        cases[3].1.len()
    );
}

criterion_group!(parse_benches, benches);

/// `PARSE_LOOP=CASE/FUNCTION:N` runs one function N times and nothing else, for `perf stat -e
/// cycles:u,instructions:u`: user-space cycles per call do not count the time other processes
/// hold the CPU, so they stay comparable on a loaded machine where criterion's wall time does
/// not (see benches/RESULTS.md). FUNCTION is `memchr_floor`, `parse_index` or `parse_into_index`.
fn parse_loop(spec: &str) {
    let (what, n) = spec.split_once(':').expect("PARSE_LOOP=CASE/FUNCTION:N");
    let n: u64 = n.parse().expect("N is a count");
    let (case, function) = what.split_once('/').expect("CASE/FUNCTION");
    let bytes = match case {
        "invite" => invite(),
        "180" => ringing(),
        "200" => ok_200(),
        "register" => register(),
        other => panic!("unknown case {other}"),
    };
    let mut index = Message::empty();
    let mut sum = 0usize;
    let bytes = &bytes[..];
    match function {
        "memchr_floor" => (0..n).for_each(|_| sum += floor(black_box(bytes))),
        "parse_index" => (0..n).for_each(|_| {
            sum += parse(black_box(bytes)).map_or(0, |m| m.header_count());
        }),
        "parse_into_index" => (0..n).for_each(|_| {
            sum += parse_into(&mut index, black_box(bytes)).map_or(0, |()| index.header_count());
        }),
        other => panic!("unknown function {other}"),
    }
    println!("{what}: {n} calls, checksum {sum}");
}

fn main() {
    if let Ok(spec) = std::env::var("PARSE_LOOP") {
        parse_loop(&spec);
        return;
    }
    parse_benches();
    Criterion::default().configure_from_args().final_summary();
}
