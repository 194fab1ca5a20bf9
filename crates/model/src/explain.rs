//! Explanations of a profile: which dimension groups and which tokens drove
//! it, for a named **target** and by a named **method**.
//!
//! Targets ([`Target`]): the profile itself (score of a variant = cosine to
//! the unmasked profile, so a drop is `1 − cosine`), an item (score = cosine
//! of the profile and the item vector), or a set of users given as a vector
//! (score = cosine to it).
//!
//! Methods ([`Method`]):
//! - **Occlusion** (faithful): forward passes with parts masked, all variants
//!   in ONE batched forward: the unmasked user, each dimension group masked,
//!   and (with [`ExplainOptions::tokens`]) each single token masked. The value
//!   of a variant is the score drop `score(unmasked) − score(variant)`.
//!   *Masking*: a **field token is replaced by that field's learned missing
//!   token** (what the model sees when the value is absent); a **behaviour
//!   token is removed from the sequence** (the other events keep their
//!   embeddings — item, rating, time gap, position — so only that event's
//!   contribution disappears; if it was the last event, the profile is read
//!   at the new last token). Masking the behaviour group removes every event.
//!   History-derived fields (activity, genre mix) are fields: they are masked
//!   with their group, not with the events. A variant with no token left
//!   (behaviour-only model, every event removed) has no profile; its score
//!   counts as 0.
//! - **AttentionRollout**: head-averaged attention of each layer, mixed with
//!   the residual path as `0.5·A + 0.5·I`, multiplied from the last layer's
//!   output position back to the input tokens. Values are **attention mass**
//!   (they sum to 1), not importance.
//! - **Attention**: raw attention mass from the output position, per layer
//!   and head ([`Explanation::layers`]) and head-averaged; token values are
//!   the head-averaged mass of the last layer. Again **attention mass**, not
//!   importance. Attention methods do not depend on the target.
//!
//! Groups: demographic / behaviour / preference / numeric, with shares
//! (occlusion: `|drop_g| / Σ |drop|`; attention: mass / total mass). Tokens
//! carry readable labels (`occupation = engineer`,
//! `item 50 "Star Wars (1977)" @ 1997-10-02`) and are sorted by value,
//! largest first.

use serde::{Deserialize, Serialize};

use crate::encoder::{Encoder, Workspace, cosine, grow};
use crate::error::{Error, Result};
use crate::features::UserFeatures;
use crate::format::{FieldKind, Group, MISSING, OOV, SOURCE_EVENT_COUNT, VOCAB_OFFSET};
use crate::tokenizer::{FlatField, categorical_label, numeric_label};
use profiled_kernels::attention::{Mask, Sequence};

/// What a score is measured against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The unmasked profile (drop = 1 − cosine to it).
    Profile,
    /// One item by original id (score = cosine of profile and item vector).
    Item(String),
    /// A set of users summarised by one vector (e.g. the mean of their
    /// profiles); score = cosine to it.
    Users(Vec<f32>),
}

/// How attributions are computed (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Score drop with groups / tokens masked (faithful).
    Occlusion,
    /// Head-averaged, residual-mixed attention rollout (attention mass).
    AttentionRollout,
    /// Raw attention mass from the output position.
    Attention,
}

impl Method {
    /// What the values of this method measure.
    pub fn quantity(self) -> &'static str {
        match self {
            Method::Occlusion => "score drop",
            Method::AttentionRollout | Method::Attention => "attention mass",
        }
    }
}

/// Options of [`Encoder::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainOptions {
    /// Occlusion: also mask each single token (otherwise groups only).
    pub tokens: bool,
    /// Keep only this many tokens in the result (0 = all).
    pub max_tokens: usize,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        ExplainOptions {
            tokens: true,
            max_tokens: 0,
        }
    }
}

/// The attribution of one dimension group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupAttribution {
    /// The group.
    pub group: Group,
    /// Score drop (occlusion) or attention mass.
    pub value: f64,
    /// Share of the total (see the module docs).
    pub share: f64,
    /// Tokens of this group in the input.
    pub tokens: usize,
}

