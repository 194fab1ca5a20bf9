//! Bearer-token authentication and per-token rate limits, as a tonic
//! interceptor put in front of a service (`ProfileService`, `ModelAdmin`).
//!
//! - Tokens come from a file (one a line: `TOKEN` or `NAME TOKEN`, `#`
//!   comments) and/or an environment variable (comma separated). Each has a
//!   name (given, or `<source>-<n>`) used in logs, metrics and error
//!   messages; the secret itself is never logged, printed or put in a message.
//! - The `authorization: Bearer <token>` value is compared with every
//!   configured token in constant time (`subtle`).
//! - Missing or wrong token: UNAUTHENTICATED naming what is wrong. A missing
//!   token passes when the service does not require one (`auth.required =
//!   false`); a wrong token never passes.
//! - Each token has its own GCRA limiter (`governor`): over the limit the call
//!   answers RESOURCE_EXHAUSTED naming the token, the limit and the wait.
//!
//! - Tokens rotate without a restart: [`Authenticator::reload`] swaps in a
//!   new token list atomically (the server re-reads the token sources every
//!   `auth.reload_interval_ms`); a bad new list is refused and the previous
//!   one stays. A token kept under the same name and limit keeps its
//!   limiter's state.
//!
//! Health and reflection are not wrapped: they stay reachable without a token.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::ApiError;

/// A configured token: a name (safe to log) and its secret.
#[derive(Clone)]
pub struct TokenEntry {
    /// Name used in logs, metrics and messages.
    pub name: String,
    /// The bearer secret (never logged).
    pub secret: String,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Parses a token file: one token a line, `TOKEN` or `NAME TOKEN`; blank
/// lines and lines starting with `#` are skipped. `what` names the config
/// key in messages (e.g. `auth.token_file`). Unnamed tokens are called
/// `<prefix>-<line>`.
pub fn parse_token_file(text: &str, what: &str, prefix: &str) -> Result<Vec<TokenEntry>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (name, secret) = match parts.as_slice() {
            [secret] => (format!("{prefix}-{}", i + 1), *secret),
            [name, secret] => ((*name).to_string(), *secret),
            _ => {
                return Err(format!(
                    "{what}: line {}: expected `TOKEN` or `NAME TOKEN`",
                    i + 1
                ));
            }
        };
        out.push(TokenEntry {
            name,
            secret: secret.to_string(),
        });
    }
    Ok(out)
}

/// Parses the value of a token environment variable: tokens separated by
/// commas (surrounding blanks ignored), named `<prefix>-<n>`.
pub fn parse_token_list(value: &str, prefix: &str) -> Vec<TokenEntry> {
    value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .enumerate()
        .map(|(i, t)| TokenEntry {
            name: format!("{prefix}-{}", i + 1),
            secret: t.to_string(),
        })
        .collect()
}

/// Reads the tokens of one config section (`section` = `auth` or `admin`)
/// from its `token_file` and `token_env` (both may be set: the union).
/// A source that is set but yields no token is an error, as are duplicate
/// names.
pub fn load_tokens(
    section: &str,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Vec<TokenEntry>, String> {
    let mut out = Vec::new();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| format!("{section}.token_file {}: {e}", f.display()))?;
        let t = parse_token_file(&text, &format!("{section}.token_file"), "token-file")?;
        if t.is_empty() {
            return Err(format!(
                "{section}.token_file {}: no token in the file",
                f.display()
            ));
        }
        out.extend(t);
    }
    if let Some(var) = env {
        let v =
            std::env::var(var).map_err(|_| format!("{section}.token_env: ${var} is not set"))?;
        let t = parse_token_list(&v, "token-env");
        if t.is_empty() {
            return Err(format!("{section}.token_env: ${var} holds no token"));
        }
        out.extend(t);
    }
    let mut names = std::collections::BTreeSet::new();
    for t in &out {
        if !names.insert(t.name.as_str()) {
            return Err(format!("{section}: token name {:?} is used twice", t.name));
        }
    }
    Ok(out)
}

/// Per-token request-rate limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimits {
    /// Requests per second of every token (0 = unlimited).
    pub per_sec: u32,
    /// Bucket size (0 = same as the rate).
    pub burst: u32,
    /// Per token name: requests per second overriding `per_sec` (0 = unlimited).
    pub per_token: BTreeMap<String, u32>,
    /// Requests per second shared by all calls *without* a token, where
    /// tokens are optional (0 = unlimited); burst as `burst`.
    pub anonymous_per_sec: u32,
}

/// A token's limiter with its rate and burst (shared across reloads).
type Limit = Arc<(DefaultDirectRateLimiter, u32, u32)>;

struct Token {
    name: String,
    secret: Vec<u8>,
    limit: Option<Limit>,
}

