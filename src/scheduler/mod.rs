//! Work between the HTTP layer and the model: requests become rows, rows wait in a FIFO queue
//! of one of the decode lanes (`lanes`), and each lane's OS threads, which own its ONNX Runtime
//! sessions, decode them in cohorts (`decode`, with `prefill` beside it). Each row reports
//! back through its own event channel. The tokio runtime never blocks on inference.

pub mod batch;
pub mod buckets;
mod budget;
mod decode;
mod embed;
pub mod encoder_cache;
mod lanes;
mod lru;
mod prefill;
pub mod queue;
pub mod score;
mod settings;
mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::generation::{FinishReason, GenerationParams};

pub use budget::MemoryPool;
pub use shared::ProcessLoad;

/// What every model's scheduler in the process shares: the memory budget, and the lanes' load
/// (a model's solo sessions run only while every other lane, of any model, is idle).
pub struct Process {
    pub memory: Arc<MemoryPool>,
    pub load: Arc<ProcessLoad>,
}

impl Process {
    /// With `max_batch_bytes`, the process's memory budget.
    pub fn new(max_batch_bytes: usize) -> Arc<Self> {
        Arc::new(Self { memory: MemoryPool::new(max_batch_bytes), load: Default::default() })
    }
}
pub use lanes::SchedulerHandle;
pub use settings::{SchedulerSettings, WorkerInfo};

/// What the decode loop reports for one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A generated token, the text it completes (may be empty, or cut at a stop sequence), its
    /// log-probability when the request asked for it, and the most likely alternatives (with
    /// their log-probabilities) when it asked for those.
    Token {
        id: u32,
        text: String,
        logprob: Option<f32>,
        top: Vec<(u32, f32)>,
    },
    Finished {
        reason: FinishReason,
        input_tokens: usize,
        generated_tokens: usize,
    },
    /// Beam search results (best first), sent just before `Finished`.
    Sequences(Vec<Sequence>),
    /// The log-likelihood of each label of a scoring row, in label order; the row's only event.
    Scores(Vec<score::LabelScore>),
    /// The pooled encoder states of an embedding row and its input tokens; its only event.
    Embedding {
        vector: Vec<f32>,
        input_tokens: usize,
    },
    Error(RowError),
}

/// One beam search hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub ids: Vec<u32>,
    pub text: String,
    pub score: f32,
    pub reason: FinishReason,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RowError {
    /// The row was still queued at its deadline; it never ran.
    DeadlineExceeded,
    /// The model failed; the message is for logs, never for clients.
    Internal(String),
}

/// One input sequence to decode. A closed `events` receiver means the client went away.
#[derive(Debug)]
pub struct RowRequest {
    /// The span of the request this row belongs to (it carries the request id).
    pub span: tracing::Span,
    pub input_ids: Vec<u32>,
    pub params: GenerationParams,
    pub events: mpsc::UnboundedSender<Event>,
    /// Still queued at this instant: answered with `DeadlineExceeded`, never run.
    pub deadline: Option<Instant>,
    /// The row finishes as soon as its text contains one of these.
    pub stop: Vec<String>,
    /// What to report about each token (its log-probability, the alternatives).
    pub report: crate::generation::Report,
    /// Added to the logits at every step (OpenAI's `logit_bias`).
    pub logit_bias: Arc<[(u32, f32)]>,
    /// Decode with beam search instead of token by token.
    pub beam: Option<crate::generation::beam::BeamParams>,
    /// Score these label token sequences (each ending in EOS) instead of generating.
    pub labels: Option<Vec<Vec<u32>>>,
    /// Only run the encoder, and pool its states so (an embedding row; no decoder step).
    pub embed: Option<crate::tasks::embed::EmbedSettings>,
}

impl RowRequest {
    /// A row of the request whose span is current (the HTTP layer's, with its request id): the
    /// decode thread logs what happens to the row inside that span.
    pub fn new(input_ids: Vec<u32>, params: GenerationParams) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                span: tracing::Span::current(),
                input_ids,
                params,
                events: tx,
                deadline: None,
                stop: Vec::new(),
                report: Default::default(),
                logit_bias: Arc::from([]),
                beam: None,
                labels: None,
                embed: None,
            },
            rx,
        )
    }

    pub fn with_stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }

    pub fn with_beam(mut self, beam: Option<crate::generation::beam::BeamParams>) -> Self {
        self.beam = beam;
        self
    }

    /// A row that scores labels: while queued it counts one batch row per label, each as long
    /// as the longest label.
    pub fn scoring(input_ids: Vec<u32>, labels: Vec<Vec<u32>>) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let longest = labels.iter().map(Vec::len).max().unwrap_or(1);
        let (mut row, rx) = Self::new(input_ids, GenerationParams::greedy(longest, 0));
        row.labels = Some(labels);
        (row, rx)
    }

    /// A row that only runs the encoder and answers its pooled states: while queued it counts
    /// as its input alone (no new tokens).
    pub fn embedding(
        input_ids: Vec<u32>,
        settings: crate::tasks::embed::EmbedSettings,
    ) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (mut row, rx) = Self::new(input_ids, GenerationParams::greedy(0, 0));
        row.embed = Some(settings);
        (row, rx)
    }

    /// Batch rows this request occupies while decoding (its beams, or its labels).
    pub fn width(&self) -> usize {
        match (&self.labels, self.beam) {
            (Some(labels), _) => labels.len().max(1),
            (None, Some(b)) => b.num_beams,
            (None, None) => 1,
        }
    }

    pub fn with_report(mut self, report: crate::generation::Report) -> Self {
        self.report = report;
        self
    }

    pub fn with_logit_bias(mut self, bias: Arc<[(u32, f32)]>) -> Self {
        self.logit_bias = bias;
        self
    }

    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }
}

