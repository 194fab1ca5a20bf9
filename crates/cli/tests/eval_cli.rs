//! `profilectl eval` and `profilectl data fetch` end to end: baselines on a
//! folder of atomic files, a tiny trained model, the refusal of a model that
//! saw the test events, and fetch errors without network.

use std::path::Path;
use std::process::{Command, Output};

use profiled_train::eval::{ProtocolConfig, Split};
use profiled_train::model::ModelConfig;
use profiled_train::pipeline::{self, RunInfo};
use profiled_train::synthetic::{SyntheticConfig, generate};
use profiled_train::trainer::TrainOptions;

fn profilectl(args: &[&str], extra: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_profilectl"))
        .args(args)
        .args(extra)
        .output()
        .expect("run profilectl")
}

fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "profilectl failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("output");
    serde_json::from_str(last).expect("last line is JSON")
}

/// Writes a dataset as RecBole atomic files (only `.inter`).
fn write_atomic(dir: &Path, ds: &profiled_train::data::Dataset) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut s = String::from("user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n");
    for x in &ds.interactions {
        s.push_str(&format!(
            "{}\t{}\t{}\t{}\r\n",
            ds.users[x.user as usize].id,
            ds.items[x.item as usize].id,
            x.rating.unwrap_or(5.0),
            x.timestamp
        ));
    }
    let name = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    std::fs::write(dir.join(format!("{name}.inter")), s).expect("write");
}

#[test]
fn baselines_only_on_a_folder_of_atomic_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("synth");
    write_atomic(&dir, &generate(&SyntheticConfig::small(4)));
    let v = last_json(&profilectl(
        &["eval", "--baselines-only", "--json", "--dataset"],
        &[&dir],
    ));
    for variant in ["masked", "unmasked"] {
        for name in ["mostpop", "transition", "item-knn"] {
            for m in ["hr@10", "ndcg@10", "mrr@10"] {
                let x = v[variant][name][m].as_f64().expect("metric");
                assert!((0.0..=1.0).contains(&x), "{variant} {name} {m} = {x}");
            }
        }
    }
    assert!(v["users"].as_u64().expect("users") > 100);
    assert_eq!(v["users_too_short"].as_u64(), Some(0));
}

#[test]
fn model_is_evaluated_and_all_events_models_are_refused() {
    let ds = generate(&SyntheticConfig::small(5));
    let split = Split::new(&ds, ProtocolConfig::default()).expect("split");
    let mut opts = TrainOptions {
        model: ModelConfig {
            d_model: 16,
            heads: 2,
            layers: 1,
            ffn: 32,
            d_out: 16,
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
    let root = tempfile::tempdir().expect("tmp");
    let (trained, meta) = pipeline::train_and_describe(&ds, &split, &opts, &info).expect("train");
    let (_, dir) = pipeline::write(&root.path().join("ok"), &trained, meta, false).expect("write");
    let v = last_json(&profilectl(
        &[
            "eval",
            "--json",
            "--dataset",
            "synthetic-small:5",
            "--model",
        ],
        &[&dir],
    ));
    for variant in ["masked", "unmasked"] {
        let x = v[variant]["model"]["ndcg@10"].as_f64().expect("model ndcg");
        assert!((0.0..=1.0).contains(&x));
        assert!(v[variant]["mostpop"]["ndcg@10"].as_f64().is_some());
    }

    // A different dataset (seed) is a different split: refused.
    let out = profilectl(
        &["eval", "--dataset", "synthetic-small:6", "--model"],
        &[&dir],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("different split"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    opts.all_events = true;
    let (trained, meta) = pipeline::train_and_describe(&ds, &split, &opts, &info).expect("train");
    let (_, dir) = pipeline::write(&root.path().join("all"), &trained, meta, false).expect("write");
    let out = profilectl(
        &["eval", "--dataset", "synthetic-small:5", "--model"],
        &[&dir],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("all-events"), "{err}");
}

#[test]
fn fetch_without_python_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = profilectl(
        &[
            "data",
            "fetch",
            "ml-100k",
            "--quiet",
            "--python",
            "/nonexistent/python3",
            "--data-dir",
        ],
        &[tmp.path()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found") && err.contains("pip"), "{err}");
    assert!(!tmp.path().join("ml-100k").exists());
}
