//! What to send: user pools, call shapes, weighted mixes, cache-hit ratio.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use profiled_proto::v1 as pb;
use profiled_train::data::{Dataset, FieldValue as DsValue};

use super::target::Call;
use super::{Error, Result};
use crate::SplitMix;

/// Users to draw requests from (proto features, ready to clone).
#[derive(Debug, Clone, Default)]
pub struct UserPool {
    /// The users.
    pub users: Vec<pb::UserFeatures>,
}

/// `profiled_model::UserFeatures` as the proto message.
pub use profiled_server::convert::to_proto;

impl UserPool {
    /// Random users of the synthetic test model
    /// (`profiled_model::testing`): items `1..=items`, up to `2 × max_events`
    /// events each.
    pub fn synthetic_model(seed: u64, n: usize, items: usize, max_events: usize) -> UserPool {
        let mut rng = profiled_model::testing::Rng::new(seed);
        let users = (0..n)
            .map(|i| {
                let mut u = profiled_model::testing::random_user(&mut rng, items, max_events);
                u.user_id = Some(format!("lg{i}"));
                to_proto(&u)
            })
            .collect();
        UserPool { users }
    }

    /// The users of a dataset with their full history (fields as given:
    /// tokens categorical, floats numbers, token lists tags), at most `max`.
    pub fn from_dataset(ds: &Dataset, max: usize) -> UserPool {
        let n = ds.users.len().min(max);
        let mut events: Vec<Vec<pb::BehaviourEvent>> = vec![Vec::new(); n];
        for e in &ds.interactions {
            if let (Some(v), Some(item)) = (
                events.get_mut(e.user as usize),
                ds.items.get(e.item as usize),
            ) {
                v.push(pb::BehaviourEvent {
                    item_id: item.id.clone(),
                    timestamp: e.timestamp,
                    rating: e.rating,
                    event_id: String::new(),
                });
            }
        }
        let users = ds
            .users
            .iter()
            .zip(events)
            .map(|(u, events)| {
                use pb::field_value::Kind;
                let fields: BTreeMap<String, pb::FieldValue> = u
                    .fields
                    .iter()
                    .map(|(k, v)| {
                        let kind = match v {
                            DsValue::Token(s) => Kind::Categorical(s.clone()),
                            DsValue::Float(x) => Kind::Number(*x),
                            DsValue::TokenSeq(t) => Kind::Tags(pb::TagList {
                                tags: t
                                    .iter()
                                    .map(|tag| pb::WeightedTag {
                                        tag: tag.clone(),
                                        weight: None,
                                    })
                                    .collect(),
                            }),
                        };
                        (k.clone(), pb::FieldValue { kind: Some(kind) })
                    })
                    .collect();
                pb::UserFeatures {
                    user_id: u.id.clone(),
                    fields: fields.into_iter().collect(),
                    events,
                }
            })
            .collect();
        UserPool { users }
    }

    /// Makes the users fit a model's inputs (`kinds`: input name →
    /// `pb::FieldKind` number, e.g. from [`Target::input_kinds`]): fields the
    /// model has no input for are dropped, numbers become categorical text
    /// and numeric text becomes numbers where the model wants the other kind.
    /// Returns the number of fields dropped.
    ///
    /// [`Target::input_kinds`]: super::Target::input_kinds
    pub fn fit(&mut self, kinds: &std::collections::HashMap<String, i32>) -> usize {
        use pb::field_value::Kind;
        let (cat, num) = (
            pb::FieldKind::Categorical as i32,
            pb::FieldKind::Number as i32,
        );
        let mut dropped = 0;
        for u in &mut self.users {
            let before = u.fields.len();
            u.fields.retain(|k, _| kinds.contains_key(k));
            dropped += before - u.fields.len();
            for (k, v) in u.fields.iter_mut() {
                let want = kinds.get(k).copied().unwrap_or_default();
                v.kind = match v.kind.take() {
                    Some(Kind::Categorical(s)) if want == num => match s.trim().parse::<f64>() {
                        Ok(x) => Some(Kind::Number(x)),
                        Err(_) => Some(Kind::Categorical(s)),
                    },
                    Some(Kind::Number(x)) if want == cat => Some(Kind::Categorical(format!("{x}"))),
                    other => other,
                };
            }
        }
        dropped
    }

