//! Prometheus metrics: one struct owning its registry. Each metric's name and HELP text are
//! written once, where it is registered in `Metrics::new`. Scheduler gauges and counters are
//! atomics the decode threads keep (`SchedulerStats`), read at scrape time; their timings
//! arrive through `LoopObserver`, which the metrics implement and the scheduler is started
//! with. Label values are bounded: route templates, status codes, and fixed sets of reasons.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::model::cpu::CpuFeatures;
use crate::scheduler::{FailReason, LoopObserver, SchedulerStats};

/// Millisecond-scale latency buckets, 1 ms to 60 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Sub-millisecond to second buckets for per-token and per-step times.
pub const STEP_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const PADDING_BUCKETS: &[f64] = &[0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75];

pub struct Metrics {
    registry: Registry,
    // Names and HELP texts: in `new`.
    pub requests_total: IntCounterVec,
    pub request_duration_seconds: HistogramVec,
    requests_rejected_total: IntCounterVec,
    rows_failed_total: IntCounterVec,
    connections_refused_total: IntCounterVec,
    pub open_connections: IntGauge,
    queue_duration_seconds: Histogram,
    pub time_to_first_token_seconds: Histogram,
    pub time_per_output_token_seconds: Histogram,
    queue_size: IntGauge,
    active_rows: IntGauge,
    batch_size: Histogram,
    pub input_tokens_total: IntCounter,
    generated_tokens_total: IntCounter,
    kv_cache_bytes: IntGauge,
    requests_cancelled_total: IntCounter,
    requests_expired_total: IntCounter,
    solo_runs_total: IntCounter,
    encoder_duration_seconds: Histogram,
    decode_step_duration_seconds: Histogram,
    padding_ratio: Histogram,
    encoder_tokens_total: IntCounter,
    encoder_padded_tokens_total: IntCounter,
    /// With `alloc-count`: Rust-side allocations and bytes per decoder step.
    #[cfg(feature = "alloc-count")]
    step_allocations: (Histogram, Histogram),
    _build_info: IntGaugeVec,
}

impl Metrics {
    pub fn new(model: &str, execution_provider: &str, cpu: &CpuFeatures) -> Self {
        let r = Registrar(Registry::new());
        let by_reason = ["reason"];
        Self {
            requests_total: r.counter_vec(
                "t5serve_requests_total",
                "Requests answered, by route template and status code.",
                &["route", "status"],
            ),
            request_duration_seconds: r.histogram_vec(
                "t5serve_request_duration_seconds",
                "Seconds from a request's arrival to its response headers (a stream's start), by route.",
                &["route"],
            ),
            requests_rejected_total: r.counter_vec(
                "t5serve_requests_rejected_total",
                "Requests refused before any work, by reason.",
                &by_reason,
            ),
            rows_failed_total: r.counter_vec(
                "t5serve_rows_failed_total",
                "Rows answered with an error because the model failed, by where: prefill, step, scoring or join.",
                &by_reason,
            ),
            connections_refused_total: r.counter_vec(
                "t5serve_connections_refused_total",
                "Connections the server closed: at max_connections, or headers late (header_read_timeout_ms).",
                &by_reason,
            ),
            open_connections: r.gauge("t5serve_open_connections", "Open client connections."),
            queue_duration_seconds: r.histogram(
                "t5serve_queue_duration_seconds",
                "Seconds rows waited in the queue before decoding started.",
                LATENCY_BUCKETS,
            ),
            time_to_first_token_seconds: r.histogram(
                "t5serve_time_to_first_token_seconds",
                "Seconds from a request's arrival to its first generated token.",
                LATENCY_BUCKETS,
            ),
            time_per_output_token_seconds: r.histogram(
                "t5serve_time_per_output_token_seconds",
                "Seconds per generated token after the first, per request.",
                STEP_BUCKETS,
            ),
            queue_size: r.gauge("t5serve_queue_size", "Rows waiting in the queue."),
            active_rows: r.gauge("t5serve_active_rows", "Rows decoding now, over all cohorts."),
            batch_size: r.histogram("t5serve_batch_size", "Rows in each decoder step.", BATCH_BUCKETS),
            input_tokens_total: r.counter("t5serve_input_tokens_total", "Input tokens of requests queued since start."),
            generated_tokens_total: r.counter("t5serve_generated_tokens_total", "Tokens generated since start."),
            kv_cache_bytes: r
                .gauge("t5serve_kv_cache_bytes", "Bytes of key/value cache and encoder output held by running rows."),
            requests_cancelled_total: r
                .counter("t5serve_requests_cancelled_total", "Rows dropped because their client went away."),
            requests_expired_total: r.counter(
                "t5serve_requests_expired_total",
                "Rows answered 504 because they were still queued at their deadline.",
            ),
            solo_runs_total: r.counter(
                "t5serve_solo_runs_total",
                "Decoder runs on the solo (all-core) sessions while the other decode lanes were idle.",
            ),
            encoder_duration_seconds: r.histogram(
                "t5serve_encoder_duration_seconds",
                "Seconds of a new cohort's prefill: the encoder run and the first decoder step.",
                STEP_BUCKETS,
            ),
            decode_step_duration_seconds: r.histogram(
                "t5serve_decode_step_duration_seconds",
                "Seconds of one cached decoder step over a cohort.",
                STEP_BUCKETS,
            ),
            padding_ratio: r.histogram(
                "t5serve_padding_ratio",
                "Share of padding in each prefill's encoder batches, (padded - real) / padded tokens.",
                PADDING_BUCKETS,
            ),
            encoder_tokens_total: r.counter("t5serve_encoder_tokens_total", "Real input tokens the encoder ran on."),
            encoder_padded_tokens_total: r.counter(
                "t5serve_encoder_padded_tokens_total",
                "Input tokens the encoder ran on, padding included (input rows are bucketed by length).",
            ),
            #[cfg(feature = "alloc-count")]
            step_allocations: (
                r.histogram(
                    "t5serve_decode_step_allocations",
                    "Rust-side heap allocations of one decoder step (alloc-count build).",
                    &[0.0, 10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0],
                ),
                r.histogram(
                    "t5serve_decode_step_allocated_bytes",
                    "Rust-side bytes allocated by one decoder step (alloc-count build).",
                    &[0.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8],
                ),
            ),
            _build_info: r.register(build_info(model, execution_provider, cpu)),
            registry: r.0,
        }
    }

