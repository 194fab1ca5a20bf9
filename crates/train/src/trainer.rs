//! The candle trainer: next-item prediction at every behaviour position
//! with full-softmax cross-entropy, AdamW, early stopping on validation
//! NDCG@10 (history masked), seeded everything.
//!
//! Training examples per user and epoch (events sorted by time):
//! - **windows**: for a window end `e` (`1 ≤ e ≤ n−1`), the user's history
//!   `events[..e]` is tokenized exactly as at serving time (so the encoder
//!   sees its last ≤ `max_events` events); behaviour position `t` of that
//!   window predicts the event right after it. Window ends are `n−1`, then
//!   `n−1−s`, `n−1−s−W`, … (`W = max_events`, `s` drawn per user and epoch in
//!   `1..=W`) so every event after the first is a target at least once.
//! - **prefix-only (cold start)**: the user with no events (field tokens
//!   only; activity 0, genre mix missing); the last field token predicts the
//!   user's first event. This trains the "no events" profile.
//!
//! Caveat (documented in `docs/model-format.md`): history-derived field
//! tokens (activity, genre mix) summarise the whole window input `events[..e]`,
//! so positions before the last one see a prefix that counts a few of their
//! future targets; the last position — the one served — does not.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{ModelConfig, ProfileModel};
use crate::schema::{
    FeatureConfig, FeatureSchema, Group, ResolvedEvent, UserTokens, user_field_values,
};

/// Input fields of one user as the tokenizer reads them.
pub type UserFields = BTreeMap<String, profiled_model::FieldValue>;

/// Which parts of the model are used (for the ablation table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Ablation {
    /// Every field of the feature config.
    #[default]
    Full,
    /// No field tokens: behaviour tokens only.
    BehaviourOnly,
    /// Behaviour + demographic fields.
    Demographics,
    /// Behaviour + demographic + preference fields.
    Preferences,
    /// Full model, but each user's sequence order is shuffled (training and scoring).
    Shuffled,
}

impl Ablation {
    /// Restricts a feature config to this ablation's groups.
    pub fn apply(self, config: &mut FeatureConfig) {
        match self {
            Ablation::Full | Ablation::Shuffled => {}
            Ablation::BehaviourOnly => config.retain_groups(&[]),
            Ablation::Demographics => config.retain_groups(&[Group::Demographic]),
            Ablation::Preferences => config.retain_groups(&[Group::Demographic, Group::Preference]),
        }
    }
}

/// One user's time-sorted events split for training.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSequence {
    /// Dense user index in the dataset.
    pub user: u32,
    /// Events the model may train on (sorted by time; items are model indexes).
    pub train: Vec<ResolvedEvent>,
    /// Validation target (the event after `train`), if any.
    pub valid: Option<ResolvedEvent>,
    /// Test target (the event after `valid`), if any.
    pub test: Option<ResolvedEvent>,
}

/// A chronological leave-one-out split of every user of a dataset (items
/// indexes = dataset item indexes): last event = test, second-to-last =
/// validation, the rest = train. Users with fewer than 3 events keep all in train.
/// Events are sorted by time with ties in file order. This is the trainer's
/// stand-in; evaluation uses the protocol's own split.
pub fn leave_one_out(dataset: &Dataset) -> Vec<UserSequence> {
    let mut per_user: Vec<Vec<ResolvedEvent>> = vec![Vec::new(); dataset.users.len()];
    for e in &dataset.interactions {
        if let Some(v) = per_user.get_mut(e.user as usize) {
            v.push(ResolvedEvent {
                item: Some(e.item),
                timestamp: e.timestamp,
                rating: e.rating,
            });
        }
    }
    per_user
        .into_iter()
        .enumerate()
        .map(|(u, mut ev)| {
            ev.sort_by_key(|e| e.timestamp);
            let (valid, test) = if ev.len() >= 3 {
                let test = ev.pop();
                let valid = ev.pop();
                (valid, test)
            } else {
                (None, None)
            };
            UserSequence {
                user: u as u32,
                train: ev,
                valid,
                test,
            }
        })
        .collect()
}

