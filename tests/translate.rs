//! /v1/translate on the tiny model: prompts per language pair, unsupported pairs, the language
//! list, and long texts split at sentence boundaries and rejoined.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn translate_builds_t5_prompts_and_lists_its_pairs() {
    let g = golden();
    let server = start_server(tiny_model()).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    // golden case 2 is "translate English to German: The house is wonderful."
    let case = &g.cases[2];
    let params = json!({"max_new_tokens": g.steps, "min_new_tokens": g.steps});
    let body = json!({"text": ["The house is wonderful."], "source_lang": "English", "target_lang": "German", "parameters": params});
    let (status, v) = post(&client, &format!("{base}/v1/translate"), body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["translations"], json!([case.text.trim()]));
    let langs: Value = client.get(format!("{base}/v1/translate/languages")).send().await.unwrap().json().await.unwrap();
    assert!(langs["pairs"].as_array().unwrap().contains(&json!({"source": "English", "target": "German"})));
    let (status, v) = post(
        &client,
        &format!("{base}/v1/translate"),
        json!({"text": "x", "source_lang": "German", "target_lang": "Klingon"}),
    )
    .await;
    assert_eq!(status, 422);
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("not a supported language pair") && msg.contains("English -> German"), "{msg}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_text_is_split_at_sentences_translated_as_a_batch_and_rejoined() {
    let server = start_server_with(tiny_model(), |c| c.max_input_tokens = 16).await;
    let url = format!("http://{}/v1/translate", server.addr);
    let client = reqwest::Client::new();
    let sentences =
        ["The house is wonderful.", "The garden is small but very green.", "We will come back next summer!"];
    let params = json!({"max_new_tokens": 6, "min_new_tokens": 6});
    let text = sentences.join(" ");
    let (status, v) = post(
        &client,
        &url,
        json!({"text": text, "source_lang": "English", "target_lang": "French", "parameters": params}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Each sentence alone: with the prompt they take 11, 14 and 13 tokens; two together 19 or
    // more, over the limit of 16.
    let (status, alone) = post(
        &client,
        &url,
        json!({"text": sentences, "source_lang": "English", "target_lang": "French", "parameters": params}),
    )
    .await;
    assert_eq!(status, 200, "{alone}");
    let parts: Vec<&str> = alone["translations"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(v["translations"][0], parts.join(" "));
    // A single sentence longer than the limit cannot be split: 422, naming the limit.
    let long = format!("{}.", "word ".repeat(60).trim());
    let (status, v) =
        post(&client, &url, json!({"text": long, "source_lang": "English", "target_lang": "French"})).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max_input_tokens"), "{v}");
    server.shutdown().await.unwrap();
}
