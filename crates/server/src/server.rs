//! Wiring: store + engine + tonic server (limits, load shedding), health,
//! reflection, metrics, and the graceful drain.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use profiled_proto::v1::model_admin_server::ModelAdminServer;
use profiled_proto::v1::profile_service_server::ProfileServiceServer;
use profiled_proto::{MODEL_ADMIN_NAME, PROFILE_SERVICE_NAME};
use profiled_store::{Store, StoreConfig, VersionPolicy};
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;

use crate::auth::{Authenticator, RateLimits};
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::service::{AdminApi, ProfileApi};
use crate::tls::{TlsFiles, TlsReloader, tls_incoming};

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The metrics endpoint could not start.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The live user state store could not be opened.
    #[error("user state: {0}")]
    State(String),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Writing the port file failed.
    #[error("port file {path}: {source}")]
    PortFile {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Opens the live user state store of `state.backend` (`None` when off).
/// A store that cannot be opened (a directory in use, Redis unreachable)
/// stops the server with a message naming it.
pub async fn open_state(
    cfg: &Config,
) -> Result<Option<Arc<dyn profiled_state::UserStateStore>>, ServeError> {
    use crate::config::StateBackend;
    let backend = match cfg.state.backend {
        StateBackend::Off => return Ok(None),
        StateBackend::Embedded => profiled_state::Backend::Embedded,
        StateBackend::Redis => profiled_state::Backend::Redis,
    };
    let c = profiled_state::StateConfig {
        backend,
        embedded: cfg.state.embedded.clone(),
        redis: cfg.state.redis.clone(),
    };
    // The embedded open reads the file and recovers it: off the async threads.
    let store = tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(profiled_state::open(&c))
    })
    .await
    .map_err(|e| ServeError::State(format!("opening the state store: {e}")))?
    .map_err(|e| ServeError::State(e.to_string()))?;
    Ok(Some(store))
}

/// Starts the Redis Streams source of `[state.stream]` into `state` when
/// `state.ingest` is on; it runs until `shutdown` turns true. `policy` gives
/// the apply rules of each batch ([`Engine::ingest_policy`]).
pub fn spawn_ingest(
    cfg: &Config,
    state: &Arc<dyn profiled_state::UserStateStore>,
    policy: profiled_state::PolicyFn,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    use profiled_state::source::EventSource;
    if !cfg.state.ingest {
        return None;
    }
    let source = profiled_state::source::RedisStreamSource::new(cfg.state.stream.clone());
    let state = state.clone();
    Some(tokio::spawn(async move {
        if let Err(e) = source.run(state, policy, shutdown).await {
            tracing::error!(error = %e, "the event stream source stopped");
        }
    }))
}

/// The store configuration of a server configuration.
pub fn store_config(cfg: &Config) -> Result<StoreConfig, ServeError> {
    let mut s = StoreConfig::new(&cfg.models.repository);
    s.default_policy = cfg
        .models
        .policy
        .parse::<VersionPolicy>()
        .map_err(|e| ConfigError::invalid("models.policy", e))?;
    for (m, p) in &cfg.models.policies {
        let p = p
            .parse::<VersionPolicy>()
            .map_err(|e| ConfigError::invalid(format!("models.policies.{m}"), e))?;
        s.policies.insert(m.clone(), p);
    }
    s.default_model = cfg.models.default_model.clone();
    s.poll_interval = Duration::from_millis(cfg.models.poll_interval_ms.max(50));
    s.debounce = Duration::from_millis(cfg.models.debounce_ms);
    s.load_nice = cfg.models.load_nice;
    s.indexes = cfg
        .index
        .factory(cfg.state.backend != crate::config::StateBackend::Off);
    Ok(s)
}

/// Installs the Prometheus exporter on `metrics.listen` (no-op when empty).
pub fn install_metrics(cfg: &Config) -> Result<(), ServeError> {
    if cfg.metrics.listen.is_empty() {
        return Ok(());
    }
    let addr: SocketAddr = cfg
        .metrics
        .listen
        .parse()
        .map_err(|e| ConfigError::invalid("metrics.listen", e))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[
            0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ])
        .map_err(|e| ServeError::Metrics(e.to_string()))?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("profiled_batch_size".into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        )
        .map_err(|e| ServeError::Metrics(e.to_string()))?
        .install()
        .map_err(|e| ServeError::Metrics(e.to_string()))
}

/// Resolves when SIGTERM or ctrl-c arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Health of the model-dependent services (ProfileService, ModelAdmin). The
/// server as a whole (`""`, the liveness probe) is SERVING from the start and
/// NOT_SERVING only while draining: it never depends on model state.
async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    admin: bool,
    s: ServingStatus,
) {
    reporter.set_service_status(PROFILE_SERVICE_NAME, s).await;
    if admin {
        reporter.set_service_status(MODEL_ADMIN_NAME, s).await;
    }
}