/// The attribution of one token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenAttribution {
    /// Position in the token sequence (fields first, then events oldest first).
    pub position: usize,
    /// Its group.
    pub group: Group,
    /// Readable label (`occupation = engineer`, `item 50 "Star Wars (1977)" @ 1997-10-02`).
    pub label: String,
    /// Score drop when masked (occlusion) or attention mass.
    pub value: f64,
}

/// One token of an explained input, as the model saw it: the whole token
/// table comes with every explanation, so a client (or the server) never has
/// to rebuild it from labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Position in the token sequence (fields first, then events oldest first).
    pub position: usize,
    /// Its group.
    pub group: Group,
    /// The schema field's name, or `events` for a behaviour token.
    pub field: String,
    /// Readable label (`occupation = engineer`, `item 50 "Star Wars (1977)" @ 1997-10-02`).
    pub label: String,
    /// The event's item id (behaviour tokens only; empty otherwise).
    pub item_id: String,
    /// The event's Unix timestamp in seconds (behaviour tokens only; 0 otherwise).
    pub timestamp: i64,
    /// The value or item is not in the model's vocabulary: the model used its
    /// out-of-vocabulary row.
    pub oov: bool,
    /// The field has no usable value: the model used its missing row.
    pub missing: bool,
}

/// Attention mass from the output position in one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAttention {
    /// Layer index.
    pub layer: usize,
    /// Per head: mass on each token position.
    pub heads: Vec<Vec<f32>>,
    /// Head-averaged mass on each token position.
    pub mean: Vec<f32>,
}

/// An explanation of one user's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The target.
    pub target: Target,
    /// The method.
    pub method: Method,
    /// What values measure: `score drop` or `attention mass`.
    pub quantity: String,
    /// Score of the unmasked profile for the target (1 for the profile itself).
    pub score: f64,
    /// The unmasked profile.
    pub profile: Vec<f32>,
    /// Per group, largest value first.
    pub groups: Vec<GroupAttribution>,
    /// Per token, largest value first (empty when tokens were not asked for).
    pub tokens: Vec<TokenAttribution>,
    /// Every token of the input by position, whether or not tokens were
    /// attributed.
    pub table: Vec<TokenInfo>,
    /// Attention method: per layer and head.
    pub layers: Vec<LayerAttention>,
    /// Forward variants computed in the batch (occlusion).
    pub variants: usize,
}

/// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD` of a Unix timestamp in seconds.
pub fn date_of(ts: i64) -> String {
    let (y, m, d) = civil_from_days(ts.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

fn fmt_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.3}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Original,
    Group(Group),
    Token(usize),
}

const GROUPS: [Group; 4] = [
    Group::Demographic,
    Group::Behaviour,
    Group::Preference,
    Group::Numeric,
];

impl Encoder {
    /// Explains `features`' profile for `target` by `method` (a fresh workspace).
    pub fn explain(
        &self,
        features: &UserFeatures,
        target: &Target,
        method: Method,
        options: &ExplainOptions,
    ) -> Result<Explanation> {
        self.explain_in(features, target, method, options, &mut Workspace::new())
    }

