//! Glue between the evaluation protocol ([`crate::eval`]) and the trainer:
//! the model's view of a split, the model as an [`eval::Scorer`], and the
//! whole `train → evaluate → model.json` run used by `profilectl train`.

use std::path::Path;

use serde_json::json;

use crate::data::{Dataset, Interaction};
use crate::error::{Error, Result};
use crate::eval::{self, Event, Scorer, Split, SplitRecord, Stage};
use crate::export::{ExportInfo, ModelJson, model_json};
use crate::model::ProfileModel;
use crate::schema::{ResolvedEvent, Tokenizer, UserTokens};
use crate::trainer::{
    Ablation, TrainOptions, Trained, UserFields, UserSequence, dataset_fields, shuffle_sequence,
};

/// The model's view of a split: the item universe is the split's candidate
/// items (model item `k` = dataset item `split.items[k]`), users keep their
/// dataset indexes, interactions are the split's filtered events.
#[derive(Debug, Clone)]
pub struct ModelView {
    /// Restricted, re-indexed dataset (items in `split.items` order).
    pub dataset: Dataset,
    /// Per evaluable user: train / validation / test in model item indexes.
    pub sequences: Vec<UserSequence>,
    /// Dataset item index → model item index.
    pub item_map: Vec<Option<u32>>,
}

/// Builds the [`ModelView`] of `split` over `ds`.
pub fn model_view(ds: &Dataset, split: &Split) -> ModelView {
    let mut item_map = vec![None; ds.items.len()];
    for (k, &i) in split.items.iter().enumerate() {
        if let Some(m) = item_map.get_mut(i as usize) {
            *m = Some(k as u32);
        }
    }
    let items = split
        .items
        .iter()
        .filter_map(|&i| ds.items.get(i as usize).cloned())
        .collect();
    let conv = |e: &Event| ResolvedEvent {
        item: item_map.get(e.item as usize).copied().flatten(),
        timestamp: e.timestamp,
        rating: e.rating,
    };
    let mut interactions = Vec::new();
    let mut sequences = Vec::new();
    for u in &split.users {
        for e in &u.events {
            if let Some(Some(k)) = item_map.get(e.item as usize) {
                interactions.push(Interaction {
                    user: u.user,
                    item: *k,
                    rating: e.rating,
                    timestamp: e.timestamp,
                });
            }
        }
        sequences.push(UserSequence {
            user: u.user,
            train: u.train().iter().map(conv).collect(),
            valid: u.valid().map(conv),
            test: u.test().map(conv),
        });
    }
    ModelView {
        dataset: Dataset {
            name: ds.name.clone(),
            users: ds.users.clone(),
            items,
            interactions,
        },
        sequences,
        item_map,
    }
}

/// A trained model as an evaluation [`Scorer`] over the original dataset.
#[derive(Debug)]
pub struct ModelScorer<'a> {
    name: String,
    model: &'a ProfileModel,
    fields: Vec<UserFields>,
    tokenizer: Tokenizer,
    /// Dataset item → model item.
    item_map: Vec<Option<u32>>,
    /// Model item → dataset item.
    out_rows: Vec<Option<usize>>,
    items: Vec<Vec<f32>>,
    shuffle_seed: Option<u64>,
}

impl<'a> ModelScorer<'a> {
    /// Scores `ds` items with `model`; items are matched by original id.
    /// With `Ablation::Shuffled` in `meta.training.ablation`, histories are
    /// shuffled exactly as in training (seed from `meta.training.seed`).
    pub fn new(
        name: &str,
        model: &'a ProfileModel,
        meta: Option<&ModelJson>,
        ds: &Dataset,
    ) -> Result<Self> {
        let tokenizer = model.tokenizer();
        let item_map: Vec<Option<u32>> = ds
            .items
            .iter()
            .map(|i| tokenizer.item_index(&i.id))
            .collect();
        let mut out_rows = vec![None; model.schema.items.ids.len()];
        for (d, m) in item_map.iter().enumerate() {
            if let Some(m) = m {
                out_rows[*m as usize] = Some(d);
            }
        }
        let items = model.item_vectors()?.to_vec2::<f32>()?;
        let shuffle_seed = meta.and_then(|m| {
            let t = &m.training;
            (t.get("ablation").and_then(|a| a.as_str()) == Some("shuffled"))
                .then(|| t.get("seed").and_then(|s| s.as_u64()).unwrap_or(0))
        });
        Ok(ModelScorer {
            name: name.to_string(),
            model,
            fields: dataset_fields(&model.schema, ds),
            tokenizer,
            item_map,
            out_rows,
            items,
            shuffle_seed,
        })
    }

    fn tokens(&self, user: u32, history: &[Event]) -> Result<UserTokens> {
        let ev: Vec<ResolvedEvent> = history
            .iter()
            .map(|e| ResolvedEvent {
                item: self.item_map.get(e.item as usize).copied().flatten(),
                timestamp: e.timestamp,
                rating: e.rating,
            })
            .collect();
        let ev = match self.shuffle_seed {
            Some(seed) => shuffle_sequence(&ev, seed, user),
            None => ev,
        };
        let none = UserFields::new();
        let f = self.fields.get(user as usize).unwrap_or(&none);
        Ok(self.tokenizer.tokenize_resolved(f, &ev)?)
    }
}

