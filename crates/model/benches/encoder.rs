//! Criterion benches of the serving encoder (tokenize + embed + 2 layers +
//! head, `Encoder::forward_batch`) on a synthetic model of the default
//! shape (d = 64, 4 heads, FFN 256, d_out 64, 50-event window, 6 field
//! tokens): B = 1 and B = 64 on one thread, B = 64 split over 2 threads.
//! Throughput is in users. Part of `cargo bench-all`; run alone with
//! `cargo bench -p profiled-model --bench encoder`.
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use profiled_model::testing::{Rng, SyntheticSpec, random_user, write_synthetic_model};
use profiled_model::{Encoder, UserFeatures, Workspace};

fn setup() -> (tempfile::TempDir, Encoder, Vec<UserFeatures>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = SyntheticSpec {
        d_model: 64,
        heads: 4,
        ffn: 256,
        d_out: 64,
        items: 1682,
        max_events: 50,
        golden: 16,
        seed: 3,
        ..SyntheticSpec::default()
    };
    write_synthetic_model(tmp.path(), &spec).expect("synthetic model");
    let enc = Encoder::load(tmp.path()).expect("load");
    let mut rng = Rng::new(5);
    // 64 users with full windows (≥ 50 events): 56 tokens each.
    let users: Vec<UserFeatures> = std::iter::repeat_with(|| random_user(&mut rng, 1682, 50))
        .filter(|u| u.events.len() >= 50)
        .take(64)
        .collect();
    (tmp, enc, users)
}

fn bench_encoder(c: &mut Criterion) {
    let (_tmp, enc, users) = setup();
    let mut g = c.benchmark_group("encoder");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let mut ws = Workspace::new();
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("{}/b1_t56", enc.isa()), |b| {
        b.iter(|| {
            let p = enc
                .forward_batch(black_box(&users[..1]), &mut ws)
                .expect("forward");
            black_box(p.as_slice()[0])
        })
    });
    g.throughput(Throughput::Elements(users.len() as u64));
    g.bench_function(format!("{}/b64_t56", enc.isa()), |b| {
        b.iter(|| {
            let p = enc
                .forward_batch(black_box(&users), &mut ws)
                .expect("forward");
            black_box(p.as_slice()[0])
        })
    });
    let mut wss = vec![Workspace::new(), Workspace::new()];
    g.bench_function(format!("{}/b64_t56_2threads", enc.isa()), |b| {
        b.iter(|| {
            enc.forward_batch_parallel(black_box(&users), &mut wss, 32)
                .expect("forward")
        })
    });
    g.finish();
}

criterion_group!(benches, bench_encoder);
criterion_main!(benches);
