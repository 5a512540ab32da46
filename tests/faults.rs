//! Failures, with the test-only fault hooks (`--features fault-injection`, src/faults.rs): a
//! failing decoder step fails only its batch (500 JSON) and the loop goes on; a panicking handler
//! gives 500 JSON and the server keeps serving; a dead decode thread makes readiness fail and the
//! real process exit non-zero.
#![cfg(feature = "fault-injection")]

mod common;

use std::time::Duration;

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
    dead_decode_thread(&[]).await;
}

/// With two decode lanes, one dead lane is enough: the service is no longer healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_decode_lane_of_two_fails_readiness_and_the_process_exits_non_zero() {
    dead_decode_thread(&["--decode-lanes", "2"]).await;
}

async fn dead_decode_thread(args: &[&str]) {
    let server = spawn_binary(args);
    let base = server.base.clone();
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
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
    // Then the process stops, non-zero, saying why; while it is still up, it is not ready.
    let (status, text) = server.wait_exit_unready(&client).await;
    assert_ne!(status.code(), Some(0), "log:\n{text}");
    assert!(text.contains("the decode thread stopped"), "{text}");
}

/// Failed rows are exported by reason: here a decoder step fails for a two-row request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_rows_are_counted_by_reason() {
    let server = start_server(tiny_model()).await;
    let client = reqwest::Client::new();
    let body = json!({"inputs": ["Hi", "Ho"], "parameters": {"seed": FAIL_STEP_SEED, "max_new_tokens": 8, "min_new_tokens": 8}});
    let (status, v) = post(&client, &format!("http://{}/v1/generate", server.addr), body).await;
    assert_eq!(status, 500, "{v}");
    let name = "t5serve_rows_failed_total{reason=\"step\"}";
    assert_eq!(wait_for_metric(&client, server.addr, name, 2.0).await, 2.0);
    server.shutdown().await.unwrap();
}

/// A warm-up that really fails (its decoder step, through the fault hook) is retried with
/// backoff; then the process exits non-zero instead of staying up unready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_warm_up_is_retried_then_the_process_exits_non_zero() {
    let server = spawn_binary_env(&tiny_model(), &[], &[(t5serve::faults::FAIL_WARM_UP_ENV, "1")]);
    let client = reqwest::Client::new();
    let (status, text) = server.wait_exit_unready(&client).await;
    assert_ne!(status.code(), Some(0), "log:\n{text}");
    assert_eq!(text.matches("warm-up failed; retrying").count(), t5serve::WARM_UP_ATTEMPTS - 1, "{text}");
    let last = format!("warm-up failed {} times; exiting", t5serve::WARM_UP_ATTEMPTS);
    assert!(text.contains(&last), "{text}");
}
