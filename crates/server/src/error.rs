//! [`ApiError`]: every failure a call can end with, and the one exhaustive
//! mapping to `tonic::Status`; the HTTP edge answers the same code with the
//! HTTP status of [`http_status`] (one table, code by code).

use tonic::{Code, Status};

/// A failed call (or a failed element of a batch).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Malformed input; `field` is the request path of the offending field.
    #[error("{field}: {message}")]
    Invalid {
        /// Path in request terms, e.g. `users[2].features.fields["age"]`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A request-side limit was exceeded.
    #[error("{field}: {got} exceeds limits.{limit} = {value}")]
    Limit {
        /// Path of the field, e.g. `users`.
        field: String,
        /// What was sent, e.g. `300 users`.
        got: String,
        /// The limit's config key under `limits.`.
        limit: &'static str,
        /// Its value.
        value: u64,
    },
    /// A whole message is larger than a size limit of the server.
    #[error("{what}: {bytes} bytes exceeds server.{limit} = {value}{hint}")]
    TooLarge {
        /// Which message, e.g. `response`.
        what: &'static str,
        /// Its encoded size.
        bytes: u64,
        /// The limit's config key under `server.`.
        limit: &'static str,
        /// Its value.
        value: u64,
        /// What to do about it (starts with "; " when set).
        hint: &'static str,
    },
    /// Unknown model, version, label, user, item or index.
    #[error("{0}")]
    NotFound(String),
    /// Load shedding: a queue or concurrency limit is full.
    #[error("{0}")]
    Overloaded(String),
    /// The call's deadline passed before the work was done.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// No generation is ready, or the server is draining.
    #[error("{0}")]
    Unavailable(String),
    /// Admin call in a state that does not allow it, or a user-state call
    /// on a server without a state store.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A conflict the caller may retry: a user written by too many writers
    /// at once, or a page token of a state that changed since.
    #[error("{0}")]
    Aborted(String),
    /// A store is out of space; nothing was half-written.
    #[error("{0}")]
    StoreFull(String),
    /// Stored data that cannot be read back.
    #[error("{0}")]
    DataLoss(String),
    /// Missing or wrong bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// Not supported by this server build.
    #[error("{0}")]
    Unimplemented(String),
    /// A bug: never caused by input.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// The [`ApiError::Limit`] of a string over `limits.max_string_bytes`
    /// (`max`), named by `field` (built only on failure) and never echoed.
    pub fn check_string(
        field: impl FnOnce() -> String,
        value: &str,
        max: usize,
    ) -> Result<(), ApiError> {
        if value.len() > max {
            return Err(ApiError::Limit {
                field: field(),
                got: format!("{} bytes", value.len()),
                limit: "max_string_bytes",
                value: max as u64,
            });
        }
        Ok(())
    }

    /// An [`ApiError::Invalid`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Invalid { .. } | ApiError::Limit { .. } => Code::InvalidArgument,
            ApiError::TooLarge { .. } => Code::OutOfRange,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::Overloaded(_) => Code::ResourceExhausted,
            ApiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Aborted(_) => Code::Aborted,
            ApiError::StoreFull(_) => Code::ResourceExhausted,
            ApiError::DataLoss(_) => Code::DataLoss,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::Unimplemented(_) => Code::Unimplemented,
            ApiError::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status of this error on the HTTP edge ([`http_status`] of
    /// [`ApiError::code`]).
    pub fn http_status(&self) -> u16 {
        http_status(self.code())
    }

    /// As an `ItemError` of a batch or stream.
    pub fn to_item(&self) -> profiled_proto::v1::ItemError {
        profiled_proto::v1::ItemError {
            code: self.code() as i32,
            message: self.to_string(),
        }
    }
}

/// User-state store errors: the store is named in every message.
impl From<profiled_state::Error> for ApiError {
    fn from(e: profiled_state::Error) -> ApiError {
        use profiled_state::Error as E;
        let msg = e.to_string();
        match e {
            E::Invalid { .. } => ApiError::Invalid {
                field: "users".into(),
                message: msg,
            },
            E::Unavailable { .. } => ApiError::Unavailable(msg),
            E::Full { .. } => ApiError::StoreFull(msg),
            E::Corrupt { .. } => ApiError::DataLoss(msg),
            E::Contended { .. } => ApiError::Aborted(msg),
            E::Config(_) => ApiError::FailedPrecondition(msg),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// The HTTP status the HTTP edge answers for a gRPC code: the one mapping,
/// code by code (the JSON body carries the code's name, [`code_name`], and
/// the same message as the gRPC status). OUT_OF_RANGE is only ever a size
/// limit here (a request or response over `server.max_*_bytes`): 413.
pub fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::OutOfRange => 413,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
    }
}

/// The canonical name of a gRPC code (`INVALID_ARGUMENT`), as the JSON
/// error body of the HTTP edge carries it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The gRPC codec refuses a request message over `server.max_request_bytes`
/// before any handler runs, with its own wording ("decoded message length too
/// large: found N bytes, the limit is: L bytes"). Rewritten here to name the
/// setting, like every other limit; any other status is returned unchanged.
pub fn name_request_limit(status: Status, max_request_bytes: usize) -> Status {
    const CODEC: &str = "decoded message length too large";
    if status.code() != Code::OutOfRange || !status.message().contains(CODEC) {
        return status;
    }
    let found = status
        .message()
        .split("found ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    let size = found.map_or_else(
        || "a request message".to_string(),
        |n| format!("request message: {n} bytes"),
    );
    Status::out_of_range(format!(
        "{size} exceeds server.max_request_bytes = {max_request_bytes}; send fewer users per call \
         (or stream them with EmbedStream)"
    ))
}

/// The codec's and transport's statuses as the docs promise them (see
/// docs/api.md, "Errors"): a request the codec cannot read is the caller's
/// fault — INVALID_ARGUMENT with the decoder's message — never INTERNAL,
/// which is kept for bugs; a message over `server.max_request_bytes` names
/// the setting ([`name_request_limit`]). Anything else is returned
/// unchanged. Applied at the edge (crate::edge) to every answer.
pub fn edge_status(status: Status, max_request_bytes: usize) -> Status {
    let status = name_request_limit(status, max_request_bytes);
    if status.code() != Code::Internal {
        return status;
    }
    let msg = status.message();
    let framing = |what: &str| Status::invalid_argument(format!("malformed gRPC framing: {what}"));
    if msg.starts_with("failed to decode Protobuf message") {
        Status::invalid_argument(format!("malformed request message: {}", bounded(msg, 512)))
    } else if msg == "Unexpected EOF decoding stream." {
        framing(
            "the request ends inside a message (its length prefix is longer than the data sent)",
        )
    } else if msg == "Missing request message." {
        Status::invalid_argument("no request message: this call takes exactly one")
    } else if msg.starts_with("protocol error: received message with compressed-flag")
        || msg.starts_with("protocol error: received message with invalid compression flag")
    {
        framing(&bounded(msg, 256))
    } else {
        status
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), saying how
/// long it was when cut: error messages never echo unbounded input.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

impl From<profiled_store::Error> for ApiError {
    fn from(e: profiled_store::Error) -> ApiError {
        use profiled_store::Error as S;
        let msg = e.to_string();
        match e {
            S::InvalidName(_) => ApiError::invalid("model.name", msg),
            S::InvalidLabel(_) => ApiError::invalid("label", msg),
            S::InvalidVersion(_) => ApiError::invalid("version", msg),
            S::InvalidPolicy(_) => ApiError::Internal(msg),
            S::NoDefaultModel { .. } => ApiError::invalid("model.name", msg),
            S::UnknownModel { .. } | S::VersionNotReady { .. } | S::UnknownLabel { .. } => {
                ApiError::NotFound(msg)
            }
            S::NoReadyVersion { .. } => ApiError::Unavailable(msg),
            S::Load { .. } => ApiError::FailedPrecondition(msg),
            S::Precondition(_) | S::PathEscape { .. } => ApiError::FailedPrecondition(msg),
            S::Publish(_) | S::Io { .. } | S::Labels { .. } | S::Internal(_) => {
                ApiError::Internal(msg)
            }
        }
    }
}

impl From<profiled_index::Error> for ApiError {
    /// Index errors that reach a caller without more context: a malformed
    /// argument is the caller's (INVALID_ARGUMENT), an unknown id is
    /// NOT_FOUND, anything else (I/O, a corrupt file, the ANN library) is
    /// the server's (INTERNAL). Search maps its filter errors with the
    /// request path first.
    fn from(e: profiled_index::Error) -> ApiError {
        use profiled_index::Error as I;
        let msg = e.to_string();
        match e {
            I::InvalidArgument(_) | I::UnknownAttribute(_) => ApiError::invalid("index", msg),
            I::UnknownId(_) => ApiError::NotFound(msg),
            _ => ApiError::Internal(msg),
        }
    }
}

/// Maps a model error for the user at request path `path` (e.g. `users[3]`
/// or `features`).
pub fn model_error(path: &str, e: profiled_model::Error) -> ApiError {
    use profiled_model::Error as M;
    match e {
        M::Feature { field, message } => {
            if field == "events" {
                ApiError::invalid(format!("{path}.events"), message)
            } else {
                ApiError::invalid(format!("{path}.fields[{field:?}]"), message)
            }
        }
        M::Batch { source, .. } => model_error(path, *source),
        M::Argument(m) => ApiError::invalid(path, m),
        M::Io { .. } | M::Model { .. } | M::Golden { .. } | M::Kernel(_) => {
            ApiError::Internal(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let s: Status = ApiError::Limit {
            field: "users".into(),
            got: "300 users".into(),
            limit: "max_users_per_call",
            value: 256,
        }
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "users: 300 users exceeds limits.max_users_per_call = 256"
        );
        let s: Status =
            ApiError::from(profiled_store::Error::NoReadyVersion { model: "m".into() }).into();
        assert_eq!(s.code(), Code::Unavailable);
        let e = model_error(
            "users[1].features",
            profiled_model::Error::Feature {
                field: "age".into(),
                message: "bad".into(),
            },
        );
        assert_eq!(e.to_string(), "users[1].features.fields[\"age\"]: bad");
    }

    #[test]
    fn codec_decode_errors_are_invalid_argument() {
        for (codec, needle) in [
            (
                "failed to decode Protobuf message: EmbedRequest.users: invalid wire type: ThirtyTwoBit (expected LengthDelimited)",
                "invalid wire type",
            ),
            ("Unexpected EOF decoding stream.", "length prefix is longer"),
            ("Missing request message.", "no request message"),
            (
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                "compressed-flag",
            ),
        ] {
            let s = edge_status(Status::internal(codec), 1);
            assert_eq!(s.code(), Code::InvalidArgument, "{codec}");
            assert!(s.message().contains(needle), "{}", s.message());
        }
        // Real internal errors stay INTERNAL; other codes pass through.
        for other in [
            Status::internal("internal: the loading thread ended"),
            Status::not_found("failed to decode Protobuf message"),
        ] {
            let (code, msg) = (other.code(), other.message().to_string());
            let s = edge_status(other, 1);
            assert_eq!((s.code(), s.message()), (code, msg.as_str()));
        }
        // The codec's size error names the setting here too.
        let s = edge_status(
            Status::out_of_range("decoded message length too large: found 9 bytes"),
            4,
        );
        assert!(s.message().contains("server.max_request_bytes = 4"));
    }

    #[test]
    fn http_statuses_follow_the_codes() {
        let cases = [
            (ApiError::invalid("users", "x"), 400, "INVALID_ARGUMENT"),
            (ApiError::NotFound("m".into()), 404, "NOT_FOUND"),
            (
                ApiError::Unauthenticated("t".into()),
                401,
                "UNAUTHENTICATED",
            ),
            (ApiError::Overloaded("q".into()), 429, "RESOURCE_EXHAUSTED"),
            (
                ApiError::DeadlineExceeded("d".into()),
                504,
                "DEADLINE_EXCEEDED",
            ),
            (ApiError::Unavailable("u".into()), 503, "UNAVAILABLE"),
            (ApiError::Unimplemented("u".into()), 501, "UNIMPLEMENTED"),
            (ApiError::Internal("i".into()), 500, "INTERNAL"),
        ];
        for (e, status, name) in cases {
            assert_eq!(e.http_status(), status, "{e}");
            assert_eq!(code_name(e.code()), name);
        }
    }

    #[test]
    fn bounded_cuts_long_input_and_says_so() {
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(bounded("abcdef", 3), "abc… (6 bytes)");
        // Never inside a character.
        assert_eq!(bounded("ééé", 3), "é… (6 bytes)");
    }

    #[test]
    fn codec_size_errors_name_the_setting() {
        let codec = Status::out_of_range(
            "Error, decoded message length too large: found 100017 bytes, the limit is: 65536 bytes",
        );
        let s = name_request_limit(codec, 65536);
        assert_eq!(s.code(), Code::OutOfRange);
        assert!(
            s.message().starts_with(
                "request message: 100017 bytes exceeds server.max_request_bytes = 65536"
            ),
            "{}",
            s.message()
        );
        // Unparsable size: still names the setting.
        let odd = Status::out_of_range("decoded message length too large");
        assert!(
            name_request_limit(odd, 7)
                .message()
                .starts_with("a request message exceeds server.max_request_bytes = 7")
        );
        // Anything else passes through untouched.
        for other in [
            Status::out_of_range("k is out of range"),
            Status::invalid_argument("decoded message length too large"),
        ] {
            let (code, msg) = (other.code(), other.message().to_string());
            let s = name_request_limit(other, 1);
            assert_eq!((s.code(), s.message()), (code, msg.as_str()));
        }
    }
}
