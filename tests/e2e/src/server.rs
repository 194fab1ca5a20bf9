//! [`Server`]: the real `profiled` process on `127.0.0.1:0`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic::transport::Channel;

use crate::bins::profiled_bin;
use crate::rpc::{ProfileClient, health_status};

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
    /// The process's further stdout lines (e.g. `http listening on ADDR`).
    lines: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
    /// The HTTP listener's address, once read from stdout.
    http: std::sync::OnceLock<String>,
}

impl Server {
    /// Starts `profiled` on `127.0.0.1:0` over `repo` with extra environment
    /// settings (`PROFILED__…` or anything else the process should see),
    /// and waits for the bound address. The repository is polled every
    /// 200 ms with a 50 ms debounce, so published versions load quickly.
    pub fn start(repo: &Path, env: &[(&str, &str)]) -> Result<Server> {
        Server::start_with_metrics(repo, env, "")
    }

    /// [`Server::start`], then [`Server::wait_serving`] with `timeout`.
    pub async fn start_serving(
        repo: &Path,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Server> {
        let server = Server::start(repo, env)?;
        server.wait_serving(timeout).await?;
        Ok(server)
    }

    /// Like [`Server::start`], with the Prometheus endpoint on `metrics`
    /// (e.g. from [`crate::free_port`]; empty = off).
    pub fn start_with_metrics(repo: &Path, env: &[(&str, &str)], metrics: &str) -> Result<Server> {
        let bin = profiled_bin()?;
        let log = repo
            .parent()
            .unwrap_or(repo)
            .join(format!("profiled-{}.log", std::process::id()));
        let log_file = std::fs::File::create(&log)?;
        // Each server its own embedded state store (one process per
        // directory), unless the test chooses the state settings.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let state_dir = repo.parent().unwrap_or(repo).join(format!(
            "state-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", metrics])
            .arg("--models")
            .arg(repo)
            .env("PROFILED__MODELS__POLL_INTERVAL_MS", "200")
            .env("PROFILED__MODELS__DEBOUNCE_MS", "50")
            .env("PROFILED__STATE__EMBEDDED__DIR", &state_dir)
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
            // Every line goes to the test (the first is the gRPC address);
            // reading on after the receiver is gone keeps the pipe drained.
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
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
            lines: std::sync::Mutex::new(rx),
            http: std::sync::OnceLock::new(),
        })
    }

    /// The address of the HTTP/JSON listener (start the server with
    /// `PROFILED__HTTP__ENABLED=true`, `PROFILED__HTTP__ADDR=127.0.0.1:0`):
    /// read from its `http listening on ADDR` line on stdout.
    pub fn http_addr(&self) -> Result<String> {
        if let Some(a) = self.http.get() {
            return Ok(a.clone());
        }
        let rx = self
            .lines
            .lock()
            .map_err(|_| anyhow::anyhow!("stdout reader poisoned"))?;
        loop {
            let line = rx.recv_timeout(Duration::from_secs(30)).with_context(|| {
                format!(
                    "profiled printed no `http listening on` line (is [http] enabled?); log:\n{}",
                    self.log_text()
                )
            })?;
            if let Some(a) = line.strip_prefix("http listening on ") {
                return Ok(self.http.get_or_init(|| a.to_string()).clone());
            }
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A channel to the server.
    pub async fn channel(&self) -> Result<Channel> {
        Ok(Channel::from_shared(self.url())?.connect().await?)
    }

    /// A ProfileService client on a new connection.
    pub async fn client(&self) -> Result<ProfileClient> {
        Ok(ProfileClient::new(self.channel().await?))
    }

    /// Waits until `grpc.health.v1` reports ProfileService SERVING; fails
    /// with the server's log after `timeout`.
    pub async fn wait_serving(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let ch = self.channel().await?;
        loop {
            let r = health_status(ch.clone(), profiled_proto::PROFILE_SERVICE_NAME).await;
            if r.is_ok_and(|s| s == 1) {
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

    /// Polls the server's log every 50 ms, up to 200 times, until `f` finds
    /// something in it, and returns what it found; `None` when it never
    /// did.
    pub async fn find_in_log<T>(&self, mut f: impl FnMut(&str) -> Option<T>) -> Option<T> {
        for _ in 0..200 {
            if let Some(found) = f(&self.log_text()) {
                return Some(found);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
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
