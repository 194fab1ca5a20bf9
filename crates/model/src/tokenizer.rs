//! Features → tokens, per the model's schema (`docs/model-format.md`,
//! "Tokens"). The trainer tokenizes with this same code
//! ([`Tokenizer::tokenize_resolved`], its events already resolved to item
//! indexes), so training and serving tokens cannot drift apart:
//!
//! - `fields` keys are the schema's **input columns** (e.g. `gender`,
//!   `occupation`, `zip_code`, `age`); a column may feed several fields
//!   (`age` → `age_bucket` and `age`). An unknown column is an error naming it.
//! - Categorical and number values are both accepted where the trainer
//!   accepts both: a number is written in its string form (`24`, `2.5`) for
//!   categorical transforms, a string is parsed (after trimming) for numeric
//!   ones. A string that does not parse, a non-finite number and weighted
//!   tags (no input column of the trainer's schema takes tags) are errors.
//! - A missing column or an empty string → the field's missing token; a
//!   value outside the vocabulary → the OOV row (counted).
//! - Events are sorted by time (ties keep the given order); unknown items map
//!   to the OOV row (counted); only the most recent `max_events` become tokens,
//!   while the activity count and the genre mix use every event.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::features::{FieldValue, UserFeatures};
use crate::format::{
    CategoricalTransform, FeatureSchema, FieldKind, MISSING, NumericTransform, OOV,
    SOURCE_EVENT_COUNT, VOCAB_OFFSET,
};

/// One field (prefix) token.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldToken {
    /// Row of the field's categorical table ([`MISSING`], [`OOV`] or `VOCAB_OFFSET + k`).
    Categorical(u32),
    /// Standardised value; `None` = missing.
    Numeric(Option<f32>),
    /// Genre weights summing to 1; `None` = missing (no genre in the history).
    Preference(Option<Vec<f32>>),
}

/// One behaviour token (its position is its index in [`UserTokens::events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventToken {
    /// Row of `behaviour.item` ([`OOV`] or `VOCAB_OFFSET + item`).
    pub item_row: u32,
    /// Row of `behaviour.rating`.
    pub rating_row: u32,
    /// Row of `behaviour.gap`.
    pub gap_row: u32,
    /// Index of the event in [`UserFeatures::events`] (for labels).
    pub source: u32,
}

/// An event whose item is already resolved to a model item index: the
/// trainer's input (it resolves each dataset item once, not once per token).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedEvent {
    /// Model item index (output row); `None` = unknown item (OOV row).
    pub item: Option<u32>,
    /// Seconds.
    pub timestamp: i64,
    /// Rating, if any.
    pub rating: Option<f32>,
}

/// A tokenized user: one token per schema field, then ≤ `max_events`
/// behaviour tokens, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct UserTokens {
    /// Field tokens in schema order.
    pub fields: Vec<FieldToken>,
    /// Behaviour tokens.
    pub events: Vec<EventToken>,
}

impl UserTokens {
    /// Total number of tokens.
    pub fn len(&self) -> usize {
        self.fields.len() + self.events.len()
    }

    /// True when there is no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What tokenizing one user ran into (also accumulated in [`Tokenizer::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenStats {
    /// Categorical values outside the vocabulary (mapped to OOV).
    pub oov_values: u64,
    /// Events whose item is unknown (mapped to OOV).
    pub oov_items: u64,
    /// Fields that got their missing token.
    pub missing_fields: u64,
    /// Events older than the most recent `max_events` (not tokens).
    pub dropped_events: u64,
}

/// Running totals of a tokenizer.
#[derive(Debug, Default)]
pub struct Counters {
    /// Categorical values mapped to OOV.
    pub oov_values: AtomicU64,
    /// Events with an unknown item.
    pub oov_items: AtomicU64,
    /// Fields given their missing token.
    pub missing_fields: AtomicU64,
    /// Events beyond `max_events` that were dropped.
    pub dropped_events: AtomicU64,
}

/// Field token inside a [`TokenBatch`] (preference weights live in a shared buffer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FlatField {
    Categorical(u32),
    Numeric(Option<f32>),
    /// Offset of `genres` weights in [`TokenBatch::prefs`].
    Preference(Option<usize>),
}

