//! Calls the tests make again and again: GetModel, polling a model until it
//! reaches a state, `grpc.health.v1` checks and reflection's service list.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use profiled_proto::v1 as pb;
use profiled_proto::v1::profile_service_client::ProfileServiceClient;
use tonic::transport::Channel;

/// A ProfileService client over a plain channel.
pub type ProfileClient = ProfileServiceClient<Channel>;

/// GetModel of `name` (`""` = the default model): its description.
pub async fn get_model(c: &mut ProfileClient, name: &str) -> Result<pb::ModelInfo> {
    c.get_model(pb::GetModelRequest { name: name.into() })
        .await?
        .into_inner()
        .model
        .context("GetModel answered without a model")
}

/// The entry of `version` in `m`, if listed.
pub fn version_of(m: &pb::ModelInfo, version: u64) -> Option<&pb::VersionInfo> {
    m.versions.iter().find(|v| v.version == version)
}

/// Calls GetModel of `name` every 20 ms until `done` holds for the answer,
/// and returns that answer. Fails on a failed call, or after `timeout` with
/// the last answer.
pub async fn wait_model(
    c: &mut ProfileClient,
    name: &str,
    timeout: Duration,
    mut done: impl FnMut(&pb::ModelInfo) -> bool,
) -> Result<pb::ModelInfo> {
    let start = Instant::now();
    loop {
        let m = get_model(c, name).await?;
        if done(&m) {
            return Ok(m);
        }
        if start.elapsed() > timeout {
            bail!("model {name:?}: condition not met within {timeout:?}; last answer: {m:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `grpc.health.v1` status of `service` (`""` = the server as a whole):
/// 1 = SERVING, 2 = NOT_SERVING.
pub async fn health_status(ch: Channel, service: &str) -> Result<i32, tonic::Status> {
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

/// The services server reflection (v1) lists.
pub async fn list_services(ch: Channel) -> Result<Vec<String>> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await?
        .into_inner();
    let msg = resp.message().await?.context("no reflection answer")?;
    let Some(MessageResponse::ListServicesResponse(l)) = msg.message_response else {
        bail!("unexpected reflection answer {msg:?}");
    };
    Ok(l.service.into_iter().map(|s| s.name).collect())
}
