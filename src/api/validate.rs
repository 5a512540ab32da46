//! The one validation every route makes: a route states its request in t5serve's terms
//! (`Request`), and `validate` checks it against the limits and returns what the run path
//! needs (`Validated`): the texts, their truncation, the queue deadline, and the task, with its
//! decoding settings (sampling, beam search, stop sequences, log-probabilities) or its labels.

use std::time::Duration;

use serde_json::Value;

use super::{GenerateParameters, Inputs, Limits, ValidationError, invalid};
use crate::generation::GenerationParams;
use crate::generation::beam::{BeamParams, EarlyStopping};

/// Longest accepted stop sequence, in bytes.
pub const MAX_STOP_BYTES: usize = 256;

/// Most alternatives a request may ask for at each step (`top_n_tokens`).
pub const MAX_TOP_TOKENS: usize = 20;

/// Smallest temperature and repetition penalty accepted.
pub const MIN_DIVISOR: f64 = 0.01;

/// What a route does with a text longer than `max_input_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongTexts {
    /// Refuse it (unless the request truncates): a cheap byte bound before tokenizing, then
    /// the token count.
    Refuse,
    /// Split it at sentence boundaries into several rows (translation); the body limit bounds it.
    Split,
}

/// A request in t5serve's terms, as a route's dialect states it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request field that holds the texts, for error messages (`inputs`, `text`).
    pub field: &'static str,
    pub inputs: Inputs,
    pub parameters: GenerateParameters,
    /// Score these candidate labels instead of generating.
    pub labels: Option<Labels>,
    /// Embed the texts (the encoder alone) instead of generating.
    pub embed: Option<crate::tasks::embed::EmbedSettings>,
    /// Report each token's log-probability even without `parameters.details` (TGI always does).
    pub logprobs: bool,
    /// Stream the tokens (one text only, not with beam search).
    pub stream: bool,
    pub long_texts: LongTexts,
    /// Rows per text (OpenAI's `n`): copy `j` of text `i` is row `i * copies + j`, sampled
    /// with the seed plus `j`.
    pub copies: usize,
    /// With `parameters.truncate`: keep the first tokens (and the closing EOS) instead of the
    /// last ones (TEI's `truncation_direction: Right`).
    pub truncate_right: bool,
}

impl Request {
    /// A generation request for `inputs` with `parameters`, each text refused when too long.
    pub fn generate(field: &'static str, inputs: Inputs, parameters: GenerateParameters) -> Self {
        Self {
            field,
            inputs,
            parameters,
            labels: None,
            embed: None,
            logprobs: false,
            stream: false,
            long_texts: LongTexts::Refuse,
            copies: 1,
            truncate_right: false,
        }
    }

    /// A request that scores `labels` for each text.
    pub fn score(inputs: Inputs, labels: Vec<String>) -> Self {
        Self { labels: Some(Labels::Texts(labels)), ..Self::generate("inputs", inputs, GenerateParameters::default()) }
    }
}

/// What a scoring request scores.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// Candidate labels, each scored as its tokens and EOS (checked: 2..=max_labels, distinct,
    /// non-empty).
    Texts(Vec<String>),
    /// Single tokens, whose logits at the first decoder step are what counts (reranking's two
    /// words); set by the server, not by clients.
    FirstTokens(Vec<u32>),
}

/// How the rows of a generation request are decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoding {
    pub params: GenerationParams,
    pub beam: Option<BeamParams>,
    pub stop: Vec<String>,
    pub logprobs: bool,
    /// Alternatives reported at each step (0: none).
    pub top: usize,
    /// Added to the logits at every step.
    pub logit_bias: std::sync::Arc<[(u32, f32)]>,
}

/// What the rows of a request do.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    Generate(Decoding),
    /// Score each of these labels.
    Score(Labels),
    /// Pool the encoder's states of each text.
    Embed(crate::tasks::embed::EmbedSettings),
}

