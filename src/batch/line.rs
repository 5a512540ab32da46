//! One input line of `t5serve batch`, made into the request the server's route takes. Two
//! shapes, told apart per line:
//! - t5serve's own: `{"id", ...the route's request fields}` for the run's task (`--task`, or the
//!   line's own `"task"`): `{"id", "inputs", "parameters"}` to `/v1/generate`, `{"id", "inputs",
//!   "labels", "template"}` to `/v1/classify`, `{"id", "text", "source_lang", "target_lang"}` to
//!   `/v1/translate`, `{"id", "inputs"}` to `/embed`;
//! - OpenAI's batch request: `{"custom_id", "method", "url", "body"}`, with `url` one of the
//!   OpenAI routes the server has.
//!
//! The route validates the fields; a line is refused here only for what no route could answer:
//! not JSON, not an object, a stream asked for, an unknown task or URL.

use serde_json::{Map, Value};

/// The task of a line in t5serve's own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchTask {
    Generate,
    Classify,
    Translate,
    Embed,
}

impl BatchTask {
    const ALL: [BatchTask; 4] = [BatchTask::Generate, BatchTask::Classify, BatchTask::Translate, BatchTask::Embed];

    pub fn name(self) -> &'static str {
        match self {
            BatchTask::Generate => "generate",
            BatchTask::Classify => "classify",
            BatchTask::Translate => "translate",
            BatchTask::Embed => "embed",
        }
    }

    /// The route that answers it.
    pub fn path(self) -> &'static str {
        match self {
            BatchTask::Generate => "/v1/generate",
            BatchTask::Classify => "/v1/classify",
            BatchTask::Translate => "/v1/translate",
            BatchTask::Embed => "/embed",
        }
    }
}

/// The OpenAI routes a batch request may name (OpenAI's batch API takes these three, and
/// `/v1/responses`, which the server does not have).
pub const OPENAI_URLS: [&str; 3] = ["/v1/completions", "/v1/chat/completions", "/v1/embeddings"];

/// Which shape a line is in; its answer is written in the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Own,
    OpenAi,
}

/// A line ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// 1-based.
    pub line: usize,
    pub format: Format,
    /// The id its answer carries: `id` (own shape; null when absent) or `custom_id`.
    pub id: Value,
    pub path: &'static str,
    pub body: Vec<u8>,
}

/// What is wrong with a line, as the server tells a request body: not JSON (400), JSON that
/// asks for nothing a route answers (422), over max_body_bytes (413).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Syntax,
    Invalid,
    TooLarge,
}

/// A line no route could answer.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub line: usize,
    pub format: Format,
    pub id: Value,
    pub fault: Fault,
    /// For OpenAI's `error.code`.
    pub code: &'static str,
    pub message: String,
}

impl Job {
    /// What resume matches an answer by.
    pub fn key(&self) -> String {
        key(self.format, &self.id, self.line)
    }
}

impl LineError {
    fn new(line: usize, format: Format, id: Value, code: &'static str, message: String) -> Self {
        let fault = if code == "invalid_json" { Fault::Syntax } else { Fault::Invalid };
        Self { line, format, id, fault, code, message }
    }

    /// A line longer than the server takes a request body (`max_body_bytes`); it was not kept.
    pub fn too_long(line: usize, bytes: usize, limit: usize) -> Self {
        let message = format!("line {line} is {bytes} bytes, over max_body_bytes ({limit})");
        Self { fault: Fault::TooLarge, ..Self::new(line, Format::Own, Value::Null, "request_too_large", message) }
    }

    /// A line that is not UTF-8 text.
    pub fn not_text(line: usize) -> Self {
        Self::new(line, Format::Own, Value::Null, "invalid_json", format!("line {line} is not UTF-8 text"))
    }
}

/// What resume matches a line and its answer by: the id, or the line number for a line in the
/// own shape without one.
pub fn key(format: Format, id: &Value, line: usize) -> String {
    match (format, id) {
        (Format::Own, Value::Null) => format!("line:{line}"),
        (Format::Own, id) => format!("id:{id}"),
        (Format::OpenAi, id) => format!("custom_id:{id}"),
    }
}

/// Reads line `line` (its text without the newline); `task` is the run's.
pub fn parse(line: usize, text: &str, task: BatchTask) -> Result<Job, LineError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        LineError::new(line, Format::Own, Value::Null, "invalid_json", format!("line {line} is not JSON: {e}"))
    })?;
    let Value::Object(mut object) = value else {
        return Err(LineError::new(
            line,
            Format::Own,
            Value::Null,
            "invalid_request",
            format!("line {line} is not a JSON object"),
        ));
    };
    if object.contains_key("custom_id") {
        return openai(line, object);
    }
    let id = object.remove("id").unwrap_or(Value::Null);
    let fail = |code, message: String| LineError::new(line, Format::Own, id.clone(), code, message);
    let task = match object.remove("task") {
        None => task,
        Some(Value::String(name)) => BatchTask::ALL.into_iter().find(|t| t.name() == name).ok_or_else(|| {
            fail(
                "invalid_request",
                format!("line {line}: unknown task {name:?} (generate, classify, translate or embed)"),
            )
        })?,
        Some(other) => return Err(fail("invalid_request", format!("line {line}: task must be a string, not {other}"))),
    };
    refuse_stream(&object).map_err(|m| fail("invalid_request", format!("line {line}: {m}")))?;
    Ok(Job { line, format: Format::Own, id, path: task.path(), body: body(object) })
}

