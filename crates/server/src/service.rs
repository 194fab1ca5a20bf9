//! The tonic services: `ProfileService` (data plane) and `ModelAdmin`
//! (control plane, token-protected). Thin adapters: decode the message,
//! convert it (`crate::convert`), call one core function (`crate::engine`),
//! convert the answer, map the error (`crate::error`), record the metrics.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use profiled_proto::v1 as pb;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::config::Config;
use crate::convert;
use crate::engine::Engine;
use crate::error::ApiError;

/// The deadline of a call from its `grpc-timeout` header (parsed as the edge
/// layer parses it, [`crate::edge::parse_grpc_timeout`]).
pub fn deadline_of(md: &MetadataMap, start: Instant) -> Option<Instant> {
    start.checked_add(crate::edge::parse_grpc_timeout(md.as_ref())?)
}

/// Refuses a response larger than `server.max_response_bytes` with a
/// message naming the limit (rather than letting the codec fail the call
/// with a bare size).
fn fit<T: prost::Message>(max: usize, r: Result<T, ApiError>) -> Result<T, ApiError> {
    let resp = r?;
    let len = resp.encoded_len();
    if len > max {
        return Err(ApiError::TooLarge {
            what: "response",
            bytes: len as u64,
            limit: "max_response_bytes",
            value: max as u64,
            hint: "; ask for fewer users or hits, or f16 vectors",
        });
    }
    Ok(resp)
}

/// A response that names the model version that answered.
pub trait Answered {
    /// The `ModelRef` of the response.
    fn answered_by(&self) -> Option<&pb::ModelRef>;
}

macro_rules! answered {
    ($($t:ty),*) => {$(
        impl Answered for $t {
            fn answered_by(&self) -> Option<&pb::ModelRef> {
                self.model.as_ref()
            }
        }
    )*};
}
answered!(pb::EmbedResponse, pb::SearchResponse, pb::ExplainResponse);

fn requested(spec: Option<&pb::ModelSpec>) -> String {
    spec.map(|s| s.name.clone()).unwrap_or_default()
}

/// Records `profiled_request_seconds{protocol="grpc", rpc, model, version, code}`
/// (the HTTP edge records `protocol="http"`). Successful
/// calls are labelled with the version that answered; failed ones with the
/// requested model (see [`error_model_label`]) and an empty version.
fn observe<T: Answered>(
    span: &tracing::Span,
    engine: &Engine,
    rpc: &'static str,
    spec: Option<&pb::ModelSpec>,
    start: Instant,
    r: &Result<T, ApiError>,
) {
    // Answered calls: a cached handle, and span fields only when a layer
    // records the span (no label strings built per call).
    if let Ok(resp) = r
        && let Some(m) = resp.answered_by()
    {
        if !span.is_disabled() {
            span.record("model", m.name.as_str());
            span.record("version", m.version.to_string().as_str());
            span.record("code", "OK");
        }
        crate::handles::request_ok(rpc, m).record(start.elapsed().as_secs_f64());
        return;
    }
    let (model, version) = match r {
        Ok(resp) => resp.answered_by().map_or_else(
            || (engine.model_label(&requested(spec)), String::new()),
            |m| (m.name.clone(), m.version.to_string()),
        ),
        Err(_) => (engine.model_label(&requested(spec)), String::new()),
    };
    observe_labels(span, rpc, model, version, start, r);
}

/// The span of one call (DEBUG: created only when a layer wants it, e.g.
/// the OpenTelemetry exporter of the `otel` feature). `model`, `version` and
/// `code` are recorded when the call ends.
fn rpc_span(rpc: &'static str) -> tracing::Span {
    tracing::debug_span!(
        "rpc",
        otel.name = rpc,
        rpc,
        model = tracing::field::Empty,
        version = tracing::field::Empty,
        code = tracing::field::Empty,
    )
}

