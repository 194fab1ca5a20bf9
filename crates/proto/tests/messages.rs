//! Round trips of representative messages through the protobuf wire format,
//! and the defaults the contract promises for unset fields.

use std::collections::HashMap;

use profiled_proto::v1::{
    self, AttributeCondition, AttributeOp, BehaviourEvent, CacheMode, DimensionGroup, EmbedRequest,
    EmbedResponse, EmbedStreamResponse, EmbeddedUser, ExplainMethod, ExplainRequest,
    ExplainResponse, ExplainTarget, FieldValue, Filter, GroupContribution, HeadAttention, Hit,
    ItemError, ItemTarget, LayerAttention, ModelRef, ModelSpec, ProfileSource, SearchPath,
    SearchRequest, SearchResponse, SeedSet, TagList, TargetIndex, Token, TokenContribution,
    UserFeatures, UserInput, ValueKind, Vector, VectorEncoding, WeightedTag,
};
use prost::Message;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M) {
    let bytes = msg.encode_to_vec();
    let back = M::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(&back, msg);
    // Length-delimited framing too (as on a gRPC stream).
    let framed = msg.encode_length_delimited_to_vec();
    let back = M::decode_length_delimited(framed.as_slice()).expect("decodes framed");
    assert_eq!(&back, msg);
}

fn features() -> UserFeatures {
    let mut fields = HashMap::new();
    fields.insert(
        "age".to_owned(),
        FieldValue {
            kind: Some(v1::field_value::Kind::Number(34.0)),
        },
    );
    fields.insert(
        "occupation".to_owned(),
        FieldValue {
            kind: Some(v1::field_value::Kind::Categorical("engineer".to_owned())),
        },
    );
    fields.insert(
        "genre_mix".to_owned(),
        FieldValue {
            kind: Some(v1::field_value::Kind::Tags(TagList {
                tags: vec![
                    WeightedTag {
                        tag: "Drama".to_owned(),
                        weight: Some(0.6),
                    },
                    WeightedTag {
                        tag: "Comedy".to_owned(),
                        weight: None,
                    },
                ],
            })),
        },
    );
    UserFeatures {
        user_id: "196".to_owned(),
        fields,
        events: vec![
            BehaviourEvent {
                item_id: "242".to_owned(),
                timestamp: 881_250_949,
                rating: Some(3.0),
                event_id: String::new(),
            },
            BehaviourEvent {
                item_id: "50".to_owned(),
                timestamp: 875_072_484,
                rating: None,
                event_id: "click-7".to_owned(),
            },
        ],
    }
}

fn model_ref() -> ModelRef {
    ModelRef {
        name: "ml100k".to_owned(),
        version: 3,
        generation_id: 17,
    }
}

#[test]
fn embed_round_trip() {
    let request = EmbedRequest {
        model: Some(ModelSpec {
            name: "ml100k".to_owned(),
            selector: Some(v1::model_spec::Selector::Label("canary".to_owned())),
        }),
        users: vec![
            UserInput {
                source: Some(v1::user_input::Source::Features(features())),
                context: None,
            },
            UserInput {
                source: Some(v1::user_input::Source::UserId("42".to_owned())),
                context: Some(features()),
            },
        ],
        encoding: VectorEncoding::F16 as i32,
        cache: CacheMode::Refresh as i32,
        allow_partial: true,
        request_id: "batch-7".to_owned(),
    };
    round_trip(&request);

    let response = EmbedResponse {
        model: Some(model_ref()),
        users: vec![
            EmbeddedUser {
                user_id: "196".to_owned(),
                vector: Some(Vector {
                    values: vec![],
                    f16: vec![0x00, 0x3c, 0x00, 0xbc],
                }),
                cache_hit: true,
                source: ProfileSource::Cache as i32,
                error: None,
            },
            EmbeddedUser {
                user_id: "42".to_owned(),
                vector: None,
                cache_hit: false,
                source: ProfileSource::Unspecified as i32,
                error: Some(ItemError {
                    code: 5,
                    message: "users[1].user_id: \"42\" is not in the users index".to_owned(),
                }),
            },
        ],
        dim: 2,
        encoding: VectorEncoding::F16 as i32,
        queue_us: 120,
        compute_us: 85,
        request_id: "batch-7".to_owned(),
    };
    round_trip(&response);

    let streamed = EmbedStreamResponse {
        request_id: "batch-7".to_owned(),
        outcome: Some(v1::embed_stream_response::Outcome::Response(response)),
    };
    round_trip(&streamed);
}

#[test]
fn search_round_trip() {
    let request = SearchRequest {
        model: Some(ModelSpec {
            name: String::new(),
            selector: Some(v1::model_spec::Selector::Version(3)),
        }),
        query: Some(v1::search_request::Query::Seeds(SeedSet {
            user_ids: vec!["1".to_owned(), "2".to_owned()],
            vectors: vec![Vector {
                values: vec![0.5, -0.5],
                f16: vec![],
            }],
        })),
        target: TargetIndex::Users as i32,
        k: 25,
        filter: Some(Filter {
            conditions: vec![AttributeCondition {
                attribute: "occupation".to_owned(),
                op: AttributeOp::In as i32,
                values: vec!["engineer".to_owned(), "scientist".to_owned()],
            }],
            allow_ids: vec![],
            deny_ids: vec!["3".to_owned()],
            exclude_query_user: Some(false),
            exclude_seen_items: false,
        }),
        exact: true,
        include_attributes: true,
        include_vectors: false,
        encoding: VectorEncoding::Unspecified as i32,
        cache: CacheMode::Bypass as i32,
        context: None,
    };
    round_trip(&request);

    let mut attributes = HashMap::new();
    attributes.insert(
        "occupation".to_owned(),
        v1::AttributeValues {
            values: vec!["engineer".to_owned()],
        },
    );
    let response = SearchResponse {
        model: Some(model_ref()),
        target: TargetIndex::Users as i32,
        path: SearchPath::ExactCandidates as i32,
        hits: vec![Hit {
            id: "7".to_owned(),
            score: 0.93,
            attributes,
            title: String::new(),
            vector: None,
        }],
        index_rows: 943,
        candidates: 12,
        ann_fallback: false,
        plan: "filter matches 1.3% of rows: exact over 12 candidates".to_owned(),
        cache_hit: false,
        query_us: 40,
        search_us: 9,
    };
    round_trip(&response);
}

