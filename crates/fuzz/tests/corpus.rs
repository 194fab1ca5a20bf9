//! The stable, bounded fuzz run of the test suite: every target's body runs
//! over its committed seeds (`fuzz/corpus/<target>/`, which also holds the
//! inputs of crashes found and fixed) and then over deterministic mutations
//! of them. A body panics on any broken invariant (see the crate docs), so
//! this test fails exactly where `cargo fuzz` would report a crash.
//!
//! `PROFILED_FUZZ_ITERS` sets the mutations per target (default 3000);
//! `PROFILED_FUZZ_SEED` changes the mutation stream.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use profiled_model::testing::Rng;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_target(target: &str, iters: u64) {
    let seeds = profiled_fuzz::read_corpus(&corpus_dir(), target).unwrap();
    assert!(!seeds.is_empty(), "no committed seeds for {target}");
    let mut accepted_seeds = 0;
    for (name, bytes) in &seeds {
        let out = profiled_fuzz::run(target, bytes).unwrap();
        if out.is_accepted() {
            accepted_seeds += 1;
        } else if name.starts_with("seed-") {
            panic!("{target}/{name}: a synthetic seed is rejected: {out:?}");
        }
    }
    // The seeds reach the code behind the parsers, not just the first check.
    assert!(accepted_seeds > 0, "{target}: no seed is accepted");
    let others: Vec<&[u8]> = seeds.iter().map(|(_, b)| b.as_slice()).collect();
    let max_len = others.iter().map(|b| b.len()).max().unwrap_or(0) * 2 + 64;
    let mut rng = Rng::new(env_u64("PROFILED_FUZZ_SEED", 1) ^ target.len() as u64);
    let (mut acc, mut rej) = (0u64, 0u64);
    for i in 0..iters {
        let base = others[rng.below(others.len())];
        let input = profiled_fuzz::mutate(&mut rng, base, &others, max_len);
        // Catch the panic to name the failing input, then fail the test.
        let r = std::panic::catch_unwind(|| profiled_fuzz::run(target, &input));
        match r {
            Ok(Some(o)) if o.is_accepted() => acc += 1,
            Ok(Some(_)) => rej += 1,
            Ok(None) => unreachable!(),
            Err(_) => {
                let path = std::env::temp_dir().join(format!("profiled-fuzz-{target}-{i}.bin"));
                std::fs::write(&path, &input).unwrap();
                panic!(
                    "{target}: mutation {i} panicked; input saved to {} (add it to \
                     fuzz/corpus/{target}/ once fixed)",
                    path.display()
                );
            }
        }
    }
    eprintln!(
        "{target}: {} seeds, {iters} mutations: {acc} accepted, {rej} rejected",
        seeds.len()
    );
    // Mutations must not all be rejected at the first check (else the run is
    // only testing the decoder's front door).
    if iters >= 100 {
        assert!(acc > 0, "{target}: every mutation was rejected");
    }
}

fn iters(default: u64) -> u64 {
    env_u64("PROFILED_FUZZ_ITERS", default)
}

#[test]
fn convert_corpus_and_mutations() {
    run_target("convert", iters(3000));
}

#[test]
fn track_corpus_and_mutations() {
    run_target("track", iters(3000));
}

#[test]
fn tokenizer_corpus_and_mutations() {
    run_target("tokenizer", iters(3000));
}

#[test]
fn model_files_corpus_and_mutations() {
    run_target("model_files", iters(1500));
}

#[test]
fn index_file_corpus_and_mutations() {
    run_target("index_file", iters(3000));
}

#[test]
fn request_status_corpus_and_mutations() {
    run_target("request_status", iters(3000));
}

/// The outside client's hostile cases (`case-*`) are the caller's fault:
/// INVALID_ARGUMENT, every one.
#[test]
fn request_status_hostile_cases_are_invalid_argument() {
    let cases: Vec<_> = profiled_fuzz::read_corpus(&corpus_dir(), "request_status")
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n.starts_with("case-"))
        .collect();
    assert!(cases.len() >= 9, "{} hostile cases", cases.len());
    for (name, bytes) in cases {
        match profiled_fuzz::request_status(&bytes) {
            profiled_fuzz::Outcome::Rejected(m) => {
                assert!(m.starts_with("InvalidArgument: "), "{name}: {m}");
            }
            profiled_fuzz::Outcome::Accepted => panic!("{name} was accepted"),
        }
    }
}

#[test]
fn every_target_has_seeds_and_a_body() {
    for t in profiled_fuzz::TARGETS {
        assert!(profiled_fuzz::run(t, &[]).is_some(), "{t} has no body");
        assert!(
            !profiled_fuzz::read_corpus(&corpus_dir(), t)
                .unwrap()
                .is_empty()
        );
    }
    assert!(profiled_fuzz::run("nope", &[]).is_none());
}
