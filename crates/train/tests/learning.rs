//! A tiny training run on synthetic data learns: with the evaluation
//! protocol's own split and metrics, the model beats MostPop on the test
//! targets (history masked).

use profiled_train::eval::baselines::MostPop;
use profiled_train::eval::{ProtocolConfig, Split, Stage, evaluate};
use profiled_train::model::ModelConfig;
use profiled_train::pipeline::{self, ModelScorer, RunInfo};
use profiled_train::synthetic::{SyntheticConfig, generate};
use profiled_train::trainer::TrainOptions;

#[test]
fn tiny_synthetic_run_beats_most_popular_on_the_protocol_split() {
    let ds = generate(&SyntheticConfig::small(11));
    let split = Split::new(&ds, ProtocolConfig::default()).expect("split");
    let opts = TrainOptions {
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
        seed: 1,
        ..TrainOptions::default()
    };
    let info = RunInfo {
        name: "tiny".into(),
        source: "synthetic".into(),
        threads: pipeline::tensor_threads(),
    };
    let (trained, meta) = pipeline::train_and_describe(&ds, &split, &opts, &info).expect("train");
    let scorer = ModelScorer::new("model", &trained.model, Some(&meta), &ds).expect("scorer");
    let model = evaluate(&split, ds.items.len(), &scorer, Stage::Test).expect("eval model");
    let pop = MostPop::fit(&split, ds.items.len(), Stage::Test);
    let pop = evaluate(&split, ds.items.len(), &pop, Stage::Test).expect("eval mostpop");
    eprintln!(
        "test NDCG@10 masked: model {:.4}, MostPop {:.4} ({} users)",
        model.masked.ndcg, pop.masked.ndcg, model.users
    );
    assert_eq!(model.users, pop.users);
    assert!(model.users > 100);
    assert!(
        model.masked.ndcg > pop.masked.ndcg,
        "model {} ≤ MostPop {}",
        model.masked.ndcg,
        pop.masked.ndcg
    );
    // model.json records the same numbers the protocol computes.
    let recorded = meta.metrics["test"]["masked"]["ndcg@10"]
        .as_f64()
        .expect("recorded metric");
    assert!((recorded - model.masked.ndcg).abs() < 1e-12);
}
