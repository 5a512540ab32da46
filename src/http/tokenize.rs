//! Tokenizing for the one request path, on the blocking pool (never on the async workers):
//! texts in their prompt, truncated, split at sentences (translation) or refused; labels. Long
//! texts are split in linear time (each sentence is tokenized once) and their chunks are bounded
//! (`max_translate_chunks`). The work stops early when its request is gone (the client left or
//! the request timed out): the future that waits for it sets a cancel flag when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::api::{self, Limits, LongTexts, Validated};
use crate::model::TextTokenizer;
use crate::tasks::rerank::RerankSettings;
use crate::tasks::{classify, translate};

use super::error::ApiError;

/// How a route's texts become the model's inputs.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// The text itself.
    Text,
    /// The text in a template, at `{text}`.
    Template(String),
    /// Token ids the client sent, one list per text (the texts are only their names): used as
    /// they are, each id checked against the vocabulary.
    Ids(Arc<Vec<Vec<u32>>>),
    /// Each text is a document, paired with `query` in the model's rerank template. Truncation
    /// cuts the document (its end, or its start when truncating on the left), never the query
    /// or the template.
    Rerank { settings: Arc<RerankSettings>, query: Arc<str> },
}

/// Each row's text index and input ids.
pub type Rows = Vec<(usize, Vec<u32>)>;

/// How busy the tokenizer threads are (readiness reports a saturated pool).
#[derive(Debug, Default)]
pub struct Load {
    busy: AtomicUsize,
    threads: usize,
}

impl Load {
    pub fn new(threads: usize) -> Self {
        Self { busy: AtomicUsize::new(0), threads }
    }

    /// Threads of the blocking pool that tokenizes.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether every tokenizer thread is at work.
    pub fn saturated(&self) -> bool {
        self.busy.load(Ordering::Relaxed) >= self.threads.max(1)
    }
}

/// Tokenizes a validated request's texts into rows.
pub async fn texts(
    load: Arc<Load>,
    tokenizer: Arc<TextTokenizer>,
    limits: Arc<Limits>,
    v: &Validated,
    prompt: Prompt,
) -> Result<Rows, ApiError> {
    let (truncate, long_texts, many, right) = (v.truncate, v.long_texts, !v.single, v.truncate_right);
    if let Prompt::Ids(lists) = &prompt {
        return given_ids(lists, truncate, many, &limits);
    }
    let texts = v.texts.clone();
    blocking(load, move |cancel| {
        let t = Texts { tokenizer: &tokenizer, limits: &limits, prompt: &prompt, cancel };
        let mut rows = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            t.check_cancelled()?;
            if long_texts == LongTexts::Split && truncate.is_none() {
                t.split(i, text, &mut rows)?;
                continue;
            }
            let mut ids = t.encode(text)?;
            match truncate {
                Some(n) if ids.len() > n && matches!(t.prompt, Prompt::Rerank { .. }) => {
                    ids = t.fit_document(i, text, n, right)?;
                }
                // The first N: the text's first N - 1 tokens and its closing EOS, as a Hugging
                // Face tokenizer truncating on the right keeps them (TEI's default).
                Some(n) if right && ids.len() > n => {
                    let eos = ids.pop();
                    ids.truncate(n.saturating_sub(1));
                    ids.extend(eos);
                }
                // Keeps the last N tokens, as TGI does.
                Some(n) => drop(ids.drain(..ids.len().saturating_sub(n))),
                None => {}
            }
            api::check_token_count(many.then_some(i), ids.len(), &limits)?;
            rows.push((i, ids));
        }
        Ok(rows)
    })
    .await
}

/// The ids of `text` with each one's span in characters, on the blocking pool (`/tokenize`).
pub async fn offsets(
    load: Arc<Load>,
    tokenizer: Arc<TextTokenizer>,
    text: String,
) -> Result<Vec<(u32, usize, usize)>, ApiError> {
    blocking(load, move |_| tokenizer.encode_with_offsets(&text).map_err(|e| ApiError::Internal(e.to_string()))).await
}

