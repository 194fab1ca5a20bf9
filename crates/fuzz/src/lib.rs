//! `profiled-fuzz`: the fuzz bodies of profiled, one function per target,
//! shared by the libFuzzer targets in `fuzz/fuzz_targets/` (nightly,
//! `cargo +nightly fuzz run <target>`) and by the stable bounded run in
//! `tests/corpus.rs` (committed seeds plus deterministic mutations), so the
//! test suite exercises exactly what the fuzzer does without nightly.
//!
//! Every body takes arbitrary bytes and either accepts them or rejects them
//! with a typed error. A body **panics** when an invariant breaks — an
//! untyped or internal error, an error with an empty message, a non-finite
//! or non-normalised profile, an out-of-range search hit — so libFuzzer
//! reports it as a crash, just like a panic inside the code under test.
//!
//! Targets ([`TARGETS`]):
//! * `convert`: bytes → `EmbedRequest` (prost) → `profiled_server::convert`
//!   (selector, limits, features) → tokenizer → encoder forward, against a
//!   synthetic model version.
//! * `tokenizer`: bytes → structured [`profiled_model::UserFeatures`] (field
//!   names and item ids mostly from the schema) → `Tokenizer::tokenize`.
//! * `model_files`: bytes → `model.json` + `model.safetensors` in a
//!   temporary version folder → `Encoder::load_with` (JSON parsing, schema
//!   validation, safetensors header, shapes, packing, golden check).
//! * `index_file`: bytes → an index file (CRCs optionally recomputed so
//!   mutations get past the checksums) → `IndexFile::open_with`, then ids,
//!   vectors, attributes and a search over whatever opened.
//! * `track`: bytes → `TrackRequest` (prost) → `profiled_server::convert`
//!   (the core's `TrackInput::to_update`: user ids, events, field changes
//!   against the schema) → `profiled_state::merge` twice (the second apply
//!   of the same update stores nothing) → the stored state read back as
//!   features (`state_features`) → tokenizer → encoder forward.
//! * `request_status`: bytes → the body of a unary gRPC call (`Embed`) →
//!   the server's edge layer (`profiled_server::edge`) → tonic's unary
//!   path with the prost codec → the status the caller gets. A request
//!   the codec cannot read must get INVALID_ARGUMENT with a message — never
//!   INTERNAL, which is kept for bugs.
//!
//! Seeds are synthetic ([`seeds`]); `cargo run -p profiled-fuzz --bin
//! fuzz-seeds` rewrites `fuzz/corpus/`. See docs/fuzzing.md.

use std::cell::RefCell;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use profiled_index::{IndexBuilder, IndexFile, LocalBackend, OpenOptions, SearchBackend};
use profiled_model::format::{METADATA_FILE, WEIGHTS_FILE};
use profiled_model::testing::{Rng, SyntheticSpec, synthetic_schema, write_synthetic_model};
use profiled_model::{Encoder, Event, FieldValue, LoadOptions, Tokenizer, UserFeatures, Workspace};
use profiled_proto::v1 as pb;
use profiled_server::config::Limits;
use profiled_server::convert;
use profiled_server::error::{ApiError, model_error};
use profiled_store::Generation;
use prost::Message;

/// The fuzz targets, in the order the docs list them.
pub const TARGETS: [&str; 6] = [
    "convert",
    "track",
    "tokenizer",
    "model_files",
    "index_file",
    "request_status",
];

/// What a body did with its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The input was valid and fully processed.
    Accepted,
    /// The input was refused with a typed error (its message).
    Rejected(String),
}

impl Outcome {
    /// True for [`Outcome::Accepted`].
    pub fn is_accepted(&self) -> bool {
        matches!(self, Outcome::Accepted)
    }
}

/// Runs the body of target `name` on `data` (`None` for an unknown name).
pub fn run(name: &str, data: &[u8]) -> Option<Outcome> {
    Some(match name {
        "convert" => convert(data),
        "track" => track(data),
        "tokenizer" => tokenizer(data),
        "model_files" => model_files(data),
        "index_file" => index_file(data),
        "request_status" => request_status(data),
        _ => return None,
    })
}