    /// A dataset by name or folder (`profiled_train::resolve_dataset`: an
    /// atomic-files folder, `synthetic[:SEED]`, `synthetic-small[:SEED]`, or a
    /// fetched dataset under `data_dir`).
    pub fn load(name_or_dir: &str, data_dir: &std::path::Path, max: usize) -> Result<UserPool> {
        let ds = profiled_train::resolve_dataset(name_or_dir, data_dir)
            .map_err(|e| Error::Users(format!("{name_or_dir}: {e}")))?;
        let pool = UserPool::from_dataset(&ds, max);
        if pool.users.is_empty() {
            return Err(Error::Users(format!("{name_or_dir} has no users")));
        }
        Ok(pool)
    }
}

/// Embed calls.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedSpec {
    /// Users per call.
    pub batch: usize,
    /// Ask for f16 vectors.
    pub f16: bool,
    /// Ask by id for users of the tracked population (live state) instead
    /// of sending pool users' features.
    pub tracked: bool,
}

/// Track calls: events for a user population whose activity follows a
/// Zipf law (a few users get most events).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackSpec {
    /// Events per call (spread over the users drawn for them).
    pub events: usize,
}

/// The tracked population: `users` ids `t0`…, ranked by a Zipf law with
/// exponent `s` (rank 0 the most active).
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Zipf(`s`) over `n` ranks.
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n.max(1))
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    /// The rank for a uniform `u` in `[0, 1)`.
    pub fn rank(&self, u: f64) -> usize {
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }

    /// The id of a rank.
    pub fn user_id(rank: usize) -> String {
        format!("t{rank}")
    }
}

/// The query of a Search call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchQuery {
    /// Features of a pool user (the profile goes through the hot cache).
    Features,
    /// A known user id (stored profile).
    UserId,
    /// A seed set of known user ids (lookalikes).
    Seeds,
}

/// Search calls.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpec {
    /// The query kind.
    pub query: SearchQuery,
    /// Search the users index (lookalikes) instead of items.
    pub users_index: bool,
    /// Hits wanted.
    pub k: u32,
    /// Attribute filter `(attribute, values)` (IN), when set.
    pub filter: Option<(String, Vec<String>)>,
    /// Seeds per seed set.
    pub seed_size: usize,
}

/// Explain calls.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainSpec {
    /// `pb::ExplainMethod` number.
    pub method: i32,
    /// Occlusion of whole groups only.
    pub groups_only: bool,
    /// Tokens returned.
    pub top_n: u32,
}

/// One call shape of a mix.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// Embed.
    Embed(EmbedSpec),
    /// Search.
    Search(SearchSpec),
    /// Explain.
    Explain(ExplainSpec),
    /// Track (live user state).
    Track(TrackSpec),
}