impl Scorer for ModelScorer<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn score_all(&self, user: u32, history: &[Event], out: &mut [f32]) -> Result<()> {
        let tokens = self.tokens(user, history)?;
        let p = self.model.profiles(&[&tokens])?.to_vec2::<f32>()?;
        let p = p
            .first()
            .ok_or_else(|| Error::Eval("empty profile".into()))?;
        out.iter_mut().for_each(|s| *s = f32::NEG_INFINITY);
        for (k, v) in self.items.iter().enumerate() {
            if let Some(Some(d)) = self.out_rows.get(k)
                && let Some(o) = out.get_mut(*d)
            {
                *o = p.iter().zip(v).map(|(a, b)| a * b).sum::<f32>()
                    / self.model.config.temperature as f32;
            }
        }
        Ok(())
    }
}

/// Reads the split record stored in `model.json` (`split.record`).
pub fn split_record(meta: &ModelJson) -> Option<SplitRecord> {
    meta.split
        .get("record")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
}

/// Provenance recorded with a run.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// Model name.
    pub name: String,
    /// Where the dataset came from (name or path).
    pub source: String,
    /// Threads used by the tensor library.
    pub threads: usize,
}

/// Trains on `split` of `ds` (train part, or everything with `all_events`),
/// evaluates validation (and test, unless `all_events`) with the protocol,
/// and assembles `model.json`.
pub fn train_and_describe(
    ds: &Dataset,
    split: &Split,
    opts: &TrainOptions,
    info: &RunInfo,
) -> Result<(Trained, ModelJson)> {
    let view = model_view(ds, split);
    let trained = crate::trainer::train(&view.dataset, &view.sequences, opts)?;
    let meta = describe(ds, split, &view, &trained, opts, info)?;
    Ok((trained, meta))
}

/// Evaluates a trained model and assembles its `model.json`.
pub fn describe(
    ds: &Dataset,
    split: &Split,
    view: &ModelView,
    trained: &Trained,
    opts: &TrainOptions,
    info: &RunInfo,
) -> Result<ModelJson> {
    let training = json!({
        "seed": opts.seed,
        "threads": info.threads,
        "ablation": opts.ablation,
        "all_events": opts.all_events,
        "epochs_max": opts.epochs,
        "batch_size": opts.batch_size,
        "lr": opts.lr,
        "weight_decay": opts.weight_decay,
        "patience": opts.patience,
        "time_budget_seconds": opts.time_budget,
        "mask_seen_in_loss": opts.mask_seen_in_loss,
        "dropout": opts.model.dropout,
        "optimizer": "adamw",
        "loss": "full_softmax_cross_entropy",
        "trainer": format!("profiled-train {}", env!("CARGO_PKG_VERSION")),
        "created_unix": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        "report": trained.report,
    });
    let mut metrics = serde_json::Map::new();
    let scorer = ModelScorer::new("model", &trained.model, None, ds)?;
    // The shuffled ablation scores with shuffled histories.
    let scorer = if opts.ablation == Ablation::Shuffled {
        ModelScorer {
            shuffle_seed: Some(opts.seed),
            ..scorer
        }
    } else {
        scorer
    };
    let stages: &[Stage] = if opts.all_events {
        &[]
    } else {
        &[Stage::Valid, Stage::Test]
    };
    for &stage in stages {
        let r = eval::evaluate(split, ds.items.len(), &scorer, stage)?;
        let key = match stage {
            Stage::Valid => "valid",
            Stage::Test => "test",
        };
        metrics.insert(
            key.into(),
            json!({
                "users": r.users,
                "k": r.k,
                "masked": {"hr@10": r.masked.hr, "ndcg@10": r.masked.ndcg, "mrr@10": r.masked.mrr},
                "unmasked": {"hr@10": r.unmasked.hr, "ndcg@10": r.unmasked.ndcg, "mrr@10": r.unmasked.mrr},
            }),
        );
    }
    let record = split.record(ds);
    let export = ExportInfo {
        name: info.name.clone(),
        dataset: json!({
            "name": ds.name,
            "source": info.source,
            "users": ds.users.len(),
            "items": ds.items.len(),
            "interactions": ds.interactions.len(),
            "model_items": view.dataset.items.len(),
        }),
        training,
        split: json!({
            "all_events": opts.all_events,
            "fitted_on": if opts.all_events { "train+valid+test" } else { "train" },
            "record": record,
        }),
        metrics: serde_json::Value::Object(metrics),
    };
    model_json(&trained.model, &view.dataset, export)
}

/// Writes a trained model as the next version under `root`.
pub fn write(
    root: &Path,
    trained: &Trained,
    meta: ModelJson,
    f16: bool,
) -> Result<(u32, std::path::PathBuf)> {
    crate::export::write_version(root, &trained.model, meta, f16)
}

/// Threads the tensor library uses (`RAYON_NUM_THREADS`, else physical cores).
pub fn tensor_threads() -> usize {
    candle_core::utils::get_num_threads()
}
