//! Typed configuration: defaults → TOML file → `PROFILED__A__B` environment
//! variables → command-line flags. `profiled --print-config` prints the
//! effective result as TOML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listener and transport settings.
    pub server: ServerConfig,
    /// The model repository.
    pub models: ModelsConfig,
    /// Request-side limits.
    pub limits: Limits,
    /// The hot profile cache.
    pub cache: CacheConfig,
    /// How each version's indexes are served.
    pub index: IndexConfig,
    /// The per-model batcher and its workers.
    pub batcher: BatcherConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// Logging.
    pub log: LogConfig,
    /// The ModelAdmin service.
    pub admin: AdminConfig,
    /// OpenTelemetry span export (builds with the cargo feature `otel`).
    pub otel: OtelConfig,
    /// TLS on the gRPC port (see docs/security.md).
    pub tls: TlsConfig,
    /// Bearer tokens and rate limits of the data plane (see docs/security.md).
    pub auth: AuthConfig,
    /// Live user state (`[state]`).
    pub state: StateConfig,
    /// The HTTP/JSON API, its OpenAPI document and the explanation viewer
    /// on a listener of their own (see docs/api.md, "HTTP/JSON").
    pub http: HttpConfig,
}

/// The HTTP/JSON edge (`[http]`): the same operations, limits, tokens and
/// TLS (when `[tls]` is set) as the gRPC port, on its own listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve it (off by default; `profilectl quickstart` turns it on).
    pub enabled: bool,
    /// Listen address (`127.0.0.1:0` picks a free port; the bound address
    /// is printed on stdout as `http listening on ADDR`).
    pub addr: String,
    /// Serve the explanation viewer at `/ui/`.
    pub ui: bool,
    /// Benchmarks only (`server-report`): `POST /bench/echo?dim=N` decodes an
    /// Embed body like `/v1/embed` and answers an Embed-shaped response of
    /// `N`-component vectors without any work — the HTTP transport's floor.
    pub bench_echo: bool,
    /// Connections open at once on this listener (idle keep-alive ones
    /// included); one more is answered `429` RESOURCE_EXHAUSTED and closed
    /// (closed before the handshake with TLS). Gauge
    /// `profiled_http_connections_open`, counter
    /// `profiled_http_connections_closed_total{reason="limit"}`. Separate
    /// from the gRPC port's `server.max_connections`.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: false,
            addr: "127.0.0.1:8080".into(),
            ui: true,
            bench_echo: false,
            max_connections: 1_024,
        }
    }
}

