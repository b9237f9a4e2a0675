use super::corpus::{datagrams, CONFIG};
use super::*;
use crate::core::route;

fn config() -> Config {
    Config::from_toml(CONFIG).unwrap()
}

fn wire(d: &[u8], shards: u16) -> Option<u16> {
    wire_owner(d, shards, &WireParams::of(&config())).map(|s| s.0)
}

#[test]
fn every_choice_agrees_with_the_core() {
    let cfg = config();
    let params = WireParams::of(&cfg);
    for shards in [2u16, 3, 4] {
        let (mut chosen, mut checked) = (0, 0);
        for (label, d) in datagrams(shards) {
            let Some(shard) = wire_owner(&d, shards, &params) else {
                continue;
            };
            chosen += 1;
            // An unparsable or invalid datagram is refused on whichever shard it reaches.
            let Ok(msg) = crate::sip::parse(&d) else {
                continue;
            };
            let core = if msg.is_request() {
                let Ok(e) = crate::sip::check_request(&msg) else {
                    continue;
                };
                route::request_owner(&msg, &e, &cfg, shards)
            } else {
                let Ok(e) = crate::sip::check_response(&msg) else {
                    continue;
                };
                route::response_owner(&e, shards)
            };
            checked += 1;
            assert_eq!(core, Some(shard), "{label}");
        }
        assert!(chosen > 40, "{shards} shards: only {chosen} choices");
        assert!(
            checked > 30,
            "{shards} shards: only {checked} valid datagrams"
        );
    }
}

#[test]
fn decisions_by_kind() {
    let by_label = |shards: u16, label: &str| {
        let (_, d) = datagrams(shards)
            .into_iter()
            .find(|(l, _)| l == label)
            .unwrap();
        wire(&d, shards)
    };
    for label in [
        "180 ours",
        "200 ours, two Via values",
        "200 compact v",
        "200 VIA upper, blank",
        "200 Via after From",
        "BYE in-dialog",
        "ACK in-dialog, two routes",
        "BYE route lower-case name",
    ] {
        assert_eq!(by_label(2, label), Some(1), "{label}");
        assert_eq!(by_label(4, label), Some(3), "{label}");
    }
    for label in [
        "487 foreign branch",
        "200 branch upper-case digit",
        "200 shard out of range",
        "100 no Via",
        "BYE garbled token",
        "INVITE tel",
        "INVITE escaped user",
        "INVITE feature code",
        "INVITE DID",
        "INVITE no user",
        "OPTIONS user param",
        "REGISTER tel",
        "REGISTER no To",
        "keepalive",
        "junk text",
        "junk sip-ish",
        "long user",
        "binary",
    ] {
        assert_eq!(by_label(2, label), None, "{label}");
    }
    let hash = |n: &[u8]| Some(owner_of(n, 4).0);
    assert_eq!(by_label(4, "INVITE"), hash(b"1000"));
    assert_eq!(by_label(4, "INVITE 1002 sips"), hash(b"1002"));
    assert_eq!(by_label(4, "CANCEL"), hash(b"1003"));
    assert_eq!(by_label(4, "BYE foreign first route"), hash(b"1001"));
    assert_eq!(by_label(4, "REGISTER"), hash(b"1008"));
    assert_eq!(by_label(4, "REGISTER compact t"), hash(b"1009"));
    assert_eq!(by_label(4, "REGISTER display name"), hash(b"1010"));
    assert_eq!(by_label(4, "REGISTER TO upper"), hash(b"1011"));
    assert_eq!(by_label(4, "oversized"), hash(b"1014"));
    // Past MAX_ROWS header rows the To row is not looked for, but the Request-URI is on line 1.
    assert_eq!(by_label(4, "long header block"), hash(b"1013"));
    // One shard: never a choice.
    assert_eq!(by_label(1, "INVITE"), None);
}

#[test]
fn did_widths_come_from_the_configuration() {
    assert_eq!(WireParams::of(&config()).did_widths, 1 << 12);
    let none = Config::from_toml("[server]\nlisten = \"127.0.0.1:5060\"\n").unwrap();
    assert_eq!(WireParams::of(&none).did_widths, 0);
    // Without DIDs the same INVITE steers by the number's hash.
    let (_, d) = datagrams(4)
        .into_iter()
        .find(|(l, _)| l == "INVITE DID")
        .unwrap();
    assert_eq!(
        wire_owner(&d, 4, &WireParams::default()),
        Some(owner_of(b"+31201234007", 4))
    );
}
