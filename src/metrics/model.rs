//! The metric families labelled by model, and one model's children of them (`ModelMetrics`):
//! what its scheduler reports its timings to and its requests count their tokens and
//! latencies in. A model's versions (a reload, an unload and a load again) share its series.

use std::collections::BTreeMap;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};

use crate::scheduler::{FailReason, LoopObserver, SchedulerStats};

use super::{BATCH_BUCKETS, LATENCY_BUCKETS, ModelStats, PADDING_BUCKETS, Registrar, STEP_BUCKETS, catch_up};

const BY_MODEL: &[&str] = &["model"];

pub(super) struct Families {
    queue_duration_seconds: HistogramVec,
    time_to_first_token_seconds: HistogramVec,
    time_per_output_token_seconds: HistogramVec,
    queue_size: IntGaugeVec,
    active_rows: IntGaugeVec,
    batch_size: HistogramVec,
    input_tokens_total: IntCounterVec,
    generated_tokens_total: IntCounterVec,
    kv_cache_bytes: IntGaugeVec,
    memory_reserved_bytes: IntGaugeVec,
    requests_cancelled_total: IntCounterVec,
    requests_expired_total: IntCounterVec,
    solo_runs_total: IntCounterVec,
    rows_failed_total: IntCounterVec,
    encoder_duration_seconds: HistogramVec,
    decode_step_duration_seconds: HistogramVec,
    padding_ratio: HistogramVec,
    encoder_tokens_total: IntCounterVec,
    encoder_padded_tokens_total: IntCounterVec,
    encoder_cache: CacheFamilies,
    extract_entities_total: IntCounterVec,
    /// With `alloc-count`: Rust-side allocations and bytes per decoder step.
    #[cfg(feature = "alloc-count")]
    step_allocations: (HistogramVec, HistogramVec),
}

impl Families {
    pub(super) fn new(r: &Registrar) -> Self {
        let counter = |name: &str, help: &str| r.counter_vec(name, help, BY_MODEL);
        let gauge = |name: &str, help: &str| r.gauge_vec(name, help, BY_MODEL);
        let histogram = |name: &str, help: &str, buckets: &[f64]| r.histogram_vec(name, help, BY_MODEL, buckets);
        Self {
            queue_duration_seconds: histogram(
                "t5serve_queue_duration_seconds",
                "Seconds rows waited in the queue before decoding started.",
                LATENCY_BUCKETS,
            ),
            time_to_first_token_seconds: histogram(
                "t5serve_time_to_first_token_seconds",
                "Seconds from a request's arrival to its first generated token.",
                LATENCY_BUCKETS,
            ),
            time_per_output_token_seconds: histogram(
                "t5serve_time_per_output_token_seconds",
                "Seconds per generated token after the first, per request.",
                STEP_BUCKETS,
            ),
            queue_size: gauge("t5serve_queue_size", "Rows waiting in the queue."),
            active_rows: gauge("t5serve_active_rows", "Rows decoding now, over all cohorts."),
            batch_size: histogram("t5serve_batch_size", "Rows in each decoder step.", BATCH_BUCKETS),
            input_tokens_total: counter("t5serve_input_tokens_total", "Input tokens of requests queued since start."),
            generated_tokens_total: counter("t5serve_generated_tokens_total", "Tokens generated since start."),
            kv_cache_bytes: gauge(
                "t5serve_kv_cache_bytes",
                "Bytes of key/value cache and encoder output held by running rows.",
            ),
            memory_reserved_bytes: gauge(
                "t5serve_memory_reserved_bytes",
                "Bytes of the shared memory budget (max_batch_memory_mb) the model's lanes hold for their running \
                 rows: inputs padded to the longest, every row to its max_new_tokens.",
            ),
            requests_cancelled_total: counter(
                "t5serve_requests_cancelled_total",
                "Rows dropped because their client went away.",
            ),
            requests_expired_total: counter(
                "t5serve_requests_expired_total",
                "Rows answered 504 because they were still queued at their deadline.",
            ),
            solo_runs_total: counter(
                "t5serve_solo_runs_total",
                "Decoder runs on the solo (all-core) sessions while the other decode lanes were idle.",
            ),
            rows_failed_total: r.counter_vec(
                "t5serve_rows_failed_total",
                "Rows answered with an error because the model failed, by where: prefill, step, scoring, join or \
                 embedding.",
                &["model", "reason"],
            ),
            encoder_duration_seconds: histogram(
                "t5serve_encoder_duration_seconds",
                "Seconds of a new cohort's prefill: the encoder run and the first decoder step.",
                STEP_BUCKETS,
            ),
            decode_step_duration_seconds: histogram(
                "t5serve_decode_step_duration_seconds",
                "Seconds of one cached decoder step over a cohort.",
                STEP_BUCKETS,
            ),
            padding_ratio: histogram(
                "t5serve_padding_ratio",
                "Share of padding in each prefill's encoder batches, (padded - real) / padded tokens.",
                PADDING_BUCKETS,
            ),
            encoder_tokens_total: counter("t5serve_encoder_tokens_total", "Real input tokens the encoder ran on."),
            encoder_padded_tokens_total: counter(
                "t5serve_encoder_padded_tokens_total",
                "Input tokens the encoder ran on, padding included (input rows are bucketed by length).",
            ),
            encoder_cache: CacheFamilies::new(r),
            extract_entities_total: r.counter_vec(
                "t5serve_extract_entities_total",
                "Entities /v1/extract read from the model's output, by outcome: located in the input, not_located \
                 (kept without offsets), dropped (a type outside the request's types) or malformed (output parts that \
                 are not TYPE: span).",
                &["model", "outcome"],
            ),
            #[cfg(feature = "alloc-count")]
            step_allocations: (
                histogram(
                    "t5serve_decode_step_allocations",
                    "Rust-side heap allocations of one decoder step (alloc-count build).",
                    &[0.0, 10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0],
                ),
                histogram(
                    "t5serve_decode_step_allocated_bytes",
                    "Rust-side bytes allocated by one decoder step (alloc-count build).",
                    &[0.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8],
                ),
            ),
        }
    }

