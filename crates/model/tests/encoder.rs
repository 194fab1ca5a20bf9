//! Loader, tokenizer, forward and explanation tests on synthetic models
//! whose golden profiles come from the independent f64 reference forward.

use std::collections::BTreeMap;
use std::path::Path;

use profiled_kernels::Isa;
use profiled_kernels::gemm::WeightPrecision;
use profiled_model::testing::{
    Rng, SyntheticSpec, random_user, reference_profile, write_synthetic_model,
};
use profiled_model::tokenizer::FieldToken;
use profiled_model::{
    Dtype, Encoder, Error, Event, ExplainOptions, FieldValue, Group, LoadOptions, Method, Target,
    UserFeatures, Workspace, cosine,
};

fn model(dir: &Path, spec: &SyntheticSpec) -> Encoder {
    write_synthetic_model(dir, spec).expect("write model");
    Encoder::load(dir).expect("load model")
}

fn tensors(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = match v.dtype() {
                safetensors::Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                _ => v
                    .data()
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
            };
            (n, data)
        })
        .collect()
}

fn feat(fields: &[(&str, FieldValue)], events: &[(&str, i64, Option<f32>)]) -> UserFeatures {
    UserFeatures {
        user_id: None,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        events: events
            .iter()
            .map(|(i, t, r)| Event {
                item: i.to_string(),
                timestamp: *t,
                rating: *r,
            })
            .collect(),
    }
}