fn observe_labels<T>(
    span: &tracing::Span,
    rpc: &'static str,
    model: String,
    version: String,
    start: Instant,
    r: &Result<T, ApiError>,
) {
    let code = match r {
        Ok(_) => "OK".to_string(),
        Err(e) => format!("{:?}", e.code()),
    };
    span.record("model", model.as_str());
    span.record("version", version.as_str());
    span.record("code", code.as_str());
    metrics::histogram!("profiled_request_seconds", "protocol" => "grpc", "rpc" => rpc, "model" => model, "version" => version, "code" => code.clone())
        .record(start.elapsed().as_secs_f64());
    if let Err(e) = r {
        tracing::debug!(rpc, code, error = %e, "call failed");
    }
}

/// `profiled.v1.ProfileService`.
#[derive(Debug, Clone)]
pub struct ProfileApi {
    engine: Arc<Engine>,
    max_response_bytes: usize,
    max_request_bytes: usize,
    stream_max_in_flight: usize,
}

impl ProfileApi {
    /// The service over `engine`, with the edge settings of `cfg`.
    pub fn new(engine: Arc<Engine>, cfg: &Config) -> ProfileApi {
        ProfileApi {
            engine,
            max_response_bytes: cfg.server.max_response_bytes,
            max_request_bytes: cfg.server.max_request_bytes,
            stream_max_in_flight: cfg.limits.stream_max_in_flight.max(1),
        }
    }
}

/// One Embed request through the core, as a response (shared by Embed and
/// EmbedStream).
async fn embed_one(
    engine: &Engine,
    max_response_bytes: usize,
    req: pb::EmbedRequest,
    deadline: Option<Instant>,
) -> Result<pb::EmbedResponse, ApiError> {
    engine.check_name("request_id", &req.request_id)?;
    let (encoding, request_id) = (req.encoding, req.request_id.clone());
    let q = convert::embed::query(req)?;
    let e = engine.embed(q, deadline).await?;
    fit(
        max_response_bytes,
        Ok(convert::embed::response(e, encoding, request_id)),
    )
}

type EmbedStreamOut = Pin<Box<dyn Stream<Item = Result<pb::EmbedStreamResponse, Status>> + Send>>;
type TrackStreamOut = Pin<Box<dyn Stream<Item = Result<pb::TrackStreamResponse, Status>> + Send>>;

/// One Track request through the core (shared by Track and TrackStream).
async fn track_one(
    engine: &Engine,
    req: pb::TrackRequest,
    deadline: Option<Instant>,
) -> Result<pb::TrackResponse, ApiError> {
    engine.check_name("request_id", &req.request_id)?;
    let request_id = req.request_id.clone();
    let q = convert::users::query(req)?;
    let users = engine.track(q, deadline).await?;
    Ok(convert::users::response(users, request_id))
}

