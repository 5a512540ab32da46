//! Prometheus metrics: one struct owning its registry. Each metric's name and HELP text are
//! written once, where it is registered (`Metrics::new`, and `model::Families::new` for those
//! by model). Scheduler gauges and counters are atomics the decode threads keep
//! (`SchedulerStats`), read at scrape time; their timings arrive through `LoopObserver`, which
//! each model's `ModelMetrics` implement and its scheduler is started with. Label values are
//! bounded: route templates, status codes, fixed sets of reasons, and the ids of models the
//! server was configured with or loaded from its repository (never an id a request made up).

mod model;

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::cpu::CpuFeatures;
use crate::scheduler::SchedulerStats;

use model::Families;
pub use model::ModelMetrics;

/// Millisecond-scale latency buckets, 1 ms to 60 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Sub-millisecond to second buckets for per-token and per-step times.
pub const STEP_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const PADDING_BUCKETS: &[f64] = &[0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75];

pub struct Metrics {
    registry: Registry,
    // Names and HELP texts: in `new` (and `model::Families::new` for those by model).
    requests_total: IntCounterVec,
    request_duration_seconds: HistogramVec,
    requests_rejected_total: IntCounterVec,
    connections_refused_total: IntCounterVec,
    pub open_connections: IntGauge,
    model_state: IntGaugeVec,
    model_loads_total: IntCounterVec,
    /// The families labelled by model.
    by_model: Families,
    /// One scrape at a time: the gauges by model are cleared and set anew for each.
    rendering: std::sync::Mutex<()>,
    _build_info: IntGaugeVec,
}

/// What the metrics read of one model's scheduler at a scrape: its id and counters (a model
/// reloaded or unloaded has several versions; their counters add up under its id).
pub type ModelStats<'a> = (&'a str, &'a SchedulerStats);

impl Metrics {
    pub fn new(model: &str, execution_provider: &str, cpu: &CpuFeatures) -> Self {
        let r = Registrar(Registry::new());
        let by_reason = ["reason"];
        Self {
            requests_total: r.counter_vec(
                "t5serve_requests_total",
                "Requests answered, by route template, status code and model (empty for requests that named no \
                 served model or run none).",
                &["route", "status", "model"],
            ),
            request_duration_seconds: r.histogram_vec(
                "t5serve_request_duration_seconds",
                "Seconds from a request's arrival to its response headers (a stream's start), by route and model.",
                &["route", "model"],
                LATENCY_BUCKETS,
            ),
            requests_rejected_total: r.counter_vec(
                "t5serve_requests_rejected_total",
                "Requests refused before any work, by reason.",
                &by_reason,
            ),
            connections_refused_total: r.counter_vec(
                "t5serve_connections_refused_total",
                "Connections the server closed: at max_connections, or headers late (header_read_timeout_ms).",
                &by_reason,
            ),
            open_connections: r.gauge("t5serve_open_connections", "Open client connections."),
            model_state: r.gauge_vec(
                "t5serve_model_state",
                "1 for each model the server knows, labelled with its state: loading, ready, unloading or failed.",
                &["model", "state"],
            ),
            model_loads_total: r.counter_vec(
                "t5serve_model_loads_total",
                "Model loads (at start, and by POST /v1/models/{id}/load), by model and result: loaded or failed.",
                &["model", "result"],
            ),
            by_model: Families::new(&r),
            rendering: Default::default(),
            _build_info: r.register(build_info(model, execution_provider, cpu)),
            registry: r.0,
        }
    }

    /// The metrics of model `id`: what its scheduler reports its timings to, and what the
    /// requests on it count.
    pub fn model(&self, id: &str) -> Arc<ModelMetrics> {
        Arc::new(self.by_model.model(id))
    }

    /// The text exposition, with the schedulers' gauges and counters read now (`stats`: every
    /// scheduler since start, by model id) and each model's state (`states`: id and state name).
    pub fn render(&self, stats: &[ModelStats], states: &[(&str, &str)]) -> String {
        let _one = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        self.by_model.read(stats);
        self.model_state.reset();
        for (id, state) in states {
            self.model_state.with_label_values(&[id, state]).set(1);
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }

    /// Counts a connection the server closed (`max_connections`, `header_timeout`).
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused_total.with_label_values(&[reason]).inc();
    }

    /// Counts a model load and whether it succeeded.
    pub fn model_loaded(&self, id: &str, loaded: bool) {
        self.model_loads_total.with_label_values(&[id, if loaded { "loaded" } else { "failed" }]).inc();
    }

    /// Counts one answered request (on `model`, or "" when it ran none), and a request refused
    /// before any work by its reason (`ApiError::rejection_reason`).
    pub fn record_response(&self, route: &str, status: u16, model: &str, rejected: Option<&str>, seconds: f64) {
        self.requests_total.with_label_values(&[route, &status.to_string(), model]).inc();
        self.request_duration_seconds.with_label_values(&[route, model]).observe(seconds);
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

    /// A histogram per label value.
    fn histogram_vec(&self, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.register(HistogramVec::new(opts, labels).expect("valid metric"))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
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

/// Raises a counter to a monotonic total kept elsewhere.
fn catch_up(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}
