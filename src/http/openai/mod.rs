//! OpenAI's API: `POST /v1/completions`, `POST /v1/chat/completions` and `POST /v1/embeddings`
//! (with `GET /v1/models`, in `models.rs`), so that the official `openai` client works with only
//! its base URL changed. Each route translates OpenAI's request into an `api::Request` and a
//! `Prompt` for the one path (`pipeline`), and the results back. What is shared lives here:
//! errors in OpenAI's shape, the `model` check, the prompt forms, the parameters that
//! completions and chat have in common, usage, and the stream's end.

pub mod chat;
pub mod completions;
pub mod embeddings;
mod logprobs;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{self, GenerateParameters, Inputs, MIN_DIVISOR};
use crate::generation::FinishReason;

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use super::pipeline::Prompt;
use super::served::Served;

/// Paths whose errors (authentication included) are in OpenAI's shape.
pub const PATHS: &[&str] = &["/v1/completions", "/v1/chat/completions", "/v1/embeddings"];

/// Most stop sequences OpenAI accepts.
pub const MAX_STOP: usize = 4;

/// Most choices per prompt (`n`, `best_of`), as OpenAI.
pub const MAX_CHOICES: i64 = 128;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with 400 for
/// an invalid request (where t5serve's own routes answer 422), so that the client raises its
/// matching exception (`BadRequestError`, `AuthenticationError`, `NotFoundError`,
/// `RateLimitError`...).
#[derive(Debug)]
pub struct OpenAiError {
    pub error: ApiError,
    /// The request field at fault, when one is.
    pub param: Option<&'static str>,
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self { error, param: None }
    }
}

impl From<api::ValidationError> for OpenAiError {
    fn from(e: api::ValidationError) -> Self {
        ApiError::from(e).into()
    }
}

/// An invalid value of the request field `param`.
pub fn invalid(param: &'static str, message: impl Into<String>) -> OpenAiError {
    OpenAiError { error: ApiError::Validation(message.into()), param: Some(param) }
}

impl OpenAiError {
    /// OpenAI's status, `type` and `code` for this error.
    fn kind(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match &self.error {
            ApiError::Validation(_) | ApiError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", None)
            }
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key")),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found")),
            ApiError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded")),
            other if other.status_code().is_server_error() => (other.status_code(), "server_error", None),
            other => (other.status_code(), "invalid_request_error", None),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.kind();
        let body = json!({"error": {
            "message": self.error.public_message(), "type": kind, "param": self.param, "code": code,
        }});
        // t5serve's own response (which logs the error) carries the headers (Retry-After,
        // WWW-Authenticate) and the metrics' rejection reason; only the status and body change.
        let (mut parts, _) = self.error.into_response().into_parts();
        parts.status = status;
        Response::from_parts(parts, Body::from(body.to_string()))
    }
}

/// The JSON body of an OpenAI route; a body that is not valid JSON for it is refused in
/// OpenAI's shape.
pub struct OaiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OaiJson<T> {
    type Rejection = OpenAiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
        Ok(OaiJson(value))
    }
}

/// The served model a request names (absent: the default one); another is a 404.
pub fn check_model(app: &AppState, model: Option<&str>) -> Result<Arc<Served>, OpenAiError> {
    app.models.get(model).map_err(|error| OpenAiError { error, param: Some("model") })
}

/// A response id: the prefix and a process-unique number.
pub fn response_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    format!("{prefix}-{:x}{:06x}", base & 0xffff_ffff_ffff, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Seconds since the Unix epoch (`created`).
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A prompt or an embedding input: text(s), or token ids (one list, or a list of lists).
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    Texts(Inputs),
    Ids { lists: Vec<Vec<u32>>, single: bool },
}

