//! What every generation route does with rows: submit them, gather a row's events into a
//! result, or forward them as Server-Sent Events in a route's own format.

use std::convert::Infallible;
use std::time::Instant;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::api::{TokenInfo, Usage};
use crate::generation::{FinishReason, GenerationParams};
use crate::scheduler::{Event, RowError, RowRequest, Sequence};

use super::AppState;
use super::error::ApiError;

/// How rows of one request are decoded.
pub struct RowOptions {
    pub params: GenerationParams,
    pub beam: Option<crate::generation::beam::BeamParams>,
    pub stop: Vec<String>,
    pub logprobs: bool,
    pub deadline: Instant,
}

/// Queues one row per tokenized input; returns their event receivers in input order.
pub fn submit(
    app: &AppState,
    inputs: Vec<Vec<u32>>,
    o: &RowOptions,
) -> Result<Vec<UnboundedReceiver<Event>>, ApiError> {
    app.metrics.input_tokens_total.inc_by(inputs.iter().map(|i| i.len() as u64).sum());
    let (rows, receivers): (Vec<_>, Vec<_>) = inputs
        .into_iter()
        .map(|ids| {
            let (row, rx) = RowRequest::new(ids, o.params);
            let row = row.with_deadline(Some(o.deadline)).with_stop(o.stop.clone()).with_logprobs(o.logprobs);
            (row.with_beam(o.beam), rx)
        })
        .unzip();
    app.scheduler.submit(rows)?;
    Ok(receivers)
}

/// A finished row.
pub struct Collected {
    /// Beam search hypotheses, best first (empty otherwise).
    pub sequences: Vec<Sequence>,
    pub text: String,
    pub tokens: Vec<TokenInfo>,
    pub reason: FinishReason,
    pub usage: Usage,
}

pub fn row_error(e: RowError) -> ApiError {
    match e {
        RowError::DeadlineExceeded => {
            ApiError::DeadlineExceeded("the request waited in the queue past its deadline".into())
        }
        RowError::Internal(e) => ApiError::Internal(format!("decoding failed: {e}")),
    }
}

/// When a request that arrived at `arrived` runs out of time (`request_timeout_ms`).
fn request_deadline(app: &AppState, arrived: Instant) -> tokio::time::Instant {
    (arrived + std::time::Duration::from_millis(app.limits.request_timeout_ms)).into()
}

fn request_timed_out(app: &AppState) -> ApiError {
    ApiError::DeadlineExceeded(format!(
        "the request did not finish within request_timeout_ms ({} ms)",
        app.limits.request_timeout_ms
    ))
}

/// Gathers one row's events until it finishes.
pub async fn collect(
    app: &AppState,
    mut rx: UnboundedReceiver<Event>,
    arrived: Instant,
) -> Result<Collected, ApiError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    let mut sequences = Vec::new();
    let mut first_at = None;
    let deadline = request_deadline(app, arrived);
    loop {
        // Past the deadline, returning drops `rx`: the decode loop drops the row at its next step.
        let Ok(event) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            return Err(request_timed_out(app));
        };
        let Some(event) = event else { break };
        match event {
            Event::Sequences(s) => {
                app.metrics.time_to_first_token_seconds.observe(arrived.elapsed().as_secs_f64());
                text = s.first().map(|s| s.text.clone()).unwrap_or_default();
                sequences = s;
            }
            Event::Token { id, text: piece, logprob } => {
                if first_at.is_none() {
                    app.metrics.time_to_first_token_seconds.observe(arrived.elapsed().as_secs_f64());
                    first_at = Some(Instant::now());
                }
                text.push_str(&piece);
                tokens.push(TokenInfo { id, text: piece, logprob, special: app.is_special(id) });
            }
            Event::Finished { reason, input_tokens, generated_tokens } => {
                if let Some(first) = first_at.filter(|_| generated_tokens > 1) {
                    let per = first.elapsed().as_secs_f64() / (generated_tokens - 1) as f64;
                    app.metrics.time_per_output_token_seconds.observe(per);
                }
                let usage = Usage { input_tokens, generated_tokens };
                return Ok(Collected { sequences, text, tokens, reason, usage });
            }
            Event::Error(e) => return Err(row_error(e)),
            Event::Scores(_) => return Err(ApiError::Internal("a generation row was scored".into())),
        }
    }
    Err(ApiError::Internal("the decode thread dropped a row without finishing it".into()))
}

/// A route's streaming format: which SSE events a token, the end, or an error become.
pub trait StreamFormat: Send + 'static {
    fn token(&mut self, index: usize, token: TokenInfo) -> Vec<SseEvent>;
    fn finish(&mut self, text: String, reason: FinishReason, usage: Usage) -> Vec<SseEvent>;
    fn error(&mut self, e: ApiError) -> SseEvent;
}

/// Forwards one row's events as SSE. Dropping the stream (the client went away) ends the
/// forwarding task, which drops the row's receiver; the decode loop drops the row at its next step.
pub fn stream(
    app: AppState,
    mut rx: UnboundedReceiver<Event>,
    arrived: Instant,
    permit: OwnedSemaphorePermit,
    mut format: impl StreamFormat,
) -> Sse<axum::response::sse::KeepAliveStream<ForwardStream>> {
    let (tx, out) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _permit = permit;
        let send = |tx: &UnboundedSender<Result<SseEvent, Infallible>>, events: Vec<SseEvent>| {
            events.into_iter().all(|e| tx.send(Ok(e)).is_ok())
        };
        let mut text = String::new();
        let mut index = 0usize;
        let deadline = request_deadline(&app, arrived);
        loop {
            let Ok(event) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                let _ = tx.send(Ok(format.error(request_timed_out(&app))));
                return;
            };
            let Some(event) = event else { break };
            match event {
                Event::Token { id, text: piece, logprob } => {
                    if index == 0 {
                        app.metrics.time_to_first_token_seconds.observe(arrived.elapsed().as_secs_f64());
                    }
                    text.push_str(&piece);
                    let token = TokenInfo { id, text: piece, logprob, special: app.is_special(id) };
                    if !send(&tx, format.token(index, token)) {
                        return;
                    }
                    index += 1;
                }
                Event::Finished { reason, input_tokens, generated_tokens } => {
                    let usage = Usage { input_tokens, generated_tokens };
                    send(&tx, format.finish(std::mem::take(&mut text), reason, usage));
                    return;
                }
                Event::Error(e) => {
                    let _ = tx.send(Ok(format.error(row_error(e))));
                    return;
                }
                // Streams are refused for beam search before decoding starts; scoring rows
                // never come here.
                Event::Sequences(_) | Event::Scores(_) => {}
            }
        }
        let _ = tx.send(Ok(format.error(ApiError::Internal("the decode thread dropped a row".into()))));
    });
    Sse::new(ForwardStream { rx: out, task }).keep_alive(KeepAlive::default())
}

/// SSE events forwarded from a task; dropping it aborts the task.
pub struct ForwardStream {
    rx: UnboundedReceiver<Result<SseEvent, Infallible>>,
    task: tokio::task::JoinHandle<()>,
}

impl futures_core::Stream for ForwardStream {
    type Item = Result<SseEvent, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for ForwardStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An SSE event carrying JSON data, optionally named.
pub fn json_event(name: Option<&str>, value: &impl serde::Serialize) -> SseEvent {
    let e = SseEvent::default();
    let e = match name {
        Some(n) => e.event(n),
        None => e,
    };
    e.json_data(value).expect("API types serialize to JSON")
}
