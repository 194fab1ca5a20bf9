//! Client commands of `profilectl`: `embed`, `search`, `explain`, `models`
//! (real gRPC clients of a running `profiled`, readable output or `--json`),
//! `publish` (atomic copy of a version into a model repository) and
//! `quickstart` (fetch, train, publish, serve, print ready-to-paste calls).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use profiled_proto::v1 as pb;
use profiled_proto::v1::profile_service_client::ProfileServiceClient;
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Connection and model selection shared by the client commands.
#[derive(Debug, Args)]
pub struct Conn {
    /// Server address.
    #[arg(long, env = "PROFILED_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Model name (empty = the server's default model).
    #[arg(long, default_value = "")]
    pub model: String,
    /// Pin a model version.
    #[arg(long, conflicts_with = "label")]
    pub version: Option<u64>,
    /// Use the version a label points to (e.g. stable, canary).
    #[arg(long)]
    pub label: Option<String>,
    /// Call deadline in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Print the response as JSON.
    #[arg(long)]
    pub json: bool,
    /// TLS and token options.
    #[command(flatten)]
    pub secure: Secure,
}

/// TLS (server CA, client certificate for mTLS) and bearer-token options of
/// the client commands (see docs/security.md).
#[derive(Debug, Clone, Default, Args)]
pub struct Secure {
    /// Trust this CA certificate (PEM) and connect with TLS.
    #[arg(long, env = "PROFILED_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mTLS; needs --tls-key.
    #[arg(
        long,
        env = "PROFILED_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mTLS; needs --tls-cert.
    #[arg(
        long,
        env = "PROFILED_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Server name to verify (default: the host of --addr).
    #[arg(long, value_name = "NAME")]
    pub tls_domain: Option<String>,
    /// Bearer token, sent as `authorization: Bearer TOKEN`.
    #[arg(long, env = "PROFILED_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Secure {
    /// True when TLS is asked for (a CA, a client certificate, or an
    /// `https://` address).
    pub fn tls(&self, addr: &str) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || addr.starts_with("https://")
    }

    /// The endpoint for `addr`: plaintext, or TLS (HTTP/2 ALPN) with the CA
    /// and client identity given.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint> {
        let tls = self.tls(addr);
        let uri = match (tls, addr.strip_prefix("http://")) {
            (true, Some(rest)) => format!("https://{rest}"),
            _ => addr.to_string(),
        };
        let mut ep = Channel::from_shared(uri).map_err(|e| anyhow!("bad address {addr}: {e}"))?;
        if tls {
            let mut cfg = ClientTlsConfig::new();
            let Some(ca) = &self.tls_ca else {
                bail!(
                    "{addr}: TLS needs --tls-ca FILE (the CA that signed the server certificate)"
                );
            };
            let pem = std::fs::read(ca).with_context(|| format!("--tls-ca {}", ca.display()))?;
            cfg = cfg.ca_certificate(Certificate::from_pem(pem));
            if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
                let cert =
                    std::fs::read(c).with_context(|| format!("--tls-cert {}", c.display()))?;
                let key = std::fs::read(k).with_context(|| format!("--tls-key {}", k.display()))?;
                cfg = cfg.identity(Identity::from_pem(cert, key));
            }
            if let Some(d) = &self.tls_domain {
                cfg = cfg.domain_name(d.clone());
            }
            ep = ep
                .tls_config(cfg)
                .map_err(|e| anyhow!("TLS configuration for {addr}: {e}"))?;
        }
        Ok(ep)
    }

    /// The `authorization` metadata value, when a token is set.
    pub fn bearer(&self) -> Result<Option<MetadataValue<Ascii>>> {
        self.token
            .as_ref()
            .map(|t| {
                format!("Bearer {}", t.trim()).parse().map_err(|_| {
                    anyhow!("--token: not a valid metadata value (printable ASCII only)")
                })
            })
            .transpose()
    }
}

/// User features given on the command line.
#[derive(Debug, Args)]
pub struct FeatureArgs {
    /// A feature input `KEY=VALUE` (e.g. `age=24`, `occupation=technician`);
    /// the value kind follows the model's schema. Repeatable.
    #[arg(long = "field", value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
    /// A behaviour event `ITEM[:TIMESTAMP[:RATING]]` (e.g. `50:874965758:5`). Repeatable.
    #[arg(long = "event", value_name = "ITEM[:TS[:RATING]]")]
    pub events: Vec<String>,
}

