//! Connections to a profiled server and the calls made on them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use profiled_proto::v1 as pb;
use profiled_proto::v1::profile_service_client::ProfileServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::{Error, Result};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// `host:port` or a full `http://` / `https://` URL.
    pub addr: String,
    /// Use TLS (`https`).
    pub tls: bool,
    /// PEM file of the CA that signed the server certificate (TLS).
    pub ca_cert: Option<PathBuf>,
    /// Server name to verify (TLS; default: the host of `addr`).
    pub domain: Option<String>,
    /// Bearer token sent as `authorization: Bearer TOKEN` on every call.
    pub token: Option<String>,
    /// HTTP/2 connections; calls are spread over them round-robin.
    pub connections: usize,
    /// Per-call deadline (sent as `grpc-timeout`).
    pub timeout: Duration,
    /// Calls in flight per connection (0 = as many as HTTP/2 allows). Keep
    /// it below the server's `max_concurrent_streams` (256 by default): the
    /// two ends count a finishing stream as closed at slightly different
    /// moments, and a client at the very limit can open one stream too many,
    /// which the server refuses (REFUSED_STREAM → UNAVAILABLE). Further calls
    /// wait in the client, and that wait counts in their latency.
    pub max_streams_per_connection: usize,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            addr: "127.0.0.1:50051".into(),
            tls: false,
            ca_cert: None,
            domain: None,
            token: None,
            connections: 4,
            timeout: Duration::from_secs(10),
            max_streams_per_connection: 200,
        }
    }
}

/// One request of any kind.
#[derive(Debug, Clone)]
pub enum Call {
    /// `ProfileService.Embed`.
    Embed(pb::EmbedRequest),
    /// `ProfileService.Search`.
    Search(pb::SearchRequest),
    /// `ProfileService.Explain`.
    Explain(pb::ExplainRequest),
    /// `ProfileService.Track`.
    Track(pb::TrackRequest),
}

impl Call {
    /// The RPC name.
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Embed(_) => "embed",
            Call::Search(_) => "search",
            Call::Explain(_) => "explain",
            Call::Track(_) => "track",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; the model version that answered.
    Ok {
        /// `ModelRef.version` of the response.
        version: u64,
        /// `queue_us + compute_us` the server reported (Embed and Explain;
        /// 0 for Search and cache hits): its own share of the latency.
        server_us: u64,
    },
    /// Failed with this gRPC code.
    Err(tonic::Code),
}

/// Connected clients.
#[derive(Debug, Clone)]
pub struct Target {
    clients: Vec<ProfileServiceClient<Channel>>,
    token: Option<MetadataValue<Ascii>>,
    timeout: Duration,
    /// Per-connection in-flight permits (`max_streams_per_connection`).
    permits: Option<Vec<Arc<tokio::sync::Semaphore>>>,
}

fn url_of(cfg: &TargetConfig) -> String {
    if cfg.addr.contains("://") {
        cfg.addr.clone()
    } else if cfg.tls {
        format!("https://{}", cfg.addr)
    } else {
        format!("http://{}", cfg.addr)
    }
}

