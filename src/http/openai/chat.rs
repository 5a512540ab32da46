//! `POST /v1/chat/completions`: OpenAI's chat. The messages become one encoder input through
//! the model's chat template (`tasks::chat`); the answer is the assistant's message. `n`
//! copies are rows sampled with seeds `seed + j`. Tools, functions and structured output are
//! refused, as are message parts other than text.

use axum::Json;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{self, Inputs, TokenInfo};
use crate::generation::FinishReason;
use crate::generation::detokenize::StopHold;
use crate::tasks::chat::{self as chat_task, Message, Role};

use super::super::AppState;
use super::super::collect::StreamFormat;
use super::super::error::ErrorBody;
use super::super::pipeline::{Caller, Prompt};
use super::super::served::Served;
use super::logprobs::{ChatToken, chat_token};
use super::{Chunks, OaiJson, OpenAiError, Sampling, StreamOptions, Usage, invalid};

/// Most alternatives per token (`top_logprobs`), as OpenAI.
pub const MAX_TOP_LOGPROBS: i64 = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<i64>,
    pub stop: Option<Value>,
    pub seed: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub logit_bias: Option<std::collections::BTreeMap<String, f64>>,
    pub user: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Refused, as are the three below: T5 has no tool calling.
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub functions: Option<Value>,
    pub function_call: Option<Value>,
    pub parallel_tool_calls: Option<Value>,
    /// Only `{"type": "text"}`.
    pub response_format: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: String,
    pub content: Option<Value>,
    pub name: Option<String>,
    pub tool_calls: Option<Value>,
    pub tool_call_id: Option<Value>,
    pub function_call: Option<Value>,
    pub refusal: Option<Value>,
}

/// The messages as text, checked.
fn messages(raw: Vec<ChatMessage>) -> Result<Vec<Message>, OpenAiError> {
    if raw.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = Role::parse(&m.role).ok_or_else(|| {
                invalid(
                    "messages",
                    format!(
                        "messages[{i}].role must be system, developer, user or assistant, got {} (tools are not supported)",
                        api::echo(&m.role)
                    ),
                )
            })?;
            for (name, v) in [("tool_calls", &m.tool_calls), ("tool_call_id", &m.tool_call_id), ("function_call", &m.function_call)] {
                if v.as_ref().is_some_and(|v| !v.is_null()) {
                    return Err(invalid("messages", format!("messages[{i}].{name} is not supported: T5 has no tool calling")));
                }
            }
            let content = match m.content {
                None | Some(Value::Null) if role == Role::Assistant => String::new(),
                Some(Value::String(s)) => s,
                Some(Value::Array(parts)) => text_parts(i, parts)?,
                _ => return Err(invalid("messages", format!("messages[{i}].content must be a string or a list of text parts"))),
            };
            Ok(Message { role, content })
        })
        .collect()
}

/// A content given as parts: the text parts joined; any other kind is refused.
fn text_parts(i: usize, parts: Vec<Value>) -> Result<String, OpenAiError> {
    let mut text = String::new();
    for (j, part) in parts.iter().enumerate() {
        match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
            (Some("text"), Some(t)) => text.push_str(t),
            (kind, _) => {
                return Err(invalid(
                    "messages",
                    format!(
                        "messages[{i}].content[{j}] must be a text part ({{\"type\": \"text\", \"text\": ...}}), got type {}",
                        api::echo(kind.unwrap_or("none"))
                    ),
                ));
            }
        }
    }
    Ok(text)
}

/// Refuses what a T5 model cannot do: tools, functions, structured output.
fn refuse_unsupported(req: &ChatRequest) -> Result<(), OpenAiError> {
    const TOOLS: &str = "T5 has no tool calling";
    super::refuse("tools", &req.tools, TOOLS)?;
    super::refuse("tool_choice", &req.tool_choice, TOOLS)?;
    super::refuse("functions", &req.functions, TOOLS)?;
    super::refuse("function_call", &req.function_call, TOOLS)?;
    super::refuse("parallel_tool_calls", &req.parallel_tool_calls, TOOLS)?;
    match &req.response_format {
        None | Some(Value::Null) => Ok(()),
        Some(f) if f.get("type").and_then(Value::as_str) == Some("text") => Ok(()),
        Some(_) => Err(invalid("response_format", "response_format is not supported: only {\"type\": \"text\"}")),
    }
}

/// The encoder's input for the messages: the model's template, or the plain prompt.
fn prompt(model: &Served, messages: &[Message]) -> Result<String, OpenAiError> {
    let text = match &model.tasks.chat_template {
        Some(t) => {
            let eos = model.tokenizer.piece(model.info.dims.eos_token_id);
            t.render(messages, &eos).map_err(|e| invalid("messages", e))?
        }
        None => chat_task::plain_prompt(messages)
            .ok_or_else(|| invalid("messages", "messages must hold a user message (the model has no chat template)"))?,
    };
    if text.trim().is_empty() {
        return Err(invalid("messages", "the messages make an empty prompt"));
    }
    Ok(text)
}

