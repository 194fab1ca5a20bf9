//! The Grafana dashboard (`deploy/grafana/profiled.json`) and the Prometheus
//! alerting rules (`deploy/prometheus/alerts.yaml`) name only metrics that a
//! running server exports: the real binary is driven on both ports (gRPC and
//! HTTP: misses, hits, a failed call) and its `/metrics` is scraped until
//! every series the files use is there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use profiled_e2e::{
    Server, embed_req, free_port, post_json, repo_root, scrape_until, synth_repo, user_features,
};
use serde_json::{Value, json};

/// Every `profiled_*` series name in `text` (metric names are
/// `[a-z0-9_]`; the dashboard's uid `profiled-overview` is not one).
fn series_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("profiled_") {
        let start = i + at;
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        if before_ok {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The PromQL expressions of the dashboard's panels.
fn dashboard_exprs(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(e)) = o.get("expr") {
                    out.push(e.clone());
                }
                o.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(d, &mut out);
    out
}

/// True when the exposition `text` has a sample of the series `name`.
fn exported(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported() {
    let root = repo_root();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/profiled.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dash["uid"], "profiled-overview");
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 15, "{} panel queries", exprs.len());
    let mut names = BTreeSet::new();
    for e in &exprs {
        names.extend(series_names(e));
    }
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yaml")).unwrap();
    let rule_names = series_names(&rules);
    assert!(
        rule_names.contains("profiled_generations_live"),
        "{rule_names:?}"
    );
    names.extend(rule_names);
    for must in [
        "profiled_request_seconds_count",
        "profiled_request_seconds_bucket",
        "profiled_cache_hits_total",
        "profiled_batch_size_bucket",
        "profiled_queue_seconds_bucket",
        "profiled_model_swaps_total",
    ] {
        assert!(
            names.contains(must),
            "the dashboard or the rules lack {must}: {names:?}"
        );
    }

    // Traffic on both ports: a miss, a hit, a failure.
    let (_tmp, repo) = synth_repo(12).unwrap();
    let metrics = free_port().unwrap();
    let server = Server::start_with_metrics(
        &repo,
        &[
            ("PROFILED__HTTP__ENABLED", "true"),
            ("PROFILED__HTTP__ADDR", "127.0.0.1:0"),
        ],
        &metrics,
    )
    .unwrap();
    server.wait_serving(Duration::from_secs(60)).await.unwrap();
    let mut c = server.client().await.unwrap();
    for _ in 0..2 {
        c.embed(embed_req(vec![user_features("x", "engineer", 30.0)]))
            .await
            .unwrap();
    }
    let http = server.http_addr().unwrap();
    let a = post_json(&http, "/v1/search", &json!({"user_id": "u1", "k": 3}), None).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let a = post_json(&http, "/v1/embed", &json!({"users": []}), None).unwrap();
    assert_eq!(a.status, 400);

    let text = scrape_until(&metrics, 100, |t| names.iter().all(|n| exported(t, n)))
        .await
        .unwrap_or_else(|e| {
            let text = profiled_e2e::scrape(&metrics).unwrap_or_default();
            let missing: Vec<&String> = names.iter().filter(|n| !exported(&text, n)).collect();
            panic!("not exported: {missing:?} ({e})")
        });
    assert!(exported(&text, "profiled_request_seconds_count"));
    assert!(text.contains("protocol=\"http\"") && text.contains("protocol=\"grpc\""));
}