/// Arguments of `profilectl embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Connection and model.
    #[command(flatten)]
    pub conn: Conn,
    /// The user's features.
    #[command(flatten)]
    pub features: FeatureArgs,
    /// Known user ids to embed (read from the users index). Repeatable.
    #[arg(long = "user-id")]
    pub user_ids: Vec<String>,
    /// Ask for f16 vectors.
    #[arg(long)]
    pub f16: bool,
    /// Bypass the server's hot cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// Arguments of `profilectl explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Connection and model.
    #[command(flatten)]
    pub conn: Conn,
    /// The user's features.
    #[command(flatten)]
    pub features: FeatureArgs,
    /// Explain a tracked user's live profile (their stored fields and
    /// events; `--field`/`--event` are then request-time context).
    #[arg(long = "user-id")]
    pub user_id: Option<String>,
    /// Method: occlusion, rollout or attention.
    #[arg(long, default_value = "occlusion")]
    pub method: String,
    /// Explain the score of this item instead of the profile.
    #[arg(long)]
    pub item: Option<String>,
    /// Tokens to show.
    #[arg(long, default_value_t = 10)]
    pub top_n: u32,
}

/// Arguments of `profilectl search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Connection and model.
    #[command(flatten)]
    pub conn: Conn,
    /// The query user's features (when no --user-id).
    #[command(flatten)]
    pub features: FeatureArgs,
    /// Query by a known user id.
    #[arg(long = "user-id")]
    pub user_id: Option<String>,
    /// Target index: items or users.
    #[arg(long, default_value = "items")]
    pub target: String,
    /// Hits wanted.
    #[arg(long, default_value_t = 10)]
    pub k: u32,
}

/// Arguments of `profilectl models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Connection (and `--model` for one model with its schema).
    #[command(flatten)]
    pub conn: Conn,
}

/// Arguments of `profilectl publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// A model version folder (model.json + model.safetensors [+ indexes]).
    pub src: PathBuf,
    /// The model repository.
    #[arg(long, default_value = "models")]
    pub repo: PathBuf,
    /// Model name in the repository.
    #[arg(long)]
    pub name: String,
}

/// Arguments of `profilectl quickstart`.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Folder of fetched datasets.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// The model repository.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Model name.
    #[arg(long, default_value = "ml100k")]
    pub name: String,
    /// Listen address of profiled.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Listen address of profiled's HTTP/JSON API and explanation viewer
    /// (`[http]`; empty = off).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_listen: String,
    /// Prepare the model, print the calls, but do not start the server.
    #[arg(long)]
    pub no_serve: bool,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) async fn connect(addr: &str, secure: &Secure) -> Result<ProfileServiceClient<Channel>> {
    secure.bearer()?;
    let ch = secure
        .endpoint(addr)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr} (is profiled running?)"))?;
    Ok(ProfileServiceClient::new(ch))
}

pub(crate) fn spec(c: &Conn) -> pb::ModelSpec {
    pb::ModelSpec {
        name: c.model.clone(),
        selector: match (&c.version, &c.label) {
            (Some(v), _) => Some(pb::model_spec::Selector::Version(*v)),
            (None, Some(l)) => Some(pb::model_spec::Selector::Label(l.clone())),
            (None, None) => None,
        },
    }
}

pub(crate) fn request<T>(c: &Conn, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(Duration::from_millis(c.timeout_ms));
    // The token was checked by `connect`.
    if let Ok(Some(v)) = c.secure.bearer() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

pub(crate) fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", s.code(), s.message())
}

/// The value kind of each input, from the server's schema of the model.
pub(crate) async fn input_kinds(
    client: &mut ProfileServiceClient<Channel>,
    c: &Conn,
) -> Result<HashMap<String, i32>> {
    let m = client
        .get_model(request(
            c,
            pb::GetModelRequest {
                name: c.model.clone(),
            },
        ))
        .await
        .map_err(status_err)?
        .into_inner()
        .model
        .context("no model in the response")?;
    let mut out = HashMap::new();
    for v in &m.versions {
        if let Some(s) = &v.schema {
            for f in &s.fields {
                out.entry(f.source.clone()).or_insert(f.kind);
            }
        }
    }
    Ok(out)
}

