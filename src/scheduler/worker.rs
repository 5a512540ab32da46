//! The decode thread of each decode lane (`decode_lanes`; the handle routes a request to the
//! lane holding the fewest rows, and with several lanes they share a set of solo sessions). It
//! owns its lane's model and queue, and runs this loop:
//!
//! 1. take newly submitted rows into the FIFO queue;
//! 2. drop queued rows whose client left, answer those past their deadline;
//! 3. start rows from the queue head that fit the memory budget (joining the running batch, or
//!    as a new cohort beside it);
//! 4. run one decoder step of every running cohort, dropping finished and cancelled rows.
//!
//! Why two modes: the decoder graphs optimum exports have no decoder self-attention mask, so
//! rows in one batch must share the same decoder length. With such a model a late request
//! starts its own *cohort* at the next step and cohorts' steps interleave (up to max_cohorts);
//! nobody waits for a running batch to finish, but every cohort pays a full decoder call per
//! step, and under Poisson arrivals requests queue for a cohort slot. Measured on the
//! t5-small shape (bench/run.sh, 2 cores, bench/results/2026-11-29-t5-small-vm-sessions1-2.md):
//! cohorts gave 686 tok/s at concurrency 32 (1.26x optimum) but an open-loop p99 at half the
//! saturation rate of 7.8x the single-request latency. With `decoder_with_past_masked.onnx`
//! (scripts/export_model.py --masked) new rows *join* the running batch between steps instead
//! (813 tok/s at 32, p99 4.5x in the same conditions): their self-attention cache is
//! left-padded and masked, cross-attention caches right-padded, and columns no row attends to
//! are trimmed; joined rows give exactly their solo tokens (tests/joining.rs). Joins are
//! therefore used whenever the model has the masked graph; plain exports keep working as cohorts.
//! A join or a leave copies only the rows that move (`model::kv`): under Poisson arrivals rows
//! join and leave one by one, and copying the whole cache each time had taken 18% of the CPU
//! and capped the open-loop rate at about 16 requests/s (t5-small int8).
//!
//! New rows are encoded shortest first in length buckets of at most 20% padding
//! (`batch::length_buckets`), and the padding is reported in `t5serve_padding_ratio`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use crate::model::{ModelDims, Seq2SeqModel, SessionSettings};

use super::batch::{Cohort, NoObserver, StepReport};
use super::queue::{CostModel, Queue, QueueLimits};
use super::{Event, RowError, RowRequest, SchedulerError, SchedulerStats, SharedStats};

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
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            max_batch_bytes: 1 << 30,
            max_queue_delay: Duration::from_millis(2),
            max_cohorts: 4,
            lanes: 1,
        }
    }
}

impl SchedulerSettings {
    /// One lane's share: the batch size rounded up, the memory budget rounded down.
    fn per_lane(&self) -> Self {
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
    /// ONNX Runtime's name of the provider every session runs on (registered, never a fallback).
    pub execution_provider: &'static str,
    pub cuda_device: Option<u32>,
    /// `quantization.json` of an int8 directory; `None` for float weights.
    pub quantization: Option<serde_json::Value>,
}

impl WorkerInfo {
    /// `int8` for a quantized directory, else `float32`.
    pub fn weights(&self) -> &'static str {
        if self.quantization.is_some() { "int8" } else { "float32" }
    }

    /// Whether this int8 model's u8×s8 products can saturate on this machine's CPU kernels
    /// (`model::cpu`): signed full-range weights on a CPU without VNNI or AMX.
    pub fn int8_may_saturate(&self) -> bool {
        self.execution_provider == "CPUExecutionProvider"
            && crate::model::cpu::int8_may_saturate(crate::model::cpu::host().int8_kernel(), self.quantization.as_ref())
    }
}

impl WorkerInfo {
    pub fn tokenizer_path(&self) -> PathBuf {
        self.model_dir.join("tokenizer.json")
    }
}