impl queue::Waiting for RowRequest {
    fn input_len(&self) -> usize {
        self.input_ids.len()
    }
    fn max_new_tokens(&self) -> usize {
        self.params.max_new_tokens
    }
    fn is_closed(&self) -> bool {
        self.events.is_closed()
    }
    fn width(&self) -> usize {
        RowRequest::width(self)
    }
}

/// Timings the decode lanes report as they happen (the metrics implement it, and the scheduler
/// is started with them).
pub trait LoopObserver: Send + Sync {
    /// A row started decoding after waiting this long in the queue.
    fn queued(&self, _seconds: f64) {}
    /// An encoder run over a new cohort of `rows` rows.
    fn encoded(&self, _seconds: f64, _rows: usize) {}
    /// One decoder step over `rows` rows.
    fn stepped(&self, _seconds: f64, _rows: usize) {}
    /// An encoder run over `real` input tokens, padded (in length buckets) to `padded`.
    fn padding(&self, _real: usize, _padded: usize) {}
    /// Rust-side allocations (count, bytes) of one decoder step; only with `alloc-count`.
    fn step_allocations(&self, _count: u64, _bytes: u64) {}
}

/// Why rows failed, as `t5serve_rows_failed_total` labels them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The encoder run or the first decoder step of new rows.
    Prefill,
    /// A cached decoder step.
    Step,
    /// Label scoring.
    Scoring,
    /// New rows joining the running batch.
    Join,
    /// Encoder-only embedding rows.
    Embedding,
}

impl FailReason {
    pub const ALL: [Self; 5] = [Self::Prefill, Self::Step, Self::Scoring, Self::Join, Self::Embedding];

    pub fn name(self) -> &'static str {
        match self {
            Self::Prefill => "prefill",
            Self::Step => "step",
            Self::Scoring => "scoring",
            Self::Join => "join",
            Self::Embedding => "embedding",
        }
    }
}

/// Counters and gauges the decode threads keep; metrics and tests read them.
pub struct SchedulerStats {
    /// Where timings go.
    observer: Arc<dyn LoopObserver>,
    pub active_rows: AtomicU64,
    pub queued_rows: AtomicU64,
    pub cohorts: AtomicU64,
    pub kv_cache_bytes: AtomicU64,
    /// Bytes of the shared memory budget the lanes hold for running rows.
    pub reserved_bytes: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub cancelled_rows: AtomicU64,
    pub expired_rows: AtomicU64,
    /// Rows failed, by `FailReason` (in the order of `FailReason::ALL`).
    failed_rows: [AtomicU64; FailReason::ALL.len()],
    /// Decoder runs on the solo sessions (all cores), taken while the other lanes were idle.
    pub solo_runs: AtomicU64,
    /// The encoder cache's hits, misses, evictions and bytes (zeros while it is off).
    pub encoder_cache: Arc<encoder_cache::CacheCounters>,
}

impl SchedulerStats {
    pub fn new(observer: Arc<dyn LoopObserver>) -> Self {
        Self {
            observer,
            active_rows: AtomicU64::new(0),
            queued_rows: AtomicU64::new(0),
            cohorts: AtomicU64::new(0),
            kv_cache_bytes: AtomicU64::new(0),
            reserved_bytes: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cancelled_rows: AtomicU64::new(0),
            expired_rows: AtomicU64::new(0),
            failed_rows: Default::default(),
            solo_runs: AtomicU64::new(0),
            encoder_cache: Default::default(),
        }
    }

    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }

    pub fn observer(&self) -> &dyn LoopObserver {
        self.observer.as_ref()
    }

    /// Rows failed for `reason` since start.
    pub fn failed(&self, reason: FailReason) -> u64 {
        Self::get(&self.failed_rows[reason as usize])
    }

    fn fail(&self, reason: FailReason, rows: u64) {
        self.failed_rows[reason as usize].fetch_add(rows, Ordering::Relaxed);
    }

    /// Counts what a decoder run did.
    fn record(&self, r: batch::StepReport) {
        self.generated_tokens.fetch_add(r.tokens as u64, Ordering::Relaxed);
        self.cancelled_rows.fetch_add(r.cancelled as u64, Ordering::Relaxed);
    }
}

pub type SharedStats = Arc<SchedulerStats>;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("the decode thread is not running")]
    WorkerGone,
    /// A request that could never fit the memory budget, even alone.
    #[error(
        "the request needs {need} bytes of encoder output and key/value cache, more than max_batch_bytes ({limit}; per decode lane: max_batch_memory_mb / decode_lanes); shorten the input or max_new_tokens"
    )]
    TooLarge { need: usize, limit: usize },
    #[error(transparent)]
    Startup(#[from] crate::model::ModelError),
}
