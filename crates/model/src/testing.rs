//! Synthetic model versions for tests, fuzzing and benchmarks: a
//! MovieLens-shaped schema with random weights, written in the exact file
//! format the trainer exports, with golden profiles computed by an
//! independent f64 reference forward pass ([`reference_profile`]) that
//! follows `docs/model-format.md` line by line (no kernels involved).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::features::{Event, FieldValue, UserFeatures};
use crate::format::{
    BehaviourSchema, CategoricalTransform, Dtype, FeatureSchema, FieldKind, FieldSchema, Golden,
    GoldenInput, Group, ItemVocab, METADATA_FILE, ModelConfig, ModelJson, NumericTransform,
    SOURCE_EVENT_COUNT, SOURCE_EVENT_GENRES, VOCAB_OFFSET, WEIGHTS_FILE,
};
use crate::tokenizer::{FieldToken, Tokenizer, UserTokens};

/// Sizes of a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    /// Weight dtype in the file.
    pub dtype: Dtype,
    /// Model width.
    pub d_model: usize,
    /// Heads.
    pub heads: usize,
    /// Layers.
    pub layers: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Output width.
    pub d_out: usize,
    /// Items.
    pub items: usize,
    /// Most recent events kept.
    pub max_events: usize,
    /// Golden examples written.
    pub golden: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            dtype: Dtype::F32,
            d_model: 24,
            heads: 3,
            layers: 2,
            ffn: 40,
            d_out: 16,
            items: 30,
            max_events: 12,
            golden: 6,
            seed: 1,
        }
    }
}

/// The project's seeded generator ([`profiled_kernels::rng::SplitMix64`]).
pub use profiled_kernels::rng::SplitMix64 as Rng;

const GENRES: [&str; 6] = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"];
const OCCUPATIONS: [&str; 5] = ["engineer", "student", "writer", "artist", "doctor"];