/// Runs the server until `shutdown` resolves, then drains: health goes
/// NOT_SERVING, new calls answer UNAVAILABLE, in-flight calls finish, and the
/// function returns within `server.grace_period_ms`.
///
/// The bound address is printed on stdout as `listening on ADDR` (and written
/// to `server.port_file` when set).
pub async fn serve(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    cfg.validate()?;
    // Tokens and TLS files are read before anything starts: a bad file stops
    // the server at once with a message naming it.
    let admin_auth = {
        let tokens = cfg.admin_tokens()?;
        (!tokens.is_empty())
            .then(|| Authenticator::new(MODEL_ADMIN_NAME, true, tokens, &RateLimits::default()))
            .transpose()
            .map_err(ConfigError::Tokens)?
    };
    let data_auth = Authenticator::new(
        PROFILE_SERVICE_NAME,
        cfg.auth.required,
        cfg.auth_tokens()?,
        &cfg.rate_limits(),
    )
    .map_err(ConfigError::Tokens)?;
    let tls = match (&cfg.tls.cert_file, &cfg.tls.key_file) {
        (Some(cert), Some(key)) => Some(Arc::new(
            TlsReloader::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: cfg.tls.client_ca_file.clone(),
            })
            .map_err(ConfigError::Tls)?,
        )),
        _ => None,
    };
    install_metrics(&cfg)?;
    let store = Store::new(store_config(&cfg)?);
    let mut engine = Engine::new(store.clone(), cfg.clone());
    if let Some(state) = open_state(&cfg).await? {
        tracing::info!(store = state.name(), "live user state");
        engine = engine.with_state(state);
        if cfg.index.live {
            engine = engine.with_live_refresh(Duration::from_millis(cfg.index.live_refresh_ms));
        }
    }
    let engine = Arc::new(engine);
    let admin_on = admin_auth.is_some();

    let reporter = tonic_health::server::HealthReporter::new();
    let health_svc =
        crate::health::HealthApi::server(reporter.clone(), cfg.limits.max_string_bytes);
    set_health(&reporter, admin_on, ServingStatus::NotServing).await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(profiled_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(profiled_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.server.listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.server.listen.clone(),
        source,
    })?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {local}");
        let _ = out.flush();
    }
    if let Some(pf) = &cfg.server.port_file {
        let tmp = pf.with_extension("tmp");
        std::fs::write(&tmp, local.to_string())
            .and_then(|()| std::fs::rename(&tmp, pf))
            .map_err(|source| ServeError::PortFile {
                path: pf.display().to_string(),
                source,
            })?;
    }
    // The HTTP/JSON edge (crate::http) on its own listener: the same engine,
    // tokens and TLS as the gRPC port.
    let http_task = if cfg.http.enabled {
        let l = crate::http::bind(&cfg).await?;
        let a = l.local_addr().map_err(|source| ServeError::Bind {
            addr: cfg.http.addr.clone(),
            source,
        })?;
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "http listening on {a}");
            let _ = out.flush();
        }
        tracing::info!(addr = %a, tls = tls.is_some(), ui = cfg.http.ui, "http listening");
        let state = crate::http::HttpState::new(
            engine.clone(),
            &cfg,
            data_auth.clone(),
            admin_auth.clone(),
        );
        Some(crate::http::listener::spawn(
            l,
            crate::http::router(state, &cfg.http),
            tls.clone(),
            Duration::from_millis(cfg.tls.handshake_timeout_ms),
            cfg.http.max_connections,
        ))
    } else {
        None
    };
    tracing::info!(addr = %local, repository = %cfg.models.repository.display(), admin = admin_on,
        tls = tls.is_some(), mtls = tls.as_ref().is_some_and(|t| t.mtls()),
        data_tokens = data_auth.len(), auth_required = cfg.auth.required, "profiled listening");
    // Optional plaintext health-only listener (probes that cannot speak TLS).
    let health_only = if cfg.server.health_listen.is_empty() {
        None
    } else {
        let l = tokio::net::TcpListener::bind(&cfg.server.health_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: cfg.server.health_listen.clone(),
                source,
            })?;
        if let Ok(a) = l.local_addr() {
            tracing::info!("plaintext health listener on {a}");
        }
        let svc = crate::health::HealthApi::server(reporter.clone(), cfg.limits.max_string_bytes);
        Some(tokio::spawn(async move {
            let incoming = nodelay(tokio_stream::wrappers::TcpListenerStream::new(l));
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::warn!(error = %e, "health listener stopped");
            }
        }))
    };

    // Load models and watch the repository (first scan runs at once).
    if let Err(e) = store.discover() {
        tracing::warn!(error = %e, "cannot list the model repository");
    }
    let watcher = store.spawn_watcher();

    // The size of the live user state, every 10 s (a failure is logged and
    // tried again; the store's own histograms show its latency).
    let (ingest_stop, ingest_rx) = tokio::sync::watch::channel(false);
    let ingest_policy: profiled_state::PolicyFn = {
        let engine = Arc::clone(&engine);
        Arc::new(move || engine.ingest_policy())
    };
    let live_task = tokio::spawn(engine.clone().run_live_refresh(ingest_rx.clone()));
    let ingest_task = engine
        .state()
        .and_then(|state| spawn_ingest(&cfg, state, ingest_policy, ingest_rx));
    let state_stats_task = engine.state().cloned().map(|state| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            let mut failing = false;
            loop {
                tick.tick().await;
                match state.stats().await {
                    Ok(st) => {
                        failing = false;
                        metrics::gauge!("profiled_state_users", "backend" => state.backend())
                            .set(st.users as f64);
                        metrics::gauge!("profiled_state_bytes", "backend" => state.backend())
                            .set(st.bytes as f64);
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "user state store: cannot read its size");
                    }
                    Err(_) => {}
                }
            }
        })
    });

    // Health follows the store: SERVING once a generation is ready and warm.
    let health_task = {
        let reporter = reporter.clone();
        let engine = engine.clone();
        let mut rx = store.subscribe();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let ready = engine.any_ready() && !engine.is_draining();
                metrics::gauge!("profiled_generations_live")
                    .set(profiled_store::live_generations() as f64);
                if last != Some(ready) {
                    let s = if ready {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    set_health(&reporter, admin_on, s).await;
                    tracing::info!(serving = ready, "health changed");
                    last = Some(ready);
                }
                if engine.is_draining() {
                    break;
                }
                // Wake on store changes, and every second so that the live
                // generation gauge shows old generations being released.
                if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await
                {
                    break;
                }
            }
        })
    };

    // Token checks (and per-token rate limits) wrap the two services;
    // health and reflection stay open. The handles share reloads.
    let (data_auth_handle, admin_auth_handle) = (data_auth.clone(), admin_auth.clone());
    let profile = InterceptedService::new(
        ProfileServiceServer::new(ProfileApi::new(engine.clone(), &cfg))
            .max_decoding_message_size(cfg.server.max_request_bytes)
            .max_encoding_message_size(cfg.server.max_response_bytes),
        data_auth,
    );
    let admin = admin_auth.map(|auth| {
        InterceptedService::new(
            ModelAdminServer::new(AdminApi::new(engine.clone()))
                .max_decoding_message_size(cfg.server.max_request_bytes)
                .max_encoding_message_size(cfg.server.max_response_bytes),
            auth,
        )
    });

    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(cfg.server.max_concurrent_streams)
        .concurrency_limit_per_connection(cfg.server.concurrency_per_connection)
        .load_shed(true)
        .tcp_nodelay(true)
        .http2_max_header_list_size(cfg.server.max_header_list_bytes);
    if cfg.server.max_connection_age_ms > 0 {
        builder =
            builder.max_connection_age(Duration::from_millis(cfg.server.max_connection_age_ms));
    }
    if cfg.server.http2_keepalive_interval_ms > 0 {
        builder = builder
            .http2_keepalive_interval(Some(Duration::from_millis(
                cfg.server.http2_keepalive_interval_ms,
            )))
            .http2_keepalive_timeout(Some(Duration::from_millis(
                cfg.server.http2_keepalive_timeout_ms,
            )));
    }
    // Every call passes the edge first (crate::edge): content-type and
    // metadata checks, grpc-timeout → DEADLINE_EXCEEDED, one message per
    // unary call, and the codec's statuses as the docs promise them.
    let edge = crate::edge::EdgeLayer::new(
        crate::edge::EdgeConfig {
            max_request_bytes: cfg.server.max_request_bytes,
            max_metadata_bytes: cfg.server.max_metadata_bytes,
        },
        &[
            profiled_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ],
    );
    let router = builder
        .layer(edge)
        .add_service(health_svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(profile)
        .add_optional_service(admin);

    let drain_started = Arc::new(tokio::sync::Notify::new());
    let on_shutdown = {
        let engine = engine.clone();
        let reporter = reporter.clone();
        let drain_started = drain_started.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown requested: draining");
            engine.start_draining();
            set_health(&reporter, admin_on, ServingStatus::NotServing).await;
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            drain_started.notify_one();
        }
    };
    let mut tls_tasks = Vec::new();
    let limits = crate::conn::ConnLimits {
        max_connections: cfg.server.max_connections,
        handshake_timeout: Duration::from_millis(cfg.server.handshake_timeout_ms),
    };
    if cfg.auth.reload_interval_ms > 0 {
        let every = Duration::from_millis(cfg.auth.reload_interval_ms);
        if cfg.auth.token_file.is_some() {
            let c = cfg.clone();
            tls_tasks.push(spawn_token_reload(
                data_auth_handle.clone(),
                every,
                move || Ok((c.auth_tokens()?, c.rate_limits())),
            ));
        }
        if let (Some(a), Some(_)) = (&admin_auth_handle, &cfg.admin.token_file) {
            let c = cfg.clone();
            tls_tasks.push(spawn_token_reload(a.clone(), every, move || {
                Ok((c.admin_tokens()?, RateLimits::default()))
            }));
        }
    }
    let server: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match &tls {
        Some(tls) => {
            tls_tasks.push(tls.spawn_watch(Duration::from_millis(cfg.tls.reload_interval_ms)));
            let (incoming, accept_task) = tls_incoming(
                listener,
                tls.clone(),
                Duration::from_millis(cfg.tls.handshake_timeout_ms),
                limits,
            );
            tls_tasks.push(accept_task);
            Box::pin(router.serve_with_incoming_shutdown(incoming, on_shutdown))
        }
        None => {
            let (incoming, accept_task) =
                crate::conn::admit(listener, limits, |tcp| async move { Some(tcp) });
            tls_tasks.push(accept_task);
            Box::pin(router.serve_with_incoming_shutdown(incoming, on_shutdown))
        }
    };
    let grace = Duration::from_millis(cfg.server.grace_period_ms);
    let result = tokio::select! {
        r = server => r.map_err(ServeError::from),
        () = async {
            drain_started.notified().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_ms = cfg.server.grace_period_ms, "grace period over: exiting with calls still in flight");
            Ok(())
        }
    };
    health_task.abort();
    for t in tls_tasks {
        t.abort();
    }
    if let Some(h) = health_only {
        h.abort();
    }
    if let Some(t) = state_stats_task {
        t.abort();
    }
    // The stream source stops between batches (an entry is acknowledged
    // only after its apply, so stopping loses nothing).
    let _ = ingest_stop.send(true);
    live_task.abort();
    if let Some(t) = ingest_task
        && tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .is_err()
    {
        tracing::warn!("the event stream source did not stop within 5 s");
    }
    if let Some(h) = http_task {
        h.abort();
    }
    watcher.stop();
    tracing::info!("profiled stopped");
    result
}

