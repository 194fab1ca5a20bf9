//! Scan-kernel probe: min / median times of the 1M × 64 scans, in memory
//! (no file), next to the memory bandwidth. A quicker loop than the full
//! `search-report` when tuning the kernels:
//! `cargo run --release -p profiled-index --example scan_probe`.

use std::time::Instant;

use profiled_index::synthetic;
use profiled_kernels::scan::{self, Blocked, TopK};
use profiled_kernels::{Isa, f16};

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn main() -> anyhow::Result<()> {
    let (rows, dims) = (1_000_000usize, 64usize);
    let isa = Isa::active();
    let (x, _) = synthetic::clustered(rows, dims, 1000, 0.7, 1);
    let packed = scan::pack_blocked(&x, dims)?;
    let rm: Vec<f16> = x.iter().map(|v| f16::from_f32(*v)).collect();
    drop(x);
    let m = Blocked::new(&packed, dims, rows)?;
    let qs = synthetic::held_out_queries(rows, 16, dims, 1000, 0.7, 1);
    let mut g = synthetic::SplitMix::new(2);
    let cand: Vec<u32> = (0..rows as u32).filter(|_| g.uniform() < 0.015).collect();
    let bw = profiled_kernels::probe::mem_read_gbps(512 << 20, 5);
    println!(
        "isa {isa}, bandwidth {bw:.1} GB/s, {} candidates",
        cand.len()
    );
    let bytes = (packed.len() * 2) as f64;
    let time = |f: &mut dyn FnMut()| {
        let mut v = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            f();
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        stats(v)
    };
    let (mn, md) = time(&mut || {
        let mut t = vec![TopK::new(10)];
        let _ = scan::scan(isa, &m, &qs[..dims], &mut t);
        std::hint::black_box(t);
    });
    println!(
        "q1: min {mn:.3} ms ({:.2} of bw), median {md:.3} ms ({:.2})",
        bytes / mn / 1e6 / bw,
        bytes / md / 1e6 / bw
    );
    let (mn, md) = time(&mut || {
        let mut t: Vec<TopK> = (0..16).map(|_| TopK::new(10)).collect();
        let _ = scan::scan(isa, &m, &qs, &mut t);
        std::hint::black_box(t);
    });
    println!(
        "q16: min {:.3} ms/query, median {:.3}",
        mn / 16.0,
        md / 16.0
    );
    let (mn, md) = time(&mut || {
        for _ in 0..20 {
            let mut t = vec![TopK::new(10)];
            let _ = scan::scan_candidates_rows(isa, &rm, dims, &cand, &qs[..dims], &mut t);
            std::hint::black_box(t);
        }
    });
    println!(
        "candidates rows: min {:.1} µs ({:.0} QPS), median {:.1} µs",
        mn * 50.0,
        20e3 / mn,
        md * 50.0
    );
    let (mn, md) = time(&mut || {
        for _ in 0..5 {
            let mut t = vec![TopK::new(10)];
            let _ = scan::scan_candidates_blocked(isa, &m, &cand, &qs[..dims], &mut t);
            std::hint::black_box(t);
        }
    });
    println!(
        "candidates blocked: min {:.1} µs, median {:.1} µs",
        mn * 200.0,
        md * 200.0
    );
    Ok(())
}