#[test]
fn encoder_matches_the_f64_reference_on_every_isa() {
    let dir = tempfile::tempdir().expect("tmp");
    let spec = SyntheticSpec::default();
    let mut enc = model(dir.path(), &spec);
    let r = enc.report().clone();
    assert!(
        r.golden_examples >= 1 && r.golden_min_cosine >= 0.9999,
        "{r:?}"
    );
    assert!(r.parameters > 0 && r.bytes_mapped > 0 && r.bytes_packed > 0);
    let t = tensors(dir.path());
    let meta = enc.metadata().clone();
    let mut rng = Rng::new(99);
    let users: Vec<UserFeatures> = (0..40)
        .map(|_| random_user(&mut rng, spec.items, spec.max_events))
        .collect();
    let refs: Vec<Vec<f64>> = users
        .iter()
        .map(|u| {
            let tok = enc.tokenizer().tokenize(u).expect("tokens");
            reference_profile(&meta, &t, &tok).expect("reference")
        })
        .collect();
    for isa in Isa::supported() {
        enc.set_isa(isa).expect("isa");
        enc.verify_golden().expect("golden on every path");
        let mut ws = Workspace::new();
        let p = enc.forward_batch(&users, &mut ws).expect("forward");
        assert_eq!(p.len(), users.len());
        for (i, r) in refs.iter().enumerate() {
            let r32: Vec<f32> = r.iter().map(|&x| x as f32).collect();
            let c = cosine(p.row(i).expect("row"), &r32);
            assert!(c >= 0.99999, "{isa}: user {i} cosine {c}");
        }
        // Ragged batch == one at a time; workspace reuse gives the same result.
        let batch = p.to_vecs();
        for (i, u) in users.iter().enumerate().step_by(7) {
            let one = enc
                .forward_batch(std::slice::from_ref(u), &mut ws)
                .expect("one");
            assert!(cosine(one.row(0).expect("row"), &batch[i]) > 0.999999);
        }
        // Chunked kernel calls (down to one user per call) change nothing.
        let mut chunked = Workspace::new();
        enc.set_max_tokens_per_call(1);
        let c = enc
            .forward_batch(&users, &mut chunked)
            .expect("chunked")
            .to_vecs();
        enc.set_max_tokens_per_call(usize::MAX);
        let w = enc
            .forward_batch(&users, &mut chunked)
            .expect("whole")
            .to_vecs();
        enc.set_max_tokens_per_call(profiled_model::encoder::DEFAULT_MAX_TOKENS_PER_CALL);
        for ((a, b), r) in c.iter().zip(&w).zip(&batch) {
            assert!(cosine(a, b) > 0.999999 && cosine(a, r) > 0.999999);
        }
        // Parallel variant == sequential.
        let mut wss = vec![Workspace::new(), Workspace::new()];
        let par = enc
            .forward_batch_parallel(&users, &mut wss, 8)
            .expect("parallel");
        for (i, b) in batch.iter().enumerate() {
            assert!(cosine(&par[i * enc.dim()..(i + 1) * enc.dim()], b) > 0.999999);
        }
    }
    // Item vectors are unit length.
    for v in enc.item_vectors().chunks_exact(enc.dim()) {
        let n: f32 = v.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
}

#[test]
fn f16_model_loads_with_its_threshold_and_one_layer_models_work() {
    let dir = tempfile::tempdir().expect("tmp");
    let spec = SyntheticSpec {
        dtype: Dtype::F16,
        ..SyntheticSpec::default()
    };
    let enc = model(dir.path(), &spec);
    assert_eq!(enc.report().dtype, Dtype::F16);
    assert!(enc.report().golden_min_cosine >= 0.999);
    let dir1 = tempfile::tempdir().expect("tmp");
    let spec1 = SyntheticSpec {
        layers: 1,
        heads: 1,
        d_model: 17,
        ffn: 9,
        d_out: 5,
        ..SyntheticSpec::default()
    };
    let enc1 = model(dir1.path(), &spec1);
    assert!(enc1.report().golden_min_cosine >= 0.9999);
}

#[test]
fn tokenizer_rules() {
    let dir = tempfile::tempdir().expect("tmp");
    let spec = SyntheticSpec::default();
    let enc = model(dir.path(), &spec);
    let tk = enc.tokenizer();
    // Unknown field: error naming it.
    let e = tk
        .tokenize(&feat(&[("shoe_size", FieldValue::Number(42.0))], &[]))
        .expect_err("unknown");
    assert!(
        matches!(&e, Error::Feature { field, .. } if field == "shoe_size"),
        "{e}"
    );
    // Wrong kind.
    let e = tk
        .tokenize(&feat(
            &[("age", FieldValue::Categorical("old".into()))],
            &[],
        ))
        .expect_err("not a number");
    assert!(e.to_string().contains("age"), "{e}");
    let e = tk
        .tokenize(&feat(
            &[("gender", FieldValue::Tags(vec![("F".into(), 1.0)]))],
            &[],
        ))
        .expect_err("tags");
    assert!(e.to_string().contains("gender"), "{e}");
    // NaN / inf.
    assert!(
        tk.tokenize(&feat(&[("age", FieldValue::Number(f64::NAN))], &[]))
            .is_err()
    );
    assert!(
        tk.tokenize(&feat(&[("age", FieldValue::Number(f64::INFINITY))], &[]))
            .is_err()
    );
    assert!(
        tk.tokenize(&feat(&[], &[("1", 5, Some(f32::NAN))]))
            .is_err()
    );
    // Missing fields → missing tokens; OOV counted.
    tk.reset_counters();
    let t = tk
        .tokenize(&feat(
            &[("occupation", FieldValue::Categorical("astronaut".into()))],
            &[("no-such", 10, None), ("1", 5, Some(4.0))],
        ))
        .expect("tokens");
    assert_eq!(t.fields[0], FieldToken::Categorical(0));
    assert_eq!(t.fields[1], FieldToken::Categorical(1));
    assert_eq!(t.fields[4], FieldToken::Numeric(None));
    assert_eq!(t.events.len(), 2);
    assert_eq!(t.events[1].item_row, 1, "newest event is the unknown one");
    assert_eq!(t.events[0].gap_row, 0);
    let c = tk.counters();
    assert_eq!(c.oov_values.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(c.oov_items.load(std::sync::atomic::Ordering::Relaxed), 1);
    // Age given as number or text: same tokens; bucket + numeric both fed.
    let a = tk
        .tokenize(&feat(&[("age", FieldValue::Number(24.0))], &[]))
        .expect("a");
    let b = tk
        .tokenize(&feat(
            &[("age", FieldValue::Categorical(" 24 ".into()))],
            &[],
        ))
        .expect("b");
    assert_eq!(a.fields[4], b.fields[4]);
    assert!(matches!(a.fields[3], FieldToken::Categorical(r) if r >= 2));
    // More events than kept → the most recent; unsorted = sorted.
    let evs: Vec<(String, i64, Option<f32>)> = (0..30)
        .map(|k| (((k % 9) + 1).to_string(), 100 + k * 7, Some(3.0)))
        .collect();
    let sorted: Vec<(&str, i64, Option<f32>)> =
        evs.iter().map(|(i, t, r)| (i.as_str(), *t, *r)).collect();
    let mut rev = sorted.clone();
    rev.reverse();
    let ts = tk.tokenize(&feat(&[], &sorted)).expect("sorted");
    let tr = tk.tokenize(&feat(&[], &rev)).expect("reversed");
    assert_eq!(ts.events.len(), spec.max_events);
    let strip = |t: &profiled_model::UserTokens| {
        t.events
            .iter()
            .map(|e| (e.item_row, e.rating_row, e.gap_row))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&ts), strip(&tr));
    assert_eq!(ts.fields, tr.fields);
    assert_eq!(ts.events.last().map(|e| e.source), Some(29));
    // No events at all → a profile from the other dimensions.
    let mut ws = Workspace::new();
    let p = enc
        .forward_batch(
            &[feat(
                &[("gender", FieldValue::Categorical("F".into()))],
                &[],
            )],
            &mut ws,
        )
        .expect("no events");
    assert!(p.row(0).expect("row").iter().all(|x| x.is_finite()));
    // A bad user in a batch names its position.
    let e = enc
        .forward_batch(
            &[feat(&[], &[]), feat(&[("x", FieldValue::Number(1.0))], &[])],
            &mut ws,
        )
        .expect_err("bad");
    assert!(matches!(e, Error::Batch { index: 1, .. }), "{e}");
}

#[test]
fn inconsistent_files_are_typed_errors() {
    let spec = SyntheticSpec::default();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| -> Error {
        let dir = tempfile::tempdir().expect("tmp");
        write_synthetic_model(dir.path(), &spec).expect("write");
        let p = dir.path().join("model.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
        f(&mut v);
        std::fs::write(&p, v.to_string()).expect("write");
        Encoder::load(dir.path()).expect_err("must fail")
    };
    let e = edit(&|v| {
        v["schema"]["fields"][1]["kind"]["vocab"]
            .as_array_mut()
            .expect("vocab")
            .push("pilot".into())
    });
    assert!(
        e.to_string().contains("fields.occupation.embedding")
            && e.to_string().contains("model.safetensors"),
        "{e}"
    );
    let e = edit(&|v| v["architecture"]["heads"] = 5.into());
    assert!(e.to_string().contains("heads"), "{e}");
    let e = edit(&|v| v["dtype"] = "f16".into());
    assert!(e.to_string().contains("dtype"), "{e}");
    let e = edit(&|v| v["golden"][2]["profile"][0] = 0.9.into());
    assert!(matches!(e, Error::Golden { index: 2, .. }), "{e}");
    let e = edit(&|v| v["golden"] = serde_json::json!([]));
    assert!(e.to_string().contains("golden"), "{e}");
    let e = edit(&|v| v["schema"]["items"]["genres"][0] = serde_json::json!([99]));
    assert!(e.to_string().contains("genre"), "{e}");
    let e = edit(&|v| v["format"] = "other".into());
    assert!(e.to_string().contains("model.json"), "{e}");

    // Non-finite weight, truncated weights, missing files.
    let dir = tempfile::tempdir().expect("tmp");
    write_synthetic_model(dir.path(), &spec).expect("write");
    let w = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&w).expect("read");
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&w, &bytes).expect("write");
    let e = Encoder::load(dir.path()).expect_err("nan");
    assert!(e.to_string().contains("non-finite"), "{e}");
    std::fs::write(&w, &bytes[..n - 10]).expect("write");
    let e = Encoder::load(dir.path()).expect_err("truncated");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    std::fs::remove_file(&w).expect("rm");
    assert!(matches!(Encoder::load(dir.path()), Err(Error::Io { .. })));
}