/// Tokens of many users in flat, reusable buffers (no allocation once warm).
#[derive(Debug, Default, Clone)]
pub struct TokenBatch {
    pub(crate) p: usize,
    pub(crate) fields: Vec<FlatField>,
    pub(crate) prefs: Vec<f32>,
    pub(crate) events: Vec<EventToken>,
    pub(crate) spans: Vec<Range<usize>>,
    order: Vec<(i64, u32)>,
    resolved: Vec<(Option<u32>, Option<f32>)>,
    pref_acc: Vec<f64>,
    text: String,
}

impl TokenBatch {
    /// An empty batch.
    pub fn new() -> TokenBatch {
        TokenBatch::default()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there is no user.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Removes every user (keeps the capacity).
    pub fn clear(&mut self) {
        self.fields.clear();
        self.prefs.clear();
        self.events.clear();
        self.spans.clear();
    }

    /// Token count of user `u`.
    pub(crate) fn user_len(&self, u: usize) -> usize {
        self.p + self.spans.get(u).map_or(0, |r| r.len())
    }

    /// The field tokens of user `u`.
    pub(crate) fn user_fields(&self, u: usize) -> &[FlatField] {
        self.fields.get(u * self.p..(u + 1) * self.p).unwrap_or(&[])
    }

    /// The event tokens of user `u`.
    pub(crate) fn user_events(&self, u: usize) -> &[EventToken] {
        self.spans
            .get(u)
            .and_then(|r| self.events.get(r.clone()))
            .unwrap_or(&[])
    }

    /// User `u` as owned [`UserTokens`].
    pub fn user(&self, u: usize) -> Option<UserTokens> {
        let _ = self.spans.get(u)?;
        let g = self.prefs_width();
        let fields = self
            .user_fields(u)
            .iter()
            .map(|f| match *f {
                FlatField::Categorical(r) => FieldToken::Categorical(r),
                FlatField::Numeric(z) => FieldToken::Numeric(z),
                FlatField::Preference(o) => FieldToken::Preference(
                    o.and_then(|o| self.prefs.get(o..o + g))
                        .map(<[f32]>::to_vec),
                ),
            })
            .collect();
        Some(UserTokens {
            fields,
            events: self.user_events(u).to_vec(),
        })
    }

    fn prefs_width(&self) -> usize {
        self.pref_acc.len()
    }

    fn truncate_to(&mut self, users: usize, fields: usize, prefs: usize, events: usize) {
        self.spans.truncate(users);
        self.fields.truncate(fields);
        self.prefs.truncate(prefs);
        self.events.truncate(events);
    }
}

/// A value as the tokenizer reads it.
#[derive(Clone, Copy)]
enum Val<'a> {
    Num(f64),
    Text(&'a str),
}

fn value_of<'a>(column: &str, v: &'a FieldValue) -> Result<Val<'a>> {
    match v {
        FieldValue::Number(x) => Ok(Val::Num(*x)),
        FieldValue::Categorical(s) => Ok(Val::Text(s)),
        FieldValue::Tags(_) => Err(Error::feature(
            column,
            "weighted tags given, but this model reads the column as a single categorical or numeric value",
        )),
    }
}

/// The trainer's string form of a value: text as is; integral numbers without
/// a decimal point, other numbers in shortest round-trip form.
fn write_text(v: Val<'_>, buf: &mut String) {
    buf.clear();
    match v {
        Val::Text(s) => buf.push_str(s),
        Val::Num(x) => {
            if x.fract() == 0.0 && x.abs() < 1e15 {
                let _ = write!(buf, "{}", x as i64);
            } else {
                let _ = write!(buf, "{x}");
            }
        }
    }
}

/// A number (`None` = missing: blank text).
fn parse_number(column: &str, v: Val<'_>) -> Result<Option<f64>> {
    let x = match v {
        Val::Text(s) if s.trim().is_empty() => return Ok(None),
        Val::Text(s) => s.trim().parse::<f64>().ok(),
        Val::Num(x) => Some(x),
    };
    match x {
        Some(x) if x.is_finite() => Ok(Some(x)),
        Some(x) => Err(Error::feature(column, format!("value {x} is not finite"))),
        None => {
            let mut t = String::new();
            write_text(v, &mut t);
            Err(Error::feature(column, format!("`{t}` is not a number")))
        }
    }
}