/// Options of one training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Architecture.
    pub model: ModelConfig,
    /// Column → field mapping (before the ablation is applied).
    pub features: FeatureConfig,
    /// Ablation.
    pub ablation: Ablation,
    /// Maximum epochs.
    pub epochs: usize,
    /// Windows per batch.
    pub batch_size: usize,
    /// AdamW learning rate (peak; linear warm-up over the first epoch).
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Epochs without validation improvement before stopping.
    pub patience: usize,
    /// Seed of initialisation, dropout and sampling.
    pub seed: u64,
    /// Train on every event (train + valid + test); no validation, runs `epochs`.
    pub all_events: bool,
    /// Exclude the user's earlier items (never the target) from the softmax,
    /// matching the history-masked evaluation and serving.
    pub mask_seen_in_loss: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Set to true (e.g. by ctrl-c) to stop after the current batch.
    pub stop: Option<Arc<AtomicBool>>,
    /// Stop training (keeping the best validated weights) once this many
    /// seconds have passed since the start of [`train`].
    pub time_budget: Option<f64>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            model: ModelConfig::default(),
            features: FeatureConfig::movielens(),
            ablation: Ablation::Full,
            epochs: 30,
            batch_size: 32,
            lr: 2e-3,
            weight_decay: 0.01,
            patience: 3,
            seed: 42,
            all_events: false,
            mask_seen_in_loss: true,
            progress: false,
            stop: None,
            time_budget: None,
        }
    }
}

/// Statistics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Validation NDCG@10 (masked), when validated.
    pub valid_ndcg10: Option<f64>,
    /// Validation HR@10 (masked), when validated.
    pub valid_hr10: Option<f64>,
    /// Seconds spent in this epoch's training steps.
    pub seconds: f64,
    /// Training targets per second.
    pub targets_per_second: f64,
}

/// What happened during training (stored in `model.json` under `training`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Per-epoch statistics.
    pub epochs: Vec<EpochStats>,
    /// Epoch whose weights were kept (1-based; 0 = initial weights).
    pub best_epoch: usize,
    /// Its validation NDCG@10, if validated.
    pub best_valid_ndcg10: Option<f64>,
    /// True when stopped by the stop flag (ctrl-c).
    pub interrupted: bool,
    /// True when training stopped because the time budget ran out.
    #[serde(default)]
    pub time_budget_hit: bool,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// Training sequences (users with ≥ 1 training event).
    pub users: usize,
    /// Training targets per epoch (approximate: window jitter varies).
    pub targets_per_epoch: usize,
    /// Parameter count.
    pub parameters: usize,
}

/// The output of [`train`].
#[derive(Debug)]
pub struct Trained {
    /// The model (best validation weights).
    pub model: ProfileModel,
    /// The report.
    pub report: TrainReport,
}

struct Example {
    tokens: UserTokens,
    /// (token position, target item, number of the user's events before the target)
    targets: Vec<(usize, u32, usize)>,
    /// The user's items in time order (for masking seen items in the loss).
    items: Arc<Vec<Option<u32>>>,
}

/// Input fields per dataset user (restricted to the schema's columns).
pub fn dataset_fields(schema: &FeatureSchema, dataset: &Dataset) -> Vec<UserFields> {
    dataset
        .users
        .iter()
        .map(|u| user_field_values(schema, u))
        .collect()
}

/// Deterministically shuffles the order of a user's events while keeping
/// the sorted timestamps in place (the `shuffled` ablation).
pub fn shuffle_sequence(events: &[ResolvedEvent], seed: u64, user: u32) -> Vec<ResolvedEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (u64::from(user) << 20) ^ 0x5eed);
    let mut perm: Vec<usize> = (0..events.len()).collect();
    perm.shuffle(&mut rng);
    events
        .iter()
        .zip(perm)
        .map(|(slot, src)| ResolvedEvent {
            item: events[src].item,
            rating: events[src].rating,
            timestamp: slot.timestamp,
        })
        .collect()
}

/// Training events of one sequence under the options (train only, or all).
fn fit_events(s: &UserSequence, all_events: bool) -> Vec<ResolvedEvent> {
    let mut ev = s.train.clone();
    if all_events {
        ev.extend(s.valid);
        ev.extend(s.test);
    }
    ev
}

