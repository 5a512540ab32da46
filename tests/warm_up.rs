//! The warm-up is not a client request: a short `request_timeout_ms` (which no warm-up could
//! meet) must not leave the server unready. The real binary, tiny model.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_request_timeout_does_not_keep_the_server_unready() {
    let server = spawn_binary(&["--request-timeout-ms", "3"]);
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
    // Client requests do obey it.
    let (status, v) = post(
        &client,
        &format!("{}/v1/generate", server.base),
        serde_json::json!({"inputs": "Hi", "parameters": {"max_new_tokens": 64, "min_new_tokens": 64}}),
    )
    .await;
    assert_eq!((status, v["error_type"].as_str()), (504, Some("deadline_exceeded")), "{v}");
    let text = server.kill_and_log();
    assert!(text.contains("warm-up done; ready"), "{text}");
    assert!(!text.contains("warm-up failed"), "{text}");
}