/// gRPC listener and transport settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address (`127.0.0.1:0` picks a free port; the bound address is
    /// printed on stdout as `listening on ADDR`).
    pub listen: String,
    /// Also write the bound address into this file (written temp + rename).
    pub port_file: Option<PathBuf>,
    /// Largest request message accepted (bytes).
    pub max_request_bytes: usize,
    /// Largest response message sent (bytes).
    pub max_response_bytes: usize,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// Calls in progress per connection before new calls are shed with
    /// RESOURCE_EXHAUSTED (keep it below `max_concurrent_streams`).
    pub concurrency_per_connection: usize,
    /// Grace period of the drain after SIGTERM / ctrl-c (milliseconds).
    pub grace_period_ms: u64,
    /// Close connections older than this (milliseconds; 0 = never), so
    /// clients rebalance.
    pub max_connection_age_ms: u64,
    /// A second, plaintext listener serving only `grpc.health.v1` (for
    /// probes that cannot speak TLS); empty = off.
    pub health_listen: String,
    /// Async (network) threads of the runtime; 0 = one per core. The
    /// encoder runs on the batcher's own workers, not on these: on a small
    /// host shared with its clients, fewer async threads cost less CPU per
    /// call (docs/operations.md).
    pub io_threads: usize,
    /// Connections open at once; one more is closed when accepted (gauge
    /// `profiled_connections_open`, counter
    /// `profiled_connections_closed_total{reason="limit"}`).
    pub max_connections: usize,
    /// A new connection must finish its handshake (TLS, then the HTTP/2
    /// client preface) within this time or is closed (milliseconds).
    pub handshake_timeout_ms: u64,
    /// HTTP/2 PING sent on a connection after this much silence
    /// (milliseconds; 0 = never) ...
    pub http2_keepalive_interval_ms: u64,
    /// ... and the connection is closed when the PING is not answered
    /// within this time (milliseconds).
    pub http2_keepalive_timeout_ms: u64,
    /// Largest request metadata (header list, HTTP/2 accounting: name +
    /// value + 32 bytes per entry) a call may carry: a larger one is
    /// refused alone with OUT_OF_RANGE naming this key.
    pub max_metadata_bytes: usize,
    /// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE: header lists up to this size
    /// reach the check of `max_metadata_bytes`; a larger one is refused by
    /// HTTP/2 for that call alone (HTTP 431, RST_STREAM) while its frames
    /// stay within 1.25 × this size, beyond which HTTP/2 closes the
    /// connection (ENHANCE_YOUR_CALM). Keep it well above
    /// `max_metadata_bytes`.
    pub max_header_list_bytes: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:50051".into(),
            port_file: None,
            max_request_bytes: 4 << 20,
            max_response_bytes: 16 << 20,
            max_concurrent_streams: 256,
            concurrency_per_connection: 128,
            grace_period_ms: 10_000,
            max_connection_age_ms: 0,
            health_listen: String::new(),
            io_threads: 0,
            max_connections: 4_096,
            handshake_timeout_ms: 10_000,
            http2_keepalive_interval_ms: 60_000,
            http2_keepalive_timeout_ms: 20_000,
            max_metadata_bytes: 16 << 10,
            max_header_list_bytes: 1 << 20,
        }
    }
}

/// The model repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Repository root (`<repository>/<name>/<version>/`).
    pub repository: PathBuf,
    /// The model requests with an empty name get (default: the only model).
    pub default_model: Option<String>,
    /// Version policy of every model: `latest`, `latest:N` or `pinned:V`.
    pub policy: String,
    /// Version policy per model name (overrides `policy`).
    pub policies: BTreeMap<String, String>,
    /// Repository poll period (milliseconds), the watcher's safety net.
    pub poll_interval_ms: u64,
    /// Debounce of file-system events (milliseconds).
    pub debounce_ms: u64,
    /// Nice increment (0–19) of the thread that loads a new version: a load
    /// under traffic takes the CPU the requests leave (0 = same priority).
    pub load_nice: i32,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            repository: PathBuf::from("models"),
            default_model: None,
            policy: "latest".into(),
            policies: BTreeMap::new(),
            poll_interval_ms: 5_000,
            debounce_ms: 300,
            load_nice: 10,
        }
    }
}

/// Request-side limits (exceeding one is INVALID_ARGUMENT naming it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Users per Embed request.
    pub max_users_per_call: usize,
    /// Behaviour events per user.
    pub max_events_per_user: usize,
    /// Feature inputs per user.
    pub max_fields_per_user: usize,
    /// Tags per tag-list value.
    pub max_tags_per_field: usize,
    /// Bytes of any id, name or categorical value.
    pub max_string_bytes: usize,
    /// Search `k`.
    pub max_k: u32,
    /// Seeds in a seed set.
    pub max_seeds: usize,
    /// Attribute conditions per Search filter.
    pub max_filter_conditions: usize,
    /// Values per attribute condition.
    pub max_filter_values: usize,
    /// Ids in a filter's `allow_ids` + `deny_ids`.
    pub max_filter_ids: usize,
    /// Explain `top_n`.
    pub max_explain_top_n: u32,
    /// EmbedStream batches in flight per stream.
    pub stream_max_in_flight: usize,
    /// Longest user id of Track, GetUser, DeleteUser and by-id queries
    /// (bytes).
    pub max_user_id_bytes: usize,
    /// Users per Track call (or TrackStream message).
    pub max_track_users_per_call: usize,
    /// Events per Track call, all users together.
    pub max_track_events_per_call: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_users_per_call: 256,
            max_events_per_user: 1_000,
            max_fields_per_user: 64,
            max_tags_per_field: 256,
            max_string_bytes: 256,
            max_k: 1_000,
            max_seeds: 10_000,
            max_filter_conditions: 16,
            max_filter_values: 1_024,
            max_filter_ids: 100_000,
            max_explain_top_n: 256,
            stream_max_in_flight: 16,
            max_user_id_bytes: 128,
            max_track_users_per_call: 256,
            max_track_events_per_call: 10_000,
        }
    }
}

