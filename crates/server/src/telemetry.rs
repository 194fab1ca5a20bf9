//! Logs and traces: the `tracing` subscriber (text or JSON on stderr, filter
//! from `RUST_LOG` or `log.filter`) and, with the cargo feature `otel`, an
//! OpenTelemetry OTLP/gRPC span exporter (config `[otel]`: `endpoint`,
//! `service_name`). Without the feature the exporter is not compiled; a
//! configured endpoint then only logs a warning.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::Config;

/// Why logging or tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A global subscriber was already installed.
    #[error("tracing subscriber: {0}")]
    Subscriber(String),
    /// The OTLP exporter could not be built.
    #[error("otel: {0}")]
    Otel(String),
}

/// Keeps the span exporter running; dropping it flushes pending spans and
/// stops the exporter.
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("otel: shutdown: {e}");
        }
    }
}

/// Whether this build can export OpenTelemetry spans.
pub const OTEL_COMPILED: bool = cfg!(feature = "otel");

#[cfg(feature = "otel")]
fn otel_provider(
    cfg: &crate::config::OtelConfig,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    // The tonic exporter needs a Tokio reactor when it exports, so the batch
    // processor runs on the Tokio runtime rather than on its own OS thread
    // (which has none and would panic at the first export).
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(cfg.endpoint.clone())
        .build()
        .map_err(|e| TelemetryError::Otel(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build(),
        )
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber: stderr logs per `cfg.log`, plus span export
/// per `cfg.otel` when compiled with the `otel` feature. Call it once, inside
/// the Tokio runtime (the exporter runs on it); keep the returned guard until
/// exit.
pub fn init(cfg: &Config) -> Result<Telemetry, TelemetryError> {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&cfg.log.filter))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if cfg.log.json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    #[allow(unused_mut)]
    let mut telemetry = Telemetry::default();
    #[cfg(feature = "otel")]
    let otel = if cfg.otel.endpoint.is_empty() {
        None
    } else {
        use opentelemetry::trace::TracerProvider as _;
        let provider = otel_provider(&cfg.otel)?;
        let tracer = provider.tracer("profiled");
        telemetry.provider = Some(provider);
        // Per-call spans are DEBUG (free when only logging at INFO); the
        // exporter's own filter turns them on.
        let f = filter().add_directive(
            "profiled_server::service=debug"
                .parse()
                .map_err(|e| TelemetryError::Otel(format!("filter: {e}")))?,
        );
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(f),
        )
    };
    #[cfg(not(feature = "otel"))]
    let otel: Option<tracing_subscriber::layer::Identity> = None;
    let _ = &mut telemetry;
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    if !OTEL_COMPILED && !cfg.otel.endpoint.is_empty() {
        tracing::warn!(
            endpoint = %cfg.otel.endpoint,
            "otel.endpoint is set but this build has no `otel` feature: no spans are exported"
        );
    }
    if OTEL_COMPILED && !cfg.otel.endpoint.is_empty() {
        tracing::info!(endpoint = %cfg.otel.endpoint, service = %cfg.otel.service_name, "exporting spans over OTLP/gRPC");
    }
    Ok(telemetry)
}