/// Writes the categorical key of a value into `buf`; `false` = missing.
fn categorical_key(
    column: &str,
    t: &CategoricalTransform,
    v: Val<'_>,
    buf: &mut String,
) -> Result<bool> {
    if let Val::Num(x) = v
        && !x.is_finite()
    {
        return Err(Error::feature(column, format!("value {x} is not finite")));
    }
    match t {
        CategoricalTransform::Identity => {
            write_text(v, buf);
        }
        CategoricalTransform::Prefix { length } => {
            write_text(v, buf);
            if let Some((i, _)) = buf.char_indices().nth(*length) {
                buf.truncate(i);
            }
        }
        CategoricalTransform::Bucket { edges, labels } => {
            buf.clear();
            match parse_number(column, v)? {
                None => return Ok(false),
                Some(x) => {
                    let i = edges.iter().filter(|&&e| e <= x).count();
                    match labels.get(i) {
                        Some(l) => buf.push_str(l),
                        None => return Ok(false),
                    }
                }
            }
        }
    }
    Ok(!buf.is_empty())
}

/// The categorical value of `v` under transform `t` (`None` = missing), by
/// the tokenizer's own rule (the trainer fits vocabularies with it).
pub fn categorical_value(
    column: &str,
    t: &CategoricalTransform,
    v: &FieldValue,
) -> Result<Option<String>> {
    let mut buf = String::new();
    Ok(categorical_key(column, t, value_of(column, v)?, &mut buf)?.then_some(buf))
}

/// The transformed number of a numeric field's value (`None` = missing:
/// blank text), by the tokenizer's own rule (the trainer fits statistics with it).
pub fn numeric_value(column: &str, t: NumericTransform, v: &FieldValue) -> Result<Option<f64>> {
    match parse_number(column, value_of(column, v)?)? {
        None => Ok(None),
        Some(x) => apply_numeric(column, t, x).map(Some),
    }
}

/// `t(x)` of a numeric field (`ln(1 + x)` needs `x > -1`).
pub fn apply_numeric(column: &str, t: NumericTransform, x: f64) -> Result<f64> {
    match t {
        NumericTransform::Identity => Ok(x),
        NumericTransform::Log1p if x <= -1.0 => Err(Error::feature(
            column,
            format!("value {x} is ≤ -1 (log1p transform)"),
        )),
        NumericTransform::Log1p => Ok(x.ln_1p()),
    }
}

/// The human-readable value of a categorical field for labels
/// (`None` = missing).
pub(crate) fn categorical_label(
    column: &str,
    t: &CategoricalTransform,
    v: &FieldValue,
) -> Option<String> {
    let v = value_of(column, v).ok()?;
    let mut buf = String::new();
    categorical_key(column, t, v, &mut buf).ok()?.then_some(buf)
}

/// The raw number of a numeric field for labels.
pub(crate) fn numeric_label(column: &str, v: &FieldValue) -> Option<f64> {
    parse_number(column, value_of(column, v).ok()?)
        .ok()
        .flatten()
}

/// A string → row map. Its keys come from the model (fixed at load); only
/// lookups use request strings, so a fast seeded hasher (foldhash) is safe
/// here and cuts the per-event lookup cost against std's SipHash.
type Lookup = HashMap<String, u32, foldhash::fast::RandomState>;

/// Turns [`UserFeatures`] into tokens for one model.
#[derive(Debug)]
pub struct Tokenizer {
    schema: FeatureSchema,
    vocabs: Vec<Lookup>,
    items: Lookup,
    columns: Vec<String>,
    counters: Counters,
}

