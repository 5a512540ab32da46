//! What a hostile or careless client gets back (issue 19): bounded echoes of its values, request
//! ids that are usable or replaced, compressed bodies refused, translations that say how they
//! ended, and timeout messages that name the limit. Tiny model, real server, real socket.

mod common;

use common::*;
use serde_json::json;

/// No error message repeats a huge client value whole: an unknown language, a label, an unknown
/// field's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_echo_only_a_short_prefix_of_client_values() {
    let server = start_server(tiny_model()).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let huge = "x".repeat(100_000);
    let cases = [
        ("/v1/translate", json!({"text": "Hi", "source_lang": huge, "target_lang": "German"})),
        ("/v1/classify", json!({"inputs": "Hi", "labels": [huge, huge]})),
        ("/v1/generate", json!({"inputs": "Hi", huge.clone(): 1})),
    ];
    for (route, body) in cases {
        let (status, v) = post(&client, &format!("{base}{route}"), body).await;
        assert_eq!((status, v["error_type"].as_str()), (422, Some("validation")), "{route}");
        let message = v["error"].as_str().unwrap();
        assert!(message.chars().count() <= 1025 && message.contains('…'), "{route}: {} chars", message.len());
    }
    server.shutdown().await.unwrap();
}

/// A client's request id is kept when it is usable (visible ASCII, at most 128 bytes), and
/// replaced by a generated one otherwise (too long, or not ASCII).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_request_ids_are_replaced() {
    let server = start_server(tiny_model()).await;
    let url = format!("http://{}/health/live", server.addr);
    let client = reqwest::Client::new();
    let id_of = |r: &reqwest::Response| r.headers()["x-request-id"].as_bytes().to_vec();
    let r = client.get(&url).header("x-request-id", "client-id-42").send().await.unwrap();
    assert_eq!(id_of(&r), b"client-id-42");
    let long = "a".repeat(8000);
    let r = client.get(&url).header("x-request-id", &long).send().await.unwrap();
    let id = id_of(&r);
    assert!(!id.is_empty() && id.len() <= 128 && id != long.as_bytes(), "{}", String::from_utf8_lossy(&id));
    let latin1 = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap();
    let r = client.get(&url).header("x-request-id", latin1).send().await.unwrap();
    let id = id_of(&r);
    assert!(id.iter().all(|c| (0x21..=0x7e).contains(c)) && id != b"caf\xe9", "{id:?}");
    server.shutdown().await.unwrap();
}

/// A compressed body is refused (415), not read as if it were plain JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_body_is_refused() {
    let server = start_server(tiny_model()).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{}/v1/generate", server.addr))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(r#"{"inputs": "Hi", "parameters": {"max_new_tokens": 2}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error_type"], "unsupported_media_type", "{v}");
    assert!(v["error"].as_str().unwrap().contains("gzip"), "{v}");
    server.shutdown().await.unwrap();
}

/// Each translation says how it ended: a long text split into chunks, each cut at
/// max_new_tokens, is `length`, with the tokens of all its chunks; never a silent 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translations_report_their_finish_reason_and_usage() {
    let server = start_server_with(tiny_model(), |c| c.max_input_tokens = 24).await;
    let client = reqwest::Client::new();
    let tokenizer = t5serve::model::TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    let long = "four. ".repeat(40);
    let body = json!({"text": ["Hi", long.trim()], "source_lang": "English", "target_lang": "German",
                      "parameters": {"max_new_tokens": 3, "min_new_tokens": 3}});
    let (status, v) = post(&client, &format!("http://{}/v1/translate", server.addr), body).await;
    assert_eq!(status, 200, "{v}");
    let details = v["details"].as_array().unwrap();
    assert_eq!(details.len(), 2, "{v}");
    let prompt = |t: &str| tokenizer.encode(&format!("translate English to German: {t}")).unwrap().len();
    assert_eq!(details[0]["chunks"], 1);
    assert_eq!(details[0]["finish_reason"], "length");
    assert_eq!(details[0]["usage"]["input_tokens"], prompt("Hi"));
    assert_eq!(details[0]["usage"]["generated_tokens"], 3);
    let chunks = details[1]["chunks"].as_u64().unwrap();
    assert!(chunks > 1, "{v}");
    assert_eq!(details[1]["finish_reason"], "length");
    assert_eq!(details[1]["usage"]["generated_tokens"], 3 * chunks);
    server.shutdown().await.unwrap();
}

