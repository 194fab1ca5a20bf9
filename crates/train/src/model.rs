//! The profile model on candle: token embeddings, a pre-LN transformer with
//! the "prefix-visible + causal" mask, the profile head and the item tower.
//!
//! One definition serves training (with dropout), evaluation, golden
//! examples and export; `docs/model-format.md` states the same math in
//! words. All parameters live in one name → [`Var`] map whose names are the
//! tensor names of `model.safetensors`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::schema::{FeatureSchema, FieldKind, FieldToken, Tokenizer, UserTokens, VOCAB_OFFSET};

/// Architecture hyper-parameters (`architecture` in model.json; the
/// format's own type, defaults in its `Default`).
pub use profiled_model::format::ModelConfig;
/// Parameter shapes by tensor name for a schema and configuration (the
/// format's table: the trainer creates exactly the tensors the encoder loads).
pub use profiled_model::format::tensor_shapes as param_shapes;

/// Checks the shape constraints the trainer needs (dropout in `[0, 1)`
/// on top of what the format requires).
pub fn validate_config(config: &ModelConfig) -> Result<()> {
    if config.d_model == 0 || config.heads == 0 || !config.d_model.is_multiple_of(config.heads) {
        return Err(Error::Config(format!(
            "d_model {} must be a positive multiple of heads {}",
            config.d_model, config.heads
        )));
    }
    if config.layers == 0 || config.ffn == 0 || config.d_out == 0 {
        return Err(Error::Config("layers, ffn and d_out must be ≥ 1".into()));
    }
    if !(config.temperature > 0.0 && config.temperature.is_finite()) {
        return Err(Error::Config("temperature must be > 0".into()));
    }
    if !(0.0..1.0).contains(&config.dropout) {
        return Err(Error::Config("dropout must be in [0, 1)".into()));
    }
    if config.activation != "gelu_tanh" || config.mask != "prefix_visible_causal" {
        return Err(Error::Config(
            "only activation gelu_tanh and mask prefix_visible_causal exist".into(),
        ));
    }
    Ok(())
}

/// Additive mask value for forbidden attention pairs (exp underflows to exactly 0).
pub const MASK_VALUE: f32 = -1e9;

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// The trainable profile model.
#[derive(Debug)]
pub struct ProfileModel {
    /// Architecture.
    pub config: ModelConfig,
    /// Fitted feature schema.
    pub schema: FeatureSchema,
    params: BTreeMap<String, Var>,
    /// Item × genre multi-hot matrix `[n_items, n_genres]` (constant).
    item_genres: Tensor,
    device: Device,
}

/// Inputs of one forward pass: tokens of a ragged batch, padded on the right.
struct BatchTensors {
    x: Tensor,
    mask: Tensor,
    t: usize,
}

