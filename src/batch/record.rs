//! The answers of `t5serve batch`, one JSON line each, in the shape of the line they answer:
//! - own: `{"id", "line", "status", "response"}`, or `"error"` (the route's own error body,
//!   `{"error", "error_type"}`) in place of `"response"` when the status is not 200;
//! - OpenAI's batch output: `{"id", "custom_id", "response": {"status_code", "request_id",
//!   "body"}, "error": null}`; a line no route could answer has `"response": null` and
//!   `"error"`, OpenAI's `BatchError`: `{"code", "line", "message", "param"}`.
//!
//! And resuming: an earlier run's file tells which lines are answered for good.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use super::line::{self, Fault, Format, Job, LineError};
use crate::http::error::ApiError;

/// What the route answered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub request_id: Option<String>,
    pub body: Value,
}

/// Whether an answer is final. A rerun answers again what failed on the server's side (5xx), ran
/// out of time (408) or found it full (429); a client error (4xx) would fail the same way again.
pub fn is_final(status: u16) -> bool {
    status < 500 && status != 408 && status != 429
}

/// A record in the own shape (fields in this order).
#[derive(Serialize)]
struct Own<'a> {
    id: &'a Value,
    line: usize,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// A record in OpenAI's batch output shape.
#[derive(Serialize)]
struct OpenAi<'a> {
    id: String,
    custom_id: &'a Value,
    response: Option<OpenAiResponse>,
    error: Option<OpenAiError<'a>>,
}

#[derive(Serialize)]
struct OpenAiResponse {
    status_code: u16,
    request_id: Option<String>,
    body: Value,
}

/// OpenAI's `BatchError`.
#[derive(Serialize)]
struct OpenAiError<'a> {
    code: &'a str,
    line: usize,
    message: &'a str,
    param: Option<&'a str>,
}

fn to_line(record: impl Serialize) -> String {
    serde_json::to_string(&record).expect("a record serializes")
}

/// The record (one JSON line, without its newline) of a line the route answered.
pub fn answered(job: &Job, answer: Answer) -> String {
    match job.format {
        Format::Own => {
            let (response, error) =
                if answer.status == 200 { (Some(answer.body), None) } else { (None, Some(answer.body)) };
            to_line(Own { id: &job.id, line: job.line, status: answer.status, response, error })
        }
        Format::OpenAi => to_line(OpenAi {
            id: format!("batch_req_{}", job.line),
            custom_id: &job.id,
            response: Some(OpenAiResponse {
                status_code: answer.status,
                request_id: answer.request_id,
                body: answer.body,
            }),
            error: None,
        }),
    }
}

/// The record of a line no route could answer.
pub fn refused(e: &LineError) -> String {
    match e.format {
        Format::Own => {
            let message = e.message.clone();
            let error = match e.fault {
                Fault::Syntax => ApiError::BadRequest(message),
                Fault::Invalid => ApiError::Validation(message),
                Fault::TooLarge => ApiError::PayloadTooLarge(message),
            };
            let status = error.status_code().as_u16();
            let body = serde_json::to_value(error.into_body()).expect("an error body serializes");
            to_line(Own { id: &e.id, line: e.line, status, response: None, error: Some(body) })
        }
        Format::OpenAi => to_line(OpenAi {
            id: format!("batch_req_{}", e.line),
            custom_id: &e.id,
            response: None,
            error: Some(OpenAiError { code: e.code, line: e.line, message: &e.message, param: None }),
        }),
    }
}

/// A record's resume key and its status (a line no route could answer counts as 400).
fn read_record(record: &Value) -> Option<(String, u16)> {
    if let Some(custom_id) = record.get("custom_id") {
        let status = match &record["response"] {
            Value::Null => 400,
            response => response.get("status_code")?.as_u64()?,
        };
        return Some((line::key(Format::OpenAi, custom_id, 0), status as u16));
    }
    let status = record.get("status")?.as_u64()?;
    let at = record.get("line")?.as_u64()? as usize;
    Some((line::key(Format::Own, record.get("id")?, at), status as u16))
}

/// What an earlier run left.
#[derive(Debug, Default, PartialEq)]
pub struct Resume {
    /// The keys of the lines answered for good: a rerun skips them.
    pub answered: HashSet<String>,
    /// Of those, the ones whose answer is an error.
    pub failed: usize,
    /// Records to answer again (taken out of the file).
    pub retried: usize,
    /// Bytes of a last line cut off without its newline (the run was killed while writing it).
    pub cut_bytes: u64,
}

/// Reads `path` (absent: nothing answered yet) and leaves it holding only final records, each on
/// a whole line: a torn last line is cut off, records to answer again are taken out (the file is
/// rewritten then, through a temporary file and a rename). A line that is not a record stops it:
/// the file is not an answer file, and nothing in it is touched.
pub fn resume(path: &Path) -> anyhow::Result<Resume> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Resume::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut reader = std::io::BufReader::new(file);
    let (mut out, mut buf, mut at, mut whole) = (Resume::default(), Vec::new(), 0usize, 0u64);
    let mut keep = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        at += 1;
        if buf.last() != Some(&b'\n') {
            out.cut_bytes = n as u64;
            break;
        }
        let record = serde_json::from_slice::<Value>(&buf).ok().and_then(|r| read_record(&r));
        let Some((key, status)) = record else {
            anyhow::bail!("{} line {at} is not a batch answer; not resuming over it", path.display());
        };
        let done = is_final(status);
        if done {
            out.answered.insert(key);
            out.failed += usize::from(status != 200);
            whole += n as u64;
        } else {
            out.retried += 1;
        }
        keep.push(done);
    }
    if out.retried > 0 {
        rewrite(path, &keep)?;
    } else if out.cut_bytes > 0 {
        std::fs::OpenOptions::new().write(true).open(path)?.set_len(whole)?;
    }
    Ok(out)
}