impl Spec {
    /// Parses `embed[:batch=N,f16]`, `search[:query=features|user|seeds,
    /// index=items|users,k=N,filter=ATTR=V1|V2,seeds=N]`,
    /// `explain[:method=occlusion|rollout|attention,groups,top=N]`,
    /// `track[:events=N]`; `embed:tracked` asks by id for tracked users.
    pub fn parse(s: &str) -> Result<Spec> {
        let (kind, opts) = s.split_once(':').unwrap_or((s, ""));
        let opts: Vec<(&str, &str)> = opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(|o| o.split_once('=').unwrap_or((o, "")))
            .collect();
        let bad = |o: &str| Error::Config(format!("workload {s:?}: unknown option {o:?}"));
        let num = |o: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| Error::Config(format!("workload {s:?}: {o}={v:?} is not a number")))
        };
        match kind {
            "embed" => {
                let mut e = EmbedSpec {
                    batch: 1,
                    f16: false,
                    tracked: false,
                };
                for (o, v) in opts {
                    match o {
                        "batch" => e.batch = num(o, v)?.max(1) as usize,
                        "f16" => e.f16 = true,
                        "tracked" => e.tracked = true,
                        _ => return Err(bad(o)),
                    }
                }
                Ok(Spec::Embed(e))
            }
            "search" => {
                let mut q = SearchSpec {
                    query: SearchQuery::Features,
                    users_index: false,
                    k: 10,
                    filter: None,
                    seed_size: 5,
                };
                for (o, v) in opts {
                    match o {
                        "query" => {
                            q.query = match v {
                                "features" => SearchQuery::Features,
                                "user" => SearchQuery::UserId,
                                "seeds" => SearchQuery::Seeds,
                                _ => {
                                    return Err(Error::Config(format!(
                                        "workload {s:?}: query={v:?}: use features, user or seeds"
                                    )));
                                }
                            }
                        }
                        "index" => {
                            q.users_index = match v {
                                "items" => false,
                                "users" => true,
                                _ => {
                                    return Err(Error::Config(format!(
                                        "workload {s:?}: index={v:?}: use items or users"
                                    )));
                                }
                            }
                        }
                        "k" => q.k = num(o, v)? as u32,
                        "seeds" => q.seed_size = num(o, v)?.max(1) as usize,
                        "filter" => {
                            let (a, vals) = v.split_once('=').ok_or_else(|| {
                                Error::Config(format!(
                                    "workload {s:?}: filter={v:?}: use filter=ATTR=V1|V2"
                                ))
                            })?;
                            q.filter = Some((
                                a.to_string(),
                                vals.split('|').map(str::to_string).collect(),
                            ));
                        }
                        _ => return Err(bad(o)),
                    }
                }
                Ok(Spec::Search(q))
            }
            "explain" => {
                let mut x = ExplainSpec {
                    method: pb::ExplainMethod::Occlusion as i32,
                    groups_only: false,
                    top_n: 10,
                };
                for (o, v) in opts {
                    match o {
                        "method" => {
                            x.method = match v {
                                "occlusion" => pb::ExplainMethod::Occlusion,
                                "rollout" => pb::ExplainMethod::AttentionRollout,
                                "attention" => pb::ExplainMethod::Attention,
                                _ => {
                                    return Err(Error::Config(format!(
                                        "workload {s:?}: method={v:?}: use occlusion, rollout or attention"
                                    )));
                                }
                            } as i32
                        }
                        "groups" => x.groups_only = true,
                        "top" => x.top_n = num(o, v)? as u32,
                        _ => return Err(bad(o)),
                    }
                }
                Ok(Spec::Explain(x))
            }
            "track" => {
                let mut t = TrackSpec { events: 100 };
                for (o, v) in opts {
                    match o {
                        "events" => t.events = num(o, v)?.max(1) as usize,
                        _ => return Err(bad(o)),
                    }
                }
                Ok(Spec::Track(t))
            }
            _ => Err(Error::Config(format!(
                "workload {s:?}: unknown kind {kind:?} (use embed, search, explain or track)"
            ))),
        }
    }
}

/// A weighted mix of call shapes over a user pool.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Model name (empty = the server's default model).
    pub model: String,
    /// Users.
    pub pool: Arc<UserPool>,
    /// Known user ids (users index) for Search by user id and seed sets.
    pub known_users: Arc<Vec<String>>,
    /// Fraction of users sent unchanged (cache hits once warm); the rest are
    /// made unique (always cache misses).
    pub hit_ratio: f64,
    /// `(weight, shape)`.
    pub mix: Vec<(u32, Spec)>,
    /// The tracked population (Track and `embed:tracked`).
    pub tracked: Arc<Zipf>,
}

impl Workload {
    /// Parses a mix: `SPEC[*WEIGHT][;SPEC[*WEIGHT]...]`, e.g.
    /// `embed*8;search:query=user*1;explain:groups*1`.
    pub fn parse_mix(s: &str) -> Result<Vec<(u32, Spec)>> {
        let mut out = Vec::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (spec, w) = match part.rsplit_once('*') {
                Some((spec, w)) => (
                    spec,
                    w.parse::<u32>().map_err(|_| {
                        Error::Config(format!("mix {part:?}: weight {w:?} is not a number"))
                    })?,
                ),
                None => (part, 1),
            };
            out.push((w, Spec::parse(spec)?));
        }
        if out.is_empty() || out.iter().all(|(w, _)| *w == 0) {
            return Err(Error::Config(format!(
                "mix {s:?}: no call shape with a weight > 0"
            )));
        }
        Ok(out)
    }

    /// Checks that the workload can be generated.
    pub fn validate(&self) -> Result<()> {
        if self.pool.users.is_empty() {
            return Err(Error::Config("the user pool is empty".into()));
        }
        if !(0.0..=1.0).contains(&self.hit_ratio) {
            return Err(Error::Config(format!(
                "hit ratio {} is not in [0, 1]",
                self.hit_ratio
            )));
        }
        let needs_known = self
            .mix
            .iter()
            .any(|(_, s)| matches!(s, Spec::Search(q) if q.query != SearchQuery::Features));
        if needs_known && self.known_users.is_empty() {
            return Err(Error::Config(
                "search by user id or seeds needs known user ids (--known-users)".into(),
            ));
        }
        Ok(())
    }

    /// Embed calls sending every pool user once (batches of 64), to fill the
    /// hot cache before a run with a hit ratio.
    pub fn warmup_calls(&self) -> Vec<pb::EmbedRequest> {
        self.pool
            .users
            .chunks(64)
            .map(|c| pb::EmbedRequest {
                model: Some(self.model_spec()),
                users: c
                    .iter()
                    .map(|u| pb::UserInput {
                        source: Some(pb::user_input::Source::Features(u.clone())),
                        context: None,
                    })
                    .collect(),
                ..Default::default()
            })
            .collect()
    }

    fn model_spec(&self) -> pb::ModelSpec {
        pb::ModelSpec {
            name: self.model.clone(),
            selector: None,
        }
    }
}

