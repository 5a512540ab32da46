//! `POST /v1/extract` through HTTP on the bundled model: the route's answer for an output that
//! is not `TYPE: span` (the model's language answer, reported unparsed, never guessed at), its
//! validation, and its metric. The parsing and locating rules are unit-tested in
//! `src/tasks/extract.rs`.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_output_without_entities_is_reported_as_it_is() {
    let server = start_server(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/t5-numbers")).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/extract", server.addr);
    // The language task answers one word, which has no delimiter.
    let body = json!({"inputs": ["vierhundertzwei", "twenty-one"], "template": "language: {text}"});
    let (status, answer) = post(&client, &url, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0], json!({"entities": [], "dropped": 0, "unparsed": ["German"], "output": "German"}));
    assert_eq!(answer[1]["unparsed"], json!(["English"]));
    let malformed = "t5serve_extract_entities_total{outcome=\"malformed\"}";
    assert_eq!(metric(&client, server.addr, malformed).await, 2.0);
    // One string in, one object out.
    let (status, one) = post(&client, &url, json!({"inputs": "vier", "template": "language: {text}"})).await;
    assert_eq!((status, one["output"].as_str()), (200, Some("German")));
    for (body, needle) in [
        (json!({"inputs": "x", "template": "no slot"}), "{text}"),
        (json!({"inputs": "x", "types": ["NUMBER", " "]}), "types[1]"),
        (json!({"inputs": "x", "parameters": {"details": true}}), "details"),
        (json!({"inputs": []}), "inputs"),
    ] {
        let (status, err) = post(&client, &url, body.clone()).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert!(err["error"].as_str().unwrap().contains(needle), "{body}: {err}");
    }
    server.shutdown().await.unwrap();
}
