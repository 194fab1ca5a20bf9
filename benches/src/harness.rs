//! Helpers shared by the report binaries that start processes: the echo
//! floor (a bench-only tonic service answering a replayed Embed response
//! without any work), child processes that print `listening on ADDR`, the
//! `profiled` binary next to the running executable, and the health wait.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::Stream;
use profiled_proto::v1 as pb;
use profiled_proto::v1::profile_service_server::{ProfileService, ProfileServiceServer};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

// ---------------------------------------------------------------- echo ---

/// A tonic ProfileService that answers every Embed with the same response,
/// without any work: the transport floor.
#[derive(Debug, Clone)]
pub struct Echo {
    /// The response replayed (its `request_id` replaced).
    pub response: Arc<pb::EmbedResponse>,
}

/// The EmbedStream output type of [`Echo`].
pub type EmbedStreamOut =
    Pin<Box<dyn Stream<Item = Result<pb::EmbedStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ProfileService for Echo {
    async fn embed(
        &self,
        request: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let req = request.into_inner();
        let mut r = (*self.response).clone();
        r.request_id = req.request_id;
        Ok(Response::new(r))
    }
    type EmbedStreamStream = EmbedStreamOut;
    async fn embed_stream(
        &self,
        _: Request<Streaming<pb::EmbedRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        Err(Status::unimplemented("echo: Embed only"))
    }
    async fn search(
        &self,
        _: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        Err(Status::unimplemented("echo: Embed only"))
    }
    async fn explain(
        &self,
        _: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        Err(Status::unimplemented("echo: Embed only"))
    }
    async fn get_model(
        &self,
        _: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        Err(Status::unimplemented("echo: Embed only"))
    }
    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Err(Status::unimplemented("echo: Embed only"))
    }
    profiled_proto::user_state_unimplemented!("echo: Embed only");
}

/// `--serve-echo TEMPLATE`: serve the echo service with the server's default
/// transport settings until killed.
pub fn serve_echo(template: &Path) -> Result<()> {
    let bytes = std::fs::read(template).with_context(|| template.display().to_string())?;
    let response = Arc::new(pb::EmbedResponse::decode(&bytes[..])?);
    let s = profiled_server::Config::default().server;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        let svc = ProfileServiceServer::new(Echo { response })
            .max_decoding_message_size(s.max_request_bytes)
            .max_encoding_message_size(s.max_response_bytes);
        tonic::transport::Server::builder()
            .max_concurrent_streams(s.max_concurrent_streams)
            .concurrency_limit_per_connection(s.concurrency_per_connection)
            .load_shed(true)
            .tcp_nodelay(true)
            .add_service(svc)
            // As in the server: tonic ignores `tcp_nodelay` with incoming streams.
            .serve_with_incoming(futures::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |s| {
                    if let Ok(s) = &s {
                        let _ = s.set_nodelay(true);
                    }
                    s
                },
            ))
            .await?;
        anyhow::Ok(())
    })
}

// ------------------------------------------------------------ processes ---

/// A child process that printed the address it listens on.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    /// Its later stdout lines.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    /// The address of the next stdout line `PREFIX ADDR` (e.g. profiled's
    /// `http listening on ADDR`).
    pub fn next_addr(&self, prefix: &str) -> Result<String> {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .with_context(|| format!("the child printed no `{prefix}` line"))?;
            if let Some(a) = line.strip_prefix(prefix) {
                return Ok(a.to_string());
            }
        }
    }
}

/// Killed (SIGKILL) and reaped on drop.
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` and waits (≤ 60 s) for its first stdout line,
/// `listening on ADDR`.
pub fn spawn_listening(mut cmd: Command) -> Result<Proc> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Every line is forwarded (the first names the gRPC address; later ones,
    // e.g. the HTTP listener's, are read with `Proc::next_addr`).
    std::thread::spawn(move || {
        for l in BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the child did not print its address")?;
    let addr = line
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_string();
    Ok(Proc {
        child,
        addr,
        lines: rx,
    })
}

/// `profiled` next to this executable, rebuilt first when run under cargo.
pub fn profiled_bin() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("no directory of the executable")?;
    if let Ok(cargo) = std::env::var("CARGO") {
        let profile = dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("release")
            .to_string();
        let profile = if profile == "debug" {
            "dev".into()
        } else {
            profile
        };
        eprintln!("building profiled ({profile}) …");
        let st = Command::new(cargo)
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
            .status()?;
        if !st.success() {
            bail!("cargo build of profiled failed ({st})");
        }
    }
    let bin = dir.join("profiled");
    if !bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p profiled-server`",
            bin.display()
        );
    }
    Ok(bin)
}

/// Waits (≤ 60 s) until the health check of the profile service says SERVING.
pub async fn wait_serving(addr: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(ch) = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            if let Ok(r) = h
                .check(tonic_health::pb::HealthCheckRequest {
                    service: profiled_proto::PROFILE_SERVICE_NAME.into(),
                })
                .await
                && r.into_inner().status == 1
            {
                return Ok(());
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("profiled not SERVING after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The echo mode of a report binary: `--serve-echo TEMPLATE` in `args`
/// serves the echo ([`serve_echo`]) until killed; `None` when absent.
pub fn echo_mode(args: &[String]) -> Option<Result<()>> {
    let i = args.iter().position(|a| a == "--serve-echo")?;
    Some(match args.get(i + 1) {
        Some(t) => serve_echo(Path::new(t)),
        None => Err(anyhow::anyhow!("--serve-echo needs a template file")),
    })
}

/// Starts the echo floor of a report: one real Embed answer of `target`
/// (for `user` with `model`) is written under `dir` as the template, and
/// this binary is re-run with `--serve-echo` (a separate process, like the
/// server) to replay it. Returns the echo and the template.
pub async fn start_echo(
    target: &crate::loadgen::Target,
    model: &str,
    user: pb::UserFeatures,
    dir: &Path,
) -> Result<(Proc, pb::EmbedResponse)> {
    let one = pb::EmbedRequest {
        model: Some(pb::ModelSpec {
            name: model.into(),
            selector: None,
        }),
        users: vec![pb::UserInput {
            source: Some(pb::user_input::Source::Features(user)),
            context: None,
        }],
        ..Default::default()
    };
    let template = target.embed(one).await.context("first Embed call")?;
    let template_path = dir.join("echo-template.pb");
    std::fs::write(&template_path, template.encode_to_vec())?;
    let mut echo_cmd = Command::new(std::env::current_exe()?);
    echo_cmd.arg("--serve-echo").arg(&template_path);
    Ok((spawn_listening(echo_cmd)?, template))
}