fn rejected(msg: String) -> Outcome {
    assert!(!msg.trim().is_empty(), "an error with an empty message");
    Outcome::Rejected(msg)
}

/// Synthetic model sizes used by the `convert` and `tokenizer` targets.
fn spec() -> SyntheticSpec {
    SyntheticSpec {
        golden: 2,
        ..SyntheticSpec::default()
    }
}

struct ConvertCtx {
    generation: Generation,
    limits: Limits,
}

fn convert_ctx() -> &'static ConvertCtx {
    static CTX: OnceLock<ConvertCtx> = OnceLock::new();
    CTX.get_or_init(|| {
        // Test setup, not input: failing here is a harness bug.
        let dir = tempfile::tempdir().expect("temporary directory");
        let vdir = dir.path().join("1");
        write_synthetic_model(&vdir, &spec()).expect("synthetic model");
        let generation = Generation::load("synthetic", 1, &vdir, true).expect("load synthetic");
        // The weights stay mapped after the folder is removed.
        drop(dir);
        ConvertCtx {
            generation,
            limits: Limits::default(),
        }
    })
}

thread_local! {
    static WS: RefCell<Workspace> = RefCell::new(Workspace::new());
}

fn check_profiles(rows: &[Vec<f32>], dim: usize) {
    for r in rows {
        assert_eq!(r.len(), dim, "profile width");
        assert!(r.iter().all(|x| x.is_finite()), "non-finite profile {r:?}");
        let n: f64 = r.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!((n.sqrt() - 1.0).abs() < 1e-3, "profile norm {}", n.sqrt());
    }
}

/// A conversion error must be a client error (INVALID_ARGUMENT), never internal.
fn client_error(e: &ApiError) -> Outcome {
    assert!(
        matches!(e, ApiError::Invalid { .. } | ApiError::Limit { .. }),
        "conversion failed with a non-client error: {e:?}"
    );
    rejected(e.to_string())
}

/// `convert`: protobuf bytes of an `EmbedRequest` → validated features →
/// tokens → profiles, against a synthetic model version.
pub fn convert(data: &[u8]) -> Outcome {
    let req = match pb::EmbedRequest::decode(data) {
        Ok(r) => r,
        Err(e) => return rejected(format!("decode: {e}")),
    };
    let ctx = convert_ctx();
    let limits = &ctx.limits;
    if req.users.len() > limits.max_users_per_call {
        return rejected(format!("{} users", req.users.len()));
    }
    if let Err(e) = convert::model_sel(req.model.as_ref()) {
        return client_error(&e);
    }
    let g = &ctx.generation;
    let mut users = Vec::new();
    let mut last_err = None;
    for (i, u) in req.users.iter().enumerate() {
        let Some(pb::user_input::Source::Features(f)) = &u.source else {
            continue;
        };
        let path = format!("users[{i}].features");
        match convert::features(f, &path, g, limits) {
            Ok(feats) => {
                // Canonical bytes are a cache key: deterministic.
                assert_eq!(feats.canonical_bytes(), feats.clone().canonical_bytes());
                match g.encoder.tokenizer().tokenize(&feats) {
                    Ok(t) => {
                        let max = g.encoder.metadata().schema.fields.len()
                            + g.encoder.metadata().schema.behaviour.max_events;
                        assert!(t.len() <= max, "{} tokens > {max}", t.len());
                        users.push(feats);
                    }
                    Err(e) => last_err = Some(client_error(&model_error(&path, e))),
                }
            }
            Err(e) => last_err = Some(client_error(&e)),
        }
    }
    if !users.is_empty() {
        let dim = g.encoder.dim();
        WS.with_borrow_mut(|ws| match g.encoder.forward_batch(&users, ws) {
            Ok(p) => {
                assert_eq!(p.len(), users.len(), "one profile per user");
                check_profiles(&p.to_vecs(), dim);
            }
            Err(e) => panic!("forward failed on converted features: {e}"),
        });
    }
    match last_err {
        Some(r) if users.is_empty() => r,
        _ => Outcome::Accepted,
    }
}