#[test]
fn explain_round_trip() {
    let request = ExplainRequest {
        model: None,
        features: Some(features()),
        target: Some(ExplainTarget {
            kind: Some(v1::explain_target::Kind::Item(ItemTarget {
                item_id: "50".to_owned(),
            })),
        }),
        method: ExplainMethod::Attention as i32,
        top_n: 5,
        cache: CacheMode::Unspecified as i32,
        groups_only: false,
        user_id: String::new(),
        context: None,
    };
    round_trip(&request);

    let token = Token {
        position: 1,
        group: DimensionGroup::Demographic as i32,
        field: "occupation".to_owned(),
        label: "occupation = engineer".to_owned(),
        item_id: String::new(),
        timestamp: 0,
        oov: false,
        missing: false,
    };
    let response = ExplainResponse {
        model: Some(model_ref()),
        method: ExplainMethod::Attention as i32,
        target: request.target.clone(),
        value_kind: ValueKind::AttentionMass as i32,
        base_score: 0.41,
        groups: vec![GroupContribution {
            group: DimensionGroup::Demographic as i32,
            value: 0.3,
            share: 0.3,
            tokens: 4,
        }],
        tokens: vec![TokenContribution {
            token: Some(token.clone()),
            value: 0.12,
            share: 0.12,
        }],
        token_table: vec![token],
        layers: vec![LayerAttention {
            layer: 0,
            heads: vec![HeadAttention {
                head: 0,
                mass: vec![0.25, 0.75],
            }],
            head_mean: vec![0.25, 0.75],
        }],
        forward_passes: 1,
        cache_hit: false,
        queue_us: 3,
        compute_us: 210,
    };
    round_trip(&response);
}

#[test]
fn unset_fields_decode_to_the_documented_defaults() {
    // An empty message on the wire: every enum is UNSPECIFIED (which the
    // contract maps to its default), every oneof unset.
    let request = SearchRequest::decode(&[][..]).expect("empty message decodes");
    assert_eq!(request.target(), TargetIndex::Unspecified);
    assert_eq!(request.encoding(), VectorEncoding::Unspecified);
    assert_eq!(request.cache(), CacheMode::Unspecified);
    assert_eq!(request.k, 0);
    assert!(request.query.is_none());
    assert!(request.model.is_none());

    let filter = Filter::default();
    assert_eq!(filter.exclude_query_user, None, "unset means true");

    let explain = ExplainRequest::default();
    assert_eq!(explain.method(), ExplainMethod::Unspecified);
    assert!(explain.target.is_none());

    // Unknown enum numbers survive decoding as raw values (forward
    // compatibility); the typed getter falls back to the default.
    let raw = EmbedRequest {
        encoding: 99,
        ..Default::default()
    };
    let back = EmbedRequest::decode(raw.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(back.encoding, 99);
    assert_eq!(back.encoding(), VectorEncoding::Unspecified);
}

#[test]
fn enum_string_names_match_the_proto() {
    assert_eq!(SearchPath::Ann.as_str_name(), "SEARCH_PATH_ANN");
    assert_eq!(
        ExplainMethod::from_str_name("EXPLAIN_METHOD_ATTENTION_ROLLOUT"),
        Some(ExplainMethod::AttentionRollout)
    );
    assert_eq!(
        ValueKind::AttentionMass.as_str_name(),
        "VALUE_KIND_ATTENTION_MASS"
    );
}

#[test]
fn track_and_user_round_trip() {
    let request = v1::TrackRequest {
        model: None,
        users: vec![v1::UserTrack {
            user_id: "196".to_owned(),
            events: features().events,
            fields: vec![
                v1::FieldChange {
                    name: "age".to_owned(),
                    change: Some(v1::field_change::Change::Set(FieldValue {
                        kind: Some(v1::field_value::Kind::Number(49.0)),
                    })),
                },
                v1::FieldChange {
                    name: "zip_code".to_owned(),
                    change: Some(v1::field_change::Change::Clear(true)),
                },
            ],
        }],
        allow_partial: true,
        request_id: "batch-1".to_owned(),
    };
    round_trip(&request);
    let response = v1::TrackStreamResponse {
        request_id: "batch-1".to_owned(),
        outcome: Some(v1::track_stream_response::Outcome::Response(
            v1::TrackResponse {
                users: vec![v1::TrackedUser {
                    user_id: "196".to_owned(),
                    stored: 1,
                    duplicates: 1,
                    dropped_too_old: 0,
                    state_version: 7,
                    error: None,
                }],
                request_id: "batch-1".to_owned(),
            },
        )),
    };
    round_trip(&response);
    let user = v1::GetUserResponse {
        user_id: "196".to_owned(),
        state_version: 7,
        fields: features().fields,
        events: features().events,
        next_page_token: "7.100".to_owned(),
        total_events: 150,
        updated_ms: 1_765_000_000_000,
    };
    round_trip(&user);
    assert_eq!(ProfileSource::UserState as i32, 4);
}