    /// Model `id`'s children.
    pub(super) fn model(&self, id: &str) -> ModelMetrics {
        let of = |h: &HistogramVec| h.with_label_values(&[id]);
        ModelMetrics {
            queue_duration: of(&self.queue_duration_seconds),
            time_to_first_token: of(&self.time_to_first_token_seconds),
            time_per_output_token: of(&self.time_per_output_token_seconds),
            batch_size: of(&self.batch_size),
            input_tokens: self.input_tokens_total.with_label_values(&[id]),
            encoder_duration: of(&self.encoder_duration_seconds),
            decode_step_duration: of(&self.decode_step_duration_seconds),
            padding_ratio: of(&self.padding_ratio),
            encoder_tokens: self.encoder_tokens_total.with_label_values(&[id]),
            encoder_padded_tokens: self.encoder_padded_tokens_total.with_label_values(&[id]),
            extract_entities: EXTRACT_OUTCOMES.map(|o| self.extract_entities_total.with_label_values(&[id, o])),
            #[cfg(feature = "alloc-count")]
            step_allocations: (of(&self.step_allocations.0), of(&self.step_allocations.1)),
        }
    }

    /// Sets the gauges and counters the schedulers keep, summed over each model's versions. A
    /// model no longer served keeps its counters (totals never go back); its gauges read 0.
    pub(super) fn read(&self, stats: &[ModelStats]) {
        let mut by_id: BTreeMap<&str, Vec<&SchedulerStats>> = BTreeMap::new();
        for (id, s) in stats {
            by_id.entry(id).or_default().push(s);
        }
        let get = SchedulerStats::get;
        for (id, versions) in by_id {
            let sum = |f: &dyn Fn(&SchedulerStats) -> u64| versions.iter().map(|s| f(s)).sum::<u64>();
            let gauge = |g: &IntGaugeVec, v: u64| g.with_label_values(&[id]).set(v as i64);
            gauge(&self.active_rows, sum(&|s| get(&s.active_rows)));
            gauge(&self.queue_size, sum(&|s| get(&s.queued_rows)));
            gauge(&self.kv_cache_bytes, sum(&|s| get(&s.kv_cache_bytes)));
            gauge(&self.memory_reserved_bytes, sum(&|s| get(&s.reserved_bytes)));
            gauge(&self.encoder_cache.bytes, sum(&|s| get(&s.encoder_cache.bytes)));
            let counter = |c: &IntCounterVec, v: u64| catch_up(&c.with_label_values(&[id]), v);
            counter(&self.generated_tokens_total, sum(&|s| get(&s.generated_tokens)));
            counter(&self.requests_cancelled_total, sum(&|s| get(&s.cancelled_rows)));
            counter(&self.requests_expired_total, sum(&|s| get(&s.expired_rows)));
            counter(&self.solo_runs_total, sum(&|s| get(&s.solo_runs)));
            counter(&self.encoder_cache.hits_total, sum(&|s| get(&s.encoder_cache.hits)));
            counter(&self.encoder_cache.misses_total, sum(&|s| get(&s.encoder_cache.misses)));
            counter(&self.encoder_cache.evictions_total, sum(&|s| get(&s.encoder_cache.evictions)));
            for reason in FailReason::ALL {
                let failed = self.rows_failed_total.with_label_values(&[id, reason.name()]);
                catch_up(&failed, sum(&|s| s.failed(reason)));
            }
        }
    }
}

