//! Request and response types of the public API, typed as clients send them, and (in
//! `validate`) the one check of a request against the configured limits that every route makes.
//! Validation errors carry a message a client can act on; the HTTP layer maps them to 422.

mod validate;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::generation::FinishReason;

pub use validate::{
    Decoding, Labels, LongTexts, MAX_STOP_BYTES, MAX_TOP_TOKENS, MIN_DIVISOR, Request, Task, Validated, check_cost,
    check_labels, check_token_count, validate,
};

/// Limits that requests are validated against (from the config).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_labels: usize,
    pub max_num_beams: usize,
    pub max_stop_sequences: usize,
    pub max_concurrent_requests: usize,
    pub queue_deadline_ms: u64,
    /// Longest a request may take in all; then 504 and its rows are dropped.
    pub request_timeout_ms: u64,
    pub max_input_tokens: usize,
    pub max_new_tokens_limit: usize,
    pub default_max_new_tokens: usize,
    pub max_client_batch_size: usize,
    /// Most chunks a translate request's texts may split into (rows of the request).
    pub max_translate_chunks: usize,
    /// Most token-steps one request may ask for (`Request::cost`); 0: no limit.
    pub max_request_cost: usize,
    /// The model's vocabulary: token ids a request names (`logit_bias`, token prompts) are below it.
    pub vocab_size: usize,
}

impl Limits {
    /// The config's limits for a model with `vocab_size` token ids.
    pub fn new(c: &Config, vocab_size: usize) -> Self {
        Self {
            max_labels: c.max_labels,
            max_num_beams: c.max_num_beams,
            max_stop_sequences: c.max_stop_sequences,
            max_concurrent_requests: c.max_concurrent_requests,
            queue_deadline_ms: c.queue_deadline_ms,
            request_timeout_ms: c.request_timeout_ms,
            max_input_tokens: c.max_input_tokens,
            max_new_tokens_limit: c.max_new_tokens_limit,
            default_max_new_tokens: c.default_max_new_tokens,
            max_client_batch_size: c.max_client_batch_size,
            max_translate_chunks: c.max_translate_chunks,
            max_request_cost: c.max_request_cost,
            vocab_size,
        }
    }
}

/// A request that is well-formed JSON but asks for something invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

fn invalid(msg: impl Into<String>) -> ValidationError {
    ValidationError(msg.into())
}

/// Longest client value an error message repeats, in characters.
pub const MAX_ECHO_CHARS: usize = 64;

/// A client's value as an error message repeats it: at most `MAX_ECHO_CHARS` characters, then
/// an ellipsis, so that a huge value does not come back whole.
pub fn echo(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO_CHARS) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_string(),
    }
}

/// A request's texts: one string (answered with one object), or a list of strings (answered
/// with a list, in order).
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    One(String),
    Many(Vec<String>),
}

impl Inputs {
    /// Whether the client sent one string.
    pub fn is_single(&self) -> bool {
        matches!(self, Inputs::One(_))
    }

    pub fn into_vec(self) -> Vec<String> {
        match self {
            Inputs::One(s) => vec![s],
            Inputs::Many(v) => v,
        }
    }
}

impl From<String> for Inputs {
    fn from(s: String) -> Self {
        Inputs::One(s)
    }
}

impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Inputs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Inputs, E> {
                Ok(Inputs::One(s.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Inputs, E> {
                Ok(Inputs::One(s))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Inputs, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(s) = seq.next_element::<String>()? {
                    items.push(s);
                }
                Ok(Inputs::Many(items))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `POST /v1/generate`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// The served model's id; absent: the default model.
    pub model: Option<String>,
    /// A string, or a list of strings decoded together.
    pub inputs: Inputs,
    #[serde(default)]
    pub parameters: GenerateParameters,
    /// Answer with Server-Sent Events, one per token (single input only).
    pub stream: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateParameters {
    /// 1..=max_new_tokens_limit; default from the config.
    pub max_new_tokens: Option<i64>,
    /// 0..=max_new_tokens; EOS is suppressed until this many tokens are generated.
    pub min_new_tokens: Option<i64>,
    /// 1..=queue_deadline_ms: answer 504 if the request is still queued after this long.
    pub deadline_ms: Option<i64>,
    /// 1..=max_input_tokens: keep only the last N input tokens instead of refusing a longer input.
    pub truncate: Option<i64>,
    /// Sample instead of greedy decoding. Defaults to true when a sampling parameter is set.
    pub do_sample: Option<bool>,
    /// (0, 100]; sampling only.
    pub temperature: Option<f64>,
    /// >= 1; sampling only.
    pub top_k: Option<i64>,
    /// (0, 1]; sampling only.
    pub top_p: Option<f64>,
    /// (0, 1]; sampling only.
    pub typical_p: Option<f64>,
    /// (0, 100]; 1 = off.
    pub repetition_penalty: Option<f64>,
    /// 0..=64; 0 = off.
    pub no_repeat_ngram_size: Option<i64>,
    /// Seed of the sampler (any u64); random when unset.
    pub seed: Option<u64>,
    /// Stop as soon as the text contains one of these (at most max_stop_sequences).
    pub stop: Option<Vec<String>>,
    /// Per-token ids, texts and log-probabilities in the response.
    pub details: Option<bool>,
    /// [-2, 2]: OpenAI's presence penalty, subtracted from every id already generated.
    pub presence_penalty: Option<f64>,
    /// [-2, 2]: OpenAI's frequency penalty, subtracted once per time an id was generated.
    pub frequency_penalty: Option<f64>,
    /// Token id (as a string) -> [-100, 100], added to that id's logit at every step.
    pub logit_bias: Option<std::collections::BTreeMap<String, f64>>,
    /// 0..=MAX_TOP_TOKENS: each token's most likely alternatives in `details` (TGI's name).
    pub top_n_tokens: Option<i64>,
    /// Beam search with this many beams, 1..=max_num_beams (1 = off).
    pub num_beams: Option<i64>,
    /// Beam scores are `sum_logprobs / length ** length_penalty`; any finite value, default 1.
    pub length_penalty: Option<f64>,
    /// true, false (default) or "never", as in transformers.
    pub early_stopping: Option<Value>,
    /// Hypotheses returned, 1..=num_beams.
    pub num_return_sequences: Option<i64>,
}

/// `POST /v1/classify`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// The served model's id; absent: the default model.
    pub model: Option<String>,
    /// A string, or a list of strings (at most max_client_batch_size).
    pub inputs: Inputs,
    /// 2..=max_labels distinct candidate labels; default: the configured label set.
    pub labels: Option<Vec<String>>,
    /// The prompt, with `{text}` where the input goes; default: the configured template.
    pub template: Option<String>,
    /// Independent probabilities per label instead of a distribution over the labels.
    pub multi_label: Option<bool>,
    /// Divide each label's log-likelihood by its token count before comparing.
    pub length_normalize: Option<bool>,
}

/// `POST /v1/translate`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateRequest {
    /// The served model's id; absent: the default model.
    pub model: Option<String>,
    /// A string, or a list of strings (at most max_client_batch_size).
    pub text: Inputs,
    pub source_lang: String,
    pub target_lang: String,
    #[serde(default)]
    pub parameters: GenerateParameters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: usize,
    pub generated_tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    pub generated_text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
    /// Beam search with num_return_sequences > 1: every returned hypothesis, best first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequences: Option<Vec<SequenceOut>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SequenceOut {
    pub generated_text: String,
    pub finish_reason: FinishReason,
    /// `sum_logprobs / generated_len ** length_penalty`
    pub score: f32,
    pub generated_tokens: usize,
}

/// Per-token information, with `parameters.details`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Details {
    pub tokens: Vec<TokenInfo>,
    /// The sampler's seed (meaningful with do_sample).
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenInfo {
    pub id: u32,
    /// The text this token adds (empty for special tokens and partial characters).
    pub text: String,
    /// Log-probability under the distribution the token was chosen from; with details only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprob: Option<f32>,
    pub special: bool,
    /// The most likely tokens at this step, most likely first (with `top_n_tokens`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_tokens: Vec<TopToken>,
}

/// An alternative token at one step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopToken {
    pub id: u32,
    /// The token's piece, with SentencePiece's word marker as a space.
    pub text: String,
    pub logprob: f32,
    pub special: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// The most likely label.
    pub label: String,
    /// Every label with its probability, most likely first.
    pub scores: Vec<crate::tasks::classify::LabelProbability>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranslateResponse {
    /// One translation per input text, in order.
    pub translations: Vec<String>,
    /// How each translation ended, in the same order.
    pub details: Vec<TranslationDetails>,
}

/// How one text's translation ended. A long text is translated in chunks (split at sentence
/// boundaries): `length` when any chunk was cut at max_new_tokens, and the tokens of all chunks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranslationDetails {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub chunks: usize,
}