    /// [`Encoder::explain`] with a reusable workspace.
    pub fn explain_in(
        &self,
        features: &UserFeatures,
        target: &Target,
        method: Method,
        options: &ExplainOptions,
        ws: &mut Workspace,
    ) -> Result<Explanation> {
        let target_vec: Option<Vec<f32>> = match target {
            Target::Profile => None,
            Target::Item(id) => Some(
                self.item_vector(id)
                    .ok_or_else(|| {
                        Error::Argument(format!("target item `{id}` is not in the model"))
                    })?
                    .to_vec(),
            ),
            Target::Users(v) => {
                if v.len() != self.dim()
                    || v.iter().any(|x| !x.is_finite())
                    || v.iter().all(|&x| x == 0.0)
                {
                    return Err(Error::Argument(format!(
                        "target users vector must have {} finite values, not all zero",
                        self.dim()
                    )));
                }
                Some(v.clone())
            }
        };
        ws.tokens.clear();
        self.tokenizer().push(features, &mut ws.tokens)?;
        let p = ws.tokens.p;
        let events: Vec<_> = ws.tokens.user_events(0).to_vec();
        let fields: Vec<FlatField> = ws.tokens.user_fields(0).to_vec();
        let t = p + events.len();
        let schema = &self.metadata().schema;
        let group_of = |i: usize| -> Group {
            if i < p {
                schema.fields.get(i).map_or(Group::Demographic, |f| f.group)
            } else {
                Group::Behaviour
            }
        };
        let table: Vec<TokenInfo> = (0..t)
            .map(|i| self.token_info(features, &fields, &events, &ws.tokens.prefs, i))
            .collect();

        let mut out = Explanation {
            target: target.clone(),
            method,
            quantity: method.quantity().to_string(),
            score: 0.0,
            profile: Vec::new(),
            groups: Vec::new(),
            tokens: Vec::new(),
            table: Vec::new(),
            layers: Vec::new(),
            variants: 1,
        };
        let token_values: Vec<f64>;
        let mut group_values: Vec<(Group, f64)> = Vec::new();
        match method {
            Method::Occlusion => {
                let mut variants = vec![Variant::Original];
                for g in GROUPS {
                    if (0..t).any(|i| group_of(i) == g) {
                        variants.push(Variant::Group(g));
                    }
                }
                if options.tokens {
                    variants.extend((0..t).map(Variant::Token));
                }
                let masks: Vec<Vec<bool>> = variants
                    .iter()
                    .map(|&v| {
                        (0..t)
                            .map(|i| match v {
                                Variant::Original => false,
                                Variant::Group(g) => group_of(i) == g,
                                Variant::Token(k) => k == i,
                            })
                            .collect()
                    })
                    .collect();
                let rows = self.forward_masked(ws, &masks)?;
                let dout = self.dim();
                let profiles: Vec<Option<&[f32]>> = rows
                    .iter()
                    .map(|r| r.and_then(|k| ws.out.get(k * dout..(k + 1) * dout)))
                    .collect();
                let p0 = profiles
                    .first()
                    .copied()
                    .flatten()
                    .ok_or_else(|| Error::Argument("internal: no unmasked profile".into()))?;
                let score = |v: Option<&[f32]>| -> f64 {
                    match (v, &target_vec) {
                        (None, _) => 0.0,
                        (Some(v), None) => cosine(v, p0),
                        (Some(v), Some(tv)) => cosine(v, tv),
                    }
                };
                let s0 = score(Some(p0));
                out.score = s0;
                out.profile = p0.to_vec();
                out.variants = variants.len();
                let mut tv = vec![0.0; t];
                for (v, prof) in variants.iter().zip(&profiles) {
                    let drop = s0 - score(*prof);
                    match v {
                        Variant::Group(g) => group_values.push((*g, drop)),
                        Variant::Token(i) => tv[*i] = drop,
                        Variant::Original => {}
                    }
                }
                token_values = if options.tokens { tv } else { Vec::new() };
            }
            Method::Attention | Method::AttentionRollout => {
                self.forward_tokens(ws, true)?;
                let dout = self.dim();
                let p0 = ws
                    .out
                    .get(..dout)
                    .ok_or_else(|| Error::Argument("internal: no profile".into()))?;
                out.profile = p0.to_vec();
                out.score = match &target_vec {
                    None => 1.0,
                    Some(tv) => cosine(p0, tv),
                };
                let heads = self.metadata().architecture.heads;
                let nl = self.metadata().architecture.layers;
                // Per layer: head rows of the output position (last token).
                let mut layers = Vec::with_capacity(nl);
                for l in 0..nl {
                    let pr = ws
                        .probs
                        .get(l)
                        .ok_or_else(|| Error::Argument("internal: probs".into()))?;
                    let rows = if l + 1 == nl { 1 } else { t };
                    let r = rows - 1;
                    let mut hs = Vec::with_capacity(heads);
                    for h in 0..heads {
                        let o = (h * rows + r) * t;
                        hs.push(
                            pr.get(o..o + t)
                                .ok_or_else(|| Error::Argument("internal: probs".into()))?
                                .to_vec(),
                        );
                    }
                    let mean: Vec<f32> = (0..t)
                        .map(|j| hs.iter().map(|h| h[j]).sum::<f32>() / heads as f32)
                        .collect();
                    layers.push(LayerAttention {
                        layer: l,
                        heads: hs,
                        mean,
                    });
                }
                token_values = if method == Method::Attention {
                    layers
                        .last()
                        .map(|la| la.mean.iter().map(|&x| f64::from(x)).collect())
                        .unwrap_or_default()
                } else {
                    // r = 0.5·Ā_L[out] + 0.5·e_out, then r ← r·(0.5·Ā_l + 0.5·I) for l = L−2 … 0.
                    let mut r: Vec<f64> = layers
                        .last()
                        .map(|la| la.mean.iter().map(|&x| 0.5 * f64::from(x)).collect())
                        .unwrap_or_else(|| vec![0.0; t]);
                    if let Some(x) = r.last_mut() {
                        *x += 0.5;
                    }
                    for l in (0..nl.saturating_sub(1)).rev() {
                        let pr = &ws.probs[l];
                        let mut next: Vec<f64> = r.iter().map(|x| 0.5 * x).collect();
                        for (i, &ri) in r.iter().enumerate() {
                            if ri == 0.0 {
                                continue;
                            }
                            for (j, nj) in next.iter_mut().enumerate() {
                                let a: f64 = (0..heads)
                                    .map(|h| {
                                        f64::from(
                                            pr.get((h * t + i) * t + j).copied().unwrap_or(0.0),
                                        )
                                    })
                                    .sum::<f64>()
                                    / heads as f64;
                                *nj += 0.5 * ri * a;
                            }
                        }
                        r = next;
                    }
                    r
                };
                if method == Method::Attention {
                    out.layers = layers;
                }
                for g in GROUPS {
                    let idx: Vec<usize> = (0..t).filter(|&i| group_of(i) == g).collect();
                    if !idx.is_empty() {
                        group_values.push((g, idx.iter().map(|&i| token_values[i]).sum()));
                    }
                }
            }
        }
        let denom: f64 = match method {
            Method::Occlusion => group_values.iter().map(|(_, v)| v.abs()).sum(),
            _ => group_values.iter().map(|(_, v)| *v).sum(),
        };
        out.groups = group_values
            .iter()
            .map(|&(g, v)| GroupAttribution {
                group: g,
                value: v,
                share: if denom > 0.0 {
                    if method == Method::Occlusion {
                        v.abs() / denom
                    } else {
                        v / denom
                    }
                } else {
                    0.0
                },
                tokens: (0..t).filter(|&i| group_of(i) == g).count(),
            })
            .collect();
        out.groups.sort_by(|a, b| b.value.total_cmp(&a.value));
        out.tokens = token_values
            .iter()
            .enumerate()
            .map(|(i, &v)| TokenAttribution {
                position: i,
                group: group_of(i),
                label: table.get(i).map(|x| x.label.clone()).unwrap_or_default(),
                value: v,
            })
            .collect();
        out.tokens.sort_by(|a, b| {
            b.value
                .total_cmp(&a.value)
                .then(a.position.cmp(&b.position))
        });
        if options.max_tokens > 0 {
            out.tokens.truncate(options.max_tokens);
        }
        out.table = table;
        Ok(out)
    }

