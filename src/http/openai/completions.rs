//! `POST /v1/completions`: OpenAI's (legacy) completions. Every prompt of a list is a text of
//! the request, and `best_of` (or `n`) copies of it are rows, sampled with seeds `seed + j`; the
//! `n` best by total log-probability are returned, prompt-major (`prompt_index * n + j`). As in
//! OpenAI's API, a stop sequence ends the text but is not part of it (the `logprobs` list every
//! generated token, the stop sequence's included).

use axum::Json;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::{self, TokenInfo};
use crate::generation::FinishReason;
use crate::generation::detokenize::StopHold;

use super::super::AppState;
use super::super::collect::{Collected, StreamFormat};
use super::super::error::ErrorBody;
use super::super::pipeline::Caller;
use super::logprobs::Legacy;
use super::{Chunks, OaiJson, OpenAiError, PromptInput, Sampling, StreamOptions, Usage, invalid};

/// Most alternatives per token in the legacy `logprobs` object, as OpenAI.
pub const MAX_LOGPROBS: i64 = 5;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Value,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<i64>,
    pub best_of: Option<i64>,
    pub stop: Option<Value>,
    pub seed: Option<i64>,
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<std::collections::BTreeMap<String, f64>>,
    pub user: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Refused: T5 continues a prompt; it does not fill a gap before a suffix.
    pub suffix: Option<Value>,
}

#[derive(Debug, Serialize)]
struct Choice {
    text: String,
    index: usize,
    logprobs: Option<Legacy>,
    finish_reason: &'static str,
}

pub async fn completions(
    State(app): State<AppState>,
    OaiJson(req): OaiJson<CompletionRequest>,
) -> Result<Response, OpenAiError> {
    let model = super::check_model(&app, req.model.as_deref())?;
    super::refuse("suffix", &req.suffix, "T5 continues a prompt and cannot insert text before a suffix")?;
    let (n, best_of) = super::choices(req.n, req.best_of)?;
    let logprobs = match req.logprobs {
        Some(k) if !(0..=MAX_LOGPROBS).contains(&k) => {
            return Err(invalid("logprobs", format!("logprobs must be between 0 and {MAX_LOGPROBS}, got {k}")));
        }
        k => k.map(|k| k as usize),
    };
    let stream = req.stream.unwrap_or(false);
    let include_usage = super::include_usage(stream, req.stream_options)?;
    let prompt = PromptInput::parse("prompt", req.prompt)?;
    if stream && best_of > n {
        return Err(invalid("best_of", "best_of cannot be used with stream: the best are known only at the end"));
    }
    let echo = req.echo.unwrap_or(false);
    let sampling = Sampling {
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        stop: req.stop,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logit_bias: req.logit_bias,
    };
    let mut parameters = sampling.parameters(&model)?;
    parameters.top_n_tokens = logprobs.map(|k| k as i64);
    let (inputs, prompt, texts) = prompt.into_request(&model)?;
    let request = api::Request {
        stream,
        // Ranking `best_of` rows needs each token's log-probability.
        logprobs: logprobs.is_some() || best_of > n,
        copies: best_of,
        ..api::Request::generate("prompt", inputs, parameters)
    };
    tracing::debug!(user = req.user.as_deref().unwrap_or(""), prompts = texts.len(), n, best_of, "completion");
    let submitted = app.submit(Caller::Client, &model, request, prompt).await?;
    let stops = submitted.decoding().map(|d| d.stop.clone()).unwrap_or_default();
    let id = super::response_id("cmpl");
    if stream {
        let rows =
            (0..texts.len() * n).map(|_| RowState { echoed: !echo, chars: 0, hold: StopHold::new(stops.clone()) });
        let head = json!({"id": id, "object": "text_completion", "created": super::now(), "model": model.id});
        let format = CompletionStream {
            chunks: Chunks::new(head, include_usage),
            prompts: texts,
            n,
            logprobs,
            tokenizer: model.tokenizer.clone(),
            rows: rows.collect(),
        };
        return Ok(submitted.stream(format).into_response());
    }
    let rows = submitted.collect().await?;
    let mut by_prompt: Vec<Vec<Collected>> = texts.iter().map(|_| Vec::with_capacity(best_of)).collect();
    for (owner, output) in rows {
        by_prompt[owner / best_of].push(output.generated()?);
    }
    let mut choices = Vec::with_capacity(texts.len() * n);
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for (p, rows) in by_prompt.into_iter().enumerate() {
        prompt_tokens += rows.first().map_or(0, |c| c.usage.input_tokens);
        completion_tokens += rows.iter().map(|c| c.usage.generated_tokens).sum::<usize>();
        for (j, c) in best(rows, n).into_iter().enumerate() {
            let legacy = logprobs.map(|k| {
                let mut l = Legacy::default();
                if echo {
                    l.push_prompt(&texts[p], &model.tokenizer);
                }
                for t in &c.tokens {
                    l.push(t, k, &model.tokenizer);
                }
                l
            });
            let generated = StopHold::trim(&stops, &c.text, c.reason == FinishReason::Stop);
            let text = if echo { format!("{}{}", texts[p], generated) } else { generated };
            let finish_reason = super::finish_reason(c.reason);
            choices.push(Choice { text, index: p * n + j, logprobs: legacy, finish_reason });
        }
    }
    Ok(Json(json!({
        "id": id,
        "object": "text_completion",
        "created": super::now(),
        "model": model.id,
        "choices": choices,
        "usage": Usage::new(prompt_tokens, completion_tokens),
        "system_fingerprint": null,
    }))
    .into_response())
}

