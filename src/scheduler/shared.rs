//! What a scheduler's threads share: the lanes' loads (for routing and for the solo sessions'
//! lease), the solo sessions themselves, and the guard that marks the service dead when any of
//! its threads ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::model::Seq2SeqModel;

use super::SchedulerStats;

/// How busy a lane is, for routing new rows to the least loaded one.
#[derive(Default)]
pub(super) struct LaneLoad {
    /// Rows sent to the lane that it has not queued yet.
    pub(super) sent: AtomicUsize,
    /// Rows the lane holds: queued, prefilling and decoding (as it last published).
    pub(super) held: AtomicUsize,
}

impl LaneLoad {
    pub(super) fn rows(&self) -> usize {
        self.sent.load(Ordering::Relaxed) + self.held.load(Ordering::Relaxed)
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

/// A lane's access to the solo sessions, and the other lanes' loads.
pub(super) struct Solo {
    sessions: Arc<SoloSessions>,
    others: Vec<Arc<LaneLoad>>,
}

impl Solo {
    pub(super) fn new(sessions: Arc<SoloSessions>, others: Vec<Arc<LaneLoad>>) -> Self {
        Self { sessions, others }
    }
}

/// Holds the solo sessions for one decoder run.
pub(super) struct SoloLease<'a>(&'a AtomicBool);

impl Drop for SoloLease<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The sessions for the next decoder run: the solo ones while the other lanes hold no rows and
/// no other lane has them (the lease holds them until dropped), else the lane's own.
pub(super) fn engine<'m>(
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
