//! The decode lanes (`decode_lanes`) and the handle that submits rows to them: each lane is an
//! OS thread with its own sessions and queue (`decode::LaneThread`); the handle routes a
//! request to the lane holding the fewest rows. With several lanes they share a set of solo
//! sessions on all cores, leased to one lane at a time while the others are idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use crate::model::{ModelDir, Seq2SeqModel, SessionSettings};

use super::decode::LaneThread;
use super::encoder_cache::EncoderCache;
use super::queue::CostModel;
use super::settings::{SchedulerSettings, WorkerInfo};
use super::shared::{LaneLoad, Solo, SoloSessions};
use super::{LoopObserver, Process, RowRequest, SchedulerError, SchedulerStats, SharedStats};

/// Cheap to clone; submits rows to the decode lanes.
#[derive(Clone)]
pub struct SchedulerHandle {
    lanes: Arc<[Lane]>,
    alive: Arc<AtomicBool>,
    cost: CostModel,
    /// One lane's memory budget: a row must fit it alone.
    max_batch_bytes: usize,
    pub stats: SharedStats,
    /// Held by every decode thread until it has ended (its sessions dropped).
    threads: std::sync::Weak<()>,
}

/// The handle's end of one decode lane.
struct Lane {
    jobs: std_mpsc::Sender<Vec<RowRequest>>,
    load: Arc<LaneLoad>,
}

impl Lane {
    /// Hands rows to the lane's decode thread.
    fn send(&self, rows: Vec<RowRequest>) -> Result<(), SchedulerError> {
        let n = rows.len();
        self.load.sent(n);
        self.jobs.send(rows).map_err(|_| {
            self.load.arrived(n);
            SchedulerError::WorkerGone
        })
    }
}

impl SchedulerHandle {
    /// Opens the model's sessions in every lane (each on its own OS thread, in parallel) and
    /// returns once all are ready, or the first error. The model directory has been read once;
    /// the decode threads report their timings to `observer`, and share with every other model's
    /// what `process` holds (a lane's own memory budget is at most the process's).
    pub fn start(
        dir: ModelDir,
        sessions: SessionSettings,
        settings: SchedulerSettings,
        solo: Option<SessionSettings>,
        observer: Arc<dyn LoopObserver>,
        process: &Process,
    ) -> Result<(Self, WorkerInfo), SchedulerError> {
        let budget = process.memory.join();
        let started = Instant::now();
        let count = settings.lanes.max(1);
        let mut lane_settings = settings.per_lane();
        lane_settings.max_batch_bytes = lane_settings.max_batch_bytes.min(budget.total());
        let (ready_tx, ready_rx) = std_mpsc::channel::<super::decode::Ready>();
        let alive = Arc::new(AtomicBool::new(true));
        let stats: SharedStats = Arc::new(SchedulerStats::new(observer));
        let cache = EncoderCache::new(settings.encoder_cache_bytes, stats.encoder_cache.clone()).map(Arc::new);
        let d = &dir.dims;
        let cost = CostModel::from_dims(d.d_model, d.num_decoder_layers, d.num_heads, d.d_kv);
        let loads: Vec<Arc<LaneLoad>> = (0..count).map(|_| Arc::new(LaneLoad::new(process.load.clone()))).collect();
        let solo = match solo.filter(|_| count > 1) {
            Some(s) => {
                Some(Arc::new(SoloSessions::new(Seq2SeqModel::open(&dir, &s).map_err(SchedulerError::Startup)?)))
            }
            None => None,
        };
        let mut lanes = Vec::with_capacity(count);
        let running = Arc::new(());
        for (index, load) in loads.iter().enumerate() {
            let (jobs, job_rx) = std_mpsc::channel::<Vec<RowRequest>>();
            let lane = LaneThread {
                solo: solo.clone().map(|sessions| Solo::new(sessions, load.clone())),
                index,
                dir: dir.clone(),
                sessions: sessions.clone(),
                settings: lane_settings.clone(),
                cost,
                alive: alive.clone(),
                stats: stats.clone(),
                load: load.clone(),
                budget: budget.clone(),
                cache: cache.clone(),
            };
            let (ready, token) = (ready_tx.clone(), running.clone());
            let name = if count == 1 { "t5serve-decode".to_string() } else { format!("t5serve-decode-{index}") };
            let thread = move || {
                lane.run(ready, job_rx);
                drop(token);
            };
            std::thread::Builder::new().name(name).spawn(thread).map_err(|e| {
                SchedulerError::Startup(crate::model::ModelError::Runtime(format!(
                    "cannot spawn the decode thread: {e}"
                )))
            })?;
            lanes.push(Lane { jobs, load: load.clone() });
        }
        drop(ready_tx);
        for _ in 0..count {
            // On an error the lanes already loaded end with the dropped senders.
            ready_rx.recv().map_err(|_| SchedulerError::WorkerGone)??;
        }
        let info = WorkerInfo::new(&dir, &sessions, started.elapsed().as_secs_f64());
        let max_batch_bytes = lane_settings.max_batch_bytes;
        let threads = Arc::downgrade(&running);
        Ok((Self { lanes: lanes.into(), alive, cost, max_batch_bytes, stats, threads }, info))
    }

    /// Refuses at once a row that could never fit a lane's memory budget, even alone.
    pub fn check_fits(&self, input_len: usize, max_new_tokens: usize, width: usize) -> Result<(), SchedulerError> {
        let need = self.cost.batch_bytes(std::iter::repeat_n((input_len, max_new_tokens), width));
        if need > self.max_batch_bytes {
            return Err(SchedulerError::TooLarge { need, limit: self.max_batch_bytes });
        }
        Ok(())
    }

    /// Queues rows in the least loaded lane; they keep their order there.
    pub fn submit(&self, mut rows: Vec<RowRequest>) -> Result<(), SchedulerError> {
        for r in &rows {
            self.check_fits(r.input_ids.len(), r.params.max_new_tokens, r.width())?;
        }
        // Embedding rows are independent encoder runs: a request's rows are dealt over the
        // lanes in turn by length (each lane gets the same mix of lengths, so they finish
        // together), and one large request uses every lane. A generation request stays in one
        // lane, decoded as one batch.
        let spread = self.lanes.len() > 1 && rows.len() > 1 && rows.iter().all(|r| r.embed.is_some());
        if !spread {
            let lane = self.lanes.iter().min_by_key(|l| l.load.rows()).ok_or(SchedulerError::WorkerGone)?;
            return lane.send(rows);
        }
        let mut lanes: Vec<&Lane> = self.lanes.iter().collect();
        lanes.sort_by_key(|l| l.load.rows());
        rows.sort_by_key(|r| r.input_ids.len());
        let mut shares: Vec<Vec<RowRequest>> = lanes.iter().map(|_| Vec::new()).collect();
        for (i, row) in rows.into_iter().enumerate() {
            shares[i % lanes.len()].push(row);
        }
        for (lane, share) in lanes.into_iter().zip(shares) {
            if !share.is_empty() {
                lane.send(share)?;
            }
        }
        Ok(())
    }

    /// Counts the decode threads still running (`strong_count`) without keeping them: once
    /// every handle is dropped, each ends when its rows are done, dropping its sessions.
    pub fn threads(&self) -> std::sync::Weak<()> {
        self.threads.clone()
    }

    /// Decode lanes.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}