/// Sets TCP_NODELAY on every accepted connection of the health-only
/// listener (the gRPC port's accept loop, crate::conn, sets it too): tonic
/// ignores its `tcp_nodelay` with `serve_with_incoming`, and without it
/// Nagle + delayed ACKs add ~40 ms to small calls.
fn nodelay(
    incoming: tokio_stream::wrappers::TcpListenerStream,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::StreamExt::map(incoming, |s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    })
}

/// Re-reads a service's tokens every `every` (on the blocking pool) and
/// swaps them in when they changed; a source that cannot be used keeps the
/// previous tokens (warned once per distinct error, counted in
/// `profiled_token_reloads_total{service, outcome}`).
fn spawn_token_reload(
    auth: Authenticator,
    every: Duration,
    read: impl Fn() -> Result<(Vec<crate::auth::TokenEntry>, RateLimits), ConfigError>
    + Send
    + Sync
    + 'static,
) -> tokio::task::JoinHandle<()> {
    let read = Arc::new(read);
    tokio::spawn(async move {
        let service = auth.service();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last_err: Option<String> = None;
        loop {
            tick.tick().await;
            let (a, r) = (auth.clone(), read.clone());
            let outcome = tokio::task::spawn_blocking(move || {
                let (tokens, limits) = r().map_err(|e| e.to_string())?;
                let n = tokens.len();
                a.reload(tokens, &limits).map(|changed| (changed, n))
            })
            .await
            .unwrap_or_else(|e| Err(format!("token reload task: {e}")));
            match outcome {
                Ok((true, n)) => {
                    last_err = None;
                    metrics::counter!("profiled_token_reloads_total", "service" => service, "outcome" => "loaded")
                        .increment(1);
                    tracing::info!(
                        service,
                        tokens = n,
                        "tokens changed: the new list is in force"
                    );
                }
                Ok((false, _)) => last_err = None,
                Err(e) => {
                    if last_err.as_deref() != Some(e.as_str()) {
                        metrics::counter!("profiled_token_reloads_total", "service" => service, "outcome" => "refused")
                            .increment(1);
                        tracing::warn!(service, error = %e, "token source changed but cannot be used: keeping the previous tokens");
                        last_err = Some(e);
                    }
                }
            }
        }
    })
}
