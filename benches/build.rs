//! Builder benchmarks (criterion): what the proxy writes per forked call, from messages recorded
//! in `sipfork::testing::forked_call`'s call (the caller's ~900-byte INVITE with SDP, a device's
//! 180, the answering device's 200 with SDP).
//!
//! - `forward_invite`: the INVITE forwarded to a device (§16.6): new Request-URI, our Via on top,
//!   Record-Route, Max-Forwards 69, `rport`/`received` filled into the caller's Via;
//! - `forward_180`, `forward_200`: a device's response going upstream, our Via removed (§16.7);
//! - `cancel`: the CANCEL for the forwarded INVITE, with a Reason (§9.1, RFC 3326);
//! - `response_100`, `response_487`: responses written locally (§8.2.6, with a To tag for 487);
//! - `copy_floor`: copying the forwarded INVITE's bytes into the same buffer, the floor of any
//!   builder that writes them.
//!
//! The input is parsed once outside the loop; the output buffer is reused (cleared, not freed),
//! so the loop allocates nothing. Throughput is the bytes written.
//!
//! Run: `cargo bench --bench build -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sipfork::sip::build::{self, Forward, Reply, ViaFix};
use sipfork::sip::{parse, Message};
use sipfork::testing::core_fuzz::{decode, recorded_call};

/// Benchmarks `write` (which appends to the buffer it is given) with the output's length as the
/// throughput.
fn bench(c: &mut Criterion, name: &str, mut write: impl FnMut(&mut Vec<u8>)) {
    let mut out = Vec::with_capacity(4096);
    write(&mut out);
    assert!(parse(&out).is_ok(), "{name} writes a message that parses");
    let mut g = c.benchmark_group("build");
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            write(&mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

const OUR_VIA: &[u8] = b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsf.0a3e5c7d9b1f2a4c0b7d4c1e.1";
const RECORD_ROUTE: &[u8] = b"sip:127.0.0.1:5060;lr;sft=0a3e5c7d9b1f2a4c";
const DEVICE_URI: &[u8] = b"sip:1000@127.0.0.1:5072;transport=udp";

fn forward<'a>(req: &Message<'_>) -> Forward<'a> {
    let source: SocketAddr = ([127, 0, 0, 1], 5070).into();
    let via = req.top_via().expect("recorded INVITE has a Via");
    Forward {
        request_uri: Some(DEVICE_URI),
        via: OUR_VIA,
        record_route: Some(RECORD_ROUTE),
        record_route_in: None,
        drop_first_route: false,
        drop_second_route: false,
        max_forwards: 69,
        fix: ViaFix::for_source(&via, source),
        extra: b"",
        strip_identity: false,
        consume_realm: None,
    }
}

fn builders(c: &mut Criterion) {
    let seed = recorded_call();
    let call = decode(&seed);
    let invite = parse(call[0].2).expect("recorded INVITE parses");
    let ringing = parse(call[1].2).expect("recorded 180 parses");
    let ok = parse(call[4].2).expect("recorded 200 parses");
    assert_eq!((ringing.status(), ok.status()), (Some(180), Some(200)));
    let fwd = forward(&invite);

    bench(c, "forward_invite", |out| {
        build::forward_request(&invite, &fwd, out)
    });
    let mut forwarded = Vec::new();
    build::forward_request(&invite, &fwd, &mut forwarded);
    bench(c, "copy_floor", |out| out.extend_from_slice(&forwarded));

    // The device's responses carry our Via on top of the caller's.
    bench(c, "forward_180", |out| {
        build::forward_response(&ringing, out)
    });
    bench(c, "forward_200", |out| build::forward_response(&ok, out));

    let sent = parse(&forwarded).expect("checked by bench()");
    let elsewhere = &b"SIP;cause=200;text=\"Call completed elsewhere\""[..];
    bench(c, "cancel", |out| {
        build::cancel_for(&sent, Some(elsewhere), out)
    });

    let fix = fwd.fix;
    bench(c, "response_100", |out| {
        build::response(
            &invite,
            &Reply {
                status: 100,
                reason: "Trying",
                fix,
                to_tag: None,
                extra: b"",
                body: None,
            },
            out,
        )
    });
    bench(c, "response_487", |out| {
        build::response(
            &invite,
            &Reply {
                status: 487,
                reason: "Request Terminated",
                fix,
                to_tag: Some(b"0a3e5c7d9b1f2a4c"),
                extra: b"",
                body: None,
            },
            out,
        )
    });
}

criterion_group!(benches, builders);
criterion_main!(benches);
