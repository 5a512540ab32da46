//! Iteration-level batching with the masked decoder graph (tests/data/tiny-t5-masked): rows that
//! join a running batch at later steps produce exactly their solo (golden) tokens. The same holds
//! for a directory whose only cached-step graph is the masked one (no
//! decoder_with_past_model.onnx: the bundled model's layout).

mod common;

use common::*;
use serde_json::json;
use t5serve::generation::GenerationParams;
use t5serve::scheduler::batch::{Cohort, NoObserver};
use t5serve::scheduler::{Event, RowRequest};

fn masked_model() -> std::path::PathBuf {
    data_dir().join("tiny-t5-masked")
}

/// tiny-t5-masked without decoder_with_past_model.onnx (links to the committed files).
fn masked_only_model() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("t5serve-masked-only-{}", std::process::id()));
    if !dir.join("decoder_with_past_masked.onnx").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(masked_model()).unwrap() {
            let name = entry.unwrap().file_name();
            if name != "decoder_with_past_model.onnx" {
                let target = std::fs::canonicalize(masked_model().join(&name)).unwrap();
                std::os::unix::fs::symlink(target, dir.join(&name)).unwrap();
            }
        }
    }
    dir
}

#[test]
fn rows_joining_at_steps_0_4_and_7_equal_their_solo_runs() {
    rows_join_and_equal_solo(&masked_model());
}

#[test]
fn with_only_the_masked_graph_joined_rows_equal_solo_runs_and_batches_equal_the_plain_graph() {
    let dir = masked_only_model();
    let files = t5serve::model::ModelFiles::discover(&dir).unwrap();
    assert!(files.masked_only(), "{:?}", files.names());
    assert_eq!(files.names().iter().filter(|n| n.contains("decoder_with_past")).count(), 1, "{:?}", files.names());
    rows_join_and_equal_solo(&dir);
    // A batch of every golden prompt, without joins: every step goes through the masked graph
    // with an all-ones mask and equals the plain graph's run (same ids, logits within 1e-5).
    let g = golden();
    let inputs: Vec<Vec<u32>> = g.cases.iter().map(|c| c.input_ids.clone()).collect();
    let (mut masked_rec, mut plain_rec) = (Recorder::default(), Recorder::default());
    let masked = decode_batch(&load(&dir), &inputs, golden_params(&g), &mut masked_rec);
    let plain = decode_batch(&load(&tiny_model()), &inputs, golden_params(&g), &mut plain_rec);
    assert_eq!(masked, plain);
    for (row, steps) in &plain_rec.steps {
        for (step, want) in steps.iter().enumerate() {
            let got = &masked_rec.steps[row][step];
            let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff <= 1e-5, "row {row} step {step}: logits differ by {diff}");
        }
    }
}

fn rows_join_and_equal_solo(dir: &std::path::Path) {
    let g = golden();
    let model = load(dir);
    assert!(model.can_join(), "the masked graph is loaded");
    let params = golden_params(&g);
    // Three prompts of different lengths join at steps 0, 4 and 7.
    let picks = [2usize, 9, 4];
    let mut rxs = Vec::new();
    let mut main: Option<Cohort> = None;
    for step in 0..g.steps + 8 {
        let joining = match step {
            0 => Some(picks[0]),
            4 => Some(picks[1]),
            7 => Some(picks[2]),
            _ => None,
        };
        if let Some(i) = joining {
            let (row, rx) = RowRequest::new(g.cases[i].input_ids.clone(), params);
            rxs.push((i, rx));
            let (new, _) = Cohort::start(&model, vec![row], None, &mut NoObserver).unwrap();
            let new = new.expect("the row runs");
            match main.as_mut() {
                Some(m) => m.absorb(new).unwrap(),
                None => main = Some(new),
            }
        } else if let Some(m) = main.as_mut() {
            m.step(&model, &mut NoObserver).unwrap();
            if m.is_empty() {
                main = None;
            }
        }
    }
    assert!(main.is_none(), "every row finished");
    for (i, mut rx) in rxs {
        let mut ids = Vec::new();
        while let Ok(Event::Token { id, .. }) = rx.try_recv() {
            ids.push(id);
        }
        assert_eq!(ids, g.cases[i].ids, "row {i} joined later and must equal its solo run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_join_one_batch_and_equal_their_solo_outputs() {
    let g = golden();
    let tokenizer = t5serve::model::TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    let server = start_server(masked_model()).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let cases: Vec<&GoldenCase> = g.cases.iter().filter(|c| !c.prompt.is_empty()).collect();
    let mut tasks = Vec::new();
    for i in 0..32usize {
        let case = cases[i % cases.len()];
        let n = 1 + (i * 7) % g.steps;
        let want = tokenizer.decode(&case.ids[..n]).unwrap();
        let (client, url, prompt) = (client.clone(), url.clone(), case.prompt.clone());
        tasks.push(tokio::spawn(async move {
            // Staggered arrivals: later requests join the running batch.
            tokio::time::sleep(std::time::Duration::from_millis((i as u64 % 8) * 3)).await;
            let body = json!({"inputs": prompt, "parameters": {"max_new_tokens": n, "min_new_tokens": n}});
            let (status, v) = post(&client, &url, body).await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["generated_text"], want, "request {i} ({prompt:?}, {n} tokens)");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metric(&client, server.addr, "t5serve_active_rows").await != 0.0 && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&client, server.addr, "t5serve_kv_cache_bytes").await, 0.0);
    server.shutdown().await.unwrap();
}

#[test]
fn the_joined_batch_trims_padding_nobody_attends_to() {
    let g = golden();
    let model = load(&masked_model());
    // Row a decodes 12 tokens; row b joins after a's 10th, so it is left-padded by 9 positions.
    let (a, _rx_a) = RowRequest::new(g.cases[3].input_ids.clone(), GenerationParams::greedy(12, 12));
    let (mut main, _) = Cohort::start(&model, vec![a], None, &mut NoObserver).unwrap();
    let m = main.as_mut().unwrap();
    for _ in 0..9 {
        m.step(&model, &mut NoObserver).unwrap();
    }
    let (b, mut rx_b) = RowRequest::new(g.cases[5].input_ids.clone(), GenerationParams::greedy(20, 20));
    let (new, _) = Cohort::start(&model, vec![b], None, &mut NoObserver).unwrap();
    m.absorb(new.unwrap()).unwrap();
    assert_eq!(m.decoder_len(), 10);
    m.step(&model, &mut NoObserver).unwrap();
    m.step(&model, &mut NoObserver).unwrap();
    // a has finished; b attends to 3 positions of 12, and the 9 padded ones are dropped.
    assert_eq!(m.len(), 1);
    assert_eq!(m.decoder_len(), 3);
    while !m.is_empty() {
        m.step(&model, &mut NoObserver).unwrap();
    }
    let mut ids = Vec::new();
    while let Ok(Event::Token { id, .. }) = rx_b.try_recv() {
        ids.push(id);
    }
    assert_eq!(ids, g.cases[5].ids[..20], "row b after joining and trimming equals its solo run");
}
