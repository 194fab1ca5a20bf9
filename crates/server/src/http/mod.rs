//! The HTTP/JSON edge: a second thin adapter over the same core as the gRPC
//! service, on a listener of its own (`[http] enabled, addr`), built with
//! axum; the OpenAPI 3 document is generated from this code by utoipa.
//!
//! Every call: bearer token (the gRPC port's own [`Authenticator`]s, so the
//! same tokens, rate limits and messages) → deadline from the
//! `x-request-timeout-ms` header → JSON body (`content-type:
//! application/json`, at most `server.max_request_bytes`, unknown field
//! names refused) → the request's domain query ([`types`]) → one core
//! function ([`Engine`](crate::engine::Engine)) → the JSON answer (at most
//! `server.max_response_bytes`). Failures are the core's
//! [`ApiError`](crate::error::ApiError)s with the HTTP status of
//! [`crate::error::http_status`] and the body `{code, status, message}`.
//! Calls are measured in `profiled_request_seconds{protocol="http", …}`
//! beside the gRPC port's `protocol="grpc"`.
//!
//! - [`types`]: the JSON requests and answers (serde + `ToSchema`), to and
//!   from the core's domain types;
//! - [`models`]: model status and the admin requests as JSON;
//! - [`users`]: live user state (Track, GetUser, DeleteUser) as JSON;
//! - [`api`]: the handlers (one per operation) and the OpenAPI document
//!   with an example for every request body;
//! - [`ui`]: the explanation viewer at `/ui/` (static files compiled into
//!   the binary);
//! - [`listener`]: the listener (plain or TLS) and its connection cap
//!   (`http.max_connections`);
//! - this file: the shared state, the call wrapper (auth, deadline, body,
//!   metrics, errors) and the router.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::engine::{Deadline, Engine};
use crate::error::{ApiError, code_name};

pub mod api;
pub mod listener;
pub mod models;
pub mod types;
pub mod ui;
pub mod users;

/// The header that carries a call's deadline: a whole number of
/// milliseconds from the moment the server reads the request.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct HttpState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Arc<Engine>,
    data_auth: Authenticator,
    admin_auth: Option<Authenticator>,
    max_request_bytes: usize,
    max_response_bytes: usize,
}

impl HttpState {
    /// The state over `engine` with the gRPC port's authenticators (the
    /// admin one is `None` when ModelAdmin is off).
    pub fn new(
        engine: Arc<Engine>,
        cfg: &Config,
        data_auth: Authenticator,
        admin_auth: Option<Authenticator>,
    ) -> HttpState {
        HttpState {
            inner: Arc::new(Inner {
                engine,
                data_auth,
                admin_auth,
                max_request_bytes: cfg.server.max_request_bytes,
                max_response_bytes: cfg.server.max_response_bytes,
            }),
        }
    }

    /// The core.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}

/// The JSON error answer: the HTTP status of the error's code, the body
/// `{code, status, message}` (and `www-authenticate: Bearer` on a 401).
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.http_status();
        let mut r = json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error_body(&self),
        );
        if status == 401 {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// The JSON error body `{code, status, message}` of `e`.
pub(crate) fn error_body(e: &ApiError) -> Vec<u8> {
    serde_json::to_vec(&types::ErrorBody {
        code: code_name(e.code()).to_string(),
        status: e.http_status(),
        message: e.to_string(),
    })
    .unwrap_or_default()
}

/// A JSON answer with `status` and the serialised `body`.
fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The deadline of a call from its `x-request-timeout-ms` header;
/// INVALID_ARGUMENT naming the header when it is not a whole number of
/// milliseconds.
pub fn deadline_of(headers: &HeaderMap, start: Instant) -> Result<Deadline, ApiError> {
    let Some(v) = headers.get(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let ms = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::invalid(
                TIMEOUT_HEADER,
                "expected a whole number of milliseconds (at most 12 digits)",
            )
        })?;
    Ok(start.checked_add(Duration::from_millis(ms)))
}

/// One call in progress: its operation name (the gRPC method's, so both
/// ports share metric labels), its start, and whether it concerns a model
/// at all (GetUser and DeleteUser do not: labelled `model=""`, as on the
/// gRPC port).
struct Call {
    rpc: &'static str,
    start: Instant,
    model_free: bool,
}

impl Call {
    fn new(rpc: &'static str) -> Call {
        Call {
            rpc,
            start: Instant::now(),
            model_free: false,
        }
    }

    /// A call of an operation that names no model (GetUser, DeleteUser).
    fn model_free(rpc: &'static str) -> Call {
        Call {
            model_free: true,
            ..Call::new(rpc)
        }
    }

