//! Helpers of the end-to-end tests: synthetic model repositories and the
//! real `profiled` binary started on `127.0.0.1:0`.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use profiled_model::testing::{SyntheticSpec, write_synthetic_model};
use profiled_proto::v1::profile_service_client::ProfileServiceClient;
use tonic::transport::Channel;

/// Writes a valid synthetic model version (random weights, golden profiles
/// from the f64 reference) into `dir`.
pub fn make_model(dir: &Path, seed: u64) -> Result<()> {
    let spec = SyntheticSpec {
        seed,
        ..SyntheticSpec::default()
    };
    write_synthetic_model(dir, &spec)?;
    write_indexes(dir, seed)?;
    Ok(())
}

/// Builds `items.index` (item vectors, attribute `parity` = even/odd) and
/// `users.index` (users `u0`..`u19` with random features, attribute
/// `segment` = a/b, and `seen_items` = the item ids of their events) for the
/// model version in `dir`.
pub fn write_indexes(dir: &Path, seed: u64) -> Result<()> {
    use profiled_model::{Encoder, LoadOptions, Workspace};
    let enc = Encoder::load_with(
        dir,
        &LoadOptions {
            verify_golden: false,
            ..LoadOptions::default()
        },
    )?;
    let dim = enc.dim();
    let mut items = profiled_index::IndexBuilder::new(dim)?;
    for (k, id) in enc.item_ids().iter().enumerate() {
        let v = &enc.item_vectors()[k * dim..(k + 1) * dim];
        let row = items.push(id, v)?;
        items.add_attribute(row, "parity", if k % 2 == 0 { "even" } else { "odd" })?;
    }
    items.write(dir.join("items.index"))?;
    let mut rng = profiled_model::testing::Rng::new(seed ^ 0x5eed);
    let users: Vec<_> = (0..20)
        .map(|_| profiled_model::testing::random_user(&mut rng, enc.item_ids().len(), 8))
        .collect();
    let mut ws = Workspace::new();
    let p = enc.forward_batch(&users, &mut ws)?;
    let mut ub = profiled_index::IndexBuilder::new(dim)?;
    for i in 0..users.len() {
        let row = ub.push(&format!("u{i}"), p.row(i).context("row")?)?;
        ub.add_attribute(row, "segment", if i % 2 == 0 { "a" } else { "b" })?;
        for e in &users[i].events {
            ub.add_attribute(row, profiled_store::SEEN_ITEMS_ATTRIBUTE, &e.item)?;
        }
    }
    ub.write(dir.join("users.index"))?;
    Ok(())
}

/// Writes a model version whose golden check fails (expected profiles negated).
pub fn make_broken_model(dir: &Path, seed: u64) -> Result<()> {
    make_model(dir, seed)?;
    let p = dir.join("model.json");
    let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p)?)?;
    let golden = j["golden"].as_array_mut().context("golden")?;
    for g in golden {
        for x in g["profile"].as_array_mut().context("profile")? {
            *x = serde_json::json!(-x.as_f64().context("number")?);
        }
    }
    std::fs::write(&p, serde_json::to_string(&j)?)?;
    Ok(())
}

/// Publishes a fresh synthetic version of `name` into `repo`; returns the version.
pub fn publish_model(repo: &Path, name: &str, seed: u64, broken: bool) -> Result<u64> {
    let src = tempfile::tempdir()?;
    let dir = src.path().join("v");
    if broken {
        make_broken_model(&dir, seed)?;
    } else {
        make_model(&dir, seed)?;
    }
    Ok(profiled_store::publish(&dir, repo, name)?.0)
}

