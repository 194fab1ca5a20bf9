//! The tonic services: `ProfileService` (data plane) and `ModelAdmin`
//! (control plane, token-protected).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use profiled_proto::v1 as pb;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{Engine, model_info};
use crate::error::ApiError;

/// Parses the `grpc-timeout` header (`<digits><H|M|S|m|u|n>`) into a deadline.
pub fn deadline_of(md: &MetadataMap, start: Instant) -> Option<Instant> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    start.checked_add(d)
}

fn observe<T>(rpc: &'static str, start: Instant, r: &Result<T, ApiError>) {
    let code = match r {
        Ok(_) => "OK".to_string(),
        Err(e) => format!("{:?}", e.code()),
    };
    metrics::histogram!("profiled_request_seconds", "rpc" => rpc, "code" => code.clone())
        .record(start.elapsed().as_secs_f64());
    if let Err(e) = r {
        tracing::debug!(rpc, code, error = %e, "call failed");
    }
}

/// `profiled.v1.ProfileService`.
#[derive(Debug, Clone)]
pub struct ProfileApi {
    engine: Arc<Engine>,
}

impl ProfileApi {
    /// The service over `engine`.
    pub fn new(engine: Arc<Engine>) -> ProfileApi {
        ProfileApi { engine }
    }
}

type EmbedStreamOut = Pin<Box<dyn Stream<Item = Result<pb::EmbedStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::profile_service_server::ProfileService for ProfileApi {
    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        let r = self.engine.embed(request.into_inner(), deadline).await;
        observe("Embed", start, &r);
        r.map(Response::new).map_err(Status::from)
    }

    type EmbedStreamStream = EmbedStreamOut;

    async fn embed_stream(
        &self,
        request: Request<Streaming<pb::EmbedRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        if self.engine.is_draining() {
            return Err(Status::unavailable(
                "the server is draining (shutting down)",
            ));
        }
        let in_flight = self.engine.cfg.limits.stream_max_in_flight.max(1);
        let engine = self.engine.clone();
        let input = request.into_inner();
        let out = input
            .map(move |msg| {
                let engine = engine.clone();
                async move {
                    match msg {
                        Err(status) => Err(status),
                        Ok(req) => {
                            let id = req.request_id.clone();
                            let t = Instant::now();
                            let r = engine.embed(req, deadline).await;
                            observe("EmbedStream", t, &r);
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
        let r = self.engine.search(request.into_inner(), deadline).await;
        observe("Search", start, &r);
        r.map(Response::new).map_err(Status::from)
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(request.metadata(), start);
        let r = self.engine.explain(request.into_inner(), deadline).await;
        observe("Explain", start, &r);
        r.map(Response::new).map_err(Status::from)
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        let start = Instant::now();
        let r = self.engine.get_model(&request.into_inner().name);
        observe("GetModel", start, &r);
        r.map(|m| Response::new(pb::GetModelResponse { model: Some(m) }))
            .map_err(Status::from)
    }

    async fn list_models(
        &self,
        request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let start = Instant::now();
        let r: Result<_, ApiError> =
            Ok(self.engine.list_models(request.into_inner().include_schema));
        observe("ListModels", start, &r);
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

    fn models(&self, name: &str) -> Result<Vec<pb::ModelInfo>, Status> {
        if name.is_empty() {
            Ok(self
                .engine
                .store
                .snapshots()
                .iter()
                .map(|s| model_info(s, false))
                .collect())
        } else {
            let s = self.engine.store.snapshot(name).map_err(ApiError::from)?;
            Ok(vec![model_info(&s, false)])
        }
    }
}

#[tonic::async_trait]
impl pb::model_admin_server::ModelAdmin for AdminApi {
    async fn reload(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let r = request.into_inner();
        if r.version.is_some() && r.model.is_empty() {
            return Err(ApiError::invalid("version", "a version needs `model`").into());
        }
        let store = self.engine.store.clone();
        let (model, version) = (r.model.clone(), r.version);
        let task = tokio::spawn(async move { store.reload(&model, version).await });
        if r.wait {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(ApiError::from(e).into()),
                Err(e) => return Err(Status::internal(format!("reload task: {e}"))),
            }
        }
        Ok(Response::new(pb::ReloadResponse {
            models: self.models(&r.model)?,
        }))
    }

    async fn set_label(
        &self,
        request: Request<pb::SetLabelRequest>,
    ) -> Result<Response<pb::SetLabelResponse>, Status> {
        let r = request.into_inner();
        if r.model.is_empty() {
            return Err(ApiError::invalid("model", "required").into());
        }
        let version = (!r.remove).then_some(r.version);
        if version == Some(0) {
            return Err(ApiError::invalid("version", "required (a positive integer)").into());
        }
        self.engine
            .store
            .set_label(&r.model, &r.label, version)
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SetLabelResponse {
            model: self.models(&r.model)?.into_iter().next(),
        }))
    }

    async fn unload(
        &self,
        request: Request<pb::UnloadRequest>,
    ) -> Result<Response<pb::UnloadResponse>, Status> {
        let r = request.into_inner();
        if r.model.is_empty() {
            return Err(ApiError::invalid("model", "required").into());
        }
        self.engine
            .store
            .unload(&r.model, r.version, r.force)
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::UnloadResponse {
            model: self.models(&r.model)?.into_iter().next(),
        }))
    }
}