    /// Text exposition of every metric, with the scheduler's values read now.
    /// The text exposition, the schedulers' gauges and counters summed over the served models.
    pub fn render(&self, models: &[&SchedulerStats]) -> String {
        let sum = |f: &dyn Fn(&SchedulerStats) -> u64| models.iter().map(|s| f(s)).sum::<u64>();
        let get = SchedulerStats::get;
        self.active_rows.set(sum(&|s| get(&s.active_rows)) as i64);
        self.queue_size.set(sum(&|s| get(&s.queued_rows)) as i64);
        self.kv_cache_bytes.set(sum(&|s| get(&s.kv_cache_bytes)) as i64);
        catch_up(&self.generated_tokens_total, sum(&|s| get(&s.generated_tokens)));
        catch_up(&self.requests_cancelled_total, sum(&|s| get(&s.cancelled_rows)));
        catch_up(&self.requests_expired_total, sum(&|s| get(&s.expired_rows)));
        catch_up(&self.solo_runs_total, sum(&|s| get(&s.solo_runs)));
        for reason in FailReason::ALL {
            catch_up(&self.rows_failed_total.with_label_values(&[reason.name()]), sum(&|s| s.failed(reason)));
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }

    /// Counts a connection the server closed (`max_connections`, `header_timeout`).
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused_total.with_label_values(&[reason]).inc();
    }

    /// Counts one answered request, and a request refused before any work by its reason
    /// (`ApiError::rejection_reason`).
    pub fn record_response(&self, route: &str, status: u16, rejected: Option<&str>, seconds: f64) {
        self.requests_total.with_label_values(&[route, &status.to_string()]).inc();
        self.request_duration_seconds.with_label_values(&[route]).observe(seconds);
        if let Some(reason) = rejected {
            self.requests_rejected_total.with_label_values(&[reason]).inc();
        }
    }
}

/// Registers metrics as they are made.
struct Registrar(Registry);

impl Registrar {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0.register(Box::new(c.clone())).expect("unique metric");
        c
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid metric"),
        )
    }

    /// A histogram per label value, with the latency buckets.
    fn histogram_vec(&self, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        self.register(HistogramVec::new(opts, labels).expect("valid metric"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }
}

/// `t5serve_build_info`: constant 1, labelled with the build and what it serves.
fn build_info(model: &str, execution_provider: &str, cpu: &CpuFeatures) -> IntGaugeVec {
    let info = IntGaugeVec::new(
        Opts::new(
            "t5serve_build_info",
            "Constant 1, labelled with the build, what it serves, and the CPU's instruction sets that decide \
             ONNX Runtime's kernels (cpu_features, comma-separated) with the int8 kernel they select.",
        ),
        &["version", "model", "execution_provider", "cpu_features", "int8_kernel"],
    )
    .expect("valid metric");
    let labels =
        [env!("CARGO_PKG_VERSION"), model, execution_provider, &cpu.names().join(","), cpu.int8_kernel().name()];
    info.with_label_values(&labels).set(1);
    info
}

impl LoopObserver for Metrics {
    fn queued(&self, seconds: f64) {
        self.queue_duration_seconds.observe(seconds);
    }
    fn encoded(&self, seconds: f64, _rows: usize) {
        self.encoder_duration_seconds.observe(seconds);
    }
    fn stepped(&self, seconds: f64, rows: usize) {
        self.decode_step_duration_seconds.observe(seconds);
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
        self.encoder_tokens_total.inc_by(real as u64);
        self.encoder_padded_tokens_total.inc_by(padded as u64);
    }
}

/// Raises a counter to a monotonic total kept elsewhere.
fn catch_up(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}