    /// Forward of user 0 of `ws.tokens` once per mask (`masks[v][i]` = token
    /// `i` masked in variant `v`: a field token becomes its missing token, a
    /// behaviour token is removed), all variants in one batch. Returns, per
    /// variant, its row of `ws.out` (`None` when no token is left).
    pub(crate) fn forward_masked(
        &self,
        ws: &mut Workspace,
        masks: &[Vec<bool>],
    ) -> Result<Vec<Option<usize>>> {
        let p = ws.tokens.p;
        let t = ws.tokens.user_len(0);
        let d = self.metadata().architecture.d_model;
        // Unmasked rows, then one missing row per field.
        let emb_len = (t + p) * d;
        let emb = grow(&mut ws.emb, emb_len);
        self.embed_user(&ws.tokens, 0, &mut emb[..t * d])?;
        for fi in 0..p {
            self.missing_row(fi, &mut emb[(t + fi) * d..(t + fi + 1) * d])?;
        }
        let masked = |m: &[bool], i: usize| m.get(i).copied().unwrap_or(false);
        let len_of = |m: &[bool]| (0..t).filter(|&i| i < p || !masked(m, i)).count();
        let mut rows = Vec::with_capacity(masks.len());
        let mut present = 0usize;
        for m in masks {
            if len_of(m) > 0 {
                rows.push(Some(present));
                present += 1;
            } else {
                rows.push(None);
            }
        }
        // Variants go through the layers in chunks of at most
        // `max_tokens_per_call` tokens (see `forward_batch`).
        let budget = self.max_tokens_per_call();
        let live: Vec<&Vec<bool>> = masks.iter().filter(|m| len_of(m) > 0).collect();
        let mut v0 = 0usize;
        while v0 < live.len() {
            ws.seqs.clear();
            let mut total = 0usize;
            let mut v1 = v0;
            while v1 < live.len() {
                let len = len_of(live[v1]);
                if v1 > v0 && total + len > budget {
                    break;
                }
                ws.seqs.push(Sequence::new(
                    len,
                    Mask::PrefixCausal { prefix: p.min(len) },
                ));
                total += len;
                v1 += 1;
            }
            let x = grow(&mut ws.x, total * d);
            let emb = &ws.emb[..emb_len];
            let mut r = 0usize;
            for m in &live[v0..v1] {
                for i in 0..t {
                    let src = if !masked(m, i) {
                        i
                    } else if i < p {
                        t + i
                    } else {
                        continue;
                    };
                    x[r * d..(r + 1) * d].copy_from_slice(&emb[src * d..(src + 1) * d]);
                    r += 1;
                }
            }
            self.encode_at(ws, total, false, v0)?;
            v0 = v1;
        }
        Ok(rows)
    }