/// A request checked against the limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// Non-empty, at most max_client_batch_size.
    pub texts: Vec<String>,
    /// The client sent one string: answer with one object.
    pub single: bool,
    /// Keep only N input tokens of each text: the last ones, or with `truncate_right` the first
    /// ones and the closing EOS.
    pub truncate: Option<usize>,
    pub truncate_right: bool,
    pub long_texts: LongTexts,
    /// How long the rows may stay queued.
    pub queue_deadline: Duration,
    pub task: Task,
    pub stream: bool,
    /// Rows per text (see `Request::copies`).
    pub copies: usize,
}

/// Checks a request against the limits.
pub fn validate(r: Request, limits: &Limits) -> Result<Validated, ValidationError> {
    let p = &r.parameters;
    let truncate = p.truncate(limits)?;
    // A cheap bound before tokenizing, so a huge body costs no tokenizer time: T5 pieces are at
    // most 16 characters, so a text of more than 32 bytes per allowed token cannot fit. With
    // truncation or splitting, a text may be longer than max_input_tokens (the body limit
    // still bounds it).
    let byte_limit = match (r.long_texts, truncate) {
        (LongTexts::Refuse, None) => limits.max_input_tokens.saturating_mul(32),
        _ => usize::MAX,
    };
    let single = r.inputs.is_single();
    let texts = check_texts(r.field, r.inputs, limits, byte_limit)?;
    let copies = r.copies.max(1);
    if texts.len().saturating_mul(copies) > limits.max_client_batch_size {
        return Err(invalid(format!(
            "{} texts times {copies} copies each is {} rows; the limit is {} (max_client_batch_size)",
            texts.len(),
            texts.len().saturating_mul(copies),
            limits.max_client_batch_size
        )));
    }
    let task = match (r.labels, r.embed) {
        (Some(labels), _) => {
            if let Labels::Texts(texts) = &labels {
                check_labels(texts, limits)?;
            }
            Task::Score(labels)
        }
        (None, Some(settings)) => Task::Embed(settings),
        (None, None) => {
            let beam = p.beam(limits)?;
            if r.stream && beam.is_some() {
                return Err(invalid("stream is not available with beam search (num_beams > 1)"));
            }
            Task::Generate(Decoding {
                params: p.decoding(limits)?,
                beam,
                stop: p.stop_sequences(limits)?,
                logprobs: r.logprobs || p.details == Some(true),
                top: p.top_tokens()?,
                logit_bias: p.logit_bias(limits)?,
            })
        }
    };
    Ok(Validated {
        texts,
        single,
        truncate,
        truncate_right: r.truncate_right,
        long_texts: r.long_texts,
        queue_deadline: p.queue_deadline(limits)?,
        task,
        stream: r.stream,
        copies,
    })
}

/// Checks the texts: non-empty, at most max_client_batch_size, each non-blank and within
/// `byte_limit`.
fn check_texts(
    field: &str,
    inputs: Inputs,
    limits: &Limits,
    byte_limit: usize,
) -> Result<Vec<String>, ValidationError> {
    let single = inputs.is_single();
    let texts = inputs.into_vec();
    if texts.is_empty() {
        return Err(invalid(format!("{field} must not be an empty list")));
    }
    if texts.len() > limits.max_client_batch_size {
        return Err(invalid(format!(
            "{field} has {} items; the limit is {} (max_client_batch_size)",
            texts.len(),
            limits.max_client_batch_size
        )));
    }
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
    Ok(texts)
}

/// `name` must lie in `(low, high]` (`low_open`) or `[low, high]`.
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

