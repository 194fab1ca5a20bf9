//! `profiled-server`: the gRPC service of profiled (binary `profiled`).
//!
//! One core, thin edges:
//! - [`engine`]: the core, in plain domain types, split by request —
//!   `embed`, `search`, `explain`, `models`, and `cache` (the moka hot cache
//!   keyed by (model, generation, canonical features), coalesced misses).
//!   One `Arc<Generation>` per request.
//! - [`convert`]: the only code that touches proto types: requests → the
//!   core's queries (INVALID_ARGUMENT naming the offending field), answers →
//!   responses, model status messages.
//! - [`service`]: `ProfileService` (Embed, EmbedStream, Search, Explain,
//!   GetModel, ListModels) and the token-protected `ModelAdmin`: decode,
//!   convert, call the core, convert, map the error.
//! - [`error`]: [`ApiError`](error::ApiError), the `From` conversions of the
//!   store, index and auth errors, and the one mapping to `Status`.
//! - [`batcher`]: per-model bounded queue + worker threads outside the tokio
//!   runtime, deadline-aware.
//! - [`handles`]: per-thread cache of the per-call metric handles.
//! - [`config`]: defaults → TOML → `PROFILED__A__B` env → flags.
//! - [`server`]: wiring, health, reflection, metrics, graceful drain.
//! - [`edge`]: the layer in front of every call (content-type, metadata
//!   size, `grpc-timeout` → DEADLINE_EXCEEDED, one message per unary call,
//!   codec errors → INVALID_ARGUMENT); [`conn`]: connection admission
//!   (`server.max_connections`, handshake timeout); [`health`]:
//!   `grpc.health.v1` with `Watch` of unknown services as the protocol says.
//! - [`telemetry`]: logs, and OpenTelemetry span export behind the cargo
//!   feature `otel` (off by default).
//! - [`http`]: the HTTP/JSON edge on its own listener (`[http]`): the same
//!   operations over the same core, tokens and limits, the OpenAPI document
//!   at `/openapi.json`, the explanation viewer at `/ui/`.
//! - [`tls`]: rustls (ring) on the gRPC port, optional mTLS, certificate
//!   reload without restart; [`auth`]: bearer tokens (constant-time compare)
//!   and per-token rate limits (see docs/security.md).

#![forbid(unsafe_code)]

pub mod auth;
pub mod batcher;
pub mod config;
pub mod conn;
pub mod convert;
pub mod edge;
pub mod engine;
pub mod error;
pub mod handles;
pub mod health;
pub mod http;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod tls;

pub use config::{Config, Overrides};
pub use server::{ServeError, serve, shutdown_signal};
