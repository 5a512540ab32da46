//! The models a server serves: each one's scheduler, and what its requests are checked and
//! tokenized with (its tokenizer, task defaults and vocabulary). Requests name a model by id
//! (the `model` field of every route that runs one); absent, they go to the default model,
//! the first configured. An unknown id is a 404 that names the served ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::{self, Limits};
use crate::model::TextTokenizer;
use crate::scheduler::{SchedulerHandle, WorkerInfo};

use super::TaskSettings;
use super::error::ApiError;

/// One served model.
pub struct Served {
    pub id: String,
    pub scheduler: SchedulerHandle,
    pub tokenizer: Arc<TextTokenizer>,
    pub info: Arc<WorkerInfo>,
    /// Task defaults resolved from the config and the model directory.
    pub tasks: Arc<TaskSettings>,
    /// The request limits, with this model's vocabulary.
    pub limits: Arc<Limits>,
}

/// The served models by id; one of them is the default.
pub struct ModelSet {
    default: String,
    models: BTreeMap<String, Arc<Served>>,
    /// Models that failed to load, and why.
    failed: BTreeMap<String, String>,
}

impl ModelSet {
    /// The set of `models`, the first being the default, beside those that `failed` to load
    /// (id and reason). Ids are distinct (the config checks).
    pub fn new(models: Vec<Served>, failed: Vec<(String, String)>) -> Self {
        let default = models.first().map(|m| m.id.clone()).unwrap_or_default();
        let models = models.into_iter().map(|m| (m.id.clone(), Arc::new(m))).collect();
        Self { default, models, failed: failed.into_iter().collect() }
    }

    /// The models that failed to load, and why.
    pub fn failed(&self) -> &BTreeMap<String, String> {
        &self.failed
    }

    /// The model a request names, or the default one.
    pub fn get(&self, id: Option<&str>) -> Result<Arc<Served>, ApiError> {
        let id = id.unwrap_or(&self.default);
        self.models.get(id).cloned().ok_or_else(|| {
            let why = match self.failed.get(id) {
                Some(_) => "failed to load (GET /v1/models says why)",
                None => "is not served here",
            };
            ApiError::NotFound(format!(
                "model {} {why}; the served models are: {}",
                api::echo(&format!("{id:?}")),
                self.ids().join(", ")
            ))
        })
    }

    /// The default model (requests that name none, TGI's routes, readiness).
    pub fn default_model(&self) -> Arc<Served> {
        self.models.get(&self.default).cloned().expect("the default model is in the set")
    }

    /// Every served model, by id.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Served>> {
        self.models.values()
    }

    pub fn ids(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }
}
