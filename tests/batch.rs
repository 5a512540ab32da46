//! `t5serve batch`, the real binary on the bundled model: a file that mixes every task in
//! t5serve's own shape, OpenAI batch requests and bad lines is answered line for line as the
//! server answers the same requests (each id once; bad lines as error records with their line
//! numbers); a run stopped by SIGTERM leaves a file of whole lines, and a rerun completes it with
//! nothing lost or twice.
//!
//! The reference is the server itself (`t5serve serve`, the same model and flags) answering each
//! line's request over HTTP, one request at a time. With `--read-ahead 1` the batch job also runs
//! one line at a time, so each line's rows are batched exactly as the server batches that request
//! and every answer must be equal, floats included (the int8 model quantizes activations with
//! scales taken over the whole batch, so only the same batch gives the same numbers). With the
//! default read-ahead, lines share batches: generated texts must still be the server's.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/t5-numbers")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("t5serve-batch-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const FLAGS: [&str; 2] = ["--max-body-bytes", "4096"];

fn batch(dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_t5serve"));
    c.args(["batch", "--model", bundled().to_str().unwrap()])
        .arg("--input")
        .arg(dir.join("in.jsonl"))
        .arg("--output")
        .arg(dir.join("out.jsonl"))
        .args(FLAGS)
        .args(extra)
        .env("NO_COLOR", "1");
    c
}