/// Fits the schema for `dataset` under `opts` (vocabularies, statistics).
pub fn fit_schema(
    dataset: &Dataset,
    sequences: &[UserSequence],
    opts: &TrainOptions,
) -> Result<FeatureSchema> {
    let mut features = opts.features.clone();
    opts.ablation.apply(&mut features);
    let lengths: Vec<usize> = sequences
        .iter()
        .map(|s| fit_events(s, opts.all_events).len())
        .collect();
    features.fit(dataset, &lengths)
}

/// Metrics of a ranking evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RankMetrics {
    /// HR@10.
    pub hr10: f64,
    /// NDCG@10.
    pub ndcg10: f64,
    /// MRR@10.
    pub mrr10: f64,
    /// Users evaluated.
    pub users: usize,
}

/// Full-ranking metrics for (history, target) pairs: the rank of the target
/// counts every other item scoring ≥ it (ties against the target); with
/// `mask_history`, items of the history are excluded (the target never is).
pub fn rank_metrics(
    model: &ProfileModel,
    dataset_fields: &[UserFields],
    cases: &[(u32, Vec<ResolvedEvent>, u32)],
    mask_history: bool,
) -> Result<RankMetrics> {
    let tk = model.tokenizer();
    let items = model.item_vectors()?;
    let mut m = RankMetrics::default();
    for chunk in cases.chunks(256) {
        let mut toks = Vec::with_capacity(chunk.len());
        for (u, hist, _) in chunk {
            let f = dataset_fields.get(*u as usize).cloned().unwrap_or_default();
            toks.push(tk.tokenize_resolved(&f, hist)?);
        }
        let refs: Vec<&UserTokens> = toks.iter().collect();
        let prof = model.profiles(&refs)?;
        let scores = prof.matmul(&items.t()?)?.to_vec2::<f32>()?;
        for ((_, hist, target), row) in chunk.iter().zip(scores) {
            let target = *target as usize;
            let ts = row[target];
            let mut masked = vec![false; row.len()];
            if mask_history {
                for e in hist {
                    if let Some(i) = e.item {
                        masked[i as usize] = true;
                    }
                }
            }
            masked[target] = false;
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(i, &s)| i != target && !masked[i] && s >= ts)
                .count();
            if rank < 10 {
                m.hr10 += 1.0;
                m.ndcg10 += 1.0 / ((rank + 2) as f64).log2();
                m.mrr10 += 1.0 / (rank + 1) as f64;
            }
            m.users += 1;
        }
    }
    if m.users > 0 {
        let n = m.users as f64;
        m.hr10 /= n;
        m.ndcg10 /= n;
        m.mrr10 /= n;
    }
    Ok(m)
}

/// Validation cases (history = train events, target = validation event).
pub fn validation_cases(
    sequences: &[UserSequence],
    ablation: Ablation,
    seed: u64,
) -> Vec<(u32, Vec<ResolvedEvent>, u32)> {
    sequences
        .iter()
        .filter_map(|s| {
            let target = s.valid?.item?;
            let hist = if ablation == Ablation::Shuffled {
                shuffle_sequence(&s.train, seed, s.user)
            } else {
                s.train.clone()
            };
            Some((s.user, hist, target))
        })
        .collect()
}