/// The encoder cache's families (`scheduler::encoder_cache`).
struct CacheFamilies {
    hits_total: IntCounterVec,
    misses_total: IntCounterVec,
    evictions_total: IntCounterVec,
    bytes: IntGaugeVec,
}

impl CacheFamilies {
    fn new(r: &Registrar) -> Self {
        Self {
            hits_total: r.counter_vec(
                "t5serve_encoder_cache_hits_total",
                "Rows whose encoder output (and first decoder step) came from the encoder cache, or from an earlier \
                 row of the same batch with the same input.",
                BY_MODEL,
            ),
            misses_total: r.counter_vec(
                "t5serve_encoder_cache_misses_total",
                "Rows whose input was not in the encoder cache (the encoder ran for it).",
                BY_MODEL,
            ),
            evictions_total: r.counter_vec(
                "t5serve_encoder_cache_evictions_total",
                "Encoder cache entries dropped, least recently used first, to stay within encoder_cache_mb.",
                BY_MODEL,
            ),
            bytes: r.gauge_vec("t5serve_encoder_cache_bytes", "Bytes the encoder cache's entries hold.", BY_MODEL),
        }
    }
}

/// One model's metrics.
pub struct ModelMetrics {
    queue_duration: Histogram,
    pub time_to_first_token: Histogram,
    pub time_per_output_token: Histogram,
    batch_size: Histogram,
    pub input_tokens: IntCounter,
    encoder_duration: Histogram,
    decode_step_duration: Histogram,
    padding_ratio: Histogram,
    encoder_tokens: IntCounter,
    encoder_padded_tokens: IntCounter,
    /// By `EXTRACT_OUTCOMES`.
    extract_entities: [IntCounter; 4],
    #[cfg(feature = "alloc-count")]
    step_allocations: (Histogram, Histogram),
}

const EXTRACT_OUTCOMES: [&str; 4] = ["located", "not_located", "dropped", "malformed"];

impl ModelMetrics {
    /// What /v1/extract made of one output: its entities kept (whether each was located), those
    /// dropped by type, and its malformed parts.
    pub fn extracted(&self, located: &[bool], dropped: usize, malformed: usize) {
        let found = located.iter().filter(|&&l| l).count();
        for (counter, n) in self.extract_entities.iter().zip([found, located.len() - found, dropped, malformed]) {
            counter.inc_by(n as u64);
        }
    }
}

impl LoopObserver for ModelMetrics {
    fn queued(&self, seconds: f64) {
        self.queue_duration.observe(seconds);
    }
    fn encoded(&self, seconds: f64, _rows: usize) {
        self.encoder_duration.observe(seconds);
    }
    fn stepped(&self, seconds: f64, rows: usize) {
        self.decode_step_duration.observe(seconds);
        self.batch_size.observe(rows as f64);
    }
    #[cfg(feature = "alloc-count")]
    fn step_allocations(&self, count: u64, bytes: u64) {
        self.step_allocations.0.observe(count as f64);
        self.step_allocations.1.observe(bytes as f64);
    }
    fn padding(&self, real: usize, padded: usize) {
        if padded == 0 {
            return;
        }
        self.padding_ratio.observe(padded.saturating_sub(real) as f64 / padded as f64);
        self.encoder_tokens.inc_by(real as u64);
        self.encoder_padded_tokens.inc_by(padded as u64);
    }
}