/// The schema of a synthetic model.
pub fn synthetic_schema(spec: &SyntheticSpec, rng: &mut Rng) -> FeatureSchema {
    let cat = |name: &str, source: &str, transform, vocab: Vec<String>| FieldSchema {
        name: name.into(),
        group: Group::Demographic,
        source: source.into(),
        kind: FieldKind::Categorical {
            transform,
            min_count: 2,
            vocab,
        },
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    FeatureSchema {
        fields: vec![
            cat(
                "gender",
                "gender",
                CategoricalTransform::Identity,
                s(&["F", "M"]),
            ),
            cat(
                "occupation",
                "occupation",
                CategoricalTransform::Identity,
                s(&OCCUPATIONS),
            ),
            cat(
                "zip3",
                "zip_code",
                CategoricalTransform::Prefix { length: 3 },
                s(&["021", "100", "551", "941"]),
            ),
            cat(
                "age_bucket",
                "age",
                CategoricalTransform::Bucket {
                    edges: vec![18.0, 25.0, 35.0, 45.0, 50.0, 56.0],
                    labels: s(&["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]),
                },
                s(&["18-24", "25-34", "35-44", "45-49", "50-55", "56+", "<18"]),
            ),
            FieldSchema {
                name: "age".into(),
                group: Group::Demographic,
                source: "age".into(),
                kind: FieldKind::Numeric {
                    transform: NumericTransform::Identity,
                    mean: 33.0,
                    std: 11.0,
                    clip: 5.0,
                },
            },
            FieldSchema {
                name: "activity".into(),
                group: Group::Numeric,
                source: SOURCE_EVENT_COUNT.into(),
                kind: FieldKind::Numeric {
                    transform: NumericTransform::Log1p,
                    mean: 3.5,
                    std: 0.8,
                    clip: 5.0,
                },
            },
            FieldSchema {
                name: "genre_mix".into(),
                group: Group::Preference,
                source: SOURCE_EVENT_GENRES.into(),
                kind: FieldKind::Preference,
            },
        ],
        behaviour: BehaviourSchema {
            max_events: spec.max_events,
            gap_buckets: 16,
            rating_min: 1,
            rating_max: 5,
        },
        genres: s(&GENRES),
        items: ItemVocab {
            ids: (0..spec.items).map(|k| (k + 1).to_string()).collect(),
            titles: (0..spec.items)
                .map(|k| (k % 7 != 3).then(|| format!("Movie {} ({})", k + 1, 1980 + k % 20)))
                .collect(),
            genres: (0..spec.items)
                .map(|k| {
                    let mut g = vec![rng.below(GENRES.len()) as u32];
                    if k % 3 == 0 {
                        g.push(rng.below(GENRES.len()) as u32);
                    }
                    g.sort_unstable();
                    g.dedup();
                    g
                })
                .collect(),
        },
    }
}

/// Random features for a synthetic schema (some unknown items and values).
pub fn random_user(rng: &mut Rng, items: usize, max_events: usize) -> UserFeatures {
    let mut fields = BTreeMap::new();
    if rng.uniform() < 0.9 {
        fields.insert(
            "gender".into(),
            FieldValue::Categorical(["F", "M", "X"][rng.below(3)].into()),
        );
    }
    if rng.uniform() < 0.9 {
        let o = if rng.uniform() < 0.1 {
            "astronaut"
        } else {
            OCCUPATIONS[rng.below(5)]
        };
        fields.insert("occupation".into(), FieldValue::Categorical(o.into()));
    }
    if rng.uniform() < 0.8 {
        let z = ["02139", "10001", "55105", "94110", "77777"][rng.below(5)];
        fields.insert("zip_code".into(), FieldValue::Categorical(z.into()));
    }
    if rng.uniform() < 0.9 {
        let age = 10 + rng.below(60);
        let v = if rng.uniform() < 0.5 {
            FieldValue::Number(age as f64)
        } else {
            FieldValue::Categorical(age.to_string())
        };
        fields.insert("age".into(), v);
    }
    let n = rng.below(max_events * 2);
    let t0 = 880_000_000i64;
    let events = (0..n)
        .map(|_| Event {
            item: if rng.uniform() < 0.05 {
                "unknown".into()
            } else {
                (1 + rng.below(items)).to_string()
            },
            timestamp: t0 + rng.below(5_000_000) as i64,
            rating: (rng.uniform() < 0.8).then(|| (1 + rng.below(5)) as f32),
        })
        .collect();
    UserFeatures {
        user_id: None,
        fields,
        events,
    }
}

/// Random tensors for `meta` (f32 values; LayerNorm weights near 1).
pub fn random_tensors(meta: &ModelJson, rng: &mut Rng) -> BTreeMap<String, Vec<f32>> {
    meta.tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let ln = name.contains(".ln") || name.starts_with("final_norm");
            let v = (0..n)
                .map(|_| {
                    let r = rng.normal() as f32;
                    if ln && name.ends_with(".weight") {
                        1.0 + 0.1 * r
                    } else if name.ends_with(".bias") {
                        0.05 * r
                    } else {
                        0.25 * r
                    }
                })
                .collect();
            (name, v)
        })
        .collect()
}

/// Serialises tensors as safetensors bytes in `dtype`.
pub fn safetensors_bytes(
    tensors: &BTreeMap<String, Vec<f32>>,
    shapes: &BTreeMap<String, Vec<usize>>,
    dtype: Dtype,
) -> Result<Vec<u8>> {
    let mut data: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for (name, v) in tensors {
        let bytes: Vec<u8> = match dtype {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
        };
        let shape = shapes.get(name).cloned().unwrap_or_else(|| vec![v.len()]);
        data.push((name.clone(), bytes, shape));
    }
    let dt = match dtype {
        Dtype::F32 => safetensors::Dtype::F32,
        Dtype::F16 => safetensors::Dtype::F16,
    };
    let views = data
        .iter()
        .map(|(n, b, s)| {
            safetensors::tensor::TensorView::new(dt, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Argument(format!("safetensors: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| Error::Argument(format!("safetensors: {e}")))
}

/// Writes a synthetic model version into `dir` (created if needed) and returns its model.json.
pub fn write_synthetic_model(dir: &Path, spec: &SyntheticSpec) -> Result<ModelJson> {
    let mut rng = Rng::new(spec.seed);
    let schema = synthetic_schema(spec, &mut rng);
    let mut meta = ModelJson {
        format: crate::format::FORMAT.into(),
        format_version: crate::format::FORMAT_VERSION,
        name: "synthetic".into(),
        version: 1,
        dtype: spec.dtype.name().into(),
        architecture: ModelConfig {
            d_model: spec.d_model,
            heads: spec.heads,
            layers: spec.layers,
            ffn: spec.ffn,
            d_out: spec.d_out,
            ln_eps: 1e-5,
            temperature: 0.07,
            dropout: 0.1,
            activation: "gelu_tanh".into(),
            mask: "prefix_visible_causal".into(),
        },
        schema,
        dataset: serde_json::json!({"name": "synthetic-test"}),
        training: serde_json::Value::Null,
        split: serde_json::json!({"all_events": true}),
        metrics: serde_json::Value::Null,
        golden: Vec::new(),
    };
    let tensors = random_tensors(&meta, &mut rng);
    let tk = Tokenizer::new(meta.schema.clone());
    for i in 0..spec.golden {
        let mut u = random_user(&mut rng, spec.items, spec.max_events);
        if i == 0 {
            u.events.clear();
        }
        let tokens = tk.tokenize(&u)?;
        let profile = reference_profile(&meta, &tensors, &tokens)?;
        meta.golden.push(Golden {
            note: format!("synthetic user {i}"),
            input: GoldenInput::from_features(&u),
            profile: profile.iter().map(|&x| x as f32).collect(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let bytes = safetensors_bytes(&tensors, &meta.tensor_shapes(), spec.dtype)?;
    let w = dir.join(WEIGHTS_FILE);
    std::fs::write(&w, bytes).map_err(|source| Error::Io { path: w, source })?;
    let j = dir.join(METADATA_FILE);
    let text = serde_json::to_string_pretty(&meta).map_err(|e| Error::Argument(e.to_string()))?;
    std::fs::write(&j, text).map_err(|source| Error::Io { path: j, source })?;
    Ok(meta)
}

fn layer_norm(x: &[f64], g: &[f32], b: &[f32], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    x.iter()
        .zip(g.iter().zip(b))
        .map(|(v, (g, b))| (v - mean) * inv * f64::from(*g) + f64::from(*b))
        .collect()
}

/// `x · Wᵀ + b` with `W` `[out, in]`.
fn linear(x: &[f64], w: &[f32], b: &[f32]) -> Vec<f64> {
    let k = x.len();
    b.iter()
        .enumerate()
        .map(|(j, bj)| f64::from(*bj) + (0..k).map(|i| x[i] * f64::from(w[j * k + i])).sum::<f64>())
        .collect()
}

/// The profile of `tokens` computed in f64 straight from the format's math
/// (embeddings, pre-LN layers with the prefix-visible + causal mask, final
/// norm at the last token, head, L2 normalisation).
pub fn reference_profile(
    meta: &ModelJson,
    t: &BTreeMap<String, Vec<f32>>,
    tokens: &UserTokens,
) -> Result<Vec<f64>> {
    let get = |n: &str| {
        t.get(n)
            .ok_or_else(|| Error::Argument(format!("tensor {n} missing")))
    };
    let cfg = &meta.architecture;
    let s = &meta.schema;
    let d = cfg.d_model;
    let p = s.fields.len();
    let row = |n: &str, r: usize| -> Result<Vec<f64>> {
        Ok(get(n)?[r * d..(r + 1) * d]
            .iter()
            .map(|&x| f64::from(x))
            .collect())
    };
    let add =
        |a: &mut Vec<f64>, b: &[f64], k: f64| a.iter_mut().zip(b).for_each(|(x, y)| *x += k * y);
    let mut xs: Vec<Vec<f64>> = Vec::new();
    for (i, (f, tok)) in s.fields.iter().zip(&tokens.fields).enumerate() {
        let mut v = vec![0.0; d];
        match tok {
            FieldToken::Categorical(r) => add(
                &mut v,
                &row(&format!("fields.{}.embedding", f.name), *r as usize)?,
                1.0,
            ),
            FieldToken::Numeric(Some(z)) => add(
                &mut v,
                &row(&format!("fields.{}.weight", f.name), 0)?,
                f64::from(*z),
            ),
            FieldToken::Numeric(None) | FieldToken::Preference(None) => {
                add(&mut v, &row(&format!("fields.{}.missing", f.name), 0)?, 1.0)
            }
            FieldToken::Preference(Some(w)) => {
                for (k, wk) in w.iter().enumerate() {
                    add(
                        &mut v,
                        &row(&format!("fields.{}.embedding", f.name), k)?,
                        f64::from(*wk),
                    );
                }
            }
        }
        add(&mut v, &row("embed.type", i)?, 1.0);
        xs.push(v);
    }
    for (pos, e) in tokens.events.iter().enumerate() {
        let mut v = row("behaviour.item", e.item_row as usize)?;
        if e.item_row >= VOCAB_OFFSET {
            for &g in &s.items.genres[(e.item_row - VOCAB_OFFSET) as usize] {
                add(&mut v, &row("behaviour.genre", g as usize)?, 1.0);
            }
        }
        add(
            &mut v,
            &row("behaviour.rating", e.rating_row as usize)?,
            1.0,
        );
        add(&mut v, &row("behaviour.gap", e.gap_row as usize)?, 1.0);
        add(&mut v, &row("behaviour.position", pos)?, 1.0);
        add(&mut v, &row("embed.type", p)?, 1.0);
        xs.push(v);
    }
    let n = xs.len();
    let (h, hd) = (cfg.heads, d / cfg.heads);
    let eps = cfg.ln_eps;
    let gelu = |x: f64| {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
    };
    for l in 0..cfg.layers {
        let g = |n: &str| get(&format!("layers.{l}.{n}"));
        let (l1w, l1b) = (g("ln1.weight")?, g("ln1.bias")?);
        let ln: Vec<Vec<f64>> = xs.iter().map(|x| layer_norm(x, l1w, l1b, eps)).collect();
        let q: Vec<Vec<f64>> = ln
            .iter()
            .map(|x| Ok(linear(x, g("attn.q.weight")?, g("attn.q.bias")?)))
            .collect::<Result<_>>()?;
        let k: Vec<Vec<f64>> = ln
            .iter()
            .map(|x| Ok(linear(x, g("attn.k.weight")?, g("attn.k.bias")?)))
            .collect::<Result<_>>()?;
        let v: Vec<Vec<f64>> = ln
            .iter()
            .map(|x| Ok(linear(x, g("attn.v.weight")?, g("attn.v.bias")?)))
            .collect::<Result<_>>()?;
        let mut next = Vec::with_capacity(n);
        for i in 0..n {
            let visible = |j: usize| j < p || (j <= i && i >= p);
            let mut ctx = vec![0.0; d];
            for hh in 0..h {
                let r = hh * hd..(hh + 1) * hd;
                let sc: Vec<f64> = (0..n)
                    .map(|j| {
                        if visible(j) {
                            q[i][r.clone()]
                                .iter()
                                .zip(&k[j][r.clone()])
                                .map(|(a, b)| a * b)
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for j in 0..n {
                    for c in r.clone() {
                        ctx[c] += e[j] / z * v[j][c];
                    }
                }
            }
            let a = linear(&ctx, g("attn.o.weight")?, g("attn.o.bias")?);
            let hres: Vec<f64> = xs[i].iter().zip(&a).map(|(x, y)| x + y).collect();
            let l2 = layer_norm(&hres, g("ln2.weight")?, g("ln2.bias")?, eps);
            let up: Vec<f64> = linear(&l2, g("ffn.up.weight")?, g("ffn.up.bias")?)
                .into_iter()
                .map(gelu)
                .collect();
            let down = linear(&up, g("ffn.down.weight")?, g("ffn.down.bias")?);
            next.push(hres.iter().zip(&down).map(|(x, y)| x + y).collect());
        }
        xs = next;
    }
    let last = xs
        .last()
        .ok_or_else(|| Error::Argument("no tokens".into()))?;
    let fin = layer_norm(
        last,
        get("final_norm.weight")?,
        get("final_norm.bias")?,
        eps,
    );
    let out = linear(&fin, get("head.weight")?, get("head.bias")?);
    let norm = out.iter().map(|x| x * x).sum::<f64>().sqrt();
    Ok(out.iter().map(|x| x / norm.max(1e-300)).collect())
}