/// The features of `--field`/`--event`; an event without a timestamp gets
/// `first_ts + its position`.
pub(crate) fn build_features_at(
    f: &FeatureArgs,
    kinds: &HashMap<String, i32>,
    first_ts: i64,
) -> Result<pb::UserFeatures> {
    let mut fields = HashMap::new();
    for kv in &f.fields {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--field {kv:?}: expected KEY=VALUE"))?;
        let kind = kinds
            .get(k)
            .copied()
            .unwrap_or(pb::FieldKind::Categorical as i32);
        let value = if kind == pb::FieldKind::Number as i32 {
            pb::field_value::Kind::Number(
                v.parse()
                    .with_context(|| format!("--field {k}: {v:?} is not a number"))?,
            )
        } else if kind == pb::FieldKind::Tags as i32 {
            let mut tags = Vec::new();
            for t in v.split(',').filter(|t| !t.is_empty()) {
                let (tag, w) = match t.split_once(':') {
                    Some((tag, w)) => (
                        tag,
                        Some(
                            w.parse()
                                .with_context(|| format!("--field {k}: weight {w:?}"))?,
                        ),
                    ),
                    None => (t, None),
                };
                tags.push(pb::WeightedTag {
                    tag: tag.to_string(),
                    weight: w,
                });
            }
            pb::field_value::Kind::Tags(pb::TagList { tags })
        } else {
            pb::field_value::Kind::Categorical(v.to_string())
        };
        fields.insert(k.to_string(), pb::FieldValue { kind: Some(value) });
    }
    let mut events = Vec::new();
    for (i, e) in f.events.iter().enumerate() {
        let mut parts = e.split(':');
        let item = parts.next().unwrap_or_default().to_string();
        let timestamp = match parts.next() {
            Some(t) if !t.is_empty() => t
                .parse()
                .with_context(|| format!("--event {e:?}: bad timestamp"))?,
            _ => first_ts + i as i64,
        };
        let rating = match parts.next() {
            Some(r) => Some(
                r.parse()
                    .with_context(|| format!("--event {e:?}: bad rating"))?,
            ),
            None => None,
        };
        events.push(pb::BehaviourEvent {
            item_id: item,
            timestamp,
            rating,
            event_id: String::new(),
        });
    }
    Ok(pb::UserFeatures {
        user_id: String::new(),
        fields,
        events,
    })
}

fn build_features(f: &FeatureArgs, kinds: &HashMap<String, i32>) -> Result<pb::UserFeatures> {
    build_features_at(f, kinds, 0)
}

fn model_ref_json(m: Option<&pb::ModelRef>) -> Value {
    m.map_or(
        Value::Null,
        |m| json!({"name": m.name, "version": m.version, "generation_id": m.generation_id}),
    )
}

fn model_ref_text(m: Option<&pb::ModelRef>) -> String {
    m.map_or_else(
        || "?".into(),
        |m| format!("{} v{} (generation {})", m.name, m.version, m.generation_id),
    )
}

pub(crate) fn vector_values(v: &pb::Vector) -> Vec<f32> {
    v.to_f32().unwrap_or_default()
}