impl Target {
    /// Opens `cfg.connections` connections (each its own HTTP/2 connection).
    pub async fn connect(cfg: &TargetConfig) -> Result<Target> {
        let url = url_of(cfg);
        let conn_err = |reason: String| Error::Connect {
            addr: url.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| conn_err(e.to_string()))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10));
        if cfg.tls || url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            match &cfg.ca_cert {
                Some(p) => {
                    let pem = std::fs::read(p).map_err(|source| Error::Io {
                        path: p.display().to_string(),
                        source,
                    })?;
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                None => {
                    return Err(Error::Config(
                        "TLS needs --ca-cert FILE (the PEM of the CA that signed the server certificate)".into(),
                    ));
                }
            }
            if let Some(d) = &cfg.domain {
                tls = tls.domain_name(d.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| conn_err(format!("TLS configuration: {e}")))?;
        }
        let token = match &cfg.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| Error::Config("the token is not printable ASCII".into()))?,
            ),
            None => None,
        };
        let mut clients = Vec::with_capacity(cfg.connections.max(1));
        for _ in 0..cfg.connections.max(1) {
            let ch = endpoint
                .connect()
                .await
                .map_err(|e| conn_err(format!("{e} ({:?})", std::error::Error::source(&e))))?;
            clients.push(
                ProfileServiceClient::new(ch)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            );
        }
        let permits = (cfg.max_streams_per_connection > 0).then(|| {
            (0..clients.len())
                .map(|_| Arc::new(tokio::sync::Semaphore::new(cfg.max_streams_per_connection)))
                .collect()
        });
        Ok(Target {
            clients,
            token,
            timeout: cfg.timeout,
            permits,
        })
    }

    /// Number of connections.
    pub fn connections(&self) -> usize {
        self.clients.len()
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        if let Some(t) = &self.token {
            r.metadata_mut().insert("authorization", t.clone());
        }
        r
    }

    /// Makes `call` on connection `i % connections`.
    pub async fn call(&self, i: usize, call: Call) -> Outcome {
        self.call_full(i, call).await.0
    }

    /// Makes `call` on connection `i % connections`; with the status message
    /// on failure.
    pub async fn call_full(&self, i: usize, call: Call) -> (Outcome, Option<String>) {
        let mut c = self.clients[i % self.clients.len()].clone();
        // Never closed, so `acquire` only fails if that changes: then the
        // call goes without a permit.
        let _permit = match &self.permits {
            Some(p) => p[i % p.len()].acquire().await.ok(),
            None => None,
        };
        let version = |m: Option<&pb::ModelRef>| m.map_or(0, |m| m.version);
        let r = match call {
            Call::Embed(r) => c.embed(self.request(r)).await.map(|r| {
                let r = r.get_ref();
                (version(r.model.as_ref()), r.queue_us + r.compute_us)
            }),
            Call::Search(r) => c
                .search(self.request(r))
                .await
                .map(|r| (version(r.get_ref().model.as_ref()), 0)),
            Call::Explain(r) => c.explain(self.request(r)).await.map(|r| {
                let r = r.get_ref();
                (version(r.model.as_ref()), r.queue_us + r.compute_us)
            }),
            // Track answers name no model version.
            Call::Track(r) => c.track(self.request(r)).await.map(|_| (0, 0)),
        };
        match r {
            Ok((version, server_us)) => (Outcome::Ok { version, server_us }, None),
            Err(s) => (Outcome::Err(s.code()), Some(s.message().to_string())),
        }
    }

    /// Input name → `pb::FieldKind` number of `model` (every loaded
    /// version's schema; derived `events.*` sources left out), from GetModel.
    pub async fn input_kinds(
        &self,
        model: &str,
    ) -> std::result::Result<std::collections::HashMap<String, i32>, tonic::Status> {
        let mut c = self.clients[0].clone();
        let m = c
            .get_model(self.request(pb::GetModelRequest {
                name: model.to_string(),
            }))
            .await?
            .into_inner()
            .model
            .ok_or_else(|| tonic::Status::internal("GetModel answered no model"))?;
        let mut out = std::collections::HashMap::new();
        for v in &m.versions {
            if let Some(s) = &v.schema {
                for f in &s.fields {
                    if !f.source.starts_with("events.") {
                        out.entry(f.source.clone()).or_insert(f.kind);
                    }
                }
            }
        }
        Ok(out)
    }

    /// One Embed call returning the whole response (for templates and checks).
    pub async fn embed(
        &self,
        req: pb::EmbedRequest,
    ) -> std::result::Result<pb::EmbedResponse, tonic::Status> {
        let mut c = self.clients[0].clone();
        c.embed(self.request(req))
            .await
            .map(tonic::Response::into_inner)
    }
}

/// The canonical name of a gRPC code (`RESOURCE_EXHAUSTED`, ...).
pub fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