/// A timeout says which limit was hit and where the request was: the request timeout with the
/// rows that had finished, the queue deadline as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_name_the_limit_and_where() {
    let server = start_server_with(tiny_model(), |c| {
        c.request_timeout_ms = 300;
        c.max_new_tokens_limit = 4096;
        c.max_batch_size = 1;
    })
    .await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let long = json!({"max_new_tokens": 4096, "min_new_tokens": 4096});
    let (status, v) =
        post(&client, &format!("{base}/v1/generate"), json!({"inputs": ["Hi", "Ho"], "parameters": long})).await;
    assert_eq!(status, 504, "{v}");
    let message = v["error"].as_str().unwrap();
    assert!(
        message.contains("request_timeout_ms (300 ms)") && message.contains("0 of its 2 rows had finished"),
        "{message}"
    );
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    // One row at a time (max_batch_size 1): the second request waits behind the first, past its
    // 5 ms queue deadline.
    let slow = client.post(format!("{base}/v1/generate")).json(&json!({"inputs": "Hi", "parameters": long})).send();
    let slow = tokio::spawn(slow);
    wait_for_metric(&client, server.addr, "t5serve_active_rows", 1.0).await;
    let short = json!({"inputs": "Ho", "parameters": {"max_new_tokens": 2, "deadline_ms": 5}});
    let (status, v) = post(&client, &format!("{base}/v1/generate"), short).await;
    assert_eq!(status, 504, "{v}");
    assert!(v["error"].as_str().unwrap().contains("still queued at its queue deadline"), "{v}");
    assert_eq!(slow.await.unwrap().unwrap().status().as_u16(), 504);
    server.shutdown().await.unwrap();
}

/// A request whose 32 rows all expire in the queue writes one log line, not 32.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_logged_once_per_request() {
    let server = spawn_binary(&["--max-batch-size", "1", "--max-new-tokens-limit", "4096"]);
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
    let url = format!("{}/v1/generate", server.base);
    let long = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 4096, "min_new_tokens": 4096}});
    let slow = tokio::spawn(client.post(&url).json(&long).send());
    let addr = server.addr();
    wait_for_metric(&client, addr, "t5serve_active_rows", 1.0).await;
    let inputs: Vec<String> = (0..32).map(|i| format!("row {i}")).collect();
    let body = json!({"inputs": inputs, "parameters": {"max_new_tokens": 2, "deadline_ms": 5}});
    let (status, v) = post(&client, &url, body).await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(wait_for_metric(&client, addr, "t5serve_requests_expired_total", 32.0).await, 32.0);
    slow.abort();
    let text = server.kill_and_log();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("still queued at its deadline")).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("rows=32"), "{}", lines[0]);
}

/// A legal but expensive request is refused with a 422 naming max_request_cost: beams x returns
/// x new tokens over 32 inputs, or 64 long labels over 32 inputs; smaller ones run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expensive_requests_are_refused_by_their_cost() {
    let server = start_server(tiny_model()).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let inputs: Vec<String> = (0..32).map(|i| format!("input {i}")).collect();
    let beams = json!({"num_beams": 8, "num_return_sequences": 8, "max_new_tokens": 512});
    let label = |i| format!("label number {i} is a long candidate phrase with many words to score ").repeat(8);
    let labels: Vec<String> = (0..64).map(label).collect();
    // What the classify request asks: 32 inputs x 64 labels x the longest label's tokens.
    let tokenizer = t5serve::model::TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    let longest = labels.iter().map(|l| tokenizer.encode(l).unwrap().len()).max().unwrap();
    assert!(32 * 64 * longest > 131_072, "the classify case must exceed the default limit: {longest}");
    let cases = [
        ("/v1/generate", json!({"inputs": inputs, "parameters": beams})),
        ("/v1/classify", json!({"inputs": inputs, "labels": labels})),
    ];
    for (route, body) in cases {
        let (status, v) = post(&client, &format!("{base}{route}"), body).await;
        assert_eq!((status, v["error_type"].as_str()), (422, Some("validation")), "{route}: {v}");
        assert!(v["error"].as_str().unwrap().contains("(max_request_cost)"), "{route}: {v}");
    }
    let (status, v) = post(
        &client,
        &format!("{base}/v1/generate"),
        json!({"inputs": "Hi", "parameters": {"num_beams": 8, "num_return_sequences": 8, "max_new_tokens": 8}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    server.shutdown().await.unwrap();
}

/// Readiness tells the truth: at max_concurrent_requests (where a new request gets 429) the
/// server is not ready, and it is again once a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_while_the_server_cannot_take_work() {
    let server = start_server_with(tiny_model(), |c| {
        c.max_concurrent_requests = 1;
        c.max_new_tokens_limit = 4096;
    })
    .await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let ready = async || client.get(format!("{base}/health/ready")).send().await.unwrap().status().as_u16();
    assert_eq!(ready().await, 200);
    let long = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2000, "min_new_tokens": 2000}});
    let slow = tokio::spawn(client.post(format!("{base}/v1/generate")).json(&long).send());
    wait_for_metric(&client, server.addr, "t5serve_active_rows", 1.0).await;
    let r = client.get(format!("{base}/health/ready")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("max_concurrent_requests"), "{v}");
    let (status, _) = post(&client, &format!("{base}/v1/generate"), json!({"inputs": "Ho"})).await;
    assert_eq!(status, 429, "what readiness announced");
    assert_eq!(slow.await.unwrap().unwrap().status().as_u16(), 200);
    assert_eq!(ready().await, 200);
    server.shutdown().await.unwrap();
}
