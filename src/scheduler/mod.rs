//! Work between the HTTP layer and the model: requests become rows, rows are decoded on a
//! dedicated OS thread that owns the ONNX Runtime sessions, and each row reports back through
//! its own event channel. The tokio runtime never blocks on inference.

pub mod batch;
pub mod queue;
pub mod worker;

use tokio::sync::mpsc;

use crate::generation::{FinishReason, GenerationParams};

pub use worker::{SchedulerHandle, WorkerInfo};

/// What the decode loop reports for one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token {
        id: u32,
    },
    Finished {
        reason: FinishReason,
        input_tokens: usize,
        generated_tokens: usize,
    },
    /// The row failed; the message is for logs, never for clients.
    Error(String),
}

/// One input sequence to decode. A closed `events` receiver means the client went away.
#[derive(Debug)]
pub struct RowRequest {
    pub input_ids: Vec<u32>,
    pub params: GenerationParams,
    pub events: mpsc::UnboundedSender<Event>,
}

impl RowRequest {
    pub fn new(
        input_ids: Vec<u32>,
        params: GenerationParams,
    ) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                input_ids,
                params,
                events: tx,
            },
            rx,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("the decode thread is not running")]
    WorkerGone,
    #[error(transparent)]
    Startup(#[from] crate::model::ModelError),
}
