//! Mutations of every vector (byte flips, insertions, deletions, truncations) never panic, and
//! whenever a mutant parses, all accessors run and agree (`sipfork::testing::sip_checks`).

use std::sync::OnceLock;

use proptest::prelude::*;
use sipfork::sip::{parse, salvage};
use sipfork::testing::sip_checks::exercise;

use crate::vectors;

fn corpus() -> &'static [(String, Vec<u8>)] {
    static CORPUS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(vectors::all_messages)
}

fn run(bytes: &[u8]) {
    if let Ok(m) = parse(bytes) {
        exercise(&m);
    }
    if let Some(m) = salvage(bytes) {
        // A salvaged message is only partially checked: its rows are still real rows.
        for h in m.headers() {
            assert!(m.offset_of(h.row).is_some());
        }
        let _ = (m.top_via(), m.call_id(), m.cseq(), m.from(), m.to());
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Copies a span of the message over another place (duplicates separators and whole rows).
    Splice(usize, usize, usize),
}

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(b"\r\n \t:;,\"<>%\\@[]=0/?*".to_vec()),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), byte()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>(), 1usize..40)
            .prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match *m {
        Mutation::Flip(i, b) => {
            if let Some(x) = bytes.get_mut(i % len) {
                *x = b;
            }
        }
        Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Mutation::Delete(i) => {
            if !bytes.is_empty() {
                bytes.remove(i % len);
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i % len),
        Mutation::Splice(from, to, n) => {
            let from = from % len;
            let piece: Vec<u8> = bytes.iter().skip(from).take(n).copied().collect();
            let to = to % (bytes.len() + 1);
            bytes.splice(to..to, piece);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_vectors_never_panic(pick in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..6)) {
        let corpus = corpus();
        let (_, original) = &corpus[pick.index(corpus.len())];
        let mut bytes = original.clone();
        for m in &muts {
            apply(&mut bytes, m);
        }
        run(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(byte(), 0..300)) {
        run(&bytes);
    }
}

#[test]
fn every_vector_is_consistent() {
    for (name, bytes) in corpus() {
        if let Ok(m) = parse(bytes) {
            exercise(&m);
        } else {
            assert!(name.ends_with(".dat"), "{name}: flow messages all parse");
        }
    }
}

#[test]
fn every_truncation_and_single_deletion_of_every_vector() {
    for (_, bytes) in corpus() {
        for cut in 0..bytes.len() {
            run(&bytes[..cut]);
        }
        for at in (0..bytes.len()).step_by(3) {
            let mut b = bytes.clone();
            b.remove(at);
            run(&b);
        }
    }
}
