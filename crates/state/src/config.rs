//! [`StateConfig`]: which backend holds user state, its settings, and
//! [`open`], the one factory the server calls.
//!
//! ```toml
//! [state]
//! backend = "embedded"          # or "redis"
//! [state.embedded]
//! dir = "/var/lib/profiled/state"
//! [state.redis]
//! urls = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]
//! cluster = true
//! connect_timeout_ms = 2000
//! response_timeout_ms = 2000
//! key_prefix = "profiled:"
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::embedded::{EmbeddedConfig, EmbeddedStore};
use crate::redis::{RedisConfig, RedisStore};
use crate::{Result, UserStateStore};

/// The kind of store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// A redb file under `embedded.dir`: one process, group commit.
    #[default]
    Embedded,
    /// A Redis node or Redis Cluster shared by every replica.
    Redis,
}

/// The store settings (`[state]`); every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Which backend [`open`] opens.
    pub backend: Backend,
    /// Settings of the embedded backend.
    pub embedded: EmbeddedConfig,
    /// Settings of the Redis backend.
    pub redis: RedisConfig,
}

/// Opens the store `config.backend` names. Embedded: the file is opened and
/// its writer started ([`crate::Error::Config`] when the directory is
/// unusable or already open). Redis: connects now
/// ([`crate::Error::Unavailable`] when unreachable).
pub async fn open(config: &StateConfig) -> Result<Arc<dyn UserStateStore>> {
    Ok(match config.backend {
        Backend::Embedded => Arc::new(EmbeddedStore::open(&config.embedded)?),
        Backend::Redis => Arc::new(RedisStore::open(&config.redis).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial_settings_deserialise() -> std::result::Result<(), serde_json::Error> {
        let c: StateConfig = serde_json::from_str("{}")?;
        assert_eq!(c, StateConfig::default());
        assert_eq!(c.backend, Backend::Embedded);
        let c: StateConfig = serde_json::from_str(
            r#"{"backend": "redis", "redis": {"urls": ["redis://a:1"], "cluster": true}}"#,
        )?;
        assert_eq!(c.backend, Backend::Redis);
        assert!(c.redis.cluster);
        assert_eq!(c.redis.key_prefix, "profiled:");
        assert!(serde_json::from_str::<StateConfig>(r#"{"redis": {"url": "x"}}"#).is_err());
        Ok(())
    }
}
