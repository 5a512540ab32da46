//! Prefill: the encoder run and first decoder step of new rows (label scoring rows are scored
//! outright, embedding rows only run the encoder). Runs inline on a lane's decode thread, or on the lane's own prefill thread,
//! overlapped with the running rows' decoder steps.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use crate::model::Seq2SeqModel;

use super::batch::{Cohort, NoObserver};
use super::encoder_cache::EncoderCache;
use super::shared::AliveGuard;
use super::{FailReason, RowRequest, SchedulerStats, SharedStats};

/// The decode loop's end of the prefill thread: one batch of new rows at a time.
pub(super) struct PrefillThread {
    pub(super) rows: std_mpsc::Sender<Vec<RowRequest>>,
    pub(super) done: std_mpsc::Receiver<Option<Cohort>>,
    /// Rows of the batch being prefilled (0 when the thread is idle).
    pub(super) in_flight: usize,
}

impl PrefillThread {
    pub(super) fn spawn(
        model: Arc<Seq2SeqModel>,
        cache: Option<Arc<EncoderCache>>,
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
                if done_tx.send(start_rows(&model, rows, cache.as_deref(), &stats)).is_err() {
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
pub(super) fn start_rows(
    model: &Seq2SeqModel,
    batch: Vec<RowRequest>,
    cache: Option<&EncoderCache>,
    stats: &SchedulerStats,
) -> Option<Cohort> {
    let (embedding, batch): (Vec<RowRequest>, Vec<RowRequest>) = batch.into_iter().partition(|r| r.embed.is_some());
    if !embedding.is_empty() {
        let n = embedding.len();
        let t = Instant::now();
        let result = super::embed::embed_rows(model, embedding, cache);
        stats.observer().encoded(t.elapsed().as_secs_f64(), n);
        match result {
            Ok((real, padded)) => stats.observer().padding(real, padded),
            Err(_) => stats.fail(FailReason::Embedding, n as u64),
        }
    }
    let (scoring, rows): (Vec<RowRequest>, Vec<RowRequest>) = batch.into_iter().partition(|r| r.labels.is_some());
    if !scoring.is_empty() {
        let n = scoring.len() as u64;
        match super::score::score_rows(model, scoring, cache) {
            Ok((real, padded)) => stats.observer().padding(real, padded),
            Err(_) => stats.fail(FailReason::Scoring, n),
        }
    }
    if rows.is_empty() {
        return None;
    }
    let n = rows.len();
    let t = Instant::now();
    let started = Cohort::start(model, rows, cache, &mut NoObserver);
    stats.observer().encoded(t.elapsed().as_secs_f64(), n);
    match started {
        Ok((cohort, report)) => {
            stats.observer().padding(report.encoder_tokens, report.encoder_padded_tokens);
            stats.record(report);
            cohort
        }
        Err(_) => {
            stats.fail(FailReason::Prefill, n as u64);
            None
        }
    }
}
