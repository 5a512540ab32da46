//! Hugging Face TGI compatibility: `POST /generate`, `POST /generate_stream`, `POST /` (which
//! streams when `"stream": true`, and otherwise answers a one-element list) and `GET /info`,
//! with TGI's request and response shapes, so that TGI
//! clients (`huggingface_hub.InferenceClient.text_generation`, `text-generation`) work as they are.
//! Parameters map onto /v1/generate's; TGI features t5serve does not have are refused with 422.

use axum::Json;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::api::{self, GenerateParameters, TokenInfo, Usage};
use crate::generation::FinishReason;

use super::AppState;
use super::collect::{StreamFormat, json_event};
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::pipeline::{Caller, Prompt};

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
pub async fn generate(State(app): State<AppState>, ApiJson(req): ApiJson<TgiRequest>) -> Result<Response, ApiError> {
    Ok(match run(&app, req, false).await? {
        Answer::Stream(s) => s,
        Answer::One(r) => Json(r).into_response(),
    })
}

/// `POST /generate_stream`
pub async fn generate_stream(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<TgiRequest>,
) -> Result<Response, ApiError> {
    Ok(match run(&app, req, true).await? {
        Answer::Stream(s) => s,
        Answer::One(r) => Json(r).into_response(),
    })
}

/// `POST /`: TGI's compat route, where the body's `stream` chooses. Its plain answer is a
/// one-element list, as TGI's (the inference API's shape, which the `text-generation` client reads).
pub async fn compat(State(app): State<AppState>, ApiJson(req): ApiJson<TgiRequest>) -> Result<Response, ApiError> {
    let stream = req.stream.unwrap_or(false);
    Ok(match run(&app, req, stream).await? {
        Answer::Stream(s) => s,
        Answer::One(r) => Json([r]).into_response(),
    })
}

/// `GET /info`: TGI's server information, with t5serve's limits.
pub async fn info(State(app): State<AppState>) -> Json<serde_json::Value> {
    let l = &app.limits;
    let model = app.models.default_model();
    Json(serde_json::json!({
        "model_id": model.id,
        "model_sha": null,
        "model_dtype": model.info.weights(),
        "model_device_type": if model.info.cuda_device.is_some() { "cuda" } else { "cpu" },
        "model_pipeline_tag": "text2text-generation",
        "max_concurrent_requests": l.max_concurrent_requests,
        "max_best_of": 1,
        "max_stop_sequences": l.max_stop_sequences,
        "max_input_tokens": l.max_input_tokens,
        "max_total_tokens": l.max_input_tokens + l.max_new_tokens_limit,
        "validation_workers": app.tokenizing.threads(),
        "max_client_batch_size": l.max_client_batch_size,
        "router": "t5serve",
        "version": env!("CARGO_PKG_VERSION"),
        "sha": null,
        "docker_label": null,
    }))
}

enum Answer {
    One(TgiResponse),
    Stream(Response),
}

async fn run(app: &AppState, req: TgiRequest, stream: bool) -> Result<Answer, ApiError> {
    let p = req.parameters.to_v1()?;
    let sampled = p.do_sample == Some(true);
    let details = req.parameters.details.unwrap_or(false);
    let prefix = if req.parameters.return_full_text == Some(true) { req.inputs.clone() } else { String::new() };
    // TGI always reports log-probabilities in details and streams.
    let request = api::Request { logprobs: true, stream, ..api::Request::generate("inputs", req.inputs.into(), p) };
    // TGI's routes serve the default model.
    let submitted = app.submit(Caller::Client, &app.models.default_model(), request, Prompt::Text).await?;
    let seed = submitted.decoding().map(|d| d.params.seed).filter(|_| sampled);
    if stream {
        return Ok(Answer::Stream(submitted.stream(TgiStream { held: None, seed, prefix }).into_response()));
    }
    let (_, output) = submitted.collect().await?.pop().ok_or_else(|| ApiError::Internal("no row".into()))?;
    let c = output.generated()?;
    let details = details.then(|| TgiDetails {
        finish_reason: tgi_reason(c.reason),
        generated_tokens: c.usage.generated_tokens,
        seed,
        prefill: Vec::new(),
        tokens: c.tokens,
    });
    Ok(Answer::One(TgiResponse { generated_text: prefix + &c.text, details }))
}

/// TGI's stream: one `data:` event per token; the last one also carries the whole text and the
/// details. So each token is held until the next event says whether it was the last.
struct TgiStream {
    held: Option<(usize, TokenInfo)>,
    seed: Option<u64>,
    prefix: String,
}

impl StreamFormat for TgiStream {
    fn token(&mut self, _row: usize, index: usize, token: TokenInfo) -> Vec<SseEvent> {
        let previous = self.held.replace((index, token));
        previous
            .map(|(index, token)| {
                json_event(None, &TgiStreamResponse { index, token, generated_text: None, details: None })
            })
            .into_iter()
            .collect()
    }

    fn finish(&mut self, _row: usize, text: String, reason: FinishReason, usage: Usage) -> Vec<SseEvent> {
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

    fn error(&mut self, e: ErrorBody) -> SseEvent {
        json_event(None, &e)
    }
}
