//! Model status (GetModel, ListModels) and the admin operations (Reload,
//! SetLabel, Unload) over the store.

use profiled_store::ModelSnapshot;

use super::Engine;
use crate::error::ApiError;

impl Engine {
    /// The status of one model (empty name = the default model).
    pub fn get_model(&self, name: &str) -> Result<ModelSnapshot, ApiError> {
        self.check_name("name", name)?;
        Ok(self.store.snapshot(name)?)
    }

    /// Every model's status, and the name requests without one get (empty
    /// when there is no default model).
    pub fn list_models(&self) -> (Vec<ModelSnapshot>, String) {
        (
            self.store.snapshots(),
            self.store.default_model().unwrap_or_default(),
        )
    }

    /// The snapshots an admin call answers with: every model for an empty
    /// name, else that one.
    pub fn admin_models(&self, name: &str) -> Result<Vec<ModelSnapshot>, ApiError> {
        if name.is_empty() {
            Ok(self.store.snapshots())
        } else {
            Ok(vec![self.store.snapshot(name)?])
        }
    }

    /// The `model` label of a failed call's metrics: the requested model
    /// when the server knows it (or the default model for an empty name),
    /// else `unknown` — never the raw request text, so label values stay
    /// bounded.
    pub fn model_label(&self, requested: &str) -> String {
        let name = if requested.is_empty() {
            self.store.default_model().unwrap_or_default()
        } else {
            requested.to_string()
        };
        if !name.is_empty() && self.store.model_names().contains(&name) {
            name
        } else {
            "unknown".into()
        }
    }

    /// Reload: rescans one model (or all, for an empty name), or loads
    /// exactly `version`. A call the store cannot do is refused before
    /// anything runs, whether or not the caller waits; without `wait` the
    /// reload goes on in the background.
    pub async fn reload(
        &self,
        model: &str,
        version: Option<u64>,
        wait: bool,
    ) -> Result<(), ApiError> {
        if version.is_some() && model.is_empty() {
            return Err(ApiError::invalid("version", "a version needs `model`"));
        }
        self.check_name("model", model)?;
        self.store.check_reload(model, version)?;
        let store = self.store.clone();
        let model = model.to_string();
        let task = tokio::spawn(async move { store.reload(&model, version).await });
        if wait {
            task.await
                .map_err(|e| ApiError::Internal(format!("reload task: {e}")))??;
        }
        Ok(())
    }

    /// SetLabel (`version: None` removes the label).
    pub fn set_label(
        &self,
        model: &str,
        label: &str,
        version: Option<u64>,
    ) -> Result<(), ApiError> {
        if model.is_empty() {
            return Err(ApiError::invalid("model", "required"));
        }
        self.check_name("model", model)?;
        self.check_name("label", label)?;
        if version == Some(0) {
            return Err(ApiError::invalid(
                "version",
                "required (a positive integer)",
            ));
        }
        Ok(self.store.set_label(model, label, version)?)
    }

    /// Unload.
    pub fn unload(&self, model: &str, version: u64, force: bool) -> Result<(), ApiError> {
        if model.is_empty() {
            return Err(ApiError::invalid("model", "required"));
        }
        self.check_name("model", model)?;
        Ok(self.store.unload(model, version, force)?)
    }
}
