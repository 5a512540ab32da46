//! The model's `tokenizer.json` (Hugging Face `tokenizers`), with padding and truncation turned
//! off: the scheduler pads batches itself and the API checks lengths with a clear error.

use std::path::Path;

use tokenizers::Tokenizer;

use super::ModelError;

#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    special: std::collections::HashSet<u32>,
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("cannot load {}: {e}", path.display())))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let special =
            inner.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
        Ok(Self { inner, special })
    }

    /// Token ids of `text`, with the EOS the T5 post-processor appends.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self.inner.encode(text, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of generated ids, special tokens (EOS, padding) left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.inner.decode(ids, true).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Whether `id` is a special token (EOS, padding, unknown, sentinels).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }
}
