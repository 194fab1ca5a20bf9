//! Parity of the peer benchmark's ONNX graph (`benches/peers/onnx_encoder.py`,
//! run with `$PROFILED_TEST_PYTHON`, which tests/setup-python gives
//! onnxruntime + onnx) with profiled's encoder: a synthetic model, seeded
//! random users (no events, OOV items and values, histories longer than the
//! window), every graph variant, cosine ≥ 0.9999 for every user. No timing.

use std::path::{Path, PathBuf};
use std::process::Command;

use profiled_model::format::GoldenInput;
use profiled_model::testing::{Rng, SyntheticSpec, random_user, write_synthetic_model};
use profiled_model::{Encoder, UserFeatures, Workspace, cosine};

fn python() -> PathBuf {
    let p = std::env::var_os("PROFILED_TEST_PYTHON").unwrap_or_else(|| {
        panic!(
            "PROFILED_TEST_PYTHON is not set: run the suite with tests/run \
             (tests/setup-python creates .venv with numpy, safetensors, onnxruntime and onnx)"
        )
    });
    let p = PathBuf::from(p);
    assert!(
        p.exists(),
        "PROFILED_TEST_PYTHON={} does not exist: run tests/setup-python",
        p.display()
    );
    let probe = Command::new(&p)
        .args(["-c", "import onnxruntime, onnx, numpy, safetensors"])
        .output()
        .expect("run PROFILED_TEST_PYTHON");
    assert!(
        probe.status.success(),
        "PROFILED_TEST_PYTHON={} cannot import onnxruntime/onnx/numpy/safetensors \
         (run tests/setup-python, which installs them):\n{}",
        p.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    p
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .expect("ORT output")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn onnx_runtime_graph_matches_the_encoder_for_every_user() {
    let py = python();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("model");
    let spec = SyntheticSpec {
        d_model: 32,
        heads: 4,
        ffn: 64,
        d_out: 16,
        items: 40,
        max_events: 12,
        golden: 4,
        seed: 17,
        ..SyntheticSpec::default()
    };
    write_synthetic_model(&dir, &spec).expect("synthetic model");
    let enc = Encoder::load(&dir).expect("load");

    let mut rng = Rng::new(99);
    let mut users: Vec<UserFeatures> = (0..48)
        .map(|_| random_user(&mut rng, spec.items, spec.max_events))
        .collect();
    users[0].events.clear();
    users[1].fields.clear();
    assert!(
        users.iter().any(|u| u.events.len() > spec.max_events),
        "some history must be longer than the window"
    );
    let inputs: Vec<GoldenInput> = users.iter().map(GoldenInput::from_features).collect();
    let users_json = tmp.path().join("users.json");
    std::fs::write(&users_json, serde_json::to_string(&inputs).expect("json")).expect("write");

    let mut ws = Workspace::new();
    let ours: Vec<Vec<f32>> = users
        .iter()
        .map(|u| {
            enc.forward_batch(std::slice::from_ref(u), &mut ws)
                .expect("forward")
                .as_slice()
                .to_vec()
        })
        .collect();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/onnx_encoder.py");
    for variant in ["standard", "mha", "attention"] {
        let out = tmp.path().join(format!("{variant}.f32"));
        let run = Command::new(&py)
            .arg(&script)
            .arg("parity")
            .arg(&dir)
            .arg(&users_json)
            .arg(&out)
            .args(["--variant", variant])
            .output()
            .expect("run onnx_encoder.py");
        assert!(
            run.status.success(),
            "onnx_encoder.py parity --variant {variant} failed:\n{}\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        let got = read_f32(&out);
        assert_eq!(
            got.len(),
            users.len() * spec.d_out,
            "{variant}: output size"
        );
        let mut min = f64::INFINITY;
        for (i, (g, o)) in got.chunks_exact(spec.d_out).zip(&ours).enumerate() {
            let c = cosine(g, o);
            assert!(
                c >= 0.9999,
                "{variant}: user {i} ({} events) cosine {c}",
                users[i].events.len()
            );
            min = min.min(c);
        }
        eprintln!("{variant}: min cosine {min:.7} over {} users", users.len());
    }
}