struct Inner {
    service: &'static str,
    required: bool,
    tokens: Vec<Token>,
    /// The shared limiter of calls without a token (optional tokens only).
    anonymous: Option<Limit>,
}

/// The interceptor: checks the bearer token and the token's rate limit.
/// Cheap to clone (one `Arc`); clones share reloads.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<ArcSwap<Inner>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.load();
        f.debug_struct("Authenticator")
            .field("service", &inner.service)
            .field("required", &inner.required)
            .field(
                "tokens",
                &inner
                    .tokens
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The name of the token a request was authenticated with, put in the
/// request's extensions.
#[derive(Debug, Clone)]
pub struct TokenName(pub String);

impl Authenticator {
    /// An authenticator for `service` (its gRPC name, used in messages).
    /// With `required`, calls without a token are refused. `limits` unknown
    /// token names are an error.
    pub fn new(
        service: &'static str,
        required: bool,
        tokens: Vec<TokenEntry>,
        limits: &RateLimits,
    ) -> Result<Authenticator, String> {
        let inner = Inner::build(service, required, tokens, limits, None)?;
        Ok(Authenticator {
            inner: Arc::new(ArcSwap::from_pointee(inner)),
        })
    }

    /// Replaces the token list (and limits) atomically: calls already checked
    /// keep their result, the next call sees the new list. Tokens whose name,
    /// rate and burst are unchanged keep their limiter's state. On error
    /// (e.g. no token while one is required, a rate for an unknown name) the
    /// current list stays in force. Returns whether anything changed.
    pub fn reload(&self, tokens: Vec<TokenEntry>, limits: &RateLimits) -> Result<bool, String> {
        let current = self.inner.load_full();
        let unchanged = current.tokens.len() == tokens.len()
            && current
                .tokens
                .iter()
                .zip(&tokens)
                .all(|(a, b)| a.name == b.name && a.secret == b.secret.as_bytes());
        let next = Inner::build(
            current.service,
            current.required,
            tokens,
            limits,
            Some(&current),
        )?;
        let limits_unchanged =
            current
                .tokens
                .iter()
                .zip(&next.tokens)
                .all(|(a, b)| match (&a.limit, &b.limit) {
                    (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                    (None, None) => true,
                    _ => false,
                });
        if unchanged && limits_unchanged {
            return Ok(false);
        }
        self.inner.store(Arc::new(next));
        Ok(true)
    }
}

impl Inner {
    fn build(
        service: &'static str,
        required: bool,
        tokens: Vec<TokenEntry>,
        limits: &RateLimits,
        previous: Option<&Inner>,
    ) -> Result<Inner, String> {
        if required && tokens.is_empty() {
            return Err(format!(
                "{service}: a token is required but no token is configured"
            ));
        }
        for name in limits.per_token.keys() {
            if !tokens.iter().any(|t| &t.name == name) {
                return Err(format!(
                    "auth.token_rates: no token is named {name:?} (names: {})",
                    tokens
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let tokens = tokens
            .into_iter()
            .map(|t| {
                let rate = limits
                    .per_token
                    .get(&t.name)
                    .copied()
                    .unwrap_or(limits.per_sec);
                let burst = if limits.burst == 0 {
                    rate
                } else {
                    limits.burst
                };
                let kept = previous
                    .and_then(|p| p.tokens.iter().find(|o| o.name == t.name))
                    .and_then(|o| o.limit.clone())
                    .filter(|l| l.1 == rate && l.2 == burst);
                let limit = match (NonZeroU32::new(rate), NonZeroU32::new(burst)) {
                    (Some(r), Some(b)) => Some(kept.unwrap_or_else(|| {
                        Arc::new((
                            RateLimiter::direct(Quota::per_second(r).allow_burst(b)),
                            rate,
                            burst,
                        ))
                    })),
                    _ => None,
                };
                Token {
                    name: t.name,
                    secret: t.secret.into_bytes(),
                    limit,
                }
            })
            .collect();
        let anonymous = {
            let (rate, burst) = (limits.anonymous_per_sec, limits.burst);
            let burst = if burst == 0 { rate } else { burst };
            let kept = previous
                .and_then(|p| p.anonymous.clone())
                .filter(|l| l.1 == rate && l.2 == burst);
            match (required, NonZeroU32::new(rate), NonZeroU32::new(burst)) {
                (false, Some(r), Some(b)) => Some(kept.unwrap_or_else(|| {
                    Arc::new((
                        RateLimiter::direct(Quota::per_second(r).allow_burst(b)),
                        rate,
                        burst,
                    ))
                })),
                _ => None,
            }
        };
        Ok(Inner {
            service,
            required,
            tokens,
            anonymous,
        })
    }
}

impl Authenticator {
    /// Number of configured tokens.
    pub fn len(&self) -> usize {
        self.inner.load().tokens.len()
    }

    /// True when no token is configured.
    pub fn is_empty(&self) -> bool {
        self.inner.load().tokens.is_empty()
    }

    /// The gRPC name of the service this authenticator guards.
    pub fn service(&self) -> &'static str {
        self.inner.load().service
    }

    fn reject(&self, service: &'static str, reason: &'static str, message: String) -> ApiError {
        metrics::counter!("profiled_auth_rejected_total", "service" => service, "reason" => reason)
            .increment(1);
        tracing::debug!(service, reason, "call refused");
        ApiError::Unauthenticated(message)
    }

    /// Checks the metadata of a call; `Ok(Some(name))` = authenticated with
    /// that token, `Ok(None)` = no token and none required.
    pub fn check(&self, md: &tonic::metadata::MetadataMap) -> Result<Option<String>, ApiError> {
        let inner = self.inner.load();
        let Some(value) = md.get("authorization") else {
            if inner.required {
                return Err(self.reject(
                    inner.service,
                    "missing",
                    format!(
                        "missing `authorization: Bearer <token>` metadata: {} requires a token",
                        inner.service
                    ),
                ));
            }
            if let Some(limit) = &inner.anonymous
                && let (limiter, rate, burst) = &**limit
                && let Err(not_until) = limiter.check()
            {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                metrics::counter!("profiled_rate_limited_total", "service" => inner.service, "token" => "")
                    .increment(1);
                return Err(ApiError::Overloaded(format!(
                    "calls without a token are over their shared rate limit of {rate} requests/s (burst {burst}; auth.anonymous_rate_limit_per_sec): retry in {} ms, or send a token",
                    wait.as_millis().max(1)
                )));
            }
            return Ok(None);
        };
        let given = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(given) = given else {
            return Err(self.reject(
                inner.service,
                "malformed",
                "malformed `authorization` metadata: expected `Bearer <token>`".into(),
            ));
        };
        // Compare with every token (no early exit) in constant time.
        let mut hit: Option<&Token> = None;
        for t in &inner.tokens {
            if bool::from(t.secret.as_slice().ct_eq(given.as_bytes())) && hit.is_none() {
                hit = Some(t);
            }
        }
        let Some(t) = hit else {
            return Err(self.reject(
                inner.service,
                "wrong",
                format!(
                    "wrong bearer token: not a token configured for {}",
                    inner.service
                ),
            ));
        };
        if let Some(limit) = &t.limit
            && let (limiter, rate, burst) = &**limit
            && let Err(not_until) = limiter.check()
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("profiled_rate_limited_total", "service" => inner.service, "token" => t.name.clone())
                .increment(1);
            return Err(ApiError::Overloaded(format!(
                "token {:?} is over its rate limit of {rate} requests/s (burst {burst}; auth.rate_limit_per_sec / auth.token_rates): retry in {} ms",
                t.name,
                wait.as_millis().max(1)
            )));
        }
        Ok(Some(t.name.clone()))
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(name) = self.check(request.metadata())? {
            request.extensions_mut().insert(TokenName(name));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic::metadata::MetadataMap;

    fn md(auth: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(a) = auth {
            m.insert("authorization", a.parse().unwrap());
        }
        m
    }

    fn tokens() -> Vec<TokenEntry> {
        parse_token_file(
            "# ops\nalice s3cret-a\n\n  s3cret-b  \n",
            "auth.token_file",
            "f",
        )
        .unwrap()
    }

    #[test]
    fn token_files_and_lists_parse() {
        let t = tokens();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].name.as_str(), t[0].secret.as_str()),
            ("alice", "s3cret-a")
        );
        assert_eq!(
            (t[1].name.as_str(), t[1].secret.as_str()),
            ("f-4", "s3cret-b")
        );
        assert!(parse_token_file("a b c\n", "k", "f").is_err());
        let l = parse_token_list(" x, ,y ", "e");
        assert_eq!(l.len(), 2);
        assert_eq!((l[1].name.as_str(), l[1].secret.as_str()), ("e-2", "y"));
        // Debug output never shows a secret.
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn required_optional_wrong_and_right() {
        let a = Authenticator::new("svc", true, tokens(), &RateLimits::default()).unwrap();
        let e = a.check(&md(None)).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(
            e.to_string().contains("requires a token"),
            "{}",
            e.to_string()
        );
        let e = a.check(&md(Some("Bearer nope"))).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(e.to_string().contains("wrong bearer token"));
        assert!(!e.to_string().contains("s3cret"));
        let e = a.check(&md(Some("Basic s3cret-a"))).unwrap_err();
        assert!(e.to_string().contains("malformed"));
        // A prefix of a token is not the token.
        assert!(a.check(&md(Some("Bearer s3cret-"))).is_err());
        assert_eq!(
            a.check(&md(Some("Bearer s3cret-a"))).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            a.check(&md(Some("bearer s3cret-b"))).unwrap().as_deref(),
            Some("f-4")
        );

        let opt = Authenticator::new("svc", false, tokens(), &RateLimits::default()).unwrap();
        assert_eq!(opt.check(&md(None)).unwrap(), None);
        assert!(opt.check(&md(Some("Bearer nope"))).is_err());
        assert!(Authenticator::new("svc", true, vec![], &RateLimits::default()).is_err());
    }

    #[test]
    fn reload_rotates_tokens_keeps_limiter_state_and_refuses_bad_lists() {
        let limits = RateLimits {
            per_sec: 1,
            burst: 2,
            ..RateLimits::default()
        };
        let a = Authenticator::new("svc", true, tokens(), &limits).unwrap();
        let clone = a.clone();
        // Spend alice's burst of 2.
        let mut spent = 0;
        while a.check(&md(Some("Bearer s3cret-a"))).is_ok() {
            spent += 1;
            assert!(spent < 10, "the limiter never refused");
        }
        // The same list again: nothing changes.
        assert!(!a.reload(tokens(), &limits).unwrap());
        // Rotate: alice keeps her name (and limiter), f-4's secret is gone,
        // a new token appears.
        let next =
            parse_token_file("alice s3cret-a\nbob s3cret-new\n", "auth.token_file", "f").unwrap();
        assert!(a.reload(next, &limits).unwrap());
        assert_eq!(clone.len(), 2, "clones share the reload");
        let e = clone.check(&md(Some("Bearer s3cret-b"))).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(
            clone
                .check(&md(Some("Bearer s3cret-new")))
                .unwrap()
                .as_deref(),
            Some("bob")
        );
        // alice's bucket was not refilled by the reload (unless a second
        // passed, which refills one call).
        let mut passed = 0;
        for _ in 0..3 {
            if a.check(&md(Some("Bearer s3cret-a"))).is_ok() {
                passed += 1;
            }
        }
        assert!(passed <= 1, "alice's limiter was reset by the reload");
        // An empty list while a token is required is refused: bob stays.
        assert!(a.reload(vec![], &limits).is_err());
        assert!(a.check(&md(Some("Bearer s3cret-new"))).is_ok());
        // So is a rate for a token that no longer exists.
        let bad = RateLimits {
            per_token: [("carol".to_string(), 5)].into_iter().collect(),
            ..limits.clone()
        };
        assert!(a.reload(tokens(), &bad).is_err());
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn rate_limits_are_per_token() {
        let limits = RateLimits {
            per_sec: 1,
            burst: 3,
            per_token: [("alice".to_string(), 0)].into_iter().collect(),
            anonymous_per_sec: 0,
        };
        let a = Authenticator::new("svc", true, tokens(), &limits).unwrap();
        // f-4: a burst of 3, then refused (a 1/s refill cannot happen within
        // the four back-to-back calls... unless a second passes: then the
        // fourth may pass, so count refusals over a few more calls).
        let mut refused = None;
        for _ in 0..6 {
            if let Err(e) = a.check(&md(Some("Bearer s3cret-b"))) {
                refused = Some(e);
                break;
            }
        }
        let e = refused.expect("the limiter never refused");
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(e.to_string().contains("\"f-4\""), "{}", e.to_string());
        assert!(e.to_string().contains("1 requests/s"), "{}", e.to_string());
        // alice is unlimited (override 0).
        for _ in 0..100 {
            a.check(&md(Some("Bearer s3cret-a"))).unwrap();
        }
        let bad = RateLimits {
            per_token: [("nobody".to_string(), 5)].into_iter().collect(),
            ..RateLimits::default()
        };
        assert!(Authenticator::new("svc", true, tokens(), &bad).is_err());
    }

    #[test]
    fn calls_without_a_token_share_their_own_limit() {
        let limits = RateLimits {
            burst: 2,
            anonymous_per_sec: 1,
            ..RateLimits::default()
        };
        let a = Authenticator::new("svc", false, tokens(), &limits).unwrap();
        let mut refused = None;
        for _ in 0..6 {
            if let Err(e) = a.check(&md(None)) {
                refused = Some(e);
                break;
            }
        }
        let e = refused.expect("tokenless calls were never limited");
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(
            e.to_string().contains("auth.anonymous_rate_limit_per_sec"),
            "{}",
            e.to_string()
        );
        // Tokens are not charged to the anonymous bucket.
        for _ in 0..2 {
            assert!(a.check(&md(Some("Bearer s3cret-a"))).is_ok());
        }
        // Where tokens are required, there is no anonymous bucket to speak of.
        let r = Authenticator::new("svc", true, tokens(), &limits).unwrap();
        let e = r.check(&md(None)).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
}
