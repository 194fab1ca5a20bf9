//! `grpc.health.v1.Health` as the health protocol specifies it: tonic-health's
//! service (statuses set through its `HealthReporter`), except that `Watch`
//! of a service the server does not know streams `SERVICE_UNKNOWN` and keeps
//! the stream open, instead of ending it with NOT_FOUND (`Check` of an
//! unknown service still answers NOT_FOUND, as the protocol says). A service
//! name over `limits.max_string_bytes` (at least 64 bytes) is
//! INVALID_ARGUMENT, like every other name the server is given.

use crate::error::ApiError;

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

/// The health service (see the module docs).
#[derive(Debug)]
pub struct HealthApi {
    inner: HealthService,
    max_name_bytes: usize,
}

impl HealthApi {
    /// The service answering from `reporter`'s statuses, ready to add to a
    /// server; service names over `max_name_bytes` are refused, but never
    /// below 64 bytes, so the server's own service names (at most 30 bytes)
    /// always pass whatever `limits.max_string_bytes` is.
    pub fn server(reporter: HealthReporter, max_name_bytes: usize) -> HealthServer<HealthApi> {
        HealthServer::new(HealthApi {
            inner: HealthService::from_health_reporter(reporter),
            max_name_bytes: max_name_bytes.max(64),
        })
    }

    fn check_name(&self, request: &Request<HealthCheckRequest>) -> Result<(), Status> {
        ApiError::check_string(
            || "service".into(),
            &request.get_ref().service,
            self.max_name_bytes,
        )
        .map_err(Status::from)
    }
}

/// The stream of a `Watch` call.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.check_name(&request)?;
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.check_name(&request)?;
        match self.inner.watch(request).await {
            Ok(r) => Ok(Response::new(Box::pin(r.into_inner()) as WatchStream)),
            Err(s) if s.code() == Code::NotFound => {
                // One SERVICE_UNKNOWN, then the stream stays open (the set
                // of services is fixed at start, so no update follows) until
                // the client ends it or the server stops.
                let unknown = HealthCheckResponse {
                    status: PbStatus::ServiceUnknown as i32,
                };
                let s = tokio_stream::StreamExt::chain(
                    tokio_stream::once(Ok(unknown)),
                    tokio_stream::pending(),
                );
                Ok(Response::new(Box::pin(s) as WatchStream))
            }
            Err(s) => Err(s),
        }
    }
}
