//! End-to-end oracle on the trained default model (models/t5-numbers), through HTTP: the server
//! must reproduce what an independent implementation (optimum's ORTModelForSeq2SeqLM with
//! transformers' generate) produces from the same files on the same CPU, reach its exact match on
//! the fixture prompts, and give the same outputs batched and one by one. A bug in the cache,
//! padding or tokenizer shows up here as a drop in accuracy. In a batch, at most BATCH_MOVED_PCT
//! of the answers may move (int8 activation scales are computed per batch).
//!
//! The bundled files are int8 (dynamic quantization); the accuracy guard holds the served int8
//! model to within 1 point of the fp32 export's exact match on the same prompts.
//!
//! The fixtures (`tests/data/numbers_heldout.json`, `numbers_decoding.json`) and the model card's
//! figures are written by `scripts/export_default_model.py` from the bundled files. int8 figures
//! depend on the CPU's int8 kernel: the tests read the reference `scripts/cpu_reference.py`
//! computed on this machine (`common::cpu_fixture` says when the committed ones hold instead).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Fixture {
    max_new_tokens: usize,
    exact_match: BTreeMap<String, f64>,
    /// optimum's exact match with the fp32 export on the same prompts.
    exact_match_fp32: BTreeMap<String, f64>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    task: String,
    prompt: String,
    target: String,
    optimum: String,
    near_tie: bool,
}

fn bundled() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/t5-numbers")
}

fn fixture() -> Fixture {
    serde_json::from_str(&common::cpu_fixture("numbers_heldout.json")).expect("fixture parses")
}

