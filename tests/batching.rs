//! Many clients, one decode loop: batch invariance under concurrency, cancellation on client
//! disconnect, admission (429), and queue deadlines (504). Real server, real socket.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use t5serve::model::TextTokenizer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_get_exactly_their_solo_outputs() {
    concurrent_requests_equal_golden(|_| {}).await;
}

/// The same with prefill inline on the decode thread (`prefill_thread = false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_get_exactly_their_solo_outputs_with_inline_prefill() {
    concurrent_requests_equal_golden(|c| c.prefill_thread = false).await;
}

/// The same over two decode lanes (each with its own sessions and prefill thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_get_exactly_their_solo_outputs_over_two_lanes() {
    concurrent_requests_equal_golden(|c| c.decode_lanes = 2).await;
}

async fn concurrent_requests_equal_golden(change: impl FnOnce(&mut t5serve::Config)) {
    let g = golden();
    let tokenizer = TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    let server = start_server_with(tiny_model(), change).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let cases: Vec<&GoldenCase> = g.cases.iter().filter(|c| !c.prompt.is_empty()).collect();
    // 32 requests: different prompts, lengths and max_new_tokens, all at once.
    let mut tasks = Vec::new();
    for i in 0..32usize {
        let case = cases[i % cases.len()];
        let n = 1 + (i * 7) % g.steps;
        let want = tokenizer.decode(&case.ids[..n]).unwrap();
        let (client, url, prompt) = (client.clone(), url.clone(), case.prompt.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"inputs": prompt, "parameters": {"max_new_tokens": n, "min_new_tokens": n}});
            let (status, v) = post(&client, &url, body).await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["generated_text"], want, "request {i} ({prompt:?}, {n} tokens)");
            assert_eq!(v["usage"]["generated_tokens"], n);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    assert_eq!(metric(&client, server.addr, "t5serve_kv_cache_bytes").await, 0.0, "nothing stays allocated");
    server.shutdown().await.unwrap();
}

/// With two lanes, a request alone runs on the solo sessions (a thread per core) and gives
/// exactly its golden tokens; without solo sessions it runs on its lane's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lone_request_runs_on_the_solo_sessions_with_its_golden_output() {
    let g = golden();
    let tokenizer = TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    let case = g.cases.iter().find(|c| !c.prompt.is_empty()).unwrap();
    let n = g.steps;
    let want = tokenizer.decode(&case.ids[..n]).unwrap();
    for solo in [true, false] {
        let server = start_server_with(tiny_model(), |c| {
            c.decode_lanes = 2;
            c.solo_sessions = solo;
        })
        .await;
        let client = reqwest::Client::new();
        let before = metric(&client, server.addr, "t5serve_solo_runs_total").await;
        let body = json!({"inputs": case.prompt, "parameters": {"max_new_tokens": n, "min_new_tokens": n}});
        let (status, v) = post(&client, &format!("http://{}/v1/generate", server.addr), body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["generated_text"], want, "solo_sessions = {solo}");
        // The prefill and each of the n - 1 cached steps are one run.
        let runs = metric(&client, server.addr, "t5serve_solo_runs_total").await - before;
        assert_eq!(runs, if solo { n as f64 } else { 0.0 }, "solo_sessions = {solo}");
        server.shutdown().await.unwrap();
    }
}

