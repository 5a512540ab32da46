//! /v1/classify: label log-likelihoods against transformers' teacher forcing, probabilities,
//! validation, and a labelling batch split across requests. Tiny model, real server.

mod common;

use common::*;
use serde_json::json;

#[derive(serde::Deserialize)]
struct ScoreGolden {
    cases: Vec<ScoreCase>,
}

#[derive(serde::Deserialize)]
struct ScoreCase {
    input: String,
    label: String,
    label_ids: Vec<u32>,
    logprob: f32,
}

#[test]
fn label_log_likelihoods_match_transformers() {
    let g: ScoreGolden =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("golden_scores.json")).unwrap()).unwrap();
    assert!(g.cases.len() >= 9);
    let model = load(&tiny_model());
    let tokenizer = t5serve::model::TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    // All inputs with all their labels in one scoring batch, as the server does.
    let mut inputs: Vec<&str> = g.cases.iter().map(|c| c.input.as_str()).collect();
    inputs.dedup();
    let mut rxs = Vec::new();
    let mut rows = Vec::new();
    for input in &inputs {
        let labels: Vec<Vec<u32>> = g.cases.iter().filter(|c| c.input == *input).map(|c| c.label_ids.clone()).collect();
        for c in g.cases.iter().filter(|c| c.input == *input) {
            assert_eq!(tokenizer.encode(&c.label).unwrap(), c.label_ids);
        }
        let (row, rx) = t5serve::scheduler::RowRequest::scoring(tokenizer.encode(input).unwrap(), labels);
        rows.push(row);
        rxs.push(rx);
    }
    t5serve::scheduler::score::score_rows(&model, rows, None).unwrap();
    for (input, rx) in inputs.iter().zip(rxs.iter_mut()) {
        let t5serve::scheduler::Event::Scores(scores) = rx.try_recv().unwrap() else { panic!("scores expected") };
        let want: Vec<&ScoreCase> = g.cases.iter().filter(|c| c.input == *input).collect();
        for (s, w) in scores.iter().zip(want) {
            assert!(
                (s.logprob - w.logprob).abs() <= 1e-4,
                "{input:?} / {:?}: {} vs transformers {}",
                w.label,
                s.logprob,
                w.logprob
            );
            assert_eq!(s.tokens, w.label_ids.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classify_over_http_gives_calibrated_sorted_scores() {
    let g: ScoreGolden =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("golden_scores.json")).unwrap()).unwrap();
    let server = start_server(tiny_model()).await;
    let url = format!("http://{}/v1/classify", server.addr);
    let client = reqwest::Client::new();
    let labels = ["positive", "negative", "not sure at all"];
    let input = &g.cases[0].input;
    let (status, v) = post(&client, &url, json!({"inputs": input, "labels": labels})).await;
    assert_eq!(status, 200, "{v}");
    let scores = v["scores"].as_array().unwrap();
    let total: f64 = scores.iter().map(|s| s["score"].as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9, "probabilities sum to 1: {total}");
    assert!(scores.windows(2).all(|w| w[0]["score"].as_f64() >= w[1]["score"].as_f64()), "sorted high to low");
    assert_eq!(v["label"], scores[0]["label"]);
    // The softmax of transformers' log-likelihoods for this input.
    let lp: Vec<f64> = g.cases.iter().filter(|c| &c.input == input).map(|c| c.logprob as f64).collect();
    let z: f64 = lp.iter().map(|x| x.exp()).sum();
    for s in scores {
        let i = labels.iter().position(|l| *l == s["label"]).unwrap();
        assert!((s["score"].as_f64().unwrap() - lp[i].exp() / z).abs() < 1e-4);
    }
    // multi_label: independent probabilities against the best alternative.
    let (status, v) = post(&client, &url, json!({"inputs": [input], "labels": labels, "multi_label": true})).await;
    assert_eq!(status, 200, "{v}");
    let best = &v[0]["scores"][0];
    let i = labels.iter().position(|l| *l == best["label"]).unwrap();
    let other = lp.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, &x)| x).fold(f64::NEG_INFINITY, f64::max);
    assert!((best["score"].as_f64().unwrap() - 1.0 / (1.0 + (other - lp[i]).exp())).abs() < 1e-4);
    // Bad items are refused whole, naming what is wrong.
    for (body, msg) in [
        (json!({"inputs": ["ok", ""], "labels": labels}), "inputs[1]"),
        (json!({"inputs": "x", "labels": ["only"]}), "labels must hold between 2"),
        (json!({"inputs": "x", "labels": ["a", "a"]}), "labels[1]"),
        (json!({"inputs": "x", "labels": ["a", "b"], "template": "no slot"}), "{text}"),
        (json!({"inputs": "x"}), "labels are required"),
    ] {
        let (status, v) = post(&client, &url, body).await;
        assert_eq!(status, 422, "{v}");
        assert!(v["error"].as_str().unwrap().contains(msg), "{v}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_300_input_labelling_batch_split_across_requests_comes_back_in_order() {
    // All 300 rows are queued at once: the default 30 s queue deadline would make this test depend
    // on the machine's speed (under CPU emulation, 20-50 times slower, some requests got 504).
    let server = start_server_with(tiny_model(), |c| c.queue_deadline_ms = 600_000).await;
    let url = format!("http://{}/v1/classify", server.addr);
    let client = reqwest::Client::new();
    let labels = json!(["alpha", "beta", "gamma"]);
    let distinct: Vec<String> = (0..30).map(|i| format!("item number {i}: {}", "word ".repeat(i % 7))).collect();
    // The answer for each distinct input alone.
    let mut alone = Vec::new();
    for text in &distinct {
        let (status, v) = post(&client, &url, json!({"inputs": text, "labels": labels})).await;
        assert_eq!(status, 200, "{v}");
        alone.push(v);
    }
    let inputs: Vec<&String> = (0..300).map(|i| &distinct[(i * 7) % 30]).collect();
    let mut tasks = Vec::new();
    for chunk in inputs.chunks(30) {
        let (c, u) = (client.clone(), url.clone());
        let body = json!({"inputs": chunk, "labels": labels});
        tasks.push(tokio::spawn(async move { post(&c, &u, body).await }));
    }
    let mut results = Vec::new();
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert_eq!(status, 200, "{v}");
        results.extend(v.as_array().unwrap().clone());
    }
    assert_eq!(results.len(), 300);
    for (i, r) in results.iter().enumerate() {
        let want = &alone[(i * 7) % 30];
        assert_eq!(r["label"], want["label"], "input {i}");
        for (a, b) in r["scores"].as_array().unwrap().iter().zip(want["scores"].as_array().unwrap()) {
            assert_eq!(a["label"], b["label"], "input {i}");
            assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-5, "input {i}");
        }
    }
    server.shutdown().await.unwrap();
}
