//! Search filters and their resolution to candidate rows.

use crate::error::{Error, Result};
use crate::file::IndexFile;

/// One attribute condition. An attribute may hold several values per row
/// (e.g. genres); a row "has" a value when it appears in that value's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The row has `attribute = value`.
    Equals {
        /// Attribute name.
        attribute: String,
        /// The value.
        value: String,
    },
    /// The row has at least one of `values` for `attribute`.
    In {
        /// Attribute name.
        attribute: String,
        /// Accepted values.
        values: Vec<String>,
    },
    /// The row has none of `values` for `attribute`.
    NotIn {
        /// Attribute name.
        attribute: String,
        /// Refused values.
        values: Vec<String>,
    },
}

/// A conjunction: every condition holds, the id is allowed and not denied,
/// and the row is not excluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Attribute conditions (all must hold).
    pub conditions: Vec<Condition>,
    /// When set, only these ids may be returned (unknown ids are ignored).
    pub allow_ids: Option<Vec<String>>,
    /// These ids are never returned (unknown ids are ignored).
    pub deny_ids: Vec<String>,
    /// These rows are never returned (e.g. the query user, the user's
    /// history); rows out of range are ignored.
    pub exclude_rows: Vec<u32>,
}

/// The rows a filter admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// Every row except these (sorted, unique).
    AllExcept(Vec<u32>),
    /// Exactly these rows (sorted, unique).
    Only(Vec<u32>),
}

impl Candidates {
    /// How many rows are admitted out of `rows`.
    pub fn count(&self, rows: usize) -> usize {
        match self {
            Candidates::AllExcept(x) => rows.saturating_sub(x.len()),
            Candidates::Only(x) => x.len(),
        }
    }

    /// Whether `row` is admitted.
    pub fn contains(&self, row: u32) -> bool {
        match self {
            Candidates::AllExcept(x) => x.binary_search(&row).is_err(),
            Candidates::Only(x) => x.binary_search(&row).is_ok(),
        }
    }

    /// The admitted rows as an explicit sorted list.
    pub fn to_rows(&self, rows: usize) -> Vec<u32> {
        match self {
            Candidates::Only(x) => x.clone(),
            Candidates::AllExcept(x) => difference(&(0..rows as u32).collect::<Vec<_>>(), x),
        }
    }
}

/// A dense bit set over rows, for O(1) membership (the ANN predicate).
#[derive(Debug, Clone)]
pub struct RowSet {
    words: Vec<u64>,
}

impl RowSet {
    /// The admitted rows of `c` among `rows`.
    pub fn from_candidates(c: &Candidates, rows: usize) -> RowSet {
        let n = rows.div_ceil(64);
        let mut words;
        match c {
            Candidates::Only(x) => {
                words = vec![0u64; n];
                for &r in x {
                    if let Some(w) = words.get_mut(r as usize / 64) {
                        *w |= 1 << (r % 64);
                    }
                }
            }
            Candidates::AllExcept(x) => {
                words = vec![u64::MAX; n];
                for &r in x {
                    if let Some(w) = words.get_mut(r as usize / 64) {
                        *w &= !(1 << (r % 64));
                    }
                }
            }
        }
        RowSet { words }
    }

    /// Whether `row` is in the set.
    #[inline]
    pub fn contains(&self, row: u64) -> bool {
        self.words
            .get((row / 64) as usize)
            .is_some_and(|w| w & (1 << (row % 64)) != 0)
    }
}

pub(crate) fn sorted_unique(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v.dedup();
    v
}

pub(crate) fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    if large.len() > 16 * small.len() {
        for r in small {
            if large.binary_search(r).is_ok() {
                out.push(*r);
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < small.len() && j < large.len() {
        match small[i].cmp(&large[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(small[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// `a \ b` for sorted unique lists.
pub(crate) fn difference(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &r in a {
        while j < b.len() && b[j] < r {
            j += 1;
        }
        if j >= b.len() || b[j] != r {
            out.push(r);
        }
    }
    out
}

impl Filter {
    /// A filter that admits every row.
    pub fn none() -> Filter {
        Filter::default()
    }

    /// Whether the filter admits every row.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
            && self.allow_ids.is_none()
            && self.deny_ids.is_empty()
            && self.exclude_rows.is_empty()
    }

    /// Checks that every attribute named exists in `index`.
    pub fn validate(&self, index: &IndexFile) -> Result<()> {
        for c in &self.conditions {
            let a = match c {
                Condition::Equals { attribute, .. }
                | Condition::In { attribute, .. }
                | Condition::NotIn { attribute, .. } => attribute,
            };
            if !index.has_attribute(a) {
                return Err(Error::UnknownAttribute(a.clone()));
            }
        }
        Ok(())
    }

    /// Resolves the filter to candidate rows of `index`.
    pub fn resolve(&self, index: &IndexFile) -> Result<Candidates> {
        self.validate(index)?;
        let rows = index.len();
        let mut positive: Vec<Vec<u32>> = Vec::new();
        let mut negative: Vec<u32> = Vec::new();
        for c in &self.conditions {
            match c {
                Condition::Equals { attribute, value } => {
                    positive.push(index.postings(attribute, value)?.to_vec())
                }
                Condition::In { attribute, values } => {
                    let mut u = Vec::new();
                    for v in values {
                        u.extend_from_slice(index.postings(attribute, v)?);
                    }
                    positive.push(sorted_unique(u));
                }
                Condition::NotIn { attribute, values } => {
                    for v in values {
                        negative.extend_from_slice(index.postings(attribute, v)?);
                    }
                }
            }
        }
        if let Some(allow) = &self.allow_ids {
            positive.push(sorted_unique(
                allow.iter().filter_map(|id| index.row_of(id)).collect(),
            ));
        }
        negative.extend(self.deny_ids.iter().filter_map(|id| index.row_of(id)));
        negative.extend(
            self.exclude_rows
                .iter()
                .copied()
                .filter(|&r| (r as usize) < rows),
        );
        let negative = sorted_unique(negative);
        if positive.is_empty() {
            return Ok(Candidates::AllExcept(negative));
        }
        positive.sort_by_key(Vec::len);
        let mut acc = positive.swap_remove(0);
        for p in &positive {
            acc = intersect(&acc, p);
        }
        if negative.is_empty() {
            return Ok(Candidates::Only(acc));
        }
        Ok(Candidates::Only(difference(&acc, &negative)))
    }

    /// Evaluates the filter on one row directly (no candidate lists); the
    /// reference the property tests check search results against.
    pub fn matches(&self, index: &IndexFile, row: u32) -> Result<bool> {
        let has = |a: &str, v: &str| -> Result<bool> {
            Ok(index.postings(a, v)?.binary_search(&row).is_ok())
        };
        for c in &self.conditions {
            let ok = match c {
                Condition::Equals { attribute, value } => has(attribute, value)?,
                Condition::In { attribute, values } => {
                    let mut any = false;
                    for v in values {
                        any |= has(attribute, v)?;
                    }
                    any
                }
                Condition::NotIn { attribute, values } => {
                    let mut any = false;
                    for v in values {
                        any |= has(attribute, v)?;
                    }
                    !any
                }
            };
            if !ok {
                return Ok(false);
            }
        }
        let id = index.id(row).unwrap_or("");
        if let Some(allow) = &self.allow_ids
            && !allow.iter().any(|a| a == id)
        {
            return Ok(false);
        }
        Ok(!self.deny_ids.iter().any(|d| d == id) && !self.exclude_rows.contains(&row))
    }
}
