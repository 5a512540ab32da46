//! The decode thread of each decode lane (`lanes`). It owns its lane's sessions and queue, and
//! runs this loop:
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
//! (`buckets::length_buckets`), and the padding is reported in `t5serve_padding_ratio`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use crate::model::{ModelDir, Seq2SeqModel, SessionSettings};

use super::batch::{Cohort, NoObserver};
use super::budget::ModelBudget;
use super::encoder_cache::EncoderCache;
use super::prefill::{PrefillThread, start_rows};
use super::queue::{CostModel, Queue, QueueLimits, Waiting};
use super::settings::SchedulerSettings;
use super::shared::{AliveGuard, LaneLoad, Solo, engine};
use super::{Event, FailReason, RowError, RowRequest, SharedStats};

/// What a lane thread reports once its sessions are loaded.
pub(super) type Ready = Result<(), crate::model::ModelError>;

/// What a decode lane's thread needs to open its sessions and run.
pub(super) struct LaneThread {
    pub(super) solo: Option<Solo>,
    pub(super) index: usize,
    pub(super) dir: ModelDir,
    pub(super) sessions: SessionSettings,
    pub(super) settings: SchedulerSettings,
    pub(super) cost: CostModel,
    pub(super) alive: Arc<AtomicBool>,
    pub(super) stats: SharedStats,
    pub(super) load: Arc<LaneLoad>,
    /// The model's part of the process's memory budget.
    pub(super) budget: Arc<ModelBudget>,
    /// The model's encoder cache, shared by its lanes.
    pub(super) cache: Option<Arc<EncoderCache>>,
}

