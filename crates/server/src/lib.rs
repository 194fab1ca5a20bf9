//! `profiled-server`: the gRPC service of profiled (binary `profiled`).
//!
//! - [`service`]: `ProfileService` (Embed, EmbedStream, Explain, GetModel,
//!   ListModels; Search answers UNIMPLEMENTED until the index crate is wired
//!   in) and the token-protected `ModelAdmin`.
//! - [`convert`]: the edge — proto requests become `profiled_model` types,
//!   with INVALID_ARGUMENT naming the offending field.
//! - [`engine`]: model resolution (one `Arc<Generation>` per request), the
//!   moka hot cache keyed by (model, generation, canonical features), Embed
//!   and Explain.
//! - [`batcher`]: per-model bounded queue + worker threads outside the tokio
//!   runtime, deadline-aware.
//! - [`handles`]: per-thread cache of the per-call metric handles.
//! - [`error`]: [`ApiError`](error::ApiError) and its one mapping to `Status`.
//! - [`config`]: defaults → TOML → `PROFILED__A__B` env → flags.
//! - [`server`]: wiring, health, reflection, metrics, graceful drain.
//! - [`edge`]: the layer in front of every call (content-type, metadata
//!   size, `grpc-timeout` → DEADLINE_EXCEEDED, one message per unary call,
//!   codec errors → INVALID_ARGUMENT); [`conn`]: connection admission
//!   (`server.max_connections`, handshake timeout); [`health`]:
//!   `grpc.health.v1` with `Watch` of unknown services as the protocol says.
//! - [`telemetry`]: logs, and OpenTelemetry span export behind the cargo
//!   feature `otel` (off by default).
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
pub mod server;
pub mod service;
pub mod telemetry;
pub mod tls;

pub use config::{Config, Overrides};
pub use server::{ServeError, serve, shutdown_signal};
