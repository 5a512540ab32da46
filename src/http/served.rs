//! The models a server serves: each one's scheduler, and what its requests are checked and
//! tokenized with (its tokenizer, task defaults and vocabulary). Requests name a model by id
//! (the `model` field of every route that runs one); absent, they go to the default model, the
//! first configured. An unknown id is a 404 that names the served ones.
//!
//! The set changes at run time (`control`): a model is `loading`, `ready`, `unloading` or
//! `failed`. A request holds its model (an `Arc<Served>`) until it is answered, so a model
//! unloaded or replaced by a reload finishes the rows it has before its sessions are freed.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use anyhow::Context;

use crate::api::{self, Limits};
use crate::config::{Config, ModelSpec};
use crate::metrics::{Metrics, ModelMetrics};
use crate::model::TextTokenizer;
use crate::scheduler::{Process, SchedulerHandle, WorkerInfo};

use super::TaskSettings;
use super::error::ApiError;

/// One served model.
pub struct Served {
    pub id: String,
    /// Its directory and per-model settings (a reload reads them again).
    pub spec: ModelSpec,
    pub scheduler: SchedulerHandle,
    pub tokenizer: Arc<TextTokenizer>,
    pub info: Arc<WorkerInfo>,
    /// Task defaults resolved from the config and the model directory.
    pub tasks: Arc<TaskSettings>,
    /// The request limits, with this model's vocabulary.
    pub limits: Arc<Limits>,
    /// Client requests admitted to it and not yet answered (its share of
    /// `max_concurrent_requests`, `pipeline::model_share`).
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// Its metrics (the `model` label).
    pub metrics: Arc<ModelMetrics>,
}

/// Where a model stands.
#[derive(Clone)]
pub enum State {
    Loading,
    Ready(Arc<Served>),
    /// No longer admitting; its requests in flight finish.
    Unloading,
    Failed(String),
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Loading => "loading",
            State::Ready(_) => "ready",
            State::Unloading => "unloading",
            State::Failed(_) => "failed",
        }
    }
}

/// What loading a model needs: the config it is planned and limited by, the metrics its
/// scheduler and requests report to, and what all models' schedulers share (the memory budget,
/// the lanes' load).
pub struct Loader {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub process: Arc<Process>,
}

/// The models by id; one of them is the default.
pub struct ModelSet {
    default: String,
    states: RwLock<BTreeMap<String, State>>,
    /// Models being loaded, reloaded or unloaded.
    busy: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The counters of versions no longer served (unloaded, or replaced by a reload), so that
    /// the metrics' totals never go back.
    retired: std::sync::Mutex<Vec<(String, crate::scheduler::SharedStats)>>,
    pub loader: Loader,
}

