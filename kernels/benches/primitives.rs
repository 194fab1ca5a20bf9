//! Criterion benchmarks of the SIMD primitives on every supported path, and
//! the 1M × 64 f16 row scan (one query, and 16 queries per pass).
//!
//! `cargo bench -p profiled-kernels --bench primitives [-- filter]`.
//! Throughput is reported in elements (or bytes of the scanned matrix).
//! These are figures, not assertions; compare the scan against the machine's
//! read bandwidth (`profiled_kernels::probe::mem_read_gbps`) measured in the
//! same run by the kernels report.

#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use profiled_kernels::{Isa, activation, convert, f16, vector};

const SIZES: [usize; 3] = [64, 256, 4096];

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn halves(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn bench_vector(c: &mut Criterion) {
    for (name, f16_a) in [("dot_f32", false), ("dot_f16", true)] {
        let mut g = c.benchmark_group(name);
        g.measurement_time(Duration::from_secs(1))
            .warm_up_time(Duration::from_millis(300));
        for n in SIZES {
            let a = data(n, 1);
            let b = data(n, 2);
            let ah = halves(&a);
            g.throughput(Throughput::Elements(n as u64));
            for isa in Isa::supported() {
                g.bench_with_input(BenchmarkId::new(isa.name(), n), &n, |bch, _| {
                    if f16_a {
                        bch.iter(|| vector::dot_f16(isa, black_box(&ah), black_box(&b)))
                    } else {
                        bch.iter(|| vector::dot_f32(isa, black_box(&a), black_box(&b)))
                    }
                });
            }
        }
        g.finish();
    }
    for (name, f16_x) in [("axpy_f32", false), ("axpy_f16", true)] {
        let mut g = c.benchmark_group(name);
        g.measurement_time(Duration::from_secs(1))
            .warm_up_time(Duration::from_millis(300));
        for n in SIZES {
            let x = data(n, 3);
            let xh = halves(&x);
            let mut y = data(n, 4);
            g.throughput(Throughput::Elements(n as u64));
            for isa in Isa::supported() {
                g.bench_with_input(BenchmarkId::new(isa.name(), n), &n, |bch, _| {
                    if f16_x {
                        bch.iter(|| vector::axpy_f16(isa, 1e-3, black_box(&xh), black_box(&mut y)))
                    } else {
                        bch.iter(|| vector::axpy_f32(isa, 1e-3, black_box(&x), black_box(&mut y)))
                    }
                });
            }
        }
        g.finish();
    }
    let mut g = c.benchmark_group("l2_normalize");
    g.measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(300));
    for n in SIZES {
        let mut x = data(n, 5);
        g.throughput(Throughput::Elements(n as u64));
        for isa in Isa::supported() {
            g.bench_with_input(BenchmarkId::new(isa.name(), n), &n, |bch, _| {
                bch.iter(|| vector::l2_normalize(isa, black_box(&mut x)))
            });
        }
    }
    g.finish();
}

fn bench_convert(c: &mut Criterion) {
    let mut g = c.benchmark_group("convert");
    g.measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(300));
    for n in SIZES {
        let f = data(n, 6);
        let h = halves(&f);
        let mut fo = vec![0.0f32; n];
        let mut ho = vec![f16::ZERO; n];
        g.throughput(Throughput::Elements(n as u64));
        for isa in Isa::supported() {
            g.bench_with_input(
                BenchmarkId::new(format!("f16_to_f32/{}", isa.name()), n),
                &n,
                |b, _| b.iter(|| convert::f16_to_f32(isa, black_box(&h), black_box(&mut fo))),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("f32_to_f16/{}", isa.name()), n),
                &n,
                |b, _| b.iter(|| convert::f32_to_f16(isa, black_box(&f), black_box(&mut ho))),
            );
        }
    }
    g.finish();
}

fn bench_activation(c: &mut Criterion) {
    let mut g = c.benchmark_group("activation");
    g.measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(300));
    for n in [16usize, 56, 256, 4096] {
        let x: Vec<f32> = data(n, 7).iter().map(|v| v * 8.0).collect();
        let gamma = data(n, 8);
        let beta = data(n, 9);
        let mut work = x.clone();
        let mut out = vec![0.0f32; n];
        g.throughput(Throughput::Elements(n as u64));
        for isa in Isa::supported() {
            g.bench_with_input(
                BenchmarkId::new(format!("softmax_row/{}", isa.name()), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        work.copy_from_slice(&x);
                        activation::softmax_row(isa, black_box(&mut work));
                    })
                },
            );
            g.bench_with_input(
                BenchmarkId::new(format!("gelu/{}", isa.name()), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        work.copy_from_slice(&x);
                        activation::gelu(isa, black_box(&mut work));
                    })
                },
            );
            g.bench_with_input(
                BenchmarkId::new(format!("exp/{}", isa.name()), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        work.copy_from_slice(&x);
                        activation::exp_inplace(isa, black_box(&mut work));
                    })
                },
            );
            g.bench_with_input(
                BenchmarkId::new(format!("layer_norm/{}", isa.name()), n),
                &n,
                |b, _| {
                    b.iter(|| {
                        activation::layer_norm(isa, black_box(&x), &gamma, &beta, 1e-5, &mut out)
                    })
                },
            );
        }
    }
    g.finish();
}

/// The index's exact scan: 1M × 64 f16 rows (128 MiB, far beyond the caches)
/// against one query and against 16 queries in one pass.
fn bench_scan(c: &mut Criterion) {
    let (nrows, dim) = (1usize << 20, 64usize);
    let rows = halves(&data(nrows * dim, 10));
    let q = data(16 * dim, 11);
    let mut out = vec![0.0f32; nrows * 16];
    let bytes = (nrows * dim * 2) as u64;
    // The baseline in the same run: single-core read bandwidth of a 512 MiB
    // stream (what the scan is judged against).
    let bw = profiled_kernels::probe::mem_read_gbps(512 << 20, 3);
    eprintln!(
        "baseline: memory read bandwidth {bw:.2} GB/s; the scan reads {:.1} MB per pass",
        bytes as f64 / 1e6
    );
    let mut g = c.benchmark_group("scan_1m_x64_f16");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Bytes(bytes));
    for isa in Isa::supported() {
        g.bench_function(BenchmarkId::new("dot_f16_rows", isa.name()), |b| {
            b.iter(|| {
                vector::dot_f16_rows(isa, black_box(&rows), dim, &q[..dim], &mut out[..nrows])
            })
        });
        g.bench_function(BenchmarkId::new("dot_f16_rows_multi_16", isa.name()), |b| {
            b.iter(|| vector::dot_f16_rows_multi(isa, black_box(&rows), dim, &q, 16, &mut out))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_convert,
    bench_vector,
    bench_activation,
    bench_scan
);
criterion_main!(benches);
