//! [`Encoder`]: a loaded model version — validated, packed for the kernels,
//! verified against its golden examples — and its forward pass.
//!
//! Forward of a ragged batch (`docs/encoder.md`):
//! 1. tokens ([`Tokenizer`]) → embedding rows (sums of table rows read
//!    straight from the mapped file, plus the dimension-type row);
//! 2. `layers − 1` pre-LN blocks over every token
//!    ([`block_forward`] with [`OutputRows::All`]), then the last block with
//!    [`OutputRows::LastOnly`] (keys/values for all tokens, everything else
//!    only at each user's last position, the one the profile is read from);
//! 3. final LayerNorm, head projection (packed GEMM), L2 normalisation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use profiled_kernels::attention::{Mask, OutputRows, Sequence, probs_len};
use profiled_kernels::block::{LayerTensors, LayerWeights, block_forward};
use profiled_kernels::gemm::{PackedMatrix, WeightPrecision, gemm};
use profiled_kernels::{Isa, activation, vector};

use crate::error::{Error, Result};
use crate::features::UserFeatures;
use crate::format::{Dtype, FieldKind, METADATA_FILE, ModelJson, VOCAB_OFFSET, WEIGHTS_FILE};
use crate::tokenizer::{FlatField, TokenBatch, Tokenizer};
use crate::weights::{TensorId, View, Weights};

/// Default of [`Encoder::max_tokens_per_call`] (measured best for d = 64 on
/// this machine: the FFN activations of 256 tokens, 256 KB, stay in L2).
pub const DEFAULT_MAX_TOKENS_PER_CALL: usize = 256;

/// How to load a model version.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Kernel path (default: [`Isa::active`]).
    pub isa: Option<Isa>,
    /// Run the golden examples and refuse the version unless all match
    /// (default: true; turning it off is for tests and tools only).
    pub verify_golden: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            isa: None,
            verify_golden: true,
        }
    }
}

/// What was loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Model name.
    pub name: String,
    /// Version number.
    pub version: u32,
    /// Weight dtype.
    pub dtype: Dtype,
    /// Kernel path.
    pub isa: Isa,
    /// Number of parameters (tensor elements).
    pub parameters: usize,
    /// Bytes of `model.safetensors` mapped.
    pub bytes_mapped: usize,
    /// Bytes of packed layer and head weights (plus the item vectors).
    pub bytes_packed: usize,
    /// Golden examples verified.
    pub golden_examples: usize,
    /// Smallest golden cosine (1.0 when none were run).
    pub golden_min_cosine: f64,
    /// Wall time of the whole load, golden check included.
    pub load_time: Duration,
}

#[derive(Debug, Clone, Copy)]
enum FieldTable {
    Categorical { table: TensorId },
    Numeric { weight: TensorId, missing: TensorId },
    Preference { table: TensorId, missing: TensorId },
}

/// Reusable buffers of one forward caller (one per thread). Grows to the
/// largest batch seen, then forward passes do not allocate.
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    pub(crate) tokens: TokenBatch,
    pub(crate) seqs: Vec<Sequence>,
    pub(crate) x: Vec<f32>,
    y: Vec<f32>,
    last: Vec<f32>,
    normed: Vec<f32>,
    pub(crate) out: Vec<f32>,
    kernel: profiled_kernels::attention::Workspace,
    pub(crate) probs: Vec<Vec<f32>>,
    pub(crate) emb: Vec<f32>,
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Workspace {
        Workspace::default()
    }
}

/// Profiles of a batch, borrowed from the [`Workspace`]: `len()` unit
/// vectors of `dim()` values each.
#[derive(Debug, Clone, Copy)]
pub struct Profiles<'w> {
    data: &'w [f32],
    dim: usize,
}

impl<'w> Profiles<'w> {
    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Width of each profile.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Profile `i`.
    pub fn row(&self, i: usize) -> Option<&'w [f32]> {
        self.data.get(i * self.dim..(i + 1) * self.dim)
    }

    /// All profiles, row-major.
    pub fn as_slice(&self) -> &'w [f32] {
        self.data
    }

    /// Iterates over the profiles.
    pub fn iter(&self) -> impl Iterator<Item = &'w [f32]> + 'w {
        self.data.chunks_exact(self.dim.max(1))
    }

    /// Owned copies.
    pub fn to_vecs(&self) -> Vec<Vec<f32>> {
        self.iter().map(<[f32]>::to_vec).collect()
    }
}