#[test]
fn occlusion_variants_equal_explicit_forwards_and_attention_masses_sum_to_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let spec = SyntheticSpec::default();
    let mut enc = model(dir.path(), &spec);
    let u = feat(
        &[
            ("gender", FieldValue::Categorical("F".into())),
            ("occupation", FieldValue::Categorical("engineer".into())),
            ("age", FieldValue::Number(31.0)),
        ],
        &[
            ("3", 875_750_400, Some(5.0)),
            ("5", 875_760_400, Some(2.0)),
            ("7", 875_770_400, None),
        ],
    );
    let ex = enc
        .explain(
            &u,
            &Target::Profile,
            Method::Occlusion,
            &ExplainOptions::default(),
        )
        .expect("occlusion");
    assert_eq!(ex.quantity, "score drop");
    // Variants split over several kernel calls give the same values.
    enc.set_max_tokens_per_call(12);
    let chunked = enc
        .explain(
            &u,
            &Target::Profile,
            Method::Occlusion,
            &ExplainOptions::default(),
        )
        .expect("chunked occlusion");
    enc.set_max_tokens_per_call(profiled_model::encoder::DEFAULT_MAX_TOKENS_PER_CALL);
    for (a, b) in ex.tokens.iter().zip(&chunked.tokens) {
        assert_eq!(a.position, b.position);
        assert!((a.value - b.value).abs() < 1e-6);
    }
    assert_eq!(ex.tokens.len(), 7 + 3);
    assert_eq!(ex.variants, 1 + 4 + 10);
    let share: f64 = ex.groups.iter().map(|g| g.share).sum();
    assert!((share - 1.0).abs() < 1e-9, "{:?}", ex.groups);
    // Masking gender (its own column) = the user without the gender column.
    let mut no_gender = u.clone();
    no_gender.fields.remove("gender");
    let mut ws = Workspace::new();
    let p0 = enc
        .forward_batch(std::slice::from_ref(&u), &mut ws)
        .expect("p0")
        .to_vecs()
        .remove(0);
    let p1 = enc
        .forward_batch(&[no_gender], &mut ws)
        .expect("p1")
        .to_vecs()
        .remove(0);
    let g = ex
        .tokens
        .iter()
        .find(|t| t.position == 0)
        .expect("gender token");
    assert!(g.label == "gender = F", "{}", g.label);
    assert!(
        (g.value - (1.0 - cosine(&p1, &p0))).abs() < 1e-5,
        "{} vs {}",
        g.value,
        1.0 - cosine(&p1, &p0)
    );
    let item = ex
        .tokens
        .iter()
        .find(|t| t.position == 7)
        .expect("first event");
    assert_eq!(item.label, "item 3 \"Movie 3 (1982)\" @ 1997-10-02");
    assert_eq!(item.group, Group::Behaviour);
    // Groups only.
    let gx = enc
        .explain(
            &u,
            &Target::Item("4".into()),
            Method::Occlusion,
            &ExplainOptions {
                tokens: false,
                max_tokens: 0,
            },
        )
        .expect("groups");
    assert!(gx.tokens.is_empty() && gx.groups.len() == 4);
    assert!(
        enc.explain(
            &u,
            &Target::Item("nope".into()),
            Method::Occlusion,
            &ExplainOptions::default()
        )
        .is_err()
    );
    // Attention masses.
    for m in [Method::Attention, Method::AttentionRollout] {
        let ex = enc
            .explain(&u, &Target::Profile, m, &ExplainOptions::default())
            .expect("attention");
        assert_eq!(ex.quantity, "attention mass");
        let total: f64 = ex.tokens.iter().map(|t| t.value).sum();
        assert!((total - 1.0).abs() < 1e-4, "{m:?}: {total}");
        if m == Method::Attention {
            assert_eq!(ex.layers.len(), spec.layers);
            for la in &ex.layers {
                assert_eq!(la.heads.len(), spec.heads);
                for h in &la.heads {
                    assert!((h.iter().sum::<f32>() - 1.0).abs() < 1e-4);
                }
            }
        }
    }
    // A behaviour-free user explains too.
    let ex = enc
        .explain(
            &feat(&[], &[]),
            &Target::Users(vec![1.0; spec.d_out]),
            Method::Occlusion,
            &ExplainOptions::default(),
        )
        .expect("no events");
    assert!(ex.groups.iter().all(|g| g.group != Group::Behaviour));
    // Faithfulness check: one mean drop per method, finite, in [0, 2].
    let mut rng = Rng::new(5);
    let users: Vec<UserFeatures> = (0..12)
        .map(|_| random_user(&mut rng, spec.items, spec.max_events))
        .collect();
    let (rows, n) = enc.faithfulness(&users, 3, 1).expect("faithfulness");
    assert_eq!(rows.len(), 4);
    assert!(n > 0);
    assert!(
        rows.iter()
            .all(|(_, v)| v.is_finite() && (0.0..=2.0).contains(v)),
        "{rows:?}"
    );
}

