//! The serving forward in a loop, for profiling (`perf record`) and quick
//! A/B timings: a synthetic model of the default serving shape (d = 64,
//! 4 heads, 2 layers, FFN 256, 6 field tokens + 50 events = 56 tokens per
//! user), B users per call, for `SECS` seconds; prints the median µs per
//! user of 1 s windows. Not a report: `encoder-report` is the reference.
//!
//! `cargo run --release -p profiled-model --example forward_loop [-- B SECS]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use profiled_model::testing::{Rng, SyntheticSpec, random_user, write_synthetic_model};
use profiled_model::{Encoder, UserFeatures, Workspace};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let b: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(64);
    let secs: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = SyntheticSpec {
        d_model: 64,
        heads: 4,
        ffn: 256,
        d_out: 64,
        items: 1682,
        max_events: 50,
        golden: 4,
        seed: 3,
        ..SyntheticSpec::default()
    };
    write_synthetic_model(tmp.path(), &spec).expect("synthetic model");
    let enc = Encoder::load(tmp.path()).expect("load");
    let mut rng = Rng::new(5);
    let users: Vec<UserFeatures> = std::iter::repeat_with(|| random_user(&mut rng, 1682, 50))
        .filter(|u| u.events.len() >= 50)
        .take(b.max(1))
        .collect();
    let mut ws = Workspace::new();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut windows = Vec::new();
    while Instant::now() < end {
        let t0 = Instant::now();
        let mut calls = 0usize;
        while t0.elapsed() < Duration::from_millis(200) {
            let p = enc.forward_batch(&users, &mut ws).expect("forward");
            black_box(p.as_slice()[0]);
            calls += 1;
        }
        windows.push(t0.elapsed().as_secs_f64() * 1e6 / (calls * users.len()) as f64);
    }
    windows.sort_by(f64::total_cmp);
    println!(
        "{} B={} µs/user: median {:.2}, min {:.2} ({} windows)",
        enc.isa(),
        users.len(),
        windows[windows.len() / 2],
        windows[0],
        windows.len()
    );
}
