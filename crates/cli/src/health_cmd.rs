//! `profilectl health`: a `grpc.health.v1.Health/Check` client for container
//! health checks (Docker `HEALTHCHECK`, Kubernetes `exec` probes, scripts).
//! Exits 0 when the service is SERVING and 1 otherwise (NOT_SERVING, unknown
//! service, connection refused, deadline exceeded), with one line saying why.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Arguments of `profilectl health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Server address.
    #[arg(long, env = "PROFILED_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Service to check: `profiled.v1.ProfileService` (ready to answer: a model
    /// is loaded and warm, not draining) or `""` (the process is up).
    #[arg(long, default_value = "profiled.v1.ProfileService")]
    pub service: String,
    /// Deadline of the whole check (connect + call), in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

/// Runs `profilectl health`: `Ok` only when the service is SERVING.
pub fn run(a: HealthArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deadline = Duration::from_millis(a.timeout_ms);
    let status = rt.block_on(async {
        tokio::time::timeout(deadline, check(&a.addr, &a.service, deadline))
            .await
            .map_err(|_| anyhow!("{}: no answer within {} ms", a.addr, a.timeout_ms))?
    })?;
    let shown = if a.service.is_empty() {
        "\"\" (server)"
    } else {
        a.service.as_str()
    };
    if status == ServingStatus::Serving {
        println!("{shown}: SERVING");
        Ok(())
    } else {
        bail!("{shown}: {}", status.as_str_name())
    }
}

async fn check(addr: &str, service: &str, deadline: Duration) -> Result<ServingStatus> {
    let ch = Channel::from_shared(addr.to_string())
        .map_err(|e| anyhow!("bad address {addr}: {e}"))?
        .connect_timeout(deadline)
        .timeout(deadline)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let r = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map_err(|s| {
            anyhow!(
                "{addr}: health check of {service:?}: {}: {}",
                s.code(),
                s.message()
            )
        })?
        .into_inner();
    Ok(ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown))
}
