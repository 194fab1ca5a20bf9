//! The HTTP/JSON edge against the real binary over real sockets: every
//! operation (and the same answers as the gRPC port for the same input),
//! every example of the OpenAPI document posted and its answer checked
//! against the documented schema, bad input (malformed JSON, unknown field
//! names, NaN, limits), tokens (the gRPC port's messages), deadlines,
//! unknown models, sizes, and the metrics labelled by protocol.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use profiled_e2e::{
    ADMIN_TOKEN, HttpAnswer, Server, assert_http_error, embed_req, free_port, get_model,
    http_request, post_json, sample, scrape_until, synth_repo, user_features, write_admin_token,
};
use profiled_proto::v1 as pb;
use serde_json::{Value, json};

/// A server over synthetic model `synth` with the HTTP edge on a free port,
/// plus `env`; returns the server and its HTTP address.
async fn start(repo: &std::path::Path, env: &[(&str, &str)]) -> (Server, String) {
    let mut all = vec![
        ("PROFILED__HTTP__ENABLED", "true"),
        ("PROFILED__HTTP__ADDR", "127.0.0.1:0"),
    ];
    all.extend_from_slice(env);
    let server = Server::start_serving(repo, &all, Duration::from_secs(60))
        .await
        .unwrap();
    let addr = server.http_addr().unwrap();
    (server, addr)
}

fn features_json() -> Value {
    json!({"user_id": "a", "fields": {"occupation": "engineer", "age": 31.0},
        "events": [{"item_id": "3", "timestamp": 880000000, "rating": 4.0},
                   {"item_id": "7", "timestamp": 880000100}]})
}

fn grpc_features() -> pb::UserFeatures {
    user_features("a", "engineer", 31.0)
}

