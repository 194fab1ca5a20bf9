//! A non-Rust client works: Python modules are generated from `proto/` with
//! `grpc_tools.protoc` at test time, then `tests/e2e/python/client.py`
//! (grpcio, run with `$PROFILED_TEST_PYTHON`) calls GetModel, Embed, Search
//! and Explain on the real `profiled` binary and checks the results, plus one
//! bad input answered INVALID_ARGUMENT naming the field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use profiled_e2e::{Server, publish_model, repo_root, temp_repo, test_python};

/// Generates `profiled/v1/*_pb2{,_grpc}.py` from `proto/` into `out`.
fn generate(py: &Path, out: &Path) {
    let proto = repo_root().join("proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(proto.join("profiled/v1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "proto files: {files:?}");
    let o = Command::new(py)
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto.display()))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(&files)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "grpc_tools.protoc failed (is grpcio-tools installed? run tests/setup-python):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.join("profiled/v1/service_pb2_grpc.py").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_calls_embed_search_explain() {
    let py = test_python();
    let (tmp, repo) = temp_repo().unwrap();
    let gen_dir = tmp.path().join("gen");
    std::fs::create_dir_all(&gen_dir).unwrap();
    generate(&py, &gen_dir);

    let version = publish_model(&repo, "synth", 11, false).unwrap();
    let server = Server::start_serving(&repo, &[], Duration::from_secs(30))
        .await
        .unwrap();

    let script = repo_root().join("tests/e2e/python/client.py");
    let addr = server.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&py)
            .arg(&script)
            .arg("--gen")
            .arg(&gen_dir)
            .args(["--addr", &addr, "--model", "synth", "--version"])
            .arg(version.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        server.log_text()
    );
    // The script's summary: what it saw, checked again here.
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(seen["dim"].as_u64().unwrap() > 0);
    assert_eq!(seen["hits"].as_array().unwrap().len(), 5);
    let shares: f64 = seen["group_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-6, "shares sum {shares}");
    assert!(
        seen["bad_input"]
            .as_str()
            .unwrap()
            .contains("fields[\"age\"]"),
        "{seen}"
    );
}
