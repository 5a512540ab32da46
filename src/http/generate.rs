//! `POST /v1/generate`: text in, generated text out (a list of inputs gives a list of results),
//! or, with `"stream": true`, Server-Sent Events: one `token` event per token, then `done`.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};

use crate::api::{Details, GenerateRequest, Generation, SequenceOut, TokenInfo, Usage};
use crate::generation::FinishReason;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::rows::{self, RowOptions, StreamFormat, json_event};

pub async fn generate(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    #[cfg(feature = "fault-injection")]
    crate::faults::handler(req.parameters.seed);
    let permit = app.admit()?;
    let p = &req.parameters;
    let (texts, truncate) = p.texts(&req.inputs, &app.limits)?;
    let details = p.details.unwrap_or(false);
    let beam = p.beam(&app.limits)?;
    let options = RowOptions {
        beam,
        params: p.validate(&app.limits)?,
        stop: p.stop_sequences(&app.limits)?,
        logprobs: details,
        deadline: arrived + p.queue_deadline(&app.limits)?,
    };
    let stream = req.stream.unwrap_or(false);
    if stream && !texts.single {
        return Err(ApiError::Validation("stream supports a single string input, not a list".into()));
    }
    if stream && beam.is_some() {
        return Err(ApiError::Validation("stream is not available with beam search (num_beams > 1)".into()));
    }
    let ids = app.tokenize_truncated(texts.texts, truncate).await?;
    let receivers = rows::submit(&app, ids, &options)?;
    if stream {
        let rx = receivers.into_iter().next().expect("one input");
        return Ok(rows::stream(app, rx, arrived, permit, V1Stream).into_response());
    }
    let mut out = Vec::with_capacity(receivers.len());
    for rx in receivers {
        let c = rows::collect(&app, rx, arrived).await?;
        let sequences = beam.filter(|b| b.num_return_sequences > 1).map(|_| {
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
            details: details.then_some(Details { tokens: c.tokens, seed: options.params.seed }),
            sequences,
        });
    }
    Ok(if texts.single {
        Json(out.pop().expect("one input, one result")).into_response()
    } else {
        Json(out).into_response()
    })
}

/// `token` events with `{"index", "token"}`, then a `done` event with the result (or `error`).
struct V1Stream;

impl StreamFormat for V1Stream {
    fn token(&mut self, index: usize, token: TokenInfo) -> Vec<SseEvent> {
        vec![json_event(Some("token"), &serde_json::json!({"index": index, "token": token}))]
    }

    fn finish(&mut self, text: String, reason: FinishReason, usage: Usage) -> Vec<SseEvent> {
        let done = Generation { generated_text: text, finish_reason: reason, usage, details: None, sequences: None };
        vec![json_event(Some("done"), &done)]
    }

    fn error(&mut self, e: ApiError) -> SseEvent {
        json_event(Some("error"), &ErrorBody { error: e.public_message(), error_type: e.error_type() })
    }
}
