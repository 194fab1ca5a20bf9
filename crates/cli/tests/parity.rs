//! CI parity: train a tiny model on the small synthetic dataset with the
//! trainer, export it as f32 and f16, and run `profilectl parity` on both —
//! the serving encoder must match the candle forward on every user and every
//! kernel path (min cosine ≥ 0.9999 for f32, ≥ 0.999 for f16).

use std::process::Command;

use profiled_train::eval::{ProtocolConfig, Split};
use profiled_train::model::ModelConfig;
use profiled_train::pipeline::{self, RunInfo};
use profiled_train::synthetic::{SyntheticConfig, generate};
use profiled_train::trainer::TrainOptions;

#[test]
fn parity_on_a_tiny_synthetic_model() {
    let ds = generate(&SyntheticConfig::small(5));
    let split = Split::new(&ds, ProtocolConfig::default()).expect("split");
    let opts = TrainOptions {
        model: ModelConfig {
            d_model: 32,
            heads: 2,
            layers: 2,
            ffn: 64,
            d_out: 32,
            ..ModelConfig::default()
        },
        epochs: 1,
        batch_size: 64,
        ..TrainOptions::default()
    };
    let info = RunInfo {
        name: "tiny".into(),
        source: "synthetic-small:5".into(),
        threads: 1,
    };
    let (trained, meta) = pipeline::train_and_describe(&ds, &split, &opts, &info).expect("train");
    let root = tempfile::tempdir().expect("tmp");
    let (_, f32_dir) =
        pipeline::write(root.path(), &trained, meta.clone(), false).expect("write f32");
    let (_, f16_dir) = pipeline::write(root.path(), &trained, meta, true).expect("write f16");
    for (dir, threshold) in [(f32_dir, 0.9999), (f16_dir, 0.999)] {
        let out = Command::new(env!("CARGO_BIN_EXE_profilectl"))
            .args(["parity", "--json", "--model"])
            .arg(&dir)
            .output()
            .expect("run profilectl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "parity failed for {}:\n{stdout}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let last = stdout.lines().last().expect("output");
        let v: serde_json::Value = serde_json::from_str(last).expect("json line");
        let min = v["min_cosine"].as_f64().expect("min_cosine");
        let users = v["users"].as_u64().expect("users");
        assert!(min >= threshold, "{}: min cosine {min}", dir.display());
        assert!(v["mean_cosine"].as_f64().expect("mean") >= min);
        assert!(users >= 100, "{users} users");
        // Profiles must differ between users for the figures to mean anything.
        let pairwise = v["pairwise_mean_cosine"].as_f64().expect("pairwise");
        assert!(
            pairwise < 0.99,
            "profiles barely depend on the user: {pairwise}"
        );
        eprintln!("{stdout}");
    }
}