/// Where live user state is kept (`state.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// A file under `state.dir` (the default): one server, durable, group
    /// commit.
    #[default]
    Embedded,
    /// Redis, a single node or a Redis Cluster (`[state.redis]`): state
    /// shared by every replica.
    Redis,
    /// No live state: Track, GetUser and DeleteUser answer
    /// FAILED_PRECONDITION; a user id resolves to the users index only.
    Off,
}

/// Live user state (`[state]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// `embedded` (default), `redis` or `off`.
    pub backend: StateBackend,
    /// The embedded store (`[state.embedded] dir, queue`): its directory
    /// (default `data/state`; one server process per directory).
    pub embedded: profiled_state::embedded::EmbeddedConfig,
    /// Redis or Redis Cluster (`[state.redis] urls, cluster, timeouts,
    /// key_prefix, …`), for `backend = "redis"`.
    pub redis: profiled_state::redis::RedisConfig,
    /// Events kept per user (the newest); never fewer than the largest
    /// `max_events` of the models the server has served.
    pub retain_events: usize,
    /// Events more than this many seconds in the future are refused.
    pub max_clock_skew_s: i64,
    /// Consume events from a Redis stream (`[state.stream]`) into the store.
    pub ingest: bool,
    /// The Redis Streams source (`[state.stream]`: `stream`, `group`,
    /// `consumer`, `batch`, … and `[state.stream.redis]`).
    pub stream: profiled_state::source::StreamConfig,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: StateBackend::Embedded,
            embedded: profiled_state::embedded::EmbeddedConfig::default(),
            redis: profiled_state::redis::RedisConfig::default(),
            retain_events: 200,
            max_clock_skew_s: 300,
            ingest: false,
            stream: profiled_state::source::StreamConfig::default(),
        }
    }
}

/// The engine behind each version's items and users indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexBackend {
    /// The index files of the version directory, memory-mapped, searched in
    /// process (exact SIMD scan, HNSW sidecar).
    #[default]
    Local,
}

/// How each version's indexes are served (`[index]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// The backend (`local`, the default and only one in this build; a
    /// distributed vector engine is added as another `BackendFactory`).
    pub backend: IndexBackend,
    /// Keep each serving version's users index current with the live user
    /// state (the live users index, docs/search.md): tracked users are
    /// re-encoded and replace their rows, new users are added, erased users
    /// removed at once. Only with a state store (`state.backend` not off).
    pub live: bool,
    /// A tracked change shows in lookalike results within about this many
    /// ms (the refresher's bound; `profiled_live_index_lag_seconds` shows
    /// the real lag).
    pub live_refresh_ms: u64,
    /// Merge the overlay into a new index file when it reaches this share
    /// of the base rows.
    pub live_merge_share: f64,
    /// Where merged users index files go (removed when superseded); default
    /// a `profiled-live-<pid>` directory in the system temp directory.
    pub live_merge_dir: Option<PathBuf>,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            backend: IndexBackend::Local,
            live: true,
            live_refresh_ms: 1000,
            live_merge_share: 0.1,
            live_merge_dir: None,
        }
    }
}