/// Cheap to clone; submits rows to the decode lanes.
#[derive(Clone)]
pub struct SchedulerHandle {
    lanes: Arc<[Lane]>,
    alive: Arc<AtomicBool>,
    cost: CostModel,
    /// One lane's memory budget: a row must fit it alone.
    max_batch_bytes: usize,
    pub stats: SharedStats,
}

/// The handle's end of one decode lane.
struct Lane {
    jobs: std_mpsc::Sender<Vec<RowRequest>>,
    load: Arc<LaneLoad>,
}

/// How busy a lane is, for routing new rows to the least loaded one.
#[derive(Default)]
struct LaneLoad {
    /// Rows sent to the lane that it has not queued yet.
    sent: AtomicUsize,
    /// Rows the lane holds: queued, prefilling and decoding (as it last published).
    held: AtomicUsize,
}

impl LaneLoad {
    fn rows(&self) -> usize {
        self.sent.load(Ordering::Relaxed) + self.held.load(Ordering::Relaxed)
    }
}

/// What a lane thread reports once its model is loaded.
type Ready = Result<(WorkerInfo, CostModel), crate::model::ModelError>;

impl SchedulerHandle {
    /// Loads the model in every lane (each on its own OS thread, in parallel) and returns once
    /// all are ready, or the first error.
    pub fn start(
        model_dir: PathBuf,
        sessions: SessionSettings,
        settings: SchedulerSettings,
        solo: Option<SessionSettings>,
    ) -> Result<(Self, WorkerInfo), SchedulerError> {
        let count = settings.lanes.max(1);
        let lane_settings = settings.per_lane();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Ready>();
        let alive = Arc::new(AtomicBool::new(true));
        let stats: SharedStats = Arc::new(SchedulerStats::default());
        let loads: Vec<Arc<LaneLoad>> = (0..count).map(|_| Arc::new(LaneLoad::default())).collect();
        let solo = match solo.filter(|_| count > 1) {
            Some(s) => Some(Arc::new(SoloSessions {
                model: Seq2SeqModel::load(&model_dir, &s).map_err(SchedulerError::Startup)?,
                busy: AtomicBool::new(false),
            })),
            None => None,
        };
        let mut lanes = Vec::with_capacity(count);
        for (index, load) in loads.iter().enumerate() {
            let (jobs, job_rx) = std_mpsc::channel::<Vec<RowRequest>>();
            let load = load.clone();
            let others = loads.iter().enumerate().filter(|&(i, _)| i != index).map(|(_, l)| l.clone()).collect();
            let solo = solo.clone().map(|sessions| Solo { sessions, others });
            let lane = LaneThread {
                solo,
                index,
                model_dir: model_dir.clone(),
                sessions: sessions.clone(),
                settings: lane_settings.clone(),
                alive: alive.clone(),
                stats: stats.clone(),
                load: load.clone(),
            };
            let ready = ready_tx.clone();
            let name = if count == 1 { "t5serve-decode".to_string() } else { format!("t5serve-decode-{index}") };
            std::thread::Builder::new().name(name).spawn(move || lane.run(ready, job_rx)).map_err(|e| {
                SchedulerError::Startup(crate::model::ModelError::Runtime(format!(
                    "cannot spawn the decode thread: {e}"
                )))
            })?;
            lanes.push(Lane { jobs, load });
        }
        drop(ready_tx);
        let mut first: Option<(WorkerInfo, CostModel)> = None;
        for _ in 0..count {
            // On an error the lanes already loaded end with the dropped senders.
            let (info, cost) = ready_rx.recv().map_err(|_| SchedulerError::WorkerGone)??;
            match &mut first {
                Some((kept, _)) => kept.load_seconds = kept.load_seconds.max(info.load_seconds),
                None => first = Some((info, cost)),
            }
        }
        let (info, cost) = first.ok_or(SchedulerError::WorkerGone)?;
        let max_batch_bytes = lane_settings.max_batch_bytes;
        Ok((Self { lanes: lanes.into(), alive, cost, max_batch_bytes, stats }, info))
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
    pub fn submit(&self, rows: Vec<RowRequest>) -> Result<(), SchedulerError> {
        for r in &rows {
            self.check_fits(r.input_ids.len(), r.params.max_new_tokens, r.width())?;
        }
        let lane = self.lanes.iter().min_by_key(|l| l.load.rows()).ok_or(SchedulerError::WorkerGone)?;
        let n = rows.len();
        lane.load.sent.fetch_add(n, Ordering::Relaxed);
        lane.jobs.send(rows).map_err(|_| {
            lane.load.sent.fetch_sub(n, Ordering::Relaxed);
            SchedulerError::WorkerGone
        })
    }

    /// Decode lanes.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

/// What a decode lane's thread needs to load its model and run.
struct LaneThread {
    solo: Option<Solo>,
    index: usize,
    model_dir: PathBuf,
    sessions: SessionSettings,
    settings: SchedulerSettings,
    alive: Arc<AtomicBool>,
    stats: SharedStats,
    load: Arc<LaneLoad>,
}

impl LaneThread {
    fn run(self, ready: std_mpsc::Sender<Ready>, jobs: std_mpsc::Receiver<Vec<RowRequest>>) {
        // Marks the service dead however the thread ends, a panic included, so that health
        // checks fail instead of requests hanging.
        let alive = AliveGuard(self.alive.clone(), "decode");
        let started = Instant::now();
        let model = match Seq2SeqModel::load(&self.model_dir, &self.sessions) {
            Ok(m) => m,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let d = &model.dims;
        let cost = CostModel::from_dims(d.d_model, d.num_decoder_layers, d.num_heads, d.d_kv);
        let (tasks, quantization) = match model.files.tasks().and_then(|t| Ok((t, model.files.quantization()?))) {
            Ok(found) => found,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let info = WorkerInfo {
            can_join: model.can_join(),
            tasks,
            dims: model.dims.clone(),
            layout: model.layout_name(),
            model_dir: self.model_dir.clone(),
            files: model.files.names(),
            load_seconds: started.elapsed().as_secs_f64(),
            execution_provider: self.sessions.provider_name(),
            cuda_device: self.sessions.cuda_device,
            quantization,
        };
        let _ = ready.send(Ok((info, cost)));
        let limits = QueueLimits {
            max_batch_size: self.settings.max_batch_size,
            max_batch_bytes: self.settings.max_batch_bytes,
            max_queue_delay: self.settings.max_queue_delay,
        };
        let model = Arc::new(model);
        let prefill = match self.sessions.prefill_threads {
            None => None,
            Some(_) => match PrefillThread::spawn(model.clone(), self.stats.clone(), self.alive.clone(), self.index) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::error!(error = %e, "cannot spawn the prefill thread; prefill runs inline");
                    None
                }
            },
        };
        DecodeLoop {
            _alive: alive,
            model,
            queue: Queue::new(limits, cost),
            cohorts: Vec::new(),
            settings: self.settings,
            stats: self.stats,
            load: self.load,
            shown: Shown::default(),
            prefill,
            solo: self.solo,
        }
        .run(jobs);
    }
}

/// Marks the service dead when its thread (named for the log) ends, a panic included.
struct AliveGuard(Arc<AtomicBool>, &'static str);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
        if std::thread::panicking() {
            tracing::error!(thread = self.1, "a scheduler thread panicked; the service is no longer healthy");
        }
    }
}

struct DecodeLoop {
    /// First, so that it is dropped first: on a panic the service is marked dead before the
    /// rows' channels close and their clients are answered.
    _alive: AliveGuard,
    model: Arc<Seq2SeqModel>,
    queue: Queue<RowRequest>,
    cohorts: Vec<Cohort>,
    settings: SchedulerSettings,
    /// Shared by all lanes: the gauges are the sums of the lanes' shares.
    stats: SharedStats,
    /// This lane's load, read by the handle's routing.
    load: Arc<LaneLoad>,
    /// This lane's share of the gauges, as last added to `stats`.
    shown: Shown,
    /// The prefill thread, when prefill overlaps decoding.
    prefill: Option<PrefillThread>,
    solo: Option<Solo>,
}

/// With several lanes, a set of sessions with a thread per core (one more copy of the weights),
/// shared by the lanes: a lane runs on it while every other lane is idle and nobody else holds
/// it, so that a lone request is not held to one lane's share of the cores. On 2 cores, one
/// thread per lane had made a lone t5-small int8 request 10-25% slower than one two-thread lane.
struct SoloSessions {
    model: Seq2SeqModel,
    busy: AtomicBool,
}

/// A lane's access to the solo sessions, and the other lanes' loads.
struct Solo {
    sessions: Arc<SoloSessions>,
    others: Vec<Arc<LaneLoad>>,
}

/// Holds the solo sessions for one decoder run.
struct SoloLease<'a>(&'a AtomicBool);

