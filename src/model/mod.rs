//! Everything that touches the model files: ONNX Runtime loading, the T5 graphs, the key/value
//! cache and the tokenizer. Nothing here knows about HTTP or queues.

pub mod cpu;
pub mod dir;
mod encoded;
pub mod files;
pub mod kv;
pub mod runtime;
pub mod t5;
pub mod tokenizer;
mod weights;

pub use dir::ModelDir;
pub use files::{DecoderLayout, ModelDims, ModelFiles, ModelTasks};
pub use kv::DecoderState;
pub use t5::{Encoded, Logits, Seq2SeqModel, SessionSettings};
pub use tokenizer::TextTokenizer;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The ONNX Runtime library is missing, the wrong version, or cannot start.
    #[error("{0}")]
    Runtime(String),
    /// The model directory is incomplete or not a T5 export.
    #[error("{0}")]
    Files(String),
    #[error("{0}")]
    Session(String),
    #[error("unexpected model output: {0}")]
    Output(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("onnx runtime: {0}")]
    Ort(#[from] ort::Error),
}
