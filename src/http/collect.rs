//! The second half of the one path: a submitted request's rows are gathered into results, or
//! one row's tokens are forwarded as Server-Sent Events in a route's own format, both under
//! `request_timeout_ms`. Returning early (timeout, error) or a client that goes away drops the
//! rows' receivers, and the decode loop drops the rows at its next step.

use std::convert::Infallible;
use std::time::Instant;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::api::{TokenInfo, TopToken, Usage};
use crate::generation::FinishReason;
use crate::model::TextTokenizer;
use crate::scheduler::score::LabelScore;
use crate::scheduler::{Event, RowError, Sequence};

use super::error::{ApiError, ErrorBody};
use super::pipeline::Submitted;
use super::served::Served;

/// A finished generation row.
pub struct Collected {
    /// Beam search hypotheses, best first (empty otherwise).
    pub sequences: Vec<Sequence>,
    pub text: String,
    pub tokens: Vec<TokenInfo>,
    pub reason: FinishReason,
    pub usage: Usage,
}

/// What one row gave.
pub enum Output {
    Generated(Collected),
    Scored(Vec<LabelScore>),
    /// An embedding and the input tokens it pooled.
    Embedded(Vec<f32>, usize),
}

impl Output {
    pub fn generated(self) -> Result<Collected, ApiError> {
        match self {
            Output::Generated(c) => Ok(c),
            other => Err(other.mismatch("a generation row")),
        }
    }

    pub fn scores(self) -> Result<Vec<LabelScore>, ApiError> {
        match self {
            Output::Scored(s) => Ok(s),
            other => Err(other.mismatch("a scoring row")),
        }
    }

    pub fn embedding(self) -> Result<(Vec<f32>, usize), ApiError> {
        match self {
            Output::Embedded(v, tokens) => Ok((v, tokens)),
            other => Err(other.mismatch("an embedding row")),
        }
    }

    fn mismatch(&self, row: &str) -> ApiError {
        let gave = match self {
            Output::Generated(_) => "generated text",
            Output::Scored(_) => "label scores",
            Output::Embedded(..) => "an embedding",
        };
        ApiError::Internal(format!("{row} gave {gave}"))
    }
}

pub fn row_error(e: RowError) -> ApiError {
    match e {
        RowError::DeadlineExceeded => ApiError::DeadlineExceeded(
            "a row of the request was still queued at its queue deadline (queue_deadline_ms, or the request's \
             parameters.deadline_ms); it never ran"
                .into(),
        ),
        RowError::Internal(e) => ApiError::Internal(format!("decoding failed: {e}")),
    }
}

impl Submitted {
    /// Every row's output with the index of the text it belongs to, in row order.
    pub async fn collect(mut self) -> Result<Vec<(usize, Output)>, ApiError> {
        let rows = std::mem::take(&mut self.rows);
        let (total, done) = (rows.len(), std::sync::atomic::AtomicUsize::new(0));
        let gather = async {
            let mut out = Vec::with_capacity(rows.len());
            for (owner, rx) in rows {
                out.push((owner, gather(&self.model, rx, self.arrived).await?));
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(out)
        };
        let Some(at) = self.deadline else { return gather.await };
        let result = tokio::time::timeout_at(at, gather).await;
        result.map_err(|_| {
            let done = done.load(std::sync::atomic::Ordering::Relaxed);
            self.app.timed_out(&format!("{done} of its {total} rows had finished; the others were queued or running"))
        })?
    }

    /// Forwards the rows' events as SSE in `format`, as they come (rows interleaved). Dropping
    /// the stream (the client went away) ends the forwarding task, which drops the rows'
    /// receivers.
    pub fn stream(mut self, format: impl StreamFormat) -> Sse<axum::response::sse::KeepAliveStream<ForwardStream>> {
        let (tx, out) = tokio::sync::mpsc::unbounded_channel();
        let rows = std::mem::take(&mut self.rows);
        let task = tokio::spawn(forward(self, rows, format, tx));
        Sse::new(ForwardStream { rx: out, task }).keep_alive(KeepAlive::default())
    }
}

/// Gathers one row's events until it finishes.
async fn gather(model: &Served, mut rx: UnboundedReceiver<Event>, arrived: Instant) -> Result<Output, ApiError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    let mut sequences = Vec::new();
    let mut first_at = None;
    while let Some(event) = rx.recv().await {
        match event {
            Event::Scores(s) => return Ok(Output::Scored(s)),
            Event::Embedding { vector, input_tokens } => return Ok(Output::Embedded(vector, input_tokens)),
            Event::Sequences(s) => {
                model.metrics.time_to_first_token.observe(arrived.elapsed().as_secs_f64());
                text = s.first().map(|s| s.text.clone()).unwrap_or_default();
                sequences = s;
            }
            Event::Token { id, text: piece, logprob, top } => {
                if first_at.is_none() {
                    model.metrics.time_to_first_token.observe(arrived.elapsed().as_secs_f64());
                    first_at = Some(Instant::now());
                }
                text.push_str(&piece);
                tokens.push(token_info(&model.tokenizer, id, piece, logprob, top));
            }
            Event::Finished { reason, input_tokens, generated_tokens } => {
                if let Some(first) = first_at.filter(|_| generated_tokens > 1) {
                    let per = first.elapsed().as_secs_f64() / (generated_tokens - 1) as f64;
                    model.metrics.time_per_output_token.observe(per);
                }
                let usage = Usage { input_tokens, generated_tokens };
                return Ok(Output::Generated(Collected { sequences, text, tokens, reason, usage }));
            }
            Event::Error(e) => return Err(row_error(e)),
        }
    }
    Err(ApiError::Internal("the decode thread dropped a row without finishing it".into()))
}

