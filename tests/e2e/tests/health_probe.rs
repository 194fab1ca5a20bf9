//! The probes the deployment relies on: `""` (liveness/startup) is SERVING
//! as soon as the server listens, with no model; `profiled.v1.ProfileService`
//! (readiness) only once a version is loaded; and `profilectl health` (the
//! image's HEALTHCHECK) turns those statuses into exit codes 0/1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use profiled_e2e::{Server, free_port, profilectl_bin, publish_model, temp_repo};

async fn health(bin: &Path, url: &str, service: &str) -> Output {
    let (bin, url, service) = (bin.to_path_buf(), url.to_string(), service.to_string());
    tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["health", "--addr", &url, "--service", &service])
            .args(["--timeout-ms", "3000"])
            .env_remove("PROFILED_ADDR")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_ignores_model_state_and_profilectl_health_reports_exit_codes() {
    let bin = tokio::task::spawn_blocking(profilectl_bin)
        .await
        .unwrap()
        .unwrap();
    let (_tmp, repo) = temp_repo().unwrap();
    std::fs::create_dir_all(repo.join("synth")).unwrap();
    let server = Server::start(&repo, &[]).unwrap();
    let url = server.url();

    // No model: the process is alive ("" SERVING), not ready.
    let o = health(&bin, &url, "").await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("SERVING"), "{}", text(&o));
    let o = health(&bin, &url, "profiled.v1.ProfileService").await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("NOT_SERVING"), "{}", text(&o));

    // A service the server does not know: exit 1 naming the status.
    let o = health(&bin, &url, "no.such.Service").await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no.such.Service"), "{}", text(&o));

    // Ready once a version is loaded; liveness unchanged.
    publish_model(&repo, "synth", 4, false).unwrap();
    server.wait_serving(Duration::from_secs(30)).await.unwrap();
    let o = health(&bin, &url, "profiled.v1.ProfileService").await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = health(&bin, &url, "").await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Nothing listening: exit 1 saying it cannot connect.
    let dead = free_port().unwrap();
    let o = health(&bin, &format!("http://{dead}"), "").await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("cannot connect"), "{}", text(&o));
}
