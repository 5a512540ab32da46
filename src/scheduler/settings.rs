//! What the scheduler is started with (`SchedulerSettings`) and what it reports about the model
//! it serves (`WorkerInfo`, for logs, `/v1/models` and `/health`).

use std::path::PathBuf;
use std::time::Duration;

use crate::model::{ModelDims, ModelDir};

/// How the decode loop forms and runs batches.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Most rows decoding at once, over all lanes and cohorts.
    pub max_batch_size: usize,
    /// Memory budget of all running rows (encoder output + worst-case K/V), in bytes, over all lanes.
    pub max_batch_bytes: usize,
    /// How long a waiting request may wait for others to start a cohort with.
    pub max_queue_delay: Duration,
    /// Most cohorts decoding side by side in one lane; more waiting rows queue until one finishes.
    pub max_cohorts: usize,
    /// Decode lanes: independent decode loops, each with its own sessions, queue and a share of
    /// the batch size and memory budget. New requests go to the least loaded lane.
    pub lanes: usize,
    /// Most input tokens (rows x the longest input) one prefill encodes; 0: no cap.
    pub max_prefill_tokens: usize,
    /// Bytes of the encoder cache the model's lanes share (0: none).
    pub encoder_cache_bytes: usize,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            max_batch_bytes: 1 << 30,
            max_queue_delay: Duration::from_millis(2),
            max_cohorts: 4,
            lanes: 1,
            max_prefill_tokens: 0,
            encoder_cache_bytes: 0,
        }
    }
}

impl SchedulerSettings {
    /// One lane's share: the batch size rounded up, the memory budget rounded down.
    pub(super) fn per_lane(&self) -> Self {
        let lanes = self.lanes.max(1);
        Self {
            max_batch_size: self.max_batch_size.div_ceil(lanes),
            max_batch_bytes: self.max_batch_bytes / lanes,
            lanes: 1,
            ..self.clone()
        }
    }
}

/// What the loaded model looks like, for logs and `/health`.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub dims: ModelDims,
    /// New rows join the running batch (the model has the masked decoder graph).
    pub can_join: bool,
    pub tasks: crate::model::ModelTasks,
    pub layout: &'static str,
    pub model_dir: PathBuf,
    /// The files loaded, by name.
    pub files: Vec<String>,
    pub load_seconds: f64,
    /// When the sessions were loaded, in Unix seconds (OpenAI's `created`).
    pub loaded_at: u64,
    /// ONNX Runtime's name of the provider every session runs on (registered, never a fallback).
    pub execution_provider: &'static str,
    pub cuda_device: Option<u32>,
    /// `quantization.json` of an int8 directory; `None` for float weights.
    pub quantization: Option<serde_json::Value>,
}

impl WorkerInfo {
    /// What a model directory read at start looks like once its sessions loaded in `load_seconds`.
    pub fn new(dir: &ModelDir, sessions: &crate::model::SessionSettings, load_seconds: f64) -> Self {
        Self {
            dims: dir.dims.clone(),
            can_join: dir.files.can_join(),
            tasks: dir.tasks.clone(),
            layout: dir.files.layout_name(),
            model_dir: dir.files.dir.clone(),
            files: dir.files.names(),
            load_seconds,
            loaded_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            execution_provider: sessions.provider_name(),
            cuda_device: sessions.cuda_device,
            quantization: dir.quantization.clone(),
        }
    }

    /// The weights' type: `quantization.json`'s `dtype` (`int4` from `--quantize int4`), `int8`
    /// for a quantized directory that does not say (int8 exports before int4 existed), else `float32`.
    pub fn weights(&self) -> &'static str {
        match self.quantization.as_ref().map(|q| q.get("dtype").and_then(|d| d.as_str())) {
            None => "float32",
            Some(Some("int4")) => "int4",
            Some(_) => "int8",
        }
    }

    /// Whether this int8 model's u8×s8 products can saturate on this machine's CPU kernels
    /// (`model::cpu`): signed full-range weights on a CPU without VNNI or AMX.
    pub fn int8_may_saturate(&self) -> bool {
        self.execution_provider == "CPUExecutionProvider"
            && crate::model::cpu::int8_may_saturate(crate::model::cpu::host().int8_kernel(), self.quantization.as_ref())
    }
}
