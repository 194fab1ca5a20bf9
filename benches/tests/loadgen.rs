//! The load generator against the real `profiled` binary (Embed, Search,
//! Explain mix; the CLI's JSON report; a swap mid-run; TLS with a bearer
//! token), and the open-loop
//! scheduler against a bench-only service that stalls: latency must run from
//! the intended send time, and the schedule must not wait for the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use profiled_benches::loadgen::workload::parse_known_users;
use profiled_benches::loadgen::{
    Generator, Mode, RunConfig, SwapPlan, Target, TargetConfig, UserPool, Workload, run,
};
use profiled_e2e::{Server, make_model, publish_model};
use profiled_proto::v1 as pb;
use profiled_proto::v1::profile_service_server::{ProfileService, ProfileServiceServer};
use tonic::{Request, Response, Status, Streaming};

fn workload(mix: &str, hit: f64) -> Workload {
    workload_with(UserPool::synthetic_model(3, 40, 30, 12), mix, hit)
}

/// The workload with its users fitted to the served model's inputs.
async fn fitted(target: &Target, mix: &str, hit: f64) -> Workload {
    let mut pool = UserPool::synthetic_model(3, 40, 30, 12);
    pool.fit(&target.input_kinds("m").await.unwrap());
    workload_with(pool, mix, hit)
}

fn workload_with(pool: UserPool, mix: &str, hit: f64) -> Workload {
    Workload {
        model: "m".into(),
        pool: Arc::new(pool),
        known_users: Arc::new(parse_known_users("u[0..20]").unwrap()),
        hit_ratio: hit,
        mix: Workload::parse_mix(mix).unwrap(),
        tracked: Arc::new(profiled_benches::loadgen::Zipf::new(50, 1.0)),
    }
}