impl ModelSet {
    /// The set of `models` (the first is the default) beside those that `failed` to load (id
    /// and reason). Ids are distinct (the config checks).
    pub fn new(models: Vec<Served>, failed: Vec<(String, String)>, loader: Loader) -> Self {
        let default = models.first().map(|m| m.id.clone()).unwrap_or_default();
        let mut states: BTreeMap<String, State> =
            models.into_iter().map(|m| (m.id.clone(), State::Ready(Arc::new(m)))).collect();
        states.extend(failed.into_iter().map(|(id, why)| (id, State::Failed(why))));
        Self { default, states: RwLock::new(states), busy: Default::default(), retired: Default::default(), loader }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, State>> {
        self.states.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, State>> {
        self.states.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The model a request names, or the default one, if it is ready.
    pub fn get(&self, id: Option<&str>) -> Result<Arc<Served>, ApiError> {
        let id = id.unwrap_or(&self.default);
        match self.read().get(id) {
            Some(State::Ready(m)) => Ok(m.clone()),
            _ => Err(self.not_served(id)),
        }
    }

    /// The 404 of a request for `id`, which is not ready: why, and which models are.
    pub fn not_served(&self, id: &str) -> ApiError {
        let states = self.read();
        let why = match states.get(id) {
            Some(State::Ready(_)) => "is served",
            Some(State::Loading) => "is still loading",
            Some(State::Unloading) => "is being unloaded",
            Some(State::Failed(_)) => "failed to load (GET /v1/models says why)",
            None => "is not served here",
        };
        let served: Vec<&str> =
            states.iter().filter(|(_, s)| matches!(s, State::Ready(_))).map(|(k, _)| k.as_str()).collect();
        ApiError::NotFound(format!(
            "model {} {why}; the served models are: {}",
            api::echo(&format!("{id:?}")),
            served.join(", ")
        ))
    }

    /// The default model's id.
    pub fn default_id(&self) -> &str {
        &self.default
    }

    /// The default model (requests that name none, TGI's routes, readiness). It is never
    /// unloaded; a reload replaces it in one step.
    pub fn default_model(&self) -> Arc<Served> {
        self.get(None).expect("the default model is always ready")
    }

    /// How many models are ready.
    pub fn ready_count(&self) -> usize {
        self.read().values().filter(|s| matches!(s, State::Ready(_))).count()
    }

    /// Every ready model.
    pub fn all(&self) -> Vec<Arc<Served>> {
        self.read().values().filter_map(|s| if let State::Ready(m) = s { Some(m.clone()) } else { None }).collect()
    }

    /// Keeps a version's counters in the metrics after it is no longer served.
    pub fn retire(&self, model: &Served) {
        self.retired.lock().unwrap_or_else(|e| e.into_inner()).push((model.id.clone(), model.scheduler.stats.clone()));
    }

    /// The counters of every scheduler since start, by model id: the ready models' and the
    /// retired ones'.
    pub fn stats(&self) -> Vec<(String, crate::scheduler::SharedStats)> {
        let mut all: Vec<_> = self.all().iter().map(|m| (m.id.clone(), m.scheduler.stats.clone())).collect();
        all.extend(self.retired.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        all
    }

    /// Every model's state, by id.
    pub fn states(&self) -> Vec<(String, State)> {
        self.read().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Sets a model's state and returns the one it replaces.
    pub fn set(&self, id: &str, state: State) -> Option<State> {
        self.write().insert(id.to_string(), state)
    }

    /// Removes a model from the set.
    pub fn remove(&self, id: &str) {
        self.write().remove(id);
    }

    /// A model's state.
    pub fn state(&self, id: &str) -> Option<State> {
        self.read().get(id).cloned()
    }

    /// Takes control of `id` (a load, reload or unload) until the guard is dropped; one at a
    /// time per model.
    pub fn control(&self, id: &str) -> Result<Busy<'_>, ApiError> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(id.to_string()) {
            return Err(ApiError::Conflict(format!(
                "model {} is being loaded or unloaded already; try again when that is done",
                api::echo(&format!("{id:?}"))
            )));
        }
        Ok(Busy { set: self, id: id.to_string() })
    }
}

/// Control of one model, released when dropped.
pub struct Busy<'a> {
    set: &'a ModelSet,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set.busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// Reads one model's directory, plans its threads and starts its scheduler (its sessions and
/// decode lanes).
pub async fn load(loader: &Loader, spec: &ModelSpec) -> anyhow::Result<Served> {
    let loaded = start(loader, spec).await;
    loader.metrics.model_loaded(&spec.id(), loaded.is_ok());
    loaded
}

async fn start(loader: &Loader, spec: &ModelSpec) -> anyhow::Result<Served> {
    let config = &loader.config.for_model(spec)?;
    let metrics = loader.metrics.model(&spec.id());
    let path = spec.path.clone();
    let failed = || format!("cannot start on model {}", spec.path.display());
    let dir = tokio::task::spawn_blocking(move || crate::model::ModelDir::read(&path))
        .await
        .context("model reading task")?
        .with_context(failed)?;
    let plan = crate::plan::ThreadPlan::for_host(config, dir.quantization.is_some());
    let (scheduler, info) = {
        let (dir, sessions, solo) = (dir.clone(), plan.sessions.clone(), plan.solo.clone());
        let scheduling = plan.scheduler_settings(config);
        let (observer, process) = (metrics.clone(), loader.process.clone());
        let start = move || SchedulerHandle::start(dir, sessions, scheduling, solo, observer, &process);
        tokio::task::spawn_blocking(start).await.context("model loading task")?.with_context(failed)?
    };
    log_loaded(spec, &info, &plan, config);
    let tasks = TaskSettings::resolve(config, &info.tasks, &dir.tokenizer)
        .map_err(|e| anyhow::anyhow!("model {}: t5serve.json: {e}", spec.path.display()))?;
    Ok(Served {
        id: spec.id(),
        spec: spec.clone(),
        scheduler,
        tasks: Arc::new(tasks),
        tokenizer: dir.tokenizer.clone(),
        limits: Arc::new(Limits::new(config, dir.dims.vocab_size)),
        info: Arc::new(info),
        in_flight: Default::default(),
        metrics,
    })
}

/// The start-up log line: what was loaded and the thread plan it runs with.
fn log_loaded(spec: &ModelSpec, info: &WorkerInfo, plan: &crate::plan::ThreadPlan, config: &Config) {
    let cpu = crate::model::cpu::host();
    let own: Vec<String> =
        spec.overrides.iter().map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default())).collect();
    let s = &plan.sessions;
    tracing::info!(
        model = %spec.id(),
        dir = %info.model_dir.display(),
        own_settings = %own.join(", "),
        files = %info.files.join(", "),
        decoder = info.layout,
        d_model = info.dims.d_model,
        layers = info.dims.num_layers,
        decoder_layers = info.dims.num_decoder_layers,
        heads = info.dims.num_heads,
        vocab = info.dims.vocab_size,
        joins_running_batch = info.can_join,
        weights = info.weights(),
        quantization = %info.quantization.as_ref().map_or_else(|| "none".to_string(), |q| q.to_string()),
        execution_provider = info.execution_provider,
        device_id = ?info.cuda_device,
        cpu_features = %cpu.names().join(","),
        int8_kernel = cpu.int8_kernel().name(),
        quantized = %crate::model::cpu::int8_kind(cpu.int8_kernel(), info.quantization.as_ref())
            .unwrap_or_else(|| "no".into()),
        decode_lanes = plan.lanes,
        intra_op_threads = s.intra_threads,
        ort_thread_pool = if s.global_pool { "global" } else { "per-session" },
        prefill_thread = s.prefill_threads.is_some(),
        solo_sessions = plan.solo.is_some(),
        prefill_and_step_threads = ?s.split_threads(),
        http_threads = plan.http_threads,
        tokenizer_threads = config.tokenizer_threads,
        intra_op_spinning = s.spinning,
        share_weights = s.share_weights,
        load_seconds = info.load_seconds,
        "model loaded"
    );
    if info.int8_may_saturate() {
        tracing::warn!(
            int8_kernel = cpu.int8_kernel().name(),
            "this int8 model has signed 8-bit weights, and this CPU has neither VNNI nor AMX: ONNX Runtime's \
             u8 x s8 kernel adds pairs of products in 16 bits with saturation, so outputs can differ from \
             other CPUs and lose accuracy; re-quantize with scripts/quantize_model.py --reduce-range \
             (7-bit weights, which cannot saturate) or serve the float32 export"
        );
    }
}