/// A loaded, verified model version on the kernels.
#[derive(Debug)]
pub struct Encoder {
    meta: ModelJson,
    dir: PathBuf,
    dtype: Dtype,
    isa: Isa,
    weights: Weights,
    tokenizer: Tokenizer,
    fields: Vec<FieldTable>,
    type_emb: TensorId,
    beh_item: TensorId,
    beh_genre: TensorId,
    /// Position row + the behaviour type row, per position (f32, `d` wide).
    pos_type: Vec<f32>,
    /// Rating row + gap row, at `rating_row × gap_rows + gap_row` (f32).
    rating_gap: Vec<f32>,
    /// Rows of the gap table (the stride of `rating_gap`).
    gap_rows: usize,
    layers: Vec<LayerWeights>,
    final_g: Vec<f32>,
    final_b: Vec<f32>,
    head: PackedMatrix,
    head_b: Vec<f32>,
    items: Vec<f32>,
    report: LoadReport,
    max_tokens_per_call: usize,
    /// Whether the layers may compute in bf16 ([`Encoder::set_bf16`]).
    bf16_allowed: bool,
    /// The precision `layers` and `head` are packed in.
    precision: WeightPrecision,
}

/// The smallest golden cosine accepted for bf16 compute (the parity
/// target against the f32 path; f16 weights have the same).
pub const BF16_GOLDEN_THRESHOLD: f64 = 0.999;

/// The kernels' storage precision of weights stored as `dtype`.
fn stored_precision(dtype: Dtype) -> WeightPrecision {
    match dtype {
        Dtype::F32 => WeightPrecision::F32,
        Dtype::F16 => WeightPrecision::F16,
    }
}

/// Packs every layer and the head in `precision` (`wpath` names the
/// weights file in errors).
fn pack_layers(
    weights: &Weights,
    meta: &ModelJson,
    precision: WeightPrecision,
    wpath: &Path,
) -> Result<(Vec<LayerWeights>, PackedMatrix)> {
    let cfg = &meta.architecture;
    let d = cfg.d_model;
    let kerr = |e: profiled_kernels::KernelError| Error::model(wpath, format!("packing: {e}"));
    let mut layers = Vec::with_capacity(cfg.layers);
    for l in 0..cfg.layers {
        let t = |n: &str| weights.f32_copy(&format!("layers.{l}.{n}"));
        let mut in_w = t("attn.q.weight")?;
        in_w.extend(t("attn.k.weight")?);
        in_w.extend(t("attn.v.weight")?);
        let mut in_b = t("attn.q.bias")?;
        in_b.extend(t("attn.k.bias")?);
        in_b.extend(t("attn.v.bias")?);
        let (ow, ob) = (t("attn.o.weight")?, t("attn.o.bias")?);
        let (l1w, l1b, l2w, l2b) = (
            t("ln1.weight")?,
            t("ln1.bias")?,
            t("ln2.weight")?,
            t("ln2.bias")?,
        );
        let (f1w, f1b, f2w, f2b) = (
            t("ffn.up.weight")?,
            t("ffn.up.bias")?,
            t("ffn.down.weight")?,
            t("ffn.down.bias")?,
        );
        let lt = LayerTensors {
            d,
            heads: cfg.heads,
            ffn: cfg.ffn,
            eps: cfg.ln_eps as f32,
            in_proj_weight: &in_w,
            in_proj_bias: &in_b,
            out_proj_weight: &ow,
            out_proj_bias: &ob,
            ln1_weight: &l1w,
            ln1_bias: &l1b,
            ln2_weight: &l2w,
            ln2_bias: &l2b,
            ffn1_weight: &f1w,
            ffn1_bias: &f1b,
            ffn2_weight: &f2w,
            ffn2_bias: &f2b,
        };
        layers.push(LayerWeights::new(&lt, precision).map_err(kerr)?);
    }
    let head =
        PackedMatrix::from_out_in(cfg.d_out, d, &weights.f32_copy("head.weight")?, precision)
            .map_err(kerr)?;
    Ok((layers, head))
}

/// Most rows summed into one behaviour-token embedding in one pass (item,
/// up to `MAX_PARTS − 3` genres, rating + gap, position + type).
const MAX_PARTS: usize = 16;

pub(crate) fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