/// `track`: protobuf bytes of a `TrackRequest` → validated updates → the
/// merge rules → stored state → features → tokens → profiles, against a
/// synthetic model version. Every converted update must merge (the server
/// checks what the rules refuse before storing), twice idempotently.
pub fn track(data: &[u8]) -> Outcome {
    use profiled_server::engine::TrackInput;
    use profiled_state::{Policy, merge};
    let req = match pb::TrackRequest::decode(data) {
        Ok(r) => r,
        Err(e) => return rejected(format!("decode: {e}")),
    };
    let ctx = convert_ctx();
    let limits = &ctx.limits;
    if req.users.len() > limits.max_track_users_per_call {
        return rejected(format!("{} users", req.users.len()));
    }
    let q = match convert::users::query(req) {
        Ok(q) => q,
        Err(e) => return client_error(&e),
    };
    let g = &ctx.generation;
    let policy = Policy {
        retain_events: 20,
        max_clock_skew_s: i64::MAX / 4,
        now_s: 1_700_000_000,
    };
    let mut features = Vec::new();
    let mut last_err = None;
    for (i, u) in q.users.iter().enumerate() {
        let path = format!("users[{i}]");
        if u.user_id().is_empty() || u.user_id().len() > limits.max_user_id_bytes {
            last_err = Some(rejected(format!("{path}.user_id")));
            continue;
        }
        let update = match u.to_update(&path, g, limits) {
            Ok(up) => up,
            Err(e) => {
                last_err = Some(client_error(&e));
                continue;
            }
        };
        let (state, applied) = match merge(None, &update, policy, 0) {
            Ok(x) => x,
            // Timestamps beyond the skew are the one thing the core checks
            // itself before storing; the rules refuse them too.
            Err(profiled_state::Error::Invalid { message }) => {
                last_err = Some(rejected(message));
                continue;
            }
            Err(e) => panic!("a converted update failed to merge: {e}"),
        };
        assert!(
            state.events.len() <= policy.retain_events,
            "retained window"
        );
        assert!(
            profiled_state::merge::in_time_order(&state.events),
            "time order"
        );
        assert_eq!(
            applied.stored as usize
                + applied.duplicates as usize
                + applied.dropped_too_old as usize,
            update.events.len(),
            "every event accounted for"
        );
        let (again, twice) = match merge(Some(state.clone()), &update, policy, 1) {
            Ok(x) => x,
            Err(e) => panic!("re-applying an update failed: {e}"),
        };
        assert_eq!(twice.stored, 0, "a second apply stores nothing new");
        assert_eq!(again.events, state.events, "idempotent");
        features.push(profiled_server::engine::users::state_features(g, &state));
    }
    let tk = g.encoder.tokenizer();
    let users: Vec<UserFeatures> = features
        .into_iter()
        .filter(|f| tk.tokenize(f).is_ok())
        .collect();
    if !users.is_empty() {
        let dim = g.encoder.dim();
        WS.with_borrow_mut(|ws| match g.encoder.forward_batch(&users, ws) {
            Ok(p) => check_profiles(&p.to_vecs(), dim),
            Err(e) => panic!("forward failed on stored state: {e}"),
        });
    }
    match last_err {
        Some(r) if users.is_empty() => r,
        _ => Outcome::Accepted,
    }
}

fn tokenizer_ctx() -> &'static Tokenizer {
    static TK: OnceLock<Tokenizer> = OnceLock::new();
    TK.get_or_init(|| {
        let spec = spec();
        Tokenizer::new(synthetic_schema(&spec, &mut Rng::new(spec.seed)))
    })
}

