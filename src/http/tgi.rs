//! Hugging Face TGI compatibility: `POST /generate`, `POST /generate_stream`, and `POST /`
//! (which streams when `"stream": true`), with TGI's request and response shapes, so that TGI
//! clients (`huggingface_hub.InferenceClient.text_generation`, `text-generation`) work as they are.
//! Parameters map onto /v1/generate's; TGI features t5serve does not have are refused with 422.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::api::{GenerateParameters, TokenInfo, Usage};
use crate::generation::FinishReason;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::rows::{self, RowOptions, StreamFormat, json_event};

/// TGI's `GenerateRequest`. Unknown fields are refused (a typo must not pass silently); TGI's
/// own fields are all accepted, null meaning unset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TgiRequest {
    pub inputs: String,
    #[serde(default)]
    pub parameters: TgiParameters,
    #[serde(default)]
    pub stream: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TgiParameters {
    pub adapter_id: Option<String>,
    pub best_of: Option<i64>,
    pub decoder_input_details: Option<bool>,
    pub details: Option<bool>,
    pub do_sample: Option<bool>,
    pub frequency_penalty: Option<f64>,
    pub grammar: Option<serde_json::Value>,
    pub max_new_tokens: Option<i64>,
    pub repetition_penalty: Option<f64>,
    pub return_full_text: Option<bool>,
    pub seed: Option<u64>,
    pub stop: Option<Vec<String>>,
    pub temperature: Option<f64>,
    pub top_k: Option<i64>,
    pub top_n_tokens: Option<i64>,
    pub top_p: Option<f64>,
    pub truncate: Option<i64>,
    pub typical_p: Option<f64>,
    pub watermark: Option<bool>,
}

impl TgiParameters {
    /// The equivalent /v1 parameters. TGI samples whenever a warper is set, so do the same.
    pub fn to_v1(&self) -> Result<GenerateParameters, ApiError> {
        let refuse = |what: &str| Err(ApiError::Validation(format!("{what} is not supported by t5serve")));
        if self.adapter_id.is_some() {
            return refuse("parameters.adapter_id");
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return refuse("parameters.best_of other than 1");
        }
        if self.decoder_input_details == Some(true) {
            return refuse("parameters.decoder_input_details");
        }
        if self.frequency_penalty.is_some_and(|f| f != 0.0) {
            return refuse("parameters.frequency_penalty (use repetition_penalty)");
        }
        if self.grammar.as_ref().is_some_and(|g| !g.is_null()) {
            return refuse("parameters.grammar");
        }
        if self.top_n_tokens.is_some_and(|n| n != 0) {
            return refuse("parameters.top_n_tokens");
        }
        if self.watermark == Some(true) {
            return refuse("parameters.watermark");
        }
        // TGI ignores top_p = 1 and typical_p = 1 (no sampling); out of range they are errors,
        // never silently dropped.
        for (name, v) in [("top_p", self.top_p), ("typical_p", self.typical_p)] {
            if let Some(v) = v
                && !(v > 0.0 && v <= 1.0)
            {
                return Err(ApiError::Validation(format!("parameters.{name} must be in (0, 1], got {v}")));
            }
        }
        let warpers = self.temperature.is_some_and(|t| t != 1.0)
            || self.top_k.is_some_and(|k| k != 0)
            || self.top_p.is_some_and(|p| p < 1.0)
            || self.typical_p.is_some_and(|p| p < 1.0);
        let do_sample = self.do_sample.unwrap_or(false) || warpers;
        Ok(GenerateParameters {
            max_new_tokens: self.max_new_tokens,
            do_sample: Some(do_sample),
            temperature: self.temperature.filter(|_| do_sample),
            top_k: self.top_k.filter(|&k| do_sample && k != 0),
            top_p: self.top_p.filter(|_| do_sample),
            typical_p: self.typical_p.filter(|_| do_sample),
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop: self.stop.clone(),
            details: self.details,
            truncate: self.truncate,
            ..Default::default()
        })
    }
}

/// TGI's finish reasons.
fn tgi_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos => "eos_token",
        FinishReason::Length => "length",
        FinishReason::Stop => "stop_sequence",
    }
}