/// Makes the calls of a workload. Clones share the unique-miss counter, so
/// misses stay unique across streams; each clone draws its own random
/// sequence after [`Generator::fork`].
#[derive(Debug, Clone)]
pub struct Generator {
    w: Arc<Workload>,
    rng: SplitMix,
    counter: Arc<AtomicU64>,
    salt: i64,
    total_weight: u32,
    /// Seconds of the first tracked event: a month ago, so that a run's
    /// events (one second apart, in send order) never reach the future.
    track_base: i64,
}

impl Generator {
    /// A generator of `w` with `seed`.
    pub fn new(w: Workload, seed: u64) -> Result<Generator> {
        w.validate()?;
        let total_weight = w.mix.iter().map(|(x, _)| *x).sum();
        // Unique misses across runs against the same server: offset by the
        // wall clock in microseconds (runs are further apart than they send).
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| (d.as_micros() % 1_000_000_000_000) as i64);
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Ok(Generator {
            w: Arc::new(w),
            rng: SplitMix::new(seed),
            counter: Arc::new(AtomicU64::new(0)),
            salt,
            total_weight,
            track_base: now_s - 30 * 86_400 + (salt % 1_000_000),
        })
    }

    /// A clone with its own random sequence.
    pub fn fork(&self, stream: u64) -> Generator {
        let mut g = self.clone();
        g.rng =
            SplitMix::new(self.rng.clone().next_u64() ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        g
    }

    /// The workload.
    pub fn workload(&self) -> &Workload {
        &self.w
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.rng.next_u64() >> 11) % n.max(1) as u64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A pool user, unchanged (hit) with probability `hit_ratio`, else a
    /// unique variant (its newest event moved to a time no other call uses).
    pub fn user(&mut self) -> pb::UserFeatures {
        let i = self.below(self.w.pool.users.len());
        let mut u = self.w.pool.users[i].clone();
        if !self.chance(self.w.hit_ratio) {
            let k = self.salt + self.counter.fetch_add(1, Ordering::Relaxed) as i64;
            match u.events.iter_mut().max_by_key(|e| e.timestamp) {
                Some(e) => e.timestamp = e.timestamp.saturating_add(1 + k),
                None => u.events.push(pb::BehaviourEvent {
                    item_id: "loadgen".into(),
                    timestamp: k,
                    rating: None,
                    event_id: String::new(),
                }),
            }
        }
        u
    }

    fn known(&mut self) -> String {
        let i = self.below(self.w.known_users.len());
        self.w.known_users[i].clone()
    }

    /// The next call.
    pub fn next_call(&mut self) -> Call {
        let mut pick = self.below(self.total_weight as usize) as u32;
        let mut spec = &self.w.mix[0].1;
        for (wt, s) in &self.w.mix {
            if pick < *wt {
                spec = s;
                break;
            }
            pick -= wt;
        }
        let spec = spec.clone();
        let model = Some(self.w.model_spec());
        match spec {
            Spec::Embed(e) => Call::Embed(pb::EmbedRequest {
                model,
                users: (0..e.batch)
                    .map(|_| pb::UserInput {
                        source: Some(if e.tracked {
                            pb::user_input::Source::UserId(self.tracked_user())
                        } else {
                            pb::user_input::Source::Features(self.user())
                        }),
                        context: None,
                    })
                    .collect(),
                encoding: if e.f16 {
                    pb::VectorEncoding::F16 as i32
                } else {
                    0
                },
                ..Default::default()
            }),
            Spec::Search(q) => {
                use pb::search_request::Query;
                let query = match q.query {
                    SearchQuery::Features => Query::Features(self.user()),
                    SearchQuery::UserId => Query::UserId(self.known()),
                    SearchQuery::Seeds => Query::Seeds(pb::SeedSet {
                        user_ids: (0..q.seed_size).map(|_| self.known()).collect(),
                        vectors: Vec::new(),
                    }),
                };
                Call::Search(pb::SearchRequest {
                    model,
                    query: Some(query),
                    target: if q.users_index {
                        pb::TargetIndex::Users as i32
                    } else {
                        pb::TargetIndex::Items as i32
                    },
                    k: q.k,
                    filter: q.filter.map(|(attribute, values)| pb::Filter {
                        conditions: vec![pb::AttributeCondition {
                            attribute,
                            op: pb::AttributeOp::In as i32,
                            values,
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }
            Spec::Explain(x) => Call::Explain(pb::ExplainRequest {
                model,
                features: Some(self.user()),
                method: x.method,
                groups_only: x.groups_only,
                top_n: x.top_n,
                ..Default::default()
            }),
            Spec::Track(t) => Call::Track(self.track_request(model, t.events)),
        }
    }

    /// A user of the tracked population, drawn by its Zipf law.
    pub fn tracked_user(&mut self) -> String {
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Zipf::user_id(self.w.tracked.rank(u))
    }

    /// A Track call of `events` events: each for a user drawn by the Zipf
    /// law, an item of a pool user's history, a timestamp one second after
    /// the previous event of the run and a unique event id.
    pub fn track_request(
        &mut self,
        model: Option<pb::ModelSpec>,
        events: usize,
    ) -> pb::TrackRequest {
        let mut by_user: std::collections::BTreeMap<String, Vec<pb::BehaviourEvent>> =
            Default::default();
        for _ in 0..events {
            let user = self.tracked_user();
            let n = self.counter.fetch_add(1, Ordering::Relaxed) as i64;
            let w = self.w.clone();
            let pool_user = &w.pool.users[self.below(w.pool.users.len())];
            let item_id = match pool_user.events.len() {
                0 => "1".to_string(),
                k => pool_user.events[self.below(k)].item_id.clone(),
            };
            by_user.entry(user).or_default().push(pb::BehaviourEvent {
                item_id,
                timestamp: self.track_base + n,
                rating: None,
                event_id: format!("{}-{n}", self.salt),
            });
        }
        pb::TrackRequest {
            model,
            users: by_user
                .into_iter()
                .map(|(user_id, events)| pb::UserTrack {
                    user_id,
                    events,
                    fields: Vec::new(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// Parses known user ids: `a,b,c` or a range `PREFIX[START..END]`
/// (`u[0..20]` = `u0`..`u19`).
pub fn parse_known_users(s: &str) -> Result<Vec<String>> {
    if let Some((prefix, rest)) = s.split_once('[')
        && let Some(range) = rest.strip_suffix(']')
    {
        let (a, b) = range
            .split_once("..")
            .ok_or_else(|| Error::Config(format!("known users {s:?}: use PREFIX[START..END]")))?;
        let (a, b): (u64, u64) = match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) if a < b => (a, b),
            _ => return Err(Error::Config(format!("known users {s:?}: bad range"))),
        };
        return Ok((a..b).map(|i| format!("{prefix}{i}")).collect());
    }
    Ok(s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(hit: f64, mix: &str) -> Workload {
        Workload {
            model: "m".into(),
            pool: Arc::new(UserPool::synthetic_model(1, 10, 30, 12)),
            known_users: Arc::new(parse_known_users("u[0..20]").unwrap()),
            hit_ratio: hit,
            mix: Workload::parse_mix(mix).unwrap(),
            tracked: Arc::new(Zipf::new(100, 1.0)),
        }
    }

    #[test]
    fn misses_are_unique_and_hits_are_pool_users() {
        let w = workload(0.0, "embed");
        let mut g = Generator::new(w.clone(), 3).unwrap();
        let mut h = g.fork(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            for generator in [&mut g, &mut h] {
                let u = generator.user();
                assert!(seen.insert(format!("{u:?}")), "a miss repeated");
                assert!(!w.pool.users.contains(&u));
            }
        }
        let mut g = Generator::new(workload(1.0, "embed"), 3).unwrap();
        for _ in 0..100 {
            assert!(w.pool.users.contains(&g.user()));
        }
        let mut g = Generator::new(workload(0.5, "embed"), 3).unwrap();
        let hits = (0..2000)
            .filter(|_| w.pool.users.contains(&g.user()))
            .count();
        assert!(
            (800..1200).contains(&hits),
            "{hits} hits of 2000 at ratio 0.5"
        );
    }

    #[test]
    fn track_calls_follow_the_zipf_population() {
        let z = Zipf::new(1000, 1.0);
        assert_eq!(z.rank(0.0), 0);
        assert_eq!(z.rank(0.999_999_9), 999);
        // Rank 0 of Zipf(1) over 1000 ranks holds 1 / H(1000) ≈ 13 % of the mass.
        let mut g = Generator::new(workload(0.0, "track:events=50*1;embed:tracked*1"), 3).unwrap();
        let mut events = 0usize;
        let mut top = 0usize;
        let mut stamps = std::collections::BTreeSet::new();
        let mut by_id = 0;
        for _ in 0..200 {
            match g.next_call() {
                Call::Track(t) => {
                    for u in &t.users {
                        assert!(u.user_id.starts_with('t'));
                        for e in &u.events {
                            events += 1;
                            top += usize::from(u.user_id == "t0");
                            assert!(stamps.insert(e.timestamp), "timestamps are unique");
                            assert!(!e.event_id.is_empty());
                        }
                    }
                    let n: usize = t.users.iter().map(|u| u.events.len()).sum();
                    assert_eq!(n, 50);
                }
                Call::Embed(e) => {
                    by_id += 1;
                    assert!(matches!(
                        &e.users[0].source,
                        Some(pb::user_input::Source::UserId(id)) if id.starts_with('t')
                    ));
                }
                other => panic!("unexpected call {}", other.kind()),
            }
        }
        assert!(by_id > 50 && events > 2500);
        // The 100-user population of the test workload: rank 0 ≈ 19 %.
        let share = top as f64 / events as f64;
        assert!((0.12..0.27).contains(&share), "rank-0 share {share}");
    }

    #[test]
    fn mix_weights_and_shapes() {
        let w = workload(
            1.0,
            "embed:batch=3*3; search:query=seeds,index=users,k=7,filter=segment=a|b,seeds=4*1",
        );
        let mut g = Generator::new(w, 9).unwrap();
        let mut n = BTreeMap::new();
        for _ in 0..4000 {
            match g.next_call() {
                Call::Embed(e) => {
                    assert_eq!(e.users.len(), 3);
                    *n.entry("embed").or_insert(0) += 1;
                }
                Call::Search(s) => {
                    assert_eq!(s.k, 7);
                    assert_eq!(s.target, pb::TargetIndex::Users as i32);
                    let Some(pb::search_request::Query::Seeds(seeds)) = &s.query else {
                        panic!("not a seed query");
                    };
                    assert_eq!(seeds.user_ids.len(), 4);
                    let f = s.filter.as_ref().unwrap();
                    assert_eq!(f.conditions[0].values, vec!["a", "b"]);
                    *n.entry("search").or_insert(0) += 1;
                }
                Call::Explain(_) | Call::Track(_) => panic!("no explain or track in the mix"),
            }
        }
        assert!((2800..3200).contains(&n["embed"]), "{n:?}");
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(Spec::parse("embed:batch=x").is_err());
        assert!(Spec::parse("frobnicate").is_err());
        assert!(Spec::parse("search:query=nope").is_err());
        assert!(Workload::parse_mix("embed*0").is_err());
        let mut w = workload(0.0, "search:query=user");
        w.known_users = Arc::new(Vec::new());
        assert!(Generator::new(w, 1).is_err());
        assert_eq!(parse_known_users("a,b").unwrap(), vec!["a", "b"]);
        assert_eq!(parse_known_users("u[2..4]").unwrap(), vec!["u2", "u3"]);
    }
}