#[test]
fn loading_with_a_chosen_isa_and_without_golden_check() {
    let dir = tempfile::tempdir().expect("tmp");
    write_synthetic_model(dir.path(), &SyntheticSpec::default()).expect("write");
    let enc = Encoder::load_with(
        dir.path(),
        &LoadOptions {
            isa: Some(Isa::Scalar),
            verify_golden: false,
        },
    )
    .expect("load");
    assert_eq!(enc.isa(), Isa::Scalar);
    assert_eq!(enc.report().golden_examples, 0);
}

/// The token table comes from the model: an unseen item and an unseen
/// categorical value are flagged `oov`, a value literally named "unknown"
/// that the vocabulary holds is not, and an absent field is `missing`.
#[test]
fn token_table_flags_unseen_values_and_items_from_the_model() {
    let dir = tempfile::tempdir().expect("tmp");
    write_synthetic_model(dir.path(), &SyntheticSpec::default()).expect("write");
    // Rename the vocabulary value "doctor" to "unknown" (same rows, so the
    // weights still fit; the golden examples no longer do, so skip them).
    let meta = dir.path().join("model.json");
    let text = std::fs::read_to_string(&meta).expect("read");
    let mut j: serde_json::Value = serde_json::from_str(&text).expect("json");
    let fields = j["schema"]["fields"].as_array_mut().expect("fields");
    let occupation = fields
        .iter_mut()
        .find(|f| f["name"] == "occupation")
        .expect("occupation field");
    let vocab = occupation["kind"]["vocab"]
        .as_array_mut()
        .expect("occupation vocab");
    let doctor = vocab.iter_mut().find(|v| *v == "doctor").expect("doctor");
    *doctor = "unknown".into();
    std::fs::write(&meta, serde_json::to_string(&j).expect("json")).expect("write");
    let opts = LoadOptions {
        verify_golden: false,
        ..LoadOptions::default()
    };
    let enc = Encoder::load_with(dir.path(), &opts).expect("load");
    let explain = |u: &UserFeatures| {
        enc.explain(
            u,
            &Target::Profile,
            Method::Occlusion,
            &ExplainOptions {
                tokens: false,
                max_tokens: 0,
            },
        )
        .expect("explain")
    };
    let known = feat(
        &[("occupation", FieldValue::Categorical("unknown".into()))],
        &[
            ("3", 875_750_400, Some(5.0)),
            ("no-such-item", 875_760_400, None),
        ],
    );
    let ex = explain(&known);
    // The whole table, even without token attributions.
    assert!(ex.tokens.is_empty());
    assert_eq!(ex.table.len(), enc.metadata().schema.fields.len() + 2);
    for (i, t) in ex.table.iter().enumerate() {
        assert_eq!(t.position, i);
    }
    let occ = ex
        .table
        .iter()
        .find(|t| t.field == "occupation")
        .expect("occupation");
    assert_eq!(occ.label, "occupation = unknown");
    assert!(!occ.oov && !occ.missing, "{occ:?}");
    let gender = ex
        .table
        .iter()
        .find(|t| t.field == "gender")
        .expect("gender");
    assert!(gender.missing && !gender.oov, "{gender:?}");
    let events: Vec<_> = ex.table.iter().filter(|t| t.field == "events").collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].item_id, "3");
    assert_eq!(events[0].timestamp, 875_750_400);
    assert!(!events[0].oov);
    assert_eq!(events[1].item_id, "no-such-item");
    assert!(events[1].oov, "{:?}", events[1]);
    assert!(events[1].label.contains("(unseen)"));
    // A value the vocabulary does not hold is flagged.
    let unseen = feat(
        &[("occupation", FieldValue::Categorical("astronaut".into()))],
        &[],
    );
    let ex = explain(&unseen);
    let occ = ex
        .table
        .iter()
        .find(|t| t.field == "occupation")
        .expect("occupation");
    assert!(occ.oov && !occ.missing, "{occ:?}");
    assert_eq!(occ.label, "occupation = astronaut (unseen)");
}

