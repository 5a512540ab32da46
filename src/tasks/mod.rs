//! Tasks built on the model: classification by label likelihood, translation prompts, chat
//! prompts, sentence embeddings, reranking and entity extraction. Pure logic; the HTTP handlers call it, the scheduler runs
//! the model.

pub mod chat;
pub mod classify;
pub mod embed;
pub mod extract;
pub mod rerank;
pub mod translate;
