//! The handlers of the HTTP edge — decode, call one core function, encode —
//! and the OpenAPI document (`GET /openapi.json`), generated from these
//! annotations, with examples on every request body (the e2e tests post
//! each of them to a running server).

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

use super::models::{
    AdminResponse, ListModelsResponse, ModelInfo, ReloadRequest, SetLabelRequest, UnloadRequest,
};
use super::types::*;
use super::users::{
    DeleteUserResponse, FieldChange, GetUserQuery, GetUserResponse, TrackRequest, TrackResponse,
    TrackedUser, UserTrack,
};
use super::{Call, Guard, HttpState, deadline_of, with_deadline};
use crate::error::ApiError;

/// Embed: the profile vectors of a batch of users (by features or by id).
#[utoipa::path(post, path = "/v1/embed", tag = "profiles",
    params(("x-request-timeout-ms" = Option<u64>, Header,
        description = "Deadline in milliseconds: DEADLINE_EXCEEDED (504) when the answer is not ready by then")),
    request_body(content = EmbedRequest, examples(
        ("by_features" = (summary = "Two users by their features", value = json!({
            "users": [
                {"features": {"user_id": "a", "fields": {"occupation": "engineer", "age": 31},
                    "events": [{"item_id": "3", "timestamp": 880000000, "rating": 4.0},
                               {"item_id": "7", "timestamp": 880000100}]}},
                {"features": {"fields": {"occupation": "writer", "age": "45"},
                    "events": [{"item_id": "12", "timestamp": 880000500}]}}
            ],
            "request_id": "example-1"
        }))),
        ("by_user_id" = (summary = "A user of the users index", value = json!({
            "users": [{"user_id": "u0"}]
        }))),
        ("tracked_user" = (summary = "A tracked user (live state; see /v1/track), with request-time context", value = json!({
            "users": [
                {"user_id": "example-alice"},
                {"user_id": "example-alice", "context": {"fields": {"occupation": "writer"},
                    "events": [{"item_id": "9", "timestamp": 1700000300}]}}
            ]
        }))),
    )),
    responses(
        (status = 200, description = "One profile per user, in order", body = EmbedResponse),
        (status = 400, description = "Invalid input (the field named)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown model, version, label or user", body = ErrorBody),
        (status = 429, description = "Shed: queue full or rate limit", body = ErrorBody),
        (status = 503, description = "No ready version, or draining", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn embed(State(st): State<HttpState>, req: Request) -> Response {
    let call = Call::new("Embed");
    let (mut requested, mut request_id) = (String::new(), String::new());
    let r = async {
        st.authorize(Guard::Data, req.headers())?;
        let deadline = deadline_of(req.headers(), call.start)?;
        let body: EmbedRequest = st.body(req).await?;
        requested.clone_from(&body.model.name);
        st.engine().check_name("request_id", &body.request_id)?;
        request_id.clone_from(&body.request_id);
        let q = body.to_query()?;
        with_deadline(deadline, st.engine().embed(q, deadline)).await
    }
    .await
    .map(|e| EmbedResponse::from_core(e, request_id));
    call.finish(&st, &requested, r, |v| Some(&v.model))
}

/// Search: nearest items, or lookalike users, for features, a user id, a
/// vector or a seed set.
#[utoipa::path(post, path = "/v1/search", tag = "profiles",
    params(("x-request-timeout-ms" = Option<u64>, Header, description = "Deadline in milliseconds")),
    request_body(content = SearchRequest, examples(
        ("items_for_features" = (summary = "Nearest items for a user's features, with titles", value = json!({
            "features": {"fields": {"occupation": "engineer", "age": 31},
                "events": [{"item_id": "3", "timestamp": 880000000, "rating": 4.0}]},
            "k": 5, "include_attributes": true
        }))),
        ("lookalikes" = (summary = "Lookalike users of a known user", value = json!({
            "user_id": "u0", "target": "users", "k": 5
        }))),
        ("filtered" = (summary = "Nearest odd items of a known user, unseen ones only", value = json!({
            "user_id": "u1", "k": 3,
            "filter": {"conditions": [{"attribute": "parity", "op": "equals", "values": ["odd"]}],
                       "exclude_seen_items": true}
        }))),
        ("seed_set" = (summary = "Users like a seed set", value = json!({
            "seeds": {"user_ids": ["u0", "u2"]}, "target": "users", "k": 4
        }))),
        ("tracked_user" = (summary = "Unseen items for a tracked user (live state), with request-time context", value = json!({
            "user_id": "example-alice", "k": 5,
            "context": {"events": [{"item_id": "9", "timestamp": 1700000300}]},
            "filter": {"exclude_seen_items": true}
        }))),
    )),
    responses(
        (status = 200, description = "Best hits first", body = SearchResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown model, user or index", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn search(State(st): State<HttpState>, req: Request) -> Response {
    let call = Call::new("Search");
    let mut requested = String::new();
    let r = async {
        st.authorize(Guard::Data, req.headers())?;
        let deadline = deadline_of(req.headers(), call.start)?;
        let body: SearchRequest = st.body(req).await?;
        requested.clone_from(&body.model.name);
        let q = body.to_query()?;
        with_deadline(deadline, st.engine().search(q, deadline)).await
    }
    .await
    .map(SearchResponse::from_core);
    call.finish(&st, &requested, r, |v| Some(&v.model))
}

/// Explain: which dimension groups and tokens drove the profile, or its
/// score against an item or a seed set (occlusion, attention rollout, raw
/// attention mass).
#[utoipa::path(post, path = "/v1/explain", tag = "profiles",
    params(("x-request-timeout-ms" = Option<u64>, Header, description = "Deadline in milliseconds")),
    request_body(content = ExplainRequest, examples(
        ("profile_occlusion" = (summary = "The profile, by occlusion", value = json!({
            "features": {"fields": {"occupation": "engineer", "age": 31, "gender": "F"},
                "events": [{"item_id": "3", "timestamp": 880000000, "rating": 4.0},
                           {"item_id": "7", "timestamp": 880000100}]},
            "method": "occlusion", "top_n": 5
        }))),
        ("item_score" = (summary = "Why would this user score item 3", value = json!({
            "features": {"fields": {"occupation": "engineer", "age": 31},
                "events": [{"item_id": "7", "timestamp": 880000100, "rating": 5.0}]},
            "target": {"kind": "item", "item_id": "3"}
        }))),
        ("attention" = (summary = "Attention mass per layer and head", value = json!({
            "features": {"fields": {"occupation": "writer"},
                "events": [{"item_id": "5", "timestamp": 880000000}]},
            "method": "attention"
        }))),
        ("rollout_vs_seeds" = (summary = "Attention rollout, score against seed users", value = json!({
            "features": {"fields": {"occupation": "student", "age": 22},
                "events": [{"item_id": "9", "timestamp": 880000000}]},
            "method": "attention_rollout",
            "target": {"kind": "users", "seed_user_ids": ["u0", "u1"]}
        }))),
        ("tracked_user" = (summary = "A tracked user's live profile (see /v1/track), by occlusion", value = json!({
            "user_id": "example-alice", "method": "occlusion", "top_n": 5
        }))),
        ("tracked_user_item" = (summary = "Why would a tracked user, with one more event now, score item 3", value = json!({
            "user_id": "example-alice",
            "context": {"events": [{"item_id": "9", "timestamp": 1700000300}]},
            "target": {"kind": "item", "item_id": "3"}
        }))),
    )),
    responses(
        (status = 200, description = "The explanation", body = ExplainResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown model, item or seed user; a user id without live state", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn explain(State(st): State<HttpState>, req: Request) -> Response {
    let call = Call::new("Explain");
    let mut requested = String::new();
    let r = async {
        st.authorize(Guard::Data, req.headers())?;
        let deadline = deadline_of(req.headers(), call.start)?;
        let body: ExplainRequest = st.body(req).await?;
        requested.clone_from(&body.model.name);
        let asked = body.target.clone();
        let q = body.to_query()?;
        let e = with_deadline(deadline, st.engine().explain(q, deadline)).await?;
        Ok(ExplainResponse::from_core(e, asked))
    }
    .await;
    call.finish(&st, &requested, r, |v| Some(&v.model))
}

/// Track: store events and field changes of a batch of users in the live
/// user state (each user all-or-nothing, durable when the answer arrives).
/// A user id given to Embed, Search or Explain then resolves to this state.
#[utoipa::path(post, path = "/v1/track", tag = "users",
    params(("x-request-timeout-ms" = Option<u64>, Header, description = "Deadline in milliseconds")),
    request_body(content = TrackRequest, examples(
        ("events_and_fields" = (summary = "Events and field changes of a new user", value = json!({
            "users": [{"user_id": "example-alice",
                "events": [{"item_id": "3", "timestamp": 1700000000, "rating": 4.0, "event_id": "e1"},
                           {"item_id": "7", "timestamp": 1700000100, "event_id": "e2"}],
                "fields": [{"name": "occupation", "set": "engineer"}, {"name": "age", "set": 34}]}],
            "request_id": "track-1"
        }))),
        ("partial" = (summary = "A batch whose bad user answers in its slot (allow_partial)", value = json!({
            "users": [
                {"user_id": "example-bob", "events": [{"item_id": "5", "timestamp": 1700000200}],
                 "fields": [{"name": "gender", "set": "M"}]},
                {"user_id": "example-carol", "fields": [{"name": "shoe_size", "set": 9}]},
                {"user_id": "example-bob", "fields": [{"name": "gender", "clear": true}]}
            ],
            "allow_partial": true
        }))),
    )),
    responses(
        (status = 200, description = "One outcome per user, in order", body = TrackResponse),
        (status = 400, description = "Invalid input (the field named), or no state store (FAILED_PRECONDITION)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 409, description = "ABORTED: too many concurrent writers of one user (nothing of it stored)", body = ErrorBody),
        (status = 429, description = "The state store is full", body = ErrorBody),
        (status = 503, description = "The state store cannot be reached", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn track(State(st): State<HttpState>, req: Request) -> Response {
    let call = Call::new("Track");
    let (mut requested, mut request_id) = (String::new(), String::new());
    let r = async {
        st.authorize(Guard::Data, req.headers())?;
        let deadline = deadline_of(req.headers(), call.start)?;
        let body: TrackRequest = st.body(req).await?;
        requested.clone_from(&body.model.name);
        st.engine().check_name("request_id", &body.request_id)?;
        request_id.clone_from(&body.request_id);
        let q = body.to_query()?;
        with_deadline(deadline, st.engine().track(q, deadline)).await
    }
    .await
    .map(|users| TrackResponse::from_core(users, request_id));
    call.finish(&st, &requested, r, |_| None)
}

/// The user id of a `/v1/users/{user_id}` route (percent-decoded).
fn path_user_id(
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    id.map(|Path(id)| id)
        .map_err(|e| ApiError::invalid("user_id", e.body_text()))
}

/// GetUser: one page of a user's stored live state, events newest first.
#[utoipa::path(get, path = "/v1/users/{user_id}", tag = "users",
    params(
        ("user_id" = String, Path, description = "The user (percent-encoded)", example = "example-alice"),
        GetUserQuery,
        ("x-request-timeout-ms" = Option<u64>, Header, description = "Deadline in milliseconds"),
    ),
    responses(
        (status = 200, description = "The user's state", body = GetUserResponse),
        (status = 400, description = "Invalid user id, page size or token; no state store", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No live state (never tracked, or erased)", body = ErrorBody),
        (status = 409, description = "ABORTED: the state changed since the page token's page", body = ErrorBody),
        (status = 503, description = "The state store cannot be reached", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn get_user(
    State(st): State<HttpState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    q: Result<Query<GetUserQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    get_user_call(st, path_user_id(id), q, &headers).await
}

/// `GET /v1/users/`: GetUser of an empty id (the core refuses it by name).
pub async fn get_user_without_id(
    State(st): State<HttpState>,
    q: Result<Query<GetUserQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    get_user_call(st, Ok(String::new()), q, &headers).await
}

async fn get_user_call(
    st: HttpState,
    id: Result<String, ApiError>,
    q: Result<Query<GetUserQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
) -> Response {
    let call = Call::model_free("GetUser");
    let r = async {
        st.authorize(Guard::Data, headers)?;
        let deadline = deadline_of(headers, call.start)?;
        let id = id?;
        let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
        let page = st
            .engine()
            .get_user(&id, q.page_size as usize, &q.page_token, deadline);
        with_deadline(deadline, page).await
    }
    .await
    .map(GetUserResponse::from_core);
    call.finish(&st, "", r, |_| None)
}

/// DeleteUser: erase a user's live state.
#[utoipa::path(delete, path = "/v1/users/{user_id}", tag = "users",
    params(
        ("user_id" = String, Path, description = "The user (percent-encoded)", example = "example-bob"),
        ("x-request-timeout-ms" = Option<u64>, Header, description = "Deadline in milliseconds"),
    ),
    responses(
        (status = 200, description = "Erased (or there was nothing to erase: existed = false)", body = DeleteUserResponse),
        (status = 400, description = "Invalid user id; no state store", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "The state store cannot be reached", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn delete_user(
    State(st): State<HttpState>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    delete_user_call(st, path_user_id(id), &headers).await
}

/// `DELETE /v1/users/`: DeleteUser of an empty id (refused by name).
pub async fn delete_user_without_id(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    delete_user_call(st, Ok(String::new()), &headers).await
}

async fn delete_user_call(
    st: HttpState,
    id: Result<String, ApiError>,
    headers: &HeaderMap,
) -> Response {
    let call = Call::model_free("DeleteUser");
    let r = async {
        st.authorize(Guard::Data, headers)?;
        let deadline = deadline_of(headers, call.start)?;
        let id = id?;
        with_deadline(deadline, st.engine().delete_user(&id, deadline)).await
    }
    .await
    .map(|existed| DeleteUserResponse { existed });
    call.finish(&st, "", r, |_| None)
}

/// Query parameters of the model listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsQuery {
    /// Include each ready version's feature schema.
    pub include_schema: bool,
}

/// Every model and its versions.
#[utoipa::path(get, path = "/v1/models", tag = "models", params(ModelsQuery),
    responses(
        (status = 200, description = "Every model", body = ListModelsResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn list_models(
    State(st): State<HttpState>,
    q: Result<Query<ModelsQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let call = Call::new("ListModels");
    let r = (|| {
        st.authorize(Guard::Data, req.headers())?;
        let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
        let (snapshots, default_model) = st.engine().list_models();
        Ok(ListModelsResponse {
            models: snapshots
                .iter()
                .map(|s| ModelInfo::from(&crate::convert::model_info(s, q.include_schema)))
                .collect(),
            default_model,
        })
    })();
    call.finish(&st, "", r, |_| None)
}

/// One model's status (with the feature schema of its ready versions).
#[utoipa::path(get, path = "/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, description = "The model", body = ModelInfo),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
    ),
    security((), ("bearer" = [])))]
pub async fn get_model(
    State(st): State<HttpState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let call = Call::new("GetModel");
    let r = (|| {
        st.authorize(Guard::Data, req.headers())?;
        let s = st.engine().get_model(&name)?;
        Ok(ModelInfo::from(&crate::convert::model_info(&s, true)))
    })();
    call.finish(&st, &name, r, |_| None)
}

/// The admin answer: the named model (or every model).
fn admin_models(st: &HttpState, name: &str) -> Result<AdminResponse, ApiError> {
    Ok(AdminResponse {
        models: st
            .engine()
            .admin_models(name)?
            .iter()
            .map(|s| ModelInfo::from(&crate::convert::model_info(s, false)))
            .collect(),
    })
}

/// Admin answers are not measured (as on the gRPC port): plain JSON or error.
fn admin_answer(r: Result<AdminResponse, ApiError>) -> Response {
    match r.and_then(|v| {
        serde_json::to_vec(&v).map_err(|e| ApiError::Internal(format!("JSON encoding: {e}")))
    }) {
        Ok(body) => super::json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

/// ModelAdmin Reload (admin token).
#[utoipa::path(post, path = "/v1/admin/reload", tag = "admin", request_body = ReloadRequest,
    responses(
        (status = 200, description = "The model(s) after the reload", body = AdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 501, description = "ModelAdmin is off (no admin tokens)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn reload(State(st): State<HttpState>, req: Request) -> Response {
    admin_answer(
        async {
            st.authorize(Guard::Admin, req.headers())?;
            let r: ReloadRequest = st.body(req).await?;
            st.engine().reload(&r.model, r.version, r.wait).await?;
            admin_models(&st, &r.model)
        }
        .await,
    )
}

/// ModelAdmin SetLabel (admin token).
#[utoipa::path(post, path = "/v1/admin/labels", tag = "admin", request_body = SetLabelRequest,
    responses(
        (status = 200, description = "The model after the change", body = AdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 501, description = "ModelAdmin is off (no admin tokens)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn set_label(State(st): State<HttpState>, req: Request) -> Response {
    admin_answer(
        async {
            st.authorize(Guard::Admin, req.headers())?;
            let r: SetLabelRequest = st.body(req).await?;
            let version = (!r.remove).then_some(r.version);
            st.engine().set_label(&r.model, &r.label, version)?;
            admin_models(&st, &r.model)
        }
        .await,
    )
}

/// ModelAdmin Unload (admin token).
#[utoipa::path(post, path = "/v1/admin/unload", tag = "admin", request_body = UnloadRequest,
    responses(
        (status = 200, description = "The model after the unload", body = AdminResponse),
        (status = 401, description = "Missing or wrong admin token", body = ErrorBody),
        (status = 501, description = "ModelAdmin is off (no admin tokens)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn unload(State(st): State<HttpState>, req: Request) -> Response {
    admin_answer(
        async {
            st.authorize(Guard::Admin, req.headers())?;
            let r: UnloadRequest = st.body(req).await?;
            st.engine().unload(&r.model, r.version, r.force)?;
            admin_models(&st, &r.model)
        }
        .await,
    )
}

/// Query of the benchmark's echo.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EchoQuery {
    /// Components per answered vector.
    pub dim: usize,
}

/// `POST /bench/echo?dim=N` (config `http.bench_echo`, benchmarks only, not
/// in the OpenAPI document): the HTTP transport's floor for `/v1/embed`. The
/// same token check, deadline header, body reading, JSON decoding and query
/// conversion as Embed, then an Embed-shaped answer (one `dim`-component
/// vector per user, values of a real profile's text length) serialised the
/// same way — no cache, no model.
pub async fn bench_echo(
    State(st): State<HttpState>,
    q: Result<Query<EchoQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Response {
    let r = async {
        let Query(q) = q.map_err(|e| ApiError::invalid("query", e.body_text()))?;
        st.authorize(Guard::Data, req.headers())?;
        let _deadline = deadline_of(req.headers(), std::time::Instant::now())?;
        let body: EmbedRequest = st.body(req).await?;
        let users = body.to_query()?.users;
        let answer = EmbedResponse {
            model: ModelRef {
                name: body.model.name.clone(),
                version: 1,
                generation_id: 1,
            },
            users: users
                .iter()
                .map(|u| EmbeddedUser {
                    user_id: match u {
                        Ok(crate::engine::UserQuery::Features(f)) => f.user_id.clone(),
                        Ok(crate::engine::UserQuery::User(u)) => u.id.clone(),
                        Err(_) => String::new(),
                    },
                    vector: Some(
                        (0..q.dim)
                            .map(|i| {
                                if i % 2 == 0 {
                                    0.123_456_79
                                } else {
                                    -0.123_456_79
                                }
                            })
                            .collect(),
                    ),
                    cache_hit: true,
                    source: Some(ProfileSource::Cache),
                    error: None,
                })
                .collect(),
            dim: q.dim as u32,
            queue_us: 0,
            compute_us: 0,
            request_id: body.request_id.clone(),
        };
        serde_json::to_vec(&answer).map_err(|e| ApiError::Internal(format!("JSON encoding: {e}")))
    }
    .await;
    match r {
        Ok(body) => super::json_response(StatusCode::OK, body),
        Err(e) => e.into_response(),
    }
}

/// Readiness: 200 `{"serving": true}` when a model version is ready and the
/// server is not draining, else 503 (no token needed, like gRPC health).
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Serving"), (status = 503, description = "Not serving")))]
pub async fn healthz(State(st): State<HttpState>) -> Response {
    let serving = st.engine().any_ready() && !st.engine().is_draining();
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    super::json_response(
        status,
        serde_json::to_vec(&serde_json::json!({ "serving": serving })).unwrap_or_default(),
    )
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(s) => super::json_response(StatusCode::OK, s.into_bytes()),
        Err(e) => ApiError::Internal(format!("OpenAPI document: {e}")).into_response(),
    }
}

/// Adds the bearer security scheme.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI document of the HTTP edge.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "profiled HTTP/JSON API",
        description = "Multi-dimensional user profiles (Embed), nearest items and lookalike users \
            (Search) and explanations (Explain), live user state (Track, GetUser, DeleteUser): \
            the operations of the gRPC service profiled.v1.ProfileService and ModelAdmin, with \
            the same validation, limits, tokens and error codes. Errors: HTTP status of the gRPC code, body {code, status, message}. \
            Deadline: header x-request-timeout-ms.",
    ),
    paths(embed, search, explain, track, get_user, delete_user, list_models, get_model, reload,
        set_label, unload, healthz),
    components(schemas(ErrorBody, ItemError, ModelRef, ModelSpec, Features, FieldValue, WeightedTag,
        Event, CacheMode, DimensionGroup, ValueKind, UserTrack, FieldChange, TrackedUser)),
    modifiers(&Bearer),
    tags(
        (name = "profiles", description = "Embed, Search, Explain"),
        (name = "users", description = "Live user state: Track, GetUser, DeleteUser"),
        (name = "models", description = "Model status"),
        (name = "admin", description = "ModelAdmin (admin bearer token; off without admin tokens)"),
        (name = "health", description = "Readiness"),
    )
)]
pub struct ApiDoc;