#[tonic::async_trait]
impl pb::profile_service_server::ProfileService for ProfileApi {
    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        let req = request.into_inner();
        let spec = req.model.clone();
        let span = rpc_span("Embed");
        let r = embed_one(&self.engine, self.max_response_bytes, req, deadline)
            .instrument(span.clone())
            .await;
        observe(&span, &self.engine, "Embed", spec.as_ref(), start, &r);
        r.map(Response::new).map_err(Status::from)
    }

    type EmbedStreamStream = EmbedStreamOut;

    async fn embed_stream(
        &self,
        request: Request<Streaming<pb::EmbedRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        self.engine.check_serving(None)?;
        let (in_flight, max_request_bytes, max_response_bytes) = (
            self.stream_max_in_flight,
            self.max_request_bytes,
            self.max_response_bytes,
        );
        let engine = self.engine.clone();
        let admit = self.engine.clone();
        let input = request.into_inner();
        // The next message is read only once its users fit in the streams'
        // budget (`Engine::admit_stream_batch`): backpressure instead of a
        // full batcher queue shedding batches.
        let out = input
            .then(move |msg| {
                let admit = admit.clone();
                async move {
                    let users = msg.as_ref().map_or(1, |r| r.users.len());
                    let permit = admit.admit_stream_batch(users).await;
                    (msg, permit)
                }
            })
            .map(move |(msg, permit)| {
                let engine = engine.clone();
                async move {
                    let _permit = match permit {
                        Ok(p) => p,
                        Err(e) => return Err(Status::from(e)),
                    };
                    match msg {
                        Err(status) => {
                            Err(crate::error::name_request_limit(status, max_request_bytes))
                        }
                        Ok(req) => {
                            // Echoed on every answer, so never over the limit: an
                            // over-long id fails its batch and is not echoed.
                            let id = if engine.check_name("request_id", &req.request_id).is_ok() {
                                req.request_id.clone()
                            } else {
                                String::new()
                            };
                            let spec = req.model.clone();
                            let t = Instant::now();
                            let span = rpc_span("EmbedStream");
                            let r = embed_one(&engine, max_response_bytes, req, deadline)
                                .instrument(span.clone())
                                .await;
                            observe(&span, &engine, "EmbedStream", spec.as_ref(), t, &r);
                            Ok(pb::EmbedStreamResponse {
                                request_id: id,
                                outcome: Some(match r {
                                    Ok(resp) => pb::embed_stream_response::Outcome::Response(resp),
                                    Err(e) => {
                                        pb::embed_stream_response::Outcome::Error(e.to_item())
                                    }
                                }),
                            })
                        }
                    }
                }
            })
            .buffered(in_flight);
        Ok(Response::new(Box::pin(out)))
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        let req = request.into_inner();
        let spec = req.model.clone();
        let encoding = req.encoding;
        let span = rpc_span("Search");
        let r = async {
            let q = convert::search::query(req)?;
            let found = self.engine.search(q, deadline).await?;
            fit(
                self.max_response_bytes,
                Ok(convert::search::response(found, encoding)),
            )
        }
        .instrument(span.clone())
        .await;
        observe(&span, &self.engine, "Search", spec.as_ref(), start, &r);
        r.map(Response::new).map_err(Status::from)
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        let req = request.into_inner();
        let spec = req.model.clone();
        let asked = req.target.clone();
        let span = rpc_span("Explain");
        let r = async {
            let q = convert::explain::query(req)?;
            let e = self.engine.explain(q, deadline).await?;
            fit(
                self.max_response_bytes,
                Ok(convert::explain::response(e, asked)),
            )
        }
        .instrument(span.clone())
        .await;
        observe(&span, &self.engine, "Explain", spec.as_ref(), start, &r);
        r.map(Response::new).map_err(Status::from)
    }

    async fn track(
        &self,
        request: Request<pb::TrackRequest>,
    ) -> Result<Response<pb::TrackResponse>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        let req = request.into_inner();
        let model = self.engine.model_label(&requested(req.model.as_ref()));
        let span = rpc_span("Track");
        let r = track_one(&self.engine, req, deadline)
            .instrument(span.clone())
            .await;
        observe_labels(&span, "Track", model, String::new(), start, &r);
        r.map(Response::new).map_err(Status::from)
    }

    type TrackStreamStream = TrackStreamOut;

    /// Batches are applied one after the other, in stream order (a later
    /// batch may change a field an earlier one set): one acknowledgement
    /// per batch, in order. Concurrency comes from several streams.
    async fn track_stream(
        &self,
        request: Request<Streaming<pb::TrackRequest>>,
    ) -> Result<Response<Self::TrackStreamStream>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        self.engine.check_serving(None)?;
        let max_request_bytes = self.max_request_bytes;
        let engine = self.engine.clone();
        let out = request.into_inner().then(move |msg| {
            let engine = engine.clone();
            async move {
                let req =
                    msg.map_err(|s| crate::error::name_request_limit(s, max_request_bytes))?;
                let id = if engine.check_name("request_id", &req.request_id).is_ok() {
                    req.request_id.clone()
                } else {
                    String::new()
                };
                let model = engine.model_label(&requested(req.model.as_ref()));
                let t = Instant::now();
                let span = rpc_span("TrackStream");
                let r = track_one(&engine, req, deadline)
                    .instrument(span.clone())
                    .await;
                observe_labels(&span, "TrackStream", model, String::new(), t, &r);
                Ok(pb::TrackStreamResponse {
                    request_id: id,
                    outcome: Some(match r {
                        Ok(resp) => pb::track_stream_response::Outcome::Response(resp),
                        Err(e) => pb::track_stream_response::Outcome::Error(e.to_item()),
                    }),
                })
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        let req = request.into_inner();
        let r = self
            .engine
            .get_user(
                &req.user_id,
                req.page_size as usize,
                &req.page_token,
                deadline,
            )
            .await
            .map(convert::users::user_page);
        observe_labels(
            &tracing::Span::none(),
            "GetUser",
            String::new(),
            String::new(),
            start,
            &r,
        );
        r.map(Response::new).map_err(Status::from)
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        let req = request.into_inner();
        let r = self
            .engine
            .delete_user(&req.user_id, deadline)
            .await
            .map(|existed| pb::DeleteUserResponse { existed });
        observe_labels(
            &tracing::Span::none(),
            "DeleteUser",
            String::new(),
            String::new(),
            start,
            &r,
        );
        r.map(Response::new).map_err(Status::from)
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        let start = Instant::now();
        let name = request.into_inner().name;
        let r = self
            .engine
            .get_model(&name)
            .map(|s| convert::model_info(&s, true));
        let model = match &r {
            Ok(m) => m.name.clone(),
            Err(_) => "unknown".into(),
        };
        observe_labels(
            &tracing::Span::none(),
            "GetModel",
            model,
            String::new(),
            start,
            &r,
        );
        r.map(|m| Response::new(pb::GetModelResponse { model: Some(m) }))
            .map_err(Status::from)
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let start = Instant::now();
        let r: Result<_, ApiError> = Ok(convert::models::list_models(
            self.engine.list_models(),
            request.into_inner().include_schema,
        ));
        observe_labels(
            &tracing::Span::none(),
            "ListModels",
            String::new(),
            String::new(),
            start,
            &r,
        );
        r.map(Response::new).map_err(Status::from)
    }
}

/// `profiled.v1.ModelAdmin`. Every call needs `authorization: Bearer
/// <token>`: the server wraps it in an [`Authenticator`](crate::auth::Authenticator)
/// with the admin tokens.
#[derive(Debug, Clone)]
pub struct AdminApi {
    engine: Arc<Engine>,
}

impl AdminApi {
    /// The service (put it behind an authenticator).
    pub fn new(engine: Arc<Engine>) -> AdminApi {
        AdminApi { engine }
    }

    fn models(&self, name: &str) -> Result<Vec<pb::ModelInfo>, ApiError> {
        Ok(self
            .engine
            .admin_models(name)?
            .iter()
            .map(|s| convert::model_info(s, false))
            .collect())
    }
}

#[tonic::async_trait]
impl pb::model_admin_server::ModelAdmin for AdminApi {
    async fn reload(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let r = request.into_inner();
        self.engine.reload(&r.model, r.version, r.wait).await?;
        Ok(Response::new(pb::ReloadResponse {
            models: self.models(&r.model)?,
        }))
    }

    async fn set_label(
        &self,
        request: Request<pb::SetLabelRequest>,
    ) -> Result<Response<pb::SetLabelResponse>, Status> {
        let r = request.into_inner();
        let version = (!r.remove).then_some(r.version);
        self.engine.set_label(&r.model, &r.label, version)?;
        Ok(Response::new(pb::SetLabelResponse {
            model: self.models(&r.model)?.into_iter().next(),
        }))
    }

    async fn unload(
        &self,
        request: Request<pb::UnloadRequest>,
    ) -> Result<Response<pb::UnloadResponse>, Status> {
        let r = request.into_inner();
        self.engine.unload(&r.model, r.version, r.force)?;
        Ok(Response::new(pb::UnloadResponse {
            model: self.models(&r.model)?.into_iter().next(),
        }))
    }
}