impl ProfileModel {
    /// A freshly initialised model: N(0, 0.02) for embeddings and linear
    /// weights (the FFN down-projection scaled by 1/√(2·layers)), LayerNorm
    /// weight 1 / bias 0, linear biases 0; drawn from `rng` in tensor-name order.
    pub fn new(schema: FeatureSchema, config: ModelConfig, rng: &mut ChaCha8Rng) -> Result<Self> {
        validate_config(&config)?;
        let device = Device::Cpu;
        let mut params = BTreeMap::new();
        for (name, shape) in param_shapes(&schema, &config) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with(".bias") {
                vec![0.0; n]
            } else if name.contains(".ln") || name.starts_with("final_norm") {
                vec![1.0; n]
            } else {
                let std = if name.ends_with("ffn.down.weight") {
                    0.02 / (2.0 * config.layers as f32).sqrt()
                } else {
                    0.02
                };
                (0..n).map(|_| normal(rng) * std).collect()
            };
            let t = Tensor::from_vec(data, shape.as_slice(), &device)?;
            params.insert(name, Var::from_tensor(&t)?);
        }
        Self::assemble(schema, config, params)
    }

    /// A tokenizer for this model's schema (the serving encoder's own).
    pub fn tokenizer(&self) -> Tokenizer {
        Tokenizer::new(self.schema.clone())
    }

    /// A model from named tensors (f32 or f16), checking every name and shape.
    pub fn from_tensors(
        schema: FeatureSchema,
        config: ModelConfig,
        tensors: HashMap<String, Tensor>,
        origin: &Path,
    ) -> Result<Self> {
        validate_config(&config)?;
        let shapes = param_shapes(&schema, &config);
        let mut params = BTreeMap::new();
        for (name, shape) in &shapes {
            let t = tensors.get(name).ok_or_else(|| Error::Model {
                path: origin.to_path_buf(),
                message: format!("tensor `{name}` is missing"),
            })?;
            if t.dims() != shape.as_slice() {
                return Err(Error::Model {
                    path: origin.to_path_buf(),
                    message: format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        t.dims()
                    ),
                });
            }
            params.insert(name.clone(), Var::from_tensor(&t.to_dtype(DType::F32)?)?);
        }
        if let Some(extra) = tensors.keys().find(|k| !shapes.contains_key(*k)) {
            return Err(Error::Model {
                path: origin.to_path_buf(),
                message: format!("unexpected tensor `{extra}`"),
            });
        }
        Self::assemble(schema, config, params)
    }

    fn assemble(
        schema: FeatureSchema,
        config: ModelConfig,
        params: BTreeMap<String, Var>,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let n = schema.items.ids.len();
        let g = schema.genres.len();
        if n == 0 {
            return Err(Error::Config("the model needs at least one item".into()));
        }
        let mut mh = vec![0f32; n * g];
        for (i, gs) in schema.items.genres.iter().enumerate() {
            for &k in gs {
                mh[i * g + k as usize] = 1.0;
            }
        }
        let item_genres = Tensor::from_vec(mh, (n, g), &device)?;
        Ok(ProfileModel {
            config,
            schema,
            params,
            item_genres,
            device,
        })
    }

    /// The trainable variables in tensor-name order.
    pub fn vars(&self) -> Vec<Var> {
        self.params.values().cloned().collect()
    }

    /// Named parameter tensors (for export).
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.params
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Total number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.params.values().map(|v| v.elem_count()).sum()
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        self.params
            .get(name)
            .map(|v| v.as_tensor())
            .ok_or_else(|| Error::Train(format!("internal: no parameter `{name}`")))
    }

    fn dropout(&self, x: &Tensor, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        let p = self.config.dropout;
        match rng {
            Some(rng) if p > 0.0 => {
                let keep = 1.0 / (1.0 - p) as f32;
                let m: Vec<f32> = (0..x.elem_count())
                    .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
                    .collect();
                let m = Tensor::from_vec(m, x.shape(), &self.device)?;
                Ok(x.mul(&m)?)
            }
            _ => Ok(x.clone()),
        }
    }

    fn layer_norm(&self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let w = self.p(&format!("{prefix}.weight"))?;
        let b = self.p(&format!("{prefix}.bias"))?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + self.config.ln_eps)?.sqrt()?)?;
        Ok(xn.broadcast_mul(w)?.broadcast_add(b)?)
    }

    /// `x W^T + b` over the last dimension of a rank-2 or rank-3 tensor.
    fn linear(&self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let w = self.p(&format!("{prefix}.weight"))?;
        let b = self.p(&format!("{prefix}.bias"))?;
        let dims = x.dims().to_vec();
        let last = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = x.reshape((rows, last))?.matmul(&w.t()?)?.broadcast_add(b)?;
        let mut out = dims;
        let n = out.len();
        out[n - 1] = w.dims()[0];
        Ok(y.reshape(out)?)
    }

    fn build_inputs(
        &self,
        batch: &[&UserTokens],
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<BatchTensors> {
        let d = self.config.d_model;
        let bsz = batch.len();
        let p = self.schema.fields.len();
        let l = batch.iter().map(|u| u.events.len()).max().unwrap_or(0);
        let t = p + l;
        if bsz == 0 || t == 0 {
            return Err(Error::Train("empty batch".into()));
        }
        for u in batch {
            if u.fields.len() != p || u.events.len() > self.schema.behaviour.max_events {
                return Err(Error::Train("tokens do not match the schema".into()));
            }
            if u.is_empty() {
                return Err(Error::Train("a user has no tokens".into()));
            }
        }
        let dev = &self.device;
        let mut parts: Vec<Tensor> = Vec::with_capacity(2);
        if p > 0 {
            let mut field_tokens = Vec::with_capacity(p);
            for (fi, f) in self.schema.fields.iter().enumerate() {
                let tok = match &f.kind {
                    FieldKind::Categorical { .. } => {
                        let idx: Vec<u32> = batch
                            .iter()
                            .map(|u| match u.fields[fi] {
                                FieldToken::Categorical(r) => r,
                                _ => 0,
                            })
                            .collect();
                        let idx = Tensor::from_vec(idx, bsz, dev)?;
                        self.p(&format!("fields.{}.embedding", f.name))?
                            .index_select(&idx, 0)?
                    }
                    FieldKind::Numeric { .. } => {
                        let mut z = Vec::with_capacity(bsz);
                        let mut m = Vec::with_capacity(bsz);
                        for u in batch {
                            match u.fields[fi] {
                                FieldToken::Numeric(Some(v)) => {
                                    z.push(v);
                                    m.push(0.0f32);
                                }
                                _ => {
                                    z.push(0.0);
                                    m.push(1.0);
                                }
                            }
                        }
                        let z = Tensor::from_vec(z, (bsz, 1), dev)?;
                        let m = Tensor::from_vec(m, (bsz, 1), dev)?;
                        let w = self.p(&format!("fields.{}.weight", f.name))?.unsqueeze(0)?;
                        let miss = self
                            .p(&format!("fields.{}.missing", f.name))?
                            .unsqueeze(0)?;
                        (z.broadcast_mul(&w)? + m.broadcast_mul(&miss)?)?
                    }
                    FieldKind::Preference => {
                        let g = self.schema.genres.len();
                        let mut w = vec![0f32; bsz * g];
                        let mut m = Vec::with_capacity(bsz);
                        for (bi, u) in batch.iter().enumerate() {
                            match &u.fields[fi] {
                                FieldToken::Preference(Some(ws)) if ws.len() == g => {
                                    w[bi * g..(bi + 1) * g].copy_from_slice(ws);
                                    m.push(0.0f32);
                                }
                                _ => m.push(1.0),
                            }
                        }
                        let w = Tensor::from_vec(w, (bsz, g), dev)?;
                        let m = Tensor::from_vec(m, (bsz, 1), dev)?;
                        let table = self.p(&format!("fields.{}.embedding", f.name))?;
                        let miss = self
                            .p(&format!("fields.{}.missing", f.name))?
                            .unsqueeze(0)?;
                        (w.matmul(table)? + m.broadcast_mul(&miss)?)?
                    }
                };
                field_tokens.push(tok);
            }
            parts.push(Tensor::stack(&field_tokens, 1)?);
        }
        if l > 0 {
            let g = self.schema.genres.len();
            let n = bsz * l;
            let (mut item, mut rating, mut gap, mut pos) =
                (vec![0u32; n], vec![0u32; n], vec![0u32; n], vec![0u32; n]);
            let mut mh = vec![0f32; n * g];
            for (bi, u) in batch.iter().enumerate() {
                for (ti, e) in u.events.iter().enumerate() {
                    let k = bi * l + ti;
                    item[k] = e.item_row;
                    rating[k] = e.rating_row;
                    gap[k] = e.gap_row;
                    pos[k] = ti as u32;
                    if e.item_row >= VOCAB_OFFSET {
                        let ii = (e.item_row - VOCAB_OFFSET) as usize;
                        if let Some(gs) = self.schema.items.genres.get(ii) {
                            for &gg in gs {
                                mh[k * g + gg as usize] = 1.0;
                            }
                        }
                    }
                }
            }
            let sel = |name: &str, idx: Vec<u32>| -> Result<Tensor> {
                let idx = Tensor::from_vec(idx, n, dev)?;
                Ok(self.p(name)?.index_select(&idx, 0)?)
            };
            let mh = Tensor::from_vec(mh, (n, g), dev)?;
            let beh = (sel("behaviour.item", item)?
                + mh.matmul(self.p("behaviour.genre")?)?
                + sel("behaviour.rating", rating)?
                + sel("behaviour.gap", gap)?
                + sel("behaviour.position", pos)?)?;
            parts.push(beh.reshape((bsz, l, d))?);
        }
        let x = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(&parts, 1)?
        };
        let types: Vec<u32> = (0..t).map(|i| i.min(p) as u32).collect();
        let types = Tensor::from_vec(types, t, dev)?;
        let type_emb = self.p("embed.type")?.index_select(&types, 0)?;
        let x = x.broadcast_add(&type_emb.unsqueeze(0)?)?;
        let x = self.dropout(&x, rng)?;

        // allowed(q, k) = k < P || (k ≤ q && k − P < len)
        let mut mask = vec![0f32; bsz * t * t];
        for (bi, u) in batch.iter().enumerate() {
            let len = u.events.len();
            for q in 0..t {
                for k in 0..t {
                    let ok = k < p || (k <= q && k - p < len);
                    if !ok {
                        mask[(bi * t + q) * t + k] = MASK_VALUE;
                    }
                }
            }
        }
        let mask = Tensor::from_vec(mask, (bsz, 1, t, t), dev)?;
        Ok(BatchTensors { x, mask, t })
    }

    /// Runs the encoder; returns the final-LayerNorm hidden states `[B·T, d]`
    /// (row `b·T + i` = token `i` of user `b`) and `T`. With `rng`, dropout is on.
    pub fn encode(
        &self,
        batch: &[&UserTokens],
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, usize)> {
        let BatchTensors { mut x, mask, t } = self.build_inputs(batch, rng.as_deref_mut())?;
        let bsz = batch.len();
        let d = self.config.d_model;
        let h = self.config.heads;
        let dh = d / h;
        let scale = 1.0 / (dh as f64).sqrt();
        for l in 0..self.config.layers {
            let xn = self.layer_norm(&x, &format!("layers.{l}.ln1"))?;
            let split = |y: Tensor| -> Result<Tensor> {
                Ok(y.reshape((bsz, t, h, dh))?.transpose(1, 2)?.contiguous()?)
            };
            let q = split(self.linear(&xn, &format!("layers.{l}.attn.q"))?)?;
            let k = split(self.linear(&xn, &format!("layers.{l}.attn.k"))?)?;
            let v = split(self.linear(&xn, &format!("layers.{l}.attn.v"))?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let ctx = att
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((bsz, t, d))?;
            let a = self.linear(&ctx, &format!("layers.{l}.attn.o"))?;
            let a = self.dropout(&a, rng.as_deref_mut())?;
            x = (x + a)?;
            let xn = self.layer_norm(&x, &format!("layers.{l}.ln2"))?;
            let f = self.linear(&xn, &format!("layers.{l}.ffn.up"))?.gelu()?;
            let f = self.linear(&f, &format!("layers.{l}.ffn.down"))?;
            let f = self.dropout(&f, rng.as_deref_mut())?;
            x = (x + f)?;
        }
        let x = self.layer_norm(&x, "final_norm")?;
        Ok((x.reshape((bsz * t, d))?, t))
    }

    /// Profile head: `normalize(h W^T + b)` for hidden rows `[K, d]`.
    pub fn head(&self, rows: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.linear(rows, "head")?)
    }

    /// L2-normalised item vectors `[n_items, d_out]`:
    /// `normalize(items.embedding + multi_hot(genres) · items.genre)`.
    pub fn item_vectors(&self) -> Result<Tensor> {
        let v = (self.p("items.embedding")? + self.item_genres.matmul(self.p("items.genre")?)?)?;
        l2_normalize(&v)
    }

    /// Profiles (unit vectors `[B, d_out]`) of a batch: the head applied to
    /// each user's last token (the last event, or the last field token).
    pub fn profiles(&self, batch: &[&UserTokens]) -> Result<Tensor> {
        let (hidden, t) = self.encode(batch, None)?;
        let rows: Vec<u32> = batch
            .iter()
            .enumerate()
            .map(|(b, u)| (b * t + u.len() - 1) as u32)
            .collect();
        let idx = Tensor::from_vec(rows, batch.len(), &self.device)?;
        self.head(&hidden.index_select(&idx, 0)?)
    }

    /// Profiles as plain vectors, in batches of `batch_size`.
    pub fn profiles_vec(&self, users: &[UserTokens], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(users.len());
        for chunk in users.chunks(batch_size.max(1)) {
            let refs: Vec<&UserTokens> = chunk.iter().collect();
            out.extend(self.profiles(&refs)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    /// The device tensors live on (CPU).
    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// `v / sqrt(Σ v² + 1e-24)` along the last dimension.
pub fn l2_normalize(v: &Tensor) -> Result<Tensor> {
    let n = (v.sqr()?.sum_keepdim(D::Minus1)? + 1e-24)?.sqrt()?;
    Ok(v.broadcast_div(&n)?)
}
