//! `profilectl index build` on a tiny synthetic model: both index files are
//! written next to the model, reopen with `IndexFile::open`, hold the
//! dataset's ids and attributes, their vectors are the serving encoder's
//! item vectors and user profiles (within f16 rounding), and a second build
//! refuses to overwrite them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use profiled_index::{IndexFile, ann};
use profiled_model::{Encoder, Event, FieldValue as ModelValue, UserFeatures, Workspace};
use profiled_train::data::{Dataset, FieldValue};
use profiled_train::eval::{ProtocolConfig, Split};
use profiled_train::model::ModelConfig;
use profiled_train::pipeline::{self, RunInfo};
use profiled_train::synthetic::{SyntheticConfig, generate};
use profiled_train::trainer::TrainOptions;

/// Trains the tiny model of the parity test and writes it (f32) under `root`.
fn tiny_model(ds: &Dataset, root: &Path) -> std::path::PathBuf {
    let split = Split::new(ds, ProtocolConfig::default()).expect("split");
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
    let (trained, meta) = pipeline::train_and_describe(ds, &split, &opts, &info).expect("train");
    let (_, dir) = pipeline::write(root, &trained, meta, false).expect("write");
    dir
}

fn build(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_profilectl"))
        .args([
            "index",
            "build",
            "--dataset",
            "synthetic-small:5",
            "--threads",
            "2",
        ])
        .args(extra)
        .arg("--model")
        .arg(dir)
        .output()
        .expect("run profilectl")
}

/// The user's serving input, built independently of the command: fields the
/// model reads and every event of the dataset.
fn user_input(ds: &Dataset, enc: &Encoder, u: usize) -> UserFeatures {
    let user = &ds.users[u];
    let columns = enc.tokenizer().input_columns();
    let fields: BTreeMap<String, ModelValue> = user
        .fields
        .iter()
        .filter(|(k, _)| columns.contains(k))
        .map(|(k, v)| {
            let v = match v {
                FieldValue::Token(s) => ModelValue::Categorical(s.clone()),
                FieldValue::Float(x) => ModelValue::Number(*x),
                FieldValue::TokenSeq(t) => ModelValue::Categorical(t.join(" ")),
            };
            (k.clone(), v)
        })
        .collect();
    let mut events: Vec<Event> = ds
        .interactions
        .iter()
        .filter(|e| e.user as usize == u)
        .map(|e| Event {
            item: ds.items[e.item as usize].id.clone(),
            timestamp: e.timestamp,
            rating: e.rating,
        })
        .collect();
    events.sort_by_key(|e| e.timestamp);
    UserFeatures {
        user_id: Some(user.id.clone()),
        fields,
        events,
    }
}

fn assert_close_f16(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: dims");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // f16 keeps 11 significant bits: relative error ≤ 2^-11, plus a
        // floor for subnormals.
        let tol = w.abs() * 1e-3 + 1e-4;
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn index_build_writes_items_and_users_and_refuses_overwrite() {
    let ds = generate(&SyntheticConfig::small(5));
    let root = tempfile::tempdir().expect("tmp");
    let dir = tiny_model(&ds, root.path());

    let out = build(&dir, &[]);
    assert!(
        out.status.success(),
        "index build failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let items_path = dir.join(profiled_store::generation::ITEMS_INDEX);
    let users_path = dir.join(profiled_store::generation::USERS_INDEX);
    assert!(ann::sidecar_path(&items_path).exists(), "items sidecar");
    assert!(ann::sidecar_path(&users_path).exists(), "users sidecar");

    let enc = Encoder::load(&dir).expect("encoder");
    let dims = enc.dim();
    let items = IndexFile::open(&items_path, dims).expect("open items.index");
    let users = IndexFile::open(&users_path, dims).expect("open users.index");

    // Items: every dataset item the model knows, with its genres.
    let known: Vec<_> = ds
        .items
        .iter()
        .filter(|it| enc.item_vector(&it.id).is_some())
        .collect();
    assert!(!known.is_empty());
    assert_eq!(items.len(), known.len(), "item rows");
    assert!(items.has_attribute("genre"));
    for it in &known {
        let row = items.row_of(&it.id).expect("item id present");
        assert_eq!(items.id(row), Some(it.id.as_str()));
        for g in &it.genres {
            let posting = items.postings("genre", g).expect("genre value");
            assert!(posting.binary_search(&row).is_ok(), "{} lacks {g}", it.id);
        }
    }
    // An item row is the model's item vector (item_vectors() row).
    let pos = enc.item_ids().len() / 2;
    let id = &enc.item_ids()[pos];
    if let Some(row) = items.row_of(id) {
        let want = &enc.item_vectors()[pos * dims..(pos + 1) * dims];
        assert_close_f16(&items.vector(row).expect("row"), want, "item vector");
    } else {
        panic!("model item {id} not in items.index");
    }

    // Users: every dataset user, with their categorical fields as attributes.
    assert_eq!(users.len(), ds.users.len(), "user rows");
    for (u, user) in ds.users.iter().enumerate() {
        let row = users.row_of(&user.id).expect("user id present");
        for (k, v) in &user.fields {
            if let FieldValue::Token(s) = v {
                let posting = users.postings(k, s).expect("attribute value");
                assert!(
                    posting.binary_search(&row).is_ok(),
                    "{} lacks {k}={s}",
                    user.id
                );
            }
            if k == "age" {
                assert!(users.has_attribute("age_bucket"));
            }
        }
        // The user's history (seen_items), for exclude_seen_items.
        if u % 37 == 0 {
            for e in ds.interactions.iter().filter(|e| e.user as usize == u) {
                let item = &ds.items[e.item as usize].id;
                let posting = users
                    .postings("seen_items", item)
                    .expect("seen_items attribute");
                assert!(
                    posting.binary_search(&row).is_ok(),
                    "{} lacks seen_items={item}",
                    user.id
                );
            }
        }
        // A few users' rows against the encoder's own profile.
        if u % 37 == 0 {
            let input = user_input(&ds, &enc, u);
            let mut ws = Workspace::new();
            let p = enc
                .forward_batch(std::slice::from_ref(&input), &mut ws)
                .expect("profile");
            let want = p.row(0).expect("row 0").to_vec();
            assert_close_f16(&users.vector(row).expect("row"), &want, "user profile");
        }
    }

    // The lookalike check runs on the fresh users.index (figures on ML-100K
    // are in docs/quality.md; here only that it answers).
    let check = Command::new(env!("CARGO_BIN_EXE_profilectl"))
        .args(["index", "lookalike-check", "--dataset", "synthetic-small:5"])
        .args([
            "--seeds",
            "3",
            "--k",
            "5",
            "--trials",
            "2",
            "--min-likes",
            "1",
        ])
        .arg("--model")
        .arg(&dir)
        .output()
        .expect("run profilectl");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "lookalike-check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("output")).expect("json line");
    assert_eq!(last["users"].as_u64(), Some(ds.users.len() as u64));

    // Published indexes are immutable: a second build refuses.
    let before = std::fs::metadata(&items_path).expect("meta").len();
    let again = build(&dir, &["--no-ann"]);
    assert!(!again.status.success(), "second build must fail");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::metadata(&items_path).expect("meta").len(), before);
}
