//! The outside client's findings (issue "Findings of an outside client"),
//! each replayed against the real `profiled` binary over real sockets: a
//! refused admin call changes nothing, and every hostile case gets the code
//! and the message the docs promise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use profiled_e2e::{
    ADMIN_TOKEN, Server, assert_status, embed_req, features, get_model, synth_repo, with_bearer,
    write_admin_token,
};
use profiled_proto::v1 as pb;
use tonic::Code;

/// F1 and F5: a Reload that cannot be done (an unknown model name, version 0,
/// a version with no directory, a name that can never be a directory) is
/// refused with or without `wait`, registers nothing, and leaves the default
/// model serving every request that names no model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_admin_calls_change_nothing() {
    let (tmp, repo) = synth_repo(1).unwrap();
    let token = write_admin_token(tmp.path()).unwrap();
    let server = Server::start_serving(
        &repo,
        &[("PROFILED__ADMIN__TOKEN_FILE", token.to_str().unwrap())],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let ch = server.channel().await.unwrap();
    let mut admin = pb::model_admin_client::ModelAdminClient::new(ch.clone());
    let mut c = server.client().await.unwrap();
    let reload = |model: &str, version: Option<u64>, wait: bool| {
        with_bearer(
            pb::ReloadRequest {
                model: model.into(),
                version,
                wait,
            },
            Some(ADMIN_TOKEN),
        )
    };
    let cases: [(&str, Option<u64>, Code, &str); 8] = [
        (
            "synth-typo",
            None,
            Code::NotFound,
            "unknown model \"synth-typo\"",
        ),
        (
            "synth-typo",
            Some(1),
            Code::NotFound,
            "unknown model \"synth-typo\"",
        ),
        (
            "synth",
            Some(0),
            Code::InvalidArgument,
            "version: invalid version 0",
        ),
        ("synth", Some(5), Code::NotFound, "version 5"),
        (
            "synth",
            Some(u64::MAX),
            Code::NotFound,
            "version 18446744073709551615",
        ),
        ("..", None, Code::InvalidArgument, "invalid model name"),
        (".synth", None, Code::InvalidArgument, "invalid model name"),
        ("a/b", None, Code::InvalidArgument, "invalid model name"),
    ];
    for (model, version, code, needle) in cases {
        for wait in [false, true] {
            assert_status(
                admin.reload(reload(model, version, wait)).await,
                code,
                needle,
            );
        }
    }
    // GetModel of a name that can never be a directory is invalid too.
    assert_status(
        c.get_model(pb::GetModelRequest {
            name: "../synth".into(),
        })
        .await,
        Code::InvalidArgument,
        "invalid model name",
    );
    // Nothing was registered: one model, still the default, still serving.
    let list = c
        .list_models(pb::ListModelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = list.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["synth"]);
    assert_eq!(list.default_model, "synth");
    assert_status(
        c.get_model(pb::GetModelRequest {
            name: "synth-typo".into(),
        })
        .await,
        Code::NotFound,
        "unknown model",
    );
    assert_eq!(get_model(&mut c, "").await.unwrap().name, "synth");
    let r = c
        .embed(embed_req(vec![features("engineer", 34.0)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.model.unwrap().name, "synth");
    // A real reload still works, with and without wait.
    admin.reload(reload("synth", Some(1), true)).await.unwrap();
    admin.reload(reload("synth", None, false)).await.unwrap();
    admin.reload(reload("", None, true)).await.unwrap();
}
