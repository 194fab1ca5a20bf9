//! The public gRPC contract of profiled: package `profiled.v1`.
//!
//! The `.proto` files live in `proto/profiled/v1/` at the repository root;
//! this crate compiles them at build time with [protox] (pure Rust, no system
//! `protoc`) and [tonic-prost-build], and exposes:
//!
//! - [`v1`]: the prost messages, enums and the tonic clients and servers
//!   (`v1::profile_service_client::ProfileServiceClient`,
//!   `v1::profile_service_server::{ProfileService, ProfileServiceServer}`,
//!   `v1::model_admin_client::ModelAdminClient`,
//!   `v1::model_admin_server::{ModelAdmin, ModelAdminServer}`);
//! - [`FILE_DESCRIPTOR_SET`]: the encoded `google.protobuf.FileDescriptorSet`
//!   of every file (imports included), for server reflection
//!   (`tonic_reflection::server::Builder::register_encoded_file_descriptor_set`).
//!
//! Helpers on the generated types (in `ext`): `Vector::{from_f32,
//! from_f32_as_f16, dim, to_f32, to_f32_checked}` with [`VectorError`],
//! `ModelSpec::{default_version, pinned, labelled}`, `FieldChange::{set, clear,
//! set_all}`, and conversions between
//! `ItemError` and `tonic::Status`.
//!
//! Nothing below the server uses these types: the server converts them to the
//! plain-Rust types of the model and index crates at its edge.
//!
//! [protox]: https://docs.rs/protox
//! [tonic-prost-build]: https://docs.rs/tonic-prost-build

#![forbid(unsafe_code)]

mod ext;

pub use ext::VectorError;

/// Generated code for package `profiled.v1` (messages, enums, clients, servers).
///
/// The documentation of every item is the comment of its definition in the
/// `.proto` files; `docs/api.md` explains the semantics for API users.
#[allow(
    missing_docs,
    rust_2018_idioms,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/profiled.v1.rs"));
}

/// The encoded `FileDescriptorSet` of `profiled/v1/*.proto` with its imports,
/// for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/profiled_v1_descriptor.bin"));

/// Fully qualified name of the data-plane service (for health and reflection).
pub const PROFILE_SERVICE_NAME: &str = "profiled.v1.ProfileService";

/// Fully qualified name of the control-plane service (for health and reflection).
pub const MODEL_ADMIN_NAME: &str = "profiled.v1.ModelAdmin";

/// Inside a `#[tonic::async_trait] impl ProfileService for X` of a test fake
/// or a bench echo that serves other calls only: `Track`, `TrackStream`,
/// `GetUser` and `DeleteUser` answering UNIMPLEMENTED with `$why`. Written
/// in the form `async_trait` gives methods (the attribute does not look
/// inside macro calls). The caller's crate needs `tonic` and `futures`.
#[macro_export]
macro_rules! user_state_unimplemented {
    ($why:expr) => {
        $crate::user_state_unimplemented!(@method track, $crate::v1::TrackRequest, $crate::v1::TrackResponse, $why);
        $crate::user_state_unimplemented!(@method track_stream, ::tonic::Streaming<$crate::v1::TrackRequest>, Self::TrackStreamStream, $why);
        $crate::user_state_unimplemented!(@method get_user, $crate::v1::GetUserRequest, $crate::v1::GetUserResponse, $why);
        $crate::user_state_unimplemented!(@method delete_user, $crate::v1::DeleteUserRequest, $crate::v1::DeleteUserResponse, $why);

        type TrackStreamStream = ::std::pin::Pin<
            Box<
                dyn ::futures::Stream<
                        Item = ::std::result::Result<
                            $crate::v1::TrackStreamResponse,
                            ::tonic::Status,
                        >,
                    > + Send
                    + 'static,
            >,
        >;
    };
    (@method $name:ident, $req:ty, $resp:ty, $why:expr) => {
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            _: ::tonic::Request<$req>,
        ) -> ::std::pin::Pin<
            Box<
                dyn ::std::future::Future<
                        Output = ::std::result::Result<::tonic::Response<$resp>, ::tonic::Status>,
                    > + Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move { Err(::tonic::Status::unimplemented($why)) })
        }
    };
}