impl PromptInput {
    /// Reads OpenAI's four forms: a string, a list of strings, a list of token ids, a list of
    /// lists of token ids. `field` names the field in errors.
    pub fn parse(field: &'static str, v: Value) -> Result<Self, OpenAiError> {
        let bad = || {
            invalid(
                field,
                format!(
                    "{field} must be a string, a list of strings, a list of token ids or a list of lists of token ids"
                ),
            )
        };
        let id = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        match v {
            Value::String(s) => Ok(Self::Texts(Inputs::One(s))),
            Value::Array(items) if items.is_empty() => Err(invalid(field, format!("{field} must not be empty"))),
            Value::Array(items) => match &items[0] {
                Value::String(_) => items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s),
                        _ => Err(bad()),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|t| Self::Texts(Inputs::Many(t))),
                Value::Number(_) => {
                    let ids = items.iter().map(|i| id(i).ok_or_else(bad)).collect::<Result<Vec<_>, _>>()?;
                    Ok(Self::Ids { lists: vec![ids], single: true })
                }
                Value::Array(_) => {
                    let lists = items
                        .iter()
                        .map(|l| match l {
                            Value::Array(ids) => ids.iter().map(|i| id(i).ok_or_else(bad)).collect(),
                            _ => Err(bad()),
                        })
                        .collect::<Result<Vec<Vec<u32>>, _>>()?;
                    Ok(Self::Ids { lists, single: false })
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    /// The request's inputs and prompt for the pipeline, and each input's text as a client
    /// would read it (token ids decoded, for `echo`).
    pub fn into_request(self, model: &Served) -> Result<(Inputs, Prompt, Vec<String>), OpenAiError> {
        match self {
            Self::Texts(inputs) => {
                let texts = match &inputs {
                    Inputs::One(s) => vec![s.clone()],
                    Inputs::Many(v) => v.clone(),
                };
                Ok((inputs, Prompt::Text, texts))
            }
            Self::Ids { lists, single } => {
                // The pipeline's texts only name the lists (its checks need non-blank text);
                // the ids themselves are the rows.
                let names: Vec<String> = lists.iter().map(|l| format!("{} token ids", l.len())).collect();
                let texts = lists.iter().map(|l| model.tokenizer.decode(l).unwrap_or_default()).collect();
                let inputs = if single { Inputs::One(names[0].clone()) } else { Inputs::Many(names) };
                Ok((inputs, Prompt::Ids(Arc::new(lists)), texts))
            }
        }
    }

    /// How many prompts.
    pub fn count(&self) -> usize {
        match self {
            Self::Texts(Inputs::One(_)) => 1,
            Self::Texts(Inputs::Many(v)) => v.len(),
            Self::Ids { lists, .. } => lists.len(),
        }
    }
}

/// `stop`: one string or a list of up to `MAX_STOP`.
pub fn stop_sequences(v: Option<Value>) -> Result<Option<Vec<String>>, OpenAiError> {
    let stop = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                _ => Err(invalid("stop", "stop must be a string or a list of strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("stop", "stop must be a string or a list of strings")),
    };
    if stop.len() > MAX_STOP {
        return Err(invalid("stop", format!("stop holds {} sequences; at most {MAX_STOP} are allowed", stop.len())));
    }
    if stop.iter().any(String::is_empty) {
        return Err(invalid("stop", "stop sequences must not be empty"));
    }
    Ok(Some(stop))
}

/// Checks that `v`, when given, lies in `[low, high]`.
pub fn in_range(param: &'static str, v: Option<f64>, low: f64, high: f64) -> Result<(), OpenAiError> {
    match v {
        Some(x) if !(x.is_finite() && x >= low && x <= high) => {
            Err(invalid(param, format!("{param} must be between {low} and {high}, got {x}")))
        }
        _ => Ok(()),
    }
}

/// The sampling and penalty parameters completions and chat share, in OpenAI's terms.
#[derive(Debug, Default)]
pub struct Sampling {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<Value>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<BTreeMap<String, f64>>,
}

impl Sampling {
    /// /v1/generate's parameters for these. `temperature` 0 (or absent, without `top_p`) is
    /// greedy decoding, the model's own default; otherwise tokens are sampled (a temperature
    /// below 0.01 samples at 0.01), seeded by `seed` when given.
    pub fn parameters(self, model: &Served) -> Result<GenerateParameters, OpenAiError> {
        let limit = model.limits.max_new_tokens_limit as i64;
        if let Some(m) = self.max_tokens
            && !(1..=limit).contains(&m)
        {
            return Err(invalid(
                "max_tokens",
                format!("max_tokens must be between 1 and {limit} (the server's max_new_tokens_limit), got {m}"),
            ));
        }
        in_range("temperature", self.temperature, 0.0, 2.0)?;
        in_range("top_p", self.top_p, 0.0, 1.0)?;
        in_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        if self.top_p == Some(0.0) {
            return Err(invalid("top_p", "top_p must be above 0"));
        }
        for (key, &bias) in self.logit_bias.iter().flatten() {
            let known = key.parse::<u32>().is_ok_and(|id| (id as usize) < model.limits.vocab_size);
            if !known {
                return Err(invalid(
                    "logit_bias",
                    format!(
                        "logit_bias keys must be token ids below {} (the vocabulary size), got {}",
                        model.limits.vocab_size,
                        api::echo(key)
                    ),
                ));
            }
            in_range("logit_bias", Some(bias), -100.0, 100.0)?;
        }
        let sample = match self.temperature {
            Some(t) => t > 0.0,
            None => self.top_p.is_some(),
        };
        Ok(GenerateParameters {
            max_new_tokens: self.max_tokens,
            do_sample: Some(sample),
            temperature: self.temperature.filter(|_| sample).map(|t| t.max(MIN_DIVISOR)),
            top_p: self.top_p.filter(|_| sample),
            seed: self.seed.map(|s| s as u64),
            stop: stop_sequences(self.stop)?,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            logit_bias: self.logit_bias,
            ..Default::default()
        })
    }
}

/// `n` and `best_of`: the choices returned per prompt and the rows generated for them.
pub fn choices(n: Option<i64>, best_of: Option<i64>) -> Result<(usize, usize), OpenAiError> {
    let n = n.unwrap_or(1);
    if !(1..=MAX_CHOICES).contains(&n) {
        return Err(invalid("n", format!("n must be between 1 and {MAX_CHOICES}, got {n}")));
    }
    let best_of = best_of.unwrap_or(n);
    if !(n..=MAX_CHOICES).contains(&best_of) {
        return Err(invalid("best_of", format!("best_of must be between n ({n}) and {MAX_CHOICES}, got {best_of}")));
    }
    Ok((n as usize, best_of as usize))
}

/// `stream_options`: only `include_usage`.
#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
    pub continuous_usage_stats: Option<bool>,
}

/// Refuses `stream_options` without `stream`, as OpenAI does; whether usage ends the stream.
pub fn include_usage(stream: bool, options: Option<StreamOptions>) -> Result<bool, OpenAiError> {
    match options {
        Some(_) if !stream => Err(invalid("stream_options", "stream_options is only allowed when stream is true")),
        Some(o) if o.continuous_usage_stats == Some(true) => {
            Err(invalid("stream_options", "stream_options.continuous_usage_stats is not supported"))
        }
        Some(o) => Ok(o.include_usage.unwrap_or(false)),
        None => Ok(false),
    }
}

/// Token counts in OpenAI's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}

/// What every chunk of a stream shares, completions' and chat's alike: the fields each chunk
/// repeats (`id`, `object`, `created`, `model`...), `"usage": null` on each when the stream ends
/// with usage, the usage summed as choices finish, and the end (usage when asked, `[DONE]`).
pub struct Chunks {
    head: Value,
    include_usage: bool,
    usage: Usage,
}

impl Chunks {
    pub fn new(head: Value, include_usage: bool) -> Self {
        Self { head, include_usage, usage: Usage::default() }
    }

    /// A chunk of one choice (its `index`, its text or delta, `logprobs`, `finish_reason`).
    pub fn chunk(&self, choice: Value) -> SseEvent {
        let mut chunk = self.head.clone();
        chunk["choices"] = json!([choice]);
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        data(&chunk)
    }

    /// Counts a finished choice: its tokens, and its prompt's when it is the `first` of the
    /// prompt's choices (a prompt counts once, however many choices it has).
    pub fn finished(&mut self, first: bool, usage: crate::api::Usage) {
        let prompt = if first { usage.input_tokens } else { 0 };
        let u = self.usage;
        self.usage = Usage::new(u.prompt_tokens + prompt, u.completion_tokens + usage.generated_tokens);
    }

    /// The stream's end: a chunk without choices carrying the usage, when asked, then `[DONE]`.
    pub fn end(&self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if self.include_usage {
            let mut last = self.head.clone();
            last["choices"] = json!([]);
            last["usage"] = json!(self.usage);
            events.push(data(&last));
        }
        events.push(done());
        events
    }
}

/// OpenAI's `finish_reason`: `stop` (the model's end, or a stop sequence) or `length`.
pub fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// A stream's data event (no event name: the client reads every `data:` line).
pub fn data(value: &impl Serialize) -> SseEvent {
    super::collect::json_event(None, value)
}

/// The stream's last line.
pub fn done() -> SseEvent {
    SseEvent::default().data("[DONE]")
}

/// An error inside a stream, as OpenAI sends it: a data line with the error object; the client
/// raises `APIError` with its message.
pub fn stream_error(e: super::error::ErrorBody) -> SseEvent {
    data(&json!({"error": {"message": e.error, "type": e.error_type, "param": null, "code": null}}))
}

/// Refuses a field t5serve does not support (when it is set to anything but null).
pub fn refuse(param: &'static str, value: &Option<Value>, why: &str) -> Result<(), OpenAiError> {
    match value {
        Some(v) if !v.is_null() => Err(invalid(param, format!("{param} is not supported: {why}"))),
        _ => Ok(()),
    }
}
