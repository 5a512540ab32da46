//! Request and response types of the public API, and their validation against the configured
//! limits. Validation errors carry a message a client can act on; the HTTP layer maps them to 422.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::generation::beam::{BeamParams, EarlyStopping};
use crate::generation::{FinishReason, GenerationParams};

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
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Self {
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

/// `POST /v1/generate`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// A string, or a list of strings decoded together.
    pub inputs: Value,
    #[serde(default)]
    pub parameters: GenerateParameters,
    /// Answer with Server-Sent Events, one per token (single input only).
    pub stream: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
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
    /// Beam search with this many beams, 1..=max_num_beams (1 = off).
    pub num_beams: Option<i64>,
    /// Beam scores are `sum_logprobs / length ** length_penalty`; any finite value, default 1.
    pub length_penalty: Option<f64>,
    /// true, false (default) or "never", as in transformers.
    pub early_stopping: Option<Value>,
    /// Hypotheses returned, 1..=num_beams.
    pub num_return_sequences: Option<i64>,
}

/// Longest accepted stop sequence, in bytes.
pub const MAX_STOP_BYTES: usize = 256;

/// `name` must lie in `(low, high]` (`low_open`) or `[low, high]`.
/// Smallest temperature and repetition penalty accepted.
pub const MIN_DIVISOR: f64 = 0.01;

fn check_range(name: &str, v: f64, low: f64, low_open: bool, high: f64) -> Result<f64, ValidationError> {
    let ok = v.is_finite() && (if low_open { v > low } else { v >= low }) && v <= high;
    if ok {
        Ok(v)
    } else {
        let bracket = if low_open { "(" } else { "[" };
        Err(invalid(format!("parameters.{name} must be in {bracket}{low}, {high}], got {v}")))
    }
}

/// A seed for a request that asked for sampling without one.
fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
}

/// The texts of a request, and whether the client sent one string (answered with one object).
#[derive(Debug, Clone, PartialEq)]
pub struct Texts {
    pub texts: Vec<String>,
    pub single: bool,
}

/// Checks the shape of `inputs`: a non-empty string, or a non-empty list of them.
pub fn parse_inputs(inputs: &Value, limits: &Limits) -> Result<Texts, ValidationError> {
    // A cheap bound before tokenizing, so a huge body costs no tokenizer time: T5 pieces are at
    // most 16 characters, so a text of more than 32 bytes per allowed token cannot fit.
    parse_texts("inputs", inputs, limits, limits.max_input_tokens.saturating_mul(32))
}

