//! Explain: which dimension groups and tokens drove a profile (PROFILE), its
//! score against an item (ITEM) or against a seed set of users (USERS), by
//! occlusion, attention rollout or raw attention mass. The model computes
//! everything, the token table included; this runs it off the async threads,
//! bounded by the Explain slots, and fills the hot cache with the unmasked
//! profile it computed on the way.

use std::sync::Arc;
use std::time::Instant;

use profiled_model::{ExplainOptions, Explanation, Method, Target};
use profiled_store::Generation;

use super::users::Resolved;
use super::{CacheUse, Deadline, Engine, FeatureInput, ModelSel, Seeds, UserQuery, remaining};
use crate::error::{ApiError, model_error};

/// What the explanation is about.
#[derive(Debug, Clone, Default)]
pub enum ExplainTarget {
    /// The profile itself (1 − cosine to the profile with a part removed).
    #[default]
    Profile,
    /// The score against this item of the model.
    Item(String),
    /// The score against the centroid of a seed set.
    Users(Seeds),
}

/// An Explain call.
#[derive(Debug, Clone)]
pub struct ExplainQuery<F> {
    /// The model version to use.
    pub model: ModelSel,
    /// The user: features, or a tracked user's id (live state only: an
    /// explanation needs the tokens).
    pub user: UserQuery<F>,
    /// What to explain.
    pub target: ExplainTarget,
    /// How.
    pub method: Method,
    /// Groups only (no per-token attributions).
    pub groups_only: bool,
    /// Token attributions to return (0 = 10).
    pub top_n: u32,
    /// How the unmasked profile computed on the way fills the cache.
    pub cache: CacheUse,
}

/// The answer of an Explain call.
#[derive(Debug, Clone)]
pub struct Explained {
    /// The generation that answered.
    pub generation: Arc<Generation>,
    /// The model's explanation: every token's attribution (shares are taken
    /// over all of them) and the whole token table.
    pub explanation: Explanation,
    /// Token attributions to answer with (the largest first).
    pub top_n: usize,
    /// Microseconds waiting for an Explain slot.
    pub queue_us: u64,
    /// Microseconds of the explanation's forward passes.
    pub compute_us: u64,
}

impl Engine {
    /// Explain.
    pub async fn explain<F: FeatureInput>(
        &self,
        q: ExplainQuery<F>,
        deadline: Deadline,
    ) -> Result<Explained, ApiError> {
        self.check_serving(deadline)?;
        let limits = &self.cfg.limits;
        if q.top_n > limits.max_explain_top_n {
            return Err(ApiError::Limit {
                field: "top_n".into(),
                got: format!("{}", q.top_n),
                limit: "max_explain_top_n",
                value: u64::from(limits.max_explain_top_n),
            });
        }
        let top_n = if q.top_n == 0 { 10 } else { q.top_n as usize };
        let generation = self.resolve(&q.model)?;
        let features = match &q.user {
            UserQuery::Features(f) => f.to_features("features", &generation, limits)?,
            UserQuery::User(user) => {
                match self
                    .resolve_user(&generation, user, "user_id", false, deadline)
                    .await?
                {
                    Resolved::Live(f) => f,
                    Resolved::Snapshot(_) => {
                        return Err(ApiError::Internal(
                            "a users index snapshot cannot be explained".into(),
                        ));
                    }
                }
            }
        };
        // A tracked user's features fill the cache afterwards (a request's
        // fill from its own message).
        let live = matches!(q.user, UserQuery::User(_)).then(|| features.clone());
        let target = match q.target {
            ExplainTarget::Profile => Target::Profile,
            ExplainTarget::Item(id) => {
                if generation.encoder.item_vector(&id).is_none() {
                    return Err(ApiError::NotFound(format!(
                        "target.item.item_id: unknown item {id:?} (not in model {:?} version {})",
                        generation.model, generation.version
                    )));
                }
                Target::Item(id)
            }
            ExplainTarget::Users(seeds) => Target::Users(self.seed_query(
                &generation,
                &seeds,
                "target.users",
                "seed_user_ids",
            )?),
        };
        let opts = ExplainOptions {
            tokens: !q.groups_only,
            max_tokens: 0,
        };
        let q0 = Instant::now();
        let _permit = self
            .explain_slots
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
        remaining(deadline)?;
        let queue_us = q0.elapsed().as_micros() as u64;
        let g2 = generation.clone();
        let method = q.method;
        let c0 = Instant::now();
        let explanation = tokio::task::spawn_blocking(move || {
            g2.encoder.explain(&features, &target, method, &opts)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("explain task: {e}")))?
        .map_err(|e| model_error("features", e))?;
        let compute_us = c0.elapsed().as_micros() as u64;
        // The unmasked profile computed on the way fills the cache, so an
        // Embed of the same user after an Explain is a hit.
        match &q.user {
            UserQuery::Features(f) => {
                self.fill(&generation, f, q.cache, &explanation.profile)
                    .await;
            }
            UserQuery::User(_) => {
                if let Some(f) = &live {
                    self.fill(&generation, f, q.cache, &explanation.profile)
                        .await;
                }
            }
        }
        Ok(Explained {
            generation,
            explanation,
            top_n,
            queue_us,
            compute_us,
        })
    }
}
