//! Bounded proptest-driven mutation fuzzing of `model.json` and of the
//! safetensors header: every mutated version must load or fail with a typed
//! error — never panic, never read out of bounds.

use std::path::Path;

use profiled_model::testing::{SyntheticSpec, write_synthetic_model};
use profiled_model::{Encoder, Error};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Truncate { at: usize },
    Digit { at: usize, digits: u32 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (
            any::<usize>(),
            prop::sample::select(b"{}[]\",:0123456789-.eE ntfaluxyz".to_vec())
        )
            .prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), 1u32..12).prop_map(|(at, digits)| Mutation::Digit { at, digits }),
    ]
}

/// Applies mutations to `bytes[lo..hi]` (positions are taken modulo the range).
fn apply(bytes: &mut Vec<u8>, muts: &[Mutation], lo: usize, hi: usize) {
    for m in muts {
        let span = hi.min(bytes.len()).saturating_sub(lo).max(1);
        let pos = |at: usize| (lo + at % span).min(bytes.len());
        match m {
            Mutation::Flip { at, bit } => {
                let i = pos(*at);
                if i < bytes.len() {
                    bytes[i] ^= 1 << bit;
                }
            }
            Mutation::Set { at, byte } => {
                let i = pos(*at);
                if i < bytes.len() {
                    bytes[i] = *byte;
                }
            }
            Mutation::Delete { at, len } => {
                let i = pos(*at);
                let j = (i + len).min(bytes.len());
                bytes.drain(i..j);
            }
            Mutation::Insert { at, bytes: b } => {
                let i = pos(*at);
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Truncate { at } => {
                let i = pos(*at);
                bytes.truncate(i);
            }
            Mutation::Digit { at, digits } => {
                // Replace a digit run with a large number (shape / size attacks).
                let i = pos(*at);
                if let Some(k) = bytes[i..].iter().position(|b| b.is_ascii_digit()) {
                    let s = i + k;
                    let e = s + bytes[s..].iter().take_while(|b| b.is_ascii_digit()).count();
                    let big = "9".repeat(*digits as usize);
                    bytes.splice(s..e, big.bytes());
                }
            }
        }
    }
}

fn check(dir: &Path) {
    match Encoder::load(dir) {
        Ok(enc) => {
            // A surviving mutation must still be a coherent model.
            assert!(enc.report().golden_min_cosine >= 0.999);
        }
        Err(Error::Model { path, .. } | Error::Io { path, .. } | Error::Golden { path, .. }) => {
            assert!(path.starts_with(dir));
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    json: Vec<u8>,
    weights: Vec<u8>,
    header_end: usize,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let spec = SyntheticSpec {
        items: 8,
        golden: 2,
        ..SyntheticSpec::default()
    };
    write_synthetic_model(dir.path(), &spec).expect("write");
    let json = std::fs::read(dir.path().join("model.json")).expect("read");
    let weights = std::fs::read(dir.path().join("model.safetensors")).expect("read");
    let n = u64::from_le_bytes(weights[..8].try_into().expect("8 bytes")) as usize;
    Fixture {
        _dir: dir,
        json,
        weights,
        header_end: 8 + n,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_model_json_never_panics(muts in prop::collection::vec(mutation(), 1..4)) {
        let f = fixture();
        let dir = tempfile::tempdir().expect("tmp");
        let mut json = f.json.clone();
        let len = json.len();
        apply(&mut json, &muts, 0, len);
        std::fs::write(dir.path().join("model.json"), &json).expect("write");
        std::fs::write(dir.path().join("model.safetensors"), &f.weights).expect("write");
        check(dir.path());
    }

    #[test]
    fn mutated_safetensors_header_never_panics(muts in prop::collection::vec(mutation(), 1..4)) {
        let f = fixture();
        let dir = tempfile::tempdir().expect("tmp");
        let mut w = f.weights.clone();
        apply(&mut w, &muts, 0, f.header_end);
        std::fs::write(dir.path().join("model.json"), &f.json).expect("write");
        std::fs::write(dir.path().join("model.safetensors"), &w).expect("write");
        check(dir.path());
    }
}
