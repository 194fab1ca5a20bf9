//! A small raw client for the cases a well-behaved gRPC client cannot send:
//! HTTP/2 through the `h2` crate with any headers and any body bytes (bad
//! protobuf, broken gRPC framing, two messages on a unary call, no or a
//! wrong content-type, huge metadata), and raw TCP for connections that
//! never finish their handshake.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::HeaderMap;
use tokio::net::TcpStream;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `msg` in gRPC framing: flag 0 (not compressed), 4-byte big-endian
/// length, the bytes.
pub fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// What the server answered to one raw call.
#[derive(Debug)]
pub struct RawAnswer {
    /// HTTP status (`:status`).
    pub http_status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The response body (gRPC-framed messages).
    pub data: Vec<u8>,
    /// Response trailers, if any.
    pub trailers: Option<HeaderMap>,
}

impl RawAnswer {
    /// The gRPC status code and message, from the trailers or (a
    /// trailers-only answer) the headers.
    pub fn grpc_status(&self) -> Option<(i32, String)> {
        let h = self
            .trailers
            .as_ref()
            .filter(|t| t.contains_key("grpc-status"))
            .unwrap_or(&self.headers);
        let s = tonic::Status::from_header_map(h)?;
        Some((s.code() as i32, s.message().to_string()))
    }
}

/// One HTTP/2 connection to the server.
#[derive(Debug, Clone)]
pub struct RawConn {
    client: h2::client::SendRequest<Bytes>,
    authority: String,
}

impl RawConn {
    /// Connects to `addr` (`HOST:PORT`) and does the HTTP/2 handshake.
    pub async fn connect(addr: &str) -> Result<RawConn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (client, conn) = h2::client::handshake(tcp).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(RawConn {
            client,
            authority: addr.to_string(),
        })
    }

    /// A POST to `path` with `content_type` (`None` = no content-type),
    /// `te: trailers`, the extra `headers`, and `body` as the whole request
    /// body; returns the answer, or the HTTP/2 error that ended the stream
    /// or the connection.
    pub async fn call(
        &self,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<RawAnswer> {
        let mut b = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", self.authority))
            .header("te", "trailers");
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(())?;
        let mut client = self.client.clone().ready().await?;
        let (resp, mut send) = client.send_request(req, body.is_empty())?;
        if !body.is_empty() {
            send.send_data(Bytes::copy_from_slice(body), true)?;
        }
        let resp = tokio::time::timeout(Duration::from_secs(30), resp)
            .await
            .context("no answer within 30 s")??;
        let (parts, mut recv) = resp.into_parts();
        let mut data = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await?;
        Ok(RawAnswer {
            http_status: parts.status.as_u16(),
            headers: parts.headers,
            data,
            trailers,
        })
    }

    /// A gRPC call of `path` with the raw request `body` (already framed)
    /// and the extra `headers`, with content-type `application/grpc`.
    pub async fn grpc(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<RawAnswer> {
        self.call(path, Some("application/grpc"), headers, body)
            .await
    }
}

/// True when the server closed `tcp` (a read returns end of file or an
/// error) within `within`.
pub async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // Bytes the server sent (its SETTINGS): keep reading.
            Ok(Ok(_)) => {}
        }
    }
}