fn openai(line: usize, mut object: Map<String, Value>) -> Result<Job, LineError> {
    let id = object.remove("custom_id").unwrap_or(Value::Null);
    let fail = |code, message: String| LineError::new(line, Format::OpenAi, id.clone(), code, message);
    if !id.is_string() {
        return Err(fail("invalid_request", format!("line {line}: custom_id must be a string")));
    }
    match object.remove("method") {
        Some(Value::String(m)) if m == "POST" => {}
        other => return Err(fail("invalid_request", format!("line {line}: method must be \"POST\", not {other:?}"))),
    }
    let path = match object.remove("url") {
        Some(Value::String(url)) => OPENAI_URLS.into_iter().find(|u| *u == url).ok_or_else(|| {
            fail("invalid_url", format!("line {line}: url {url:?} is not one of {}", OPENAI_URLS.join(", ")))
        })?,
        _ => return Err(fail("invalid_url", format!("line {line}: url must be a string"))),
    };
    let Some(Value::Object(request)) = object.remove("body") else {
        return Err(fail("invalid_request", format!("line {line}: body must be a JSON object")));
    };
    if let Some(extra) = object.keys().next() {
        return Err(fail(
            "invalid_request",
            format!("line {line}: unknown field {extra:?} (custom_id, method, url, body)"),
        ));
    }
    refuse_stream(&request).map_err(|m| fail("invalid_request", format!("line {line}: {m}")))?;
    Ok(Job { line, format: Format::OpenAi, id, path, body: body(request) })
}

/// A batch answer is one JSON document: a stream cannot be written as one.
fn refuse_stream(request: &Map<String, Value>) -> Result<(), String> {
    match request.get("stream") {
        Some(Value::Bool(true)) => Err("stream is not available in a batch job".into()),
        _ => Ok(()),
    }
}

fn body(object: Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(&Value::Object(object)).expect("a JSON object serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sent(job: &Job) -> Value {
        serde_json::from_slice(&job.body).unwrap()
    }

    #[test]
    fn own_lines_go_to_their_tasks_route_without_id_and_task() {
        let j = parse(3, r#"{"id": "a", "inputs": "x", "parameters": {"max_new_tokens": 4}}"#, BatchTask::Generate)
            .unwrap();
        assert_eq!((j.line, j.format, j.path, j.id.clone()), (3, Format::Own, "/v1/generate", json!("a")));
        assert_eq!(sent(&j), json!({"inputs": "x", "parameters": {"max_new_tokens": 4}}));
        assert_eq!(j.key(), "id:\"a\"");
        let j = parse(
            4,
            r#"{"id": 7, "task": "translate", "text": "x", "source_lang": "English", "target_lang": "German"}"#,
            BatchTask::Generate,
        )
        .unwrap();
        assert_eq!((j.path, j.key()), ("/v1/translate", "id:7".to_string()));
        assert_eq!(sent(&j), json!({"text": "x", "source_lang": "English", "target_lang": "German"}));
        let j = parse(5, r#"{"inputs": ["x", "y"]}"#, BatchTask::Embed).unwrap();
        assert_eq!((j.path, j.id.clone(), j.key()), ("/embed", Value::Null, "line:5".to_string()));
        assert_eq!(
            parse(1, r#"{"inputs": "x", "labels": ["a", "b"]}"#, BatchTask::Classify).unwrap().path,
            "/v1/classify"
        );
    }

    #[test]
    fn openai_lines_are_told_apart_by_custom_id() {
        let text = r#"{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": []}}"#;
        let j = parse(2, text, BatchTask::Embed).unwrap();
        assert_eq!(
            (j.format, j.path, j.key()),
            (Format::OpenAi, "/v1/chat/completions", "custom_id:\"r1\"".to_string())
        );
        assert_eq!(sent(&j), json!({"model": "m", "messages": []}));
    }

    #[test]
    fn lines_no_route_could_answer_are_errors_with_their_line_and_id() {
        let e = parse(9, "{not json", BatchTask::Generate).unwrap_err();
        assert_eq!((e.line, e.code, e.id.clone()), (9, "invalid_json", Value::Null));
        assert!(e.message.starts_with("line 9 is not JSON"), "{}", e.message);
        assert_eq!(parse(1, "[1, 2]", BatchTask::Generate).unwrap_err().code, "invalid_request");
        let e = parse(2, r#"{"id": "s", "inputs": "x", "stream": true}"#, BatchTask::Generate).unwrap_err();
        assert_eq!((e.id.clone(), e.format), (json!("s"), Format::Own));
        assert!(e.message.contains("stream"), "{}", e.message);
        let e = parse(3, r#"{"id": "t", "task": "summarize", "inputs": "x"}"#, BatchTask::Generate).unwrap_err();
        assert!(e.message.contains("unknown task \"summarize\""), "{}", e.message);
        let e = parse(
            4,
            r#"{"custom_id": "u", "method": "POST", "url": "/v1/responses", "body": {}}"#,
            BatchTask::Generate,
        )
        .unwrap_err();
        assert_eq!((e.format, e.code, e.id.clone()), (Format::OpenAi, "invalid_url", json!("u")));
        let e = parse(
            5,
            r#"{"custom_id": "v", "method": "GET", "url": "/v1/embeddings", "body": {}}"#,
            BatchTask::Generate,
        )
        .unwrap_err();
        assert!(e.message.contains("method"), "{}", e.message);
        let e =
            parse(6, r#"{"custom_id": 1, "method": "POST", "url": "/v1/embeddings", "body": {}}"#, BatchTask::Generate)
                .unwrap_err();
        assert!(e.message.contains("custom_id must be a string"), "{}", e.message);
        let text = r#"{"custom_id": "w", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "stream": true}}"#;
        assert!(parse(7, text, BatchTask::Generate).unwrap_err().message.contains("stream"));
    }
}