#[test]
fn bf16_compute_is_opt_in_and_stays_within_parity() {
    let dir = tempfile::tempdir().expect("tmp");
    let spec = SyntheticSpec::default();
    let mut enc = model(dir.path(), &spec);
    let stored = enc.compute_precision();
    assert_ne!(stored, WeightPrecision::Bf16, "bf16 is never the default");
    let mut rng = Rng::new(7);
    let users: Vec<UserFeatures> = (0..40)
        .map(|_| random_user(&mut rng, spec.items, spec.max_events))
        .collect();
    let mut ws = Workspace::new();
    // Allowed but on a path without vdpbf16ps: the stored precision stays.
    enc.set_isa(Isa::Scalar).expect("isa");
    assert_eq!(enc.set_bf16(true).expect("allow"), stored);
    if !Isa::Avx512Bf16.is_supported() {
        return;
    }
    enc.set_isa(Isa::Avx512).expect("isa");
    assert_eq!(enc.compute_precision(), stored);
    let f32_profiles = enc.forward_batch(&users, &mut ws).expect("f32").to_vecs();
    // The bf16 path with bf16 allowed: re-packed and golden-verified.
    enc.set_isa(Isa::Avx512Bf16).expect("isa");
    assert_eq!(enc.compute_precision(), WeightPrecision::Bf16);
    let bf16_profiles = enc.forward_batch(&users, &mut ws).expect("bf16").to_vecs();
    let mut differs = false;
    for (a, b) in f32_profiles.iter().zip(&bf16_profiles) {
        let c = cosine(a, b);
        assert!(c >= 0.999, "bf16 against f32: cosine {c}");
        differs |= a != b;
    }
    assert!(differs, "bf16 compute must actually run in bf16");
    // Forbidding it again restores the stored precision and its results.
    assert_eq!(enc.set_bf16(false).expect("forbid"), stored);
    let again = enc
        .forward_batch(&users, &mut ws)
        .expect("f32 again")
        .to_vecs();
    assert_eq!(again, f32_profiles);
}
