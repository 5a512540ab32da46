//! The decode thread: it loads the model, then decodes each submitted job as one padded batch.
//! It exits when every handle is dropped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use crate::model::{ModelDims, Seq2SeqModel, SessionSettings};

use super::batch::{NoObserver, run_batch};
use super::{RowRequest, SchedulerError};

/// What the loaded model looks like, for logs and `/health`.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub dims: ModelDims,
    pub layout: &'static str,
    pub model_dir: PathBuf,
    pub load_seconds: f64,
}

/// Cheap to clone; submits jobs to the decode thread.
#[derive(Clone)]
pub struct SchedulerHandle {
    jobs: std_mpsc::Sender<Vec<RowRequest>>,
    alive: Arc<AtomicBool>,
}

impl SchedulerHandle {
    /// Loads the model on a new OS thread and returns once it is ready (or failed to load).
    pub fn start(
        model_dir: PathBuf,
        settings: SessionSettings,
    ) -> Result<(Self, WorkerInfo), SchedulerError> {
        let (jobs, job_rx) = std_mpsc::channel::<Vec<RowRequest>>();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let alive_thread = alive.clone();
        std::thread::Builder::new()
            .name("t5serve-decode".into())
            .spawn(move || {
                let started = Instant::now();
                let mut model = match Seq2SeqModel::load(&model_dir, &settings) {
                    Ok(m) => m,
                    Err(e) => {
                        alive_thread.store(false, Ordering::SeqCst);
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let info = WorkerInfo {
                    dims: model.dims.clone(),
                    layout: model.layout_name(),
                    model_dir: model_dir.clone(),
                    load_seconds: started.elapsed().as_secs_f64(),
                };
                let _ = ready_tx.send(Ok(info));
                while let Ok(rows) = job_rx.recv() {
                    let n = rows.len();
                    let t = Instant::now();
                    run_batch(&mut model, rows, &mut NoObserver);
                    tracing::debug!(
                        rows = n,
                        seconds = t.elapsed().as_secs_f64(),
                        "batch decoded"
                    );
                }
                alive_thread.store(false, Ordering::SeqCst);
            })
            .map_err(|e| {
                SchedulerError::Startup(crate::model::ModelError::Runtime(format!(
                    "cannot spawn the decode thread: {e}"
                )))
            })?;
        let info = ready_rx.recv().map_err(|_| SchedulerError::WorkerGone)??;
        Ok((Self { jobs, alive }, info))
    }

    /// Queues rows to be decoded together.
    pub fn submit(&self, rows: Vec<RowRequest>) -> Result<(), SchedulerError> {
        self.jobs.send(rows).map_err(|_| SchedulerError::WorkerGone)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

impl WorkerInfo {
    pub fn dims_tokenizer_path(&self) -> PathBuf {
        self.model_dir.join("tokenizer.json")
    }
}