impl GenerateParameters {
    /// The decoding parameters of each row.
    fn decoding(&self, limits: &Limits) -> Result<GenerationParams, ValidationError> {
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
        let penalty = |name: &str, v: Option<f64>| {
            v.map_or(Ok(0.0), |v| check_range(name, v, -2.0, false, 2.0)).map(|v| v as f32)
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
            presence_penalty: penalty("presence_penalty", self.presence_penalty)?,
            frequency_penalty: penalty("frequency_penalty", self.frequency_penalty)?,
            seed: self.seed.unwrap_or_else(fresh_seed),
        })
    }

    /// The stop sequences, checked: each non-empty and short, at most `max_stop_sequences`.
    fn stop_sequences(&self, limits: &Limits) -> Result<Vec<String>, ValidationError> {
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

    /// Alternatives to report at each step.
    fn top_tokens(&self) -> Result<usize, ValidationError> {
        match self.top_n_tokens {
            None => Ok(0),
            Some(n) if (0..=MAX_TOP_TOKENS as i64).contains(&n) => Ok(n as usize),
            Some(n) => Err(invalid(format!("parameters.top_n_tokens must be in [0, {MAX_TOP_TOKENS}], got {n}"))),
        }
    }

    /// The logit bias as `(id, bias)` pairs: ids below the vocabulary size, biases in [-100, 100].
    fn logit_bias(&self, limits: &Limits) -> Result<std::sync::Arc<[(u32, f32)]>, ValidationError> {
        let Some(map) = &self.logit_bias else { return Ok(std::sync::Arc::from([])) };
        let mut out = Vec::with_capacity(map.len());
        for (key, &bias) in map {
            let id =
                key.trim().parse::<u32>().ok().filter(|&id| (id as usize) < limits.vocab_size).ok_or_else(|| {
                    invalid(format!(
                        "parameters.logit_bias keys must be token ids below the vocabulary size ({}), got {}",
                        limits.vocab_size,
                        super::echo(&format!("{key:?}"))
                    ))
                })?;
            if !(bias.is_finite() && (-100.0..=100.0).contains(&bias)) {
                return Err(invalid(format!("parameters.logit_bias[{id}] must be in [-100, 100], got {bias}")));
            }
            out.push((id, bias as f32));
        }
        Ok(std::sync::Arc::from(out))
    }

    /// Beam search settings, or `None` for token-by-token decoding.
    fn beam(&self, limits: &Limits) -> Result<Option<BeamParams>, ValidationError> {
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
        only(
            self.presence_penalty.is_some_and(|v| v != 0.0) || self.frequency_penalty.is_some_and(|v| v != 0.0),
            "presence_penalty and frequency_penalty",
        )?;
        only(self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()), "parameters.logit_bias")?;
        only(self.top_n_tokens.is_some_and(|n| n > 0), "parameters.top_n_tokens")?;
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
                    "parameters.early_stopping must be true, false or \"never\", got {}",
                    super::echo(&other.to_string())
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

    /// How many input tokens to keep (the last ones), if the request asks to truncate.
    fn truncate(&self, limits: &Limits) -> Result<Option<usize>, ValidationError> {
        match self.truncate {
            None => Ok(None),
            Some(n) if n >= 1 && n as u64 <= limits.max_input_tokens as u64 => Ok(Some(n as usize)),
            Some(n) => Err(invalid(format!(
                "parameters.truncate must be between 1 and {} (max_input_tokens), got {n}",
                limits.max_input_tokens
            ))),
        }
    }

    /// How long the request may stay queued.
    fn queue_deadline(&self, limits: &Limits) -> Result<Duration, ValidationError> {
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
        Ok(Duration::from_millis(ms))
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

/// Checks what a tokenized request asks of the model against `max_request_cost`. Its cost, in
/// token-steps, is the sum over its rows of the input tokens plus, for every batch row the row
/// occupies (its beams, or its labels), the decoder steps it may take (max_new_tokens, or the
/// longest label): what holds a decode lane, so that one request cannot hold it for minutes.
pub fn check_cost(
    rows: impl IntoIterator<Item = (usize, usize, usize)>,
    limits: &Limits,
) -> Result<(), ValidationError> {
    let cost: usize = rows.into_iter().map(|(input, width, steps)| input + width.saturating_mul(steps)).sum();
    if limits.max_request_cost > 0 && cost > limits.max_request_cost {
        return Err(invalid(format!(
            "the request asks for {cost} token-steps (input tokens, plus beams or labels times new or label \
             tokens, over its inputs); the limit is {} (max_request_cost): send fewer inputs, beams or \
             labels, or fewer new tokens",
            limits.max_request_cost
        )));
    }
    Ok(())
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
            return Err(invalid(format!("labels[{i}] ({:?}) is listed twice", super::echo(l))));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
