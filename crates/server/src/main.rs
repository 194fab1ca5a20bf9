//! `profiled`: the gRPC server binary. Configuration: defaults → `--config`
//! TOML → `PROFILED__A__B` environment variables → flags.

use std::path::PathBuf;

use clap::Parser;
use profiled_server::{Config, Overrides};

/// mimalloc: glibc malloc was ~20 % of the server's CPU under load (frees
/// of buffers allocated on another thread, between tokio and the workers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Serves multi-dimensional user profiles over gRPC.
#[derive(Debug, Parser)]
#[command(name = "profiled", version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "PROFILED_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address (server.listen), e.g. 127.0.0.1:50051 or 127.0.0.1:0.
    #[arg(long)]
    listen: Option<String>,
    /// Write the bound address into this file (server.port_file).
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Model repository (models.repository).
    #[arg(long)]
    models: Option<PathBuf>,
    /// Prometheus listen address (metrics.listen); empty turns metrics off.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// JSON logs (log.json).
    #[arg(long)]
    log_json: bool,
    /// Enable ModelAdmin with the bearer token in this file (admin.token_file).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// TLS certificate chain, PEM (tls.cert_file).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key, PEM (tls.key_file).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by these CAs, PEM (tls.client_ca_file).
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// Data-plane bearer tokens, one a line (auth.token_file).
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// Every ProfileService call needs a token (auth.required).
    #[arg(long)]
    auth_required: bool,
    /// Plaintext listener serving only grpc.health.v1 (server.health_listen).
    #[arg(long)]
    health_listen: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let over = Overrides {
        listen: a.listen,
        port_file: a.port_file,
        repository: a.models,
        metrics_listen: a.metrics_listen,
        log_json: a.log_json.then_some(true),
        admin_token_file: a.admin_token_file,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        tls_client_ca: a.tls_client_ca,
        auth_token_file: a.auth_token_file,
        auth_required: a.auth_required.then_some(true),
        health_listen: a.health_listen,
    };
    let cfg = Config::load(a.config.as_deref(), &over)?;
    if a.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if cfg.server.io_threads > 0 {
        rt.worker_threads(cfg.server.io_threads);
    }
    rt.build()?.block_on(async {
        // Logs (and spans, with the `otel` feature) until the guard drops.
        let telemetry = profiled_server::telemetry::init(&cfg)?;
        profiled_server::serve(cfg, profiled_server::shutdown_signal()).await?;
        drop(telemetry);
        Ok(())
    })
}