impl Drop for SoloLease<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The sessions for the next decoder run: the solo ones while the other lanes hold no rows and
/// no other lane has them (the lease holds them until dropped), else the lane's own.
fn engine<'m>(
    model: &'m Seq2SeqModel,
    solo: &'m Option<Solo>,
    stats: &SchedulerStats,
) -> (&'m Seq2SeqModel, Option<SoloLease<'m>>) {
    if let Some(s) = solo
        && s.others.iter().all(|l| l.rows() == 0)
        && s.sessions.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    {
        stats.solo_runs.fetch_add(1, Ordering::Relaxed);
        return (&s.sessions.model, Some(SoloLease(&s.sessions.busy)));
    }
    (model, None)
}

/// One lane's last published share of the shared gauges.
#[derive(Default)]
struct Shown {
    queued: u64,
    active: u64,
    cohorts: u64,
    kv_cache_bytes: u64,
}

/// Moves a shared gauge by the change in one lane's share.
fn reshare(total: &std::sync::atomic::AtomicU64, shown: &mut u64, now: u64) {
    if now >= *shown {
        total.fetch_add(now - *shown, Ordering::Relaxed);
    } else {
        total.fetch_sub(*shown - now, Ordering::Relaxed);
    }
    *shown = now;
}

/// The decode loop's end of the prefill thread: one batch of new rows at a time.
struct PrefillThread {
    rows: std_mpsc::Sender<Vec<RowRequest>>,
    done: std_mpsc::Receiver<Option<Cohort>>,
    /// Rows of the batch being prefilled (0 when the thread is idle).
    in_flight: usize,
}