/// Runs a batch job to its end: its exit code and its stderr.
fn run_batch(dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = batch(dir, extra).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The output's records; every line is whole (the file ends with a newline) and parses.
fn records(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "a torn last line: {:?}", &text[text.len().saturating_sub(80)..]);
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// A line of the mixed file: its text, and the request the server gets for it (route, body).
struct Line {
    text: String,
    request: Option<(&'static str, Value)>,
}

fn own(line: Value, route: &'static str) -> Line {
    let mut body = line.clone();
    body.as_object_mut().unwrap().retain(|k, _| k != "id" && k != "task");
    Line { text: line.to_string(), request: Some((route, body)) }
}

fn openai(custom_id: &str, url: &'static str, body: Value) -> Line {
    let text = json!({"custom_id": custom_id, "method": "POST", "url": url, "body": body}).to_string();
    Line { text, request: Some((url, body)) }
}

fn raw(text: &str) -> Line {
    Line { text: text.to_string(), request: None }
}

fn mixed_file() -> Vec<Line> {
    let long_input = vec!["nine"; 600].join(" ");
    vec![
        own(
            json!({"id": "gen-1", "inputs": "translate English to German: fifty-three", "parameters": {"max_new_tokens": 20}}),
            "/v1/generate",
        ),
        own(
            json!({"id": "gen-2", "inputs": ["digits: four hundred", "digits: twelve"], "parameters": {"details": true, "seed": 7}}),
            "/v1/generate",
        ),
        own(json!({"id": "cls-1", "task": "classify", "inputs": "quatre mille"}), "/v1/classify"),
        own(
            json!({"id": "cls-2", "task": "classify", "inputs": ["vier", "four"], "labels": ["English", "German"], "template": "language: {text}"}),
            "/v1/classify",
        ),
        own(
            json!({"id": "tr-1", "task": "translate", "text": "twenty-one", "source_lang": "English", "target_lang": "French"}),
            "/v1/translate",
        ),
        own(json!({"id": "emb-1", "task": "embed", "inputs": ["seven", "sieben"]}), "/embed"),
        raw(""),
        own(json!({"inputs": "digits: nine"}), "/v1/generate"),
        openai(
            "oa-cmpl",
            "/v1/completions",
            json!({"model": "t5-numbers", "prompt": "digits: ninety", "max_tokens": 8}),
        ),
        openai(
            "oa-chat",
            "/v1/chat/completions",
            json!({"model": "t5-numbers", "messages": [{"role": "user", "content": "digits: ten"}]}),
        ),
        openai("oa-emb", "/v1/embeddings", json!({"model": "t5-numbers", "input": ["nine", "neun"]})),
        // Bad lines: each gets an error record, and the run goes on.
        raw("{not json"),
        own(json!({"id": "bad-params", "inputs": "digits: one", "parameters": {"max_new_tokens": 0}}), "/v1/generate"),
        own(json!({"id": "over-limit", "inputs": long_input}), "/v1/generate"),
        raw(&json!({"id": "too-long", "inputs": "x".repeat(5000)}).to_string()),
        raw(r#"{"id": "streamed", "inputs": "digits: one", "stream": true}"#),
        raw(r#"{"custom_id": "oa-bad-url", "method": "POST", "url": "/v1/responses", "body": {}}"#),
    ]
}

/// A record's resume key: its id, its custom_id, or its line number.
fn key(r: &Value) -> String {
    match (r.get("custom_id"), &r["id"]) {
        (Some(c), _) => format!("custom_id:{c}"),
        (None, Value::Null) => format!("line:{}", r["line"]),
        (None, id) => format!("id:{id}"),
    }
}

/// The server's answer and the record's, without what differs between any two answers (OpenAI's
/// response ids and creation times).
fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        o.remove("created");
    }
    v
}

/// Status and body of a record, in either shape.
fn answer_of(r: &Value) -> (u64, Value) {
    match r.get("custom_id") {
        Some(_) => (r["response"]["status_code"].as_u64().unwrap(), r["response"]["body"].clone()),
        None => (r["status"].as_u64().unwrap(), r.get("response").or(r.get("error")).unwrap().clone()),
    }
}

/// The texts an answer generated, in order.
fn texts(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut walk = vec![body];
    while let Some(v) = walk.pop() {
        match v {
            Value::Object(o) => {
                for k in ["generated_text", "text", "content"] {
                    if let Some(Value::String(s)) = o.get(k) {
                        out.push(s.clone());
                    }
                }
                if let Some(Value::Array(t)) = o.get("translations") {
                    out.extend(t.iter().filter_map(|s| s.as_str().map(String::from)));
                }
                walk.extend(o.values().filter(|v| v.is_object() || v.is_array()));
            }
            Value::Array(a) => walk.extend(a.iter()),
            _ => {}
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_is_answered_once_as_the_server_answers_it() {
    let lines = mixed_file();
    let dir = scratch("mixed");
    let file: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();
    std::fs::write(dir.join("in.jsonl"), file).unwrap();

    let (code, stderr) = run_batch(&dir, &["--read-ahead", "1"]);
    assert_eq!(code, 1, "some answers are errors: exit status 1; stderr:\n{stderr}");
    let one_at_a_time = records(&dir);
    std::fs::remove_file(dir.join("out.jsonl")).unwrap();
    let (code, stderr) = run_batch(&dir, &[]);
    assert_eq!(code, 1, "{stderr}");
    let together = records(&dir);

    let server = common::spawn_binary_on(&bundled(), &FLAGS);
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
    let by_line = |records: &[Value], at: usize| -> Value {
        let found: Vec<&Value> =
            records.iter().filter(|r| r["line"] == json!(at) || r["id"] == json!(format!("batch_req_{at}"))).collect();
        assert_eq!(found.len(), 1, "line {at} answered once: {found:?}");
        found[0].clone()
    };
    let non_blank = lines.iter().filter(|l| !l.text.is_empty()).count();
    for records in [&one_at_a_time, &together] {
        assert_eq!(records.len(), non_blank, "one record per non-blank line");
        let keys: std::collections::HashSet<String> = records.iter().map(key).collect();
        assert_eq!(keys.len(), non_blank, "every id once");
    }
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.text.is_empty()) {
        let at = i + 1;
        let (alone, shared) = (by_line(&one_at_a_time, at), by_line(&together, at));
        match &line.request {
            Some((route, body)) => {
                let (status, want) = common::post(&client, &format!("{}{route}", server.base), body.clone()).await;
                let (got_status, got) = answer_of(&alone);
                assert_eq!(
                    (got_status, comparable(got)),
                    (status as u64, comparable(want.clone())),
                    "line {at}: {}",
                    line.text
                );
                let (shared_status, shared_body) = answer_of(&shared);
                assert_eq!(shared_status, status as u64, "line {at}");
                assert_eq!(texts(&shared_body), texts(&want), "line {at}, batched with other lines");
            }
            None => {
                // Lines no route answers: the record says why, with the server's status for such a body.
                let r = client.post(format!("{}/v1/generate", server.base)).header("content-type", "application/json");
                let expect = match alone.get("custom_id") {
                    Some(_) => None,
                    None => Some(r.body(line.text.clone()).send().await.unwrap().status().as_u16()),
                };
                assert_eq!(alone, shared, "line {at}: the same error either way");
                match expect {
                    Some(_) if line.text.contains("\"stream\"") => assert_eq!(alone["status"], 422, "{alone}"),
                    Some(status) => assert_eq!(alone["status"], json!(status), "line {at}: {alone}"),
                    None => assert_eq!(alone["error"]["code"], "invalid_url", "{alone}"),
                }
                let message = alone["error"]["error"].as_str().or(alone["error"]["message"].as_str()).unwrap();
                assert!(message.starts_with(&format!("line {at}")), "{message}");
            }
        }
    }
    server.kill_and_log();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_by_sigterm_leaves_whole_lines_and_a_rerun_completes_it() {
    let dir = scratch("resume");
    let n = 200;
    let file: String = (0..n)
        .map(|i| {
            let body = json!({"id": format!("row-{i}"), "inputs": format!("translate English to German: {i}"),
                "parameters": {"max_new_tokens": 60, "min_new_tokens": 60}});
            format!("{body}\n")
        })
        .collect();
    std::fs::write(dir.join("in.jsonl"), file).unwrap();
    let mut child = batch(&dir, &["--read-ahead", "16"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(dir.join("out.jsonl")).map(|t| t.lines().count()).unwrap_or(0) < 20 {
        assert!(Instant::now() < until, "no answers written");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the signal");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stopped before the end: 130; stderr:\n{stderr}");
    let first = records(&dir);
    assert!(first.len() >= 20 && first.len() < n, "{} answers before the stop", first.len());
    let ids: std::collections::HashSet<&Value> = first.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids.len(), first.len(), "no id twice");
    assert!(first.iter().all(|r| r["status"] == 200), "the rows in flight finished");

    let (code, stderr) = run_batch(&dir, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("answered before: {}", first.len())), "{stderr}");
    let all = records(&dir);
    assert_eq!(&all[..first.len()], &first[..], "the first run's answers are kept as they were");
    let mut ids: Vec<String> = all.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("row-{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "every id once in the end");

    // A third run has nothing left to do.
    let (code, stderr) = run_batch(&dir, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(records(&dir), all);

    // An output that is the input is refused before anything is written.
    let input = dir.join("in.jsonl");
    let before = std::fs::read(&input).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_t5serve"))
        .args(["batch", "--model", bundled().to_str().unwrap()])
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--output is the input file"), "{stderr}");
    assert_eq!(std::fs::read(&input).unwrap(), before);
}