impl Tokenizer {
    /// Builds the lookup tables of `schema` (validated by the loader).
    pub fn new(schema: FeatureSchema) -> Tokenizer {
        let vocabs = schema
            .fields
            .iter()
            .map(|f| match &f.kind {
                FieldKind::Categorical { vocab, .. } => vocab
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.clone(), VOCAB_OFFSET + i as u32))
                    .collect(),
                _ => Lookup::default(),
            })
            .collect();
        let items = schema
            .items
            .ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let columns = schema
            .input_columns()
            .into_iter()
            .map(str::to_string)
            .collect();
        Tokenizer {
            schema,
            vocabs,
            items,
            columns,
            counters: Counters::default(),
        }
    }

    /// The schema.
    pub fn schema(&self) -> &FeatureSchema {
        &self.schema
    }

    /// Model item index (output row) of an original item id.
    pub fn item_index(&self, id: &str) -> Option<u32> {
        self.items.get(id).copied()
    }

    /// Input columns the model reads (allowed keys of `UserFeatures::fields`).
    pub fn input_columns(&self) -> &[String] {
        &self.columns
    }

    /// Running totals (OOV values and items, missing fields, dropped events).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Sets the running totals back to zero.
    pub fn reset_counters(&self) {
        let c = &self.counters;
        for a in [
            &c.oov_values,
            &c.oov_items,
            &c.missing_fields,
            &c.dropped_events,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }

    /// Tokenizes one user into owned tokens.
    pub fn tokenize(&self, features: &UserFeatures) -> Result<UserTokens> {
        let mut b = TokenBatch::new();
        self.push(features, &mut b)?;
        b.user(0)
            .ok_or_else(|| Error::Argument("internal: tokenized user is missing".into()))
    }

    /// Appends one user's tokens to `batch`. On error the batch is unchanged.
    pub fn push(&self, features: &UserFeatures, batch: &mut TokenBatch) -> Result<TokenStats> {
        let marks = (
            batch.spans.len(),
            batch.fields.len(),
            batch.prefs.len(),
            batch.events.len(),
        );
        let r = self.push_inner(features, batch);
        match r {
            Ok(stats) => {
                let c = &self.counters;
                c.oov_values.fetch_add(stats.oov_values, Ordering::Relaxed);
                c.oov_items.fetch_add(stats.oov_items, Ordering::Relaxed);
                c.missing_fields
                    .fetch_add(stats.missing_fields, Ordering::Relaxed);
                c.dropped_events
                    .fetch_add(stats.dropped_events, Ordering::Relaxed);
                Ok(stats)
            }
            Err(e) => {
                batch.truncate_to(marks.0, marks.1, marks.2, marks.3);
                Err(e)
            }
        }
    }

    /// Tokenizes one user whose events are already resolved to item indexes
    /// (the trainer's path; same rules and tokens as [`Tokenizer::tokenize`]
    /// with the items' ids, `source` = index in `events`; not added to the
    /// running [`Tokenizer::counters`]).
    pub fn tokenize_resolved(
        &self,
        fields: &BTreeMap<String, FieldValue>,
        events: &[ResolvedEvent],
    ) -> Result<UserTokens> {
        let mut batch = TokenBatch::new();
        let mut stats = TokenStats::default();
        self.check_columns(fields)?;
        for (i, e) in events.iter().enumerate() {
            check_rating(e.rating, || {
                e.item
                    .and_then(|k| self.schema.items.ids.get(k as usize))
                    .map_or("?", String::as_str)
            })?;
            if let Some(k) = e.item
                && k as usize >= self.schema.items.ids.len()
            {
                return Err(Error::feature(
                    "events",
                    format!("item index {k} is not an item of the model"),
                ));
            }
            let idx = u32::try_from(i).map_err(|_| Error::feature("events", "too many events"))?;
            batch.order.push((e.timestamp, idx));
            if e.item.is_none() {
                stats.oov_items += 1;
            }
            batch.resolved.push((e.item, e.rating));
        }
        self.push_sorted(fields, &mut batch, stats)?;
        batch
            .user(0)
            .ok_or_else(|| Error::Argument("internal: tokenized user is missing".into()))
    }

    /// Fails on a field key that is not an input column.
    fn check_columns(&self, fields: &BTreeMap<String, FieldValue>) -> Result<()> {
        for k in fields.keys() {
            if self.columns.binary_search(k).is_err() {
                return Err(Error::feature(
                    k,
                    format!(
                        "unknown field (the model reads: {})",
                        self.columns.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn push_inner(&self, features: &UserFeatures, batch: &mut TokenBatch) -> Result<TokenStats> {
        let mut stats = TokenStats::default();
        self.check_columns(&features.fields)?;
        // Resolve the events.
        batch.order.clear();
        batch.resolved.clear();
        for (i, e) in features.events.iter().enumerate() {
            check_rating(e.rating, || &e.item)?;
            let idx = u32::try_from(i).map_err(|_| Error::feature("events", "too many events"))?;
            batch.order.push((e.timestamp, idx));
            let item = self.items.get(&e.item).copied();
            if item.is_none() {
                stats.oov_items += 1;
            }
            batch.resolved.push((item, e.rating));
        }
        self.push_sorted(&features.fields, batch, stats)
    }

    /// Sorts the resolved events of `batch` (by time, ties in the given
    /// order) and appends the user's tokens.
    fn push_sorted(
        &self,
        fields: &BTreeMap<String, FieldValue>,
        batch: &mut TokenBatch,
        mut stats: TokenStats,
    ) -> Result<TokenStats> {
        let s = &self.schema;
        let b = &s.behaviour;
        // Events usually arrive in time order: check before sorting.
        if !batch.order.is_sorted() {
            batch.order.sort_unstable();
        }
        let n = batch.order.len();
        batch.p = s.fields.len();
        let g = s.genres.len();
        if batch.pref_acc.len() != g {
            batch.pref_acc.resize(g, 0.0);
        }
        for (fi, f) in s.fields.iter().enumerate() {
            let tok = match &f.kind {
                FieldKind::Categorical { transform, .. } => match fields.get(&f.source) {
                    None => FlatField::Categorical(MISSING),
                    Some(v) => {
                        let v = value_of(&f.source, v)?;
                        if categorical_key(&f.source, transform, v, &mut batch.text)? {
                            match self.vocabs.get(fi).and_then(|m| m.get(batch.text.as_str())) {
                                Some(&r) => FlatField::Categorical(r),
                                None => {
                                    stats.oov_values += 1;
                                    FlatField::Categorical(OOV)
                                }
                            }
                        } else {
                            FlatField::Categorical(MISSING)
                        }
                    }
                },
                FieldKind::Numeric {
                    transform,
                    mean,
                    std,
                    clip,
                } => {
                    let raw = if f.source == SOURCE_EVENT_COUNT {
                        Some(n as f64)
                    } else {
                        match fields.get(&f.source) {
                            None => None,
                            Some(v) => parse_number(&f.source, value_of(&f.source, v)?)?,
                        }
                    };
                    match raw {
                        None => FlatField::Numeric(None),
                        Some(x) => {
                            let t = apply_numeric(&f.source, *transform, x)?;
                            let z = ((t - mean) / std).clamp(-clip, *clip);
                            FlatField::Numeric(Some(z as f32))
                        }
                    }
                }
                FieldKind::Preference => {
                    let w = &mut batch.pref_acc;
                    w.iter_mut().for_each(|x| *x = 0.0);
                    let mut total = 0.0f64;
                    for &(_, i) in &batch.order {
                        let Some(&(Some(item), rating)) = batch.resolved.get(i as usize) else {
                            continue;
                        };
                        let rho = b.rating_weight(rating);
                        for &gg in s.items.genres.get(item as usize).map_or(&[][..], |v| v) {
                            if let Some(x) = w.get_mut(gg as usize) {
                                *x += rho;
                                total += rho;
                            }
                        }
                    }
                    if total > 0.0 {
                        let off = batch.prefs.len();
                        batch.prefs.extend(w.iter().map(|x| (x / total) as f32));
                        FlatField::Preference(Some(off))
                    } else {
                        FlatField::Preference(None)
                    }
                }
            };
            if matches!(
                tok,
                FlatField::Categorical(MISSING)
                    | FlatField::Numeric(None)
                    | FlatField::Preference(None)
            ) {
                stats.missing_fields += 1;
            }
            batch.fields.push(tok);
        }
        let start = n.saturating_sub(b.max_events);
        stats.dropped_events = start as u64;
        let e0 = batch.events.len();
        for i in start..n {
            let (ts, src) = batch.order[i];
            let gap_row = if i == 0 {
                0
            } else {
                b.gap_bucket(ts.saturating_sub(batch.order[i - 1].0))
            };
            let (item, rating) = batch
                .resolved
                .get(src as usize)
                .copied()
                .unwrap_or_default();
            batch.events.push(EventToken {
                item_row: item.map_or(OOV, |i| VOCAB_OFFSET + i),
                rating_row: b.rating_row(rating),
                gap_row,
                source: src,
            });
        }
        if batch.p == 0 && batch.events.len() == e0 {
            return Err(Error::feature(
                "events",
                "this model has no field tokens, so at least one event is needed",
            ));
        }
        batch.spans.push(e0..batch.events.len());
        Ok(stats)
    }
}

/// Fails on a non-finite rating (`item` names the event's item).
fn check_rating<'a>(rating: Option<f32>, item: impl FnOnce() -> &'a str) -> Result<()> {
    match rating {
        Some(r) if !r.is_finite() => Err(Error::feature(
            "events",
            format!("rating of item `{}` is not finite", item()),
        )),
        _ => Ok(()),
    }
}