impl PrefillThread {
    fn spawn(
        model: Arc<Seq2SeqModel>,
        stats: SharedStats,
        alive: Arc<AtomicBool>,
        lane: usize,
    ) -> std::io::Result<Self> {
        let (rows_tx, rows_rx) = std_mpsc::channel::<Vec<RowRequest>>();
        let (done_tx, done_rx) = std_mpsc::channel();
        std::thread::Builder::new().name(format!("t5serve-prefill-{lane}")).spawn(move || {
            let _alive = AliveGuard(alive, "prefill");
            // Ends when the decode loop drops its sender.
            for rows in rows_rx {
                if done_tx.send(start_rows(&model, rows, &stats)).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { rows: rows_tx, done: done_rx, in_flight: 0 })
    }
}

/// Prefills a batch of new rows: label scoring rows are scored outright; the others are
/// encoded (in length buckets) and run their first decoder step, emitting their first token.
/// Returns the started cohort, if any row is still running. Runs on the prefill thread, or
/// inline on the decode thread.
fn start_rows(model: &Seq2SeqModel, batch: Vec<RowRequest>, stats: &SchedulerStats) -> Option<Cohort> {
    let (scoring, rows): (Vec<RowRequest>, Vec<RowRequest>) = batch.into_iter().partition(|r| r.labels.is_some());
    if !scoring.is_empty() {
        let n = scoring.len() as u64;
        match super::score::score_rows(model, scoring) {
            Ok((real, padded)) => stats.observer().padding(real, padded),
            Err(_) => {
                stats.failed_rows.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
    if rows.is_empty() {
        return None;
    }
    let n = rows.len();
    let t = Instant::now();
    let started = Cohort::start(model, rows, &mut NoObserver);
    stats.observer().encoded(t.elapsed().as_secs_f64(), n);
    match started {
        Ok((cohort, report)) => {
            stats.observer().padding(report.encoder_tokens, report.encoder_padded_tokens);
            record(stats, report);
            cohort
        }
        Err(_) => {
            stats.failed_rows.fetch_add(n as u64, Ordering::Relaxed);
            None
        }
    }
}

impl DecodeLoop {
    fn run(mut self, jobs: std_mpsc::Receiver<Vec<RowRequest>>) {
        let mut open = true;
        loop {
            // 1. Intake: block only when there is nothing to decode; with a prefill in flight,
            // until it is done (new rows wait for the prefill thread anyway).
            if self.cohorts.is_empty() && self.prefilling() > 0 {
                match self.prefill.as_ref().map(|p| p.done.recv()) {
                    Some(Ok(cohort)) => self.prefilled(cohort),
                    _ => {
                        tracing::error!("the prefill thread is gone; the decode loop stops");
                        return;
                    }
                }
            } else if self.cohorts.is_empty() && open {
                let first = match self.queue.next_wakeup() {
                    None => jobs.recv().map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
                    Some(at) => jobs.recv_timeout(at.saturating_duration_since(Instant::now())),
                };
                match first {
                    Ok(rows) => self.enqueue(rows),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => open = false,
                }
            }
            loop {
                match jobs.try_recv() {
                    Ok(rows) => self.enqueue(rows),
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if let Some(prefill) = &mut self.prefill
                && prefill.in_flight > 0
            {
                match prefill.done.try_recv() {
                    Ok(cohort) => self.prefilled(cohort),
                    Err(std_mpsc::TryRecvError::Empty) => {}
                    Err(std_mpsc::TryRecvError::Disconnected) => {
                        tracing::error!("the prefill thread is gone; the decode loop stops");
                        return;
                    }
                }
            }
            if !open && self.queue.is_empty() && self.cohorts.is_empty() && self.prefilling() == 0 {
                return;
            }
            // 2-3. Form a new cohort from the queue head.
            self.admit();
            // 4. One step of every cohort.
            for cohort in &mut self.cohorts {
                let (model, _lease) = engine(&self.model, &self.solo, &self.stats);
                let rows = cohort.len() as u64;
                #[cfg(feature = "alloc-count")]
                let allocated = crate::alloc_count::thread_counts();
                let t = Instant::now();
                let result = cohort.step(model, &mut NoObserver);
                self.stats.observer().stepped(t.elapsed().as_secs_f64(), rows as usize);
                #[cfg(feature = "alloc-count")]
                {
                    let (n, bytes) = crate::alloc_count::thread_counts();
                    self.stats.observer().step_allocations(n - allocated.0, bytes - allocated.1);
                }
                match result {
                    Ok(report) => record(&self.stats, report),
                    // The cohort's rows were told; the loop goes on with other work.
                    Err(_) => {
                        self.stats.failed_rows.fetch_add(rows, Ordering::Relaxed);
                    }
                }
            }
            self.cohorts.retain(|c| !c.is_empty());
            self.publish();
            if !open && self.cohorts.is_empty() && self.prefilling() == 0 && !self.queue.is_empty() {
                // No more intake: let the queue's delay pass rather than spin.
                if let Some(at) = self.queue.next_wakeup() {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                }
            }
        }
    }

    fn enqueue(&mut self, rows: Vec<RowRequest>) {
        let now = Instant::now();
        let n = rows.len();
        for r in rows {
            let deadline = r.deadline;
            self.queue.push(r, now, deadline);
        }
        // Counted as held before they stop counting as sent: routing never sees them missing.
        self.publish();
        self.load.sent.fetch_sub(n, Ordering::Relaxed);
    }

    /// Rows being prefilled on the prefill thread.
    fn prefilling(&self) -> usize {
        self.prefill.as_ref().map_or(0, |p| p.in_flight)
    }

    fn admit(&mut self) {
        // One prefill at a time: rows arriving meanwhile queue up and are prefilled together next.
        if self.prefilling() > 0 {
            return;
        }
        let now = Instant::now();
        let running: Vec<(usize, usize)> = self.cohorts.iter().flat_map(|c| c.budget_rows()).collect();
        // New rows join the running batch when the model can; otherwise they need a cohort slot.
        let room = self.cohorts.len() < self.settings.max_cohorts || self.model.can_join();
        let formed = self.queue.next_batch(now, &running, room);
        let expired = formed.expired.len();
        for e in formed.expired {
            e.item.span.in_scope(|| tracing::info!("still queued at its deadline; answered 504"));
            let _ = e.item.events.send(Event::Error(RowError::DeadlineExceeded));
        }
        self.stats.expired_rows.fetch_add(expired as u64, Ordering::Relaxed);
        self.stats.cancelled_rows.fetch_add(formed.closed as u64, Ordering::Relaxed);
        if formed.batch.is_empty() {
            return;
        }
        for e in &formed.batch {
            self.stats.observer().queued(now.saturating_duration_since(e.enqueued).as_secs_f64());
        }
        let batch: Vec<RowRequest> = formed.batch.into_iter().map(|e| e.item).collect();
        match &mut self.prefill {
            Some(prefill) => {
                let n = batch.iter().map(RowRequest::width).sum::<usize>().max(1);
                match prefill.rows.send(batch) {
                    Ok(()) => prefill.in_flight = n,
                    // Its rows' channels were dropped with it: their clients get an error.
                    Err(_) => tracing::error!("the prefill thread is gone"),
                }
            }
            None => {
                let cohort = {
                    let (model, _lease) = engine(&self.model, &self.solo, &self.stats);
                    start_rows(model, batch, &self.stats)
                };
                self.place(cohort);
            }
        }
    }

    /// A prefill finished: its rows join the running batch or start a cohort.
    fn prefilled(&mut self, cohort: Option<Cohort>) {
        if let Some(p) = &mut self.prefill {
            p.in_flight = 0;
        }
        self.place(cohort);
        self.publish();
    }

    fn place(&mut self, cohort: Option<Cohort>) {
        let Some(c) = cohort else { return };
        // With the masked decoder graph, new rows join the running batch.
        match self.cohorts.first_mut().filter(|main| main.can_absorb() && c.can_absorb()) {
            Some(main) => {
                let rows = c.len() as u64;
                if let Err(e) = main.absorb(c) {
                    tracing::error!(error = %e, "joining the running batch failed");
                    self.stats.failed_rows.fetch_add(rows, Ordering::Relaxed);
                }
            }
            None => {
                tracing::debug!(rows = c.len(), cohorts = self.cohorts.len() + 1, "cohort started");
                self.cohorts.push(c);
            }
        }
    }

    fn publish(&mut self) {
        let queued = self.queue.len() as u64;
        let active = self.cohorts.iter().map(|c| c.len() as u64).sum::<u64>() + self.prefilling() as u64;
        let kv = self.cohorts.iter().map(|c| c.cache_bytes() as u64).sum();
        let (s, shown) = (&self.stats, &mut self.shown);
        reshare(&s.queued_rows, &mut shown.queued, queued);
        reshare(&s.active_rows, &mut shown.active, active);
        reshare(&s.cohorts, &mut shown.cohorts, self.cohorts.len() as u64);
        reshare(&s.kv_cache_bytes, &mut shown.kv_cache_bytes, kv);
        self.load.held.store((queued + active) as usize, Ordering::Relaxed);
    }
}

fn record(stats: &SchedulerStats, r: StepReport) {
    stats.generated_tokens.fetch_add(r.tokens as u64, Ordering::Relaxed);
    stats.cancelled_rows.fetch_add(r.cancelled as u64, Ordering::Relaxed);
}
