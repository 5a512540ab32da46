//! What a scheduler's threads share: the lanes' loads (for routing and for the solo sessions'
//! lease, counted over every model in the process too), the solo sessions themselves, and the
//! guard that marks the service dead when any of its threads ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::model::Seq2SeqModel;

use super::SchedulerStats;

/// Rows held by every lane of every model in the process (sent, queued, prefilling or
/// decoding): a lane takes its model's solo sessions only while no other lane anywhere holds
/// rows, so that one quiet model's lone request does not spread over every core while another
/// model's lanes are busy.
#[derive(Default)]
pub struct ProcessLoad {
    rows: AtomicUsize,
}

/// How busy a lane is, for routing new rows to the least loaded one.
pub(super) struct LaneLoad {
    /// Rows sent to the lane that it has not queued yet.
    sent: AtomicUsize,
    /// Rows the lane holds: queued, prefilling and decoding (as it last published).
    held: AtomicUsize,
    /// Every lane's rows in the process, this one's included.
    process: Arc<ProcessLoad>,
}

impl LaneLoad {
    pub(super) fn new(process: Arc<ProcessLoad>) -> Self {
        Self { sent: AtomicUsize::new(0), held: AtomicUsize::new(0), process }
    }

    pub(super) fn rows(&self) -> usize {
        self.sent.load(Ordering::Relaxed) + self.held.load(Ordering::Relaxed)
    }

    /// `n` rows were sent to the lane.
    pub(super) fn sent(&self, n: usize) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        self.process.rows.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` rows sent are no longer on their way: queued (and counted as held), or not sent.
    pub(super) fn arrived(&self, n: usize) {
        self.sent.fetch_sub(n, Ordering::Relaxed);
        self.process.rows.fetch_sub(n, Ordering::Relaxed);
    }

    /// The lane holds `n` rows now.
    pub(super) fn hold(&self, n: usize) {
        let before = self.held.swap(n, Ordering::Relaxed);
        if n >= before {
            self.process.rows.fetch_add(n - before, Ordering::Relaxed);
        } else {
            self.process.rows.fetch_sub(before - n, Ordering::Relaxed);
        }
    }

    /// No lane but this one holds rows, of any model.
    fn alone(&self) -> bool {
        self.process.rows.load(Ordering::Relaxed) <= self.rows()
    }
}

impl Drop for LaneLoad {
    /// A lane that ends (its model unloaded) leaves nothing counted.
    fn drop(&mut self) {
        self.process.rows.fetch_sub(self.rows(), Ordering::Relaxed);
    }
}

/// Marks the service dead when its thread (named for the log) ends, a panic included.
pub(super) struct AliveGuard(pub(super) Arc<AtomicBool>, pub(super) &'static str);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
        if std::thread::panicking() {
            tracing::error!(thread = self.1, "a scheduler thread panicked; the service is no longer healthy");
        }
    }
}

/// With several lanes, a set of sessions with a thread per core (one more copy of the weights),
/// shared by the lanes: a lane runs on it while every other lane is idle and nobody else holds
/// it, so that a lone request is not held to one lane's share of the cores. On 2 cores, one
/// thread per lane had made a lone t5-small int8 request 10-25% slower than one two-thread lane.
pub(super) struct SoloSessions {
    model: Seq2SeqModel,
    busy: AtomicBool,
}

impl SoloSessions {
    pub(super) fn new(model: Seq2SeqModel) -> Self {
        Self { model, busy: AtomicBool::new(false) }
    }
}

/// A lane's access to the solo sessions, and its own load (which knows every lane's).
pub(super) struct Solo {
    sessions: Arc<SoloSessions>,
    own: Arc<LaneLoad>,
}

impl Solo {
    pub(super) fn new(sessions: Arc<SoloSessions>, own: Arc<LaneLoad>) -> Self {
        Self { sessions, own }
    }
}

/// Holds the solo sessions for one decoder run.
pub(super) struct SoloLease<'a>(&'a AtomicBool);

impl Drop for SoloLease<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The sessions for the next decoder run: the solo ones while no other lane (of this model or
/// another) holds rows and no other lane has them (the lease holds them until dropped), else
/// the lane's own.
pub(super) fn engine<'m>(
    model: &'m Seq2SeqModel,
    solo: &'m Option<Solo>,
    stats: &SchedulerStats,
) -> (&'m Seq2SeqModel, Option<SoloLease<'m>>) {
    if let Some(s) = solo
        && s.own.alone()
        && s.sessions.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    {
        stats.solo_runs.fetch_add(1, Ordering::Relaxed);
        return (&s.sessions.model, Some(SoloLease(&s.sessions.busy)));
    }
    (model, None)
}