pub async fn chat(State(app): State<AppState>, OaiJson(req): OaiJson<ChatRequest>) -> Result<Response, OpenAiError> {
    let model = super::check_model(&app, req.model.as_deref())?;
    refuse_unsupported(&req)?;
    let (n, _) = super::choices(req.n, None)?;
    let top = match (req.logprobs.unwrap_or(false), req.top_logprobs) {
        (_, Some(k)) if !(0..=MAX_TOP_LOGPROBS).contains(&k) => {
            return Err(invalid(
                "top_logprobs",
                format!("top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
            ));
        }
        (false, Some(_)) => return Err(invalid("top_logprobs", "top_logprobs needs logprobs set to true")),
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, None) => None,
    };
    let stream = req.stream.unwrap_or(false);
    let include_usage = super::include_usage(stream, req.stream_options)?;
    if req.max_tokens.is_some() && req.max_completion_tokens.is_some() {
        return Err(invalid("max_completion_tokens", "set max_completion_tokens or max_tokens, not both"));
    }
    let text = prompt(&model, &messages(req.messages)?)?;
    let sampling = Sampling {
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        stop: req.stop,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        logit_bias: req.logit_bias,
    };
    let mut parameters = sampling.parameters(&model)?;
    parameters.top_n_tokens = top.map(|k| k as i64);
    let request = api::Request {
        stream,
        logprobs: top.is_some(),
        copies: n,
        ..api::Request::generate("messages", Inputs::One(text), parameters)
    };
    tracing::debug!(user = req.user.as_deref().unwrap_or(""), n, "chat completion");
    let submitted = app.submit(Caller::Client, &model, request, Prompt::Text).await?;
    let stops = submitted.decoding().map(|d| d.stop.clone()).unwrap_or_default();
    let head = json!({
        "id": super::response_id("chatcmpl"), "created": super::now(), "model": model.id, "system_fingerprint": null,
    });
    if stream {
        let rows = (0..n).map(|_| (false, StopHold::new(stops.clone()))).collect();
        let mut head = head;
        head["object"] = json!("chat.completion.chunk");
        let format = ChatStream { chunks: Chunks::new(head, include_usage), top, rows };
        return Ok(submitted.stream(format).into_response());
    }
    let rows = submitted.collect().await?;
    let prompt_tokens = rows.first().map_or(0, |(_, o)| match o {
        super::super::collect::Output::Generated(c) => c.usage.input_tokens,
        _ => 0,
    });
    let mut completion_tokens = 0;
    let mut choices = Vec::with_capacity(rows.len());
    for (index, (_, output)) in rows.into_iter().enumerate() {
        let c = output.generated()?;
        completion_tokens += c.usage.generated_tokens;
        let logprobs = top.map(|k| json!({"content": c.tokens.iter().map(|t| chat_token(t, k)).collect::<Vec<ChatToken>>(), "refusal": null}));
        choices.push(json!({
            "index": index,
            "message": {
                "role": "assistant",
                "content": StopHold::trim(&stops, &c.text, c.reason == FinishReason::Stop),
                "refusal": null,
            },
            "logprobs": logprobs,
            "finish_reason": super::finish_reason(c.reason),
        }));
    }
    let mut body = head;
    body["object"] = json!("chat.completion");
    body["choices"] = json!(choices);
    body["usage"] = json!(Usage::new(prompt_tokens, completion_tokens));
    Ok(Json(body).into_response())
}

/// `chat.completion.chunk` lines, for each choice (their chunks interleave): the role first,
/// then content deltas, then the finish reason; at the end, usage when asked, then `[DONE]`.
struct ChatStream {
    /// The chunks' shared fields, and the usage.
    chunks: Chunks,
    top: Option<usize>,
    /// Each choice's state: whether its role has been sent, and what keeps the stop sequence
    /// out of its content.
    rows: Vec<(bool, StopHold)>,
}

impl ChatStream {
    fn chunk(&self, index: usize, delta: Value, logprobs: Option<Value>, finish: Option<FinishReason>) -> SseEvent {
        let finish_reason = finish.map(super::finish_reason);
        self.chunks.chunk(json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}))
    }
}

impl StreamFormat for ChatStream {
    fn token(&mut self, row: usize, _index: usize, token: TokenInfo) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let Some((started, hold)) = self.rows.get_mut(row) else { return events };
        let first = !std::mem::replace(started, true);
        let text = hold.push(&token.text);
        if first {
            events.push(self.chunk(row, json!({"role": "assistant", "content": ""}), None, None));
        }
        let logprobs = self.top.map(|k| json!({"content": [chat_token(&token, k)], "refusal": null}));
        if !text.is_empty() || logprobs.is_some() {
            events.push(self.chunk(row, json!({"content": text}), logprobs, None));
        }
        events
    }

    fn finish(&mut self, row: usize, _text: String, reason: FinishReason, usage: api::Usage) -> Vec<SseEvent> {
        // The choices share one prompt.
        self.chunks.finished(row == 0, usage);
        let rest = self.rows.get_mut(row).map(|(_, h)| h.finish(reason == FinishReason::Stop)).unwrap_or_default();
        let mut events = Vec::new();
        if !rest.is_empty() {
            events.push(self.chunk(row, json!({"content": rest}), None, None));
        }
        events.push(self.chunk(row, json!({}), None, Some(reason)));
        events
    }

    fn end(&mut self) -> Vec<SseEvent> {
        self.chunks.end()
    }

    fn error(&mut self, e: ErrorBody) -> SseEvent {
        super::stream_error(e)
    }
}