/// The `profiled` binary: `$PROFILED_BIN`, or `profiled` next to the test
/// executable's profile directory (built on demand with the same profile).
pub fn profiled_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PROFILED_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no profile directory")?
        .to_path_buf();
    let bin = profile_dir.join("profiled");
    static BUILD: std::sync::Once = std::sync::Once::new();
    let mut failed = None;
    BUILD.call_once(|| {
        if !is_stale(&bin) {
            return;
        }
        let profile = profile_dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("debug")
            .to_string();
        let profile = if profile == "debug" {
            "dev".to_string()
        } else {
            profile
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "profiled-server",
                "--bin",
                "profiled",
                "--profile",
            ])
            .arg(&profile)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            failed = Some(format!("cargo build of profiled failed: {status:?}"));
        }
    });
    if let Some(f) = failed {
        bail!(f);
    }
    if !bin.is_file() {
        bail!("{} not found", bin.display());
    }
    Ok(bin)
}

/// True when `bin` is missing or older than a source file it is built from.
fn is_stale(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return true;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dirs = [
        "crates/server",
        "crates/store",
        "crates/model/src",
        "crates/proto",
        "kernels/src",
        "proto",
    ];
    fn newer(dir: &Path, t: std::time::SystemTime) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return false;
        };
        rd.flatten().any(|e| {
            let p = e.path();
            if p.is_dir() {
                newer(&p, t)
            } else {
                e.metadata().and_then(|m| m.modified()).is_ok_and(|m| m > t)
            }
        })
    }
    dirs.iter().any(|d| newer(&root.join(d), built))
}

/// A free loopback address for a second listener (e.g. metrics), found by
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

/// A running `profiled` process; killed on drop.
#[derive(Debug)]
pub struct Server {
    /// The child process.
    pub child: Child,
    /// Bound address, e.g. `127.0.0.1:40123`.
    pub addr: String,
    /// The repository it serves.
    pub repo: PathBuf,
    /// stderr log file.
    pub log: PathBuf,
}

impl Server {
    /// Starts `profiled` on `127.0.0.1:0` over `repo` with extra `PROFILED__`
    /// environment settings, and waits for the bound address.
    pub fn start(repo: &Path, env: &[(&str, &str)]) -> Result<Server> {
        Server::start_with_metrics(repo, env, "")
    }

    /// Like [`Server::start`], with the Prometheus endpoint on `metrics`
    /// (e.g. from [`free_port`]; empty = off).
    pub fn start_with_metrics(repo: &Path, env: &[(&str, &str)], metrics: &str) -> Result<Server> {
        let bin = profiled_bin()?;
        let log = repo
            .parent()
            .unwrap_or(repo)
            .join(format!("profiled-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", metrics])
            .arg("--models")
            .arg(repo)
            .env("PROFILED__MODELS__POLL_INTERVAL_MS", "200")
            .env("PROFILED__MODELS__DEBOUNCE_MS", "50")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .context("profiled did not print its address")?;
        let addr = line
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line {line:?}"))?
            .to_string();
        Ok(Server {
            child,
            addr,
            repo: repo.to_path_buf(),
            log,
        })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A channel to the server.
    pub async fn channel(&self) -> Result<Channel> {
        Ok(Channel::from_shared(self.url())?.connect().await?)
    }

    /// A ProfileService client.
    pub async fn client(&self) -> Result<ProfileServiceClient<Channel>> {
        Ok(ProfileServiceClient::new(self.channel().await?))
    }

    /// Waits until `grpc.health.v1` reports ProfileService SERVING.
    pub async fn wait_serving(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let mut h = tonic_health::pb::health_client::HealthClient::new(self.channel().await?);
        loop {
            let r = h
                .check(tonic_health::pb::HealthCheckRequest {
                    service: profiled_proto::PROFILE_SERVICE_NAME.into(),
                })
                .await;
            if let Ok(r) = r
                && r.into_inner().status == 1
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("not SERVING after {timeout:?}; log:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) -> Result<()> {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !st.success() {
            bail!("kill -TERM failed");
        }
        Ok(())
    }

    /// Waits for the process to exit (up to `timeout`); returns its success.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<bool> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st.success());
            }
            if start.elapsed() > timeout {
                bail!("profiled did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
