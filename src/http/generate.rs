//! `POST /v1/generate`: text in, generated text out (a list of inputs gives a list of results),
//! or, with `"stream": true`, Server-Sent Events: one `token` event per token, then `done`.

use axum::Json;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};

use crate::api::{self, Details, GenerateRequest, Generation, SequenceOut, TokenInfo, Usage};
use crate::generation::FinishReason;

use super::AppState;
use super::collect::{StreamFormat, json_event};
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::pipeline::{Caller, Prompt};

pub async fn generate(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    #[cfg(feature = "fault-injection")]
    crate::faults::handler(req.parameters.seed);
    let details = req.parameters.details.unwrap_or(false);
    let stream = req.stream.unwrap_or(false);
    // Its events name no input: a stream is of one.
    if stream && !req.inputs.is_single() {
        return Err(ApiError::Validation("stream supports a single string input, not a list".into()));
    }
    let request = api::Request { stream, ..api::Request::generate("inputs", req.inputs, req.parameters) };
    let model = app.models.get(req.model.as_deref())?;
    let submitted = app.submit(Caller::Client, &model, request, Prompt::Text).await?;
    if stream {
        return Ok(submitted.stream(V1Stream).into_response());
    }
    let single = submitted.single;
    let decoding = submitted.decoding().cloned().ok_or_else(|| ApiError::Internal("not a generation".into()))?;
    let returns = decoding.beam.map_or(1, |b| b.num_return_sequences);
    let mut out = Vec::new();
    for (_, output) in submitted.collect().await? {
        let c = output.generated()?;
        let sequences = (returns > 1).then(|| {
            c.sequences
                .iter()
                .map(|s| SequenceOut {
                    generated_text: s.text.clone(),
                    finish_reason: s.reason,
                    score: s.score,
                    generated_tokens: s.ids.len(),
                })
                .collect()
        });
        out.push(Generation {
            generated_text: c.text,
            finish_reason: c.reason,
            usage: c.usage,
            details: details.then_some(Details { tokens: c.tokens, seed: decoding.params.seed }),
            sequences,
        });
    }
    Ok(if single { Json(out.pop().expect("one input, one result")).into_response() } else { Json(out).into_response() })
}

/// `token` events with `{"index", "token"}`, then a `done` event with the result (or `error`).
struct V1Stream;

impl StreamFormat for V1Stream {
    fn token(&mut self, _row: usize, index: usize, token: TokenInfo) -> Vec<SseEvent> {
        vec![json_event(Some("token"), &serde_json::json!({"index": index, "token": token}))]
    }

    fn finish(&mut self, _row: usize, text: String, reason: FinishReason, usage: Usage) -> Vec<SseEvent> {
        let done = Generation { generated_text: text, finish_reason: reason, usage, details: None, sequences: None };
        vec![json_event(Some("done"), &done)]
    }

    fn error(&mut self, e: ErrorBody) -> SseEvent {
        json_event(Some("error"), &e)
    }
}
