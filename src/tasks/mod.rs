//! Tasks built on the model: classification by label likelihood, translation prompts, chat
//! prompts, and sentence embeddings. Pure logic; the HTTP handlers call it, the scheduler runs
//! the model.

pub mod chat;
pub mod classify;
pub mod embed;
pub mod translate;
