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

    /// The piece of one id as text: SentencePiece's word marker as a space (`▁Haus` is
    /// ` Haus`), a special token as its name (`</s>`); empty for an unknown id.
    pub fn piece(&self, id: u32) -> String {
        self.inner.id_to_token(id).map(|p| p.replace('\u{2581}', " ")).unwrap_or_default()
    }

    /// The ids of `text` (EOS appended) with each one's span in `text`, in characters.
    pub fn encode_with_offsets(&self, text: &str) -> Result<Vec<(u32, usize, usize)>, ModelError> {
        let enc = self.inner.encode_char_offsets(text, true).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().iter().zip(enc.get_offsets()).map(|(&id, &(start, end))| (id, start, end)).collect())
    }

    /// Whether `id` is a special token (EOS, padding, unknown, sentinels).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }
}
