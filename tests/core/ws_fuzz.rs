//! The `ws_framer` fuzz target in CI: `sipfork::testing::ws_fuzz::run` (the WebSocket codec fed
//! a stream cut into reads; the same events and error however it is cut) on every committed
//! seed (`fuzz/seeds/ws_framer`) and on proptest-generated input, with and without a valid
//! upgrade in front.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use sipfork::core::transport::ws::WsError;
use sipfork::testing::ws_fuzz::{run, Event};

#[test]
fn committed_seeds_keep_every_invariant_and_reach_every_outcome() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/ws_framer");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 10, "seeds in {}: {seeds:?}", dir.display());
    let (mut events, mut errors) = (Vec::new(), Vec::new());
    for seed in seeds {
        let s = run(&std::fs::read(&seed).unwrap());
        eprintln!("seed {}: {s:?}", seed.display());
        events.extend(s.events);
        errors.extend(s.error);
    }
    let has = |f: &dyn Fn(&Event) -> bool| events.iter().any(f);
    assert!(has(&|e| *e == Event::Upgraded));
    assert!(has(
        &|e| matches!(e, Event::Message(m) if m.starts_with(b"MESSAGE "))
    ));
    assert!(has(&|e| matches!(e, Event::Ping(_))));
    assert!(has(&|e| *e == Event::Keepalive));
    assert!(has(&|e| *e == Event::Pong));
    assert!(has(&|e| *e == Event::Close(Some(1000))));
    for want in [
        WsError::Protocol,
        WsError::TooBig,
        WsError::BadPayload,
        WsError::Handshake(400),
    ] {
        assert!(errors.contains(&want), "no {want:?} among {errors:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_streams_keep_every_invariant(data in vec(any::<u8>(), 2..400)) {
        run(&data);
    }

    /// Frames after a valid upgrade: masked frames of random opcodes, lengths and payloads.
    #[test]
    fn random_frames_after_an_upgrade_keep_every_invariant(
        pick in any::<u8>(),
        cuts in vec(1u8..40, 0..8),
        frames in vec((any::<u8>(), any::<bool>(), vec(any::<u8>(), 0..200)), 0..6),
    ) {
        let mut data = vec![pick, 1];
        data.extend(&cuts);
        data.push(0);
        for (b0, masked, payload) in frames {
            data.push(b0);
            let mask = if masked { 0x80 } else { 0 };
            if payload.len() < 126 {
                data.push(mask | payload.len() as u8);
            } else {
                data.push(mask | 126);
                data.extend((payload.len() as u16).to_be_bytes());
            }
            if masked {
                data.extend([1, 2, 3, 4]);
                data.extend(payload.iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]));
            } else {
                data.extend(&payload);
            }
        }
        run(&data);
    }
}
