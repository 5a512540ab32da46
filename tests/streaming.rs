//! Stop sequences, per-token details, and Server-Sent Events streaming (with disconnects),
//! through HTTP on the tiny model, against transformers' golden ids and text.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Reads SSE events (name, JSON data) until `limit` events or the end of the stream.
async fn read_events(r: &mut reqwest::Response, limit: usize) -> Vec<(String, Value)> {
    let mut buf = String::new();
    let mut events = Vec::new();
    while events.len() < limit {
        let Some(chunk) = r.chunk().await.unwrap() else { break };
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                events.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sequences_cut_exactly_where_the_stop_string_ends() {
    let g = golden();
    let server = start_server(tiny_model()).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let case = &g.cases[2];
    // One stop inside a word, one spanning two tokens; the earliest end wins.
    for stop in ["began", "ficientExa", "hinder"] {
        let at = case.text.find(stop).expect("the stop occurs in the golden text") + stop.len();
        let body = json!({"inputs": case.prompt, "parameters": {"max_new_tokens": g.steps, "min_new_tokens": g.steps, "stop": [stop, "never-there"]}});
        let (status, v) = post(&client, &url, body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["generated_text"], case.text[..at], "stop {stop:?}");
        assert_eq!(v["finish_reason"], "stop");
    }
    // A stop that never occurs changes nothing.
    let body = json!({"inputs": case.prompt, "parameters": {"max_new_tokens": g.steps, "min_new_tokens": g.steps, "stop": ["zzzz"]}});
    let (_, v) = post(&client, &url, body).await;
    assert_eq!((v["generated_text"].as_str(), v["finish_reason"].as_str()), (Some(case.text.as_str()), Some("length")));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_list_every_token_with_its_logprob() {
    let g = golden();
    let server = start_server(tiny_model()).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let case = &g.cases[4];
    let body = json!({"inputs": case.prompt, "parameters": {"max_new_tokens": g.steps, "min_new_tokens": g.steps, "details": true}});
    let (status, v) = post(&client, &url, body).await;
    assert_eq!(status, 200, "{v}");
    let tokens = v["details"]["tokens"].as_array().unwrap();
    let ids: Vec<u32> = tokens.iter().map(|t| t["id"].as_u64().unwrap() as u32).collect();
    assert_eq!(ids, case.ids);
    let text: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(text, case.text);
    // Log-probabilities of a 32k vocabulary with flat logits: negative and far from 0.
    assert!(tokens.iter().all(|t| t["logprob"].as_f64().unwrap() < -1.0), "{tokens:?}");
    assert!(tokens.iter().all(|t| t["special"] == false));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_tokens_add_up_to_the_final_text() {
    let g = golden();
    let server = start_server(tiny_model()).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    for case in g.cases.iter().filter(|c| !c.prompt.is_empty()) {
        let body = json!({"inputs": case.prompt, "stream": true, "parameters": {"max_new_tokens": g.steps, "min_new_tokens": g.steps}});
        let mut r = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let events = read_events(&mut r, usize::MAX).await;
        let (tokens, done): (Vec<_>, Vec<_>) = events.iter().partition(|(n, _)| n == "token");
        let ids: Vec<u32> = tokens.iter().map(|(_, v)| v["token"]["id"].as_u64().unwrap() as u32).collect();
        let text: String = tokens.iter().map(|(_, v)| v["token"]["text"].as_str().unwrap()).collect();
        assert_eq!(ids, case.ids, "{:?}", case.prompt);
        assert_eq!(text, case.text, "{:?}", case.prompt);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, "done");
        assert_eq!(done[0].1["generated_text"], case.text);
        assert_eq!(done[0].1["usage"]["generated_tokens"], g.steps);
    }
    // A list input cannot stream.
    let (status, v) = post(&client, &url, json!({"inputs": ["a", "b"], "stream": true})).await;
    assert_eq!((status, v["error_type"].as_str()), (422, Some("validation")));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_disconnects_frees_its_row() {
    let server = start_server_with(tiny_model(), |c| c.max_new_tokens_limit = 60_000).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let body =
        json!({"inputs": "Hi", "stream": true, "parameters": {"max_new_tokens": 50_000, "min_new_tokens": 50_000}});
    let mut r = client.post(&url).json(&body).send().await.unwrap();
    let first = read_events(&mut r, 5).await;
    assert_eq!(first.len(), 5);
    assert_eq!(metric(&client, server.addr, "t5serve_active_rows").await, 1.0);
    drop(r);
    let until = Instant::now() + Duration::from_secs(10);
    while metric(&client, server.addr, "t5serve_active_rows").await != 0.0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&client, server.addr, "t5serve_active_rows").await, 0.0);
    assert_eq!(metric(&client, server.addr, "t5serve_requests_cancelled_total").await, 1.0);
    server.shutdown().await.unwrap();
}