    /// Records `profiled_request_seconds{protocol="http", rpc, model,
    /// version, code}` — the gRPC port's labels: an answered call is
    /// labelled with the version that answered, a failed one with the
    /// requested model as the server knows it (`unknown` otherwise).
    fn observe(
        &self,
        st: &HttpState,
        answered: Option<&types::ModelRef>,
        requested: &str,
        code: &str,
    ) {
        if let Some(m) = answered
            && code == "OK"
        {
            ok_histogram(self.rpc, m).record(self.start.elapsed().as_secs_f64());
            return;
        }
        let (model, version) = match answered {
            Some(m) => (m.name.clone(), m.version.to_string()),
            None if self.model_free => (String::new(), String::new()),
            None => (st.engine().model_label(requested), String::new()),
        };
        metrics::histogram!("profiled_request_seconds",
            "protocol" => "http",
            "rpc" => self.rpc,
            "model" => model,
            "version" => version,
            "code" => code.to_string())
        .record(self.start.elapsed().as_secs_f64());
    }

    /// Ends the call: the answer as JSON (or its error), measured.
    fn finish<T: Serialize>(
        self,
        st: &HttpState,
        requested: &str,
        r: Result<T, ApiError>,
        answered: impl Fn(&T) -> Option<&types::ModelRef>,
    ) -> Response {
        let r = r.and_then(|v| {
            let body = serde_json::to_vec(&v)
                .map_err(|e| ApiError::Internal(format!("JSON encoding: {e}")))?;
            if body.len() > st.inner.max_response_bytes {
                return Err(ApiError::TooLarge {
                    what: "response",
                    bytes: body.len() as u64,
                    limit: "max_response_bytes",
                    value: st.inner.max_response_bytes as u64,
                    hint: "; ask for fewer users or hits",
                });
            }
            Ok((v, body))
        });
        match r {
            Ok((v, body)) => {
                self.observe(st, answered(&v), requested, "OK");
                json_response(StatusCode::OK, body)
            }
            Err(e) => {
                self.observe(st, None, requested, &format!("{:?}", e.code()));
                tracing::debug!(rpc = self.rpc, code = ?e.code(), error = %e, "http call failed");
                e.into_response()
            }
        }
    }
}

thread_local! {
    /// Per-thread cache of the answered calls' histograms, keyed by operation
    /// and generation (as `crate::handles` does for the gRPC port): no label
    /// strings built per call.
    static OK_HISTOGRAMS: std::cell::RefCell<
        std::collections::HashMap<(&'static str, u64), metrics::Histogram>,
    > = std::cell::RefCell::new(std::collections::HashMap::new());
}

/// `profiled_request_seconds{protocol="http", rpc, model, version,
/// code="OK"}` of a call that generation `m` answered.
fn ok_histogram(rpc: &'static str, m: &types::ModelRef) -> metrics::Histogram {
    OK_HISTOGRAMS.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(h) = c.get(&(rpc, m.generation_id)) {
            return h.clone();
        }
        if c.len() >= 4096 {
            c.clear();
        }
        c.entry((rpc, m.generation_id))
            .or_insert_with(|| {
                metrics::histogram!("profiled_request_seconds",
                    "protocol" => "http",
                    "rpc" => rpc,
                    "model" => m.name.clone(),
                    "version" => m.version.to_string(),
                    "code" => "OK")
            })
            .clone()
    })
}

/// Which tokens guard a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// ProfileService's tokens (`[auth]`).
    Data,
    /// ModelAdmin's tokens (`[admin]`); UNIMPLEMENTED when ModelAdmin is off.
    Admin,
}

impl HttpState {
    /// The token check of the gRPC port, on the request's headers.
    fn authorize(&self, guard: Guard, headers: &HeaderMap) -> Result<(), ApiError> {
        let auth = match guard {
            Guard::Data => &self.inner.data_auth,
            Guard::Admin => self.inner.admin_auth.as_ref().ok_or_else(|| {
                ApiError::Unimplemented(
                    "ModelAdmin is off on this server: it needs admin tokens \
                     (admin.token_file or admin.token_env)"
                        .into(),
                )
            })?,
        };
        auth.check(&tonic::metadata::MetadataMap::from_headers(headers.clone()))
            .map(|_| ())
    }

