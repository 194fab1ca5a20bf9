//! Helpers of the end-to-end tests (`tests/e2e/tests/*.rs`): the real
//! `profiled` binary started on `127.0.0.1:0` over a model repository of
//! synthetic models, and real gRPC clients calling it.
//!
//! Every helper the test files share lives here, once:
//!
//! * [`models`] — synthetic model versions (valid or with a failing golden
//!   check), their `items.index` / `users.index`, temporary repositories and
//!   publishing into them;
//! * [`bins`] — the binaries under test (`profiled`, `profilectl`, built
//!   from the current tree with the tests' own cargo profile), the repository
//!   root and the test Python interpreter;
//! * [`server`] — [`Server`]: start, wait for SERVING, connect, SIGTERM,
//!   wait for the exit, read the log; killed on drop;
//! * [`requests`] — builders of the protobuf requests (users, Embed, Search,
//!   Explain targets, bearer tokens);
//! * [`raw`] — a raw HTTP/2 client (`h2`) for calls no gRPC client sends
//!   (bad protobuf, broken framing, odd headers) and raw TCP checks;
//! * [`http`] — a plain HTTP/1.1 client (the HTTP/JSON edge, WebDriver)
//!   and the assertion on JSON error answers;
//! * [`rpc`] — calls the tests make again and again (GetModel, waiting for a
//!   model state, health, reflection);
//! * [`metrics`] — the Prometheus endpoint: free ports, scraping, samples;
//! * [`mod@assert`] — the shared assertion on error statuses.
//!
//! Everything is re-exported at the crate root, so tests write
//! `use profiled_e2e::{Server, synth_repo, features, embed_req};`.
//!
//! Conventions: setup helpers return [`anyhow::Result`] (a test `unwrap`s);
//! helpers whose purpose is to assert (`assert_status`) panic with a message
//! naming what was expected.

#![forbid(unsafe_code)]

pub mod assert;
pub mod bins;
pub mod http;
pub mod metrics;
pub mod models;
pub mod raw;
pub mod requests;
pub mod rpc;
pub mod server;

pub use assert::assert_status;
pub use bins::{profilectl_bin, profiled_bin, repo_root, test_python};
pub use http::{HttpAnswer, assert_http_error, http_request, post_json};
pub use metrics::{free_port, sample, scrape, scrape_until};
pub use models::{
    ADMIN_TOKEN, load_unverified, make_broken_model, make_model, negate_golden, publish_model,
    synth_repo, temp_repo, write_admin_token, write_indexes,
};
pub use raw::{RawAnswer, RawConn, closed_within, grpc_frame};
pub use requests::{
    categorical, clear_field, condition, embed_req, event, event_with_id, features, input,
    input_by_id, item_target, number, occupation_and_age, search_features, search_user, set_field,
    track_req, user_features, user_track, users_target, with_bearer,
};
pub use rpc::{ProfileClient, get_model, health_status, list_services, version_of, wait_model};
pub use server::Server;
