//! Health and graceful shutdown with the real binary and a real signal: live vs ready, then on
//! SIGTERM readiness turns 503, new requests get 503, the requests in flight (a stream; 32 at
//! once) finish, and the process exits 0.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ServerProcess, spawn_binary};

use serde_json::json;

/// The grace period bounds a drain, it does not time it: these tests assert that the requests in
/// flight finish, which took 20 s for the 32 below on a loaded 2-core CI machine, so the bound is
/// far above that (a drain that hangs still ends the test, at this bound).
fn spawn_server() -> ServerProcess {
    spawn_binary(&["--max-new-tokens-limit", "60000", "--shutdown-grace-ms", "300000"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_zero() {
    let server = spawn_server();
    let base = server.base.clone();
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{base}/health/live")).send().await.unwrap().status().as_u16(), 200);
    server.wait_ready(&client).await;
    // A stream in flight: about a second of decoding.
    let body = json!({"inputs": "Hi", "stream": true, "parameters": {"max_new_tokens": 3000, "min_new_tokens": 3000}});
    let mut stream = client.post(format!("{base}/v1/generate")).json(&body).send().await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let first = stream.chunk().await.unwrap().expect("a first event");
    assert!(!first.is_empty());

    assert!(Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap().success());
    // Readiness turns 503 while draining.
    server.wait_draining(&client).await;
    let r = client.post(format!("{base}/v1/generate")).json(&json!({"inputs": "Hi"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503, "new requests are refused while draining");
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error_type"], "unavailable");

    // The stream runs to its end.
    let mut rest = Vec::from(first.as_ref());
    while let Some(chunk) = stream.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.contains("event: done"), "the stream finished");
    assert_eq!(text.matches("event: token").count(), 3000);

    let (status, text) = server.wait_exit(async || {}).await;
    assert_eq!(status.code(), Some(0), "exit status; log:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_32_requests_in_flight_completes_all_of_them() {
    let server = spawn_server();
    let base = server.base.clone();
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    server.wait_ready(&client).await;
    // 32 requests of a few hundred steps each, different lengths.
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let (c, url) = (client.clone(), format!("{base}/v1/generate"));
        let n = 400 + 10 * i;
        tasks.push(tokio::spawn(async move {
            let body = json!({"inputs": "Hi", "parameters": {"max_new_tokens": n, "min_new_tokens": n}});
            let r = c.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (status, v["usage"]["generated_tokens"].as_u64(), n)
        }));
    }
    // All 32 admitted and decoding before the signal.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        // One model: one series of the gauge.
        let active = text
            .lines()
            .find_map(|l| l.strip_prefix("t5serve_active_rows{").and_then(|l| l.rsplit_once(' ')))
            .map(|(_, v)| v.trim().to_string());
        if active.as_deref() == Some("32") {
            break;
        }
        assert!(Instant::now() < until, "the 32 requests never ran together: {active:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap().success());
    server.wait_draining(&client).await;
    let r = client.post(format!("{base}/v1/generate")).json(&json!({"inputs": "Hi"})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503, "new requests are refused while draining");
    for t in tasks {
        let (status, generated, n) = t.await.unwrap();
        assert_eq!((status, generated), (200, Some(n)), "every request in flight completes");
    }
    let (status, text) = server.wait_exit(async || {}).await;
    assert_eq!(status.code(), Some(0), "exit status; log:\n{text}");
}

/// SIGTERM ends on time: at the end of shutdown_grace_ms the streams still running get their
/// error event, a client that sent half a request header does not keep the process alive, and
/// the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_at_the_grace_deadline_whatever_the_clients_do() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = spawn_binary(&["--max-new-tokens-limit", "60000", "--shutdown-grace-ms", "1500"]);
    let base = server.base.clone();
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
    // Half a request header, never finished.
    let mut half = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    half.write_all(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Three streams far longer than the grace period (60,000 tokens each).
    let body =
        json!({"inputs": "Hi", "stream": true, "parameters": {"max_new_tokens": 60000, "min_new_tokens": 60000}});
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = client.post(format!("{base}/v1/generate")).json(&body).send().await.unwrap();
        assert_eq!(s.status().as_u16(), 200);
        assert!(!s.chunk().await.unwrap().expect("a first event").is_empty());
        streams.push(s);
    }
    assert!(Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap().success());
    for mut s in streams {
        let mut rest = Vec::new();
        while let Ok(Some(chunk)) = s.chunk().await {
            rest.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&rest);
        assert!(!text.contains("event: done"), "a stream of 60,000 tokens cannot have finished");
        assert!(
            text.contains("event: error") && text.contains("shutting down"),
            "{}",
            &text[text.len().saturating_sub(300)..]
        );
    }
    // The half-open request's connection is closed by the server, not left waiting.
    let mut buf = [0u8; 64];
    assert!(matches!(half.read(&mut buf).await, Ok(0) | Err(_)), "the half-sent request's connection is closed");
    // wait_exit gives up after 30 s; before, the process waited for the client to close its socket.
    let (status, text) = server.wait_exit(async || {}).await;
    assert_eq!(status.code(), Some(0), "exit status; log:\n{text}");
    assert!(text.contains("shutdown_grace over"), "{text}");
}