impl IndexConfig {
    /// The factory that opens the indexes of a version; `live_users`: open
    /// users indexes as live indexes (when there is user state to follow).
    pub fn factory(&self, live_users: bool) -> std::sync::Arc<dyn profiled_index::BackendFactory> {
        match self.backend {
            IndexBackend::Local => std::sync::Arc::new(profiled_index::LocalFactory {
                live: (live_users && self.live).then(|| profiled_index::LiveConfig {
                    merge_share: self.live_merge_share,
                    merge_dir: Some(self.live_merge_dir.clone().unwrap_or_else(|| {
                        std::env::temp_dir().join(format!("profiled-live-{}", std::process::id()))
                    })),
                    ..profiled_index::LiveConfig::default()
                }),
                ..profiled_index::LocalFactory::default()
            }),
        }
    }
}

/// The hot profile cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Turn the cache on.
    pub enabled: bool,
    /// Time to live of an entry (seconds).
    pub ttl_secs: u64,
    /// Byte budget (keys + vectors).
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            ttl_secs: 300,
            max_bytes: 256 << 20,
        }
    }
}

/// The per-model batcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatcherConfig {
    /// Users per encoder batch.
    pub max_batch: usize,
    /// How long the first job of a batch waits for company (microseconds;
    /// 0 = take what is queued and go: batches still form under load, and
    /// the encoder costs about the same per user at any batch size).
    pub max_delay_us: u64,
    /// Queued users per model before RESOURCE_EXHAUSTED.
    pub queue_capacity: usize,
    /// Worker threads per model (0 = available cores).
    pub workers: usize,
    /// Nice increment (0–19) of the worker threads (0 = the same priority
    /// as the async threads; measured best here, see docs/operations.md).
    pub worker_nice: i32,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_batch: 32,
            max_delay_us: 0,
            queue_capacity: 1024,
            workers: 0,
            worker_nice: 0,
        }
    }
}

/// Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address of the `/metrics` HTTP endpoint; empty = off.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter (`RUST_LOG` syntax), e.g. `info,profiled_store=debug`.
    pub filter: String,
    /// One JSON object per line instead of text.
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: "info".into(),
            json: false,
        }
    }
}

/// The ModelAdmin service: enabled only when a token is configured; every
/// call needs one of its tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer tokens, one a line (`TOKEN` or `NAME TOKEN`, `#` comments).
    pub token_file: Option<PathBuf>,
    /// Name of an environment variable holding tokens (comma separated).
    pub token_env: Option<String>,
}

/// TLS on the gRPC port: on when `cert_file` and `key_file` are set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates: when set, clients must present a certificate
    /// signed by one of them (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are re-read (milliseconds); changed files apply
    /// to new connections without a restart.
    pub reload_interval_ms: u64,
    /// Connections that have not finished the handshake by then are closed
    /// (milliseconds).
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval_ms: 5_000,
            handshake_timeout_ms: 10_000,
        }
    }
}

impl TlsConfig {
    /// True when TLS is configured.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Bearer tokens and per-token rate limits of `ProfileService`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens, one a line (`TOKEN` or `NAME TOKEN`, `#` comments).
    pub token_file: Option<PathBuf>,
    /// Name of an environment variable holding tokens (comma separated).
    pub token_env: Option<String>,
    /// Every ProfileService call needs a valid token (otherwise calls
    /// without a token pass; a wrong token is always refused).
    pub required: bool,
    /// Requests per second of each token (0 = unlimited).
    pub rate_limit_per_sec: u32,
    /// Burst of each token's limiter (0 = same as the rate).
    pub rate_limit_burst: u32,
    /// Requests per second per token name, overriding `rate_limit_per_sec`.
    pub token_rates: BTreeMap<String, u32>,
    /// Requests per second shared by all ProfileService calls without a
    /// token (when `required = false`; 0 = unlimited; burst
    /// `rate_limit_burst`).
    pub anonymous_rate_limit_per_sec: u32,
    /// How often the token files (`auth.token_file`, `admin.token_file`)
    /// are re-read, so tokens rotate without a restart (milliseconds; 0 =
    /// never). A file that cannot be used keeps the previous tokens.
    pub reload_interval_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_file: None,
            token_env: None,
            required: false,
            rate_limit_per_sec: 0,
            rate_limit_burst: 0,
            token_rates: BTreeMap::new(),
            anonymous_rate_limit_per_sec: 0,
            reload_interval_ms: 5_000,
        }
    }
}

