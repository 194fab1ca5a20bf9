//! The HTTP/2 edge of every gRPC call, in front of all services (data,
//! admin, health, reflection): what tonic's transport and codec would
//! otherwise answer with the wrong code.
//!
//! [`EdgeLayer`] checks each request before a service sees it and maps each
//! answer after:
//!
//! - a `content-type` that is not `application/grpc…` (or none) is refused
//!   with HTTP 415 (the gRPC protocol's answer), never served as gRPC;
//! - request metadata over `server.max_metadata_bytes` is refused alone with
//!   OUT_OF_RANGE naming the setting (the connection and its other calls
//!   carry on);
//! - a `grpc-timeout` that expires before the answer is ready ends the call
//!   with DEADLINE_EXCEEDED (tonic's own timer, which fires at the same
//!   instant, would say CANCELLED "Timeout expired");
//! - a call whose request is one message (every method but the
//!   client-streaming ones, read from the descriptor sets) that carries a
//!   second message is refused with INVALID_ARGUMENT;
//! - the codec's statuses — malformed protobuf, broken gRPC framing, a
//!   missing message, a message over `server.max_request_bytes` — are
//!   rewritten by [`crate::error::edge_status`] wherever they travel
//!   (trailers-only answers and the trailers of a stream).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use prost::Message;
use tonic::Status;
use tonic::body::Body;

use crate::error::edge_status;

/// Settings of the edge (from `[server]`).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// `server.max_request_bytes` (named in rewritten size errors).
    pub max_request_bytes: usize,
    /// `server.max_metadata_bytes`: the largest request header list (HTTP/2
    /// accounting: name + value + 32 bytes per entry) a call may carry.
    pub max_metadata_bytes: usize,
}

/// The `tower` layer of the edge (see the module docs).
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    cfg: Arc<EdgeConfig>,
    unary_request: Arc<HashSet<String>>,
}

impl EdgeLayer {
    /// The layer for the services described by `descriptor_sets` (encoded
    /// `FileDescriptorSet`s): their methods whose request is not a stream
    /// take exactly one message.
    pub fn new(cfg: EdgeConfig, descriptor_sets: &[&[u8]]) -> EdgeLayer {
        EdgeLayer {
            cfg: Arc::new(cfg),
            unary_request: Arc::new(unary_request_paths(descriptor_sets)),
        }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> EdgeService<S> {
        EdgeService {
            inner,
            cfg: self.cfg.clone(),
            unary_request: self.unary_request.clone(),
        }
    }
}

/// The paths (`/package.Service/Method`) of the methods whose request is a
/// single message.
pub fn unary_request_paths(descriptor_sets: &[&[u8]]) -> HashSet<String> {
    let mut out = HashSet::new();
    for set in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = service.name.unwrap_or_default();
                for m in service.method {
                    if !m.client_streaming.unwrap_or(false) {
                        let full = if package.is_empty() {
                            service_name.clone()
                        } else {
                            format!("{package}.{service_name}")
                        };
                        out.insert(format!("/{full}/{}", m.name.unwrap_or_default()));
                    }
                }
            }
        }
    }
    out
}

/// The service of [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct EdgeService<S> {
    inner: S,
    cfg: Arc<EdgeConfig>,
    unary_request: Arc<HashSet<String>>,
}

/// The size of a header list as HTTP/2 counts it (RFC 9113 §6.5.2).
pub fn header_list_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum()
}

/// A `grpc-timeout` value (`1..=8` digits and a unit `H M S m u n`); `None`
/// when absent or malformed (the call then has no deadline, as in tonic).
pub fn parse_grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A trailers-only gRPC answer with `status`.
fn status_response(status: Status) -> Response<Body> {
    status.into_http()
}

/// HTTP 415 for a request that is not gRPC (with a gRPC status as well, for
/// clients that read one).
fn not_grpc(content_type: Option<&HeaderValue>) -> Response<Body> {
    let what = match content_type {
        None => "no content-type".to_string(),
        Some(v) => format!(
            "content-type {:?}",
            crate::error::bounded(&String::from_utf8_lossy(v.as_bytes()), 64)
        ),
    };
    let mut res = status_response(Status::invalid_argument(format!(
        "{what}: this is a gRPC server; requests need content-type application/grpc"
    )));
    *res.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    res
}

impl<S> tower::Service<Request<Body>> for EdgeService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let content_type = req.headers().get(http::header::CONTENT_TYPE);
        if !content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")) {
            let res = not_grpc(content_type);
            return Box::pin(async move { Ok(res) });
        }
        let meta = header_list_bytes(req.headers());
        if meta > self.cfg.max_metadata_bytes {
            let res = status_response(Status::out_of_range(format!(
                "request metadata: {meta} bytes exceeds server.max_metadata_bytes = {}",
                self.cfg.max_metadata_bytes
            )));
            return Box::pin(async move { Ok(res) });
        }
        // The timer starts before tonic's (which is created after this call
        // returns), so it never fires later: when both have expired, this
        // future (polled first by tonic's) answers DEADLINE_EXCEEDED.
        let deadline = parse_grpc_timeout(req.headers()).map(|d| {
            (
                d,
                tokio::time::Instant::now()
                    .checked_add(d)
                    .unwrap_or_else(|| {
                        tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
                    }),
            )
        });
        let req = if self.unary_request.contains(req.uri().path()) {
            req.map(|b| Body::new(OneMessage::new(b)))
        } else {
            req
        };
        let max_request_bytes = self.cfg.max_request_bytes;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = match deadline {
                None => fut.await?,
                Some((d, at)) => match tokio::time::timeout_at(at, fut).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Ok(status_response(Status::deadline_exceeded(format!(
                            "deadline exceeded: the call's grpc-timeout of {d:?} passed before the answer was ready"
                        ))));
                    }
                },
            };
            Ok(map_response(res, max_request_bytes))
        })
    }
}

