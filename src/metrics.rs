//! Prometheus metrics: one struct owning its registry. Scheduler gauges and counters are kept
//! as atomics by the decode thread (`SchedulerStats`) and copied in at scrape time, so the
//! decode loop never touches prometheus.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder};

use crate::scheduler::{SchedulerStats, SharedStats};

pub struct Metrics {
    registry: Registry,
    stats: SharedStats,
    /// Rows decoding now, over all cohorts.
    active_rows: IntGauge,
    /// Rows waiting in the queue.
    queue_size: IntGauge,
    /// Bytes of key/value cache and encoder output held by running rows.
    kv_cache_bytes: IntGauge,
    /// Tokens generated since start.
    generated_tokens_total: IntCounter,
    /// Rows dropped because their client went away.
    requests_cancelled_total: IntCounter,
    /// Rows answered 504 because they were still queued at their deadline.
    requests_expired_total: IntCounter,
    /// Seconds from a request's arrival to its first generated token.
    pub time_to_first_token_seconds: Histogram,
}

/// Millisecond-scale latency buckets, 1 ms to 60 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

impl Metrics {
    pub fn new(stats: SharedStats) -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        Self {
            active_rows: gauge("t5serve_active_rows", "Rows decoding now, over all cohorts."),
            queue_size: gauge("t5serve_queue_size", "Rows waiting in the queue."),
            kv_cache_bytes: gauge(
                "t5serve_kv_cache_bytes",
                "Bytes of key/value cache and encoder output held by running rows.",
            ),
            generated_tokens_total: counter("t5serve_generated_tokens_total", "Tokens generated since start."),
            requests_cancelled_total: counter(
                "t5serve_requests_cancelled_total",
                "Rows dropped because their client went away.",
            ),
            requests_expired_total: counter(
                "t5serve_requests_expired_total",
                "Rows answered 504 because they were still queued at their deadline.",
            ),
            time_to_first_token_seconds: {
                let opts = HistogramOpts::new(
                    "t5serve_time_to_first_token_seconds",
                    "Seconds from a request's arrival to its first generated token.",
                )
                .buckets(LATENCY_BUCKETS.to_vec());
                let h = Histogram::with_opts(opts).expect("valid metric");
                registry.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            registry,
            stats,
        }
    }

    /// Text exposition of every metric, with scheduler values read now.
    pub fn render(&self) -> String {
        let s = &self.stats;
        let get = SchedulerStats::get;
        self.active_rows.set(get(&s.active_rows) as i64);
        self.queue_size.set(get(&s.queued_rows) as i64);
        self.kv_cache_bytes.set(get(&s.kv_cache_bytes) as i64);
        catch_up(&self.generated_tokens_total, get(&s.generated_tokens));
        catch_up(&self.requests_cancelled_total, get(&s.cancelled_rows));
        catch_up(&self.requests_expired_total, get(&s.expired_rows));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

/// Raises a counter to a monotonic total kept elsewhere.
fn catch_up(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}
