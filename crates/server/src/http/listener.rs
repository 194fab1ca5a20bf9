//! The HTTP listener (plain or TLS) and its connection admission.
//!
//! - At most `http.max_connections` connections are open at once (gauge
//!   `profiled_http_connections_open`). One more is refused as soon as it
//!   is accepted (`profiled_http_connections_closed_total{reason="limit"}`):
//!   on the plain listener with an HTTP/1.1 answer `429` RESOURCE_EXHAUSTED
//!   (`retry-after: 1`, `connection: close`, the JSON error body naming the
//!   setting) before it is closed; on the TLS listener it is closed before
//!   the handshake (no TLS work is spent on a connection that cannot be
//!   served). The slot is held from accept to close, through the TLS
//!   handshake, so idle keep-alive connections count.
//! - TLS handshakes run in tasks of their own, bounded by
//!   `tls.handshake_timeout_ms` (counted in
//!   `profiled_tls_handshake_failures_total` like the gRPC port's); ALPN
//!   offers `h2` and `http/1.1`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::tls::TlsReloader;

/// Refused connections being answered at once; beyond, a refused
/// connection is closed without an answer (bounds the work spent on a
/// flood).
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long a refused connection is kept to deliver its answer (and to
/// read what the client sent, so the close is not a reset that could
/// destroy the answer in flight).
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Serves `router` on `listener`, at most `max_connections` connections at
/// once (HTTPS with the gRPC port's certificates when `tls` is set,
/// reloaded with them), until the task is aborted.
pub fn spawn(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<TlsReloader>>,
    handshake_timeout: Duration,
    max_connections: usize,
) -> tokio::task::JoinHandle<()> {
    let admission = Admission::new(max_connections);
    tokio::spawn(async move {
        let r = match tls {
            None => {
                let l = PlainListener {
                    listener,
                    admission,
                };
                axum::serve(l, router).await
            }
            Some(tls) => {
                let l = TlsListener::start(listener, tls, handshake_timeout, admission);
                axum::serve(l, router).await
            }
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "http listener stopped");
        }
    })
}

/// The connection slots of the listener.
#[derive(Debug, Clone)]
struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    refusals: Arc<Semaphore>,
}

impl Admission {
    fn new(max: usize) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(max)),
            max,
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
        }
    }

    /// A slot for a new connection, or `None` (counted) when
    /// `http.max_connections` are open.
    fn admit(&self, peer: SocketAddr) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                metrics::gauge!("profiled_http_connections_open").increment(1.0);
                Some(Slot { _permit: permit })
            }
            Err(_) => {
                metrics::counter!("profiled_http_connections_closed_total", "reason" => "limit")
                    .increment(1);
                tracing::debug!(%peer, max = self.max,
                    "http.max_connections reached: connection refused");
                None
            }
        }
    }

    /// The error a refused connection is answered with.
    fn refusal(&self) -> ApiError {
        ApiError::Overloaded(format!(
            "http.max_connections = {} connections are open on the HTTP listener: \
             connection refused; retry later",
            self.max
        ))
    }

    /// Answers a plain connection over the cap with `429` and the JSON
    /// error body, then closes it (in a task of its own, at most
    /// [`MAX_REFUSALS_IN_FLIGHT`] at once, each at most
    /// [`REFUSAL_LINGER`]).
    fn refuse(&self, mut tcp: TcpStream) {
        let Ok(permit) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        let e = self.refusal();
        let body = super::error_body(&e);
        let status = axum::http::StatusCode::from_u16(e.http_status())
            .unwrap_or(axum::http::StatusCode::TOO_MANY_REQUESTS);
        let mut answer = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             retry-after: 1\r\nconnection: close\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&body);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                tcp.write_all(&answer).await?;
                tcp.shutdown().await?;
                let mut buf = [0u8; 4096];
                let mut read = 0usize;
                while read < (64 << 10) {
                    match tcp.read(&mut buf).await? {
                        0 => break,
                        n => read += n,
                    }
                }
                Ok::<(), io::Error>(())
            })
            .await;
        });
    }
}

/// One of the `http.max_connections` slots; frees it (and updates the
/// gauge) on drop.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("profiled_http_connections_open").decrement(1.0);
    }
}

/// An admitted connection: the stream and the slot it holds until closed.
#[derive(Debug)]
pub struct Admitted<IO> {
    io: IO,
    _slot: Slot,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Admitted<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts with a back-off on errors (EMFILE and the like) instead of
/// spinning.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Plain connections of the HTTP listener, under the cap.
struct PlainListener {
    listener: TcpListener,
    admission: Admission,
}

impl axum::serve::Listener for PlainListener {
    type Io = Admitted<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let (tcp, peer) = accept(&self.listener).await;
            match self.admission.admit(peer) {
                Some(slot) => {
                    return (
                        Admitted {
                            io: tcp,
                            _slot: slot,
                        },
                        peer,
                    );
                }
                None => self.admission.refuse(tcp),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

type TlsIo = Admitted<tokio_rustls::server::TlsStream<TcpStream>>;

/// TLS connections of the HTTP listener, under the cap: handshakes run in
/// tasks of their own, finished ones are handed to axum.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsIo, SocketAddr)>,
    local: io::Result<SocketAddr>,
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TlsListener {
    fn start(
        listener: TcpListener,
        tls: Arc<TlsReloader>,
        timeout: Duration,
        admission: Admission,
    ) -> TlsListener {
        let local = listener.local_addr();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            let mut cached: Option<(Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>)> = None;
            loop {
                let (tcp, peer) = accept(&listener).await;
                let Some(slot) = admission.admit(peer) else {
                    drop(tcp);
                    continue;
                };
                let current = tls.current();
                let cfg = match &cached {
                    Some((src, http)) if Arc::ptr_eq(src, &current) => http.clone(),
                    _ => {
                        let mut c = (*current).clone();
                        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                        let c = Arc::new(c);
                        cached = Some((current, c.clone()));
                        c
                    }
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((Admitted { io: s, _slot: slot }, peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("profiled_tls_handshake_failures_total", "reason" => "error")
                                .increment(1);
                            tracing::debug!(?peer, error = %e, "http TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!("profiled_tls_handshake_failures_total", "reason" => "timeout")
                                .increment(1);
                            tracing::debug!(?peer, "http TLS handshake timed out");
                        }
                    }
                });
            }
        });
        TlsListener {
            rx,
            local,
            _task: AbortOnDrop(task),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.rx.recv().await {
            Some(x) => x,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.local {
            Ok(a) => Ok(*a),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_resource_exhausted_naming_the_setting() {
        let e = Admission::new(3).refusal();
        assert_eq!(e.http_status(), 429);
        assert!(
            e.to_string().starts_with("http.max_connections = 3 "),
            "{e}"
        );
    }
}