/// Trains a model on `sequences` (item indexes = `dataset` item indexes).
pub fn train(
    dataset: &Dataset,
    sequences: &[UserSequence],
    opts: &TrainOptions,
) -> Result<Trained> {
    let start = Instant::now();
    if opts.batch_size == 0 || opts.epochs == 0 {
        return Err(Error::Train("batch size and epochs must be ≥ 1".into()));
    }
    let schema = fit_schema(dataset, sequences, opts)?;
    let fields = dataset_fields(&schema, dataset);
    let mut init_rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut sample_rng = ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(1));
    let mut dropout_rng = ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(2));
    let model = ProfileModel::new(schema, opts.model.clone(), &mut init_rng)?;
    let p = model.schema.fields.len();
    let w = model.schema.behaviour.max_events;

    let seqs: Vec<(u32, Vec<ResolvedEvent>)> = sequences
        .iter()
        .map(|s| {
            let ev = fit_events(s, opts.all_events);
            let ev = if opts.ablation == Ablation::Shuffled {
                shuffle_sequence(&ev, opts.seed, s.user)
            } else {
                ev
            };
            (s.user, ev)
        })
        .filter(|(_, ev)| ev.len() >= 2 || (p > 0 && !ev.is_empty()))
        .collect();
    if seqs.is_empty() {
        return Err(Error::Train("no user has enough training events".into()));
    }
    let valid = if opts.all_events {
        Vec::new()
    } else {
        validation_cases(sequences, opts.ablation, opts.seed)
    };

    let mut opt = AdamW::new(
        model.vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let tk = model.tokenizer();
    let mut report = TrainReport {
        epochs: Vec::new(),
        best_epoch: 0,
        best_valid_ndcg10: None,
        interrupted: false,
        time_budget_hit: false,
        seconds: 0.0,
        users: seqs.len(),
        targets_per_epoch: seqs.iter().map(|(_, e)| e.len()).sum(),
        parameters: model.parameter_count(),
    };
    let mut best: Option<(f64, BTreeMap<String, Tensor>)> = None;
    let mut since_best = 0usize;
    let mut step = 0usize;
    let mut warmup_steps = 1usize;
    let stopped = |o: &TrainOptions| o.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));

    for epoch in 1..=opts.epochs {
        // Build this epoch's examples.
        let mut windows: Vec<Example> = Vec::new();
        let mut cold: Vec<Example> = Vec::new();
        for (u, ev) in &seqs {
            let f = fields.get(*u as usize).cloned().unwrap_or_default();
            let n = ev.len();
            let items: Arc<Vec<Option<u32>>> = Arc::new(ev.iter().map(|e| e.item).collect());
            if p > 0
                && let Some(item) = ev[0].item
            {
                cold.push(Example {
                    tokens: tk.tokenize_resolved(&f, &[])?,
                    targets: vec![(p - 1, item, 0)],
                    items: items.clone(),
                });
            }
            let mut ends = Vec::new();
            if n >= 2 {
                ends.push(n - 1);
                let s = sample_rng.random_range(1..=w);
                let mut e = (n - 1) as i64 - s as i64;
                while e >= 1 {
                    ends.push(e as usize);
                    e -= w as i64;
                }
            }
            for e in ends {
                let tokens = tk.tokenize_resolved(&f, &ev[..e])?;
                let l = tokens.events.len();
                let first = e - l;
                let targets: Vec<(usize, u32, usize)> = (0..l)
                    .filter_map(|t| ev[first + t + 1].item.map(|it| (p + t, it, first + t + 1)))
                    .collect();
                if !targets.is_empty() {
                    windows.push(Example {
                        tokens,
                        targets,
                        items: items.clone(),
                    });
                }
            }
        }
        windows.shuffle(&mut sample_rng);
        cold.shuffle(&mut sample_rng);
        let mut batches: Vec<Vec<Example>> = Vec::new();
        let mut it = windows.into_iter().peekable();
        while it.peek().is_some() {
            batches.push(it.by_ref().take(opts.batch_size).collect());
        }
        let cold_bs = opts.batch_size * 8;
        let mut it = cold.into_iter().peekable();
        while it.peek().is_some() {
            batches.push(it.by_ref().take(cold_bs).collect());
        }
        batches.shuffle(&mut sample_rng);
        if epoch == 1 {
            warmup_steps = batches.len().max(1);
        }
        let total_targets: usize = batches
            .iter()
            .map(|b| b.iter().map(|e| e.targets.len()).sum::<usize>())
            .sum();

        let pb = if opts.progress {
            let pb = ProgressBar::new(total_targets as u64);
            pb.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {percent:>3}% {msg} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            pb.set_prefix(format!("epoch {epoch}/{}", opts.epochs));
            pb
        } else {
            ProgressBar::hidden()
        };
        let t0 = Instant::now();
        let (mut loss_sum, mut loss_n, mut done) = (0.0f64, 0usize, 0usize);
        for batch in &batches {
            if stopped(opts) {
                report.interrupted = true;
            }
            if opts
                .time_budget
                .is_some_and(|b| start.elapsed().as_secs_f64() > b)
            {
                report.time_budget_hit = true;
            }
            if report.interrupted || report.time_budget_hit {
                // Validate what this partial epoch learned, then stop.
                break;
            }
            step += 1;
            // Linear warm-up over the first epoch, then cosine decay to
            // 10 % of the peak at the last allowed epoch.
            let total = (warmup_steps * opts.epochs).max(1) as f64;
            let progress = (step as f64 / total).min(1.0);
            let lr = opts.lr
                * (step as f64 / warmup_steps as f64).min(1.0)
                * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            opt.set_learning_rate(lr);
            let loss = batch_loss(
                &model,
                batch,
                opts.mask_seen_in_loss,
                Some(&mut dropout_rng),
            )?;
            opt.backward_step(&loss)?;
            let lv = f64::from(loss.to_scalar::<f32>()?);
            if !lv.is_finite() {
                return Err(Error::Train(format!("loss became {lv} at epoch {epoch}")));
            }
            let k: usize = batch.iter().map(|e| e.targets.len()).sum();
            loss_sum += lv * k as f64;
            loss_n += k;
            done += k;
            pb.set_position(done as u64);
            let el = t0.elapsed().as_secs_f64().max(1e-9);
            pb.set_message(format!(
                "loss {:.4} · {:.0} ex/s",
                loss_sum / loss_n.max(1) as f64,
                done as f64 / el
            ));
        }
        let secs = t0.elapsed().as_secs_f64();
        let mut stats = EpochStats {
            epoch,
            loss: loss_sum / loss_n.max(1) as f64,
            valid_ndcg10: None,
            valid_hr10: None,
            seconds: secs,
            targets_per_second: done as f64 / secs.max(1e-9),
        };
        if !valid.is_empty() {
            let m = rank_metrics(&model, &fields, &valid, true)?;
            stats.valid_ndcg10 = Some(m.ndcg10);
            stats.valid_hr10 = Some(m.hr10);
            let improved = best.as_ref().is_none_or(|(b, _)| m.ndcg10 > *b);
            if improved {
                best = Some((m.ndcg10, snapshot(&model)?));
                report.best_epoch = epoch;
                report.best_valid_ndcg10 = Some(m.ndcg10);
                since_best = 0;
            } else {
                since_best += 1;
            }
            let msg = format!(
                "loss {:.4} · {:.0} ex/s · valid NDCG@10 {:.4} HR@10 {:.4}{}",
                stats.loss,
                stats.targets_per_second,
                m.ndcg10,
                m.hr10,
                if improved { " *" } else { "" }
            );
            if opts.progress && pb.is_hidden() {
                eprintln!("epoch {epoch}/{}: {msg}", opts.epochs);
            }
            pb.finish_with_message(msg);
        } else {
            report.best_epoch = epoch;
            pb.finish_with_message(format!("loss {:.4}", stats.loss));
        }
        report.epochs.push(stats);
        if (!valid.is_empty() && since_best >= opts.patience)
            || report.interrupted
            || report.time_budget_hit
        {
            break;
        }
    }
    if let Some((_, weights)) = best {
        restore(&model, &weights)?;
    } else if report.interrupted && report.epochs.is_empty() {
        report.best_epoch = 0;
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(Trained { model, report })
}

