//! A plain HTTP/1.1 client over a `TcpStream` for the HTTP/JSON edge (and
//! for WebDriver, which speaks the same): one request per connection
//! (`connection: close`), the answer read to its end. No client library:
//! the tests see exactly the bytes on the wire.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// A whole HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// Status code.
    pub status: u16,
    /// Header lines (names lower-cased).
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "HTTP {} body is not JSON: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size_text = std::str::from_utf8(&b[..end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        b = &b[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Sends one request (`body` with its own `content-type` among `headers`
/// when needed) and reads the whole answer.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpAnswer> {
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("content-length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    s.write_all(&bytes)?;
    // Read the head, then exactly content-length bytes (or to the end of a
    // chunked body, or to EOF): some servers keep the connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("connection closed before the end of the answer's headers");
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = std::str::from_utf8(&raw[..split])?.to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("no status code")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut rest = raw[split + 4..].to_vec();
    loop {
        let done = match (length, chunked) {
            (Some(n), _) => rest.len() >= n,
            (None, true) => rest.ends_with(b"0\r\n\r\n"),
            (None, false) => method == "HEAD" || status == 204 || status == 304,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
    }
    let body = match (length, chunked) {
        (Some(n), _) => rest[..n.min(rest.len())].to_vec(),
        (None, true) => dechunk(&rest)?,
        (None, false) => rest,
    };
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

/// `POST path` with a JSON body (and `authorization: Bearer TOKEN` when a
/// token is given).
pub fn post_json(addr: &str, path: &str, body: &Value, token: Option<&str>) -> Result<HttpAnswer> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    http_request(
        addr,
        "POST",
        path,
        &headers,
        Some(serde_json::to_vec(body)?.as_slice()),
    )
}

/// `GET path`.
pub fn get(addr: &str, path: &str) -> Result<HttpAnswer> {
    http_request(addr, "GET", path, &[], None)
}

/// Asserts an HTTP error answer: `status`, the JSON body `{code, status,
/// message}` with gRPC code name `code` and a message containing `needle`.
#[track_caller]
pub fn assert_http_error(a: &HttpAnswer, status: u16, code: &str, needle: &str) {
    assert_eq!(a.status, status, "body: {}", a.text());
    let j: Value = serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", a.text()));
    assert_eq!(j["code"], code, "{j}");
    assert_eq!(j["status"], status, "{j}");
    let msg = j["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "message {msg:?} does not contain {needle:?}"
    );
    assert_eq!(
        j.as_object().map(|o| o.len()),
        Some(3),
        "the error body has exactly code, status, message: {j}"
    );
}