/// Reads structured values from fuzzer bytes (zeros once exhausted).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A short string: usually one of `known`, else raw (lossy UTF-8) bytes.
    fn string(&mut self, known: &[&str]) -> String {
        let sel = self.u8();
        if !known.is_empty() && sel < 200 {
            return known[usize::from(sel) % known.len()].to_string();
        }
        let n = usize::from(self.u8() % 24);
        let raw: Vec<u8> = (0..n).map(|_| self.u8()).collect();
        String::from_utf8_lossy(&raw).into_owned()
    }

    fn f64(&mut self) -> f64 {
        match self.u8() % 4 {
            0 => f64::from_bits(self.u64()),
            1 => f64::from(f32::from_bits(self.u32())),
            _ => f64::from(self.u8()) - 20.0,
        }
    }
}

/// Decodes fuzzer bytes into a user for `tk`'s schema.
pub fn user_from_bytes(data: &[u8], tk: &Tokenizer) -> UserFeatures {
    let mut b = Bytes(data);
    let schema = tk.schema();
    let columns: Vec<&str> = tk.input_columns().iter().map(String::as_str).collect();
    let mut values: Vec<&str> = vec!["F", "M", "X", "", "02139", "engineer", "25"];
    values.extend(schema.genres.iter().map(String::as_str));
    let items: Vec<&str> = schema.items.ids.iter().map(String::as_str).collect();
    let mut u = UserFeatures::default();
    if b.u8() & 1 == 1 {
        u.user_id = Some(b.string(&["u1"]));
    }
    let nf = b.u8() % 8;
    for _ in 0..nf {
        let key = b.string(&columns);
        let v = match b.u8() % 3 {
            0 => FieldValue::Categorical(b.string(&values)),
            1 => FieldValue::Number(b.f64()),
            _ => {
                let n = b.u8() % 6;
                FieldValue::Tags(
                    (0..n)
                        .map(|_| (b.string(&values), b.f64() as f32))
                        .collect(),
                )
            }
        };
        u.fields.insert(key, v);
    }
    while !b.is_empty() && u.events.len() < 64 {
        let item = b.string(&items);
        let timestamp = match b.u8() % 4 {
            0 => b.u64() as i64,
            1 => 880_000_000 + i64::from(b.u32() % 10_000_000),
            _ => 880_000_000 + i64::from(b.u8()) * 3_600,
        };
        let rating = match b.u8() % 4 {
            0 => None,
            1 => Some(f32::from_bits(b.u32())),
            _ => Some(f32::from(b.u8() % 7)),
        };
        u.events.push(Event {
            item,
            timestamp,
            rating,
        });
    }
    u
}

/// `tokenizer`: bytes → a structured user → tokens.
pub fn tokenizer(data: &[u8]) -> Outcome {
    let tk = tokenizer_ctx();
    let u = user_from_bytes(data, tk);
    match tk.tokenize(&u) {
        Ok(t) => {
            let s = tk.schema();
            assert_eq!(t.fields.len(), s.fields.len(), "one token per field");
            assert!(t.events.len() <= s.behaviour.max_events, "events cut");
            for e in &t.events {
                assert!((e.source as usize) < u.events.len(), "event source");
            }
            Outcome::Accepted
        }
        Err(e) => {
            assert!(
                matches!(
                    e,
                    profiled_model::Error::Feature { .. } | profiled_model::Error::Argument(_)
                ),
                "tokenizer failed with a non-input error: {e:?}"
            );
            rejected(e.to_string())
        }
    }
}

/// Splits `model_files` input: a little-endian u32 length, that many bytes of
/// model.json, the rest is model.safetensors.
pub fn split_model_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return (data, &[]);
    };
    let n = (u32::from_le_bytes(*head) as usize).min(rest.len());
    rest.split_at(n)
}

/// Frames model.json and model.safetensors bytes as one `model_files` input.
pub fn join_model_input(json: &[u8], weights: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + json.len() + weights.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(weights);
    out
}

