//! Embed: the profile vectors of a batch of users, each from features
//! (through the cache and the batcher) or by id: from the user's live state
//! (through the cache and the batcher too), else from the users index.

use std::sync::Arc;

use profiled_store::Generation;

use super::users::{Resolved, UserRef};
use super::{CacheUse, Deadline, Engine, FeatureInput, ModelSel, Profile};
use crate::error::ApiError;

/// One user of an Embed call.
#[derive(Debug, Clone)]
pub enum UserQuery<F> {
    /// Compute from features.
    Features(F),
    /// A known user: live state (with optional context), else the users
    /// index snapshot.
    User(UserRef<F>),
}

/// An Embed call. Each user arrives as the edge converted it: an input the
/// edge could not read is an error in its slot, so request paths
/// (`users[i]`) and partial answers line up with the request.
#[derive(Debug, Clone)]
pub struct EmbedQuery<F> {
    /// The model version to use.
    pub model: ModelSel,
    /// The users, in request order.
    pub users: Vec<Result<UserQuery<F>, ApiError>>,
    /// Cache use.
    pub cache: CacheUse,
    /// Answer per user errors in place instead of failing the call.
    pub allow_partial: bool,
}

/// Where a profile came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileSource {
    /// Computed by the encoder for this call.
    Computed,
    /// Served from the hot cache.
    Cache,
    /// The stored profile of the users index (as of the version's publish).
    UsersIndex,
    /// Computed (or a cache hit: see `Profile::cache_hit`) from the user's
    /// live stored state.
    UserState,
}

/// The answer for one user.
#[derive(Debug, Clone)]
pub struct EmbeddedUser {
    /// The user id (from the features or the id query; may be empty).
    pub user_id: String,
    /// The profile and its source, or this user's error (only with
    /// `allow_partial`).
    pub result: Result<(Profile, ProfileSource), ApiError>,
}

/// The answer of an Embed call.
#[derive(Debug, Clone)]
pub struct Embedded {
    /// The generation that answered every user.
    pub generation: Arc<Generation>,
    /// One per requested user, in order.
    pub users: Vec<EmbeddedUser>,
    /// Longest queue wait of a computed user.
    pub queue_us: u64,
    /// Longest batch compute time of a computed user.
    pub compute_us: u64,
}

/// A user after the first phase: validated, a cache hit, or stored.
enum Ready {
    /// To compute; the source it will be answered with when computed
    /// (`Computed` for features, `UserState` for live state).
    Compute(
        profiled_model::UserFeatures,
        Option<super::CacheKey>,
        ProfileSource,
    ),
    Done(Profile, ProfileSource),
}

impl Engine {
    /// Unary Embed: validates every user first (cheap, before any work), then
    /// computes all of them concurrently on one generation.
    pub async fn embed<F: FeatureInput>(
        &self,
        q: EmbedQuery<F>,
        deadline: Deadline,
    ) -> Result<Embedded, ApiError> {
        self.check_serving(deadline)?;
        let limits = &self.cfg.limits;
        if q.users.is_empty() {
            return Err(ApiError::invalid("users", "at least one user is required"));
        }
        if q.users.len() > limits.max_users_per_call {
            return Err(ApiError::Limit {
                field: "users".into(),
                got: format!("{} users", q.users.len()),
                limit: "max_users_per_call",
                value: limits.max_users_per_call as u64,
            });
        }
        let mode = q.cache;
        let generation = self.resolve(&q.model)?;

        // Phase 1: validate every user (cheap) and resolve ids (one store
        // read each, concurrently) before any compute. Request paths are
        // built only for messages, misses and ids.
        let first = q.users.into_iter().enumerate().map(|(i, u)| {
            let generation = generation.clone();
            async move {
                match u {
                    Err(e) => (String::new(), Err(e)),
                    Ok(UserQuery::User(user)) => {
                        let path = format!("users[{i}].user_id");
                        let r = match self
                            .resolve_user(&generation, &user, &path, true, deadline)
                            .await
                        {
                            Ok(Resolved::Snapshot(p)) => {
                                Ok(Ready::Done(p, ProfileSource::UsersIndex))
                            }
                            Ok(Resolved::Live(f)) => {
                                let (key, hit) = self.lookup(&generation, &f, mode).await;
                                Ok(match hit {
                                    Some(v) => {
                                        Ready::Done(Profile::hit(v), ProfileSource::UserState)
                                    }
                                    None => Ready::Compute(f, key, ProfileSource::UserState),
                                })
                            }
                            Err(e) => Err(e),
                        };
                        (user.id, r)
                    }
                    Ok(UserQuery::Features(f)) => {
                        let (key, hit) = self.lookup(&generation, &f, mode).await;
                        let r = match hit {
                            Some(v) => Ok(Ready::Done(Profile::hit(v), ProfileSource::Cache)),
                            None => f
                                .to_features(&format!("users[{i}].features"), &generation, limits)
                                .map(|x| Ready::Compute(x, key, ProfileSource::Computed)),
                        };
                        (f.user_id().to_string(), r)
                    }
                }
            }
        });
        let ready: Vec<(String, Result<Ready, ApiError>)> = futures::future::join_all(first).await;
        if !q.allow_partial
            && let Some((_, Err(e))) = ready.iter().find(|(_, r)| r.is_err())
        {
            return Err(e.clone());
        }

        // Phase 2: compute (cache + batcher), all users concurrently.
        let futs = ready.into_iter().enumerate().map(|(i, (user_id, r))| {
            let generation = generation.clone();
            async move {
                let result = match r {
                    Ok(Ready::Compute(f, key, source)) => self
                        .profile(&generation, key, f, format!("users[{i}]"), mode, deadline)
                        .await
                        .map(|p| {
                            let source = match source {
                                ProfileSource::Computed if p.cache_hit => ProfileSource::Cache,
                                other => other,
                            };
                            (p, source)
                        }),
                    Ok(Ready::Done(p, source)) => Ok((p, source)),
                    Err(e) => Err(e),
                };
                EmbeddedUser { user_id, result }
            }
        });
        let users = futures::future::join_all(futs).await;
        let (mut queue_us, mut compute_us) = (0u64, 0u64);
        for u in &users {
            match &u.result {
                Ok((p, _)) => {
                    queue_us = queue_us.max(p.queue_us);
                    compute_us = compute_us.max(p.compute_us);
                }
                // Shedding fails the whole call, partial or not.
                Err(e) if !q.allow_partial || matches!(e, ApiError::Overloaded(_)) => {
                    return Err(e.clone());
                }
                Err(_) => {}
            }
        }
        Ok(Embedded {
            generation,
            users,
            queue_us,
            compute_us,
        })
    }

    /// The stored profile of user `id` from the generation's users index;
    /// NOT_FOUND (naming `path`) when there is no users index or no such user.
    pub(crate) fn stored_profile(
        &self,
        generation: &Generation,
        id: &str,
        path: &str,
    ) -> Result<Profile, ApiError> {
        let Some(users) = generation.users.as_ref() else {
            return Err(ApiError::NotFound(format!(
                "{path}: model {:?} version {} has no users index, so user {id:?} cannot be \
                 looked up (send features or vectors instead)",
                generation.model, generation.version
            )));
        };
        match users.vector_of(id)? {
            Some((_, v)) => Ok(Profile::stored(v.into())),
            None => Err(ApiError::NotFound(format!(
                "{path}: unknown user {id:?} (not in the users index)"
            ))),
        }
    }
}