fn open(rate: f64, secs: f64) -> RunConfig {
    RunConfig {
        label: "test".into(),
        mode: Mode::Open { rate },
        duration: Some(Duration::from_secs_f64(secs)),
        ..RunConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_against_the_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models");
    std::fs::create_dir_all(&repo).unwrap();
    let v1 = publish_model(&repo, "m", 1, false).unwrap();
    let server = Server::start(&repo, &[]).unwrap();
    server.wait_serving(Duration::from_secs(60)).await.unwrap();
    let target = Target::connect(&TargetConfig {
        addr: server.addr.clone(),
        connections: 2,
        ..TargetConfig::default()
    })
    .await
    .unwrap();

    // A mix at a low open-loop rate for 2 s.
    let g = Generator::new(
        fitted(
            &target,
            "embed*4;search:query=user*1;search:query=seeds,index=users,filter=segment=a*1;explain:groups*1",
            0.5,
        )
        .await,
        7,
    )
    .unwrap();
    let rep = run(&target, &g, &open(100.0, 2.0)).await.unwrap();
    assert_eq!(rep.sent, 200, "{}", rep.text());
    assert_eq!(rep.stats.all.ok, 200, "{}", rep.text());
    assert!(rep.stats.all.errors.is_empty(), "{}", rep.text());
    assert_eq!(rep.latency().count, 200);
    assert!(rep.latency().p50 > 0 && rep.latency().max >= rep.latency().p99);
    for k in ["embed", "search", "explain"] {
        assert!(rep.stats.by_kind[k].ok > 0, "no {k} calls: {}", rep.text());
    }
    assert_eq!(
        rep.stats.versions.keys().copied().collect::<Vec<_>>(),
        vec![v1]
    );
    let j: serde_json::Value = serde_json::from_str(&rep.to_json().to_string()).unwrap();
    assert_eq!(j["ok"], 200);
    assert_eq!(j["mode"]["intended_rps"], 100.0);
    assert!(j["latency"]["p99_us"].as_u64().unwrap() > 0);

    // The binary: closed loop, a count bound, a JSON file.
    let json_path = tmp.path().join("report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiled-loadgen"))
        .args([
            "--addr",
            &server.addr,
            "--model",
            "m",
            "--streams",
            "4",
            "--count",
            "150",
        ])
        .args([
            "--synthetic-model-users",
            "30",
            "--hit-ratio",
            "0.3",
            "--quiet",
            "--json",
        ])
        .arg(&json_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("latency of ok calls"), "{stdout}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(j["sent"], 150, "{j}");
    assert_eq!(j["ok"], 150, "{j}");
    assert_eq!(j["errors"], serde_json::json!({}));
    assert_eq!(j["mode"]["streams"], 4);
    assert!(j["latency"]["p50_us"].as_u64().unwrap() > 0);

    // A swap mid-run: a new version is published 0.7 s in; every call is
    // answered, the new version answers after the swap.
    let src = tmp.path().join("v2");
    make_model(&src, 2).unwrap();
    let mut cfg = open(100.0, 2.5);
    cfg.swap = Some(SwapPlan {
        at: Duration::from_millis(700),
        src,
        repo: repo.clone(),
        model: "m".into(),
        settle: Duration::from_millis(200),
    });
    let g = Generator::new(fitted(&target, "embed", 0.0).await, 8).unwrap();
    let rep = run(&target, &g, &cfg).await.unwrap();
    let sw = rep.stats.swap.as_ref().unwrap();
    assert!(sw.publish_error.is_none(), "{}", rep.text());
    let v2 = sw.new_version.unwrap();
    assert!(v2 > v1);
    assert!(
        sw.seen.is_some(),
        "the new version never answered: {}",
        rep.text()
    );
    assert!(rep.stats.all.errors.is_empty(), "{}", rep.text());
    assert!(
        sw.before.ok > 0 && sw.during.ok > 0 && sw.after.ok > 0,
        "{}",
        rep.text()
    );
    assert_eq!(sw.before.ok + sw.during.ok + sw.after.ok, rep.stats.all.ok);
    assert!(rep.stats.versions.contains_key(&v1) && rep.stats.versions.contains_key(&v2));
    let j = rep.to_json();
    assert_eq!(j["swap"]["new_version"], v2);
}

/// A bench-only service: answers Embed at once, except that the call number
/// `stall_at` closes a gate for `stall`, and every call arriving while it is
/// closed waits for it to open.
#[derive(Debug, Clone)]
struct Stalling {
    state: Arc<Mutex<(u64, Option<Instant>)>>,
    stall_at: u64,
    stall: Duration,
}

type Out = Pin<Box<dyn Stream<Item = Result<pb::EmbedStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ProfileService for Stalling {
    async fn embed(
        &self,
        _: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let open_at = {
            let mut s = self.state.lock().unwrap();
            s.0 += 1;
            if s.0 == self.stall_at {
                s.1 = Some(Instant::now() + self.stall);
            }
            s.1
        };
        if let Some(t) = open_at
            && Instant::now() < t
        {
            tokio::time::sleep_until(t.into()).await;
        }
        Ok(Response::new(pb::EmbedResponse::default()))
    }
    type EmbedStreamStream = Out;
    async fn embed_stream(
        &self,
        _: Request<Streaming<pb::EmbedRequest>>,
    ) -> Result<Response<Out>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn search(
        &self,
        _: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn explain(
        &self,
        _: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_model(
        &self,
        _: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Err(Status::unimplemented(""))
    }
    profiled_proto::user_state_unimplemented!("");
}

async fn stalling_server(stall_at: u64, stall: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let svc = Stalling {
        state: Arc::new(Mutex::new((0, None))),
        stall_at,
        stall,
    };
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ProfileServiceServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_measures_from_the_intended_send_time() {
    // 200 calls/s for 2 s; call 100 (due at 0.5 s) stalls the server 500 ms.
    let addr = stalling_server(100, Duration::from_millis(500)).await;
    let target = Target::connect(&TargetConfig {
        addr,
        connections: 1,
        ..TargetConfig::default()
    })
    .await
    .unwrap();
    let g = Generator::new(workload("embed", 0.0), 1).unwrap();
    let rep = run(&target, &g, &open(200.0, 2.0)).await.unwrap();
    // The schedule did not wait for the stalled server.
    assert_eq!(rep.sent, 400, "{}", rep.text());
    assert_eq!(rep.stats.all.ok, 400, "{}", rep.text());
    assert!(
        rep.peak_in_flight >= 50,
        "calls kept going out during the stall: {}",
        rep.text()
    );
    // Call i ∈ [100, 180) is due at ≤ due(100) + 0.395 s and cannot be answered
    // before due(100) + 0.5 s: each of those 80 calls has ≥ 105 ms of latency
    // counted from its intended time, and call 100 itself ≥ 500 ms.
    let h = &rep.stats.all.hist;
    let slow = h.count_between(100_000, h.max());
    assert!(
        slow >= 80,
        "{slow} calls ≥ 100 ms, expected ≥ 80: {}",
        rep.text()
    );
    assert!(h.max() >= 495_000, "max {} µs: {}", h.max(), rep.text());

    // The same stall seen by one closed-loop stream: only the stalled call is
    // slow (the coordinated-omission picture the open loop avoids).
    let addr = stalling_server(100, Duration::from_millis(500)).await;
    let target = Target::connect(&TargetConfig {
        addr,
        connections: 1,
        ..TargetConfig::default()
    })
    .await
    .unwrap();
    let cfg = RunConfig {
        mode: Mode::Closed { streams: 1 },
        duration: None,
        count: Some(200),
        ..RunConfig::default()
    };
    let rep = run(&target, &g, &cfg).await.unwrap();
    assert_eq!(rep.stats.all.ok, 200);
    let h = &rep.stats.all.hist;
    assert!(h.max() >= 495_000);
    assert!(
        h.count_between(100_000, h.max()) < 80,
        "a closed loop records the stall once, not per intended call"
    );
}

/// A CA and a `localhost` server certificate signed by it (PEMs).
fn test_certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(DnType::CommonName, "loadgen test ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = p.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(p, ca_key);
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_over_tls_with_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models");
    std::fs::create_dir_all(&repo).unwrap();
    publish_model(&repo, "m", 1, false).unwrap();
    let (ca, cert, key) = test_certificates();
    let path = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_file = path("ca.crt", &ca);
    let cert_file = path("tls.crt", &cert).display().to_string();
    let key_file = path("tls.key", &key).display().to_string();
    let server = Server::start(
        &repo,
        &[
            ("PROFILED__TLS__CERT_FILE", &cert_file),
            ("PROFILED__TLS__KEY_FILE", &key_file),
            ("PROFILED__SERVER__HEALTH_LISTEN", "127.0.0.1:0"),
            ("PROFILED__AUTH__REQUIRED", "true"),
            ("PROFILED__AUTH__TOKEN_ENV", "LOADGEN_TEST_TOKENS"),
            ("LOADGEN_TEST_TOKENS", "s3cret"),
        ],
    )
    .unwrap();
    let tls = |token: Option<&str>| TargetConfig {
        addr: server.addr.clone(),
        tls: true,
        ca_cert: Some(ca_file.clone()),
        domain: Some("localhost".into()),
        token: token.map(str::to_string),
        connections: 1,
        ..TargetConfig::default()
    };
    let mut cfg = open(50.0, 1.0);
    cfg.warmup = false;
    // Wait for the model: retry until GetModel answers.
    let target = Target::connect(&tls(Some("s3cret"))).await.unwrap();
    let start = Instant::now();
    while target.input_kinds("m").await.is_err() && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let g = Generator::new(fitted(&target, "embed", 0.0).await, 4).unwrap();
    // …and until the version is ready (UNAVAILABLE while it loads).
    while start.elapsed() < Duration::from_secs(60) {
        let rep = run(&target, &g, &open(20.0, 0.1)).await.unwrap();
        if rep.stats.all.ok > 0 && rep.stats.all.errors.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rep = run(&target, &g, &cfg).await.unwrap();
    assert_eq!(rep.stats.all.ok, 50, "{}", rep.text());
    assert!(rep.stats.all.errors.is_empty(), "{}", rep.text());
    // Without the token every call is refused, and counted by code.
    let target = Target::connect(&tls(None)).await.unwrap();
    let rep = run(&target, &g, &cfg).await.unwrap();
    assert_eq!(rep.stats.all.ok, 0);
    assert_eq!(
        rep.stats.all.errors["UNAUTHENTICATED"],
        50,
        "{}",
        rep.text()
    );
    // TLS without a CA file is refused up front.
    let mut no_ca = tls(None);
    no_ca.ca_cert = None;
    assert!(Target::connect(&no_ca).await.is_err());
}