/// Two lanes with room for one row each: two long requests run at once, one in each lane, and
/// the gauges add up the lanes' shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_go_to_the_least_loaded_lane() {
    let server = start_server_with(tiny_model(), |c| {
        c.decode_lanes = 2;
        c.max_batch_size = 2;
        c.max_cohorts = 1;
        c.max_new_tokens_limit = 60_000;
    })
    .await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let long = 3000;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (c, u) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            post(&c, &u, json!({"inputs": "Hi", "parameters": {"max_new_tokens": long, "min_new_tokens": long}})).await
        }));
    }
    // In one lane the second request would queue behind the first (a lane's share is one row).
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 2.0).await, 2.0);
    assert_eq!(metric(&client, server.addr, "t5serve_queue_size").await, 0.0);
    assert!(metric(&client, server.addr, "t5serve_kv_cache_bytes").await > 0.0);
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["usage"]["generated_tokens"], long);
    }
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    assert_eq!(metric(&client, server.addr, "t5serve_kv_cache_bytes").await, 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_disconnects_frees_its_row_and_others_are_unaffected() {
    let g = golden();
    let server = start_server_with(tiny_model(), |c| c.max_new_tokens_limit = 60_000).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    // Long generations whose clients give up after 300 ms.
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    let mut dropped = Vec::new();
    for _ in 0..3 {
        let (c, u) = (impatient.clone(), url.clone());
        dropped.push(tokio::spawn(async move {
            let body = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 50_000, "min_new_tokens": 50_000}});
            c.post(&u).json(&body).send().await.is_err()
        }));
    }
    assert_eq!(
        wait_for_metric(&client, server.addr, "t5serve_active_rows", 3.0).await,
        3.0,
        "the long rows are decoding"
    );
    // A normal request alongside them gets its golden answer.
    let case = &g.cases[2];
    let body = json!({"inputs": case.prompt, "parameters": {"max_new_tokens": g.steps, "min_new_tokens": g.steps}});
    let (status, v) = post(&client, &url, body).await;
    assert_eq!(status, 200);
    assert_eq!(v["generated_text"], case.text);
    for d in dropped {
        assert!(d.await.unwrap(), "the impatient client timed out");
    }
    // Their rows leave the batch, and their cache is freed.
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    assert_eq!(metric(&client, server.addr, "t5serve_kv_cache_bytes").await, 0.0);
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_requests_cancelled_total", 3.0).await, 3.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beyond_max_concurrent_requests_exactly_the_excess_gets_429() {
    let (n, k) = (3usize, 4usize);
    let server = start_server_with(tiny_model(), |c| {
        c.max_concurrent_requests = n;
        c.max_new_tokens_limit = 60_000;
    })
    .await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..n + k {
        let (c, u) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            // Hundreds of milliseconds of decoding each, so that all N+k overlap.
            let body = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 1000, "min_new_tokens": 1000}});
            let r = c.post(&u).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after").is_some();
            let v: Value = r.json().await.unwrap();
            (status, retry, v)
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        let (status, retry, v) = t.await.unwrap();
        if status == 429 {
            assert!(retry, "429 carries Retry-After");
            assert_eq!(v["error_type"], "overloaded");
        }
        *counts.entry(status).or_insert(0) += 1;
    }
    assert_eq!(counts.get(&429), Some(&k), "{counts:?}");
    assert_eq!(counts.get(&200), Some(&n), "{counts:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_still_queued_at_its_deadline_gets_504_and_never_runs() {
    let server = start_server_with(tiny_model(), |c| {
        c.max_batch_size = 1;
        c.max_cohorts = 1;
        c.max_new_tokens_limit = 60_000;
    })
    .await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let before = metric(&client, server.addr, "t5serve_generated_tokens_total").await;
    let long = 2000;
    let (c, u) = (client.clone(), url.clone());
    let first = tokio::spawn(async move {
        post(&c, &u, json!({"inputs": "Hi", "parameters": {"max_new_tokens": long, "min_new_tokens": long}})).await
    });
    // The first request holds the only batch slot before the second arrives.
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 1.0).await, 1.0);
    let (status, v) =
        post(&client, &url, json!({"inputs": "Hi", "parameters": {"max_new_tokens": 5, "deadline_ms": 50}})).await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error_type"], "deadline_exceeded");
    let (status, _) = first.await.unwrap();
    assert_eq!(status, 200);
    // Only the first request's tokens were ever generated.
    // (The counter is bumped right after the last token is sent, so poll for it.)
    let generated = wait_for_metric(&client, server.addr, "t5serve_generated_tokens_total", before + long as f64).await;
    assert_eq!(generated - before, long as f64);
    assert_eq!(metric(&client, server.addr, "t5serve_requests_expired_total").await, 1.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_too_large_for_the_memory_budget_gets_422_naming_the_limit() {
    let server = start_server_with(tiny_model(), |c| {
        c.max_batch_memory_mb = 1;
        c.max_new_tokens_limit = 60_000;
    })
    .await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let (status, v) = post(&client, &url, json!({"inputs": "Hi", "parameters": {"max_new_tokens": 50_000}})).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max_batch_bytes"), "{v}");
    let (status, _) = post(&client, &url, json!({"inputs": "Hi", "parameters": {"max_new_tokens": 5}})).await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seeded_sampled_request_is_reproducible_alone_and_in_a_batch() {
    let server = start_server(tiny_model()).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let params = json!({"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": true, "top_k": 50, "temperature": 1.5, "seed": 77});
    let body = json!({"inputs": "summarize: The quick brown fox jumps over the lazy dog.", "parameters": params});
    let (status, alone) = post(&client, &url, body.clone()).await;
    assert_eq!(status, 200, "{alone}");
    // The same request among others sent at the same time, and inside a multi-input request.
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let (c, u) = (client.clone(), url.clone());
        let other = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 16, "do_sample": true, "seed": i}});
        let b = if i == 3 { body.clone() } else { other };
        tasks.push(tokio::spawn(async move { post(&c, &u, b).await }));
    }
    let results: Vec<(u16, Value)> = futures_join(tasks).await;
    assert_eq!(results[3].1["generated_text"], alone["generated_text"]);
    let batch =
        json!({"inputs": ["Hi", "summarize: The quick brown fox jumps over the lazy dog."], "parameters": params});
    let (status, v) = post(&client, &url, batch).await;
    assert_eq!(status, 200);
    assert_eq!(v[1]["generated_text"], alone["generated_text"]);
    // A different seed gives a different text (the tiny model's distribution is flat).
    let mut other = body.clone();
    other["parameters"]["seed"] = json!(78);
    let (_, v) = post(&client, &url, other).await;
    assert_ne!(v["generated_text"], alone["generated_text"]);
    server.shutdown().await.unwrap();
}