/// Rows of token ids a client sent: each list non-empty, each id in the vocabulary.
fn given_ids(lists: &[Vec<u32>], truncate: Option<usize>, many: bool, limits: &Limits) -> Result<Rows, ApiError> {
    let mut rows = Vec::with_capacity(lists.len());
    for (i, ids) in lists.iter().enumerate() {
        let name = if many { format!("inputs[{i}]") } else { "inputs".to_string() };
        if ids.is_empty() {
            return Err(ApiError::Validation(format!("{name} must not be an empty list of token ids")));
        }
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= limits.vocab_size) {
            return Err(ApiError::Validation(format!(
                "{name} holds token id {bad}; ids are below the vocabulary size ({})",
                limits.vocab_size
            )));
        }
        let mut ids = ids.clone();
        if let Some(n) = truncate {
            ids.drain(..ids.len().saturating_sub(n));
        }
        api::check_token_count(many.then_some(i), ids.len(), limits)?;
        rows.push((i, ids));
    }
    Ok(rows)
}

/// Tokenizes candidate labels (each ends with EOS) and checks their length.
pub async fn labels(
    load: Arc<Load>,
    tokenizer: Arc<TextTokenizer>,
    limit: usize,
    labels: Vec<String>,
) -> Result<Vec<Vec<u32>>, ApiError> {
    blocking(load, move |_| {
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let ids = tokenizer.encode(l).map_err(|e| ApiError::Internal(e.to_string()))?;
                if ids.len() > limit {
                    return Err(ApiError::Validation(format!(
                        "labels[{i}] has {} tokens; the limit is {limit} (max_new_tokens_limit)",
                        ids.len()
                    )));
                }
                Ok(ids)
            })
            .collect()
    })
    .await
}

struct Texts<'a> {
    tokenizer: &'a TextTokenizer,
    limits: &'a Limits,
    prompt: &'a Prompt,
    cancel: &'a AtomicBool,
}

