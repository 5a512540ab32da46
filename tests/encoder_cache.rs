//! The encoder cache (`encoder_cache_mb`): every route answers the same with it on and off, bit
//! for bit, on the three graph layouts (split, merged, masked); repeated inputs hit it; its byte
//! budget holds under a stream of distinct inputs, with evictions counted; and concurrent
//! requests that mix hits and misses get the answers they get alone. Tiny model, real server.

mod common;

use common::*;
use serde_json::{Value, json};

/// Drops what differs between two answers to the same request on its own (ids, times, and the
/// random seed a request without one is given).
fn strip(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            for key in ["id", "created", "seed", "system_fingerprint"] {
                map.remove(key);
            }
            for (_, child) in map.iter_mut() {
                *child = strip(child.take());
            }
        }
        Value::Array(items) => {
            for child in items.iter_mut() {
                *child = strip(child.take());
            }
        }
        _ => {}
    }
    v
}

/// One request of every route that runs the encoder, each with inputs of several lengths (so
/// that batches are padded) and inputs repeated within the request.
fn requests() -> Vec<(&'static str, Value)> {
    let texts = ["hello there", "a much longer input text that goes on and on", "seven", "hello there"];
    vec![
        ("/v1/generate", json!({"inputs": texts, "parameters": {"max_new_tokens": 6, "details": true, "seed": 3}})),
        (
            "/v1/generate",
            json!({"inputs": texts[1], "parameters": {"max_new_tokens": 5, "num_beams": 3, "num_return_sequences": 2}}),
        ),
        (
            "/v1/completions",
            json!({"prompt": [texts[0], texts[1]], "n": 3, "temperature": 1.0, "seed": 5, "max_tokens": 5, "logprobs": 2}),
        ),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": texts[1]}], "max_tokens": 4})),
        ("/v1/classify", json!({"inputs": texts, "labels": ["yes", "no way"]})),
        // The same inputs under a new label set.
        ("/v1/classify", json!({"inputs": texts, "labels": ["German", "English", "a long label"]})),
        ("/v1/translate", json!({"text": texts, "source_lang": "English", "target_lang": "German"})),
        ("/rerank", json!({"query": "what", "texts": texts, "raw_scores": true})),
        ("/embed", json!({"inputs": texts, "normalize": false})),
        ("/v1/embeddings", json!({"input": texts})),
        // TGI's route and the Open Inference Protocol's.
        ("/generate", json!({"inputs": texts[1], "parameters": {"max_new_tokens": 4, "details": true, "seed": 1}})),
        (
            "/v2/models/{model}/infer",
            json!({"inputs": [{"name": "text_input", "shape": [4], "datatype": "BYTES", "data": texts}],
                   "parameters": {"max_new_tokens": 4}}),
        ),
    ]
}