/// `parse_inputs` for a request field named `field`, with an explicit per-text byte limit
/// (translation splits long texts instead).
pub fn parse_texts(field: &str, inputs: &Value, limits: &Limits, byte_limit: usize) -> Result<Texts, ValidationError> {
    let (texts, single) = match inputs {
        Value::String(s) => (vec![s.clone()], true),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(invalid(format!("{field} must not be an empty list")));
            }
            if items.len() > limits.max_client_batch_size {
                return Err(invalid(format!(
                    "{field} has {} items; the limit is {} (max_client_batch_size)",
                    items.len(),
                    limits.max_client_batch_size
                )));
            }
            let texts = items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(invalid(format!("{field}[{i}] must be a string"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (texts, false)
        }
        _ => return Err(invalid(format!("{field} must be a string or a list of strings"))),
    };
    for (i, t) in texts.iter().enumerate() {
        let name = if single { field.to_string() } else { format!("{field}[{i}]") };
        if t.trim().is_empty() {
            return Err(invalid(format!("{name} must not be empty")));
        }
        if t.len() > byte_limit {
            return Err(invalid(format!(
                "{name} is {} bytes long; inputs are limited to {} tokens (max_input_tokens)",
                t.len(),
                limits.max_input_tokens
            )));
        }
    }
    Ok(Texts { texts, single })
}

impl GenerateParameters {
    pub fn validate(&self, limits: &Limits) -> Result<GenerationParams, ValidationError> {
        let max = match self.max_new_tokens {
            None => limits.default_max_new_tokens as i64,
            Some(v) if v >= 1 && v <= limits.max_new_tokens_limit as i64 => v,
            Some(v) => {
                return Err(invalid(format!(
                    "parameters.max_new_tokens must be between 1 and {} (max_new_tokens_limit), got {v}",
                    limits.max_new_tokens_limit
                )));
            }
        };
        let min = match self.min_new_tokens {
            None => 0,
            Some(v) if v >= 0 && v <= max => v,
            Some(v) => {
                return Err(invalid(format!(
                    "parameters.min_new_tokens must be between 0 and max_new_tokens ({max}), got {v}"
                )));
            }
        };
        let sampling_set =
            self.temperature.is_some() || self.top_k.is_some() || self.top_p.is_some() || self.typical_p.is_some();
        let do_sample = self.do_sample.unwrap_or(sampling_set);
        if !do_sample && sampling_set {
            return Err(invalid(
                "temperature, top_k, top_p and typical_p apply to sampling only; set do_sample to true or leave them out",
            ));
        }
        let top_k = match self.top_k {
            None => 0,
            Some(v) if v >= 1 => v as usize,
            Some(v) => return Err(invalid(format!("parameters.top_k must be at least 1, got {v}"))),
        };
        let no_repeat_ngram_size = match self.no_repeat_ngram_size {
            None => 0,
            Some(v) if (0..=64).contains(&v) => v as usize,
            Some(v) => return Err(invalid(format!("parameters.no_repeat_ngram_size must be in [0, 64], got {v}"))),
        };
        let opt = |name: &str, v: Option<f64>, low: f64, high: f64, default: f64| {
            v.map_or(Ok(default), |v| check_range(name, v, low, true, high)).map(|v| v as f32)
        };
        // Logits are divided by these: below 0.01 they overflow f32 to infinity, and the
        // distribution (and every log-probability) becomes NaN.
        let divisor = |name: &str, v: Option<f64>| {
            v.map_or(Ok(1.0), |v| check_range(name, v, MIN_DIVISOR, false, 100.0)).map(|v| v as f32)
        };
        Ok(GenerationParams {
            max_new_tokens: max as usize,
            min_new_tokens: min as usize,
            do_sample,
            temperature: divisor("temperature", self.temperature)?,
            top_k,
            top_p: opt("top_p", self.top_p, 0.0, 1.0, 1.0)?,
            typical_p: opt("typical_p", self.typical_p, 0.0, 1.0, 1.0)?,
            repetition_penalty: divisor("repetition_penalty", self.repetition_penalty)?,
            no_repeat_ngram_size,
            seed: self.seed.unwrap_or_else(fresh_seed),
        })
    }

    /// The stop sequences, checked: each non-empty and short, at most `max_stop_sequences`.
    pub fn stop_sequences(&self, limits: &Limits) -> Result<Vec<String>, ValidationError> {
        let stop = self.stop.clone().unwrap_or_default();
        if stop.len() > limits.max_stop_sequences {
            return Err(invalid(format!(
                "parameters.stop has {} sequences; the limit is {} (max_stop_sequences)",
                stop.len(),
                limits.max_stop_sequences
            )));
        }
        for (i, s) in stop.iter().enumerate() {
            if s.is_empty() || s.len() > MAX_STOP_BYTES {
                return Err(invalid(format!("parameters.stop[{i}] must be 1 to {MAX_STOP_BYTES} bytes long")));
            }
        }
        Ok(stop)
    }

    /// Beam search settings, or `None` for token-by-token decoding.
    pub fn beam(&self, limits: &Limits) -> Result<Option<BeamParams>, ValidationError> {
        let n = self.num_beams.unwrap_or(1);
        if n < 1 || n as usize > limits.max_num_beams {
            return Err(invalid(format!(
                "parameters.num_beams must be between 1 and {} (max_num_beams), got {n}",
                limits.max_num_beams
            )));
        }
        let returns = self.num_return_sequences.unwrap_or(1);
        if returns < 1 || returns > n {
            return Err(invalid(format!(
                "parameters.num_return_sequences must be between 1 and num_beams ({n}), got {returns}"
            )));
        }
        if n == 1 {
            if self.length_penalty.is_some() || self.early_stopping.is_some() {
                return Err(invalid("length_penalty and early_stopping apply to beam search only (num_beams > 1)"));
            }
            return Ok(None);
        }
        let only = |set: bool, what: &str| {
            if set {
                Err(invalid(format!("{what} cannot be combined with beam search (num_beams > 1)")))
            } else {
                Ok(())
            }
        };
        only(
            self.do_sample == Some(true)
                || self.temperature.is_some()
                || self.top_k.is_some()
                || self.top_p.is_some()
                || self.typical_p.is_some(),
            "sampling",
        )?;
        only(self.stop.as_ref().is_some_and(|s| !s.is_empty()), "parameters.stop")?;
        only(self.details == Some(true), "parameters.details")?;
        let length_penalty = self.length_penalty.unwrap_or(1.0);
        if !length_penalty.is_finite() || length_penalty.abs() > 100.0 {
            return Err(invalid(format!("parameters.length_penalty must be in [-100, 100], got {length_penalty}")));
        }
        let early_stopping = match &self.early_stopping {
            None | Some(Value::Bool(false)) => EarlyStopping::False,
            Some(Value::Bool(true)) => EarlyStopping::True,
            Some(Value::String(s)) if s == "never" => EarlyStopping::Never,
            Some(other) => {
                return Err(invalid(format!(
                    "parameters.early_stopping must be true, false or \"never\", got {other}"
                )));
            }
        };
        Ok(Some(BeamParams {
            num_beams: n as usize,
            num_return_sequences: returns as usize,
            length_penalty: length_penalty as f32,
            early_stopping,
        }))
    }

    /// How long the request may stay queued.
    /// How many input tokens to keep (the last ones), if the request asks to truncate.
    pub fn truncate(&self, limits: &Limits) -> Result<Option<usize>, ValidationError> {
        match self.truncate {
            None => Ok(None),
            Some(n) if n >= 1 && n as u64 <= limits.max_input_tokens as u64 => Ok(Some(n as usize)),
            Some(n) => Err(invalid(format!(
                "parameters.truncate must be between 1 and {} (max_input_tokens), got {n}",
                limits.max_input_tokens
            ))),
        }
    }

    /// The request's texts and its `truncate`: with it, a text may be longer than
    /// max_input_tokens (the body limit still bounds it); without, the cheap length bound applies
    /// before tokenizing.
    pub fn texts(&self, inputs: &Value, limits: &Limits) -> Result<(Texts, Option<usize>), ValidationError> {
        let truncate = self.truncate(limits)?;
        let texts = match truncate {
            Some(_) => parse_texts("inputs", inputs, limits, usize::MAX)?,
            None => parse_inputs(inputs, limits)?,
        };
        Ok((texts, truncate))
    }

    pub fn queue_deadline(&self, limits: &Limits) -> Result<std::time::Duration, ValidationError> {
        let ms = match self.deadline_ms {
            None => limits.queue_deadline_ms,
            Some(v) if v >= 1 && v as u64 <= limits.queue_deadline_ms => v as u64,
            Some(v) => {
                return Err(invalid(format!(
                    "parameters.deadline_ms must be between 1 and {} (queue_deadline_ms), got {v}",
                    limits.queue_deadline_ms
                )));
            }
        };
        Ok(std::time::Duration::from_millis(ms))
    }
}

/// Checks a tokenized input against `max_input_tokens`.
pub fn check_token_count(index: Option<usize>, count: usize, limits: &Limits) -> Result<(), ValidationError> {
    if count > limits.max_input_tokens {
        let name = index.map_or("inputs".to_string(), |i| format!("inputs[{i}]"));
        return Err(invalid(format!(
            "{name} has {count} tokens; the limit is {} (max_input_tokens)",
            limits.max_input_tokens
        )));
    }
    Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            max_labels: 3,
            max_num_beams: 4,
            max_stop_sequences: 2,
            max_concurrent_requests: 4,
            queue_deadline_ms: 1000,
            request_timeout_ms: 60_000,
            max_input_tokens: 8,
            max_new_tokens_limit: 100,
            default_max_new_tokens: 20,
            max_client_batch_size: 2,
        }
    }

    #[test]
    fn inputs_accept_string_or_list() {
        assert_eq!(parse_inputs(&json!("hi"), &limits()).unwrap(), Texts { texts: vec!["hi".into()], single: true });
        let t = parse_inputs(&json!(["a", "b"]), &limits()).unwrap();
        assert_eq!((t.texts.len(), t.single), (2, false));
    }

    #[test]
    fn inputs_reject_bad_shapes_with_their_index() {
        let cases = [
            (json!(""), "inputs must not be empty"),
            (json!("   "), "inputs must not be empty"),
            (json!([]), "inputs must not be an empty list"),
            (json!(["a", 3]), "inputs[1] must be a string"),
            (json!(["a", ""]), "inputs[1] must not be empty"),
            (json!(["a", "b", "c"]), "inputs has 3 items; the limit is 2 (max_client_batch_size)"),
            (json!(7), "inputs must be a string or a list of strings"),
            (json!({"a": 1}), "inputs must be a string or a list of strings"),
        ];
        for (v, msg) in cases {
            assert_eq!(parse_inputs(&v, &limits()).unwrap_err().0, msg, "{v}");
        }
    }

    #[test]
    fn parameters_default_and_ranges() {
        let p = GenerateParameters::default().validate(&limits()).unwrap();
        assert_eq!(p, GenerationParams { seed: p.seed, ..GenerationParams::greedy(20, 0) });
        for bad in [0, -1, 101] {
            let e = GenerateParameters { max_new_tokens: Some(bad), ..Default::default() }.validate(&limits());
            assert!(e.unwrap_err().0.contains("max_new_tokens must be between 1 and 100"));
        }
        let e = GenerateParameters { max_new_tokens: Some(5), min_new_tokens: Some(6), ..Default::default() }
            .validate(&limits());
        assert!(e.unwrap_err().0.contains("min_new_tokens must be between 0 and max_new_tokens (5), got 6"));
    }

    #[test]
    fn sampling_parameters_are_checked_and_imply_sampling() {
        let ok = |p: GenerateParameters| p.validate(&limits());
        let p = ok(GenerateParameters { temperature: Some(0.5), seed: Some(3), ..Default::default() }).unwrap();
        assert!(p.do_sample && p.temperature == 0.5 && p.seed == 3);
        let cases = [
            (
                GenerateParameters { temperature: Some(0.0), ..Default::default() },
                "parameters.temperature must be in [0.01, 100], got 0",
            ),
            (
                GenerateParameters { top_p: Some(1.5), ..Default::default() },
                "parameters.top_p must be in (0, 1], got 1.5",
            ),
            (GenerateParameters { top_k: Some(0), ..Default::default() }, "parameters.top_k must be at least 1, got 0"),
            (
                GenerateParameters { typical_p: Some(-1.0), ..Default::default() },
                "parameters.typical_p must be in (0, 1], got -1",
            ),
            (
                GenerateParameters { repetition_penalty: Some(0.0), ..Default::default() },
                "parameters.repetition_penalty must be in [0.01, 100], got 0",
            ),
            (
                GenerateParameters { no_repeat_ngram_size: Some(65), ..Default::default() },
                "parameters.no_repeat_ngram_size must be in [0, 64], got 65",
            ),
            (
                GenerateParameters { do_sample: Some(false), top_k: Some(3), ..Default::default() },
                "temperature, top_k, top_p and typical_p apply to sampling only; set do_sample to true or leave them out",
            ),
        ];
        for (p, msg) in cases {
            assert_eq!(ok(p).unwrap_err().0, msg);
        }
    }

    #[test]
    fn deadline_defaults_to_the_config_and_may_only_shorten() {
        let ms = |v| GenerateParameters { deadline_ms: v, ..Default::default() }.queue_deadline(&limits());
        assert_eq!(ms(None).unwrap().as_millis(), 1000);
        assert_eq!(ms(Some(20)).unwrap().as_millis(), 20);
        assert!(ms(Some(0)).is_err());
        assert!(ms(Some(1001)).unwrap_err().0.contains("deadline_ms must be between 1 and 1000"));
    }

    #[test]
    fn beam_parameters_are_checked() {
        let b = |p: GenerateParameters| p.beam(&limits());
        assert_eq!(b(GenerateParameters::default()).unwrap(), None);
        let p = b(GenerateParameters {
            num_beams: Some(4),
            num_return_sequences: Some(2),
            length_penalty: Some(0.5),
            early_stopping: Some(serde_json::json!("never")),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!((p.num_beams, p.num_return_sequences, p.early_stopping), (4, 2, EarlyStopping::Never));
        let errors = [
            (GenerateParameters { num_beams: Some(5), ..Default::default() }, "num_beams must be between 1 and 4"),
            (
                GenerateParameters { num_beams: Some(2), num_return_sequences: Some(3), ..Default::default() },
                "num_return_sequences",
            ),
            (GenerateParameters { num_beams: Some(2), do_sample: Some(true), ..Default::default() }, "sampling cannot"),
            (GenerateParameters { length_penalty: Some(2.0), ..Default::default() }, "beam search only"),
            (
                GenerateParameters {
                    num_beams: Some(2),
                    early_stopping: Some(serde_json::json!(3)),
                    ..Default::default()
                },
                "early_stopping must be",
            ),
        ];
        for (p, msg) in errors {
            let e = b(p).unwrap_err().0;
            assert!(e.contains(msg), "{e}");
        }
    }

    #[test]
    fn stop_sequences_are_bounded() {
        let p = |stop: Vec<&str>| GenerateParameters {
            stop: Some(stop.into_iter().map(String::from).collect()),
            ..Default::default()
        };
        assert_eq!(p(vec!["a", "b"]).stop_sequences(&limits()).unwrap().len(), 2);
        assert!(p(vec!["a", "b", "c"]).stop_sequences(&limits()).unwrap_err().0.contains("max_stop_sequences"));
        assert_eq!(
            p(vec!["a", ""]).stop_sequences(&limits()).unwrap_err().0,
            "parameters.stop[1] must be 1 to 256 bytes long"
        );
    }

    #[test]
    fn token_count_limit_names_the_input() {
        assert!(check_token_count(Some(3), 8, &limits()).is_ok());
        let e = check_token_count(Some(3), 9, &limits()).unwrap_err();
        assert_eq!(e.0, "inputs[3] has 9 tokens; the limit is 8 (max_input_tokens)");
    }
}

/// `POST /v1/classify`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// A string, or a list of strings (at most max_client_batch_size).
    pub inputs: Value,
    /// 2..=max_labels distinct candidate labels; default: the configured label set.
    pub labels: Option<Vec<String>>,
    /// The prompt, with `{text}` where the input goes; default: the configured template.
    pub template: Option<String>,
    /// Independent probabilities per label instead of a distribution over the labels.
    pub multi_label: Option<bool>,
    /// Divide each label's log-likelihood by its token count before comparing.
    pub length_normalize: Option<bool>,
}

/// Checks candidate labels: 2..=max_labels, non-empty, distinct.
pub fn check_labels(labels: &[String], limits: &Limits) -> Result<(), ValidationError> {
    if labels.len() < 2 || labels.len() > limits.max_labels {
        return Err(invalid(format!(
            "labels must hold between 2 and {} (max_labels) candidates, got {}",
            limits.max_labels,
            labels.len()
        )));
    }
    for (i, l) in labels.iter().enumerate() {
        if l.trim().is_empty() {
            return Err(invalid(format!("labels[{i}] must not be empty")));
        }
        if labels[..i].contains(l) {
            return Err(invalid(format!("labels[{i}] ({l:?}) is listed twice")));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// The most likely label.
    pub label: String,
    /// Every label with its probability, most likely first.
    pub scores: Vec<crate::tasks::classify::LabelProbability>,
}

/// `POST /v1/translate`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateRequest {
    /// A string, or a list of strings (at most max_client_batch_size).
    pub text: Value,
    pub source_lang: String,
    pub target_lang: String,
    #[serde(default)]
    pub parameters: GenerateParameters,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TranslateResponse {
    /// One translation per input text, in order.
    pub translations: Vec<String>,
}