/// `model_files`: a version folder written from the bytes, then loaded with
/// every check on (validation, shapes, packing, golden examples).
pub fn model_files(data: &[u8]) -> Outcome {
    let (json, weights) = split_model_input(data);
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join(METADATA_FILE), json).expect("write model.json");
    std::fs::write(dir.path().join(WEIGHTS_FILE), weights).expect("write weights");
    let opts = LoadOptions::default();
    match Encoder::load_with(dir.path(), &opts) {
        Ok(enc) => {
            // A loaded version answers its own golden inputs.
            let users: Vec<UserFeatures> = enc
                .metadata()
                .golden
                .iter()
                .map(|g| g.input.to_features())
                .collect();
            let dim = enc.dim();
            WS.with_borrow_mut(|ws| match enc.forward_batch(&users, ws) {
                Ok(p) => check_profiles(&p.to_vecs(), dim),
                Err(e) => panic!("a loaded model failed on its golden inputs: {e}"),
            });
            Outcome::Accepted
        }
        Err(e) => {
            use profiled_model::Error as M;
            assert!(
                matches!(e, M::Io { .. } | M::Model { .. } | M::Golden { .. }),
                "model load failed with an error that names no file: {e:?}"
            );
            rejected(e.to_string())
        }
    }
}

/// Recomputes every in-bounds section CRC and then the header CRC, so that
/// mutated files reach the structural checks behind the checksums.
pub fn fix_index_crcs(file: &mut [u8]) {
    use profiled_index::format::{HEADER_LEN, SECTIONS};
    if file.len() < HEADER_LEN {
        return;
    }
    for i in 0..SECTIONS {
        let o = 48 + 24 * i;
        let rd = |b: &[u8], at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let (off, len) = (rd(file, o), rd(file, o + 8));
        let Some(end) = off.checked_add(len) else {
            continue;
        };
        if end <= file.len() as u64 {
            let crc = crc32fast::hash(&file[off as usize..end as usize]);
            file[o + 16..o + 20].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&file[..252]);
    file[252..256].copy_from_slice(&crc.to_le_bytes());
}

/// `index_file`: first byte = mode (bit 0: recompute CRCs, bit 1: vector
/// CRCs verified), the rest is the file.
pub fn index_file(data: &[u8]) -> Outcome {
    let Some((&mode, body)) = data.split_first() else {
        return rejected("empty input".into());
    };
    let mut file = body.to_vec();
    if mode & 1 == 1 {
        fix_index_crcs(&mut file);
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("fuzz.index");
    std::fs::write(&path, &file).expect("write index");
    let opts = OpenOptions {
        expected_dims: None,
        verify_vectors: mode & 2 == 2,
        prefault: false,
    };
    match IndexFile::open_with(&path, &opts) {
        Ok(f) => {
            exercise_index(f);
            Outcome::Accepted
        }
        Err(e) => {
            use profiled_index::Error as I;
            assert!(
                matches!(
                    e,
                    I::Io { .. }
                        | I::BadMagic { .. }
                        | I::UnsupportedVersion { .. }
                        | I::Truncated { .. }
                        | I::Checksum { .. }
                        | I::Corrupt { .. }
                ),
                "index open failed with an unexpected error: {e:?}"
            );
            rejected(e.to_string())
        }
    }
}

fn exercise_index(f: IndexFile) {
    let rows = f.len();
    let dims = f.dims();
    for r in 0..rows.min(64) as u32 {
        let id = f.id(r).map(str::to_string);
        let id = id.unwrap_or_else(|| panic!("row {r} of {rows} has no id"));
        assert_eq!(f.row_of(&id), Some(r), "id lookup of row {r}");
        let v = f
            .vector(r)
            .unwrap_or_else(|| panic!("row {r} has no vector"));
        assert_eq!(v.len(), dims);
    }
    assert_eq!(f.vector(rows as u32), None);
    let attrs: Vec<String> = f.attributes().map(str::to_string).collect();
    let mut conditions = Vec::new();
    for a in &attrs {
        for (value, n) in f.attribute_values(a).unwrap_or_default() {
            let p = f.postings(a, value).map(<[u32]>::len);
            assert_eq!(p.ok(), Some(n), "postings of {a}={value}");
            if conditions.is_empty() {
                conditions.push(profiled_index::Condition::Equals {
                    attribute: a.clone(),
                    value: value.to_string(),
                });
            }
        }
    }
    let _ = f.meta();
    if rows == 0 || dims > 4096 {
        return;
    }
    let backend = LocalBackend::new(Arc::new(f));
    let mut query = vec![0f32; dims];
    query[0] = 1.0;
    for filter in [
        profiled_index::Filter::default(),
        profiled_index::Filter {
            conditions,
            ..profiled_index::Filter::default()
        },
    ] {
        let params = profiled_index::SearchParams {
            k: 5,
            exact: true,
            filter,
        };
        match backend.search(&query, &params) {
            Ok(res) => {
                for q in res {
                    for h in q.hits {
                        assert!((h.row as usize) < rows, "hit row {} of {rows}", h.row);
                    }
                }
            }
            Err(e) => panic!("search over a validated index failed: {e}"),
        }
    }
}

/// The handler behind `request_status`: accepts any decoded request (the
/// path under test ends where a handler would start).
#[derive(Clone)]
struct AcceptAny;

impl tonic::server::UnaryService<pb::EmbedRequest> for AcceptAny {
    type Response = pb::EmbedResponse;
    type Future = std::future::Ready<Result<tonic::Response<pb::EmbedResponse>, tonic::Status>>;

    fn call(&mut self, _req: tonic::Request<pb::EmbedRequest>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(pb::EmbedResponse::default())))
    }
}

