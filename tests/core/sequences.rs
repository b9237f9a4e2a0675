//! Issue 12, sequence fuzzing in CI: `sipfork::testing::seq_fuzz::run` (the `core_sequences`
//! fuzz target: scripted phones, one or two cores, loss, virtual time) on every committed seed
//! and on proptest-generated input. Each run panics when a call outlives the silence after it, a
//! core holds more calls or timers than its input can explain, or anything panics inside.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use sipfork::testing::seq_fuzz::run;

#[test]
fn committed_seeds_keep_every_invariant() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/core_sequences");
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 6, "seeds in {}: {seeds:?}", dir.display());
    let mut statuses = Vec::new();
    for seed in seeds {
        let data = std::fs::read(&seed).unwrap();
        let summary = run(&data);
        eprintln!("seed {}: {summary:?}", seed.display());
        assert!(summary.delivered > 0);
        statuses.extend(summary.statuses);
    }
    // Together the seeds reach answered, cancelled, rejected and unroutable calls.
    for want in [200, 180, 487, 486, 480, 404] {
        assert!(statuses.contains(&want), "no {want} among {statuses:?}");
    }
}

/// Proptest inputs per run: 256, or `SEQ_FUZZ_CASES` for a longer campaign.
fn cases() -> u32 {
    std::env::var("SEQ_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_conversations_keep_every_invariant(data in vec(any::<u8>(), 2..160)) {
        run(&data);
    }
}