async fn answers(client: &reqwest::Client, addr: std::net::SocketAddr, model: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (path, body) in requests() {
        let path = path.replace("{model}", model);
        let (status, answer) = post(client, &format!("http://{addr}{path}"), body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        out.push(strip(answer));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_answers_the_same_with_the_cache_on_and_off() {
    let client = reqwest::Client::new();
    for model in [tiny_model(), tiny_model_merged(), data_dir().join("tiny-t5-masked")] {
        let off = start_server(model.clone()).await;
        let on = start_server_with(model.clone(), |c| c.encoder_cache_mb = 64).await;
        let id = model.file_name().unwrap().to_string_lossy().into_owned();
        let want = answers(&client, off.addr, &id).await;
        let first = answers(&client, on.addr, &id).await;
        let (hits, misses) = (
            metric(&client, on.addr, "t5serve_encoder_cache_hits_total").await,
            metric(&client, on.addr, "t5serve_encoder_cache_misses_total").await,
        );
        // A second round finds every input in the cache.
        let second = answers(&client, on.addr, &id).await;
        let hits_after = metric(&client, on.addr, "t5serve_encoder_cache_hits_total").await;
        let misses_after = metric(&client, on.addr, "t5serve_encoder_cache_misses_total").await;
        for (i, (path, _)) in requests().iter().enumerate() {
            assert_eq!(first[i], want[i], "{}: {path}, first round, cache on vs off", model.display());
            assert_eq!(second[i], want[i], "{}: {path}, second round (hits), cache on vs off", model.display());
        }
        assert!(misses > 0.0 && hits > 0.0, "{}: {hits} hits, {misses} misses", model.display());
        assert_eq!(misses_after, misses, "{}: nothing new in the second round", model.display());
        assert!(hits_after - hits >= 35.0, "{}: {} hits in the second round", model.display(), hits_after - hits);
        assert!(metric(&client, on.addr, "t5serve_encoder_cache_bytes").await > 0.0);
        // Off: nothing counted.
        assert_eq!(metric(&client, off.addr, "t5serve_encoder_cache_hits_total").await, 0.0);
        assert_eq!(metric(&client, off.addr, "t5serve_encoder_cache_bytes").await, 0.0);
        on.shutdown().await.unwrap();
        off.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_byte_budget_holds_under_distinct_inputs() {
    let client = reqwest::Client::new();
    // 1 MiB; a tiny-model entry holds its first step's 32,128 logits (~128 KiB), so about 8 fit.
    let server = start_server_with(tiny_model(), |c| c.encoder_cache_mb = 1).await;
    let url = format!("http://{}/v1/generate", server.addr);
    // The warm-up's requests went through it too.
    let misses = metric(&client, server.addr, "t5serve_encoder_cache_misses_total").await;
    for i in 0..30 {
        let text = format!("input number {i} of a stream");
        let (status, _) = post(&client, &url, json!({"inputs": text, "parameters": {"max_new_tokens": 2}})).await;
        assert_eq!(status, 200);
        let bytes = metric(&client, server.addr, "t5serve_encoder_cache_bytes").await;
        assert!(bytes > 0.0 && bytes <= (1 << 20) as f64, "{bytes} bytes after {i} inputs");
    }
    let evictions = metric(&client, server.addr, "t5serve_encoder_cache_evictions_total").await;
    assert!(evictions >= 15.0, "{evictions} evictions");
    assert_eq!(metric(&client, server.addr, "t5serve_encoder_cache_misses_total").await, misses + 30.0);
    // The most recent input is still there; the first one is long gone.
    let before = metric(&client, server.addr, "t5serve_encoder_cache_hits_total").await;
    post(&client, &url, json!({"inputs": "input number 29 of a stream", "parameters": {"max_new_tokens": 2}})).await;
    assert_eq!(metric(&client, server.addr, "t5serve_encoder_cache_hits_total").await, before + 1.0);
    post(&client, &url, json!({"inputs": "input number 0 of a stream", "parameters": {"max_new_tokens": 2}})).await;
    assert_eq!(metric(&client, server.addr, "t5serve_encoder_cache_misses_total").await, misses + 31.0);
    server.shutdown().await.unwrap();
}

/// Float answers of a request: the scores, the vectors, or the token log-probabilities.
fn numbers(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Number(n) => out.extend(n.as_f64()),
        Value::Array(items) => items.iter().for_each(|i| numbers(i, out)),
        Value::Object(map) => map.values().for_each(|i| numbers(i, out)),
        _ => {}
    }
}

/// Texts and token ids of an answer (everything but its floats).
fn shape(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => Value::Null,
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_hits_and_misses_get_the_answers_they_get_alone() {
    let client = reqwest::Client::new();
    let pool: Vec<String> = (0..12).map(|i| format!("text {i} {}", "and more ".repeat(i % 5))).collect();
    let request = |i: usize| -> (&'static str, Value) {
        let (a, b) = (&pool[i % pool.len()], &pool[(i * 7 + 3) % pool.len()]);
        match i % 3 {
            0 => ("/v1/classify", json!({"inputs": [a, b], "labels": ["yes", "no"]})),
            1 => ("/embed", json!({"inputs": [a, b]})),
            _ => ("/v1/generate", json!({"inputs": [a, b], "parameters": {"max_new_tokens": 4, "details": true}})),
        }
    };
    // Alone, one at a time, without the cache.
    let off = start_server(tiny_model()).await;
    let mut alone = Vec::new();
    for i in 0..36 {
        let (path, body) = request(i);
        alone.push(strip(post(&client, &format!("http://{}{path}", off.addr), body).await.1));
    }
    off.shutdown().await.unwrap();
    let on = start_server_with(tiny_model(), |c| c.encoder_cache_mb = 64).await;
    let tasks: Vec<_> = (0..36)
        .map(|i| {
            let (client, (path, body)) = (client.clone(), request(i));
            let url = format!("http://{}{path}", on.addr);
            tokio::spawn(async move { strip(post(&client, &url, body).await.1) })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let got = task.await.unwrap();
        // Batched with others, a float row's values move by float rounding (a padded batch goes
        // through other matrix shapes): a few 1e-7 on this model, measured.
        assert_eq!(shape(&got), shape(&alone[i]), "request {i}: {} vs {}", got, alone[i]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        numbers(&got, &mut a);
        numbers(&alone[i], &mut b);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5, "request {i}: {x} vs {y}");
        }
    }
    let hits = metric(&client, on.addr, "t5serve_encoder_cache_hits_total").await;
    let misses = metric(&client, on.addr, "t5serve_encoder_cache_misses_total").await;
    assert!(hits >= 20.0 && (12.0..=26.0).contains(&misses), "{hits} hits, {misses} misses");
    on.shutdown().await.unwrap();
}