impl Texts<'_> {
    fn fill(&self, text: &str) -> String {
        match self.prompt {
            Prompt::Text | Prompt::Ids(_) => text.to_string(),
            Prompt::Template(t) => classify::fill(t, text),
            Prompt::Rerank { settings, query } => settings.fill(query, text),
        }
    }

    /// The ids of a rerank pair cut to `n` tokens by dropping the document's last tokens (or
    /// its first ones): the document is cut at a token's edge and the pair tokenized again,
    /// a few times if the cut changed how the edge tokenizes.
    fn fit_document(&self, i: usize, document: &str, n: usize, right: bool) -> Result<Vec<u32>, ApiError> {
        let Prompt::Rerank { settings, query } = self.prompt else { unreachable!("a rerank prompt") };
        let mut doc = document;
        for _ in 0..8 {
            let (text, span) = settings.fill_with_span(query, doc);
            let tokens = self.tokenizer.encode_with_offsets(&text).map_err(|e| ApiError::Internal(e.to_string()))?;
            let excess = tokens.len().saturating_sub(n);
            if excess == 0 {
                return Ok(tokens.into_iter().map(|t| t.0).collect());
            }
            // Offsets are in characters; the document's span is in bytes.
            let (start, end) = (text[..span.start].chars().count(), text[..span.end].chars().count());
            let inside: Vec<(usize, usize)> =
                tokens.iter().filter(|t| t.1 >= start && t.2 <= end && t.2 > t.1).map(|t| (t.1, t.2)).collect();
            if excess >= inside.len() {
                return Err(ApiError::Validation(format!(
                    "the query leaves no room for document {i} within {n} tokens (max_input_tokens): shorten the query"
                )));
            }
            let byte_at = |chars: usize| doc.char_indices().nth(chars - start).map_or(doc.len(), |(b, _)| b);
            doc = if right {
                &doc[..byte_at(inside[inside.len() - excess - 1].1)]
            } else {
                &doc[byte_at(inside[excess].0)..]
            };
        }
        Err(ApiError::Validation(format!("document {i} could not be cut to {n} tokens (max_input_tokens)")))
    }

    /// The ids of `text` in its prompt.
    fn encode(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer.encode(&self.fill(text)).map_err(|e| ApiError::Internal(e.to_string()))
    }

    fn check_cancelled(&self) -> Result<(), ApiError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(ApiError::Internal("tokenizing cancelled: the request is gone".into()));
        }
        Ok(())
    }

    /// Rows of a text that may be split: itself when its prompt fits, else chunks of its
    /// sentences. Each sentence is measured once (its tokens without EOS, added to the prompt's
    /// own), and each chunk is tokenized once; a chunk that the sum underestimated is taken
    /// apart into its sentences.
    fn split(&self, i: usize, text: &str, rows: &mut Rows) -> Result<(), ApiError> {
        let (limit, max_chunks) = (self.limits.max_input_tokens, self.limits.max_translate_chunks);
        let chunks_left = max_chunks.saturating_sub(rows.len());
        // A text of more than 32 bytes per token allowed in all its chunks cannot fit (T5 pieces
        // are at most 16 characters): refused before any tokenizer time.
        if text.len() > limit.saturating_mul(32).saturating_mul(chunks_left.max(1)) || chunks_left == 0 {
            return Err(too_many_chunks(i, limit, max_chunks));
        }
        if text.len() <= limit.saturating_mul(32) {
            let ids = self.encode(text)?;
            if ids.len() <= limit {
                rows.push((i, ids));
                return Ok(());
            }
        }
        let overhead = self.encode("")?.len();
        let sentences = translate::sentences(text);
        let cost = |s: &str| {
            if self.cancel.load(Ordering::Relaxed) {
                return usize::MAX / 4;
            }
            self.tokenizer.encode(s).map_or(usize::MAX / 4, |ids| ids.len().saturating_sub(1))
        };
        let chunks = translate::chunks(&sentences, limit, overhead, chunks_left, cost);
        self.check_cancelled()?;
        if chunks.len() > chunks_left {
            return Err(too_many_chunks(i, limit, max_chunks));
        }
        for chunk in chunks {
            let ids = self.encode(&chunk)?;
            if ids.len() <= limit {
                rows.push((i, ids));
                continue;
            }
            for sentence in translate::sentences(&chunk) {
                let ids = self.encode(sentence)?;
                if ids.len() > limit {
                    return Err(ApiError::Validation(format!(
                        "text[{i}] has a sentence of {} tokens; the limit is {limit} (max_input_tokens)",
                        ids.len()
                    )));
                }
                rows.push((i, ids));
            }
            if rows.len() > max_chunks {
                return Err(too_many_chunks(i, limit, max_chunks));
            }
        }
        Ok(())
    }
}

fn too_many_chunks(i: usize, limit: usize, max_chunks: usize) -> ApiError {
    ApiError::Validation(format!(
        "text[{i}] does not fit: a request's texts may split into at most {max_chunks} chunks \
         (max_translate_chunks) of {limit} tokens (max_input_tokens)"
    ))
}

/// Runs tokenizer work on the blocking pool. The work gets a flag that turns true when this
/// future is dropped (its request is gone), and should stop soon after.
async fn blocking<T: Send + 'static>(
    load: Arc<Load>,
    work: impl FnOnce(&AtomicBool) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    struct CancelOnDrop(Arc<AtomicBool>);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = cancel.0.clone();
    let result = tokio::task::spawn_blocking(move || {
        load.busy.fetch_add(1, Ordering::Relaxed);
        let out = work(&flag);
        load.busy.fetch_sub(1, Ordering::Relaxed);
        out
    })
    .await;
    drop(cancel);
    result.map_err(|e| ApiError::Internal(format!("tokenizer task failed: {e}")))?
}
