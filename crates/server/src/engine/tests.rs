//! The engine core without a network: Embed (hit, miss, partial failure),
//! Search (filters, exclusions, lookalikes) and Explain (every method and
//! target) on a synthetic model whose indexes are served by an in-memory
//! [`SearchBackend`] — a second backend behind the same trait and factory,
//! so the core is shown to need nothing of the local file backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use profiled_index::{
    BackendFactory, Condition, IndexRole, OpenRequest, QueryResult, SEEN_ITEMS_ATTRIBUTE,
    SearchBackend, SearchHit, SearchParams, SearchPath, TitleSource,
};
use profiled_model::testing::{Rng, SyntheticSpec, random_user, write_synthetic_model};
use profiled_model::{Encoder, Method, UserFeatures, Workspace};
use profiled_store::{Store, StoreConfig};

use super::*;
use crate::config::Config;
use crate::engine::search::SearchInput;

/// One row of an in-memory index.
#[derive(Debug, Clone)]
struct Row {
    id: String,
    vector: Vec<f32>,
    attributes: BTreeMap<String, Vec<String>>,
}

/// A brute-force backend over rows in memory.
struct MemoryBackend {
    rows: Vec<Row>,
    dims: usize,
    titles: Option<Arc<dyn TitleSource>>,
}

impl MemoryBackend {
    fn admits(&self, row: &Row, p: &SearchParams) -> bool {
        let f = &p.filter;
        let has = |a: &str, v: &str| {
            row.attributes
                .get(a)
                .is_some_and(|vs| vs.iter().any(|x| x == v))
        };
        let conditions = f.conditions.iter().all(|c| match c {
            Condition::Equals { attribute, value } => has(attribute, value),
            Condition::In { attribute, values } => values.iter().any(|v| has(attribute, v)),
            Condition::NotIn { attribute, values } => !values.iter().any(|v| has(attribute, v)),
        });
        conditions
            && f.allow_ids.as_ref().is_none_or(|a| a.contains(&row.id))
            && !f.deny_ids.contains(&row.id)
    }
}

impl SearchBackend for MemoryBackend {
    fn name(&self) -> &str {
        "memory"
    }
    fn dims(&self) -> usize {
        self.dims
    }
    fn len(&self) -> usize {
        self.rows.len()
    }
    fn has_ann(&self) -> bool {
        false
    }
    fn search(
        &self,
        queries: &[f32],
        params: &SearchParams,
    ) -> profiled_index::Result<Vec<QueryResult>> {
        for c in &params.filter.conditions {
            let (Condition::Equals { attribute, .. }
            | Condition::In { attribute, .. }
            | Condition::NotIn { attribute, .. }) = c;
            if !self.has_attribute(attribute) {
                return Err(profiled_index::Error::UnknownAttribute(attribute.clone()));
            }
        }
        Ok(queries
            .chunks_exact(self.dims)
            .map(|q| {
                let mut hits: Vec<SearchHit> = self
                    .rows
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| self.admits(r, params))
                    .map(|(i, r)| SearchHit {
                        id: r.id.clone(),
                        row: i as u32,
                        score: r.vector.iter().zip(q).map(|(a, b)| a * b).sum(),
                    })
                    .collect();
                let candidates = hits.len();
                hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
                hits.truncate(params.k);
                QueryResult {
                    hits,
                    path: SearchPath::ExactScan,
                    candidates,
                    ann_visited: None,
                }
            })
            .collect())
    }
    fn vector_of(&self, id: &str) -> profiled_index::Result<Option<(u32, Vec<f32>)>> {
        Ok(self
            .rows
            .iter()
            .position(|r| r.id == id)
            .map(|i| (i as u32, self.rows[i].vector.clone())))
    }
    fn attribute_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| r.attributes.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
    fn has_attribute(&self, attribute: &str) -> bool {
        self.rows
            .iter()
            .any(|r| r.attributes.contains_key(attribute))
    }
    fn attributes_of(
        &self,
        id: &str,
    ) -> profiled_index::Result<Option<BTreeMap<String, Vec<String>>>> {
        Ok(self
            .rows
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.attributes.clone()))
    }
    fn title_of(&self, id: &str) -> Option<String> {
        self.titles.as_ref()?.title_of(id)
    }
    fn bytes(&self) -> u64 {
        (self.rows.len() * self.dims * 4) as u64
    }
}

