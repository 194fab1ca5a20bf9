//! Connection admission on the gRPC port: the accept loop in front of
//! tonic (`serve_with_incoming` takes any stream of connections).
//!
//! - At most `server.max_connections` connections are open at once; one
//!   more is closed as soon as it is accepted (counted in
//!   `profiled_connections_closed_total{reason="limit"}`; the open ones in
//!   the gauge `profiled_connections_open`).
//! - A connection must complete its handshake — TLS when configured, then
//!   the 24-byte HTTP/2 client preface — within
//!   `server.handshake_timeout_ms`, or it is closed
//!   (`reason="handshake_timeout"`): a client that sends a few bytes and
//!   stops holds no descriptor for long.
//! - Each handshake runs in a task of its own, so a slow one never holds up
//!   the others; the preface read is replayed to hyper untouched.
//!
//! Connections that stay open but stop answering are closed by HTTP/2
//! keepalive pings (`server.http2_keepalive_interval_ms` /
//! `server.http2_keepalive_timeout_ms`, set on the tonic server).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE_LEN: usize = 24;

/// Limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once (`server.max_connections`).
    pub max_connections: usize,
    /// Time from accept to the end of the HTTP/2 preface (including TLS).
    pub handshake_timeout: Duration,
}

/// An admitted connection: the stream, the preface bytes already read (fed
/// back to the reader first) and the slot it holds.
#[derive(Debug)]
pub struct Conn<IO> {
    io: IO,
    preface: Vec<u8>,
    pos: usize,
    _slot: Slot,
}

/// One of the `max_connections` slots; frees it (and updates the gauge) on
/// drop.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("profiled_connections_open").decrement(1.0);
    }
}

impl<IO: Connected> Connected for Conn<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.preface.len() {
            let n = (self.preface.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.preface[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
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

/// The stream of admitted connections [`admit`] returns.
pub type Admitted<IO> = tokio_stream::wrappers::ReceiverStream<Result<Conn<IO>, io::Error>>;

/// Accepts connections on `listener`, runs `handshake` (e.g. TLS; it
/// applies its own timeouts and metrics and answers `None` when it failed)
/// and reads the HTTP/2 preface, under [`ConnLimits`], and hands admitted
/// connections to the returned stream. The loop ends when the stream is
/// dropped; abort the handle to stop it sooner.
pub fn admit<IO, H, F>(
    listener: TcpListener,
    limits: ConnLimits,
    handshake: H,
) -> (Admitted<IO>, tokio::task::JoinHandle<()>)
where
    IO: AsyncRead + Unpin + Send + 'static,
    H: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = Option<IO>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => break,
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics::counter!("profiled_connections_closed_total", "reason" => "limit")
                    .increment(1);
                tracing::debug!(%peer, max = limits.max_connections,
                    "server.max_connections reached: connection closed");
                drop(tcp);
                continue;
            };
            metrics::gauge!("profiled_connections_open").increment(1.0);
            let slot = Slot { _permit: permit };
            let _ = tcp.set_nodelay(true);
            let hs = handshake(tcp);
            let tx = tx.clone();
            tokio::spawn(async move {
                let admitted = tokio::time::timeout(limits.handshake_timeout, async move {
                    let mut io = hs.await?;
                    let mut preface = vec![0u8; PREFACE_LEN];
                    io.read_exact(&mut preface).await.ok()?;
                    Some((io, preface))
                })
                .await;
                match admitted {
                    Ok(Some((io, preface))) => {
                        let _ = tx
                            .send(Ok(Conn {
                                io,
                                preface,
                                pos: 0,
                                _slot: slot,
                            }))
                            .await;
                    }
                    Ok(None) => {
                        tracing::debug!(%peer, "connection closed before its handshake ended");
                    }
                    Err(_) => {
                        metrics::counter!("profiled_connections_closed_total", "reason" => "handshake_timeout")
                            .increment(1);
                        tracing::debug!(%peer, timeout_ms = limits.handshake_timeout.as_millis() as u64,
                            "handshake (TLS + HTTP/2 preface) not done in time: connection closed");
                    }
                }
            });
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpListener, std::net::SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[tokio::test]
    async fn slow_prefaces_are_closed_and_full_ones_replayed() {
        use futures::StreamExt;
        let (l, addr) = pair().await;
        let (mut incoming, task) = admit(
            l,
            ConnLimits {
                max_connections: 8,
                handshake_timeout: Duration::from_millis(200),
            },
            |tcp| async move { Some(tcp) },
        );
        // 10 bytes of the preface, then nothing: closed by the server.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..10])
            .await
            .unwrap();
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
            .await
            .expect("the slow connection was not closed");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        // A full preface is admitted and read back unchanged.
        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest")
            .await
            .unwrap();
        let mut conn = incoming.next().await.unwrap().unwrap();
        let mut got = vec![0u8; 28];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest");
        task.abort();
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed() {
        let (l, addr) = pair().await;
        let (_incoming, task) = admit(
            l,
            ConnLimits {
                max_connections: 2,
                handshake_timeout: Duration::from_secs(30),
            },
            |tcp| async move { Some(tcp) },
        );
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        // Let the loop take both before the third arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("the third connection was not closed");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        task.abort();
    }
}