/// Runs `profilectl embed`.
pub fn run_embed(a: EmbedArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut client = connect(&a.conn.addr, &a.conn.secure).await?;
        let mut users = Vec::new();
        if !a.features.fields.is_empty() || !a.features.events.is_empty() || a.user_ids.is_empty() {
            let kinds = input_kinds(&mut client, &a.conn).await?;
            users.push(pb::UserInput {
                source: Some(pb::user_input::Source::Features(build_features(
                    &a.features,
                    &kinds,
                )?)),
                context: None,
            });
        }
        for id in &a.user_ids {
            users.push(pb::UserInput {
                source: Some(pb::user_input::Source::UserId(id.clone())),
                context: None,
            });
        }
        let req = pb::EmbedRequest {
            model: Some(spec(&a.conn)),
            users,
            encoding: if a.f16 {
                pb::VectorEncoding::F16 as i32
            } else {
                pb::VectorEncoding::F32 as i32
            },
            cache: if a.no_cache {
                pb::CacheMode::Bypass as i32
            } else {
                pb::CacheMode::Use as i32
            },
            allow_partial: true,
            request_id: String::new(),
        };
        let r = client
            .embed(request(&a.conn, req))
            .await
            .map_err(status_err)?
            .into_inner();
        if a.conn.json {
            let users: Vec<Value> = r
                .users
                .iter()
                .map(|u| {
                    json!({
                        "user_id": u.user_id,
                        "source": pb::ProfileSource::try_from(u.source).map(|s| s.as_str_name()).unwrap_or("?"),
                        "cache_hit": u.cache_hit,
                        "vector": u.vector.as_ref().map(vector_values),
                        "error": u.error.as_ref().map(|e| json!({"code": e.code, "message": e.message})),
                    })
                })
                .collect();
            let out = json!({
                "model": model_ref_json(r.model.as_ref()),
                "dim": r.dim, "queue_us": r.queue_us, "compute_us": r.compute_us, "users": users,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        println!(
            "{}  dim {}  queue {} µs  compute {} µs",
            model_ref_text(r.model.as_ref()),
            r.dim,
            r.queue_us,
            r.compute_us
        );
        for (i, u) in r.users.iter().enumerate() {
            let who = if u.user_id.is_empty() {
                format!("user {i}")
            } else {
                u.user_id.clone()
            };
            match (&u.vector, &u.error) {
                (_, Some(e)) => println!("{who}: error {}: {}", e.code, e.message),
                (Some(v), None) => {
                    let v = vector_values(v);
                    let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:+.4}")).collect();
                    let src = pb::ProfileSource::try_from(u.source)
                        .map(|s| s.as_str_name().trim_start_matches("PROFILE_SOURCE_").to_lowercase())
                        .unwrap_or_default();
                    println!("{who} [{src}]: {}{}", head.join(" "), if v.len() > 8 { " …" } else { "" });
                }
                (None, None) => println!("{who}: no vector"),
            }
        }
        Ok(())
    })
}