/// OpenTelemetry span export over OTLP/gRPC. Only builds with the cargo
/// feature `otel` export; other builds warn when an endpoint is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtelConfig {
    /// Collector endpoint, e.g. `http://127.0.0.1:4317`; empty = off.
    pub endpoint: String,
    /// `service.name` resource attribute of the exported spans.
    pub service_name: String,
}

impl Default for OtelConfig {
    fn default() -> Self {
        OtelConfig {
            endpoint: String::new(),
            service_name: "profiled".into(),
        }
    }
}

/// Command-line overrides (the last layer).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    /// `server.listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `server.port_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_file: Option<PathBuf>,
    /// `models.repository`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<PathBuf>,
    /// `metrics.listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// `log.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_json: Option<bool>,
    /// `admin.token_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// `tls.cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// `tls.key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// `tls.client_ca_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// `auth.token_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_file: Option<PathBuf>,
    /// `auth.required`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_required: Option<bool>,
    /// `server.health_listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<String>,
}

/// Why a configuration was refused. Every message names the setting (its
/// TOML path) or the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file does not exist.
    #[error("{0}: config file not found")]
    FileNotFound(PathBuf),
    /// A layer could not be read or does not fit the schema (unknown key,
    /// wrong type, unknown enum value); the message comes from the parser.
    #[error("configuration: {0}")]
    Parse(String),
    /// A value the schema accepts but the server cannot use.
    #[error("configuration: {key}: {why}")]
    Invalid {
        /// The setting, e.g. `batcher.max_batch`.
        key: String,
        /// What is wrong and what is allowed.
        why: String,
    },
    /// A token file or variable (`auth.*`, `admin.*`) is unreadable or
    /// malformed; the message names it.
    #[error("{0}")]
    Tokens(String),
    /// A TLS certificate or key file is unreadable or malformed.
    #[error("{0}")]
    Tls(String),
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for `key`.
    pub fn invalid(key: impl Into<String>, why: impl std::fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            why: why.to_string(),
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (when given), then `PROFILED__A__B`
    /// environment variables (e.g. `PROFILED__SERVER__LISTEN`), then `cli`.
    pub fn load(file: Option<&Path>, cli: &Overrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.is_file() {
                return Err(ConfigError::FileNotFound(f.to_path_buf()));
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig.merge(Env::prefixed("PROFILED__").split("__"));
        let mut over = serde_json::Map::new();
        let mut put = |section: &str, key: &str, v: serde_json::Value| {
            let s = over
                .entry(section.to_string())
                .or_insert_with(|| serde_json::json!({}));
            if let Some(o) = s.as_object_mut() {
                o.insert(key.to_string(), v);
            }
        };
        if let Some(v) = &cli.listen {
            put("server", "listen", v.clone().into());
        }
        if let Some(v) = &cli.port_file {
            put("server", "port_file", v.display().to_string().into());
        }
        if let Some(v) = &cli.repository {
            put("models", "repository", v.display().to_string().into());
        }
        if let Some(v) = &cli.metrics_listen {
            put("metrics", "listen", v.clone().into());
        }
        if let Some(v) = cli.log_json {
            put("log", "json", v.into());
        }
        if let Some(v) = &cli.admin_token_file {
            put("admin", "token_file", v.display().to_string().into());
        }
        if let Some(v) = &cli.tls_cert {
            put("tls", "cert_file", v.display().to_string().into());
        }
        if let Some(v) = &cli.tls_key {
            put("tls", "key_file", v.display().to_string().into());
        }
        if let Some(v) = &cli.tls_client_ca {
            put("tls", "client_ca_file", v.display().to_string().into());
        }
        if let Some(v) = &cli.auth_token_file {
            put("auth", "token_file", v.display().to_string().into());
        }
        if let Some(v) = cli.auth_required {
            put("auth", "required", v.into());
        }
        if let Some(v) = &cli.health_listen {
            put("server", "health_listen", v.clone().into());
        }
        fig = fig.merge(Serialized::defaults(serde_json::Value::Object(over)));
        let cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError::invalid(k, why));
        if self.server.max_concurrent_streams == 0 {
            return bad("server.max_concurrent_streams", "must be >= 1");
        }
        if self.server.concurrency_per_connection == 0 {
            return bad("server.concurrency_per_connection", "must be >= 1");
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections", "must be >= 1");
        }
        if self.server.handshake_timeout_ms == 0 {
            return bad("server.handshake_timeout_ms", "must be >= 1");
        }
        if self.server.http2_keepalive_interval_ms > 0
            && self.server.http2_keepalive_timeout_ms == 0
        {
            return bad("server.http2_keepalive_timeout_ms", "must be >= 1");
        }
        if (self.server.max_header_list_bytes as usize) < self.server.max_metadata_bytes {
            return bad(
                "server.max_header_list_bytes",
                "must be >= server.max_metadata_bytes (the larger, HTTP/2 limit comes first)",
            );
        }
        if self.http.enabled && self.http.addr.is_empty() {
            return bad("http.addr", "must be set when http.enabled is true");
        }
        if self.http.max_connections == 0 {
            return bad("http.max_connections", "must be >= 1");
        }
        if self.batcher.max_batch == 0 {
            return bad("batcher.max_batch", "must be >= 1");
        }
        if !(0..=19).contains(&self.batcher.worker_nice) {
            return bad("batcher.worker_nice", "must be between 0 and 19");
        }
        if !(0..=19).contains(&self.models.load_nice) {
            return bad("models.load_nice", "must be between 0 and 19");
        }
        if self.batcher.queue_capacity == 0 {
            return bad("batcher.queue_capacity", "must be >= 1");
        }
        if self.limits.max_users_per_call == 0 {
            return bad("limits.max_users_per_call", "must be >= 1");
        }
        if self.limits.max_user_id_bytes == 0 {
            return bad("limits.max_user_id_bytes", "must be >= 1");
        }
        if self.limits.max_track_users_per_call == 0 {
            return bad("limits.max_track_users_per_call", "must be >= 1");
        }
        if self.state.retain_events == 0 {
            return bad("state.retain_events", "must be >= 1");
        }
        if self.state.max_clock_skew_s < 0 {
            return bad("state.max_clock_skew_s", "must be >= 0");
        }
        if self.state.backend == StateBackend::Redis && self.state.redis.urls.is_empty() {
            return bad("state.redis.urls", "needs at least one address");
        }
        if self.index.live_refresh_ms == 0 {
            return bad("index.live_refresh_ms", "must be >= 1");
        }
        if !(self.index.live_merge_share > 0.0 && self.index.live_merge_share <= 4.0) {
            return bad("index.live_merge_share", "must be in (0, 4]");
        }
        if self.state.ingest && self.state.backend == StateBackend::Off {
            return bad("state.ingest", "needs a state backend (embedded or redis)");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return bad("tls", "set both cert_file and key_file (or neither)");
        }
        if self.tls.client_ca_file.is_some() && !self.tls.enabled() {
            return bad("tls.client_ca_file", "needs tls.cert_file and tls.key_file");
        }
        if self.tls.reload_interval_ms == 0 {
            return bad("tls.reload_interval_ms", "must be >= 1");
        }
        if self.tls.handshake_timeout_ms == 0 {
            return bad("tls.handshake_timeout_ms", "must be >= 1");
        }
        if self.auth.required && self.auth.token_file.is_none() && self.auth.token_env.is_none() {
            return bad(
                "auth.required",
                "needs tokens: set auth.token_file or auth.token_env",
            );
        }
        self.models
            .policy
            .parse::<profiled_store::VersionPolicy>()
            .map_err(|e| ConfigError::invalid("models.policy", e))?;
        for (m, p) in &self.models.policies {
            p.parse::<profiled_store::VersionPolicy>()
                .map_err(|e| ConfigError::invalid(format!("models.policies.{m}"), e))?;
        }
        Ok(())
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The ModelAdmin tokens (from `admin.token_file` and/or
    /// `admin.token_env`); empty = ModelAdmin off. Never logged.
    pub fn admin_tokens(&self) -> Result<Vec<crate::auth::TokenEntry>, ConfigError> {
        crate::auth::load_tokens(
            "admin",
            self.admin.token_file.as_deref(),
            self.admin.token_env.as_deref(),
        )
        .map_err(ConfigError::Tokens)
    }

    /// The data-plane tokens (from `auth.token_file` and/or `auth.token_env`).
    pub fn auth_tokens(&self) -> Result<Vec<crate::auth::TokenEntry>, ConfigError> {
        crate::auth::load_tokens(
            "auth",
            self.auth.token_file.as_deref(),
            self.auth.token_env.as_deref(),
        )
        .map_err(ConfigError::Tokens)
    }

    /// The per-token rate limits of `[auth]`.
    pub fn rate_limits(&self) -> crate::auth::RateLimits {
        crate::auth::RateLimits {
            per_sec: self.auth.rate_limit_per_sec,
            burst: self.auth.rate_limit_burst,
            per_token: self.auth.token_rates.clone(),
            anonymous_per_sec: self.auth.anonymous_rate_limit_per_sec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order() {
        let dir = std::env::temp_dir().join(format!("profiled-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "[server]\nlisten = \"0.0.0.0:1\"\n[limits]\nmax_k = 7\n[batcher]\nmax_batch = 3\n",
        )
        .unwrap();
        let cli = Overrides {
            listen: Some("127.0.0.1:2".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(&f), &cli).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:2");
        assert_eq!(c.limits.max_k, 7);
        assert_eq!(c.batcher.max_batch, 3);
        assert_eq!(c.limits.max_users_per_call, 256);
        let again: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(again, c);
        std::fs::write(&f, "[server]\nlisen = 1\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());
        // The index backend: `local` (the default) and nothing else here.
        std::fs::write(&f, "[index]\nbackend = \"local\"\n").unwrap();
        let c = Config::load(Some(&f), &Overrides::default()).unwrap();
        assert_eq!(c.index.backend, IndexBackend::Local);
        assert_eq!(c.index.factory(true).name(), "local");
        std::fs::write(&f, "[index]\nbackend = \"faraway\"\n").unwrap();
        let e = Config::load(Some(&f), &Overrides::default()).unwrap_err();
        assert!(matches!(e, ConfigError::Parse(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("faraway") && e.contains("local"), "{e}");
        // A value serde accepts but the server cannot use names its key.
        std::fs::write(&f, "[batcher]\nmax_batch = 0\n").unwrap();
        assert_eq!(
            Config::load(Some(&f), &Overrides::default()).unwrap_err(),
            ConfigError::invalid("batcher.max_batch", "must be >= 1")
        );
        let missing = dir.join("absent.toml");
        assert_eq!(
            Config::load(Some(&missing), &Overrides::default()).unwrap_err(),
            ConfigError::FileNotFound(missing.clone())
        );
    }
}