/// [`edge_status`] on the status of a trailers-only answer, and on the
/// trailers of a streamed one.
fn map_response(mut res: Response<Body>, max_request_bytes: usize) -> Response<Body> {
    map_status_headers(res.headers_mut(), max_request_bytes);
    res.map(|b| {
        Body::new(MapTrailers {
            inner: b,
            max_request_bytes,
        })
    })
}

/// Rewrites the `grpc-status` / `grpc-message` in `headers` when
/// [`edge_status`] changes them. Only non-OK statuses the codec can produce
/// (INTERNAL, OUT_OF_RANGE) are parsed at all.
pub fn map_status_headers(headers: &mut HeaderMap, max_request_bytes: usize) {
    let code = headers.get("grpc-status").map(|v| v.as_bytes());
    if code != Some(b"13") && code != Some(b"11") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let mapped = edge_status(status.clone(), max_request_bytes);
    if mapped.code() != status.code() || mapped.message() != status.message() {
        // On failure (cannot happen for a plain message) the codec's own
        // status stays: still an answer.
        let _ = mapped.add_header(headers);
    }
}

/// A response body whose trailers go through [`map_status_headers`].
struct MapTrailers {
    inner: Body,
    max_request_bytes: usize,
}

impl http_body::Body for MapTrailers {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let max = self.max_request_bytes;
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(frame.map(|r| {
            r.map(|f| match f.into_trailers() {
                Ok(mut t) => {
                    map_status_headers(&mut t, max);
                    Frame::trailers(t)
                }
                Err(f) => f,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Where the gRPC framing of a request body stands (5-byte prefix: flag
/// and big-endian length, then the message).
#[derive(Debug, Default, Clone)]
pub struct Framing {
    prefix: [u8; 5],
    prefix_len: usize,
    remaining: u64,
    messages: u32,
}

impl Framing {
    /// Follows `data`; `Err` when a second message starts.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            if self.prefix_len == 0 {
                self.messages += 1;
                if self.messages > 1 {
                    return Err(Status::invalid_argument(
                        "a second request message on a call that takes exactly one",
                    ));
                }
            }
            let take = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == 5 {
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.remaining = u64::from(len);
                self.prefix_len = 0;
            }
        }
        Ok(())
    }
}

/// A request body that fails (INVALID_ARGUMENT) when a second message
/// starts: the request of a unary-request method.
struct OneMessage {
    inner: Body,
    framing: Framing,
    failed: bool,
}

impl OneMessage {
    fn new(inner: Body) -> OneMessage {
        OneMessage {
            inner,
            framing: Framing::default(),
            failed: false,
        }
    }
}

impl http_body::Body for OneMessage {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            let data = data.clone();
            if let Err(e) = self.framing.feed(&data) {
                self.failed = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_like_the_protocol_says() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
            parse_grpc_timeout(&m)
        };
        assert_eq!(h("0n"), Some(Duration::ZERO));
        assert_eq!(h("3m"), Some(Duration::from_millis(3)));
        assert_eq!(h("2S"), Some(Duration::from_secs(2)));
        assert_eq!(h("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(h("99999999u"), Some(Duration::from_micros(99_999_999)));
        for bad in ["", "m", "123456789m", "1x", "-1m", "1.5S"] {
            assert_eq!(h(bad), None, "{bad:?}");
        }
        assert_eq!(parse_grpc_timeout(&HeaderMap::new()), None);
    }

    #[test]
    fn framing_counts_messages_across_chunks() {
        // One message of 3 bytes, split anywhere: fine.
        let one = [0u8, 0, 0, 0, 3, 1, 2, 3];
        for cut in 0..one.len() {
            let mut f = Framing::default();
            f.feed(&one[..cut]).unwrap();
            f.feed(&one[cut..]).unwrap();
        }
        // A second message, even empty, split anywhere: refused.
        let two = [0u8, 0, 0, 0, 1, 9, 0, 0, 0, 0, 0];
        for cut in 0..two.len() {
            let mut f = Framing::default();
            let r = f.feed(&two[..cut]).and_then(|()| f.feed(&two[cut..]));
            assert_eq!(
                r.unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "cut {cut}"
            );
        }
        // Two empty messages back to back.
        let mut f = Framing::default();
        assert!(f.feed(&[0; 10]).is_err());
    }

    #[test]
    fn unary_request_methods_come_from_the_descriptors() {
        let paths = unary_request_paths(&[
            profiled_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]);
        assert!(
            paths.contains("/profiled.v1.ProfileService/Embed"),
            "{paths:?}"
        );
        assert!(paths.contains("/grpc.health.v1.Health/Check"));
        assert!(paths.contains("/grpc.health.v1.Health/Watch"));
        assert!(!paths.contains("/profiled.v1.ProfileService/EmbedStream"));
    }

    #[test]
    fn codec_statuses_in_headers_are_rewritten() {
        let mut h = HeaderMap::new();
        Status::internal("failed to decode Protobuf message: invalid wire type value: 7")
            .add_header(&mut h)
            .unwrap();
        map_status_headers(&mut h, 100);
        let s = Status::from_header_map(&h).unwrap();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().contains("invalid wire type value: 7"),
            "{}",
            s.message()
        );
        // A real internal error stays INTERNAL.
        let mut h = HeaderMap::new();
        Status::internal("internal: boom")
            .add_header(&mut h)
            .unwrap();
        map_status_headers(&mut h, 100);
        assert_eq!(
            Status::from_header_map(&h).unwrap().code(),
            tonic::Code::Internal
        );
    }
}
