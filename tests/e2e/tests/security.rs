//! TLS, mTLS, certificate reload, bearer tokens and per-token rate limits —
//! against the real `profiled` binary on 127.0.0.1:0, with certificates
//! made at test time (rcgen) and real tonic clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use profiled_e2e::{
    Server, assert_status, health_status, list_services, profiled_bin, temp_repo, with_bearer,
};
use profiled_proto::PROFILE_SERVICE_NAME;
use profiled_proto::v1 as pb;
use profiled_proto::v1::model_admin_client::ModelAdminClient;
use profiled_proto::v1::profile_service_client::ProfileServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A test certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = p.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(p, key),
        }
    }

    /// (certificate PEM, key PEM) of a leaf signed by this CA.
    fn leaf(&self, name: &str, server: bool, expired: bool) -> (String, String) {
        let sans = if server {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            vec![format!("{name}.clients.test")]
        };
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `path` atomically (temp + rename), like a secret update.
fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
    fn write(&self, name: &str, text: &str) -> String {
        put(&self.path(name), text);
        self.s(name)
    }
}

/// A TLS channel to `server` trusting `ca_pem`, optionally with a client
/// identity (mTLS). Errors (handshake refused, ...) are returned.
async fn tls_channel(
    server: &Server,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> anyhow::Result<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    Ok(Channel::from_shared(format!("https://{}", server.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

async fn list_models(ch: Channel, token: Option<&str>) -> Result<usize, tonic::Status> {
    let mut c = ProfileServiceClient::new(ch);
    let r = with_bearer(pb::ListModelsRequest::default(), token);
    c.list_models(r).await.map(|r| r.into_inner().models.len())
}

/// The health status of ProfileService (NOT_SERVING = 2 here: the
/// repository is empty).
async fn health(ch: Channel) -> Result<i32, tonic::Status> {
    health_status(ch, PROFILE_SERVICE_NAME).await
}

/// True when a call over TLS with this trust/identity gets an answer.
async fn tls_call_ok(server: &Server, ca_pem: &str, identity: Option<&(String, String)>) -> bool {
    match tls_channel(server, ca_pem, identity).await {
        Ok(ch) => health(ch).await.is_ok(),
        Err(_) => false,
    }
}

fn tls_env<'a>(f: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    f.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_h2_and_refuses_plaintext_and_untrusted_clients() {
    let (tmp, repo) = temp_repo().unwrap();
    let f = Files {
        dir: tmp.path().to_path_buf(),
    };
    let ca = Ca::new("test ca");
    let other = Ca::new("other ca");
    let (cert, key) = ca.leaf("server", true, false);
    let env = [
        ("PROFILED__TLS__CERT_FILE", f.write("tls.crt", &cert)),
        ("PROFILED__TLS__KEY_FILE", f.write("tls.key", &key)),
        ("PROFILED__TLS__HANDSHAKE_TIMEOUT_MS", "60000".to_string()),
        ("PROFILED__SERVER__HEALTH_LISTEN", "127.0.0.1:0".to_string()),
    ];
    let server = Server::start(&repo, &tls_env(&env)).unwrap();

    // A connection that never finishes its handshake, and one that sends
    // garbage, are open while the other clients are served.
    let _stalled = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut junk = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
    }

    // TLS with HTTP/2: health (no model needed) and ListModels answer.
    let ch = tls_channel(&server, &ca.pem, None).await.unwrap();
    assert_eq!(
        health(ch.clone()).await.unwrap(),
        2,
        "NOT_SERVING: no model yet"
    );
    assert_eq!(list_models(ch.clone(), None).await.unwrap(), 0);

    // A plaintext client gets no answer.
    let plain = async {
        let ch = Channel::from_shared(server.url())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await?;
        health(ch).await.map_err(anyhow::Error::from)
    }
    .await;
    assert!(plain.is_err(), "plaintext call answered: {plain:?}");

    // A client that does not trust the server's CA refuses the server.
    assert!(!tls_call_ok(&server, &other.pem, None).await);

    // Still serving TLS clients, on the old connection and on new ones.
    assert_eq!(health(ch).await.unwrap(), 2);
    assert!(tls_call_ok(&server, &ca.pem, None).await);

    // The plaintext health-only listener (for probes that cannot speak
    // TLS) answers health and nothing else.
    let addr = health_listen_addr(&server).await;
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(health(plain.clone()).await.unwrap(), 2);
    assert_eq!(
        list_models(plain, None).await.unwrap_err().code(),
        Code::Unimplemented
    );
}

/// The address of the plaintext health listener, from the server's log.
async fn health_listen_addr(server: &Server) -> String {
    server
        .find_in_log(|log| {
            let rest = log.split("plaintext health listener on ").nth(1)?;
            Some(rest.split_whitespace().next().unwrap().to_string())
        })
        .await
        .unwrap_or_else(|| panic!("no health listener in the log:\n{}", server.log_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_missing_unknown_and_expired_client_certificates() {
    let (tmp, repo) = temp_repo().unwrap();
    let f = Files {
        dir: tmp.path().to_path_buf(),
    };
    let ca = Ca::new("server ca");
    let clients = Ca::new("client ca");
    let rogue = Ca::new("rogue ca");
    let (cert, key) = ca.leaf("server", true, false);
    let env = [
        ("PROFILED__TLS__CERT_FILE", f.write("tls.crt", &cert)),
        ("PROFILED__TLS__KEY_FILE", f.write("tls.key", &key)),
        (
            "PROFILED__TLS__CLIENT_CA_FILE",
            f.write("ca.crt", &clients.pem),
        ),
    ];
    let server = Server::start(&repo, &tls_env(&env)).unwrap();

    let good = clients.leaf("svc-a", false, false);
    let unknown = rogue.leaf("svc-b", false, false);
    let expired = clients.leaf("svc-c", false, true);

    assert!(
        !tls_call_ok(&server, &ca.pem, None).await,
        "no client certificate"
    );
    assert!(
        !tls_call_ok(&server, &ca.pem, Some(&unknown)).await,
        "client certificate from an unknown CA"
    );
    assert!(
        !tls_call_ok(&server, &ca.pem, Some(&expired)).await,
        "expired client certificate"
    );
    // The CA's own valid client certificate is accepted (so the refusals
    // above are about the certificates).
    let ch = tls_channel(&server, &ca.pem, Some(&good)).await.unwrap();
    assert_eq!(list_models(ch, None).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_restart() {
    let (tmp, repo) = temp_repo().unwrap();
    let f = Files {
        dir: tmp.path().to_path_buf(),
    };
    let ca1 = Ca::new("ca one");
    let ca2 = Ca::new("ca two");
    let (cert1, key1) = ca1.leaf("server", true, false);
    let env = [
        ("PROFILED__TLS__CERT_FILE", f.write("tls.crt", &cert1)),
        ("PROFILED__TLS__KEY_FILE", f.write("tls.key", &key1)),
        ("PROFILED__TLS__RELOAD_INTERVAL_MS", "100".to_string()),
    ];
    let server = Server::start(&repo, &tls_env(&env)).unwrap();
    let pid = server.child.id();

    let old = tls_channel(&server, &ca1.pem, None).await.unwrap();
    assert!(health(old.clone()).await.is_ok());
    assert!(!tls_call_ok(&server, &ca2.pem, None).await);

    // Rotate to a certificate from another CA (key first, then the chain).
    let (cert2, key2) = ca2.leaf("server", true, false);
    put(&f.path("tls.key"), &key2);
    put(&f.path("tls.crt"), &cert2);
    let mut switched = false;
    for _ in 0..200 {
        if tls_call_ok(&server, &ca2.pem, None).await {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(switched, "new connections never got the new certificate");
    // New connections no longer get the old certificate; the connection
    // opened before the rotation keeps working; same process.
    assert!(!tls_call_ok(&server, &ca1.pem, None).await);
    assert!(health(old).await.is_ok());
    assert_eq!(server.child.id(), pid);

    // A broken certificate file is refused (logged) and the last good one
    // stays in use.
    put(&f.path("tls.crt"), "not a certificate\n");
    let logged = server
        .find_in_log(|log| {
            log.contains("keeping the previous certificate")
                .then_some(())
        })
        .await
        .is_some();
    assert!(logged, "log:\n{}", server.log_text());
    assert!(tls_call_ok(&server, &ca2.pem, None).await);
}

async fn admin_reload(ch: Channel, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut a = ModelAdminClient::new(ch);
    let r = with_bearer(
        pb::ReloadRequest {
            model: String::new(),
            version: None,
            wait: true,
        },
        token,
    );
    a.reload(r).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_checked_and_rate_limited() {
    let (tmp, repo) = temp_repo().unwrap();
    let f = Files {
        dir: tmp.path().to_path_buf(),
    };
    let env = [
        (
            "PROFILED__AUTH__TOKEN_FILE",
            f.write(
                "tokens",
                "# data plane\nalice s3cret-alice\nbob s3cret-bob\n",
            ),
        ),
        ("PROFILED__AUTH__REQUIRED", "true".to_string()),
        ("PROFILED__AUTH__RATE_LIMIT_PER_SEC", "1".to_string()),
        ("PROFILED__AUTH__RATE_LIMIT_BURST", "3".to_string()),
        ("PROFILED__AUTH__TOKEN_RATES__BOB", "100000".to_string()),
        (
            "PROFILED__ADMIN__TOKEN_ENV",
            "TEST_ADMIN_TOKENS".to_string(),
        ),
        ("TEST_ADMIN_TOKENS", "s3cret-admin".to_string()),
    ];
    let server = Server::start(&repo, &tls_env(&env)).unwrap();
    let ch = server.channel().await.unwrap();

    // Health and reflection need no token.
    assert!(health(ch.clone()).await.is_ok());
    let services = list_services(ch.clone()).await.unwrap();
    assert!(
        services.iter().any(|s| s == "profiled.v1.ProfileService"),
        "{services:?}"
    );

    // No token, a wrong token, a malformed header: UNAUTHENTICATED.
    assert_status(
        list_models(ch.clone(), None).await,
        Code::Unauthenticated,
        "requires a token",
    );
    assert_status(
        list_models(ch.clone(), Some("s3cret-alicf")).await,
        Code::Unauthenticated,
        "wrong bearer token",
    );
    assert_status(
        list_models(ch.clone(), Some("")).await,
        Code::Unauthenticated,
        "malformed",
    );

    // The right token passes; over its burst of 3 at 1/s it is refused with
    // RESOURCE_EXHAUSTED naming the token and the limit.
    assert_eq!(
        list_models(ch.clone(), Some("s3cret-alice")).await.unwrap(),
        0
    );
    let mut limited = None;
    for _ in 0..20 {
        if let Err(s) = list_models(ch.clone(), Some("s3cret-alice")).await {
            limited = Some(s);
            break;
        }
    }
    let s = limited.expect("alice was never rate limited");
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
    assert!(s.message().contains("\"alice\""), "{}", s.message());
    assert!(s.message().contains("1 requests/s"), "{}", s.message());
    // Limits are per token: bob (its own, higher limit) is not affected.
    for _ in 0..10 {
        assert_eq!(
            list_models(ch.clone(), Some("s3cret-bob")).await.unwrap(),
            0
        );
    }

    // ModelAdmin: its own tokens only.
    assert_status(
        admin_reload(ch.clone(), None).await,
        Code::Unauthenticated,
        "profiled.v1.ModelAdmin requires a token",
    );
    assert_status(
        admin_reload(ch.clone(), Some("s3cret-bob")).await,
        Code::Unauthenticated,
        "wrong bearer token",
    );
    admin_reload(ch.clone(), Some("s3cret-admin"))
        .await
        .unwrap();

    // No secret ever reaches the log.
    let log = server.log_text();
    assert!(!log.contains("s3cret"), "a token was logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_auth_lets_anonymous_calls_through_but_not_wrong_tokens() {
    let (tmp, repo) = temp_repo().unwrap();
    let f = Files {
        dir: tmp.path().to_path_buf(),
    };
    let env = [
        ("PROFILED__AUTH__TOKEN_ENV", "TEST_TOKENS".to_string()),
        ("TEST_TOKENS", "s3cret-1, s3cret-2".to_string()),
    ];
    let _ = &f;
    let server = Server::start(&repo, &tls_env(&env)).unwrap();
    let ch = server.channel().await.unwrap();
    assert_eq!(list_models(ch.clone(), None).await.unwrap(), 0);
    assert_eq!(list_models(ch.clone(), Some("s3cret-2")).await.unwrap(), 0);
    assert_status(
        list_models(ch.clone(), Some("nope")).await,
        Code::Unauthenticated,
        "wrong bearer token",
    );
    // ModelAdmin is off without admin tokens.
    assert_status(
        admin_reload(ch, Some("s3cret-1")).await,
        Code::Unimplemented,
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotate_without_restart_and_anonymous_calls_share_a_limit() {
    let (tmp, repo) = temp_repo().unwrap();
    let f = Files {
        dir: tmp.path().to_path_buf(),
    };
    let env = [
        (
            "PROFILED__AUTH__TOKEN_FILE",
            f.write("tokens", "alice s3cret-alice\n"),
        ),
        ("PROFILED__AUTH__RELOAD_INTERVAL_MS", "100".to_string()),
        (
            "PROFILED__AUTH__ANONYMOUS_RATE_LIMIT_PER_SEC",
            "1".to_string(),
        ),
        ("PROFILED__AUTH__RATE_LIMIT_BURST", "2".to_string()),
    ];
    let server = Server::start(&repo, &tls_env(&env)).unwrap();
    let ch = server.channel().await.unwrap();

    // Calls without a token share one small bucket; token holders don't
    // draw from it.
    let mut limited = None;
    for _ in 0..20 {
        if let Err(s) = list_models(ch.clone(), None).await {
            limited = Some(s);
            break;
        }
    }
    let s = limited.expect("calls without a token were never limited");
    assert_eq!(s.code(), Code::ResourceExhausted, "{}", s.message());
    assert!(
        s.message().contains("auth.anonymous_rate_limit_per_sec"),
        "{}",
        s.message()
    );
    for _ in 0..5 {
        assert_eq!(
            list_models(ch.clone(), Some("s3cret-alice")).await.unwrap(),
            0
        );
    }

    // Rotate: the file now holds bob only. Within a few reload periods
    // bob passes and alice is refused, without a restart.
    put(&f.path("tokens"), "bob s3cret-bob\n");
    let mut rotated = false;
    for _ in 0..100 {
        if list_models(ch.clone(), Some("s3cret-bob")).await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the new token was never accepted");
    assert_status(
        list_models(ch.clone(), Some("s3cret-alice")).await,
        Code::Unauthenticated,
        "wrong bearer token",
    );

    // A broken file is refused and the current tokens stay in force.
    put(&f.path("tokens"), "one two three\n");
    let warned = server
        .find_in_log(|log| log.contains("keeping the previous tokens").then_some(()))
        .await;
    assert!(warned.is_some(), "no warning about the broken token file");
    assert_eq!(
        list_models(ch.clone(), Some("s3cret-bob")).await.unwrap(),
        0
    );

    let log = server.log_text();
    assert!(!log.contains("s3cret"), "a token was logged:\n{log}");
}

#[test]
fn print_config_shows_security_keys_but_no_token() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "ci s3cret-print\n").unwrap();
    let out = std::process::Command::new(profiled_bin().unwrap())
        .args(["--print-config", "--tls-cert", "/etc/tls.crt", "--tls-key"])
        .arg("/etc/tls.key")
        .arg("--auth-token-file")
        .arg(&tokens)
        .arg("--auth-required")
        .env("PROFILED__AUTH__TOKEN_RATES__CI", "7")
        .env("PROFILED__TLS__CLIENT_CA_FILE", "/etc/ca.crt")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "[tls]",
        "cert_file = \"/etc/tls.crt\"",
        "key_file = \"/etc/tls.key\"",
        "client_ca_file = \"/etc/ca.crt\"",
        "reload_interval_ms",
        "[auth]",
        "required = true",
        "rate_limit_per_sec",
        "ci = 7",
        "health_listen",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert!(text.contains(&tokens.display().to_string()));
    assert!(!text.contains("s3cret"), "a token was printed:\n{text}");

    // A certificate without its key is a configuration error.
    let out = std::process::Command::new(profiled_bin().unwrap())
        .args(["--print-config"])
        .env("PROFILED__TLS__CERT_FILE", "/etc/tls.crt")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key_file"));
}