    /// Faithfulness check of the explanation methods: for each user with more
    /// than `k` tokens, mask the top-`k` tokens of each method together (the
    /// occlusion masking) and measure how far the profile moves
    /// (`1 − cosine` to the unmasked profile), against `k` random tokens.
    /// Returns the mean drop per method (`occlusion`, `attention_rollout`,
    /// `attention`, `random`) and the number of users measured.
    pub fn faithfulness(
        &self,
        users: &[UserFeatures],
        k: usize,
        seed: u64,
    ) -> Result<(Vec<(String, f64)>, usize)> {
        let names = ["occlusion", "attention_rollout", "attention", "random"];
        let mut sums = [0f64; 4];
        let mut n = 0usize;
        let mut ws = Workspace::new();
        let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
        let opts = ExplainOptions::default();
        for (ui, u) in users.iter().enumerate() {
            let mut sets: Vec<Vec<usize>> = Vec::with_capacity(4);
            let mut t = 0usize;
            for m in [
                Method::Occlusion,
                Method::AttentionRollout,
                Method::Attention,
            ] {
                let ex = self
                    .explain_in(u, &Target::Profile, m, &opts, &mut ws)
                    .map_err(|e| Error::Batch {
                        index: ui,
                        source: Box::new(e),
                    })?;
                t = ex.tokens.len();
                sets.push(ex.tokens.iter().take(k).map(|x| x.position).collect());
            }
            if t <= k {
                continue;
            }
            // k distinct random positions (partial Fisher–Yates, SplitMix64).
            let mut pos: Vec<usize> = (0..t).collect();
            for i in 0..k {
                rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = rng;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                let j = i + (z % (t - i) as u64) as usize;
                pos.swap(i, j);
            }
            sets.push(pos[..k].to_vec());
            let mut masks = vec![vec![false; t]];
            for set in &sets {
                let mut m = vec![false; t];
                for &i in set {
                    if let Some(x) = m.get_mut(i) {
                        *x = true;
                    }
                }
                masks.push(m);
            }
            // Re-tokenize (explain_in left this user in ws.tokens) and forward.
            ws.tokens.clear();
            self.tokenizer().push(u, &mut ws.tokens)?;
            let rows = self.forward_masked(&mut ws, &masks)?;
            let dout = self.dim();
            let row = |r: Option<usize>| r.and_then(|k| ws.out.get(k * dout..(k + 1) * dout));
            let p0 = row(rows[0]).ok_or_else(|| Error::Argument("internal: no profile".into()))?;
            for (s, r) in sums.iter_mut().zip(&rows[1..]) {
                *s += row(*r).map_or(1.0, |v| 1.0 - cosine(v, p0));
            }
            n += 1;
        }
        let out = names
            .iter()
            .zip(sums)
            .map(|(name, s)| (name.to_string(), if n > 0 { s / n as f64 } else { 0.0 }))
            .collect();
        Ok((out, n))
    }