async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beam_search_shares_the_decode_loop_with_greedy_requests() {
    let g = golden();
    let beams: Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("golden_beam.json")).unwrap()).unwrap();
    let tokenizer = TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    // A long queue delay makes the requests below start together in one cohort.
    let server = start_server_with(tiny_model(), |c| c.max_queue_delay_ms = 200).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for case in beams["cases"].as_array().unwrap().iter().take(5) {
        let mut params = case["parameters"].clone();
        params["max_new_tokens"] = beams["max_new_tokens"].clone();
        let body = json!({"inputs": case["prompt"], "parameters": params});
        let want: Vec<String> = case["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let ids: Vec<u32> = s["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
                tokenizer.decode(&ids).unwrap()
            })
            .collect();
        let (c, u) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (status, v) = post(&c, &u, body).await;
            assert_eq!(status, 200, "{v}");
            let got: Vec<String> = v["sequences"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["generated_text"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(v["generated_text"], got[0]);
            // The two best may swap only at a near-tie (see tests/parity.rs); these prompts have none.
            assert_eq!(got, want);
        }));
    }
    for case in g.cases.iter().filter(|c| !c.prompt.is_empty()).take(4) {
        let body = json!({"inputs": case.prompt, "parameters": {"max_new_tokens": g.steps, "min_new_tokens": g.steps}});
        let (c, u, want) = (client.clone(), url.clone(), case.text.clone());
        tasks.push(tokio::spawn(async move {
            let (status, v) = post(&c, &u, body).await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["generated_text"], want);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Beam search refuses what it cannot do, clearly.
    for (params, msg) in [
        (json!({"num_beams": 2, "do_sample": true}), "sampling"),
        (json!({"num_beams": 2, "stop": ["x"]}), "stop"),
        (json!({"num_beams": 100}), "max_num_beams"),
    ] {
        let (status, v) = post(&client, &url, json!({"inputs": "Hi", "parameters": params})).await;
        assert_eq!(status, 422, "{v}");
        assert!(v["error"].as_str().unwrap().contains(msg), "{v}");
    }
    let (status, v) =
        post(&client, &url, json!({"inputs": "Hi", "stream": true, "parameters": {"num_beams": 2}})).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_running_past_request_timeout_gets_504_and_its_row_is_dropped() {
    let server = start_server_with(tiny_model(), |c| {
        c.request_timeout_ms = 300;
        c.max_new_tokens_limit = 60_000;
    })
    .await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let long = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 50_000, "min_new_tokens": 50_000}});
    let (status, v) = post(&client, &url, long.clone()).await;
    assert_eq!((status, v["error_type"].as_str()), (504, Some("deadline_exceeded")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("request_timeout_ms"), "{v}");
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_requests_cancelled_total", 1.0).await, 1.0);
    // A stream ends with an error event instead.
    let mut body = long;
    body["stream"] = json!(true);
    let text = client.post(&url).json(&body).send().await.unwrap().text().await.unwrap();
    assert!(
        text.contains("event: error") && text.contains("request_timeout_ms"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    // A short request is unaffected.
    let (status, _) = post(&client, &url, json!({"inputs": "Hi", "parameters": {"max_new_tokens": 4}})).await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

/// The model's dimensions, read from its config.json (not from the server).
fn tiny_dims() -> (usize, usize, usize) {
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(tiny_model().join("config.json")).unwrap()).unwrap();
    let n = |k: &str| cfg[k].as_u64().unwrap() as usize;
    (n("num_decoder_layers"), n("num_heads"), n("d_kv"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_cache_bytes_matches_the_size_computed_from_the_model_dimensions() {
    let (layers, heads, d_kv) = tiny_dims();
    let server = start_server_with(tiny_model(), |c| c.max_new_tokens_limit = 60_000).await;
    let client = reqwest::Client::new();
    let tokenizer = TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    let prompt = "the quick brown fox jumps over the lazy dog";
    let src = tokenizer.encode(prompt).unwrap().len();
    let url = format!("http://{}/v1/generate", server.addr);
    let body = json!({"inputs": prompt, "parameters": {"max_new_tokens": 20000, "min_new_tokens": 20000}});
    let long = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.post(url).json(&body).timeout(Duration::from_secs(2)).send().await }
    });
    // f32 bytes of one row: K and V per decoder layer, `heads x d_kv` per position, over the
    // generated positions (self-attention) and the input positions (cross-attention). The split
    // graphs' encoder output (`src x d_model`) is freed after the first step.
    let per_position = 2 * layers * heads * d_kv * 4;
    let fixed = src * per_position;
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let g = metric(&client, server.addr, "t5serve_kv_cache_bytes").await as usize;
        if g > 0 {
            assert!(
                g > fixed && (g - fixed).is_multiple_of(per_position),
                "{g} bytes is not {fixed} + n x {per_position}"
            );
            seen.push((g - fixed) / per_position);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "the self-attention cache only grows: {seen:?}");
    let _ = long.await;
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_kv_cache_bytes", 0.0).await, 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inputs_are_encoded_in_length_buckets_and_the_padding_is_reported() {
    let server = start_server(tiny_model()).await;
    let client = reqwest::Client::new();
    let tokenizer = TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    let text = |n: usize| vec!["the"; n].join(" ");
    let url = format!("http://{}/v1/generate", server.addr);
    let totals = || async {
        (
            metric(&client, server.addr, "t5serve_encoder_tokens_total").await,
            metric(&client, server.addr, "t5serve_encoder_padded_tokens_total").await,
            metric(&client, server.addr, "t5serve_padding_ratio_count").await,
        )
    };
    // (input word counts, expected padded tokens): 9 and 10 tokens pad 1 of 20 (5%): one batch;
    // 3 and 10 would pad 7 of 20 (35%, over 20%): two batches, no padding.
    for (words, padded_want) in [([8usize, 9], 20.0), ([2, 9], 13.0)] {
        let lens: Vec<usize> = words.iter().map(|&n| tokenizer.encode(&text(n)).unwrap().len()).collect();
        assert_eq!(lens, words.iter().map(|n| n + 1).collect::<Vec<_>>(), "one token per word, and EOS");
        let before = totals().await;
        let (status, _) = post(
            &client,
            &url,
            json!({"inputs": [text(words[0]), text(words[1])], "parameters": {"max_new_tokens": 2}}),
        )
        .await;
        assert_eq!(status, 200);
        let after = totals().await;
        assert_eq!(after.0 - before.0, lens.iter().sum::<usize>() as f64);
        assert_eq!(after.1 - before.1, padded_want);
        assert_eq!(after.2 - before.2, 1.0, "one prefill");
    }
    server.shutdown().await.unwrap();
}

/// `max_prefill_tokens` splits one prefill's rows by padded tokens (rows x longest input): rows of
/// 12, 12 and 10 tokens under a cap of 30 are encoded as two prefills (2 x 12, then the third: all
/// three would be 3 x 12 = 36), a lone row larger than the cap still runs, and every row gets what
/// it gets alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prefill_cap_encodes_a_request_s_rows_in_parts_with_unchanged_answers() {
    let server = start_server_with(tiny_model(), |c| c.max_prefill_tokens = 30).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/generate", server.addr);
    let prefills = || metric(&client, server.addr, "t5serve_padding_ratio_count");
    let texts = [
        "the cat sat on the mat and then it",
        "a dog ran in the park with a red",
        "one two three four five six seven eight nine",
    ];
    let params = json!({"max_new_tokens": 6, "min_new_tokens": 6});
    let mut alone = Vec::new();
    for t in texts {
        let (status, v) = post(&client, &url, json!({"inputs": t, "parameters": params})).await;
        assert_eq!(status, 200, "{v}");
        alone.push(v["generated_text"].clone());
    }
    let before = prefills().await;
    let (status, v) = post(&client, &url, json!({"inputs": texts, "parameters": params})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(prefills().await - before, 2.0, "2 rows of 12 tokens, then the third");
    let together: Vec<Value> = v.as_array().unwrap().iter().map(|r| r["generated_text"].clone()).collect();
    assert_eq!(together, alone);
    // One row of 41 tokens, more than the cap alone: it runs, in one prefill.
    let before = prefills().await;
    let (status, v) = post(&client, &url, json!({"inputs": vec!["the"; 40].join(" "), "parameters": params})).await;
    assert_eq!((status, prefills().await - before), (200, 1.0), "{v}");
    server.shutdown().await.unwrap();
}