/// A minimal check that `v` has the shape `schema` (OpenAPI 3.1 / JSON
/// Schema subset that utoipa emits: `$ref`, `type` (one or a list),
/// `properties` + `required` (no property the schema does not name),
/// `additionalProperties`, `items`, `oneOf` / `anyOf` / `allOf`, `enum`).
fn check_shape(doc: &Value, schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or_default();
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{path}: unresolved {r}"));
        }
        return check_shape(doc, target, v, path);
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check_shape(doc, s, v, path)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(any) = schema.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = any
                .iter()
                .filter_map(|s| check_shape(doc, s, v, path).err())
                .collect();
            if errors.len() == any.len() {
                return Err(format!("{path}: matches none of {key}: {errors:?}"));
            }
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{path}: {v} not in {e:?}"));
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{path}: {v} is not of type {types:?}"));
        }
    }
    if let Some(o) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !o.contains_key(r) {
                    return Err(format!("{path}: required property {r:?} missing"));
                }
            }
        }
        for (k, x) in o {
            let p = format!("{path}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => check_shape(doc, s, x, &p)?,
                (None, Some(s)) if s.is_object() => check_shape(doc, s, x, &p)?,
                (None, _) if props.is_some() => {
                    return Err(format!("{p}: not a documented property"));
                }
                _ => {}
            }
        }
    }
    if let (Some(a), Some(items)) = (v.as_array(), schema.get("items")) {
        for (i, x) in a.iter().enumerate() {
            check_shape(doc, items, x, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_openapi_example_answers_2xx_in_its_documented_shape() {
    let (_tmp, repo) = synth_repo(3).unwrap();
    let (_server, addr) = start(&repo, &[]).await;
    let doc = profiled_e2e::http::get(&addr, "/openapi.json")
        .unwrap()
        .json()
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3."),
        "{}",
        doc["openapi"]
    );
    // Track's examples first (the by-id examples of Embed, Search and
    // Explain name the user they store), then every other body, then the
    // GETs, then the DELETEs (which erase what the GETs read).
    let mut ops: Vec<(&String, &String, &Value)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .map(move |(method, op)| (path, method, op))
        })
        .collect();
    let rank = |path: &str, method: &str| match (method, path) {
        ("post", "/v1/track") => 0,
        ("post", _) => 1,
        ("get", _) => 2,
        _ => 3,
    };
    ops.sort_by_key(|(path, method, _)| rank(path, method));
    let mut posted = 0;
    let mut with_params = 0;
    for (path, method, op) in ops {
        let ok_schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
        let examples = op["requestBody"]["content"]["application/json"]["examples"].as_object();
        match (method.as_str(), examples) {
            ("post", Some(examples)) if path.starts_with("/v1/") && !path.contains("admin") => {
                assert!(!examples.is_empty(), "{path}: no example");
                for (name, ex) in examples {
                    let a = post_json(&addr, path, &ex["value"], None).unwrap();
                    assert!(
                        (200..300).contains(&a.status),
                        "{path} example {name}: HTTP {} {}",
                        a.status,
                        a.text()
                    );
                    let body = a.json().unwrap();
                    check_shape(&doc, ok_schema, &body, &format!("{path}#{name}"))
                        .unwrap_or_else(|e| panic!("{e}\nbody: {body}"));
                    posted += 1;
                }
            }
            ("post", None) if !path.contains("admin") => {
                panic!("{path}: a request body without examples")
            }
            ("get" | "delete", _) if path.starts_with("/v1/") => {
                // Path parameters take their documented example; an
                // operation on a path with parameters must document them.
                let mut url = path.clone();
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] == "path" {
                        let name = p["name"].as_str().unwrap();
                        let Some(ex) = p["example"].as_str() else {
                            if path == "/v1/models/{name}" {
                                continue; // checked below with a real name
                            }
                            panic!("{method} {path}: path parameter {name} has no example");
                        };
                        url = url.replace(&format!("{{{name}}}"), ex);
                        with_params += 1;
                    }
                }
                if url.contains('{') {
                    continue;
                }
                let a = http_request(&addr, &method.to_uppercase(), &url, &[], None).unwrap();
                assert_eq!(a.status, 200, "{method} {url}: {}", a.text());
                check_shape(
                    &doc,
                    ok_schema,
                    &a.json().unwrap(),
                    &format!("{method} {url}"),
                )
                .unwrap();
            }
            _ => {}
        }
    }
    assert!(
        with_params >= 2,
        "GetUser and DeleteUser: {with_params} path examples"
    );
    assert!(posted >= 16, "only {posted} examples posted");
    // The one path with a parameter, and an error body, in their shapes too.
    let m = profiled_e2e::http::get(&addr, "/v1/models/synth").unwrap();
    assert_eq!(m.status, 200, "{}", m.text());
    let s = &doc["paths"]["/v1/models/{name}"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    check_shape(&doc, s, &m.json().unwrap(), "get_model").unwrap();
    let e = profiled_e2e::http::get(&addr, "/v1/models/nope").unwrap();
    let s = &doc["paths"]["/v1/models/{name}"]["get"]["responses"]["404"]["content"]["application/json"]
        ["schema"];
    check_shape(&doc, s, &e.json().unwrap(), "404").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_the_grpc_port_does() {
    let (_tmp, repo) = synth_repo(4).unwrap();
    let (server, addr) = start(&repo, &[]).await;
    let mut c = server.client().await.unwrap();

    // Embed: the same vector from both ports, and the HTTP call after the
    // gRPC one is a cache hit (one validation, one cache key).
    let g = c
        .embed(pb::EmbedRequest {
            request_id: "r1".into(),
            ..embed_req(vec![grpc_features()])
        })
        .await
        .unwrap()
        .into_inner();
    let gv = g.users[0].vector.as_ref().unwrap().to_f32().unwrap();
    let a = post_json(
        &addr,
        "/v1/embed",
        &json!({"users": [{"features": features_json()}, {"user_id": "u0"}], "request_id": "r2"}),
        None,
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/json"));
    let j = a.json().unwrap();
    assert_eq!(j["request_id"], "r2");
    assert_eq!(j["model"]["name"], "synth");
    assert_eq!(j["model"]["version"], 1);
    assert_eq!(j["dim"], gv.len());
    let hv: Vec<f32> = serde_json::from_value(j["users"][0]["vector"].clone()).unwrap();
    assert_eq!(hv, gv, "HTTP and gRPC profiles differ");
    assert_eq!(j["users"][0]["user_id"], "a");
    assert_eq!(j["users"][0]["cache_hit"], true, "{j}");
    assert_eq!(j["users"][0]["source"], "cache");
    assert_eq!(j["users"][1]["source"], "users_index");
    assert_eq!(j["users"][1]["user_id"], "u0");

    // Search: the same hits, with titles when asked.
    let gs = c
        .search(pb::SearchRequest {
            include_attributes: true,
            ..profiled_e2e::search_features(grpc_features(), 5)
        })
        .await
        .unwrap()
        .into_inner();
    let a = post_json(
        &addr,
        "/v1/search",
        &json!({"features": features_json(), "k": 5, "include_attributes": true}),
        None,
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json().unwrap();
    let hits = j["hits"].as_array().unwrap();
    assert_eq!(hits.len(), gs.hits.len());
    for (h, g) in hits.iter().zip(&gs.hits) {
        assert_eq!(h["id"], g.id.as_str());
        assert_eq!(h["title"], g.title.as_str());
        assert_eq!(h["score"].as_f64().unwrap() as f32, g.score);
        assert_eq!(
            h["attributes"]["parity"][0].as_str().unwrap(),
            g.attributes["parity"].values[0]
        );
    }
    assert_eq!(j["target"], "items");
    // Lookalikes of a known user: the user itself is left out by default.
    let a = post_json(
        &addr,
        "/v1/search",
        &json!({"user_id": "u0", "target": "users", "k": 3}),
        None,
    )
    .unwrap();
    let j = a.json().unwrap();
    assert_eq!(j["hits"].as_array().unwrap().len(), 3, "{j}");
    assert!(
        j["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["id"] != "u0")
    );

    // Explain, every method: the same groups and token values as gRPC.
    for (method, name) in [
        (pb::ExplainMethod::Occlusion, "occlusion"),
        (pb::ExplainMethod::AttentionRollout, "attention_rollout"),
        (pb::ExplainMethod::Attention, "attention"),
    ] {
        let ge = c
            .explain(pb::ExplainRequest {
                features: Some(grpc_features()),
                method: method as i32,
                target: Some(profiled_e2e::item_target("5")),
                top_n: 4,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let a = post_json(
            &addr,
            "/v1/explain",
            &json!({"features": features_json(), "method": name, "top_n": 4,
                "target": {"kind": "item", "item_id": "5"}}),
            None,
        )
        .unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
        let j = a.json().unwrap();
        assert_eq!(j["method"], name);
        assert_eq!(j["target"], json!({"kind": "item", "item_id": "5"}));
        assert_eq!(
            j["value_kind"],
            if name == "occlusion" {
                "score_drop"
            } else {
                "attention_mass"
            }
        );
        assert!((j["base_score"].as_f64().unwrap() - ge.base_score).abs() < 1e-9);
        let groups = j["groups"].as_array().unwrap();
        assert_eq!(groups.len(), ge.groups.len());
        for (h, g) in groups.iter().zip(&ge.groups) {
            assert!(
                (h["value"].as_f64().unwrap() - g.value).abs() < 1e-9,
                "{h} vs {g:?}"
            );
        }
        let tokens = j["tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), ge.tokens.len());
        for (h, g) in tokens.iter().zip(&ge.tokens) {
            assert!((h["value"].as_f64().unwrap() - g.value).abs() < 1e-9);
            let gt = g.token.as_ref().unwrap();
            assert_eq!(h["token"]["label"], gt.label.as_str());
        }
        assert_eq!(
            j["token_table"].as_array().unwrap().len(),
            ge.token_table.len()
        );
        assert_eq!(j["layers"].as_array().unwrap().len(), ge.layers.len());
        if name == "attention" {
            let l0 = &j["layers"][0];
            let g0 = &ge.layers[0];
            assert_eq!(l0["heads"].as_array().unwrap().len(), g0.heads.len());
            let m: Vec<f32> = serde_json::from_value(l0["heads"][0]["mass"].clone()).unwrap();
            assert_eq!(m, g0.heads[0].mass);
        }
    }

    // Models.
    let gm = get_model(&mut c, "synth").await.unwrap();
    let a = profiled_e2e::http::get(&addr, "/v1/models/synth").unwrap();
    let j = a.json().unwrap();
    assert_eq!(j["name"], "synth");
    assert_eq!(j["default_version"], gm.default_version);
    assert_eq!(j["versions"][0]["state"], "ready");
    assert_eq!(
        j["versions"][0]["generation_id"],
        gm.versions[0].generation_id
    );
    let fields = j["versions"][0]["schema"]["fields"].as_array().unwrap();
    assert!(
        fields
            .iter()
            .any(|f| f["name"] == "occupation" && f["kind"] == "categorical")
    );
    let a = profiled_e2e::http::get(&addr, "/v1/models").unwrap();
    let j = a.json().unwrap();
    assert_eq!(j["default_model"], "synth");
    assert!(j["models"][0]["versions"][0].get("schema").is_none());
    let a = profiled_e2e::http::get(&addr, "/v1/models?include_schema=true").unwrap();
    assert!(a.json().unwrap()["models"][0]["versions"][0]["schema"].is_object());
    // Health and an unknown route.
    let a = profiled_e2e::http::get(&addr, "/healthz").unwrap();
    assert_eq!(
        (a.status, a.json().unwrap()),
        (200, json!({"serving": true}))
    );
    assert_http_error(
        &profiled_e2e::http::get(&addr, "/v2/nothing").unwrap(),
        404,
        "NOT_FOUND",
        "no such route: GET /v2/nothing",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_problem() {
    let (_tmp, repo) = synth_repo(5).unwrap();
    let (server, addr) = start(
        &repo,
        &[
            ("PROFILED__LIMITS__MAX_USERS_PER_CALL", "2"),
            ("PROFILED__LIMITS__MAX_K", "20"),
            ("PROFILED__LIMITS__MAX_EXPLAIN_TOP_N", "8"),
            ("PROFILED__LIMITS__MAX_EVENTS_PER_USER", "5"),
            ("PROFILED__SERVER__MAX_REQUEST_BYTES", "4096"),
        ],
    )
    .await;
    let post = |path: &str, body: &[u8]| {
        http_request(
            &addr,
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(body),
        )
        .unwrap()
    };
    // Malformed JSON, NaN (not JSON), a number out of range, a wrong type.
    assert_http_error(
        &post("/v1/embed", b"{\"users\": [}"),
        400,
        "INVALID_ARGUMENT",
        "body: malformed JSON request",
    );
    assert_http_error(
        &post(
            "/v1/embed",
            br#"{"users": [{"features": {"fields": {"age": NaN}}}]}"#,
        ),
        400,
        "INVALID_ARGUMENT",
        "malformed JSON request: expected value",
    );
    assert_http_error(
        &post(
            "/v1/embed",
            br#"{"users": [{"features": {"fields": {"age": 1e999}}}]}"#,
        ),
        400,
        "INVALID_ARGUMENT",
        "number out of range",
    );
    assert_http_error(
        &post(
            "/v1/embed",
            br#"{"users": [{"features": {"fields": {"age": true}}}]}"#,
        ),
        400,
        "INVALID_ARGUMENT",
        "expected a number, a string, or a list of tags",
    );
    // A rating beyond f32 becomes infinite: the core's finiteness check.
    let a = post_json(
        &addr,
        "/v1/embed",
        &json!({"users": [{"features": {"fields": {"occupation": "engineer"},
            "events": [{"item_id": "3", "timestamp": 1, "rating": 1e300}]}}]}),
        None,
    )
    .unwrap();
    assert_http_error(
        &a,
        400,
        "INVALID_ARGUMENT",
        "users[0].features.events[0].rating: inf is not finite",
    );
    // Unknown field names: at the top, and inside features.
    assert_http_error(
        &post("/v1/embed", br#"{"users": [], "userz": 1}"#),
        400,
        "INVALID_ARGUMENT",
        "unknown field `userz`",
    );
    assert_http_error(
        &post("/v1/explain", br#"{"features": {"feilds": {}}}"#),
        400,
        "INVALID_ARGUMENT",
        "unknown field `feilds`",
    );
    // Not JSON at all, by content-type.
    let a = http_request(
        &addr,
        "POST",
        "/v1/embed",
        &[("content-type", "text/plain")],
        Some(b"{}"),
    )
    .unwrap();
    assert_http_error(
        &a,
        400,
        "INVALID_ARGUMENT",
        "content-type: expected application/json",
    );

    // The core's validation, word for word as on the gRPC port.
    let mut c = server.client().await.unwrap();
    let cases: Vec<(&str, Value, pb::EmbedRequest)> = vec![
        (
            "unknown model input",
            json!({"users": [{"features": {"fields": {"shoe_size": 42}}}]}),
            pb::EmbedRequest {
                users: vec![profiled_e2e::input(pb::UserFeatures {
                    fields: [("shoe_size".to_string(), profiled_e2e::number(42.0))].into(),
                    ..Default::default()
                })],
                ..Default::default()
            },
        ),
        (
            "not a number",
            json!({"users": [{"features": {"fields": {"age": "old"}}}]}),
            pb::EmbedRequest {
                users: vec![profiled_e2e::input(pb::UserFeatures {
                    fields: [("age".to_string(), profiled_e2e::categorical("old"))].into(),
                    ..Default::default()
                })],
                ..Default::default()
            },
        ),
        (
            "too many users",
            json!({"users": [{"user_id": "u0"}, {"user_id": "u1"}, {"user_id": "u2"}]}),
            pb::EmbedRequest {
                users: ["u0", "u1", "u2"]
                    .iter()
                    .map(|u| profiled_e2e::input_by_id(u))
                    .collect(),
                ..Default::default()
            },
        ),
        (
            "no source",
            json!({"users": [{}]}),
            pb::EmbedRequest {
                users: vec![pb::UserInput {
                    source: None,
                    context: None,
                }],
                ..Default::default()
            },
        ),
        (
            "no users",
            json!({"users": []}),
            pb::EmbedRequest::default(),
        ),
        (
            "too many events",
            json!({"users": [{"features": {"events": (0..6).map(|i| json!({"item_id": "3", "timestamp": i})).collect::<Vec<_>>()}}]}),
            pb::EmbedRequest {
                users: vec![profiled_e2e::input(pb::UserFeatures {
                    events: (0..6).map(|i| profiled_e2e::event("3", i, None)).collect(),
                    ..Default::default()
                })],
                ..Default::default()
            },
        ),
    ];
    for (what, body, grpc) in cases {
        let g = c.embed(grpc).await.expect_err(what);
        assert_eq!(
            g.code(),
            tonic::Code::InvalidArgument,
            "{what}: {}",
            g.message()
        );
        let a = post_json(&addr, "/v1/embed", &body, None).unwrap();
        assert_http_error(&a, 400, "INVALID_ARGUMENT", g.message());
        assert_eq!(a.json().unwrap()["message"], g.message(), "{what}");
    }
    // Search and Explain limits and shapes.
    let a = post_json(
        &addr,
        "/v1/search",
        &json!({"user_id": "u0", "k": 21}),
        None,
    )
    .unwrap();
    assert_http_error(&a, 400, "INVALID_ARGUMENT", "limits.max_k = 20");
    let a = post_json(
        &addr,
        "/v1/search",
        &json!({"user_id": "u0", "vector": [1.0]}),
        None,
    )
    .unwrap();
    assert_http_error(
        &a,
        400,
        "INVALID_ARGUMENT",
        "query: set exactly one of features, user_id, vector, seeds",
    );
    let a = post_json(&addr, "/v1/search", &json!({"vector": [1.0, 2.0]}), None).unwrap();
    assert_http_error(
        &a,
        400,
        "INVALID_ARGUMENT",
        "vector: expected 16 components, got 2",
    );
    let a = post_json(
        &addr,
        "/v1/search",
        &json!({"user_id": "u0", "filter": {"conditions": [{"attribute": "parity", "op": "equals", "values": []}]}}),
        None,
    )
    .unwrap();
    assert_http_error(
        &a,
        400,
        "INVALID_ARGUMENT",
        "filter.conditions[0].values: EQUALS needs exactly one value, got 0",
    );
    let a = post_json(
        &addr,
        "/v1/explain",
        &json!({"features": features_json(), "top_n": 9}),
        None,
    )
    .unwrap();
    assert_http_error(
        &a,
        400,
        "INVALID_ARGUMENT",
        "top_n: 9 exceeds limits.max_explain_top_n = 8",
    );
    let a = post_json(&addr, "/v1/explain", &json!({"method": "occlusion"}), None).unwrap();
    assert_http_error(&a, 400, "INVALID_ARGUMENT", "features: required");
    let a = post_json(
        &addr,
        "/v1/explain",
        &json!({"features": features_json(), "method": "shapley"}),
        None,
    )
    .unwrap();
    assert_http_error(&a, 400, "INVALID_ARGUMENT", "unknown variant `shapley`");
    let a = post_json(
        &addr,
        "/v1/embed",
        &json!({"model": {"version": 0}, "users": [{"user_id": "u0"}]}),
        None,
    )
    .unwrap();
    assert_http_error(
        &a,
        400,
        "INVALID_ARGUMENT",
        "model.version: versions are positive integers",
    );

    // A body over server.max_request_bytes: 413 naming the setting.
    let big = json!({"users": [{"features": {"user_id": "x".repeat(5000)}}]});
    let a = post_json(&addr, "/v1/embed", &big, None).unwrap();
    assert_http_error(
        &a,
        413,
        "OUT_OF_RANGE",
        "exceeds server.max_request_bytes = 4096",
    );

    // Partial answers carry each user's error in its slot.
    let a = post_json(
        &addr,
        "/v1/embed",
        &json!({"users": [{"user_id": "u0"}, {"user_id": "nobody"}], "allow_partial": true}),
        None,
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let j = a.json().unwrap();
    assert!(j["users"][0]["vector"].is_array());
    assert_eq!(j["users"][1]["error"]["code"], "NOT_FOUND");
    assert_eq!(j["users"][1]["error"]["status"], 404);
    assert!(
        j["users"][1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown user \"nobody\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_users_and_items_are_404() {
    let (_tmp, repo) = synth_repo(6).unwrap();
    let (server, addr) = start(&repo, &[]).await;
    let mut c = server.client().await.unwrap();
    let g = c
        .embed(pb::EmbedRequest {
            model: Some(pb::ModelSpec {
                name: "nope".into(),
                selector: None,
            }),
            ..embed_req(vec![grpc_features()])
        })
        .await
        .unwrap_err();
    let a = post_json(
        &addr,
        "/v1/embed",
        &json!({"model": {"name": "nope"}, "users": [{"features": features_json()}]}),
        None,
    )
    .unwrap();
    assert_http_error(&a, 404, "NOT_FOUND", g.message());
    let a = post_json(
        &addr,
        "/v1/embed",
        &json!({"model": {"name": "synth", "version": 9}, "users": [{"user_id": "u0"}]}),
        None,
    )
    .unwrap();
    assert_http_error(&a, 404, "NOT_FOUND", "");
    let a = post_json(&addr, "/v1/search", &json!({"user_id": "nobody"}), None).unwrap();
    assert_http_error(&a, 404, "NOT_FOUND", "unknown user \"nobody\"");
    let a = post_json(
        &addr,
        "/v1/explain",
        &json!({"features": features_json(), "target": {"kind": "item", "item_id": "999"}}),
        None,
    )
    .unwrap();
    assert_http_error(
        &a,
        404,
        "NOT_FOUND",
        "target.item.item_id: unknown item \"999\"",
    );
    let a = profiled_e2e::http::get(&addr, "/v1/models/nope").unwrap();
    assert_http_error(&a, 404, "NOT_FOUND", "nope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_come_from_the_timeout_header() {
    let (_tmp, repo) = synth_repo(7).unwrap();
    let (_server, addr) = start(&repo, &[]).await;
    let body = serde_json::to_vec(&json!({"features": features_json()})).unwrap();
    let call = |timeout: &str| -> HttpAnswer {
        http_request(
            &addr,
            "POST",
            "/v1/explain",
            &[
                ("content-type", "application/json"),
                ("x-request-timeout-ms", timeout),
            ],
            Some(&body),
        )
        .unwrap()
    };
    // A deadline that has passed when the work would start.
    assert_http_error(&call("0"), 504, "DEADLINE_EXCEEDED", "deadline exceeded");
    // A generous one: answered.
    assert_eq!(call("60000").status, 200);
    // Not a number of milliseconds.
    assert_http_error(
        &call("5s"),
        400,
        "INVALID_ARGUMENT",
        "x-request-timeout-ms: expected a whole number of milliseconds",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_the_grpc_ports_with_its_messages() {
    let (tmp, repo) = synth_repo(8).unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "alice s3cret-alice\n").unwrap();
    let admin = write_admin_token(tmp.path()).unwrap();
    let (server, addr) = start(
        &repo,
        &[
            ("PROFILED__AUTH__TOKEN_FILE", tokens.to_str().unwrap()),
            ("PROFILED__AUTH__REQUIRED", "true"),
            ("PROFILED__ADMIN__TOKEN_FILE", admin.to_str().unwrap()),
        ],
    )
    .await;
    let body = json!({"users": [{"user_id": "u0"}]});
    let a = post_json(&addr, "/v1/embed", &body, None).unwrap();
    assert_http_error(
        &a,
        401,
        "UNAUTHENTICATED",
        "missing `authorization: Bearer <token>` metadata: profiled.v1.ProfileService requires a token",
    );
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    let a = post_json(&addr, "/v1/embed", &body, Some("s3cret-alicf")).unwrap();
    assert_http_error(
        &a,
        401,
        "UNAUTHENTICATED",
        "wrong bearer token: not a token configured for profiled.v1.ProfileService",
    );
    let a = http_request(
        &addr,
        "GET",
        "/v1/models",
        &[("authorization", "Basic s3cret-alice")],
        None,
    )
    .unwrap();
    assert_http_error(
        &a,
        401,
        "UNAUTHENTICATED",
        "malformed `authorization` metadata: expected `Bearer <token>`",
    );
    let a = post_json(&addr, "/v1/embed", &body, Some("s3cret-alice")).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let a = http_request(
        &addr,
        "GET",
        "/v1/models/synth",
        &[("authorization", "Bearer s3cret-alice")],
        None,
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    // The OpenAPI document, health and the viewer need no token.
    assert_eq!(
        profiled_e2e::http::get(&addr, "/openapi.json")
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        profiled_e2e::http::get(&addr, "/healthz").unwrap().status,
        200
    );
    assert_eq!(profiled_e2e::http::get(&addr, "/ui/").unwrap().status, 200);

    // Admin: its own tokens only.
    let reload = json!({"model": "synth", "wait": true});
    let a = post_json(&addr, "/v1/admin/reload", &reload, None).unwrap();
    assert_http_error(
        &a,
        401,
        "UNAUTHENTICATED",
        "profiled.v1.ModelAdmin requires a token",
    );
    let a = post_json(&addr, "/v1/admin/reload", &reload, Some("s3cret-alice")).unwrap();
    assert_http_error(&a, 401, "UNAUTHENTICATED", "wrong bearer token");
    let a = post_json(&addr, "/v1/admin/reload", &reload, Some(ADMIN_TOKEN)).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json().unwrap()["models"][0]["name"], "synth");
    let a = post_json(
        &addr,
        "/v1/admin/labels",
        &json!({"model": "synth", "label": "stable", "version": 1}),
        Some(ADMIN_TOKEN),
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json().unwrap()["models"][0]["labels"]["stable"], 1);
    let a = post_json(
        &addr,
        "/v1/embed",
        &json!({"model": {"name": "synth", "label": "stable"}, "users": [{"user_id": "u0"}]}),
        Some("s3cret-alice"),
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    // Unloading the only ready version is refused without force (the core's rule).
    let a = post_json(
        &addr,
        "/v1/admin/unload",
        &json!({"model": "synth", "version": 1}),
        Some(ADMIN_TOKEN),
    )
    .unwrap();
    assert_http_error(&a, 400, "FAILED_PRECONDITION", "");
    let log = server.log_text();
    assert!(!log.contains("s3cret"), "a token was logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_are_off_without_admin_tokens() {
    let (_tmp, repo) = synth_repo(9).unwrap();
    let (_server, addr) = start(&repo, &[]).await;
    let a = post_json(&addr, "/v1/admin/reload", &json!({}), Some("anything")).unwrap();
    assert_http_error(&a, 501, "UNIMPLEMENTED", "ModelAdmin is off on this server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metrics_are_labelled_by_protocol() {
    let (_tmp, repo) = synth_repo(10).unwrap();
    let metrics = free_port().unwrap();
    let env = [
        ("PROFILED__HTTP__ENABLED", "true"),
        ("PROFILED__HTTP__ADDR", "127.0.0.1:0"),
    ];
    let server = Server::start_with_metrics(&repo, &env, &metrics).unwrap();
    server.wait_serving(Duration::from_secs(60)).await.unwrap();
    let addr = server.http_addr().unwrap();
    let mut c = server.client().await.unwrap();
    c.embed(embed_req(vec![grpc_features()])).await.unwrap();
    for _ in 0..3 {
        let a = post_json(
            &addr,
            "/v1/embed",
            &json!({"users": [{"features": features_json()}]}),
            None,
        )
        .unwrap();
        assert_eq!(a.status, 200);
    }
    let a = post_json(&addr, "/v1/embed", &json!({"users": []}), None).unwrap();
    assert_eq!(a.status, 400);
    let text = scrape_until(&metrics, 50, |t| {
        sample(
            t,
            "profiled_request_seconds_count",
            &[("protocol", "http"), ("rpc", "Embed"), ("code", "OK")],
        ) == Some(3.0)
    })
    .await
    .unwrap();
    assert_eq!(
        sample(
            &text,
            "profiled_request_seconds_count",
            &[
                ("protocol", "grpc"),
                ("rpc", "Embed"),
                ("code", "OK"),
                ("model", "synth")
            ],
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "profiled_request_seconds_count",
            &[
                ("protocol", "http"),
                ("rpc", "Embed"),
                ("code", "InvalidArgument")
            ],
        ),
        Some(1.0),
        "{text}"
    );
}

/// One HTTPS request (`connection: close`) trusting `ca_pem`; the status
/// and the body, or the TLS / connection error.
fn https(
    addr: &str,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(cfg),
        rustls::pki_types::ServerName::try_from("localhost")?.to_owned(),
    )?;
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let bytes = body
        .map(serde_json::to_vec)
        .transpose()?
        .unwrap_or_default();
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        bytes.len()
    )?;
    tls.write_all(&bytes)?;
    let mut raw = Vec::new();
    if let Err(e) = tls.read_to_end(&mut raw)
        && (raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof)
    {
        return Err(e.into());
    }
    let text = String::from_utf8(raw)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no head"))?;
    let status = head.split(' ').nth(1).unwrap_or("").parse()?;
    Ok((status, serde_json::from_str(body)?))
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it:
/// (CA PEM, certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = p.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(p, ca_key);
    let leaf =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_http_listener_serves_https_with_the_same_certificates() {
    let (tmp, repo) = synth_repo(13).unwrap();
    let (ca, cert, key) = certificates();
    let (cert_file, key_file) = (tmp.path().join("tls.crt"), tmp.path().join("tls.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let server = Server::start(
        &repo,
        &[
            ("PROFILED__HTTP__ENABLED", "true"),
            ("PROFILED__HTTP__ADDR", "127.0.0.1:0"),
            ("PROFILED__TLS__CERT_FILE", cert_file.to_str().unwrap()),
            ("PROFILED__TLS__KEY_FILE", key_file.to_str().unwrap()),
        ],
    )
    .unwrap();
    let addr = server.http_addr().unwrap();
    let mut serving = false;
    for _ in 0..600 {
        if https(&addr, &ca, "GET", "/healthz", None).is_ok_and(|(s, _)| s == 200) {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        serving,
        "never healthy over HTTPS; log:\n{}",
        server.log_text()
    );
    let (status, j) = https(
        &addr,
        &ca,
        "POST",
        "/v1/embed",
        Some(&json!({"users": [{"user_id": "u0"}]})),
    )
    .unwrap();
    assert_eq!(status, 200, "{j}");
    assert_eq!(j["users"][0]["source"], "users_index");
    // Plaintext HTTP on the TLS listener gets no answer; nor does a client
    // that trusts another CA.
    let plain = profiled_e2e::http::get(&addr, "/healthz");
    assert!(!matches!(&plain, Ok(a) if a.status == 200), "{plain:?}");
    let (other_ca, _, _) = certificates();
    assert!(https(&addr, &other_ca, "GET", "/healthz", None).is_err());
}

/// One request on a kept-alive connection (HTTP/1.1 without `connection:
/// close`); the status and the body (by content-length).
fn keepalive_get(s: &mut std::net::TcpStream, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    write!(s, "GET {path} HTTP/1.1\r\nhost: test\r\n\r\n")?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..p]).to_ascii_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .ok_or_else(|| anyhow::anyhow!("no status"))?
                .parse()?;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .ok_or_else(|| anyhow::anyhow!("no content-length in {head}"))?
                .trim()
                .parse()?;
            while raw.len() < p + 4 + len {
                let n = s.read(&mut buf)?;
                anyhow::ensure!(n > 0, "closed mid-body");
                raw.extend_from_slice(&buf[..n]);
            }
            return Ok((status, raw[p + 4..p + 4 + len].to_vec()));
        }
        let n = s.read(&mut buf)?;
        anyhow::ensure!(n > 0, "closed before the answer");
        raw.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_http_max_connections_are_refused_with_429() {
    use std::io::Read;
    let (_tmp, repo) = synth_repo(14).unwrap();
    let metrics = free_port().unwrap();
    let env = [
        ("PROFILED__HTTP__ENABLED", "true"),
        ("PROFILED__HTTP__ADDR", "127.0.0.1:0"),
        ("PROFILED__HTTP__MAX_CONNECTIONS", "2"),
    ];
    let server = Server::start_with_metrics(&repo, &env, &metrics).unwrap();
    server.wait_serving(Duration::from_secs(60)).await.unwrap();
    let addr = server.http_addr().unwrap();
    // Wait until the listener answers (healthz over short connections,
    // which close again at once).
    let mut up = false;
    for _ in 0..200 {
        if profiled_e2e::http::get(&addr, "/healthz").is_ok_and(|a| a.status == 200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the HTTP listener never answered");

    // Two kept-alive connections take both slots; each is served.
    let open = || {
        let s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    };
    let mut a = open();
    let mut b = open();
    assert_eq!(keepalive_get(&mut a, "/healthz").unwrap().0, 200);
    assert_eq!(keepalive_get(&mut b, "/healthz").unwrap().0, 200);

    // A third is answered 429 RESOURCE_EXHAUSTED naming the setting, and
    // closed by the server.
    let refused = profiled_e2e::http::get(&addr, "/healthz").unwrap();
    assert_http_error(
        &refused,
        429,
        "RESOURCE_EXHAUSTED",
        "http.max_connections = 2 connections are open on the HTTP listener",
    );
    assert_eq!(refused.header("connection"), Some("close"));
    assert_eq!(refused.header("retry-after"), Some("1"));
    let mut c = open();
    let mut buf = Vec::new();
    let n = c.read_to_end(&mut buf).unwrap();
    assert!(
        n > 0 && buf.starts_with(b"HTTP/1.1 429 "),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );

    // The admitted connections keep working; the gRPC port is not capped
    // by the HTTP listener's setting.
    assert_eq!(keepalive_get(&mut a, "/healthz").unwrap().0, 200);
    let mut g = server.client().await.unwrap();
    g.embed(embed_req(vec![grpc_features()])).await.unwrap();

    // A closed connection frees its slot: a new one is served.
    drop(b);
    let mut served = false;
    for _ in 0..100 {
        let r = profiled_e2e::http::get(&addr, "/healthz").unwrap();
        if r.status == 200 {
            served = true;
            break;
        }
        assert_eq!(r.status, 429, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "the freed slot was never reused");

    let text = scrape_until(&metrics, 50, |t| {
        sample(
            t,
            "profiled_http_connections_closed_total",
            &[("reason", "limit")],
        )
        .is_some_and(|n| n >= 2.0)
    })
    .await
    .unwrap();
    // `a` is still open (the freed slot's connection has closed again).
    let open_now = sample(&text, "profiled_http_connections_open", &[]).unwrap();
    assert!((1.0..=2.0).contains(&open_now), "{open_now}\n{text}");
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_is_server_max_request_bytes() {
    // The default 4 MiB, above axum's own 2 MiB default: a 3 MiB body is
    // read and judged on its content (here: an over-long request id).
    let (_tmp, repo) = synth_repo(15).unwrap();
    let (_server, addr) = start(&repo, &[]).await;
    let body = json!({"users": [{"user_id": "u0"}], "request_id": "r".repeat(3 << 20)});
    let a = post_json(&addr, "/v1/embed", &body, None).unwrap();
    assert_http_error(
        &a,
        400,
        "INVALID_ARGUMENT",
        "request_id: 3145728 bytes exceeds limits.max_string_bytes = 256",
    );
}

/// The `curl` examples of docs/api.md: every `-d` body is a valid request
/// of the route it is posted to (the HTTP edge's own types: unknown field
/// names, value types, and the structural rules of the conversion), so
/// the documented commands are requests the server accepts as such.
#[test]
fn the_curl_examples_of_the_api_guide_are_valid_requests() {
    use profiled_server::http::{types, users};
    let doc = std::fs::read_to_string(profiled_e2e::repo_root().join("docs/api.md")).unwrap();
    // Each command: a line starting with `curl`, continued while it ends
    // with a backslash or has a quote left open.
    let mut commands: Vec<String> = Vec::new();
    for line in doc.lines() {
        match commands.last_mut() {
            Some(c) if c.trim_end().ends_with('\\') || c.matches('\'').count() % 2 == 1 => {
                c.push('\n');
                c.push_str(line);
            }
            _ if line.starts_with("curl ") => commands.push(line.to_string()),
            _ => {}
        }
    }
    let mut checked = 0;
    for c in &commands {
        let Some(start) = c.find(" -d '") else {
            continue;
        };
        let body = &c[start + 5..];
        let body = &body[..body.find('\'').expect("closing quote")];
        let path = c
            .split_whitespace()
            .find_map(|w| {
                w.trim_matches('\'')
                    .split_once("8080")
                    .map(|(_, p)| p.to_string())
            })
            .unwrap_or_else(|| panic!("no localhost:8080 URL in {c}"));
        let r: Result<(), String> = match path.as_str() {
            "/v1/embed" => serde_json::from_str::<types::EmbedRequest>(body)
                .map_err(|e| e.to_string())
                .and_then(|r| r.to_query().map(|_| ()).map_err(|e| e.to_string())),
            "/v1/search" => serde_json::from_str::<types::SearchRequest>(body)
                .map_err(|e| e.to_string())
                .and_then(|r| r.to_query().map(|_| ()).map_err(|e| e.to_string())),
            "/v1/explain" => serde_json::from_str::<types::ExplainRequest>(body)
                .map_err(|e| e.to_string())
                .and_then(|r| r.to_query().map(|_| ()).map_err(|e| e.to_string())),
            "/v1/track" => serde_json::from_str::<users::TrackRequest>(body)
                .map_err(|e| e.to_string())
                .and_then(|r| r.to_query().map(|_| ()).map_err(|e| e.to_string())),
            other => panic!("a curl body for {other}: add its type here"),
        };
        if let Err(e) = r {
            panic!("docs/api.md: the body posted to {path} is not a valid request: {e}\n{body}");
        }
        checked += 1;
    }
    assert!(
        checked >= 5,
        "only {checked} curl bodies found: {commands:#?}"
    );
}
