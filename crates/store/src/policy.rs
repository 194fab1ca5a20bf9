//! [`VersionPolicy`]: which versions of a model are loaded and which one is
//! the default.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Which versions of a model the store loads. The default version is always
/// the newest READY version the policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionPolicy {
    /// Only the newest loadable version (falls back to older ones when newer
    /// ones fail to load).
    #[default]
    Latest,
    /// The newest `N` loadable versions.
    LatestN(u64),
    /// Exactly this version.
    Pinned(u64),
}

impl VersionPolicy {
    /// The versions to load out of `available` (published, not failed, not
    /// unloaded by an operator), given ascending. For [`VersionPolicy::Latest`]
    /// this is the newest one.
    pub fn wanted(&self, available: &[u64]) -> Vec<u64> {
        match *self {
            VersionPolicy::Latest => available.last().copied().into_iter().collect(),
            VersionPolicy::LatestN(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                available.iter().rev().take(n).copied().collect()
            }
            VersionPolicy::Pinned(v) => available.iter().copied().filter(|&x| x == v).collect(),
        }
    }

    /// Whether `version` may be the default version.
    pub fn allows_default(&self, version: u64) -> bool {
        match *self {
            VersionPolicy::Pinned(v) => v == version,
            _ => true,
        }
    }
}

impl fmt::Display for VersionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionPolicy::Latest => f.write_str("latest"),
            VersionPolicy::LatestN(n) => write!(f, "latest:{n}"),
            VersionPolicy::Pinned(v) => write!(f, "pinned:{v}"),
        }
    }
}

impl FromStr for VersionPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidPolicy(s.to_string());
        let s2 = s.trim();
        if s2 == "latest" {
            return Ok(VersionPolicy::Latest);
        }
        let (kind, n) = s2.split_once(':').ok_or_else(bad)?;
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        match kind.trim() {
            "latest" => Ok(VersionPolicy::LatestN(n)),
            "pinned" => Ok(VersionPolicy::Pinned(n)),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for s in ["latest", "latest:3", "pinned:7"] {
            let p: VersionPolicy = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert!("latest:0".parse::<VersionPolicy>().is_err());
        assert!("pinned".parse::<VersionPolicy>().is_err());
        assert!("newest".parse::<VersionPolicy>().is_err());
    }

    #[test]
    fn wanted_versions() {
        let v = [1, 2, 5];
        assert_eq!(VersionPolicy::Latest.wanted(&v), vec![5]);
        assert_eq!(VersionPolicy::LatestN(2).wanted(&v), vec![5, 2]);
        assert_eq!(VersionPolicy::Pinned(2).wanted(&v), vec![2]);
        assert!(VersionPolicy::Pinned(3).wanted(&v).is_empty());
        assert!(VersionPolicy::Latest.wanted(&[]).is_empty());
    }
}