/// The server's largest request message in `request_status` (small, so
/// that the size check is reached too).
const REQUEST_STATUS_MAX_BYTES: usize = 4096;

/// `request_status`: `data` as the whole body of a unary `Embed` call →
/// [`profiled_server::edge::EdgeLayer`] → tonic's unary path with the prost
/// codec (`max_decoding_message_size` set) → the answer's gRPC status.
/// Panics on INTERNAL (or any code but OK, INVALID_ARGUMENT and the
/// OUT_OF_RANGE of an oversized message) and on an empty message.
pub fn request_status(data: &[u8]) -> Outcome {
    use tower::{Layer, Service};
    let edge = profiled_server::edge::EdgeLayer::new(
        profiled_server::edge::EdgeConfig {
            max_request_bytes: REQUEST_STATUS_MAX_BYTES,
            max_metadata_bytes: 16 << 10,
        },
        &[profiled_proto::FILE_DESCRIPTOR_SET],
    );
    let inner = tower::service_fn(|req: http::Request<tonic::body::Body>| async move {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
            pb::EmbedResponse,
            pb::EmbedRequest,
        >::default())
        .max_decoding_message_size(REQUEST_STATUS_MAX_BYTES);
        Ok::<_, std::convert::Infallible>(grpc.unary(AcceptAny, req).await)
    });
    let mut svc = edge.layer(inner);
    let req = http::Request::builder()
        .method("POST")
        .uri("http://fuzz/profiled.v1.ProfileService/Embed")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(OneFrame(
            (!data.is_empty()).then(|| bytes::Bytes::copy_from_slice(data)),
        )))
        .unwrap_or_else(|e| panic!("cannot build the request: {e}"));
    let res = match futures::executor::block_on(svc.call(req)) {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = tonic::Status::from_header_map(res.headers());
    match status {
        // Trailers-only: the status is in the headers (every error here).
        Some(s) if s.code() != tonic::Code::Ok => {
            assert!(
                matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::OutOfRange
                ),
                "request bytes answered {:?}: {}",
                s.code(),
                s.message()
            );
            if s.code() == tonic::Code::OutOfRange {
                assert!(
                    s.message().contains("server.max_request_bytes"),
                    "an OUT_OF_RANGE that does not name the setting: {}",
                    s.message()
                );
            }
            rejected(format!("{:?}: {}", s.code(), s.message()))
        }
        _ => Outcome::Accepted,
    }
}

