//! `profiled`: the gRPC server binary. Configuration: defaults → `--config`
//! TOML → `PROFILED__A__B` environment variables → flags.

use std::path::PathBuf;

use clap::Parser;
use profiled_server::{Config, Overrides};
use tracing_subscriber::EnvFilter;

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
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let over = Overrides {
        listen: a.listen,
        port_file: a.port_file,
        repository: a.models,
        metrics_listen: a.metrics_listen,
        log_json: a.log_json.then_some(true),
        admin_token_file: a.admin_token_file,
    };
    let cfg = Config::load(a.config.as_deref(), &over).map_err(anyhow::Error::msg)?;
    if a.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.json {
        logs.json().init();
    } else {
        logs.init();
    }
    profiled_server::serve(cfg, profiled_server::shutdown_signal()).await?;
    Ok(())
}
