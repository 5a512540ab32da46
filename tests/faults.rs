//! Failures, with the test-only fault hooks (`--features fault-injection`, src/faults.rs): a
//! failing decoder step fails only its batch (500 JSON) and the loop goes on; a panicking handler
//! gives 500 JSON and the server keeps serving; a dead decode thread makes readiness fail and the
//! real process exit non-zero.
#![cfg(feature = "fault-injection")]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use t5serve::faults::{FAIL_STEP_SEED, PANIC_DECODE_THREAD_SEED, PANIC_HANDLER_SEED};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_fails_only_its_batch_and_a_panicking_handler_only_its_request() {
    let g = golden();
    let server = start_server(tiny_model()).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let case = &g.cases[2];
    let good = json!({"inputs": case.prompt, "parameters": {"max_new_tokens": g.steps, "min_new_tokens": g.steps}});

    // The batch with the faulty row fails with a JSON 500 that does not leak the cause.
    let (status, v) =
        post(&client, &url, json!({"inputs": ["Hi", "Ho"], "parameters": {"seed": FAIL_STEP_SEED, "max_new_tokens": 8, "min_new_tokens": 8}}))
            .await;
    assert_eq!((status, v["error_type"].as_str()), (500, Some("internal")), "{v}");
    assert!(!v["error"].as_str().unwrap().contains("injected"), "internal details stay in the log: {v}");
    // The loop goes on with new work, and answers it correctly.
    let (status, v) = post(&client, &url, good.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["generated_text"], case.text);

    // A panic in a handler: 500 JSON, and the server keeps serving.
    let (status, v) = post(&client, &url, json!({"inputs": "Hi", "parameters": {"seed": PANIC_HANDLER_SEED}})).await;
    assert_eq!((status, v["error_type"].as_str()), (500, Some("internal")), "{v}");
    let (status, v) = post(&client, &url, good).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["generated_text"], case.text);
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_decode_thread_fails_readiness_and_the_process_exits_non_zero() {
    let log = std::env::temp_dir().join(format!("t5serve-faults-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_t5serve"))
        .args(["serve", "--model", tiny_model().to_str().unwrap(), "--port", "0"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let read_log = || {
        let mut text = String::new();
        std::fs::File::open(&log).unwrap().read_to_string(&mut text).unwrap();
        text
    };
    let until = Instant::now() + Duration::from_secs(60);
    let base = loop {
        let text = read_log();
        if let Some(i) = text.find("listening addr=") {
            let addr: String = text[i + 15..].chars().take_while(|c| !c.is_whitespace()).collect();
            break format!("http://{addr}");
        }
        assert!(Instant::now() < until, "server did not start:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = reqwest::Client::new();
    while client.get(format!("{base}/health/ready")).send().await.unwrap().status().as_u16() != 200 {
        assert!(Instant::now() < until, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The request that kills the decode thread gets a JSON 5xx, not a hang.
    let r = client
        .post(format!("{base}/v1/generate"))
        .json(&json!({"inputs": "Hi", "parameters": {"seed": PANIC_DECODE_THREAD_SEED, "max_new_tokens": 8, "min_new_tokens": 8}}))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_server_error(), "{}", r.status());
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error_type"].is_string(), "{v}");
    }
    // Then the process stops, non-zero, saying why.
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        // While it is still up, it is not ready.
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            assert_eq!(r.status().as_u16(), 503);
        }
        assert!(Instant::now() < until, "the process kept running without its decode thread");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let text = read_log();
    std::fs::remove_file(&log).ok();
    assert_ne!(status.code(), Some(0), "log:\n{text}");
    assert!(text.contains("the decode thread stopped"), "{text}");
}