/// A request body of one data frame.
struct OneFrame(Option<bytes::Bytes>);

impl http_body::Body for OneFrame {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// Synthetic seeds per target: `(target, file name, bytes)`.
pub fn seeds() -> anyhow::Result<Vec<(&'static str, String, Vec<u8>)>> {
    let mut out = Vec::new();
    // convert: EmbedRequests built from random synthetic users.
    let tk = tokenizer_ctx();
    let mut rng = Rng::new(7);
    let s = spec();
    // Age as a number: the synthetic generator writes it as text half the
    // time (the server parses that too; numbers are what clients send).
    let to_pb = |u: &UserFeatures| {
        let mut p = profiled_server::convert::to_proto(u);
        if let Some(FieldValue::Categorical(a)) = u.fields.get("age") {
            p.fields.insert(
                "age".into(),
                pb::FieldValue {
                    kind: Some(pb::field_value::Kind::Number(a.parse().unwrap_or(30.0))),
                },
            );
        }
        p
    };
    for i in 0..4 {
        let n = 1 + i;
        let users = (0..n)
            .map(|_| {
                let u = profiled_model::testing::random_user(&mut rng, s.items, s.max_events);
                pb::UserInput {
                    source: Some(pb::user_input::Source::Features(to_pb(&u))),
                    context: None,
                }
            })
            .collect();
        let model = (i % 2 == 1).then(|| pb::ModelSpec {
            name: "synthetic".into(),
            selector: Some(pb::model_spec::Selector::Version(1)),
        });
        let req = pb::EmbedRequest {
            model,
            users,
            allow_partial: i == 3,
            ..pb::EmbedRequest::default()
        };
        out.push(("convert", format!("embed-{i}"), req.encode_to_vec()));
    }
    // track: updates of synthetic users (events with and without ids,
    // fields set and cleared).
    for i in 0..4u64 {
        let users = (0..1 + i)
            .map(|k| {
                let u = profiled_model::testing::random_user(&mut rng, s.items, s.max_events);
                let p = to_pb(&u);
                let mut fields = pb::FieldChange::set_all(p.fields);
                if k % 2 == 1 {
                    fields.push(pb::FieldChange::clear("age"));
                }
                let events = p
                    .events
                    .into_iter()
                    .enumerate()
                    .map(|(j, mut e)| {
                        if j % 2 == 0 {
                            e.event_id = format!("e{i}-{k}-{j}");
                        }
                        e
                    })
                    .collect();
                pb::UserTrack {
                    user_id: format!("user-{i}-{k}"),
                    events,
                    fields,
                }
            })
            .collect();
        let req = pb::TrackRequest {
            users,
            allow_partial: i == 2,
            ..pb::TrackRequest::default()
        };
        out.push(("track", format!("track-{i}"), req.encode_to_vec()));
    }
    // request_status: the convert seeds as gRPC bodies (one message each),
    // and an empty message (a valid, empty request). Seeds must be
    // accepted: refused shapes (two messages, cut frames) come from the
    // mutations.
    let frame = |m: &[u8]| {
        let mut f = vec![0u8];
        f.extend_from_slice(&u32::try_from(m.len()).unwrap_or(u32::MAX).to_be_bytes());
        f.extend_from_slice(m);
        f
    };
    let convert_seeds: Vec<Vec<u8>> = out
        .iter()
        .filter(|(t, _, _)| *t == "convert")
        .map(|(_, _, b)| b.clone())
        .collect();
    for (i, m) in convert_seeds.iter().enumerate() {
        out.push(("request_status", format!("embed-{i}"), frame(m)));
    }
    out.push(("request_status", "empty-message".into(), frame(&[])));
    // tokenizer: random byte strings that decode to valid, varied users.
    let mut r = Rng::new(100);
    let mut i = 0;
    while i < 4 {
        let n = 16 + 24 * i;
        let bytes: Vec<u8> = (0..n).map(|_| (r.next_u64() % 256) as u8).collect();
        if tk.tokenize(&user_from_bytes(&bytes, tk)).is_ok() {
            out.push(("tokenizer", format!("user-{i}"), bytes));
            i += 1;
        }
    }
    // model_files: two small synthetic versions (f32 and f16).
    for (name, dtype) in [
        ("f32", profiled_model::Dtype::F32),
        ("f16", profiled_model::Dtype::F16),
    ] {
        let dir = tempfile::tempdir()?;
        let spec = SyntheticSpec {
            dtype,
            d_model: 8,
            heads: 2,
            layers: 1,
            ffn: 8,
            d_out: 4,
            items: 6,
            max_events: 4,
            golden: 2,
            seed: 3,
        };
        write_synthetic_model(dir.path(), &spec)?;
        let json = std::fs::read(dir.path().join(METADATA_FILE))?;
        let weights = std::fs::read(dir.path().join(WEIGHTS_FILE))?;
        out.push((
            "model_files",
            format!("tiny-{name}"),
            join_model_input(&json, &weights),
        ));
    }
    // index_file: small indexes with and without the row-major copy.
    for (i, row_major) in [(0u8, false), (1, true)] {
        let dir = tempfile::tempdir()?;
        let dims = 4;
        let mut b = IndexBuilder::new(dims)?;
        b.row_major_copy(row_major).meta("{\"seed\":\"synthetic\"}");
        let (vecs, clusters) =
            profiled_index::synthetic::clustered(20, dims, 3, 0.2, 9 + u64::from(i));
        for (r, (v, c)) in vecs.chunks_exact(dims).zip(&clusters).enumerate() {
            let row = b.push(&format!("item-{r}"), v)?;
            b.add_attribute(row, "cluster", &c.to_string())?;
        }
        let p = dir.path().join("x.index");
        b.write(&p)?;
        let file = std::fs::read(&p)?;
        // Mode 3: CRCs recomputed after mutation, vector CRCs verified.
        let mut input = vec![3u8];
        input.extend_from_slice(&file);
        out.push(("index_file", format!("rows20-rm{i}"), input));
    }
    Ok(out)
}

/// Reads the committed seeds of `target` from `corpus_dir/<target>/`.
pub fn read_corpus(corpus_dir: &Path, target: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(corpus_dir.join(target))? {
        let e = e?;
        if e.file_type()?.is_file() {
            out.push((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path())?,
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// Deterministic byte-level mutations (libFuzzer-style: bit flips, byte
/// sets to interesting values, inserts, deletes, duplicated ranges,
/// integer tweaks and splices with another seed), 1–4 stacked.
pub fn mutate(rng: &mut Rng, input: &[u8], others: &[&[u8]], max_len: usize) -> Vec<u8> {
    let mut d = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = d.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'-'][rng.below(8)];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let ins: Vec<u8> = (0..n).map(|_| (rng.next_u64() & 0xff) as u8).collect();
                d.splice(i..i, ins);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = (1 + rng.below(16)).min(len - i);
                d.drain(i..i + n);
            }
            4 if len > 1 => {
                let i = rng.below(len);
                let n = (1 + rng.below(32)).min(len - i);
                let chunk = d[i..i + n].to_vec();
                let at = rng.below(len + 1);
                d.splice(at..at, chunk);
            }
            5 if len >= 4 => {
                // An interesting 32-bit integer at a random offset.
                let i = rng.below(len - 3);
                let v: u32 =
                    [0, 1, u32::MAX, 0x7fff_ffff, 0x8000_0000, 64, 256, 4096][rng.below(8)];
                d[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            6 if len > 0 => {
                let i = rng.below(len);
                d[i] = d[i].wrapping_add(if rng.below(2) == 0 { 1 } else { 255 });
            }
            7 if !others.is_empty() => {
                let o = others[rng.below(others.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(o.len() + 1);
                d.truncate(cut);
                d.extend_from_slice(&o[from..]);
            }
            8 if len > 0 => d.truncate(rng.below(len)),
            _ => {}
        }
    }
    d.truncate(max_len);
    d
}