fn snapshot(model: &ProfileModel) -> Result<BTreeMap<String, Tensor>> {
    model
        .tensors()
        .into_iter()
        .map(|(k, t)| Ok((k, t.copy()?)))
        .collect()
}

fn restore(model: &ProfileModel, weights: &BTreeMap<String, Tensor>) -> Result<()> {
    let vars: Vec<Var> = model.vars();
    for ((name, _), var) in model.tensors().into_iter().zip(vars) {
        if let Some(t) = weights.get(&name) {
            var.set(t)?;
        }
    }
    Ok(())
}

fn batch_loss(
    model: &ProfileModel,
    batch: &[Example],
    mask_seen: bool,
    rng: Option<&mut ChaCha8Rng>,
) -> Result<Tensor> {
    let refs: Vec<&UserTokens> = batch.iter().map(|e| &e.tokens).collect();
    let (hidden, t) = model.encode(&refs, rng)?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let n_items = model.schema.items.ids.len();
    let mut mask: Vec<f32> = Vec::new();
    for (b, e) in batch.iter().enumerate() {
        for &(pos, item, seen) in &e.targets {
            rows.push((b * t + pos) as u32);
            targets.push(item);
            if mask_seen {
                let base = mask.len();
                mask.resize(base + n_items, 0.0);
                for it in e.items[..seen].iter().flatten() {
                    if *it != item {
                        mask[base + *it as usize] = crate::model::MASK_VALUE;
                    }
                }
            }
        }
    }
    let k = rows.len();
    let dev = model.device();
    let rows = Tensor::from_vec(rows, k, dev)?;
    let targets = Tensor::from_vec(targets, k, dev)?;
    let prof = model.head(&hidden.index_select(&rows, 0)?)?;
    let items = model.item_vectors()?;
    let mut logits = (prof.matmul(&items.t()?)? / model.config.temperature)?;
    if mask_seen {
        logits = (logits + Tensor::from_vec(mask, (k, n_items), dev)?)?;
    }
    Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{SyntheticConfig, generate};

    fn tiny_opts(seed: u64) -> TrainOptions {
        TrainOptions {
            model: ModelConfig {
                d_model: 32,
                heads: 2,
                ffn: 64,
                d_out: 32,
                ..ModelConfig::default()
            },
            epochs: 6,
            patience: 10,
            batch_size: 16,
            lr: 3e-3,
            seed,
            ..TrainOptions::default()
        }
    }

    #[test]
    fn same_seed_gives_bit_identical_weights() {
        // (That training beats MostPop is tested in tests/learning.rs on the protocol split.)
        let ds = generate(&SyntheticConfig::small(11));
        let seqs = leave_one_out(&ds);
        let opts = TrainOptions {
            epochs: 2,
            ..tiny_opts(1)
        };
        let a = train(&ds, &seqs, &opts).expect("train a");
        let b = train(&ds, &seqs, &opts).expect("train b");
        assert!(a.report.best_valid_ndcg10.is_some());
        // Same seed and thread count: bit-identical weights.
        let (ta, tb) = (a.model.tensors(), b.model.tensors());
        assert_eq!(ta.len(), tb.len());
        for (name, t) in &ta {
            let x = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("a");
            let y = tb[name]
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("b");
            assert!(
                x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "tensor {name} differs between identical runs"
            );
        }
        assert_eq!(a.report.epochs.len(), b.report.epochs.len());
        // A different seed gives different weights.
        let c = train(
            &ds,
            &seqs,
            &TrainOptions {
                epochs: 1,
                ..tiny_opts(2)
            },
        )
        .expect("train c");
        let x = ta["head.weight"]
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("x");
        let z = c.model.tensors()["head.weight"]
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("z");
        assert_ne!(x, z);
    }

    #[test]
    fn users_without_events_and_behaviour_only_models_work() {
        let ds = generate(&SyntheticConfig::small(12));
        let seqs = leave_one_out(&ds);
        let opts = TrainOptions {
            epochs: 1,
            ..tiny_opts(3)
        };
        let t = train(&ds, &seqs, &opts).expect("train");
        let tk = t.model.tokenizer();
        let fields = dataset_fields(&t.model.schema, &ds);
        let cold = tk.tokenize_resolved(&fields[0], &[]).expect("tokens");
        let p = t
            .model
            .profiles(&[&cold])
            .expect("profile")
            .to_vec2::<f32>()
            .expect("vec");
        let norm: f32 = p[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");

        let opts = TrainOptions {
            epochs: 1,
            ablation: Ablation::BehaviourOnly,
            ..tiny_opts(3)
        };
        let t = train(&ds, &seqs, &opts).expect("train behaviour-only");
        assert!(t.model.schema.fields.is_empty());
        let tk = t.model.tokenizer();
        assert!(tk.tokenize_resolved(&BTreeMap::new(), &[]).is_err());
    }
}
