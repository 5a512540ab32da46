//! Several models in one process (issue 21): the committed tiny model and the bundled model side
//! by side, each answering exactly what its independent reference says (the tiny model's golden
//! outputs from transformers; the bundled model's optimum outputs computed on this CPU), one by
//! one and in a mixed concurrent load across both (the int8 bundled model to within
//! common::BATCH_MOVED_PCT there); requests route by `model`, an unknown id is a
//! 404 naming the served ones; a model that fails to load is reported while the others serve.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use common::{golden, post, tiny_model};
use serde_json::{Value, json};
use t5serve::config::{ModelList, ModelSpec};

fn bundled() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/t5-numbers")
}

fn spec(id: &str, path: PathBuf) -> ModelSpec {
    ModelSpec { id: Some(id.into()), path, ..Default::default() }
}

/// A request and the answer its reference gives.
struct Case {
    model: &'static str,
    body: Value,
    text: String,
}

/// The tiny model's golden cases and the bundled model's optimum cases (those without a near tie).
fn cases() -> Vec<Case> {
    let g = golden();
    let params = json!({"max_new_tokens": g.steps, "min_new_tokens": g.min_new_tokens});
    let mut out: Vec<Case> = g
        .cases
        .iter()
        .filter(|c| !c.prompt.is_empty())
        .map(|c| Case {
            model: "tiny",
            body: json!({"model": "tiny", "inputs": c.prompt, "parameters": params}),
            text: c.text.clone(),
        })
        .collect();
    let fx: Value = serde_json::from_str(&common::cpu_fixture("numbers_heldout.json")).unwrap();
    let max = fx["max_new_tokens"].clone();
    for c in fx["cases"].as_array().unwrap().iter().filter(|c| c["near_tie"] == false).take(120) {
        out.push(Case {
            model: "numbers",
            body: json!({"model": "numbers", "inputs": c["prompt"], "parameters": {"max_new_tokens": max}}),
            text: c["optimum"].as_str().unwrap().to_string(),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_in_one_process_each_answer_as_their_reference() {
    let models = ModelList(vec![spec("tiny", tiny_model()), spec("numbers", bundled())]);
    let server = common::start_server_with(tiny_model(), |c| c.model = models).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();

    let listed: Value = client.get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["numbers", "tiny"]);
    assert_eq!(listed["default"], "tiny");
    assert!(listed["models"].as_array().unwrap().iter().all(|m| m["state"] == "ready"), "{listed}");

    // One by one.
    let cases = cases();
    assert!(cases.iter().filter(|c| c.model == "tiny").count() >= 3);
    assert!(cases.iter().filter(|c| c.model == "numbers").count() >= 100);
    // Requests answered 200 by /v1/generate, by model: the metrics must count the same.
    let mut answered = BTreeMap::<&str, f64>::new();
    for c in &cases {
        *answered.entry(c.model).or_default() += 1.0;
        let (status, body) = post(&client, &format!("{base}/v1/generate"), c.body.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["generated_text"], c.text.as_str(), "{} {}", c.model, c.body["inputs"]);
    }
    // No model: the default (the first configured).
    let first = cases.iter().find(|c| c.model == "tiny").unwrap();
    let mut unnamed = first.body.clone();
    unnamed.as_object_mut().unwrap().remove("model");
    let (_, body) = post(&client, &format!("{base}/v1/generate"), unnamed).await;
    assert_eq!(body["generated_text"], first.text.as_str());
    *answered.entry("tiny").or_default() += 1.0;

    // A mixed concurrent load across both: several hundred requests, 32 at a time, interleaved.
    for (model, n) in mixed_load(&client, &base, cases).await {
        *answered.entry(model).or_default() += n;
    }
    // The metrics by model: each model's requests, and work done by each model's scheduler.
    let metric = |q: String| {
        let client = client.clone();
        async move { common::metric(&client, server.addr, &q).await }
    };
    for (model, n) in &answered {
        let q = format!("t5serve_requests_total{{route=\"/v1/generate\",status=\"200\",model=\"{model}\"}}");
        assert_eq!(metric(q).await, *n, "{model}");
        for name in ["t5serve_generated_tokens_total", "t5serve_batch_size_count", "t5serve_input_tokens_total"] {
            assert!(metric(format!("{name}{{model=\"{model}\"}}")).await > 0.0, "{name} {model}");
        }
        let state = format!("t5serve_model_state{{model=\"{model}\",state=\"ready\"}}");
        assert_eq!(metric(state).await, 1.0, "{model}");
    }
    let queued = common::metric(&client, server.addr, "t5serve_time_to_first_token_seconds_count").await;
    let by_model = metric("t5serve_time_to_first_token_seconds_count{model=\"tiny\"}".into()).await
        + metric("t5serve_time_to_first_token_seconds_count{model=\"numbers\"}".into()).await;
    assert_eq!(queued, by_model, "every request's first token counts under its model");

    // An unknown id: 404 naming the id and the served models.
    let (status, body) = post(&client, &format!("{base}/v1/generate"), json!({"model": "nope", "inputs": "x"})).await;
    assert_eq!(status, 404, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("\"nope\"") && message.contains("numbers, tiny"), "{message}");
    // An id no model has never becomes a label value.
    let unknown = "t5serve_requests_total{route=\"/v1/generate\",status=\"404\",model=\"\"}";
    assert_eq!(common::metric(&client, server.addr, unknown).await, 1.0);
    // The task routes route too: the bundled model's own label set and language pairs.
    let (status, body) =
        post(&client, &format!("{base}/v1/classify"), json!({"model": "numbers", "inputs": "vierhundert"})).await;
    assert_eq!((status, body["label"].as_str()), (200, Some("German")), "{body}");
    let (status, body) = post(
        &client,
        &format!("{base}/v1/translate"),
        json!({"model": "numbers", "text": "forty-two", "source_lang": "English", "target_lang": "German"}),
    )
    .await;
    assert_eq!((status, body["translations"][0].as_str()), (200, Some("zweiundvierzig")), "{body}");
    server.shutdown().await.unwrap();
}

/// Several hundred requests across both models, 32 at a time, interleaved; returns how many each
/// model answered. The tiny model is fp32: exact in any batch. The bundled model is int8 with
/// activation scales per batch, so a few of its answers may move with their batch-mates
/// (common::BATCH_MOVED_PCT).
async fn mixed_load(client: &reqwest::Client, base: &str, cases: Vec<Case>) -> BTreeMap<&'static str, f64> {
    let cases = Arc::new(cases);
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for round in 0..3 {
        for i in 0..cases.len() {
            let (cases, client, base, gate) = (cases.clone(), client.clone(), base.to_string(), gate.clone());
            // Alternate the models: tiny cases are few, so they recur.
            let k = if (i + round) % 2 == 0 { i % 5 } else { i };
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                let c = &cases[k.min(cases.len() - 1)];
                let (status, body) = post(&client, &format!("{base}/v1/generate"), c.body.clone()).await;
                (status, body["generated_text"] == c.text.as_str(), c.model, c.body["inputs"].clone())
            }));
        }
    }
    assert!(tasks.len() >= 300, "{}", tasks.len());
    let (mut answered, mut held, mut moved) = (BTreeMap::new(), 0, Vec::new());
    for t in tasks {
        let (status, same, model, inputs) = t.await.unwrap();
        assert_eq!(status, 200);
        if model == "tiny" {
            assert!(same, "{model} {inputs} under a mixed load");
        } else {
            held += 1;
            if !same {
                moved.push(inputs);
            }
        }
        *answered.entry(model).or_default() += 1.0;
    }
    assert!(held >= 150, "{held}");
    assert!(
        common::few_moved(moved.len(), held),
        "{} of {held} numbers answers moved under a mixed load: {moved:?}",
        moved.len()
    );
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_fails_to_load_is_reported_and_the_others_serve() {
    let broken = std::env::temp_dir().join(format!("t5serve-broken-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&broken);
    std::fs::create_dir_all(&broken).unwrap();
    for f in std::fs::read_dir(tiny_model()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, broken.join(f.file_name().unwrap())).unwrap();
    }
    // A corrupt graph.
    std::fs::write(broken.join("decoder_with_past_model.onnx"), b"not an onnx graph").unwrap();
    // As a config file names them: [[models]] tables, the first with settings of its own.
    let file = format!(
        "[[models]]\nid = \"tiny\"\npath = {:?}\nmax_input_tokens = 100\nmax_labels = 3\n\
         [[models]]\nid = \"broken\"\npath = {:?}\n",
        tiny_model(),
        broken
    );
    let file: t5serve::Config = toml::from_str(&file).unwrap();
    let server = common::start_server_with(tiny_model(), |c| c.model = file.model).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();

    let listed: Value = client.get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    let entries = listed["models"].as_array().unwrap();
    let failed = entries.iter().find(|m| m["id"] == "broken").expect("the failed model is listed");
    assert_eq!(failed["state"], "failed");
    assert!(failed["reason"].as_str().unwrap().contains("decoder_with_past_model.onnx"), "{failed}");
    assert_eq!(entries.iter().find(|m| m["id"] == "tiny").unwrap()["state"], "ready");
    let metric = |q: &'static str| common::metric(&client, server.addr, q);
    assert_eq!(metric("t5serve_model_state{model=\"broken\",state=\"failed\"}").await, 1.0);
    assert_eq!(metric("t5serve_model_state{model=\"tiny\",state=\"ready\"}").await, 1.0);
    assert_eq!(metric("t5serve_model_loads_total{model=\"broken\",result=\"failed\"}").await, 1.0);
    assert_eq!(metric("t5serve_model_loads_total{model=\"tiny\",result=\"loaded\"}").await, 1.0);
    // The tiny model's own settings.
    let tiny: Value = client.get(format!("{base}/v1/models/tiny")).send().await.unwrap().json().await.unwrap();
    assert_eq!((&tiny["limits"]["max_input_tokens"], &tiny["limits"]["max_labels"]), (&json!(100), &json!(3)));
    let four = json!({"inputs": "x", "labels": ["a", "b", "c", "d"]});
    let (status, body) = post(&client, &format!("{base}/v1/classify"), four).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("max_labels"), "{body}");

    let g = golden();
    let case = g.cases.iter().find(|c| !c.prompt.is_empty()).unwrap();
    let params = json!({"max_new_tokens": g.steps, "min_new_tokens": g.min_new_tokens});
    let (status, body) =
        post(&client, &format!("{base}/v1/generate"), json!({"inputs": case.prompt, "parameters": params})).await;
    assert_eq!((status, body["generated_text"].as_str()), (200, Some(case.text.as_str())), "{body}");
    let (status, body) = post(&client, &format!("{base}/v1/generate"), json!({"model": "broken", "inputs": "x"})).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("failed to load"), "{body}");
    let ready = client.get(format!("{base}/health/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(&broken).unwrap();
}

/// The bundled model's optimum cases as /v1/generate requests for the model `numbers`.
fn numbers_cases(n: usize) -> Vec<(Value, String)> {
    cases().into_iter().filter(|c| c.model == "numbers").take(n).map(|c| (c.body, c.text)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_loaded_unloaded_and_reloaded_by_name() {
    let repo = std::env::temp_dir().join(format!("t5serve-repo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(&repo).unwrap();
    std::os::unix::fs::symlink(bundled(), repo.join("numbers")).unwrap();
    let server = common::start_server_with(tiny_model(), |c| c.model_repository = Some(repo.clone())).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let cases = numbers_cases(40);
    let generate = format!("{base}/v1/generate");

    // In the repository, not loaded yet.
    let (status, body) = post(&client, &generate, cases[0].0.clone()).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(&client, &format!("{base}/v1/models/nothing-here/load"), json!({})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(&client, &format!("{base}/v1/models/numbers/load"), json!({})).await;
    assert_eq!((status, &body["state"], &body["reloaded"]), (200, &json!("ready"), &json!(false)), "{body}");
    for (req, text) in &cases[..5] {
        let (status, body) = post(&client, &generate, req.clone()).await;
        assert_eq!((status, body["generated_text"].as_str()), (200, Some(text.as_str())), "{body}");
    }
    let state: Value = client.get(format!("{base}/v1/models/numbers")).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["state"], "ready");

    // Unload while 20 requests are in flight: all 20 complete, then 404.
    let long = |i: usize| json!({"model": "numbers", "inputs": cases[i].0["inputs"], "parameters": {"max_new_tokens": 48, "min_new_tokens": 48}});
    let in_flight: Vec<_> = (0..20)
        .map(|i| {
            let (client, url, body) = (client.clone(), generate.clone(), long(i));
            tokio::spawn(async move { post(&client, &url, body).await })
        })
        .collect();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let rows = common::metric(&client, server.addr, "t5serve_queue_size").await
            + common::metric(&client, server.addr, "t5serve_active_rows").await;
        if rows >= 20.0 {
            break;
        }
        assert!(std::time::Instant::now() < until, "the 20 requests never were in flight together");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (status, body) = post(&client, &format!("{base}/v1/models/numbers/unload"), json!({})).await;
    assert_eq!((status, &body["state"]), (200, &json!("unloaded")), "{body}");
    for t in in_flight {
        let (status, body) = t.await.unwrap();
        assert_eq!((status, &body["usage"]["generated_tokens"]), (200, &json!(48)), "{body}");
    }
    let (status, body) = post(&client, &generate, cases[0].0.clone()).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("not served"), "{body}");
    let listed: Value = client.get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    assert!(listed["models"].as_array().unwrap().iter().all(|m| m["id"] != "numbers"), "{listed}");
    let (status, _) = post(&client, &format!("{base}/v1/models/tiny-t5/unload"), json!({})).await;
    assert_eq!(status, 409, "the default model stays");
    // Its state is gone from the metrics; its counters stay (totals never go back).
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("t5serve_model_state{model=\"numbers\""), "{text}");
    let answered = "t5serve_requests_total{route=\"/v1/generate\",status=\"200\",model=\"numbers\"}";
    assert_eq!(common::metric(&client, server.addr, answered).await, 25.0);

    // Load again: it answers again.
    let (status, body) = post(&client, &format!("{base}/v1/models/numbers/load"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&client, &generate, cases[1].0.clone()).await;
    assert_eq!((status, body["generated_text"].as_str()), (200, Some(cases[1].1.as_str())), "{body}");

    // Reload under load: no request fails, and every answer is the reference's.
    let cases = Arc::new(cases);
    let load: Vec<_> = (0..8)
        .map(|w| {
            let (client, url, cases) = (client.clone(), generate.clone(), cases.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..15 {
                    let (req, text) = &cases[(w * 15 + i) % cases.len()];
                    let (status, body) = post(&client, &url, req.clone()).await;
                    if status != 200 || body["generated_text"] != text.as_str() {
                        failures.push(format!("{status} {body}"));
                    }
                }
                failures
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (status, body) = post(&client, &format!("{base}/v1/models/numbers/load"), json!({})).await;
    assert_eq!((status, &body["reloaded"]), (200, &json!(true)), "{body}");
    for t in load {
        let failures = t.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    server.shutdown().await.unwrap();
    std::fs::remove_dir_all(&repo).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_model_cannot_take_a_quiet_models_share_of_admission() {
    let models = ModelList(vec![spec("numbers", bundled()), spec("tiny", tiny_model())]);
    let server = common::start_server_with(tiny_model(), |c| {
        c.model = models;
        c.max_concurrent_requests = 4;
    })
    .await;
    let generate = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    // Two models under max_concurrent_requests = 4: each may hold 3 (pipeline::model_share).
    // Three long streams hold the busy model's share.
    let long = json!({"model": "numbers", "inputs": "translate English to German: seven", "stream": true,
                      "parameters": {"max_new_tokens": 512, "min_new_tokens": 512}});
    let mut held = Vec::new();
    for _ in 0..3 {
        let r = client.post(&generate).json(&long).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        held.push(r);
    }
    let (status, body) =
        post(&client, &generate, json!({"model": "numbers", "inputs": "translate English to German: one"})).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"].as_str().unwrap().contains("share"), "{body}");
    // The quiet model still answers, exactly.
    let g = golden();
    let case = g.cases.iter().find(|c| !c.prompt.is_empty()).unwrap();
    let params = json!({"max_new_tokens": g.steps, "min_new_tokens": g.min_new_tokens});
    let (status, body) =
        post(&client, &generate, json!({"model": "tiny", "inputs": case.prompt, "parameters": params})).await;
    assert_eq!((status, body["generated_text"].as_str()), (200, Some(case.text.as_str())), "{body}");
    drop(held);
    server.shutdown().await.unwrap();
}

/// The memory budget (`max_batch_memory_mb`) is the process's: a burst on one model holds at
/// most its share (all but the other model's reserve of a quarter), the quiet model's rows
/// start meanwhile, and every byte is given back when the rows are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_one_model_cannot_take_the_whole_memory_budget() {
    const MIB: f64 = (1 << 20) as f64;
    let models = ModelList(vec![spec("numbers", bundled()), spec("tiny", tiny_model())]);
    // 4 MiB: a row of the bundled model with a short input and 48 new tokens reserves about
    // 0.4 MiB, so each of its two lanes alone could take 2 MiB, both together all 4.
    let server = common::start_server_with(tiny_model(), |c| {
        c.model = models;
        c.max_batch_memory_mb = 4;
        c.decode_lanes = 2;
    })
    .await;
    let generate = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let cases = numbers_cases(40);
    let burst: Vec<_> = cases
        .iter()
        .map(|(req, _)| {
            let body = json!({"model": "numbers", "inputs": req["inputs"], "parameters": {"max_new_tokens": 48, "min_new_tokens": 48}});
            let (client, url) = (client.clone(), generate.clone());
            tokio::spawn(async move { post(&client, &url, body).await })
        })
        .collect();
    let metric = |q: &'static str| common::metric(&client, server.addr, q);
    let numbers_held = "t5serve_memory_reserved_bytes{model=\"numbers\"}";
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while metric("t5serve_queue_size{model=\"numbers\"}").await < 10.0 {
        assert!(std::time::Instant::now() < until, "the burst never queued up");
    }
    let mut most: f64 = 0.0;
    // The quiet model answers, exactly, while the burst still runs and queues.
    let g = golden();
    let params = json!({"max_new_tokens": g.steps, "min_new_tokens": g.min_new_tokens});
    for case in g.cases.iter().filter(|c| !c.prompt.is_empty()).take(3) {
        most = most.max(metric(numbers_held).await);
        let body = json!({"model": "tiny", "inputs": case.prompt, "parameters": params});
        let (status, body) = post(&client, &generate, body).await;
        assert_eq!((status, body["generated_text"].as_str()), (200, Some(case.text.as_str())), "{body}");
        let waiting = metric("t5serve_queue_size{model=\"numbers\"}").await;
        assert!(waiting > 0.0, "the tiny model's rows waited for the burst to end");
    }
    let mut rounds = 0;
    while metric("t5serve_active_rows{model=\"numbers\"}").await > 0.0 {
        most = most.max(metric(numbers_held).await);
        rounds += 1;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for t in burst {
        let (status, body) = t.await.unwrap();
        assert_eq!((status, &body["usage"]["generated_tokens"]), (200, &json!(48)), "{body}");
    }
    // Two models: the other keeps 4 / (2 x 2) = 1 MiB; the burst holds at most 3.
    assert!(most > 0.0 && most <= 3.0 * MIB, "the burst held {most} bytes ({rounds} samples)");
    assert_eq!(common::wait_for_metric(&client, server.addr, "t5serve_memory_reserved_bytes", 0.0).await, 0.0);
    server.shutdown().await.unwrap();
}

/// A model's solo sessions (every core) run only while no lane of any model holds rows: one
/// quiet model's lone request must not spread over every core while another model is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solo_sessions_wait_while_another_model_is_busy() {
    let models = ModelList(vec![spec("a", tiny_model()), spec("b", tiny_model())]);
    let server = common::start_server_with(tiny_model(), |c| {
        c.model = models;
        c.decode_lanes = 2;
        c.solo_sessions = true;
    })
    .await;
    let generate = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let solo = |m: &'static str| {
        let client = client.clone();
        async move { common::metric(&client, server.addr, &format!("t5serve_solo_runs_total{{model=\"{m}\"}}")).await }
    };
    let short =
        |m: &str| json!({"model": m, "inputs": "Hello", "parameters": {"max_new_tokens": 8, "min_new_tokens": 8}});
    // Alone, a lone request runs on the solo sessions.
    let before = solo("b").await;
    let (status, _) = post(&client, &generate, short("b")).await;
    assert_eq!(status, 200);
    assert!(solo("b").await > before, "b alone takes its solo sessions");
    // While a decodes long streams, b's requests run on b's own lanes.
    let long = json!({"model": "a", "inputs": "Hello", "stream": true,
                      "parameters": {"max_new_tokens": 512, "min_new_tokens": 512}});
    let mut held = Vec::new();
    for _ in 0..2 {
        let r = client.post(&generate).json(&long).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        held.push(r);
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while common::metric(&client, server.addr, "t5serve_active_rows{model=\"a\"}").await < 2.0 {
        assert!(std::time::Instant::now() < until, "a's streams never decoded");
    }
    let before = solo("b").await;
    for _ in 0..5 {
        let (status, _) = post(&client, &generate, short("b")).await;
        assert_eq!(status, 200);
    }
    assert!(common::metric(&client, server.addr, "t5serve_active_rows{model=\"a\"}").await >= 2.0, "a stayed busy");
    assert_eq!(solo("b").await, before, "b took every core while a was busy");
    drop(held);
    server.shutdown().await.unwrap();
}