fn axpy(isa: Isa, alpha: f32, x: View<'_>, y: &mut [f32]) -> Result<()> {
    match x {
        View::F32(x) => vector::axpy_f32(isa, alpha, x, y)?,
        View::F16(x) => vector::axpy_f16(isa, alpha, x, y)?,
    }
    Ok(())
}

/// Row `r` (width `w`) of a pre-summed f32 table.
fn f32_row(table: &[f32], r: usize, w: usize) -> Option<View<'_>> {
    table
        .get(r.checked_mul(w)?..r.checked_mul(w)?.checked_add(w)?)
        .map(View::F32)
}

/// `y = x` (f16 widened).
fn copy_row(isa: Isa, x: View<'_>, y: &mut [f32]) -> Result<()> {
    match x {
        View::F32(x) if x.len() == y.len() => y.copy_from_slice(x),
        View::F32(_) => return Err(internal("row width")),
        View::F16(x) => profiled_kernels::convert::f16_to_f32(isa, x, y)?,
    }
    Ok(())
}

fn internal(what: &str) -> Error {
    Error::Argument(format!("internal: {what}"))
}

/// Cosine of two vectors in f64 (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

impl Encoder {
    /// Loads a version folder (`model.json` + `model.safetensors`) with the
    /// default options: validated, packed and verified against its golden examples.
    pub fn load(dir: &Path) -> Result<Encoder> {
        Encoder::load_with(dir, &LoadOptions::default())
    }