    fn token_info(
        &self,
        features: &UserFeatures,
        fields: &[FlatField],
        events: &[crate::tokenizer::EventToken],
        prefs: &[f32],
        i: usize,
    ) -> TokenInfo {
        let schema = &self.metadata().schema;
        let mut info = TokenInfo {
            position: i,
            group: Group::Behaviour,
            field: "events".into(),
            label: format!("token {i}"),
            item_id: String::new(),
            timestamp: 0,
            oov: false,
            missing: false,
        };
        if let (Some(f), Some(tok)) = (schema.fields.get(i), fields.get(i)) {
            let name = &f.name;
            info.group = f.group;
            info.field = name.clone();
            let missing = || format!("{name} = (missing)");
            info.label = match (&f.kind, tok) {
                (FieldKind::Categorical { .. }, FlatField::Categorical(MISSING))
                | (FieldKind::Numeric { .. }, FlatField::Numeric(None))
                | (FieldKind::Preference, FlatField::Preference(None)) => {
                    info.missing = true;
                    missing()
                }
                (FieldKind::Categorical { transform, .. }, FlatField::Categorical(r)) => {
                    let v = features
                        .fields
                        .get(&f.source)
                        .and_then(|v| categorical_label(&f.source, transform, v))
                        .unwrap_or_default();
                    if *r == OOV {
                        info.oov = true;
                        format!("{name} = {v} (unseen)")
                    } else {
                        format!("{name} = {v}")
                    }
                }
                (FieldKind::Numeric { .. }, FlatField::Numeric(Some(_))) => {
                    if f.source == SOURCE_EVENT_COUNT {
                        format!("{name} = {} events", features.events.len())
                    } else {
                        let x = features
                            .fields
                            .get(&f.source)
                            .and_then(|v| numeric_label(&f.source, v));
                        format!("{name} = {}", x.map(fmt_number).unwrap_or_default())
                    }
                }
                (FieldKind::Preference, FlatField::Preference(Some(off))) => {
                    let g = schema.genres.len();
                    let w = prefs.get(*off..off + g).unwrap_or(&[]);
                    let mut top: Vec<(usize, f32)> = w
                        .iter()
                        .copied()
                        .enumerate()
                        .filter(|x| x.1 > 0.0)
                        .collect();
                    top.sort_by(|a, b| b.1.total_cmp(&a.1));
                    let parts: Vec<String> = top
                        .iter()
                        .take(3)
                        .map(|(k, x)| {
                            format!(
                                "{} {:.0}%",
                                schema.genres.get(*k).map_or("?", |s| s),
                                x * 100.0
                            )
                        })
                        .collect();
                    format!("{name} = {}", parts.join(", "))
                }
                _ => {
                    info.missing = true;
                    missing()
                }
            };
            return info;
        }
        let Some(e) = events.get(i.wrapping_sub(fields.len())) else {
            return info;
        };
        let Some(ev) = features.events.get(e.source as usize) else {
            return info;
        };
        info.item_id = ev.item.clone();
        info.timestamp = ev.timestamp;
        info.oov = e.item_row < VOCAB_OFFSET;
        let title = if info.oov {
            " (unseen)".to_string()
        } else {
            schema
                .items
                .titles
                .get((e.item_row - VOCAB_OFFSET) as usize)
                .cloned()
                .flatten()
                .map(|t| format!(" \"{t}\""))
                .unwrap_or_default()
        };
        info.label = format!("item {}{title} @ {}", ev.item, date_of(ev.timestamp));
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(875_750_400), "1997-10-02");
        assert_eq!(date_of(-86_400), "1969-12-31");
        assert_eq!(date_of(951_782_400), "2000-02-29");
    }
}
