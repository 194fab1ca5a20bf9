//! The generated server and client talk over a real socket on 127.0.0.1:0:
//! a unary call, a status code with its message, and the bidirectional
//! EmbedStream with request ids echoed in order.

use std::pin::Pin;

use profiled_proto::v1::{
    self, EmbedRequest, EmbedResponse, EmbedStreamResponse, ExplainRequest, ExplainResponse,
    GetModelRequest, GetModelResponse, ListModelsRequest, ListModelsResponse, ModelInfo, ModelRef,
    SearchRequest, SearchResponse,
    profile_service_client::ProfileServiceClient,
    profile_service_server::{ProfileService, ProfileServiceServer},
};
use tokio_stream::{Stream, StreamExt as _, wrappers::TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// A stand-in service: answers GetModel and EmbedStream, refuses the rest.
struct Fake;

fn fake_embed(request: EmbedRequest) -> EmbedResponse {
    EmbedResponse {
        model: Some(ModelRef {
            name: "fake".to_owned(),
            version: 1,
            generation_id: 1,
        }),
        users: Vec::new(),
        dim: 0,
        encoding: v1::VectorEncoding::F32 as i32,
        queue_us: 0,
        compute_us: 0,
        request_id: request.request_id,
    }
}

#[tonic::async_trait]
impl ProfileService for Fake {
    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        Ok(Response::new(fake_embed(request.into_inner())))
    }

    type EmbedStreamStream =
        Pin<Box<dyn Stream<Item = Result<EmbedStreamResponse, Status>> + Send + 'static>>;

    async fn embed_stream(
        &self,
        request: Request<Streaming<EmbedRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        let inbound = request.into_inner();
        let outbound = inbound.map(|item| {
            let request = item?;
            let request_id = request.request_id.clone();
            let outcome = if request.users.is_empty() {
                v1::embed_stream_response::Outcome::Error(v1::ItemError {
                    code: tonic::Code::InvalidArgument as i32,
                    message: "users: at least one user is required".to_owned(),
                })
            } else {
                v1::embed_stream_response::Outcome::Response(fake_embed(request))
            };
            Ok(EmbedStreamResponse {
                request_id,
                outcome: Some(outcome),
            })
        });
        Ok(Response::new(Box::pin(outbound)))
    }

    async fn search(&self, _: Request<SearchRequest>) -> Result<Response<SearchResponse>, Status> {
        Err(Status::not_found("model \"nope\" is not served"))
    }

    async fn explain(
        &self,
        _: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        Err(Status::unimplemented("explain"))
    }

    async fn get_model(
        &self,
        request: Request<GetModelRequest>,
    ) -> Result<Response<GetModelResponse>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(GetModelResponse {
            model: Some(ModelInfo {
                name,
                default_version: 1,
                ..Default::default()
            }),
        }))
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Ok(Response::new(ListModelsResponse::default()))
    }

    profiled_proto::user_state_unimplemented!("fake: no user state");
}

#[tokio::test]
async fn generated_server_and_client_over_loopback() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ProfileServiceServer::new(Fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let mut client = ProfileServiceClient::connect(format!("http://{addr}")).await?;

    // Unary.
    let model = client
        .get_model(GetModelRequest {
            name: "ml100k".to_owned(),
        })
        .await?
        .into_inner()
        .model
        .ok_or("no model in response")?;
    assert_eq!(model.name, "ml100k");
    assert_eq!(model.default_version, 1);

    // A status code and its message reach the client unchanged.
    let status = client
        .search(SearchRequest::default())
        .await
        .expect_err("search is refused");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "model \"nope\" is not served");

    // Bidirectional streaming: one response per request, in order, errors
    // per message without ending the stream.
    let requests: Vec<EmbedRequest> = (0..5)
        .map(|i| EmbedRequest {
            users: if i == 2 {
                Vec::new()
            } else {
                vec![v1::UserInput {
                    source: Some(v1::user_input::Source::UserId(i.to_string())),
                    context: None,
                }]
            },
            request_id: format!("r{i}"),
            ..Default::default()
        })
        .collect();
    let mut responses = client
        .embed_stream(tokio_stream::iter(requests))
        .await?
        .into_inner();
    let mut seen = Vec::new();
    while let Some(item) = responses.next().await {
        let item = item?;
        let failed = matches!(
            item.outcome,
            Some(v1::embed_stream_response::Outcome::Error(_))
        );
        seen.push((item.request_id, failed));
    }
    assert_eq!(
        seen,
        vec![
            ("r0".to_owned(), false),
            ("r1".to_owned(), false),
            ("r2".to_owned(), true),
            ("r3".to_owned(), false),
            ("r4".to_owned(), false),
        ]
    );

    server.abort();
    Ok(())
}