async fn generate(client: &reqwest::Client, url: &str, inputs: Value, max_new_tokens: usize) -> Value {
    let r = client
        .post(url)
        .json(&json!({"inputs": inputs, "parameters": {"max_new_tokens": max_new_tokens}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_model_reproduces_optimum_and_its_model_card() {
    let fx = fixture();
    let card: Value = serde_json::from_str(&std::fs::read_to_string(bundled().join("eval.json")).unwrap()).unwrap();
    let server = common::start_server(bundled()).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let models: Value =
        client.get(format!("http://{}/v1/models", server.addr)).send().await.unwrap().json().await.unwrap();
    let quantization: Value =
        serde_json::from_str(&std::fs::read_to_string(bundled().join("quantization.json")).unwrap()).unwrap();
    assert_eq!(models["models"][0]["weights"], "int8");
    assert_eq!(models["models"][0]["quantization"], quantization);
    assert_eq!(quantization["weight_type"], "QInt8");

    // Interleave the tasks so that every batch mixes prompt lengths (and so padding).
    let mut by_task: BTreeMap<&str, Vec<&Case>> = BTreeMap::new();
    for c in &fx.cases {
        by_task.entry(&c.task).or_default().push(c);
    }
    assert!(by_task.values().all(|v| v.len() >= 50), "at least 50 prompts per task");
    let longest = by_task.values().map(Vec::len).max().unwrap();
    let order: Vec<&Case> =
        (0..longest).flat_map(|i| by_task.values().filter_map(move |v| v.get(i).copied())).collect();

    // One request per prompt, as the fixture was made (one prompt at a time).
    let mut single = Vec::with_capacity(order.len());
    for c in &order {
        let out = generate(&client, &url, json!(c.prompt), fx.max_new_tokens).await;
        single.push(out["generated_text"].as_str().unwrap().to_string());
    }

    // 1. Equal to optimum, except at recorded near-ties; at least 99% equal.
    let mut same = 0;
    for (c, got) in order.iter().zip(&single) {
        if *got == c.optimum {
            same += 1;
        } else {
            assert!(
                c.near_tie,
                "{:?}: server says {got:?}, optimum says {:?} (no near-tie recorded)",
                c.prompt, c.optimum
            );
        }
    }
    assert!(same * 100 >= order.len() * 99, "only {same} of {} equal optimum", order.len());

    // 2. Exact match per task equals optimum's on this CPU; the committed fixture's (made with a
    //    kernel that does not saturate) is the model card's.
    let committed: Fixture =
        serde_json::from_str(&std::fs::read_to_string(common::data_dir().join("numbers_heldout.json")).unwrap())
            .unwrap();
    for (task, cases) in &by_task {
        let hits = order.iter().zip(&single).filter(|(c, got)| c.task == *task && **got == c.target).count();
        let pct = 100.0 * hits as f64 / cases.len() as f64;
        let here = fx.exact_match[*task];
        assert!((pct - here).abs() < 1e-6, "{task}: server {pct}%, optimum on this CPU {here}%");
        let card_pct = card["eval"]["fixture"][*task].as_f64().unwrap();
        assert!((committed.exact_match[*task] - card_pct).abs() < 1e-6, "{task}: fixture and model card disagree");
        // The accuracy guard: int8, served, within 1 point of fp32 (optimum on the fp32 export).
        let fp32 = fx.exact_match_fp32[*task];
        println!("{task}: int8 served {pct:.1}%, fp32 {fp32:.1}%");
        assert!(pct >= fp32 - 1.0, "{task}: int8 {pct}% is more than 1 point below fp32 {fp32}%");
    }

    // 3. The same prompts, 32 per multi-input request, give exactly the single outputs.
    let mut batched = Vec::with_capacity(order.len());
    for chunk in order.chunks(32) {
        let prompts: Vec<&str> = chunk.iter().map(|c| c.prompt.as_str()).collect();
        let out = generate(&client, &url, json!(prompts), fx.max_new_tokens).await;
        for r in out.as_array().unwrap() {
            batched.push(r["generated_text"].as_str().unwrap().to_string());
        }
    }
    let moved: Vec<_> = order.iter().zip(&batched).zip(&single).filter(|((_, b), s)| b != s).collect();
    let (unlearned, moved): (Vec<_>, Vec<_>) = moved.into_iter().partition(|((c, _), _)| !common::learned(&c.task));
    let learned = order.iter().filter(|c| common::learned(&c.task)).count();
    println!("in a batch vs alone, tasks not learned yet ({:?}): {} answers moved", common::UNLEARNED, unlearned.len());
    let moved: Vec<(&str, &str, &str)> =
        moved.iter().map(|((c, b), s)| (c.prompt.as_str(), b.as_str(), s.as_str())).collect();
    println!("in a batch vs alone: {} of {learned} answers moved (prompt, batched, alone): {moved:?}", moved.len());
    assert!(common::few_moved(moved.len(), learned), "{} of {learned} answers moved: {moved:?}", moved.len());
    server.shutdown().await.unwrap();
}

#[derive(Deserialize)]
struct DecodingFixture {
    cases: Vec<DecodingCase>,
}

#[derive(Deserialize)]
struct DecodingCase {
    kind: String,
    prompt: String,
    parameters: Value,
    #[serde(default)]
    ids: Vec<u32>,
    #[serde(default)]
    sequences: Vec<Hyp>,
}

#[derive(Deserialize)]
struct Hyp {
    ids: Vec<u32>,
    score: f64,
}

/// min_new_tokens and beam search (EOS, length penalty, early stopping) on a model that really
/// ends its sequences, against transformers' generate on the same files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_new_tokens_and_beam_search_match_transformers_on_the_bundled_model() {
    let fx: DecodingFixture = serde_json::from_str(&common::cpu_fixture("numbers_decoding.json")).unwrap();
    let tokenizer = t5serve::model::TextTokenizer::from_file(&bundled().join("tokenizer.json")).unwrap();
    let server = common::start_server(bundled()).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let (mut min_cases, mut beam_cases, mut eos_beams) = (0, 0, 0);
    for case in &fx.cases {
        if case.kind == "min_new_tokens" {
            let mut params = case.parameters.clone();
            params["details"] = json!(true);
            let v: Value = client
                .post(&url)
                .json(&json!({"inputs": case.prompt, "parameters": params}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ids: Vec<u32> =
                v["details"]["tokens"].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap() as u32).collect();
            assert_eq!(ids, case.ids, "{:?}", case.prompt);
            assert!(ids.len() >= 6, "EOS suppressed until min_new_tokens");
            min_cases += 1;
        } else {
            let v: Value = client
                .post(&url)
                .json(&json!({"inputs": case.prompt, "parameters": case.parameters}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let got = v["sequences"].as_array().unwrap_or_else(|| panic!("{v}"));
            assert_eq!(got.len(), case.sequences.len());
            for (i, want) in case.sequences.iter().enumerate() {
                let text = tokenizer.decode(&want.ids).unwrap();
                let tied = |j: usize| case.sequences.get(j).is_some_and(|o| (o.score - want.score).abs() < 1e-4);
                let ok = [i.wrapping_sub(1), i, i + 1].into_iter().filter(|&j| j == i || tied(j)).any(|j| {
                    got.get(j).is_some_and(|g| {
                        g["generated_text"] == text.as_str() && (g["score"].as_f64().unwrap() - want.score).abs() < 1e-4
                    })
                });
                assert!(
                    ok,
                    "{:?} {}: hypothesis {i} {text:?} ({}) not in {got:?}",
                    case.prompt, case.parameters, want.score
                );
                if want.ids.last() == Some(&1) {
                    eos_beams += 1;
                }
            }
            beam_cases += 1;
        }
    }
    assert!(min_cases >= 10 && beam_cases >= 30 && eos_beams >= 30, "{min_cases} {beam_cases} {eos_beams}");
    server.shutdown().await.unwrap();
}

/// /v1/classify identifies the language and /v1/translate translates held-out numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_and_translate_reach_their_accuracy_on_held_out_numbers() {
    let fx = fixture();
    let server = common::start_server(bundled()).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    // Language identification with the model's default labels and template.
    let lang: Vec<&Case> = fx.cases.iter().filter(|c| c.task == "language").collect();
    assert!(lang.len() >= 100);
    let texts: Vec<&str> = lang.iter().map(|c| c.prompt.strip_prefix("language: ").unwrap()).collect();
    let mut right = 0;
    for (chunk, cases) in texts.chunks(25).zip(lang.chunks(25)) {
        let body = json!({"inputs": chunk, "labels": ["English", "German", "French", "Spanish"]});
        let v: Value =
            client.post(format!("{base}/v1/classify")).json(&body).send().await.unwrap().json().await.unwrap();
        for (r, c) in v.as_array().unwrap_or_else(|| panic!("{v}")).iter().zip(cases) {
            right += usize::from(r["label"] == c.target.as_str());
        }
    }
    let accuracy = 100.0 * right as f64 / lang.len() as f64;
    println!("language identification through /v1/classify: {accuracy:.1}% of {}", lang.len());
    assert!(accuracy >= 99.0, "{accuracy}");
    // Translation, English to German, through /v1/translate.
    let en_de: Vec<&Case> = fx.cases.iter().filter(|c| c.task == "en-de").collect();
    let texts: Vec<&str> =
        en_de.iter().map(|c| c.prompt.strip_prefix("translate English to German: ").unwrap()).collect();
    let mut right = 0;
    for (chunk, cases) in texts.chunks(25).zip(en_de.chunks(25)) {
        let body = json!({"text": chunk, "source_lang": "English", "target_lang": "German", "parameters": {"max_new_tokens": 40}});
        let v: Value =
            client.post(format!("{base}/v1/translate")).json(&body).send().await.unwrap().json().await.unwrap();
        for (t, c) in v["translations"].as_array().unwrap_or_else(|| panic!("{v}")).iter().zip(cases) {
            right += usize::from(t == c.target.as_str());
        }
    }
    let accuracy = 100.0 * right as f64 / en_de.len() as f64;
    println!("English to German through /v1/translate: {accuracy:.1}% of {}", en_de.len());
    assert!(accuracy >= 90.0, "{accuracy}");
    server.shutdown().await.unwrap();
}
