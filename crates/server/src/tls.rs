//! TLS on the gRPC port: rustls with the `ring` provider, HTTP/2 ALPN,
//! optional mTLS (client certificates verified against `tls.client_ca_file`)
//! and reload without restart.
//!
//! [`TlsReloader`] keeps the current `rustls::ServerConfig` in an `ArcSwap`;
//! [`TlsReloader::spawn_watch`] re-reads the certificate, key and client-CA
//! files every `tls.reload_interval_ms` and, when their bytes changed,
//! builds a new config and swaps it in (new connections use it, open ones
//! keep theirs). Files that do not load (say a certificate written before its
//! key) are reported and the previous config stays in use.
//!
//! [`tls_incoming`] accepts TCP connections and runs each handshake in its
//! own task with a timeout, so a slow or bad handshake never holds up other
//! connections; only finished handshakes reach the gRPC server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The files of a TLS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates clients must chain to (mTLS); `None` = no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
}

/// The bytes of the files, to notice changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("tls.{key} {}: {e}", path.display()))
}

impl TlsFiles {
    fn read(&self) -> Result<Contents, String> {
        Ok(Contents {
            cert: read(&self.cert, "cert_file")?,
            key: read(&self.key, "key_file")?,
            client_ca: match &self.client_ca {
                Some(p) => Some(read(p, "client_ca_file")?),
                None => None,
            },
        })
    }

    fn build(&self, c: &Contents) -> Result<ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&c.cert)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.cert_file {}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "tls.cert_file {}: no PEM certificate in the file",
                self.cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&c.key).map_err(|e| {
            format!(
                "tls.key_file {}: no usable PEM private key: {e}",
                self.key.display()
            )
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?;
        let builder = match (&self.client_ca, &c.client_ca) {
            (Some(path), Some(pem)) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert =
                        cert.map_err(|e| format!("tls.client_ca_file {}: {e}", path.display()))?;
                    roots.add(cert).map_err(|e| {
                        format!(
                            "tls.client_ca_file {}: bad CA certificate: {e}",
                            path.display()
                        )
                    })?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "tls.client_ca_file {}: no PEM certificate in the file",
                        path.display()
                    ));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| format!("tls.client_ca_file {}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
            format!(
                "tls.cert_file {} / tls.key_file {}: {e}",
                self.cert.display(),
                self.key.display()
            )
        })?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(cfg)
    }
}

/// The current server TLS configuration, reloaded when its files change.
#[derive(Debug)]
pub struct TlsReloader {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    /// The contents last tried (loaded or refused), so a bad set of files is
    /// reported once, not at every poll.
    last: Mutex<Contents>,
}

impl TlsReloader {
    /// Loads the files (an error names the file and the problem).
    pub fn load(files: TlsFiles) -> Result<TlsReloader, String> {
        let c = files.read()?;
        let cfg = files.build(&c)?;
        Ok(TlsReloader {
            files,
            current: ArcSwap::from_pointee(cfg),
            last: Mutex::new(c),
        })
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// True when client certificates are required.
    pub fn mtls(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Re-reads the files; when their bytes changed, rebuilds and swaps the
    /// configuration. `Ok(true)` = swapped, `Ok(false)` = unchanged, `Err` =
    /// changed but refused (the previous configuration stays).
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let c = self.files.read()?;
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if *last == c {
                return Ok(false);
            }
            *last = c.clone();
        }
        let cfg = self.files.build(&c)?;
        self.current.store(Arc::new(cfg));
        Ok(true)
    }

    /// Polls the files every `interval` until the task is aborted.
    pub fn spawn_watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last_err: Option<String> = None;
            loop {
                tick.tick().await;
                let t = this.clone();
                let r = tokio::task::spawn_blocking(move || t.reload_if_changed())
                    .await
                    .unwrap_or_else(|e| Err(format!("reload task: {e}")));
                match r {
                    Ok(true) => {
                        last_err = None;
                        metrics::counter!("profiled_tls_reloads_total", "outcome" => "loaded")
                            .increment(1);
                        tracing::info!(cert = %this.files.cert.display(), "TLS files changed: new connections use the new certificate");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        if last_err.as_deref() != Some(e.as_str()) {
                            metrics::counter!("profiled_tls_reloads_total", "outcome" => "refused")
                                .increment(1);
                            tracing::warn!(error = %e, "TLS files changed but cannot be used: keeping the previous certificate");
                            last_err = Some(e);
                        }
                    }
                }
            }
        })
    }
}

/// Accepts connections on `listener` (under `limits`, see [`crate::conn`])
/// and hands finished TLS handshakes to the returned stream (for
/// `serve_with_incoming_shutdown`). Each handshake runs in its own task,
/// bounded by `handshake_timeout`; failures are logged at debug level and
/// counted, and never affect other connections. The accept loop ends when
/// the stream is dropped; abort the handle to stop it sooner.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
    handshake_timeout: Duration,
    limits: crate::conn::ConnLimits,
) -> (
    crate::conn::Admitted<TlsStream<TcpStream>>,
    tokio::task::JoinHandle<()>,
) {
    crate::conn::admit(listener, limits, move |tcp: TcpStream| {
        let acceptor = TlsAcceptor::from(tls.current());
        let peer = tcp.peer_addr().ok();
        async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Some(stream),
                Ok(Err(e)) => {
                    metrics::counter!("profiled_tls_handshake_failures_total", "reason" => "error")
                        .increment(1);
                    tracing::debug!(?peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    metrics::counter!("profiled_tls_handshake_failures_total", "reason" => "timeout")
                        .increment(1);
                    tracing::debug!(?peer, "TLS handshake timed out");
                    None
                }
            }
        }
    })
}