    /// Reads the JSON body of `req` into `T`: `content-type:
    /// application/json`, at most `server.max_request_bytes`, well-formed,
    /// no unknown field names.
    async fn body<T: DeserializeOwned>(&self, req: Request) -> Result<T, ApiError> {
        let max = self.inner.max_request_bytes;
        let (parts, body) = req.into_parts();
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::invalid(
                "content-type",
                format!(
                    "expected application/json, got {}",
                    if ct.is_empty() {
                        "none".to_string()
                    } else {
                        format!("{:?}", crate::error::bounded(ct, 64))
                    }
                ),
            ));
        }
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let too_large = |bytes: u64| ApiError::TooLarge {
            what: "request body",
            bytes,
            limit: "max_request_bytes",
            value: max as u64,
            hint: "; send fewer users per call",
        };
        if let Some(n) = declared
            && n > max as u64
        {
            return Err(too_large(n));
        }
        let bytes = axum::body::to_bytes(body, max)
            .await
            .map_err(|_| too_large(max as u64 + 1))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::invalid(
                "body",
                format!(
                    "malformed JSON request: {}",
                    crate::error::bounded(&e.to_string(), 512)
                ),
            )
        })
    }
}

/// Runs `core` under the call's deadline: DEADLINE_EXCEEDED when the
/// deadline passes first (the same answer the gRPC edge gives for an
/// expired `grpc-timeout`).
async fn with_deadline<T>(
    headers_deadline: Deadline,
    core: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match headers_deadline {
        None => core.await,
        Some(at) => match tokio::time::timeout_at(at.into(), core).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::DeadlineExceeded(format!(
                "deadline exceeded: the call's {TIMEOUT_HEADER} passed before the answer was ready"
            ))),
        },
    }
}

/// The router of the HTTP edge (the viewer's routes when `cfg.ui`, the
/// benchmark's echo when `cfg.bench_echo`).
pub fn router(state: HttpState, cfg: &crate::config::HttpConfig) -> Router {
    use axum::routing::{get, post};
    let mut r = Router::new()
        .route("/v1/embed", post(api::embed))
        .route("/v1/search", post(api::search))
        .route("/v1/explain", post(api::explain))
        .route("/v1/track", post(api::track))
        .route(
            "/v1/users/{user_id}",
            get(api::get_user).delete(api::delete_user),
        )
        // An empty id: the core's INVALID_ARGUMENT, as on the gRPC port.
        .route(
            "/v1/users/",
            get(api::get_user_without_id).delete(api::delete_user_without_id),
        )
        .route("/v1/models", get(api::list_models))
        .route("/v1/models/{name}", get(api::get_model))
        .route("/v1/admin/reload", post(api::reload))
        .route("/v1/admin/labels", post(api::set_label))
        .route("/v1/admin/unload", post(api::unload))
        .route("/healthz", get(api::healthz))
        .route("/openapi.json", get(api::openapi_json));
    if cfg.ui {
        r = r.merge(ui::routes());
    }
    if cfg.bench_echo {
        r = r.route("/bench/echo", post(api::bench_echo));
    }
    r.fallback(not_found).with_state(state)
}

async fn not_found(req: Request) -> Response {
    ApiError::NotFound(format!(
        "no such route: {} {} (the API is described at /openapi.json)",
        req.method(),
        crate::error::bounded(req.uri().path(), 128)
    ))
    .into_response()
}

/// Binds the HTTP listener of `cfg.http.addr`.
pub async fn bind(cfg: &Config) -> Result<TcpListener, crate::ServeError> {
    TcpListener::bind(&cfg.http.addr)
        .await
        .map_err(|source| crate::ServeError::Bind {
            addr: cfg.http.addr.clone(),
            source,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_header_is_whole_milliseconds() {
        let start = Instant::now();
        let mut h = HeaderMap::new();
        assert_eq!(deadline_of(&h, start).unwrap(), None);
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("250"));
        assert_eq!(
            deadline_of(&h, start).unwrap(),
            Some(start + Duration::from_millis(250))
        );
        for bad in ["", "1.5", "-3", "10s", "1234567890123"] {
            h.insert(TIMEOUT_HEADER, HeaderValue::from_static(bad));
            let e = deadline_of(&h, start).unwrap_err();
            assert_eq!(e.http_status(), 400);
            assert!(e.to_string().starts_with("x-request-timeout-ms: "), "{e}");
        }
    }

    #[tokio::test]
    async fn an_expired_deadline_is_deadline_exceeded() {
        let past = Some(Instant::now());
        let r: Result<(), ApiError> =
            with_deadline(past, std::future::pending::<Result<(), ApiError>>()).await;
        let e = r.unwrap_err();
        assert_eq!(e.http_status(), 504);
        assert!(e.to_string().contains(TIMEOUT_HEADER), "{e}");
        assert_eq!(with_deadline(None, async { Ok(7) }).await.unwrap(), 7);
    }
}
