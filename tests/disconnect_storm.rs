//! A disconnect storm on the real server over a real socket: 300 clients leave mid-generation
//! while 50 others finish with their golden answers; every row and its cache is freed.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disconnect_storm_frees_every_row_and_the_others_get_their_answers() {
    let g = golden();
    // The masked-decoder variant, so that all 350 rows decode in one running batch.
    let server = start_server_with(data_dir().join("tiny-t5-masked"), |c| {
        c.max_concurrent_requests = 1024;
        c.max_batch_size = 512;
        c.max_new_tokens_limit = 60_000;
        // The budget reserves each row's worst case (50,000 tokens of cache).
        c.max_batch_memory_mb = 1 << 16;
    })
    .await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap();

    // 300 long generations...
    let mut leaving = Vec::new();
    for _ in 0..300 {
        let (c, u) = (client.clone(), url.clone());
        leaving.push(tokio::spawn(async move {
            let body = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 50_000, "min_new_tokens": 50_000}});
            let _ = c.post(&u).json(&body).send().await;
        }));
    }
    // ...all decoding before anyone leaves.
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 300.0).await, 300.0);
    // 50 requests with golden answers, then the 300 clients drop their connections at once.
    let cases: Vec<&GoldenCase> = g.cases.iter().filter(|c| !c.prompt.is_empty()).collect();
    let mut staying = Vec::new();
    for i in 0..50 {
        let case = cases[i % cases.len()];
        let (c, u, prompt, want) = (client.clone(), url.clone(), case.prompt.clone(), case.text.clone());
        let steps = g.steps;
        staying.push(tokio::spawn(async move {
            let body = json!({"inputs": prompt, "parameters": {"max_new_tokens": steps, "min_new_tokens": steps}});
            let (status, v) = post(&c, &u, body).await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["generated_text"], want.as_str(), "{prompt:?}");
        }));
    }
    for t in &leaving {
        t.abort();
    }
    for t in staying {
        t.await.unwrap();
    }
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    assert_eq!(metric(&client, server.addr, "t5serve_kv_cache_bytes").await, 0.0, "no cache left behind");
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_requests_cancelled_total", 300.0).await, 300.0);
    server.shutdown().await.unwrap();
}