/// Rewrites `path` with the lines whose `keep` is true (through `path.tmp` and a rename).
fn rewrite(path: &Path, keep: &[bool]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut writer = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let mut buf = Vec::new();
    for &k in keep {
        buf.clear();
        reader.read_until(b'\n', &mut buf)?;
        if k {
            writer.write_all(&buf)?;
        }
    }
    writer.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::line::{BatchTask, LineError, parse};
    use serde_json::json;

    fn answered(job: &Job, answer: Answer) -> Value {
        serde_json::from_str(&super::answered(job, answer)).unwrap()
    }

    fn refused(e: &LineError) -> Value {
        serde_json::from_str(&super::refused(e)).unwrap()
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    /// A fresh directory of this test's own.
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("t5serve-batch-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn records_take_the_shape_of_their_line() {
        let own = parse(2, r#"{"id": "a", "inputs": "x"}"#, BatchTask::Generate).unwrap();
        let ok = Answer { status: 200, request_id: Some("r-1".into()), body: json!({"generated_text": "y"}) };
        assert_eq!(
            answered(&own, ok.clone()),
            json!({"id": "a", "line": 2, "status": 200, "response": {"generated_text": "y"}})
        );
        let bad =
            Answer { status: 422, request_id: None, body: json!({"error": "too long", "error_type": "validation"}) };
        assert_eq!(answered(&own, bad)["error"]["error"], "too long");
        let oa = parse(
            3,
            r#"{"custom_id": "c", "method": "POST", "url": "/v1/embeddings", "body": {}}"#,
            BatchTask::Generate,
        )
        .unwrap();
        let r = answered(&oa, ok);
        assert_eq!(
            (r["id"].clone(), r["custom_id"].clone(), r["error"].clone()),
            (json!("batch_req_3"), json!("c"), Value::Null)
        );
        assert_eq!(r["response"], json!({"status_code": 200, "request_id": "r-1", "body": {"generated_text": "y"}}));
        let e = parse(4, r#"{"custom_id": "d", "method": "POST", "url": "/v1/x", "body": {}}"#, BatchTask::Generate)
            .unwrap_err();
        let r = refused(&e);
        assert_eq!((r["response"].clone(), r["error"]["code"].clone()), (Value::Null, json!("invalid_url")));
        let e = parse(5, "nope", BatchTask::Generate).unwrap_err();
        assert_eq!(
            (refused(&e)["status"].clone(), refused(&e)["error"]["error_type"].clone()),
            (json!(400), json!("bad_request"))
        );
        let e = parse(6, "[1]", BatchTask::Generate).unwrap_err();
        assert_eq!(refused(&e)["status"], 422);
        assert_eq!(refused(&LineError::too_long(7, 10, 8))["status"], 413);
    }

    #[test]
    fn resume_keeps_final_answers_cuts_a_torn_line_and_takes_out_what_to_answer_again() {
        let path = scratch("resume").join("out.jsonl");
        assert_eq!(resume(&path).unwrap(), Resume::default(), "no file: nothing answered");
        let lines = [
            json!({"id": "a", "line": 1, "status": 200, "response": {}}),
            json!({"id": null, "line": 2, "status": 422, "error": {}}),
            json!({"id": "c", "line": 3, "status": 503, "error": {}}),
            json!({"id": "batch_req_4", "custom_id": "d", "response": {"status_code": 200, "body": {}}, "error": null}),
            json!({"id": "batch_req_5", "custom_id": "e", "response": null, "error": {"code": "invalid_url"}}),
            json!({"id": "batch_req_6", "custom_id": "f", "response": {"status_code": 429, "body": {}}, "error": null}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        write(&path, &format!("{text}{{\"id\": \"g\", \"li"));
        let r = resume(&path).unwrap();
        let keys: HashSet<String> =
            ["id:\"a\"", "line:2", "custom_id:\"d\"", "custom_id:\"e\""].map(String::from).into();
        assert_eq!((r.answered, r.failed, r.retried, r.cut_bytes), (keys, 2, 2, 15));
        let left: Vec<Value> =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(left, [lines[0].clone(), lines[1].clone(), lines[3].clone(), lines[4].clone()]);
        // Only a torn line: cut off in place.
        write(&path, &format!("{}\n{{\"id\"", lines[0]));
        let r = resume(&path).unwrap();
        assert_eq!((r.answered.len(), r.retried, r.cut_bytes), (1, 0, 5));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", lines[0]));
    }

    #[test]
    fn a_file_that_is_not_an_answer_file_is_left_alone() {
        let path = scratch("not-answers").join("notes.txt");
        write(&path, "{\"id\": \"a\", \"line\": 1, \"status\": 200, \"response\": {}}\nhello\n");
        let e = resume(&path).unwrap_err().to_string();
        assert!(e.contains("line 2 is not a batch answer"), "{e}");
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("hello\n"));
    }
}
