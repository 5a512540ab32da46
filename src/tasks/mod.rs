//! Tasks built on text-to-text generation: classification by label likelihood, and translation
//! prompts. Pure logic; the HTTP handlers call it, the scheduler runs the model.

pub mod classify;
pub mod translate;