/// A generated token as the API reports it.
fn token_info(t: &TextTokenizer, id: u32, text: String, logprob: Option<f32>, top: Vec<(u32, f32)>) -> TokenInfo {
    let top_tokens = top
        .into_iter()
        .map(|(id, logprob)| TopToken { id, text: t.piece(id), logprob, special: t.is_special(id) })
        .collect();
    TokenInfo { id, text, logprob, special: t.is_special(id), top_tokens }
}

/// A route's streaming format: which SSE events a token, a row's end, the stream's end, or an
/// error become. `row` is the row's index in the request (its text, or its copy of a text).
pub trait StreamFormat: Send + 'static {
    /// The `index`-th token of row `row`.
    fn token(&mut self, row: usize, index: usize, token: TokenInfo) -> Vec<SseEvent>;
    /// Row `row` finished.
    fn finish(&mut self, row: usize, text: String, reason: FinishReason, usage: Usage) -> Vec<SseEvent>;
    /// Every row finished.
    fn end(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }
    fn error(&mut self, e: ErrorBody) -> SseEvent;
}

/// A streamed row: its index in the request, its events, and its tokens and text so far.
struct Streamed {
    row: usize,
    rx: UnboundedReceiver<Event>,
    index: usize,
    text: String,
}

/// The next event of any row (rows that have one are taken in turn), with the row's position in
/// `rows`; `None` for a row whose channel closed.
async fn next_event(rows: &mut [Streamed], turn: &mut usize) -> (usize, Option<Event>) {
    std::future::poll_fn(|cx| {
        let n = rows.len();
        for k in 0..n {
            let i = (*turn + k) % n;
            if let std::task::Poll::Ready(event) = rows[i].rx.poll_recv(cx) {
                *turn = i + 1;
                return std::task::Poll::Ready((i, event));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The forwarding task of a stream: the rows' events, in `format`, until every row has
/// finished, an error, the request timeout, or the client leaving (a failed send).
async fn forward(
    s: Submitted,
    rows: Vec<(usize, UnboundedReceiver<Event>)>,
    mut format: impl StreamFormat,
    tx: UnboundedSender<Result<SseEvent, Infallible>>,
) {
    let send = |events: Vec<SseEvent>| events.into_iter().all(|e| tx.send(Ok(e)).is_ok());
    let fail = |format: &mut dyn StreamFormat, e: ApiError| {
        let _ = tx.send(Ok(format.error(e.into_body())));
    };
    if rows.is_empty() {
        return fail(&mut format, ApiError::Internal("a stream without a row".into()));
    }
    let mut rows: Vec<Streamed> =
        rows.into_iter().map(|(row, rx)| Streamed { row, rx, index: 0, text: String::new() }).collect();
    let (app, arrived) = (&s.app, s.arrived);
    let mut stop = app.health.stop.subscribe();
    let (mut turn, mut first) = (0, true);
    while !rows.is_empty() {
        let next = async {
            match s.deadline {
                Some(at) => tokio::time::timeout_at(at, next_event(&mut rows, &mut turn)).await,
                None => Ok(next_event(&mut rows, &mut turn).await),
            }
        };
        let next = tokio::select! {
            next = next => next,
            // The server stops (shutdown_grace_ms is over): the stream ends with its error event.
            () = super::serve::stopped(&mut stop) => {
                let e = ApiError::Unavailable("the server is shutting down: shutdown_grace_ms is over".into());
                return fail(&mut format, e);
            }
        };
        let Ok((i, event)) = next else {
            let streamed: usize = rows.iter().map(|r| r.index).sum();
            return fail(&mut format, app.timed_out(&format!("{streamed} tokens had been streamed")));
        };
        let r = &mut rows[i];
        match event {
            Some(Event::Token { id, text: piece, logprob, top }) => {
                if first {
                    s.model.metrics.time_to_first_token.observe(arrived.elapsed().as_secs_f64());
                    first = false;
                }
                r.text.push_str(&piece);
                let token = token_info(&s.model.tokenizer, id, piece, logprob, top);
                if !send(format.token(r.row, r.index, token)) {
                    return;
                }
                r.index += 1;
            }
            Some(Event::Finished { reason, input_tokens, generated_tokens }) => {
                let usage = Usage { input_tokens, generated_tokens };
                let done = rows.swap_remove(i);
                if !send(format.finish(done.row, done.text, reason, usage)) {
                    return;
                }
            }
            Some(Event::Error(e)) => return fail(&mut format, row_error(e)),
            // Streams are refused for beam search before decoding starts; scoring and embedding
            // rows never stream.
            Some(Event::Sequences(_) | Event::Scores(_) | Event::Embedding { .. }) => {}
            None => return fail(&mut format, ApiError::Internal("the decode thread dropped a row".into())),
        }
    }
    send(format.end());
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
