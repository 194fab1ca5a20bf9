//! Test support (cargo feature `testing`): real `redis-server` processes
//! for the tests of this crate and the end-to-end tests (no mocks) — a
//! single node with AOF on a free loopback port, and a 3-master Redis
//! Cluster. Every process is killed when its handle is dropped. When
//! `redis-server` is not installed the tests fail, telling to run
//! `tests/setup-redis`.
#![allow(clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::redis::RedisConfig;

/// Fails the test when the Redis binaries are missing.
pub fn require_redis() {
    for bin in ["redis-server", "redis-cli"] {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "`{bin}` is not installed: run tests/setup-redis (installs Debian's redis-server \
             package) and run the tests again"
        );
    }
}

/// A loopback port that was free a moment ago (and whose cluster bus port,
/// +10000, was free too).
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = l.local_addr() else { continue };
        let port = addr.port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port pair found");
}

/// Runs `redis-cli -p port args…`, returning stdout (empty on failure).
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Waits (bounded) until `check` holds; panics naming `what` otherwise.
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gave up waiting for {what}");
}

/// One `redis-server` on 127.0.0.1 with `appendonly yes`, its data in `dir`.
pub struct RedisServer {
    /// Its loopback port.
    pub port: u16,
    /// Its data directory (the AOF).
    pub dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// A fresh single node.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// A fresh single node on `port` (for a store configured before its
    /// Redis exists).
    pub fn start_on(port: u16) -> Self {
        require_redis();
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut s = Self {
            port,
            dir: tmp.path().to_path_buf(),
            extra: vec![],
            child: None,
            _tmp: Some(tmp),
        };
        s.spawn();
        s
    }

    /// A node meant to join a cluster (`--cluster-enabled yes`).
    pub fn start_cluster_node(dir: &Path) -> Self {
        require_redis();
        let port = free_port();
        let dir = dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut s = Self {
            port,
            dir,
            extra: [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]
            .map(str::to_owned)
            .to_vec(),
            child: None,
            _tmp: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e} (run tests/setup-redis)"));
        self.child = Some(child);
        let port = self.port;
        wait_for(&format!("redis-server on port {port}"), || {
            cli(port, &["ping"]).trim() == "PONG"
        });
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Store settings for this node.
    pub fn config(&self) -> RedisConfig {
        RedisConfig {
            urls: vec![self.url()],
            connect_timeout_ms: 500,
            response_timeout_ms: 2_000,
            ..RedisConfig::default()
        }
    }

    /// SIGKILL (no shutdown save; the AOF has what was fsync'd).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster (no replicas) on loopback.
pub struct RedisCluster {
    /// The masters.
    pub nodes: Vec<RedisServer>,
    _tmp: tempfile::TempDir,
}

impl RedisCluster {
    /// Three fresh nodes joined with `redis-cli --cluster create`.
    pub fn start() -> Self {
        require_redis();
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_cluster_node(tmp.path()))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Self { nodes, _tmp: tmp };
        c.wait_ok();
        c
    }

    /// Waits until every node reports `cluster_state:ok`.
    pub fn wait_ok(&self) {
        for n in &self.nodes {
            let port = n.port;
            wait_for(&format!("cluster_state:ok on {port}"), || {
                cli(port, &["cluster", "info"]).contains("cluster_state:ok")
            });
        }
    }

    /// Store settings for this cluster (every node as a seed).
    pub fn config(&self) -> RedisConfig {
        RedisConfig {
            urls: self.nodes.iter().map(RedisServer::url).collect(),
            cluster: true,
            connect_timeout_ms: 500,
            response_timeout_ms: 2_000,
            ..RedisConfig::default()
        }
    }
}

/// A tmpfs mounted for one test (to fill a disk for real), unmounted on
/// drop: declare it before anything that keeps files open in it. Needs
/// root, as the project's test machines and CI run.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=…`, e.g. `1m`) on a new
    /// temporary directory.
    pub fn mount(size: &str) -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(
                "this test fills a small tmpfs and needs root to mount one (tests run as root \
                 on the project's machines and in CI)",
            ));
        }
        Ok(Self { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Changes the size (`mount -o remount,size=…`), e.g. to give a full
    /// disk room again.
    pub fn resize(&self, size: &str) -> std::io::Result<()> {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("remount to {size} failed")));
        }
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
