//! Small conveniences on the generated types that every client and the server
//! need: building and reading [`Vector`]s in either encoding, building
//! [`ModelSpec`]s, and carrying a gRPC status inside a batch or stream
//! ([`ItemError`]).

use half::f16;

use crate::v1::{FieldChange, FieldValue, ItemError, ModelSpec, Vector, field_change, model_spec};

/// Why a [`Vector`] cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VectorError {
    /// Both `values` and `f16` are non-empty.
    #[error("both `values` and `f16` are set; set exactly one")]
    BothSet,
    /// Neither `values` nor `f16` holds anything.
    #[error("the vector is empty; set `values` (f32) or `f16` (binary16 bytes)")]
    Empty,
    /// `f16` holds an odd number of bytes.
    #[error("`f16` holds {0} bytes, not a multiple of 2")]
    OddF16Length(usize),
    /// The vector does not have the expected dimension.
    #[error("expected {expected} components, got {got}")]
    WrongDimension {
        /// The model's dimension.
        expected: usize,
        /// Components in the vector.
        got: usize,
    },
    /// A component is NaN or infinite.
    #[error("component {0} is not finite")]
    NotFinite(usize),
}

impl Vector {
    /// A vector in the f32 encoding (`values`).
    pub fn from_f32(values: Vec<f32>) -> Self {
        Vector {
            values,
            f16: Vec::new(),
        }
    }

    /// A vector in the f16 encoding: each component rounded to IEEE 754
    /// binary16 (round to nearest even), little-endian.
    pub fn from_f32_as_f16(values: &[f32]) -> Self {
        let mut bytes = Vec::with_capacity(values.len() * 2);
        for &v in values {
            bytes.extend_from_slice(&f16::from_f32(v).to_le_bytes());
        }
        Vector {
            values: Vec::new(),
            f16: bytes,
        }
    }

    /// Number of components, whichever encoding is used.
    pub fn dim(&self) -> Result<usize, VectorError> {
        match (self.values.is_empty(), self.f16.is_empty()) {
            (false, false) => Err(VectorError::BothSet),
            (true, true) => Err(VectorError::Empty),
            (false, true) => Ok(self.values.len()),
            (true, false) if !self.f16.len().is_multiple_of(2) => {
                Err(VectorError::OddF16Length(self.f16.len()))
            }
            (true, false) => Ok(self.f16.len() / 2),
        }
    }

    /// The components as f32, whichever encoding is used (binary16 widens
    /// exactly).
    pub fn to_f32(&self) -> Result<Vec<f32>, VectorError> {
        self.dim()?;
        if self.f16.is_empty() {
            return Ok(self.values.clone());
        }
        Ok(self
            .f16
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect())
    }

    /// The components as f32, checked the way requests are: exactly `dim`
    /// components, all finite.
    pub fn to_f32_checked(&self, dim: usize) -> Result<Vec<f32>, VectorError> {
        let got = self.dim()?;
        if got != dim {
            return Err(VectorError::WrongDimension { expected: dim, got });
        }
        let values = self.to_f32()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(VectorError::NotFinite(i));
        }
        Ok(values)
    }
}

impl ModelSpec {
    /// The model's default version (empty `name` = the server's default model).
    pub fn default_version(name: impl Into<String>) -> Self {
        ModelSpec {
            name: name.into(),
            selector: None,
        }
    }

    /// Exactly this version of the model.
    pub fn pinned(name: impl Into<String>, version: u64) -> Self {
        ModelSpec {
            name: name.into(),
            selector: Some(model_spec::Selector::Version(version)),
        }
    }

    /// The version a label (e.g. `stable`, `canary`) points to.
    pub fn labelled(name: impl Into<String>, label: impl Into<String>) -> Self {
        ModelSpec {
            name: name.into(),
            selector: Some(model_spec::Selector::Label(label.into())),
        }
    }
}

impl FieldChange {
    /// Store `value` under input `name`.
    pub fn set(name: impl Into<String>, value: FieldValue) -> Self {
        FieldChange {
            name: name.into(),
            change: Some(field_change::Change::Set(value)),
        }
    }

    /// Clear input `name`.
    pub fn clear(name: impl Into<String>) -> Self {
        FieldChange {
            name: name.into(),
            change: Some(field_change::Change::Clear(true)),
        }
    }

    /// Every field of `fields` as a `set`, in name order (a map has none of
    /// its own, and a Track applies its changes in order).
    pub fn set_all(fields: impl IntoIterator<Item = (String, FieldValue)>) -> Vec<Self> {
        let mut out: Vec<Self> = fields
            .into_iter()
            .map(|(name, v)| FieldChange::set(name, v))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

impl ItemError {
    /// The status code, or `Code::Unknown` for a number outside the gRPC set.
    pub fn status_code(&self) -> tonic::Code {
        tonic::Code::from_i32(self.code)
    }
}

impl From<&tonic::Status> for ItemError {
    fn from(status: &tonic::Status) -> Self {
        ItemError {
            code: status.code() as i32,
            message: status.message().to_owned(),
        }
    }
}

impl From<tonic::Status> for ItemError {
    fn from(status: tonic::Status) -> Self {
        ItemError::from(&status)
    }
}

impl From<ItemError> for tonic::Status {
    fn from(error: ItemError) -> Self {
        tonic::Status::new(error.status_code(), error.message)
    }
}
