//! A model directory, read once at start: its files, dimensions, task defaults, quantization
//! record and tokenizer. Every lane's sessions, the HTTP layer's tokenizer and the start-up log
//! use this one reading.

use std::path::Path;
use std::sync::Arc;

use super::{ModelDims, ModelError, ModelFiles, ModelTasks, TextTokenizer};

#[derive(Clone)]
pub struct ModelDir {
    pub files: ModelFiles,
    pub dims: ModelDims,
    /// `t5serve.json`: the model's own task defaults.
    pub tasks: ModelTasks,
    /// `quantization.json` of an int8 directory; `None` for float weights.
    pub quantization: Option<serde_json::Value>,
    pub tokenizer: Arc<TextTokenizer>,
}

impl ModelDir {
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let files = ModelFiles::discover(dir)?;
        Ok(Self {
            dims: files.dims()?,
            tasks: files.tasks()?,
            quantization: files.quantization()?,
            tokenizer: Arc::new(TextTokenizer::from_file(&files.tokenizer)?),
            files,
        })
    }
}

impl std::fmt::Debug for ModelDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelDir").field("dir", &self.files.dir).field("dims", &self.dims).finish_non_exhaustive()
    }
}
