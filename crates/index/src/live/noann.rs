//! Without the `ann` feature the live index has no graph: this uninhabited
//! stand-in keeps the code paths that would use one type-checked.

use crate::error::Result;

/// No graph (uninhabited).
#[derive(Debug)]
pub(crate) enum LiveAnn {}

/// What a graph search would answer.
#[derive(Debug)]
pub(crate) struct AnnAnswer {
    pub(crate) hits: Vec<(u32, f32)>,
    pub(crate) visited: Option<usize>,
}

impl LiveAnn {
    pub(crate) fn search(
        &self,
        _query: &[f32],
        _k: usize,
        _allowed: impl Fn(u64) -> bool,
    ) -> Result<AnnAnswer> {
        match *self {}
    }
    pub(crate) fn set_expansion_search(&self, _ef: usize) {
        match *self {}
    }
    pub(crate) fn add(&self, _key: u64, _vector: &[f32]) -> Result<()> {
        match *self {}
    }
    pub(crate) fn remove(&self, _key: u64) -> Result<()> {
        match *self {}
    }
    pub(crate) fn rename(&self, _from: u64, _to: u64) -> Result<()> {
        match *self {}
    }
    pub(crate) fn save(&self) -> Result<Vec<u8>> {
        match *self {}
    }
    pub(crate) fn copy_from(&self, _payload: &[u8], _extra: usize) -> Result<LiveAnn> {
        match *self {}
    }
}