/// The `n` rows with the highest total log-probability, best first (all rows, in order, when
/// there are no more than `n`).
pub fn best(mut rows: Vec<Collected>, n: usize) -> Vec<Collected> {
    if rows.len() > n {
        let score = |c: &Collected| c.tokens.iter().filter_map(|t| t.logprob).map(f64::from).sum::<f64>();
        let mut scored: Vec<(f64, usize)> = rows.iter().enumerate().map(|(i, c)| (score(c), i)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let keep: Vec<usize> = scored.into_iter().take(n).map(|(_, i)| i).collect();
        let mut taken: Vec<Option<Collected>> = rows.into_iter().map(Some).collect();
        rows = keep.into_iter().filter_map(|i| taken[i].take()).collect();
    }
    rows
}

/// `data: {chunk}` lines (`text_completion` objects, each with the choice it belongs to; the
/// choices' chunks interleave), then usage when asked, then `[DONE]`.
struct CompletionStream {
    /// The chunks' shared fields, and the usage.
    chunks: Chunks,
    /// The prompts' texts (sent before a choice's first token with `echo`).
    prompts: Vec<String>,
    /// Choices per prompt.
    n: usize,
    logprobs: Option<usize>,
    tokenizer: std::sync::Arc<crate::model::TextTokenizer>,
    /// Each choice's state, by index.
    rows: Vec<RowState>,
}

/// A streamed choice.
struct RowState {
    /// Its prompt has been sent (or is not to be: no `echo`).
    echoed: bool,
    /// Characters streamed so far (`text_offset`).
    chars: usize,
    /// Keeps the stop sequence out of the text.
    hold: StopHold,
}

impl CompletionStream {
    fn chunk(&self, index: usize, text: &str, logprobs: Option<Legacy>, finish: Option<FinishReason>) -> SseEvent {
        let finish_reason = finish.map(super::finish_reason);
        self.chunks.chunk(json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}))
    }
}

impl StreamFormat for CompletionStream {
    fn token(&mut self, row: usize, _index: usize, token: TokenInfo) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let Some(r) = self.rows.get_mut(row) else { return events };
        if !r.echoed {
            r.echoed = true;
            let prompt = &self.prompts[row / self.n];
            let legacy = self.logprobs.map(|_| {
                let mut l = Legacy::starting_at(r.chars);
                l.push_prompt(prompt, &self.tokenizer);
                l
            });
            r.chars += prompt.chars().count();
            let prompt = prompt.clone();
            events.push(self.chunk(row, &prompt, legacy, None));
        }
        let r = &mut self.rows[row];
        let legacy = self.logprobs.map(|k| {
            let mut l = Legacy::starting_at(r.chars);
            l.push(&token, k, &self.tokenizer);
            l
        });
        r.chars += token.text.chars().count();
        let text = r.hold.push(&token.text);
        if !text.is_empty() || legacy.is_some() {
            events.push(self.chunk(row, &text, legacy, None));
        }
        events
    }

    fn finish(&mut self, row: usize, _text: String, reason: FinishReason, usage: api::Usage) -> Vec<SseEvent> {
        self.chunks.finished(row.is_multiple_of(self.n), usage);
        let rest = self.rows.get_mut(row).map(|r| r.hold.finish(reason == FinishReason::Stop)).unwrap_or_default();
        vec![self.chunk(row, &rest, None, Some(reason))]
    }

    fn end(&mut self) -> Vec<SseEvent> {
        self.chunks.end()
    }

    fn error(&mut self, e: ErrorBody) -> SseEvent {
        super::stream_error(e)
    }
}
