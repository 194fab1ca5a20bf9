//! Model files: export (temp + rename, never overwrite), reload, f16, the
//! all-events marker, and parity with the numpy reference forward
//! (`examples/reference_forward.py`, run with `$PROFILED_TEST_PYTHON`).

use std::path::{Path, PathBuf};
use std::process::Command;

use profiled_train::eval::{ProtocolConfig, Split};
use profiled_train::export::{self, ModelJson};
use profiled_train::model::ModelConfig;
use profiled_train::pipeline::{self, RunInfo, split_record};
use profiled_train::synthetic::{SyntheticConfig, generate};
use profiled_train::trainer::{TrainOptions, Trained};

fn tiny(all_events: bool) -> (Trained, ModelJson) {
    let ds = generate(&SyntheticConfig::small(21));
    let split = Split::new(&ds, ProtocolConfig::default()).expect("split");
    let opts = TrainOptions {
        model: ModelConfig {
            d_model: 32,
            heads: 2,
            ffn: 64,
            d_out: 32,
            ..ModelConfig::default()
        },
        epochs: 2,
        batch_size: 16,
        seed: 5,
        all_events,
        ..TrainOptions::default()
    };
    let info = RunInfo {
        name: "tiny".into(),
        source: "synthetic".into(),
        threads: pipeline::tensor_threads(),
    };
    pipeline::train_and_describe(&ds, &split, &opts, &info).expect("train")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn recomputed_min_cosine(dir: &Path) -> f64 {
    let (model, meta) = export::load_version(dir).expect("load");
    let goldens = export::golden_examples(
        &model,
        meta.golden
            .iter()
            .map(|g| (g.note.clone(), g.input.clone()))
            .collect(),
    )
    .expect("recompute");
    meta.golden
        .iter()
        .zip(goldens)
        .map(|(want, got)| cosine(&want.profile, &got.profile))
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn export_writes_new_versions_and_never_overwrites() {
    let (trained, meta) = tiny(false);
    assert!(
        meta.golden.len() >= 16,
        "{} golden examples",
        meta.golden.len()
    );
    assert!(!export::saw_all_events(&meta));
    assert!(meta.metrics.get("test").is_some());
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("tiny");
    let (v1, d1) = pipeline::write(&root, &trained, meta.clone(), false).expect("write 1");
    let (v2, d2) = pipeline::write(&root, &trained, meta.clone(), false).expect("write 2");
    assert_eq!((v1, v2), (1, 2));
    let before = std::fs::read(d1.join(export::WEIGHTS_FILE)).expect("read v1");
    // A foreign version 7 is skipped over and left untouched.
    std::fs::create_dir_all(root.join("7")).expect("mkdir 7");
    std::fs::write(root.join("7/marker"), b"keep").expect("marker");
    let (v8, d8) = pipeline::write(&root, &trained, meta.clone(), true).expect("write f16");
    assert_eq!(v8, 8);
    assert_eq!(
        std::fs::read(root.join("7/marker")).expect("marker"),
        b"keep"
    );
    assert_eq!(
        std::fs::read(d1.join(export::WEIGHTS_FILE)).expect("v1"),
        before
    );
    // No temporary folders left behind; version numbers recorded inside.
    let names: Vec<String> = std::fs::read_dir(&root)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".tmp")), "{names:?}");
    assert_eq!(export::read_metadata(&d2).expect("meta").version, 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&d2.join(export::WEIGHTS_FILE)), 0o644);
        assert_eq!(mode(&d2.join(export::METADATA_FILE)), 0o644);
        assert_eq!(mode(&d2), 0o755);
    }
    let m8 = export::read_metadata(&d8).expect("meta 8");
    assert_eq!((m8.version, m8.dtype.as_str()), (8, "f16"));
    // Reloading reproduces the golden vectors: exactly (f32), closely (f16).
    assert!(recomputed_min_cosine(&d1) >= 0.999_999);
    assert!(recomputed_min_cosine(&d8) >= 0.999);
    assert_eq!(export::resolve_version_dir(&root).expect("latest"), d8);
}

#[test]
fn all_events_models_are_marked_and_refused_by_the_protocol() {
    let (_, meta) = tiny(true);
    assert!(export::saw_all_events(&meta));
    assert!(meta.metrics.get("test").is_none());
    let ds = generate(&SyntheticConfig::small(21));
    let split = Split::new(&ds, ProtocolConfig::default()).expect("split");
    let record = split_record(&meta);
    assert!(record.is_some());
    assert!(
        split
            .check_model(&ds, record.as_ref(), export::saw_all_events(&meta))
            .is_err()
    );
    let (_, honest) = tiny(false);
    assert!(
        split
            .check_model(
                &ds,
                split_record(&honest).as_ref(),
                export::saw_all_events(&honest)
            )
            .is_ok()
    );
}

fn python() -> PathBuf {
    let p = std::env::var_os("PROFILED_TEST_PYTHON").unwrap_or_else(|| {
        panic!(
            "PROFILED_TEST_PYTHON is not set: run the suite with tests/run \
             (it creates .venv with numpy + safetensors via tests/setup-python and sets it)"
        )
    });
    let p = PathBuf::from(p);
    assert!(
        p.exists(),
        "PROFILED_TEST_PYTHON={} does not exist: run tests/setup-python",
        p.display()
    );
    p
}

#[test]
fn numpy_reference_forward_reproduces_every_golden_vector() {
    let py = python();
    let (trained, meta) = tiny(false);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, dir) = pipeline::write(&tmp.path().join("tiny"), &trained, meta, false).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/reference_forward.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg(&dir)
        .arg("--min-cosine")
        .arg("0.9999")
        .output()
        .expect("run the reference forward");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "reference forward failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().expect("summary line");
    let v: serde_json::Value = serde_json::from_str(last).expect("summary JSON");
    assert!(v["examples"].as_u64().expect("examples") >= 16, "{last}");
    assert!(
        v["min_cosine"].as_f64().expect("min_cosine") >= 0.9999,
        "{last}"
    );
}
