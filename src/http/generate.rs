//! `POST /v1/generate`: text in, generated text out (a list of inputs gives a list of results),
//! or, with `"stream": true`, Server-Sent Events: one `token` event per token, then `done`.

use std::convert::Infallible;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{self, GenerateRequest, Generation, TokenInfo, Usage};
use crate::scheduler::{Event, RowError, RowRequest};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;

pub async fn generate(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let permit = app.admit()?;
    let texts = api::parse_inputs(&req.inputs, &app.limits)?;
    let params = req.parameters.validate(&app.limits)?;
    let stop = req.parameters.stop_sequences(&app.limits)?;
    let details = req.parameters.details.unwrap_or(false);
    let stream = req.stream.unwrap_or(false);
    if stream && !texts.single {
        return Err(ApiError::Validation("stream supports a single string input, not a list".into()));
    }
    let deadline = Instant::now() + req.parameters.queue_deadline(&app.limits)?;
    let ids = app.tokenize(texts.texts).await?;
    let (rows, receivers): (Vec<_>, Vec<_>) = ids
        .into_iter()
        .map(|ids| {
            let (row, rx) = RowRequest::new(ids, params);
            (row.with_deadline(Some(deadline)).with_stop(stop.clone()).with_logprobs(details), rx)
        })
        .unzip();
    app.scheduler.submit(rows)?;
    if stream {
        let rx = receivers.into_iter().next().expect("one input");
        return Ok(sse(app, rx, arrived, permit).into_response());
    }
    let mut out = Vec::with_capacity(receivers.len());
    for rx in receivers {
        out.push(collect(&app, rx, arrived, details, params.seed).await?);
    }
    Ok(if texts.single {
        Json(out.pop().expect("one input, one result")).into_response()
    } else {
        Json(out).into_response()
    })
}

/// Gathers one row's events into its final result.
async fn collect(
    app: &AppState,
    mut rx: UnboundedReceiver<Event>,
    arrived: Instant,
    details: bool,
    seed: u64,
) -> Result<Generation, ApiError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    let mut first = true;
    while let Some(event) = rx.recv().await {
        match event {
            Event::Token { id, text: piece, logprob } => {
                if first {
                    app.metrics.time_to_first_token_seconds.observe(arrived.elapsed().as_secs_f64());
                    first = false;
                }
                text.push_str(&piece);
                if details {
                    tokens.push(TokenInfo { id, text: piece, logprob, special: app.is_special(id) });
                }
            }
            Event::Finished { reason, input_tokens, generated_tokens } => {
                return Ok(Generation {
                    generated_text: text,
                    finish_reason: reason,
                    usage: Usage { input_tokens, generated_tokens },
                    details: details.then_some(api::Details { tokens, seed }),
                });
            }
            Event::Error(e) => return Err(row_error(e)),
        }
    }
    Err(ApiError::Internal("the decode thread dropped a row without finishing it".into()))
}

fn row_error(e: RowError) -> ApiError {
    match e {
        RowError::DeadlineExceeded => {
            ApiError::DeadlineExceeded("the request waited in the queue past its deadline".into())
        }
        RowError::Internal(e) => ApiError::Internal(format!("decoding failed: {e}")),
    }
}

/// The event stream of one row. Dropping it (the client went away) closes the row's channel,
/// and the decode loop drops the row at its next step.
fn sse(
    app: AppState,
    mut rx: UnboundedReceiver<Event>,
    arrived: Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Sse<impl futures_core::Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = async_stream(move |tx| async move {
        let _permit = permit;
        let mut text = String::new();
        let mut index = 0usize;
        while let Some(event) = rx.recv().await {
            let out = match event {
                Event::Token { id, text: piece, logprob } => {
                    if index == 0 {
                        app.metrics.time_to_first_token_seconds.observe(arrived.elapsed().as_secs_f64());
                    }
                    text.push_str(&piece);
                    let token = TokenInfo { id, text: piece, logprob, special: app.is_special(id) };
                    index += 1;
                    json_event("token", &serde_json::json!({"index": index - 1, "token": token}))
                }
                Event::Finished { reason, input_tokens, generated_tokens } => {
                    let done = Generation {
                        generated_text: std::mem::take(&mut text),
                        finish_reason: reason,
                        usage: Usage { input_tokens, generated_tokens },
                        details: None,
                    };
                    let _ = tx.send(json_event("done", &done));
                    return;
                }
                Event::Error(e) => {
                    let e = row_error(e);
                    let body = ErrorBody { error: e.public_message(), error_type: e.error_type() };
                    let _ = tx.send(json_event("error", &body));
                    return;
                }
            };
            if tx.send(out).is_err() {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn json_event(name: &str, value: &impl serde::Serialize) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().event(name).json_data(value).unwrap_or_else(|_| SseEvent::default().event(name)))
}

/// A stream fed by a task through a channel: the task ends when the stream is dropped.
fn async_stream<F, Fut>(f: F) -> impl futures_core::Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Result<SseEvent, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(f(tx));
    ReceiverStream { rx, task }
}

struct ReceiverStream {
    rx: UnboundedReceiver<Result<SseEvent, Infallible>>,
    task: tokio::task::JoinHandle<()>,
}

impl futures_core::Stream for ReceiverStream {
    type Item = Result<SseEvent, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for ReceiverStream {
    fn drop(&mut self) {
        // The client is gone: stop forwarding, which drops the row's receiver.
        self.task.abort();
    }
}