    /// Loads a version folder with `opts`.
    pub fn load_with(dir: &Path, opts: &LoadOptions) -> Result<Encoder> {
        let t0 = Instant::now();
        let isa = opts.isa.unwrap_or_else(Isa::active).checked()?;
        let jpath = dir.join(METADATA_FILE);
        let text = std::fs::read_to_string(&jpath).map_err(|source| Error::Io {
            path: jpath.clone(),
            source,
        })?;
        let meta = ModelJson::parse(&text, &jpath)?;
        meta.validate(&jpath)?;
        let dtype = meta.dtype(&jpath)?;
        let wpath = dir.join(WEIGHTS_FILE);
        let weights = Weights::open(&wpath, dtype)?;

        // Every tensor present, with the shape model.json implies, and nothing else.
        let expected = meta.tensor_shapes();
        for (name, shape) in weights.shapes() {
            match expected.get(name) {
                None => {
                    return Err(Error::model(&wpath, format!("unexpected tensor `{name}`")));
                }
                Some(want) if want.as_slice() != shape => {
                    return Err(Error::model(
                        &wpath,
                        format!(
                            "tensor `{name}` has shape {shape:?}, but model.json (architecture, \
                             vocabularies, items, genres) implies {want:?}"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let mut parameters = 0usize;
        for name in expected.keys() {
            let id = weights.id(name)?;
            let v = weights.view(id);
            parameters += v.len();
            let bad = match v {
                View::F32(x) => x.iter().position(|x| !x.is_finite()),
                View::F16(x) => x.iter().position(|x| !x.is_finite()),
            };
            if let Some(i) = bad {
                return Err(Error::model(
                    &wpath,
                    format!("tensor `{name}` has a non-finite value at element {i}"),
                ));
            }
        }

        let precision = stored_precision(dtype);
        let cfg = &meta.architecture;
        let (layers, head) = pack_layers(&weights, &meta, precision, &wpath)?;
        let head_b = weights.f32_copy("head.bias")?;
        let final_g = weights.f32_copy("final_norm.weight")?;
        let final_b = weights.f32_copy("final_norm.bias")?;

        let mut fields = Vec::with_capacity(meta.schema.fields.len());
        for f in &meta.schema.fields {
            let id = |suffix: &str| weights.id(&format!("fields.{}.{suffix}", f.name));
            fields.push(match f.kind {
                FieldKind::Categorical { .. } => FieldTable::Categorical {
                    table: id("embedding")?,
                },
                FieldKind::Numeric { .. } => FieldTable::Numeric {
                    weight: id("weight")?,
                    missing: id("missing")?,
                },
                FieldKind::Preference => FieldTable::Preference {
                    table: id("embedding")?,
                    missing: id("missing")?,
                },
            });
        }

        // Item vectors: normalize(items.embedding[k] + Σ_{g ∈ genres(k)} items.genre[g]).
        let dout = cfg.d_out;
        let n_items = meta.schema.items.ids.len();
        let ie = weights.view(weights.id("items.embedding")?);
        let ig = weights.view(weights.id("items.genre")?);
        let mut items = vec![0f32; n_items * dout];
        for (k, row) in items.chunks_exact_mut(dout).enumerate() {
            axpy(
                isa,
                1.0,
                ie.row(k, dout).ok_or_else(|| internal("item row"))?,
                row,
            )?;
            let mut gsum = vec![0f32; dout];
            for &g in &meta.schema.items.genres[k] {
                axpy(
                    isa,
                    1.0,
                    ig.row(g as usize, dout)
                        .ok_or_else(|| internal("genre row"))?,
                    &mut gsum,
                )?;
            }
            for (r, s) in row.iter_mut().zip(&gsum) {
                *r += s;
            }
            vector::l2_normalize(isa, row);
        }

        // Behaviour-token rows that do not depend on the item, pre-summed once
        // so a token costs an item copy, its genres and two adds: position +
        // type (`pos_type`, one row per position) and rating + gap
        // (`rating_gap`, one row per rating row × gap row).
        let (pos_type, rating_gap, gap_rows) = {
            let d = meta.architecture.d_model;
            let bad = || internal("behaviour table");
            let p = meta.schema.fields.len();
            let pos = weights.view(weights.id("behaviour.position")?);
            let types = weights.view(weights.id("embed.type")?);
            let rating = weights.view(weights.id("behaviour.rating")?);
            let gap = weights.view(weights.id("behaviour.gap")?);
            let (np, nr, ng) = (pos.len() / d, rating.len() / d, gap.len() / d);
            let mut pos_type = vec![0.0f32; np * d];
            for (t, row) in pos_type.chunks_exact_mut(d).enumerate() {
                copy_row(isa, pos.row(t, d).ok_or_else(bad)?, row)?;
                axpy(isa, 1.0, types.row(p, d).ok_or_else(bad)?, row)?;
            }
            let mut rating_gap = vec![0.0f32; nr * ng * d];
            for (i, row) in rating_gap.chunks_exact_mut(d).enumerate() {
                copy_row(isa, rating.row(i / ng, d).ok_or_else(bad)?, row)?;
                axpy(isa, 1.0, gap.row(i % ng, d).ok_or_else(bad)?, row)?;
            }
            (pos_type, rating_gap, ng)
        };
        let bytes_packed = layers.iter().map(LayerWeights::packed_bytes).sum::<usize>()
            + head.packed_bytes()
            + 4 * (head_b.len()
                + final_g.len()
                + final_b.len()
                + items.len()
                + pos_type.len()
                + rating_gap.len());
        let tokenizer = Tokenizer::new(meta.schema.clone());
        let report = LoadReport {
            name: meta.name.clone(),
            version: meta.version,
            dtype,
            isa,
            parameters,
            bytes_mapped: weights.mapped_bytes(),
            bytes_packed,
            golden_examples: 0,
            golden_min_cosine: 1.0,
            load_time: Duration::ZERO,
        };
        let mut enc = Encoder {
            type_emb: weights.id("embed.type")?,
            beh_item: weights.id("behaviour.item")?,
            beh_genre: weights.id("behaviour.genre")?,
            pos_type,
            rating_gap,
            gap_rows,
            meta,
            dir: dir.to_path_buf(),
            dtype,
            isa,
            weights,
            tokenizer,
            fields,
            layers,
            final_g,
            final_b,
            head,
            head_b,
            items,
            report,
            max_tokens_per_call: DEFAULT_MAX_TOKENS_PER_CALL,
            bf16_allowed: false,
            precision,
        };
        if opts.verify_golden {
            let (n, min) = enc.verify_golden()?;
            enc.report.golden_examples = n;
            enc.report.golden_min_cosine = min;
            enc.tokenizer.reset_counters();
        }
        enc.report.load_time = t0.elapsed();
        Ok(enc)
    }

    /// Runs every golden example of model.json; returns (count, min cosine)
    /// or the first failure. Requires at least one example.
    pub fn verify_golden(&self) -> Result<(usize, f64)> {
        let path = self.dir.join(METADATA_FILE);
        let golden = &self.meta.golden;
        if golden.is_empty() {
            return Err(Error::model(
                &path,
                "no golden examples: the version cannot be verified",
            ));
        }
        let threshold = if self.precision == WeightPrecision::Bf16 {
            BF16_GOLDEN_THRESHOLD
        } else {
            self.dtype.golden_threshold()
        };
        let mut ws = Workspace::new();
        let mut min = f64::INFINITY;
        for (index, g) in golden.iter().enumerate() {
            let fail = |message: String| Error::Golden {
                path: path.clone(),
                index,
                note: g.note.clone(),
                message,
            };
            if g.profile.len() != self.meta.architecture.d_out
                || g.profile.iter().any(|x| !x.is_finite())
            {
                return Err(fail(format!(
                    "expected profile has {} values (need {} finite ones)",
                    g.profile.len(),
                    self.meta.architecture.d_out
                )));
            }
            let features = g.input.to_features();
            let p = self
                .forward_batch(std::slice::from_ref(&features), &mut ws)
                .map_err(|e| fail(e.to_string()))?;
            let got = p.row(0).ok_or_else(|| fail("no profile computed".into()))?;
            let c = cosine(got, &g.profile);
            if c.is_nan() || c < threshold {
                return Err(fail(format!(
                    "cosine {c:.6} to the expected profile is below {threshold} ({} weights, {} compute, {} kernels)",
                    self.dtype.name(),
                    self.precision.name(),
                    self.isa
                )));
            }
            min = min.min(c);
        }
        Ok((golden.len(), min))
    }

    /// The contents of model.json.
    pub fn metadata(&self) -> &ModelJson {
        &self.meta
    }

    /// The version folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What was loaded.
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// The tokenizer (schema, item index, OOV counters).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The kernel path in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Switches the kernel path. Packed weights are path-independent,
    /// except that bf16 compute (when allowed, [`Encoder::set_bf16`]) runs
    /// only on [`Isa::Avx512Bf16`]: switching to or from that path re-packs
    /// the layers (and, to bf16, re-verifies the golden examples).
    pub fn set_isa(&mut self, isa: Isa) -> Result<()> {
        self.isa = isa.checked()?;
        self.repack()
    }

    /// Allows or forbids bf16 compute: weights packed as bf16 and
    /// activations rounded to bf16 at every GEMM input, f32 accumulation and
    /// f32 everything else (LayerNorm, softmax, GELU, residuals). It is used
    /// only on [`Isa::Avx512Bf16`] (elsewhere the stored precision stays);
    /// when it is, the golden examples (if any) must reach a cosine of
    /// [`BF16_GOLDEN_THRESHOLD`], or the encoder stays on the stored precision
    /// and the error is returned. Returns the precision now in use.
    pub fn set_bf16(&mut self, allowed: bool) -> Result<WeightPrecision> {
        self.bf16_allowed = allowed;
        self.repack()?;
        Ok(self.precision)
    }

    /// The precision the layers and the head compute in: the stored
    /// dtype's, or [`WeightPrecision::Bf16`] (see [`Encoder::set_bf16`]).
    pub fn compute_precision(&self) -> WeightPrecision {
        self.precision
    }

    /// Re-packs the layers and head when the wanted precision changed.
    fn repack(&mut self) -> Result<()> {
        let want = if self.bf16_allowed && self.isa == Isa::Avx512Bf16 {
            WeightPrecision::Bf16
        } else {
            stored_precision(self.dtype)
        };
        if want == self.precision {
            return Ok(());
        }
        let wpath = self.dir.join(WEIGHTS_FILE);
        let (layers, head) = pack_layers(&self.weights, &self.meta, want, &wpath)?;
        let old_layers = std::mem::replace(&mut self.layers, layers);
        let old_head = std::mem::replace(&mut self.head, head);
        let old = std::mem::replace(&mut self.precision, want);
        if want == WeightPrecision::Bf16
            && !self.meta.golden.is_empty()
            && let Err(e) = self.verify_golden()
        {
            self.layers = old_layers;
            self.head = old_head;
            self.precision = old;
            return Err(e);
        }
        Ok(())
    }

    /// Largest number of tokens sent through the layers in one kernel call
    /// (a batch is split into chunks of whole users; default
    /// [`DEFAULT_MAX_TOKENS_PER_CALL`]).
    pub fn max_tokens_per_call(&self) -> usize {
        self.max_tokens_per_call
    }

    /// Sets [`Encoder::max_tokens_per_call`] (a tuning knob; results do not change).
    pub fn set_max_tokens_per_call(&mut self, tokens: usize) {
        self.max_tokens_per_call = tokens.max(1);
    }

    /// Width of profile and item vectors.
    pub fn dim(&self) -> usize {
        self.meta.architecture.d_out
    }

    /// Score temperature (score = cosine / temperature).
    pub fn temperature(&self) -> f64 {
        self.meta.architecture.temperature
    }

    /// Original item ids; item `k` is row `k` of [`Encoder::item_vectors`].
    pub fn item_ids(&self) -> &[String] {
        &self.meta.schema.items.ids
    }

    /// Unit item vectors, row-major `n_items × dim` (for index building).
    pub fn item_vectors(&self) -> &[f32] {
        &self.items
    }

    /// The unit vector of one item.
    pub fn item_vector(&self, id: &str) -> Option<&[f32]> {
        let k = self.tokenizer.item_index(id)? as usize;
        self.items.get(k * self.dim()..(k + 1) * self.dim())
    }

    /// Profiles of a ragged batch of users (single-threaded; allocation-free
    /// once `ws` has seen a batch this large). An error names the user's
    /// position in the batch and the offending field.
    pub fn forward_batch<'w>(
        &self,
        users: &[UserFeatures],
        ws: &'w mut Workspace,
    ) -> Result<Profiles<'w>> {
        ws.tokens.clear();
        for (index, u) in users.iter().enumerate() {
            self.tokenizer
                .push(u, &mut ws.tokens)
                .map_err(|e| Error::Batch {
                    index,
                    source: Box::new(e),
                })?;
        }
        self.forward_tokens(ws, false)?;
        let n = users.len() * self.dim();
        Ok(Profiles {
            data: &ws.out[..n],
            dim: self.dim(),
        })
    }

    /// [`Encoder::forward_batch`] on several threads (`std::thread::scope`):
    /// the batch is split into one contiguous part per workspace, each part
    /// processed in chunks of `chunk` users. Returns `users.len() × dim` values.
    pub fn forward_batch_parallel(
        &self,
        users: &[UserFeatures],
        workspaces: &mut [Workspace],
        chunk: usize,
    ) -> Result<Vec<f32>> {
        if workspaces.is_empty() {
            return Err(Error::Argument(
                "forward_batch_parallel needs at least one workspace".into(),
            ));
        }
        let dim = self.dim();
        let chunk = chunk.max(1);
        let mut out = vec![0f32; users.len() * dim];
        if users.is_empty() {
            return Ok(out);
        }
        let threads = workspaces.len().min(users.len().div_ceil(chunk));
        let per = users.len().div_ceil(threads);
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = users
                .chunks(per)
                .zip(out.chunks_mut(per * dim))
                .zip(workspaces.iter_mut())
                .enumerate()
                .map(|(t, ((us, o), ws))| {
                    s.spawn(move || -> Result<()> {
                        for (c, (uc, oc)) in
                            us.chunks(chunk).zip(o.chunks_mut(chunk * dim)).enumerate()
                        {
                            let p = self.forward_batch(uc, ws).map_err(|e| match e {
                                Error::Batch { index, source } => Error::Batch {
                                    index: index + t * per + c * chunk,
                                    source,
                                },
                                other => other,
                            })?;
                            oc.copy_from_slice(p.as_slice());
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| Error::Argument("a forward worker panicked".into()))??;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Profiles of many users for index building: [`Encoder::forward_batch_parallel`]
    /// with `threads` fresh workspaces and chunks of 64 users.
    pub fn export_profiles(&self, users: &[UserFeatures], threads: usize) -> Result<Vec<f32>> {
        let mut ws: Vec<Workspace> = (0..threads.max(1)).map(|_| Workspace::new()).collect();
        self.forward_batch_parallel(users, &mut ws, 64)
    }

    /// Embeds every user of `ws.tokens` into `ws.x`, sets `ws.seqs`, and runs the encoder.
    pub(crate) fn forward_tokens(&self, ws: &mut Workspace, with_probs: bool) -> Result<()> {
        let d = self.meta.architecture.d_model;
        let n = ws.tokens.len();
        let p = ws.tokens.p;
        let budget = if with_probs {
            usize::MAX
        } else {
            self.max_tokens_per_call.max(1)
        };
        // Users go through the layers in chunks of at most `budget` tokens
        // (at least one user per chunk), so the activations of a chunk stay
        // in cache; profiles land in `ws.out` in batch order.
        let mut u0 = 0usize;
        while u0 < n {
            ws.seqs.clear();
            let mut total = 0usize;
            let mut u1 = u0;
            while u1 < n {
                let len = ws.tokens.user_len(u1);
                if u1 > u0 && total + len > budget {
                    break;
                }
                ws.seqs.push(Sequence::new(
                    len,
                    Mask::PrefixCausal { prefix: p.min(len) },
                ));
                total += len;
                u1 += 1;
            }
            let x = grow(&mut ws.x, total * d);
            let mut r0 = 0usize;
            for u in u0..u1 {
                let len = ws.tokens.user_len(u);
                self.embed_user(&ws.tokens, u, &mut x[r0 * d..(r0 + len) * d])?;
                r0 += len;
            }
            self.encode_at(ws, total, with_probs, u0)?;
            u0 = u1;
        }
        Ok(())
    }

    /// Writes the embedding rows of user `u` of `batch` (`len × d`) into `out`.
    pub(crate) fn embed_user(&self, batch: &TokenBatch, u: usize, out: &mut [f32]) -> Result<()> {
        let d = self.meta.architecture.d_model;
        let isa = self.isa;
        let w = &self.weights;
        let types = w.view(self.type_emb);
        let fields = batch.user_fields(u);
        let g = self.meta.schema.genres.len();
        let mut rows = out.chunks_exact_mut(d);
        for (fi, (tok, table)) in fields.iter().zip(&self.fields).enumerate() {
            let row = rows.next().ok_or_else(|| internal("embedding rows"))?;
            row.fill(0.0);
            self.add_field(batch, *tok, *table, g, row)?;
            axpy(
                isa,
                1.0,
                types.row(fi, d).ok_or_else(|| internal("type row"))?,
                row,
            )?;
        }
        let (item, genre) = (w.view(self.beh_item), w.view(self.beh_genre));
        let bad = || internal("behaviour row");
        for (t, e) in batch.user_events(u).iter().enumerate() {
            let row = rows.next().ok_or_else(|| internal("embedding rows"))?;
            let irow = item.row(e.item_row as usize, d).ok_or_else(bad)?;
            let genres = if e.item_row >= VOCAB_OFFSET {
                let k = (e.item_row - VOCAB_OFFSET) as usize;
                self.meta.schema.items.genres.get(k).map_or(&[][..], |v| v)
            } else {
                &[][..]
            };
            let rg = (e.rating_row as usize)
                .checked_mul(self.gap_rows)
                .and_then(|r| r.checked_add(e.gap_row as usize))
                .filter(|_| (e.gap_row as usize) < self.gap_rows)
                .ok_or_else(bad)?;
            let rg = f32_row(&self.rating_gap, rg, d).ok_or_else(bad)?;
            let pt = f32_row(&self.pos_type, t, d).ok_or_else(bad)?;
            // f32 tables: item + genres + rating/gap + position/type summed in
            // one pass (same order as below, so the same bits).
            if let (View::F32(ir), View::F32(gt), View::F32(rg), View::F32(pt)) =
                (irow, genre, rg, pt)
                && genres.len() + 3 <= MAX_PARTS
            {
                let mut parts: [&[f32]; MAX_PARTS] = [&[]; MAX_PARTS];
                parts[0] = ir;
                let mut np = 1;
                for &gg in genres {
                    let g0 = gg as usize * d;
                    parts[np] = gt.get(g0..g0 + d).ok_or_else(bad)?;
                    np += 1;
                }
                parts[np] = rg;
                parts[np + 1] = pt;
                vector::sum_rows_f32(isa, &parts[..np + 2], row)?;
                continue;
            }
            copy_row(isa, irow, row)?;
            for &gg in genres {
                axpy(isa, 1.0, genre.row(gg as usize, d).ok_or_else(bad)?, row)?;
            }
            axpy(isa, 1.0, rg, row)?;
            axpy(isa, 1.0, pt, row)?;
        }
        Ok(())
    }

    fn add_field(
        &self,
        batch: &TokenBatch,
        tok: FlatField,
        table: FieldTable,
        g: usize,
        row: &mut [f32],
    ) -> Result<()> {
        let d = row.len();
        let isa = self.isa;
        let w = &self.weights;
        let bad = || internal("field row");
        match (tok, table) {
            (FlatField::Categorical(r), FieldTable::Categorical { table }) => axpy(
                isa,
                1.0,
                w.view(table).row(r as usize, d).ok_or_else(bad)?,
                row,
            ),
            (FlatField::Numeric(Some(z)), FieldTable::Numeric { weight, .. }) => {
                axpy(isa, z, w.view(weight), row)
            }
            (FlatField::Numeric(None), FieldTable::Numeric { missing, .. })
            | (FlatField::Preference(None), FieldTable::Preference { missing, .. }) => {
                axpy(isa, 1.0, w.view(missing), row)
            }
            (FlatField::Preference(Some(off)), FieldTable::Preference { table, .. }) => {
                let ws = batch.prefs.get(off..off + g).ok_or_else(bad)?;
                let t = w.view(table);
                for (k, &wk) in ws.iter().enumerate() {
                    if wk != 0.0 {
                        axpy(isa, wk, t.row(k, d).ok_or_else(bad)?, row)?;
                    }
                }
                Ok(())
            }
            _ => Err(internal("token kind does not match its field")),
        }
    }

    /// The missing-token embedding row of field `fi` (missing value + type row).
    pub(crate) fn missing_row(&self, fi: usize, row: &mut [f32]) -> Result<()> {
        let d = row.len();
        row.fill(0.0);
        let table = *self.fields.get(fi).ok_or_else(|| internal("field index"))?;
        let tok = match table {
            FieldTable::Categorical { .. } => FlatField::Categorical(crate::format::MISSING),
            FieldTable::Numeric { .. } => FlatField::Numeric(None),
            FieldTable::Preference { .. } => FlatField::Preference(None),
        };
        self.add_field(&TokenBatch::new(), tok, table, 0, row)?;
        let types = self.weights.view(self.type_emb);
        axpy(
            self.isa,
            1.0,
            types.row(fi, d).ok_or_else(|| internal("type row"))?,
            row,
        )
    }

    /// Runs the layers, final norm, head and normalisation over `ws.x`
    /// (`total` rows, sequences `ws.seqs`) into `ws.out`. With `with_probs`,
    /// `ws.probs[l]` receives layer `l`'s attention probabilities.
    /// Profiles written from row `row0` of `ws.out` on.
    pub(crate) fn encode_at(
        &self,
        ws: &mut Workspace,
        total: usize,
        with_probs: bool,
        row0: usize,
    ) -> Result<()> {
        let cfg = &self.meta.architecture;
        let (d, dout) = (cfg.d_model, cfg.d_out);
        let isa = self.isa;
        let Workspace {
            seqs,
            x,
            y,
            last,
            normed,
            out,
            kernel,
            probs,
            ..
        } = ws;
        let n = seqs.len();
        if n == 0 {
            return Ok(());
        }
        if with_probs && probs.len() < self.layers.len() {
            probs.resize(self.layers.len(), Vec::new());
        }
        let nl = self.layers.len();
        for (l, layer) in self.layers.iter().enumerate() {
            let final_layer = l + 1 == nl;
            let rows = if final_layer {
                OutputRows::LastOnly
            } else {
                OutputRows::All
            };
            let pr = if with_probs {
                let len = probs_len(seqs, cfg.heads, rows);
                Some(grow(&mut probs[l], len))
            } else {
                None
            };
            if final_layer {
                let dst = grow(last, n * d);
                block_forward(isa, layer, &x[..total * d], seqs, rows, dst, kernel, pr)?;
            } else {
                let dst = grow(y, total * d);
                block_forward(isa, layer, &x[..total * d], seqs, rows, dst, kernel, pr)?;
                std::mem::swap(x, y);
            }
        }
        let nrm = grow(normed, n * d);
        for (src, dst) in last[..n * d].chunks_exact(d).zip(nrm.chunks_exact_mut(d)) {
            activation::layer_norm(
                isa,
                src,
                &self.final_g,
                &self.final_b,
                cfg.ln_eps as f32,
                dst,
            )?;
        }
        let o = &mut grow(out, (row0 + n) * dout)[row0 * dout..];
        gemm(isa, nrm, n, &self.head, Some(&self.head_b), o)?;
        for row in o.chunks_exact_mut(dout) {
            vector::l2_normalize(isa, row);
        }
        Ok(())
    }
}