/// Serves the rows it was given, for every version.
#[derive(Debug)]
struct MemoryFactory {
    items: Vec<Row>,
    users: Vec<Row>,
}

impl BackendFactory for MemoryFactory {
    fn name(&self) -> &str {
        "memory"
    }
    fn open(&self, r: OpenRequest<'_>) -> profiled_index::Result<Option<Arc<dyn SearchBackend>>> {
        let rows = match r.role {
            IndexRole::Items => self.items.clone(),
            IndexRole::Users => self.users.clone(),
        };
        Ok(Some(Arc::new(MemoryBackend {
            rows,
            dims: r.dims,
            titles: r.titles,
        })))
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn profile(enc: &Encoder, u: &UserFeatures) -> Vec<f32> {
    let mut ws = Workspace::new();
    enc.forward_batch(std::slice::from_ref(u), &mut ws)
        .unwrap()
        .to_vecs()
        .remove(0)
}

/// A user of the synthetic schema with a fixed occupation.
fn user(rng: &mut Rng, occupation: &str) -> UserFeatures {
    let mut u = random_user(rng, 30, 12);
    u.fields.insert(
        "occupation".into(),
        profiled_model::FieldValue::Categorical(occupation.into()),
    );
    u
}

struct Fixture {
    _tmp: tempfile::TempDir,
    engine: Engine,
    enc: Encoder,
    users: Vec<(String, UserFeatures)>,
}

/// A synthetic model at version 1, items and users served from memory: every
/// item (attribute `parity` = even/odd), and 40 users with their occupation
/// and seen items as attributes.
async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models");
    let dir = repo.join("m").join("1");
    write_synthetic_model(&dir, &SyntheticSpec::default()).unwrap();
    let enc = Encoder::load(&dir).unwrap();
    let dim = enc.dim();
    let items: Vec<Row> = enc
        .item_ids()
        .iter()
        .enumerate()
        .map(|(k, id)| Row {
            id: id.clone(),
            vector: unit(&enc.item_vectors()[k * dim..(k + 1) * dim]),
            attributes: BTreeMap::from([(
                "parity".to_string(),
                vec![if k % 2 == 0 { "even" } else { "odd" }.to_string()],
            )]),
        })
        .collect();
    let mut rng = Rng::new(7);
    let occupations = ["engineer", "student", "writer", "artist"];
    let users: Vec<(String, UserFeatures)> = (0..40)
        .map(|i| (format!("u{i}"), user(&mut rng, occupations[i % 4])))
        .collect();
    let user_rows = users
        .iter()
        .enumerate()
        .map(|(i, (id, u))| {
            let mut attributes = BTreeMap::from([(
                "occupation".to_string(),
                vec![occupations[i % 4].to_string()],
            )]);
            let mut seen: Vec<String> = u.events.iter().map(|e| e.item.clone()).collect();
            seen.sort();
            seen.dedup();
            attributes.insert(SEEN_ITEMS_ATTRIBUTE.to_string(), seen);
            Row {
                id: id.clone(),
                vector: profile(&enc, u),
                attributes,
            }
        })
        .collect();
    let mut cfg = StoreConfig::new(&repo);
    cfg.indexes = Arc::new(MemoryFactory {
        items,
        users: user_rows,
    });
    let store = Store::new(cfg);
    store.scan().await.unwrap();
    let mut config = Config::default();
    config.batcher.workers = 1;
    Fixture {
        _tmp: tmp,
        engine: Engine::new(store, config),
        enc,
        users,
    }
}

fn embed_query(users: Vec<Result<UserQuery<UserFeatures>, ApiError>>) -> EmbedQuery<UserFeatures> {
    EmbedQuery {
        model: ModelSel::default(),
        users,
        cache: CacheUse::Use,
        allow_partial: false,
    }
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_misses_then_hits_and_answers_partial_failures_in_place() {
    let f = fixture().await;
    let (id0, u0) = f.users[0].clone();
    let mut rng = Rng::new(99);
    let fresh = user(&mut rng, "doctor");
    let want = profile(&f.enc, &fresh);

    // A miss (computed) and a stored user (users index).
    let q = embed_query(vec![
        Ok(UserQuery::Features(fresh.clone())),
        Ok(UserQuery::User(UserRef::id(id0.clone()))),
    ]);
    let e = f.engine.embed(q.clone(), None).await.unwrap();
    assert_eq!(
        (e.generation.model.as_str(), e.generation.version),
        ("m", 1)
    );
    let (p, s) = e.users[0].result.as_ref().unwrap();
    assert_eq!(*s, ProfileSource::Computed);
    assert!(!p.cache_hit);
    assert!(close(&p.vector, &want));
    let (p, s) = e.users[1].result.as_ref().unwrap();
    assert_eq!(*s, ProfileSource::UsersIndex);
    assert_eq!(e.users[1].user_id, id0);
    assert!(close(&p.vector, &profile(&f.enc, &u0)));

    // The same features again: a hit with the same vector.
    let e = f.engine.embed(q, None).await.unwrap();
    let (p, s) = e.users[0].result.as_ref().unwrap();
    assert_eq!(*s, ProfileSource::Cache);
    assert!(p.cache_hit && close(&p.vector, &want));

    // BYPASS computes again.
    let mut q = embed_query(vec![Ok(UserQuery::Features(fresh.clone()))]);
    q.cache = CacheUse::Bypass;
    let e = f.engine.embed(q, None).await.unwrap();
    assert_eq!(
        e.users[0].result.as_ref().unwrap().1,
        ProfileSource::Computed
    );

    // Partial: an edge error and an unknown user stay in their slots.
    let users = vec![
        Ok(UserQuery::Features(fresh.clone())),
        Err(ApiError::invalid("users[1].source", "set one")),
        Ok(UserQuery::User(UserRef::id("nobody"))),
    ];
    let mut q = embed_query(users.clone());
    q.allow_partial = true;
    let e = f.engine.embed(q, None).await.unwrap();
    assert!(e.users[0].result.is_ok());
    assert!(
        matches!(&e.users[1].result, Err(ApiError::Invalid { field, .. }) if field == "users[1].source")
    );
    match &e.users[2].result {
        Err(ApiError::NotFound(m)) => assert!(
            m.starts_with("users[2].user_id: unknown user \"nobody\""),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // Without allow_partial the first error fails the call.
    let err = f.engine.embed(embed_query(users), None).await.unwrap_err();
    assert!(matches!(err, ApiError::Invalid { .. }), "{err:?}");
    // Limits and an empty call.
    assert!(matches!(
        f.engine.embed(embed_query(vec![]), None).await,
        Err(ApiError::Invalid { .. })
    ));
    let many = (0..=f.engine.limits().max_users_per_call)
        .map(|_| Ok(UserQuery::Features(fresh.clone())))
        .collect();
    assert!(matches!(
        f.engine.embed(embed_query(many), None).await,
        Err(ApiError::Limit {
            limit: "max_users_per_call",
            ..
        })
    ));
}

fn search_query(input: SearchInput<UserFeatures>, target: IndexRole) -> SearchQuery<UserFeatures> {
    SearchQuery {
        model: ModelSel::default(),
        target,
        input,
        k: 5,
        exact: false,
        filter: SearchFilter::default(),
        include_attributes: false,
        include_vectors: false,
        cache: CacheUse::Use,
    }
}

/// The ids of the best `k` rows of `rows` for `q` (brute force), skipping `skip`.
fn best(
    rows: &[(String, Vec<f32>)],
    q: &[f32],
    k: usize,
    skip: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut s: Vec<(f32, usize)> = rows
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| !skip(id))
        .map(|(i, (_, v))| (v.iter().zip(q).map(|(a, b)| a * b).sum(), i))
        .collect();
    s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    s.iter().take(k).map(|&(_, i)| rows[i].0.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_filters_exclusions_and_lookalikes_run_on_any_backend() {
    let f = fixture().await;
    let dim = f.enc.dim();
    let items: Vec<(String, Vec<f32>)> = f
        .enc
        .item_ids()
        .iter()
        .enumerate()
        .map(|(k, id)| {
            (
                id.clone(),
                unit(&f.enc.item_vectors()[k * dim..(k + 1) * dim]),
            )
        })
        .collect();
    let users: Vec<(String, Vec<f32>)> = f
        .users
        .iter()
        .map(|(id, u)| (id.clone(), profile(&f.enc, u)))
        .collect();

    // Items for features, seen items excluded, attributes and titles.
    let (_, u) = f.users[3].clone();
    let seen: Vec<String> = u.events.iter().map(|e| e.item.clone()).collect();
    let mut q = search_query(SearchInput::Features(u.clone()), IndexRole::Items);
    q.filter.exclude_seen_items = true;
    q.include_attributes = true;
    q.include_vectors = true;
    let found = f.engine.search(q, None).await.unwrap();
    let want = best(&items, &profile(&f.enc, &u), 5, &|id| {
        seen.iter().any(|s| s == id)
    });
    let got: Vec<String> = found.hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(got, want);
    for h in &found.hits {
        assert!(!seen.contains(&h.id));
        assert_eq!(h.attributes.len(), 1, "{:?}", h.attributes);
        // The title from the model's vocabulary (some synthetic items have none).
        let k = f.enc.tokenizer().item_index(&h.id).unwrap() as usize;
        let title = f.enc.metadata().schema.items.titles[k].clone();
        assert_eq!(h.title, title.unwrap_or_default());
        assert!(close(
            h.vector.as_ref().unwrap(),
            &items.iter().find(|(i, _)| *i == h.id).unwrap().1
        ));
    }
    assert!(found.hits.iter().any(|h| h.title.starts_with("Movie ")));
    assert_eq!(found.path, SearchPath::ExactScan);
    assert_eq!(found.index_rows, items.len() as u64);

    // An attribute filter, allow and deny lists.
    let mut q = search_query(SearchInput::Vector(items[0].1.clone()), IndexRole::Items);
    q.filter.conditions = vec![Condition::Equals {
        attribute: "parity".into(),
        value: "even".into(),
    }];
    q.filter.deny_ids = vec![items[0].0.clone()];
    q.k = 30;
    let found = f.engine.search(q, None).await.unwrap();
    assert_eq!(found.hits.len(), items.len() / 2 - 1);
    assert!(found.hits.iter().all(|h| h.id != items[0].0));
    let mut q = search_query(SearchInput::Vector(items[0].1.clone()), IndexRole::Items);
    q.filter.allow_ids = vec![items[4].0.clone(), items[7].0.clone()];
    let found = f.engine.search(q, None).await.unwrap();
    let mut ids: Vec<String> = found.hits.iter().map(|h| h.id.clone()).collect();
    ids.sort();
    let mut want = vec![items[4].0.clone(), items[7].0.clone()];
    want.sort();
    assert_eq!(ids, want);
    // An unknown attribute is the caller's mistake, named.
    let mut q = search_query(SearchInput::Vector(items[0].1.clone()), IndexRole::Items);
    q.filter.conditions = vec![Condition::In {
        attribute: "colour".into(),
        values: vec!["red".into()],
    }];
    match f.engine.search(q, None).await {
        Err(ApiError::Invalid { field, message }) => {
            assert_eq!(field, "filter.conditions");
            assert!(message.contains("\"colour\""), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // Lookalikes of one user: not themselves, in score order.
    let q = search_query(SearchInput::User(UserRef::id("u5")), IndexRole::Users);
    let found = f.engine.search(q, None).await.unwrap();
    let got: Vec<String> = found.hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(got, best(&users, &users[5].1, 5, &|id| id == "u5"));
    // ... of a seed set: the normalised centroid, seeds excluded.
    let seeds = Seeds {
        user_ids: vec!["u1".into(), "u2".into()],
        vectors: vec![users[9].1.iter().map(|x| x * 3.0).collect()],
    };
    let centroid = profiled_index::seed_centroid(&[&users[1].1, &users[2].1, &users[9].1]).unwrap();
    let mut q = search_query(SearchInput::Seeds(seeds), IndexRole::Users);
    q.filter.conditions = vec![Condition::NotIn {
        attribute: "occupation".into(),
        values: vec!["writer".into()],
    }];
    let found = f.engine.search(q, None).await.unwrap();
    let writers = |id: &str| id.trim_start_matches('u').parse::<usize>().unwrap() % 4 == 2;
    let got: Vec<String> = found.hits.iter().map(|h| h.id.clone()).collect();
    assert_eq!(
        got,
        best(&users, &centroid, 5, &|id| id == "u1"
            || id == "u2"
            || writers(id))
    );
    // exclude_query_user = false keeps the seed itself (it ranks first).
    let mut q = search_query(SearchInput::User(UserRef::id("u5")), IndexRole::Users);
    q.filter.exclude_query_user = false;
    let found = f.engine.search(q, None).await.unwrap();
    assert_eq!(found.hits[0].id, "u5");
    // Items for a user id: their stored history is excluded.
    let mut q = search_query(SearchInput::User(UserRef::id("u3")), IndexRole::Items);
    q.filter.exclude_seen_items = true;
    q.k = 30;
    let found = f.engine.search(q, None).await.unwrap();
    assert!(found.hits.iter().all(|h| !seen.contains(&h.id)));
    // Bad queries: a wrong dimension, a zero vector, an unknown seed.
    let bad = f
        .engine
        .search(
            search_query(SearchInput::Vector(vec![1.0; dim + 1]), IndexRole::Items),
            None,
        )
        .await;
    assert!(
        matches!(bad, Err(ApiError::Invalid { ref field, .. }) if field == "vector"),
        "{bad:?}"
    );
    let bad = f
        .engine
        .search(
            search_query(SearchInput::Vector(vec![0.0; dim]), IndexRole::Items),
            None,
        )
        .await;
    assert!(matches!(bad, Err(ApiError::Invalid { .. })), "{bad:?}");
    let bad = f
        .engine
        .search(
            search_query(
                SearchInput::Seeds(Seeds {
                    user_ids: vec!["u1".into(), "ghost".into()],
                    vectors: vec![],
                }),
                IndexRole::Users,
            ),
            None,
        )
        .await;
    assert!(
        matches!(bad, Err(ApiError::NotFound(ref m)) if m.starts_with("seeds.user_ids[1]: unknown user \"ghost\"")),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_every_method_and_target() {
    let f = fixture().await;
    let (_, u) = f.users[6].clone();
    let item = f.enc.item_ids()[2].clone();
    let targets = [
        ExplainTarget::Profile,
        ExplainTarget::Item(item.clone()),
        ExplainTarget::Users(Seeds {
            user_ids: vec!["u1".into(), "u2".into()],
            vectors: vec![],
        }),
    ];
    let p0 = profile(&f.enc, &u);
    let fields = f.enc.metadata().schema.fields.len();
    for method in [
        Method::Occlusion,
        Method::AttentionRollout,
        Method::Attention,
    ] {
        for target in &targets {
            let q = ExplainQuery {
                model: ModelSel::default(),
                user: UserQuery::Features(u.clone()),
                target: target.clone(),
                method,
                groups_only: false,
                top_n: 3,
                cache: CacheUse::Bypass,
            };
            let e = f.engine.explain(q, None).await.unwrap();
            let ex = &e.explanation;
            assert_eq!(ex.method, method);
            assert_eq!(e.top_n, 3);
            assert!(close(&ex.profile, &p0), "{method:?} {target:?}");
            // The whole token table, from the model.
            assert!(ex.table.len() >= fields);
            assert!(ex.table.iter().enumerate().all(|(i, t)| t.position == i));
            assert!(!ex.groups.is_empty());
            let expected_score = match target {
                ExplainTarget::Profile if method == Method::Occlusion => 1.0,
                ExplainTarget::Profile => 1.0,
                ExplainTarget::Item(id) => {
                    profiled_model::cosine(&p0, f.enc.item_vector(id).unwrap())
                }
                ExplainTarget::Users(_) => {
                    let s1 = profile(&f.enc, &f.users[1].1);
                    let s2 = profile(&f.enc, &f.users[2].1);
                    profiled_model::cosine(
                        &p0,
                        &profiled_index::seed_centroid(&[&s1, &s2]).unwrap(),
                    )
                }
            };
            assert!(
                (ex.score - expected_score).abs() < 1e-4,
                "{method:?} {target:?}: {} vs {expected_score}",
                ex.score
            );
            if method == Method::Attention {
                assert_eq!(ex.layers.len(), f.enc.metadata().architecture.layers);
            }
        }
    }
    // Unknown item: NOT_FOUND naming the field.
    let q = ExplainQuery {
        model: ModelSel::default(),
        user: UserQuery::Features(u.clone()),
        target: ExplainTarget::Item("no-such-item".into()),
        method: Method::Occlusion,
        groups_only: true,
        top_n: 0,
        cache: CacheUse::Use,
    };
    assert!(
        matches!(f.engine.explain(q, None).await, Err(ApiError::NotFound(ref m)) if m.starts_with("target.item.item_id"))
    );
    // With USE, the unmasked profile fills the cache: Embed is then a hit.
    let q = ExplainQuery {
        model: ModelSel::default(),
        user: UserQuery::Features(u.clone()),
        target: ExplainTarget::Profile,
        method: Method::Occlusion,
        groups_only: true,
        top_n: 0,
        cache: CacheUse::Use,
    };
    let e = f.engine.explain(q, None).await.unwrap();
    assert!(e.explanation.tokens.is_empty());
    let hit = f
        .engine
        .embed(embed_query(vec![Ok(UserQuery::Features(u.clone()))]), None)
        .await
        .unwrap();
    let (p, s) = hit.users[0].result.as_ref().unwrap();
    assert_eq!(*s, ProfileSource::Cache);
    assert!(close(&p.vector, &p0));
}

/// Live state through the core (a real embedded store in a temporary
/// directory): Track, then the user by id resolves to it — the profile of
/// the same features — ahead of the users index snapshot; a state written
/// for another schema is read leniently; erasure hides the snapshot too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_ids_resolve_to_live_state_first() {
    use profiled_model::FieldValue;
    use profiled_state::{FieldUpdate, StoredEvent, UserUpdate};
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let store =
        profiled_state::embedded::EmbeddedStore::open(&profiled_state::embedded::EmbeddedConfig {
            dir: dir.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap();
    let engine = f.engine.with_state(Arc::new(store));
    let (id, u) = f.users[3].clone();
    let track = |events: &UserFeatures, fields: Vec<FieldUpdate>| UserUpdate {
        user_id: id.clone(),
        events: events
            .events
            .iter()
            .map(|e| StoredEvent {
                item: e.item.clone(),
                timestamp: e.timestamp,
                rating: e.rating,
                event_id: None,
            })
            .collect(),
        fields,
    };
    // Before any Track: the users index snapshot.
    let by_id = engine
        .embed(
            embed_query(vec![Ok(UserQuery::User(UserRef::id(id.clone())))]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        by_id.users[0].result.as_ref().unwrap().1,
        ProfileSource::UsersIndex
    );

    // The user's features, plus a field the model does not read and a
    // value of the wrong kind (a state written for another schema).
    let mut fields: Vec<FieldUpdate> = u
        .fields
        .iter()
        .map(|(k, v)| FieldUpdate::Set(k.clone(), v.clone()))
        .collect();
    fields.push(FieldUpdate::Set(
        "shoe_size".into(),
        FieldValue::Number(44.0),
    ));
    let tracked = engine
        .track(
            TrackQuery {
                model: ModelSel::default(),
                users: vec![track(&u, fields)],
                allow_partial: false,
            },
            None,
        )
        .await
        .unwrap();
    let applied = tracked[0].result.as_ref().unwrap();
    assert_eq!(applied.stored as usize, {
        let mut keys: Vec<(String, i64)> = u
            .events
            .iter()
            .map(|e| (e.item.clone(), e.timestamp))
            .collect();
        keys.sort();
        keys.dedup();
        keys.len()
    });
    let live = engine
        .embed(
            embed_query(vec![Ok(UserQuery::User(UserRef::id(id.clone())))]),
            None,
        )
        .await
        .unwrap();
    let (p, source) = live.users[0].result.as_ref().unwrap();
    assert_eq!(*source, ProfileSource::UserState);
    // Duplicate (item, timestamp) events are stored once: compare with the
    // features the state holds.
    let state = engine.state().unwrap().get(&id).await.unwrap().unwrap();
    let g = engine.resolve(&ModelSel::default()).unwrap();
    let read = users::state_features(&g, &state);
    assert!(
        !read.fields.contains_key("shoe_size"),
        "unknown fields are ignored"
    );
    assert_eq!(read.fields, u.fields);
    assert!(close(&p.vector, &profile(&f.enc, &read)));

    // A field of the wrong kind for this schema is left out (the model's
    // "missing" token), not an error.
    let mut wrong = state.clone();
    wrong.fields.insert(
        "occupation".into(),
        FieldValue::Tags(vec![("x".into(), 1.0)]),
    );
    assert!(
        !users::state_features(&g, &wrong)
            .fields
            .contains_key("occupation")
    );

    // Erasure: by id is NOT_FOUND, the snapshot included.
    assert!(engine.delete_user(&id, None).await.unwrap());
    let gone = engine
        .embed(
            embed_query(vec![Ok(UserQuery::User(UserRef::id(id.clone())))]),
            None,
        )
        .await;
    assert!(matches!(gone, Err(ApiError::NotFound(m)) if m.contains("erased")));
}
