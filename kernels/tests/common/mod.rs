//! Shared helpers of the GEMM / attention / block tests: the seeded generator
//! ([`profiled_kernels::rng::SplitMix64`]) and scalar references that accumulate in f64.
#![allow(dead_code)]

use profiled_kernels::attention::{OutputRows, Sequence};
use profiled_kernels::f16;

/// The project's one seeded generator, under the name the tests use.
pub use profiled_kernels::rng::SplitMix64 as Rng;

/// Rounds through f16 (what F16 packing stores).
pub fn round_f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

/// `out[i][j] = Σ_k x[i][k]·w[j][k] + b[j]` with `w` in `[out, in]` layout,
/// in f64. Also returns `Σ_k |x·w| + |b|` per element (for error bounds).
pub fn linear_ref(
    x: &[f64],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    b: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; m * n];
    let mut mag = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = b.map_or(0.0, |b| b[j] as f64);
            let mut a = s.abs();
            for kk in 0..k {
                let t = x[i * k + kk] * w[j * k + kk] as f64;
                s += t;
                a += t.abs();
            }
            out[i * n + j] = s;
            mag[i * n + j] = a;
        }
    }
    (out, mag)
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn layer_norm_ref(x: &[f64], g: &[f32], b: &[f32], eps: f32) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps as f64).sqrt();
    x.iter()
        .enumerate()
        .map(|(i, v)| (v - mean) * inv * g[i] as f64 + b[i] as f64)
        .collect()
}

