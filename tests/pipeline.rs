//! What every route shares, checked on each route: `request_timeout_ms` (504 JSON, the rows
//! dropped), the input-token counter, and the served OpenAPI document. Tiny model, real server.

mod common;

use common::*;
use serde_json::json;

/// Every route obeys `request_timeout_ms`: with 1 ms no request can finish (an encoder run alone
/// takes longer), so each answers 504 in the API's error shape, and its rows are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_obeys_the_request_timeout() {
    let server = start_server_with(tiny_model(), |c| c.request_timeout_ms = 1).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let texts: Vec<String> = (0..16).map(|i| format!("a long enough text number {i} to classify")).collect();
    let long = "This is a sentence. ".repeat(40);
    let requests = [
        ("/v1/generate", json!({"inputs": texts, "parameters": {"max_new_tokens": 64, "min_new_tokens": 64}})),
        ("/v1/classify", json!({"inputs": texts, "labels": ["yes", "no", "perhaps not at all"]})),
        (
            "/v1/translate",
            json!({"text": [long.clone(), long], "source_lang": "English", "target_lang": "German",
                   "parameters": {"max_new_tokens": 64, "min_new_tokens": 64}}),
        ),
        ("/generate", json!({"inputs": "Hi", "parameters": {"max_new_tokens": 64}})),
        ("/", json!({"inputs": "Hi", "parameters": {"max_new_tokens": 64}})),
    ];
    for (route, body) in requests {
        let (status, v) = post(&client, &format!("{base}{route}"), body).await;
        assert_eq!((status, v["error_type"].as_str()), (504, Some("deadline_exceeded")), "{route}: {v}");
        assert!(v["error"].as_str().unwrap().contains("request_timeout_ms (1 ms)"), "{route}: {v}");
    }
    // Their rows leave the batch at the next step (or the queue, unstarted).
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_queue_size", 0.0).await, 0.0);
    server.shutdown().await.unwrap();
}

/// `t5serve_input_tokens_total` counts each row's input once, on every route: the tokens of
/// the prompt as the model's tokenizer makes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_tokens_are_counted_once_per_row() {
    let server = start_server(tiny_model()).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let tokenizer = t5serve::model::TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    let count = |t: &str| tokenizer.encode(t).unwrap().len() as f64;
    let name = "t5serve_input_tokens_total";
    let texts = ["The house is wonderful.", "It rains."];
    let cases = [
        (
            "/v1/classify",
            json!({"inputs": texts, "labels": ["positive", "negative"]}),
            count(texts[0]) + count(texts[1]),
        ),
        (
            "/v1/generate",
            json!({"inputs": texts, "parameters": {"max_new_tokens": 2}}),
            count(texts[0]) + count(texts[1]),
        ),
        (
            "/v1/translate",
            json!({"text": texts[0], "source_lang": "English", "target_lang": "German", "parameters": {"max_new_tokens": 2}}),
            count(&format!("translate English to German: {}", texts[0])),
        ),
        ("/generate", json!({"inputs": texts[1], "parameters": {"max_new_tokens": 2}}), count(texts[1])),
    ];
    for (route, body, want) in cases {
        let before = metric(&client, server.addr, name).await;
        let (status, v) = post(&client, &format!("{base}{route}"), body).await;
        assert_eq!(status, 200, "{route}: {v}");
        assert_eq!(metric(&client, server.addr, name).await - before, want, "{route}");
    }
    server.shutdown().await.unwrap();
}

/// The committed OpenAPI document is served as it is (YAML) and as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_as_yaml_and_json() {
    let server = start_server(tiny_model()).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let r = client.get(format!("{base}/openapi.yaml")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().contains("yaml"), "{:?}", r.headers());
    assert_eq!(r.text().await.unwrap(), committed);
    let r = client.get(format!("{base}/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let version = committed.lines().find_map(|l| l.strip_prefix("openapi: ")).unwrap().trim_matches('"');
    assert_eq!(v["openapi"], version);
    for (method, path) in t5serve::http::ROUTES {
        assert!(v["paths"][path][method].is_object(), "{method} {path} missing from /openapi.json");
    }
    server.shutdown().await.unwrap();
}

/// A request that times out while decoding: 504, and its rows leave the running batch at the
/// next step (counted as cancelled), on generate and on translate alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_rows_leave_the_batch_at_the_next_step() {
    // 4096 steps of the tiny model take far longer than 300 ms on any machine.
    let server = start_server_with(tiny_model(), |c| {
        c.request_timeout_ms = 300;
        c.max_new_tokens_limit = 4096;
        c.max_batch_memory_mb = 4096;
    })
    .await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let long = json!({"max_new_tokens": 4096, "min_new_tokens": 4096});
    let requests = [
        ("/v1/generate", json!({"inputs": ["Hi", "Ho", "Hu"], "parameters": long}), 3.0),
        (
            "/v1/translate",
            json!({"text": ["one", "two"], "source_lang": "English", "target_lang": "German", "parameters": long}),
            2.0,
        ),
    ];
    let mut cancelled = 0.0;
    for (route, body, rows) in requests {
        let (status, v) = post(&client, &format!("{base}{route}"), body).await;
        assert_eq!((status, v["error_type"].as_str()), (504, Some("deadline_exceeded")), "{route}: {v}");
        cancelled += rows;
        let name = "t5serve_requests_cancelled_total";
        assert_eq!(wait_for_metric(&client, server.addr, name, cancelled).await, cancelled, "{route}");
        assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0, "{route}");
    }
    server.shutdown().await.unwrap();
}

/// /v1/classify obeys `request_timeout_ms` too: a request whose scoring takes seconds (128 label
/// rows of ~50 tokens over the tiny model's 32k vocabulary) answers 504 once its time is up,
/// while the server (whose warm-up is no client request) stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_obeys_the_request_timeout() {
    let server = start_server_with(tiny_model(), |c| c.request_timeout_ms = 300).await;
    let client = reqwest::Client::new();
    let label = |i| {
        format!("label number {i} is a rather long candidate phrase with many words to score one by one ").repeat(2)
    };
    let labels: Vec<String> = (0..16).map(label).collect();
    let inputs: Vec<String> = (0..8).map(|i| format!("this is input text number {i}, somewhat long as well")).collect();
    let body = json!({"inputs": inputs, "labels": labels});
    let (status, v) = post(&client, &format!("http://{}/v1/classify", server.addr), body).await;
    assert_eq!((status, v["error_type"].as_str()), (504, Some("deadline_exceeded")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("request_timeout_ms (300 ms)"), "{v}");
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    server.shutdown().await.unwrap();
}