#[derive(Serialize)]
struct TgiDetails {
    finish_reason: &'static str,
    generated_tokens: usize,
    seed: Option<u64>,
    prefill: Vec<TokenInfo>,
    tokens: Vec<TokenInfo>,
}

#[derive(Serialize)]
struct TgiResponse {
    generated_text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<TgiDetails>,
}

#[derive(Serialize)]
struct TgiStreamDetails {
    finish_reason: &'static str,
    generated_tokens: usize,
    input_length: usize,
    seed: Option<u64>,
}

#[derive(Serialize)]
struct TgiStreamResponse {
    index: usize,
    token: TokenInfo,
    generated_text: Option<String>,
    details: Option<TgiStreamDetails>,
}

/// `POST /generate`
pub async fn generate(state: State<AppState>, req: ApiJson<TgiRequest>) -> Result<Response, ApiError> {
    run(state, req, false).await
}

/// `POST /generate_stream`
pub async fn generate_stream(state: State<AppState>, req: ApiJson<TgiRequest>) -> Result<Response, ApiError> {
    run(state, req, true).await
}

/// `POST /`: TGI's compat route, where the body's `stream` chooses.
pub async fn compat(state: State<AppState>, req: ApiJson<TgiRequest>) -> Result<Response, ApiError> {
    let stream = req.0.stream.unwrap_or(false);
    run(state, req, stream).await
}

async fn run(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<TgiRequest>,
    stream: bool,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let permit = app.admit()?;
    let p = req.parameters.to_v1()?;
    let (texts, truncate) = p.texts(&serde_json::Value::String(req.inputs.clone()), &app.limits)?;
    let sampled = p.do_sample == Some(true);
    let options = RowOptions {
        beam: None,
        params: p.validate(&app.limits)?,
        stop: p.stop_sequences(&app.limits)?,
        // TGI always reports log-probabilities in details and streams.
        logprobs: true,
        deadline: arrived + p.queue_deadline(&app.limits)?,
    };
    let seed = sampled.then_some(options.params.seed);
    let ids = app.tokenize_truncated(texts.texts, truncate).await?;
    let prefix = if req.parameters.return_full_text == Some(true) { req.inputs.clone() } else { String::new() };
    let rx = rows::submit(&app, ids, &options)?.pop().expect("one input");
    if stream {
        let format = TgiStream { held: None, seed, prefix };
        return Ok(rows::stream(app, rx, arrived, permit, format).into_response());
    }
    let c = rows::collect(&app, rx, arrived).await?;
    let details = req.parameters.details.unwrap_or(false).then(|| TgiDetails {
        finish_reason: tgi_reason(c.reason),
        generated_tokens: c.usage.generated_tokens,
        seed,
        prefill: Vec::new(),
        tokens: c.tokens,
    });
    Ok(Json(TgiResponse { generated_text: prefix + &c.text, details }).into_response())
}

/// TGI's stream: one `data:` event per token; the last one also carries the whole text and the
/// details. So each token is held until the next event says whether it was the last.
struct TgiStream {
    held: Option<(usize, TokenInfo)>,
    seed: Option<u64>,
    prefix: String,
}

impl StreamFormat for TgiStream {
    fn token(&mut self, index: usize, token: TokenInfo) -> Vec<SseEvent> {
        let previous = self.held.replace((index, token));
        previous
            .map(|(index, token)| {
                json_event(None, &TgiStreamResponse { index, token, generated_text: None, details: None })
            })
            .into_iter()
            .collect()
    }

    fn finish(&mut self, text: String, reason: FinishReason, usage: Usage) -> Vec<SseEvent> {
        let Some((index, token)) = self.held.take() else { return Vec::new() };
        let details = TgiStreamDetails {
            finish_reason: tgi_reason(reason),
            generated_tokens: usage.generated_tokens,
            input_length: usage.input_tokens,
            seed: self.seed,
        };
        let last = TgiStreamResponse {
            index,
            token,
            generated_text: Some(std::mem::take(&mut self.prefix) + &text),
            details: Some(details),
        };
        vec![json_event(None, &last)]
    }

    fn error(&mut self, e: ApiError) -> SseEvent {
        json_event(None, &ErrorBody { error: e.public_message(), error_type: e.error_type() })
    }
}