pub fn gelu_ref(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

/// Reference attention weights (PyTorch layout, f32 values, possibly
/// pre-rounded to f16 by the caller).
#[derive(Clone)]
pub struct AttnRef {
    pub d: usize,
    pub heads: usize,
    pub in_w: Vec<f32>,
    pub in_b: Vec<f32>,
    pub out_w: Vec<f32>,
    pub out_b: Vec<f32>,
}

impl AttnRef {
    pub fn random(rng: &mut Rng, d: usize, heads: usize) -> AttnRef {
        let s = 1.0 / (d as f32).sqrt();
        AttnRef {
            d,
            heads,
            in_w: rng.vec_f32(3 * d * d, s * 1.5),
            in_b: rng.vec_f32(3 * d, 0.2),
            out_w: rng.vec_f32(d * d, s),
            out_b: rng.vec_f32(d, 0.2),
        }
    }

    pub fn rounded(&self) -> AttnRef {
        AttnRef {
            d: self.d,
            heads: self.heads,
            in_w: round_f16(&self.in_w),
            in_b: self.in_b.clone(),
            out_w: round_f16(&self.out_w),
            out_b: self.out_b.clone(),
        }
    }
}

pub fn visible(s: &Sequence, i: usize) -> usize {
    s.visible(i)
}

/// f64 MHA: returns (output rows, probabilities in the kernel's layout).
pub fn mha_ref(
    w: &AttnRef,
    x: &[f64],
    seqs: &[Sequence],
    rows: OutputRows,
) -> (Vec<f64>, Vec<f64>) {
    let d = w.d;
    let hd = d / w.heads;
    let total: usize = seqs.iter().map(|s| s.len).sum();
    let (qkv, _) = linear_ref(x, total, d, &w.in_w, 3 * d, Some(&w.in_b));
    let mut attn_rows = Vec::new();
    let mut probs_seq: Vec<f64> = Vec::new();
    let mut r0 = 0;
    for s in seqs {
        let t = s.len;
        let qs: Vec<usize> = match rows {
            OutputRows::All => (0..t).collect(),
            OutputRows::LastOnly => vec![t - 1],
        };
        let mut o = vec![0.0; qs.len() * d];
        probs_seq.resize(probs_seq.len() + w.heads * qs.len() * t, 0.0);
        for h in 0..w.heads {
            for (qi, &i) in qs.iter().enumerate() {
                let l = visible(s, i);
                let mut sc = vec![0.0f64; l];
                for j in 0..l {
                    let mut acc = 0.0;
                    for c in 0..hd {
                        acc += qkv[(r0 + i) * 3 * d + h * hd + c]
                            * qkv[(r0 + j) * 3 * d + d + h * hd + c];
                    }
                    sc[j] = acc / (hd as f64).sqrt();
                }
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for v in sc.iter_mut() {
                    *v = (*v - mx).exp();
                    sum += *v;
                }
                for v in sc.iter_mut() {
                    *v /= sum;
                }
                for c in 0..hd {
                    let mut acc = 0.0;
                    for j in 0..l {
                        acc += sc[j] * qkv[(r0 + j) * 3 * d + 2 * d + h * hd + c];
                    }
                    o[qi * d + h * hd + c] = acc;
                }
                let base = probs_seq.len() - w.heads * qs.len() * t + (h * qs.len() + qi) * t;
                probs_seq[base..base + l].copy_from_slice(&sc);
            }
        }
        attn_rows.push(o);
        r0 += t;
    }
    let probs = probs_seq;
    let attn: Vec<f64> = attn_rows.concat();
    let n = attn.len() / d;
    let (out, _) = linear_ref(&attn, n, d, &w.out_w, d, Some(&w.out_b));
    (out, probs)
}

/// Reference layer tensors.
pub struct LayerRef {
    pub attn: AttnRef,
    pub ffn: usize,
    pub eps: f32,
    pub ln1_g: Vec<f32>,
    pub ln1_b: Vec<f32>,
    pub ln2_g: Vec<f32>,
    pub ln2_b: Vec<f32>,
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

impl LayerRef {
    pub fn random(rng: &mut Rng, d: usize, heads: usize, ffn: usize) -> LayerRef {
        let attn = AttnRef::random(rng, d, heads);
        let g = |rng: &mut Rng, n| {
            (0..n)
                .map(|_| 1.0 + rng.uniform_f32(0.3))
                .collect::<Vec<f32>>()
        };
        LayerRef {
            attn,
            ffn,
            eps: 1e-5,
            ln1_g: g(rng, d),
            ln1_b: rng.vec_f32(d, 0.2),
            ln2_g: g(rng, d),
            ln2_b: rng.vec_f32(d, 0.2),
            w1: rng.vec_f32(ffn * d, 1.5 / (d as f32).sqrt()),
            b1: rng.vec_f32(ffn, 0.2),
            w2: rng.vec_f32(d * ffn, 1.0 / (ffn as f32).sqrt()),
            b2: rng.vec_f32(d, 0.2),
        }
    }

    pub fn rounded(&self) -> LayerRef {
        LayerRef {
            attn: self.attn.rounded(),
            ffn: self.ffn,
            eps: self.eps,
            ln1_g: self.ln1_g.clone(),
            ln1_b: self.ln1_b.clone(),
            ln2_g: self.ln2_g.clone(),
            ln2_b: self.ln2_b.clone(),
            w1: round_f16(&self.w1),
            b1: self.b1.clone(),
            w2: round_f16(&self.w2),
            b2: self.b2.clone(),
        }
    }

    pub fn tensors(&self) -> profiled_kernels::block::LayerTensors<'_> {
        profiled_kernels::block::LayerTensors {
            d: self.attn.d,
            heads: self.attn.heads,
            ffn: self.ffn,
            eps: self.eps,
            in_proj_weight: &self.attn.in_w,
            in_proj_bias: &self.attn.in_b,
            out_proj_weight: &self.attn.out_w,
            out_proj_bias: &self.attn.out_b,
            ln1_weight: &self.ln1_g,
            ln1_bias: &self.ln1_b,
            ln2_weight: &self.ln2_g,
            ln2_bias: &self.ln2_b,
            ffn1_weight: &self.w1,
            ffn1_bias: &self.b1,
            ffn2_weight: &self.w2,
            ffn2_bias: &self.b2,
        }
    }
}

/// f64 pre-LN block.
pub fn block_ref(l: &LayerRef, x: &[f32], seqs: &[Sequence], rows: OutputRows) -> Vec<f64> {
    let d = l.attn.d;
    let x64 = to_f64(x);
    let total = x.len() / d;
    let mut ln = Vec::with_capacity(x.len());
    for i in 0..total {
        ln.extend(layer_norm_ref(
            &x64[i * d..(i + 1) * d],
            &l.ln1_g,
            &l.ln1_b,
            l.eps,
        ));
    }
    let (a, _) = mha_ref(&l.attn, &ln, seqs, rows);
    let res = residual_rows(&x64, d, seqs, rows);
    let h: Vec<f64> = a.iter().zip(&res).map(|(a, r)| a + r).collect();
    let n = h.len() / d;
    let mut ln2 = Vec::with_capacity(h.len());
    for i in 0..n {
        ln2.extend(layer_norm_ref(
            &h[i * d..(i + 1) * d],
            &l.ln2_g,
            &l.ln2_b,
            l.eps,
        ));
    }
    let (f1, _) = linear_ref(&ln2, n, d, &l.w1, l.ffn, Some(&l.b1));
    let g: Vec<f64> = f1.into_iter().map(gelu_ref).collect();
    let (f2, _) = linear_ref(&g, n, l.ffn, &l.w2, d, Some(&l.b2));
    h.iter().zip(&f2).map(|(a, b)| a + b).collect()
}

pub fn residual_rows(x: &[f64], d: usize, seqs: &[Sequence], rows: OutputRows) -> Vec<f64> {
    match rows {
        OutputRows::All => x.to_vec(),
        OutputRows::LastOnly => {
            let mut r = Vec::new();
            let mut r0 = 0;
            for s in seqs {
                let last = r0 + s.len - 1;
                r.extend_from_slice(&x[last * d..(last + 1) * d]);
                r0 += s.len;
            }
            r
        }
    }
}

/// Asserts `|got − want| ≤ abs + rel·|want|` elementwise, NaN only where
/// the reference is NaN.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], abs: f64, rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "{what}[{i}]: got {g}, want NaN");
            continue;
        }
        let err = (g as f64 - w).abs();
        assert!(
            err <= abs + rel * w.abs(),
            "{what}[{i}]: got {g}, want {w}, err {err:e} > {abs:e} + {rel:e}·|want|"
        );
    }
}

/// Proptest case count: `default`, or `PROPTEST_CASES` when set (for longer
/// soak runs: `PROPTEST_CASES=500 cargo test -p profiled-kernels --profile ci`).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