/// Runs `profilectl explain`.
pub fn run_explain(a: ExplainArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut client = connect(&a.conn.addr, &a.conn.secure).await?;
        let kinds = input_kinds(&mut client, &a.conn).await?;
        let method = match a.method.as_str() {
            "occlusion" => pb::ExplainMethod::Occlusion,
            "rollout" | "attention_rollout" => pb::ExplainMethod::AttentionRollout,
            "attention" => pb::ExplainMethod::Attention,
            m => bail!("--method {m:?}: use occlusion, rollout or attention"),
        };
        let target = a.item.as_ref().map(|id| pb::ExplainTarget {
            kind: Some(pb::explain_target::Kind::Item(pb::ItemTarget {
                item_id: id.clone(),
            })),
        });
        let given = !a.features.fields.is_empty() || !a.features.events.is_empty();
        let (features, user_id, context) = match &a.user_id {
            Some(id) => (
                None,
                id.clone(),
                given
                    .then(|| build_features(&a.features, &kinds))
                    .transpose()?,
            ),
            None => (Some(build_features(&a.features, &kinds)?), String::new(), None),
        };
        let req = pb::ExplainRequest {
            model: Some(spec(&a.conn)),
            features,
            user_id,
            context,
            target,
            method: method as i32,
            top_n: a.top_n,
            cache: 0,
            groups_only: false,
        };
        let r = client
            .explain(request(&a.conn, req))
            .await
            .map_err(status_err)?
            .into_inner();
        let gname = |g: i32| {
            pb::DimensionGroup::try_from(g)
                .map(|g| g.as_str_name().trim_start_matches("DIMENSION_GROUP_").to_lowercase())
                .unwrap_or_default()
        };
        if a.conn.json {
            let out = json!({
                "model": model_ref_json(r.model.as_ref()),
                "method": a.method,
                "base_score": r.base_score,
                "groups": r.groups.iter().map(|g| json!({"group": gname(g.group), "value": g.value, "share": g.share, "tokens": g.tokens})).collect::<Vec<_>>(),
                "tokens": r.tokens.iter().map(|t| json!({"label": t.token.as_ref().map(|x| x.label.clone()), "value": t.value, "share": t.share})).collect::<Vec<_>>(),
                "queue_us": r.queue_us, "compute_us": r.compute_us,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        let quantity = if r.value_kind == pb::ValueKind::ScoreDrop as i32 {
            "score drop"
        } else {
            "attention mass"
        };
        println!(
            "{}  method {}  ({quantity})  base score {:.4}  compute {} µs",
            model_ref_text(r.model.as_ref()),
            a.method,
            r.base_score,
            r.compute_us
        );
        println!("groups:");
        for g in &r.groups {
            println!("  {:<12} {:+.4}  {:5.1}%  ({} tokens)", gname(g.group), g.value, g.share * 100.0, g.tokens);
        }
        println!("top tokens:");
        for t in &r.tokens {
            let label = t.token.as_ref().map(|x| x.label.as_str()).unwrap_or("?");
            println!("  {:+.4}  {:5.1}%  {label}", t.value, t.share * 100.0);
        }
        Ok(())
    })
}

/// Runs `profilectl search`.
pub fn run_search(a: SearchArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut client = connect(&a.conn.addr, &a.conn.secure).await?;
        let query = match &a.user_id {
            Some(id) => pb::search_request::Query::UserId(id.clone()),
            None => {
                let kinds = input_kinds(&mut client, &a.conn).await?;
                pb::search_request::Query::Features(build_features(&a.features, &kinds)?)
            }
        };
        let target = match a.target.as_str() {
            "items" => pb::TargetIndex::Items,
            "users" => pb::TargetIndex::Users,
            t => bail!("--target {t:?}: use items or users"),
        };
        let req = pb::SearchRequest {
            model: Some(spec(&a.conn)),
            query: Some(query),
            target: target as i32,
            k: a.k,
            include_attributes: true,
            ..Default::default()
        };
        let r = client
            .search(request(&a.conn, req))
            .await
            .map_err(status_err)?
            .into_inner();
        if a.conn.json {
            let out = json!({
                "model": model_ref_json(r.model.as_ref()),
                "hits": r.hits.iter().map(|h| json!({"id": h.id, "score": h.score})).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        println!("{}", model_ref_text(r.model.as_ref()));
        for (i, h) in r.hits.iter().enumerate() {
            println!("{:>3}. {:<12} {:+.4}", i + 1, h.id, h.score);
        }
        Ok(())
    })
}

/// Runs `profilectl models`.
pub fn run_models(a: ModelsArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut client = connect(&a.conn.addr, &a.conn.secure).await?;
        let models = if a.conn.model.is_empty() {
            client
                .list_models(request(&a.conn, pb::ListModelsRequest::default()))
                .await
                .map_err(status_err)?
                .into_inner()
                .models
        } else {
            client
                .get_model(request(
                    &a.conn,
                    pb::GetModelRequest {
                        name: a.conn.model.clone(),
                    },
                ))
                .await
                .map_err(status_err)?
                .into_inner()
                .model
                .into_iter()
                .collect()
        };
        let state = |s: i32| {
            pb::VersionState::try_from(s)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("VERSION_STATE_")
                        .to_string()
                })
                .unwrap_or_default()
        };
        if a.conn.json {
            let out: Vec<Value> = models
                .iter()
                .map(|m| {
                    json!({
                        "name": m.name, "default_version": m.default_version,
                        "labels": m.labels, "version_policy": m.version_policy,
                        "versions": m.versions.iter().map(|v| json!({
                            "version": v.version, "state": state(v.state), "reason": v.reason,
                            "generation_id": v.generation_id, "is_default": v.is_default,
                            "labels": v.labels, "dim": v.architecture.as_ref().map(|x| x.dim),
                            "metrics": v.metrics,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        for m in &models {
            println!(
                "{}  default v{}  policy {}",
                m.name, m.default_version, m.version_policy
            );
            for v in &m.versions {
                let mut line = format!("  v{:<4} {:<9}", v.version, state(v.state));
                if v.generation_id > 0 {
                    line += &format!(" generation {}", v.generation_id);
                }
                if let Some(ar) = &v.architecture {
                    line += &format!("  dim {} layers {} heads {}", ar.dim, ar.layers, ar.heads);
                }
                if v.is_default {
                    line += "  (default)";
                }
                if !v.labels.is_empty() {
                    line += &format!("  labels: {}", v.labels.join(", "));
                }
                if !v.reason.is_empty() {
                    line += &format!("  — {}", v.reason);
                }
                println!("{line}");
                if let Some(s) = &v.schema {
                    let inputs: Vec<String> = s
                        .fields
                        .iter()
                        .filter(|f| !f.source.starts_with("events."))
                        .map(|f| f.source.clone())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    println!(
                        "        inputs: {}; max events {}",
                        inputs.join(", "),
                        s.max_events
                    );
                }
            }
        }
        Ok(())
    })
}

/// Runs `profilectl publish`.
pub fn run_publish(a: PublishArgs) -> Result<()> {
    let (version, dir) = profiled_store::publish(&a.src, &a.repo, &a.name)?;
    println!(
        "published {} as {} version {version} ({})",
        a.src.display(),
        a.name,
        dir.display()
    );
    Ok(())
}

fn sibling_exe(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("no directory of profilectl")?;
    let p = dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found next to profilectl: build it with `cargo build --release -p profiled-server`",
            p.display()
        );
    }
    Ok(p)
}

fn run_self(args: &[&str]) -> Result<()> {
    let me = std::env::current_exe()?;
    eprintln!("$ profilectl {}", args.join(" "));
    let st = Command::new(me).args(args).status()?;
    if !st.success() {
        bail!("profilectl {} failed ({st})", args.join(" "));
    }
    Ok(())
}

fn latest_version_dir(model_dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(model_dir).ok()?.flatten() {
        let name = e.file_name();
        let Some(v) = name.to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if e.path().join("model.json").is_file() && best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, e.path()));
        }
    }
    best.map(|(_, p)| p)
}

/// Runs `profilectl quickstart`.
pub fn run_quickstart(a: QuickstartArgs) -> Result<()> {
    let model_dir = a.models.join(&a.name);
    if latest_version_dir(&model_dir).is_none() {
        let dataset = a.data_dir.join("ml-100k");
        let data = a.data_dir.display().to_string();
        if !dataset.exists() {
            run_self(&["data", "fetch", "ml-100k", "--data-dir", &data])?;
        }
        let build = a.data_dir.join("quickstart-build").join(&a.name);
        if latest_version_dir(&build).is_none() {
            let out = build.display().to_string();
            run_self(&[
                "train",
                "--dataset",
                "ml-100k",
                "--data-dir",
                &data,
                "--out",
                &out,
                "--all-events",
            ])?;
        }
        let src = latest_version_dir(&build).context("training wrote no version")?;
        if !src.join("items.index").exists() {
            let model = src.display().to_string();
            run_self(&[
                "index",
                "build",
                "--model",
                &model,
                "--dataset",
                "ml-100k",
                "--data-dir",
                &data,
            ])?;
        }
        let (v, dir) = profiled_store::publish(&src, &a.models, &a.name)?;
        eprintln!(
            "published {} as {} version {v} ({})",
            src.display(),
            a.name,
            dir.display()
        );
    } else {
        eprintln!("{} already has a version: serving it", model_dir.display());
    }
    let addr = a.listen.clone();
    let calls = format!(
        r#"
Ready. Try (in another terminal):

  profilectl models --model {name}
  profilectl embed --model {name} --field age=24 --field gender=M --field occupation=technician \
      --field zip_code=85711 --event 50:874965758:5 --event 172:874965478:4
  profilectl explain --model {name} --field age=24 --field occupation=technician \
      --event 50:874965758:5 --method occlusion --top-n 5
  profilectl search --model {name} --field occupation=technician --event 50:874965758:5 --k 10
  profilectl search --model {name} --user-id 196 --target users --k 10

Live user state: user 196's profile from the users index, then two events
tracked now, then the very next profile by id — computed from the live state:

  profilectl embed --model {name} --user-id 196
  profilectl track --model {name} --user-id 196 --event 50 --event 172::4 --field occupation=writer
  profilectl embed --model {name} --user-id 196
  profilectl user get --user-id 196

  curl -s http://{http}/v1/models
  curl -s http://{http}/v1/explain -H 'content-type: application/json' \
      -d '{{"model": {{"name": "{name}"}}, "features": {{"fields": {{"age": 24, "occupation": "technician"}}, "events": [{{"item_id": "50", "timestamp": 874965758, "rating": 5}}]}}, "top_n": 5}}'
  explanation viewer: http://{http}/ui/    OpenAPI: http://{http}/openapi.json

  grpcurl -plaintext {addr} list
  grpcurl -plaintext -d '{{"service": "profiled.v1.ProfileService"}}' {addr} grpc.health.v1.Health/Check
  grpcurl -plaintext -d '{{"name": "{name}"}}' {addr} profiled.v1.ProfileService/GetModel
  grpcurl -plaintext -d '{{"model": {{"name": "{name}"}}, "users": [{{"features": {{"fields": {{"age": {{"number": 24}}, "occupation": {{"categorical": "technician"}}}}, "events": [{{"item_id": "50", "timestamp": 874965758, "rating": 5}}]}}}}]}}' \
      {addr} profiled.v1.ProfileService/Embed
"#,
        name = a.name,
        http = if a.http_listen.is_empty() {
            "(http off)"
        } else {
            a.http_listen.as_str()
        },
    );
    if a.no_serve {
        print!("{calls}");
        return Ok(());
    }
    let bin = sibling_exe("profiled")?;
    eprintln!(
        "$ profiled --listen {addr} --models {} (http: {})",
        a.models.display(),
        if a.http_listen.is_empty() {
            "off"
        } else {
            a.http_listen.as_str()
        }
    );
    let mut cmd = Command::new(bin);
    cmd.arg("--listen")
        .arg(&addr)
        .arg("--models")
        .arg(&a.models)
        // The live user state (embedded store) lives beside the dataset.
        .env("PROFILED__STATE__EMBEDDED__DIR", a.data_dir.join("state"))
        .stdout(Stdio::piped());
    // The HTTP/JSON API and the explanation viewer at /ui/ ([http]).
    if !a.http_listen.is_empty() {
        cmd.env("PROFILED__HTTP__ENABLED", "true")
            .env("PROFILED__HTTP__ADDR", &a.http_listen);
    }
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().context("no stdout of profiled")?;
    let mut lines = BufReader::new(stdout).lines();
    match lines.next() {
        Some(Ok(l)) => println!("profiled: {l}"),
        _ => {
            let st = child.wait()?;
            bail!("profiled exited before listening ({st})");
        }
    }
    // Wait until the model is READY (health SERVING) before printing the calls.
    let url = format!("http://{addr}");
    runtime()?.block_on(async {
        for _ in 0..600 {
            if let Ok(mut c) = connect(&url, &Secure::default()).await
                && c.list_models(pb::ListModelsRequest::default())
                    .await
                    .is_ok_and(|r| r.into_inner().models.iter().any(|m| m.default_version > 0))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    print!("{calls}");
    println!("profiled runs until ctrl-c.");
    std::thread::spawn(move || for _ in lines {});
    let st = child.wait()?;
    if !st.success() {
        bail!("profiled exited with {st}");
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_token_options() {
        let plain = Secure::default();
        assert!(!plain.tls("http://127.0.0.1:1"));
        assert!(plain.endpoint("http://127.0.0.1:1").is_ok());
        assert_eq!(plain.bearer().unwrap(), None);
        // TLS without a CA to trust is a clear error.
        let e = plain.endpoint("https://127.0.0.1:1").unwrap_err();
        assert!(e.to_string().contains("--tls-ca"), "{e}");
        let missing = Secure {
            tls_ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..Secure::default()
        };
        assert!(missing.tls("http://127.0.0.1:1"));
        let e = missing.endpoint("http://127.0.0.1:1").unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/ca.pem"), "{e:#}");
        // The token becomes `authorization: Bearer ...`; a token that cannot
        // be a header value is refused.
        let t = Secure {
            token: Some(" abc ".into()),
            ..Secure::default()
        };
        assert_eq!(t.bearer().unwrap().unwrap().to_str().unwrap(), "Bearer abc");
        let bad = Secure {
            token: Some("a\nb".into()),
            ..Secure::default()
        };
        assert!(bad.bearer().is_err());
    }
}
