//! Criterion benches of the exact scan kernels over the blocked layout
//! (single thread, k = 10): 1M × 64 with 1 and 16 queries per pass, and a
//! 1.5% candidate list through the row-major gather. Run with
//! `cargo bench -p profiled-index --bench scan`; the report binary
//! (`search-report`) prints the same figures next to the memory bandwidth.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use profiled_index::synthetic;
use profiled_kernels::scan::{self, Blocked, TopK};
use profiled_kernels::{Isa, f16};

const ROWS: usize = 1_000_000;
const DIMS: usize = 64;

fn bench_scan(c: &mut Criterion) {
    let (x, _) = synthetic::clustered(ROWS, DIMS, 256, 0.7, 1);
    let packed = match scan::pack_blocked(&x, DIMS) {
        Ok(p) => p,
        Err(e) => panic!("pack: {e}"),
    };
    let rows_major: Vec<f16> = x.iter().map(|v| f16::from_f32(*v)).collect();
    drop(x);
    let m = match Blocked::new(&packed, DIMS, ROWS) {
        Ok(m) => m,
        Err(e) => panic!("blocked: {e}"),
    };
    let qs = synthetic::clustered(16, DIMS, 256, 0.7, 2).0;
    let mut g = synthetic::SplitMix::new(5);
    let mut cand: Vec<u32> = (0..ROWS as u32).filter(|_| g.uniform() < 0.015).collect();
    cand.dedup();

    let mut group = c.benchmark_group("scan_1m_d64");
    // One pass is 4 ms (AVX-512) to 150 ms (scalar): flat sampling with
    // short times keeps the whole group near half a minute.
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for isa in Isa::supported() {
        group.throughput(Throughput::Bytes((packed.len() * 2) as u64));
        group.bench_function(format!("{isa}/q1"), |b| {
            b.iter(|| {
                let mut tops = vec![TopK::new(10)];
                let _ = scan::scan(isa, &m, black_box(&qs[..DIMS]), &mut tops);
                black_box(tops)
            })
        });
        group.bench_function(format!("{isa}/q16"), |b| {
            b.iter(|| {
                let mut tops: Vec<TopK> = (0..16).map(|_| TopK::new(10)).collect();
                let _ = scan::scan(isa, &m, black_box(&qs), &mut tops);
                black_box(tops)
            })
        });
        group.throughput(Throughput::Elements(cand.len() as u64));
        group.bench_function(format!("{isa}/candidates_1p5pct"), |b| {
            b.iter(|| {
                let mut tops = vec![TopK::new(10)];
                let _ = scan::scan_candidates_rows(
                    isa,
                    &rows_major,
                    DIMS,
                    &cand,
                    black_box(&qs[..DIMS]),
                    &mut tops,
                );
                black_box(tops)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