impl LaneThread {
    pub(super) fn run(self, ready: std_mpsc::Sender<Ready>, jobs: std_mpsc::Receiver<Vec<RowRequest>>) {
        // Marks the service dead however the thread ends, a panic included, so that health
        // checks fail instead of requests hanging.
        let alive = AliveGuard(self.alive.clone(), "decode");
        let model = match Seq2SeqModel::open(&self.dir, &self.sessions) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let limits = QueueLimits {
            max_batch_size: self.settings.max_batch_size,
            max_batch_bytes: self.settings.max_batch_bytes,
            max_queue_delay: self.settings.max_queue_delay,
            max_prefill_tokens: self.settings.max_prefill_tokens,
        };
        let prefill = match self.sessions.prefill_threads {
            None => None,
            Some(_) => match PrefillThread::spawn(
                model.clone(),
                self.cache.clone(),
                self.stats.clone(),
                self.alive.clone(),
                self.index,
            ) {
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
            queue: Queue::new(limits, self.cost),
            cost: self.cost,
            budget: self.budget,
            held: 0,
            blocked: false,
            cohorts: Vec::new(),
            settings: self.settings,
            stats: self.stats,
            load: self.load,
            shown: Shown::default(),
            prefill,
            solo: self.solo,
            cache: self.cache,
            busy: false,
        }
        .run(jobs);
    }
}

struct DecodeLoop {
    /// First, so that it is dropped first: on a panic the service is marked dead before the
    /// rows' channels close and their clients are answered.
    _alive: AliveGuard,
    model: Arc<Seq2SeqModel>,
    queue: Queue<RowRequest>,
    cost: CostModel,
    /// The model's part of the shared memory budget, and the bytes of it this lane holds (for
    /// its running rows and those being prefilled).
    budget: Arc<ModelBudget>,
    held: usize,
    /// The last admission left rows waiting because the shared budget was short (another
    /// model holds it): an idle lane then looks again every `BUDGET_POLL`.
    blocked: bool,
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
    cache: Option<Arc<EncoderCache>>,
    /// Whether this lane counts among the process's busy lanes (`runtime::lane_busy`).
    busy: bool,
}

/// One lane's last published share of the shared gauges.
#[derive(Default)]
struct Shown {
    queued: u64,
    active: u64,
    cohorts: u64,
    kv_cache_bytes: u64,
    reserved_bytes: u64,
}

/// How often an idle lane whose queued rows wait for the shared memory budget looks again.
const BUDGET_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// Moves a shared gauge by the change in one lane's share.
fn reshare(total: &std::sync::atomic::AtomicU64, shown: &mut u64, now: u64) {
    if now >= *shown {
        total.fetch_add(now - *shown, Ordering::Relaxed);
    } else {
        total.fetch_sub(*shown - now, Ordering::Relaxed);
    }
    *shown = now;
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
                if self.queue.is_empty() {
                    self.went_idle();
                }
                let first = match self.queue.next_wakeup() {
                    None => jobs.recv().map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
                    Some(at) => {
                        let wait = at.saturating_duration_since(Instant::now());
                        jobs.recv_timeout(if self.blocked { wait.max(BUDGET_POLL) } else { wait })
                    }
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
                self.went_idle();
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
                    Ok(report) => self.stats.record(report),
                    // The cohort's rows were told; the loop goes on with other work.
                    Err(_) => self.stats.fail(FailReason::Step, rows),
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

    /// Idle: the last lane of the process to go idle gives back what a burst of large inputs
    /// left in ONNX Runtime's arena.
    fn went_idle(&mut self) {
        if !std::mem::replace(&mut self.busy, false) || !crate::model::runtime::lane_idle() {
            return;
        }
        // Any session will do: every CPU session draws from the one shared arena.
        match self.model.release_memory() {
            Ok(()) => tracing::info!("memory given back after a burst of large inputs"),
            Err(e) => tracing::warn!(error = %e, "could not give memory back"),
        }
    }

    fn enqueue(&mut self, rows: Vec<RowRequest>) {
        if !std::mem::replace(&mut self.busy, true) {
            crate::model::runtime::lane_busy();
        }
        let now = Instant::now();
        let n = rows.len();
        for r in rows {
            let deadline = r.deadline;
            self.queue.push(r, now, deadline);
        }
        // Counted as held before they stop counting as sent: routing never sees them missing.
        self.publish();
        self.load.arrived(n);
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
        // The shared memory budget: what this lane may hold now, its running rows included.
        let (lane_budget, head) = (self.settings.max_batch_bytes, self.queue.head_bytes());
        let running_bytes = self.cost.batch_bytes(running.iter().copied());
        // Nothing queued, nothing to claim: the pool is not touched on a plain decode step.
        let limit = if self.queue.is_empty() {
            running_bytes
        } else {
            self.budget.claim(&mut self.held, running_bytes, lane_budget, head)
        };
        let formed = self.queue.next_batch_within(now, &running, room, limit);
        let started = formed
            .batch
            .iter()
            .flat_map(|e| std::iter::repeat_n((e.item.input_len(), e.item.max_new_tokens()), e.item.width()));
        let need = self.cost.batch_bytes(running.iter().copied().chain(started));
        self.budget.settle(&mut self.held, need);
        // Rows are left waiting for want of the shared budget (not of this lane's own).
        self.blocked = formed.batch.is_empty() && !self.queue.is_empty() && limit < lane_budget;
        let expired = formed.expired.len();
        // One log line per request (the rows of a request share its span), not one per row.
        let mut logged: Option<tracing::span::Id> = None;
        for (i, e) in formed.expired.iter().enumerate() {
            let id = e.item.span.id();
            if id.is_none() || id != logged {
                let rows = formed.expired[i..].iter().take_while(|o| id.is_some() && o.item.span.id() == id).count();
                e.item
                    .span
                    .in_scope(|| tracing::info!(rows = rows.max(1), "still queued at its deadline; answered 504"));
                logged = id;
            }
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
                    start_rows(model, batch, self.cache.as_deref(), &self.stats)
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
                    self.stats.fail(FailReason::Join, rows);
                }
            }
            None => {
                tracing::debug!(rows = c.len(), cohorts = self.cohorts.len() + 1, "cohort started");
                self.cohorts.push(c);
            }
        }
    }

    fn publish(&mut self) {
        // Rows being prefilled hold their part until they run; otherwise the lane gives back
        // what its finished rows held.
        if self.prefilling() == 0 {
            let running = self.cost.batch_bytes(self.cohorts.iter().flat_map(|c| c.budget_rows()));
            self.budget.settle(&mut self.held, running);
        }
        let queued = self.queue.len() as u64;
        let active = self.cohorts.iter().map(|c| c.len() as u64).sum::<u64>() + self.prefilling() as u64;
        let kv = self.cohorts.iter().map(|c| c.cache_bytes() as u64).sum();
        let (s, shown) = (&self.stats, &mut self.shown);
        reshare(&s.queued_rows, &mut shown.queued, queued);
        reshare(&s.active_rows, &mut shown.active, active);
        reshare(&s.cohorts, &mut shown.cohorts, self.cohorts.len() as u64);
        reshare(&s.kv_cache_bytes, &mut shown.kv_cache_bytes, kv);
        reshare(&s.reserved_bytes, &mut shown.reserved_bytes, self.held as u64);
        self.load.hold((queued + active) as usize);
    }
}
