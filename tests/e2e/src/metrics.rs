//! The Prometheus endpoint of the server: a free port for it, scraping it,
//! and reading samples out of the text format.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A free loopback address (`127.0.0.1:PORT`) for a second listener (e.g.
/// metrics) or for a client that must find nothing listening, found by
/// binding port 0 and releasing it.
pub fn free_port() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// `GET /metrics` of a Prometheus endpoint, as text.
pub fn scrape(addr: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .context("no HTTP body")?;
    if !out.starts_with("HTTP/1.1 200") {
        bail!(
            "metrics endpoint answered {}",
            out.lines().next().unwrap_or("")
        );
    }
    Ok(body)
}

/// Scrapes `addr` every 100 ms until `pred` holds for the text (metrics and
/// moka's eviction housekeeping are asynchronous) and returns that scrape;
/// fails with the last scrape after `tries` attempts.
pub async fn scrape_until(addr: &str, tries: usize, pred: impl Fn(&str) -> bool) -> Result<String> {
    let mut last = String::new();
    for _ in 0..tries {
        last = scrape(addr).unwrap_or_default();
        if pred(&last) {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("metrics never satisfied the condition; last scrape:\n{last}")
}

/// The value of the first sample of `name` (exact metric name, e.g.
/// `profiled_request_seconds_count`) carrying every `label="value"` pair.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        let ok = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        if !ok {
            return None;
        }
        rest.rsplit(' ').next()?.parse().ok()
    })
}
