//! Access control: with an API key, work routes need `Authorization: Bearer <key>` (401 JSON
//! otherwise), /health stays open, /metrics is open unless configured, and the key never
//! reaches the logs.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use t5serve::config::Secret;

const KEY: &str = "s3cret-test-key-0123456789";

async fn status(req: reqwest::RequestBuilder) -> (u16, Option<Value>, bool) {
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    let challenge = r.headers().get("www-authenticate").is_some();
    (s, r.json().await.ok(), challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_guards_work_routes_but_not_health() {
    let server = start_server_with(tiny_model(), |c| c.api_key = Some(Secret(KEY.into()))).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let body = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2}});
    for path in ["/v1/generate", "/generate", "/"] {
        let (s, v, challenge) = status(client.post(format!("{base}{path}")).json(&body)).await;
        assert_eq!(s, 401, "{path} without a key");
        assert!(challenge, "401 carries WWW-Authenticate");
        assert_eq!(v.unwrap()["error_type"], "unauthorized");
        let (s, _, _) =
            status(client.post(format!("{base}{path}")).bearer_auth("wrong-key-wrong-key").json(&body)).await;
        assert_eq!(s, 401, "{path} with a wrong key");
        let (s, _, _) = status(client.post(format!("{base}{path}")).bearer_auth(KEY).json(&body)).await;
        assert_eq!(s, 200, "{path} with the key");
    }
    // The Open Inference Protocol's routes too (its body is its own, with no Content-Type).
    let infer = format!("{base}/v2/models/tiny-t5/infer");
    let oip = r#"{"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hi"]}]}"#;
    let (s, v, _) = status(client.post(&infer).body(oip)).await;
    assert_eq!((s, v.unwrap()["error_type"].as_str()), (401, Some("unauthorized")));
    let (s, _, _) = status(client.post(&infer).bearer_auth(KEY).body(oip)).await;
    assert_eq!(s, 200, "/v2 infer with the key");
    for path in ["/v1/models", "/v2", "/v2/models/tiny-t5", "/v2/models/tiny-t5/ready"] {
        let (s, _, _) = status(client.get(format!("{base}{path}"))).await;
        assert_eq!(s, 401, "{path} without a key");
    }
    for path in ["/health", "/health/ready", "/health/live", "/metrics", "/v2/health/live", "/v2/health/ready"] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} stays open");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_the_key_too() {
    let server = start_server_with(tiny_model(), |c| {
        c.api_key = Some(Secret(KEY.into()));
        c.metrics_need_key = true;
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/metrics", server.addr);
    assert_eq!(client.get(&url).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(client.get(&url).bearer_auth(KEY).send().await.unwrap().status().as_u16(), 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_never_reaches_the_log() {
    let log = std::env::temp_dir().join(format!("t5serve-auth-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_t5serve"))
        .args(["serve", "--model", tiny_model().to_str().unwrap(), "--port", "0"])
        .env("T5SERVE_API_KEY", KEY)
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let base = loop {
        let mut text = String::new();
        std::fs::File::open(&log).unwrap().read_to_string(&mut text).unwrap();
        if let Some(i) = text.find("listening addr=") {
            break format!("http://{}", text[i + 15..].split_whitespace().next().unwrap());
        }
        assert!(Instant::now() < until, "server did not start:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = reqwest::Client::new();
    let body = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2}});
    let ok = client.post(format!("{base}/v1/generate")).bearer_auth(KEY).json(&body).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let bad =
        client.post(format!("{base}/v1/generate")).bearer_auth("not-the-key-at-all").json(&body).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    child.kill().unwrap();
    child.wait().unwrap();
    let mut text = String::new();
    std::fs::File::open(&log).unwrap().read_to_string(&mut text).unwrap();
    std::fs::remove_file(&log).ok();
    assert!(text.contains("model loaded"), "the log was captured");
    assert!(!text.contains(KEY), "the API key appears in the log");
}

#[test]
fn a_short_key_is_refused_at_start_up() {
    let c = t5serve::Config { api_key: Some(Secret("short".into())), ..Default::default() };
    assert!(c.validate().unwrap_err().to_string().contains("api_key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_the_configured_origins() {
    let server = start_server_with(tiny_model(), |c| {
        c.api_key = Some(Secret(KEY.into()));
        c.cors_origins = vec!["https://app.example".into()];
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/generate", server.addr);
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(ok.headers().get("access-control-allow-origin").unwrap(), "https://app.example");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    server.shutdown().await.unwrap();
    // No origins configured (the default): no CORS headers at all.
    let server = start_server(tiny_model()).await;
    let r = client
        .get(format!("http://{}/health", server.addr))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    server.shutdown().await.unwrap();
}

#[test]
fn a_bad_cors_origin_is_refused_at_start_up() {
    let c = t5serve::Config { cors_origins: vec!["app.example".into()], ..Default::default() };
    assert!(c.validate().unwrap_err().to_string().contains("cors_origins[0]"));
}

/// The scheme name is case-insensitive (RFC 7235): `bearer`, `BEARER` work as `Bearer`.
/// Refusals and unknown routes are counted in the metrics, by status and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheme_is_case_insensitive_and_refusals_are_counted() {
    let server = start_server_with(tiny_model(), |c| c.api_key = Some(Secret(KEY.into()))).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let body = json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2}});
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = client.post(format!("{base}/v1/generate")).header("authorization", format!("{scheme} {KEY}"));
        assert_eq!(status(r.json(&body)).await.0, 200, "{scheme}");
    }
    for _ in 0..3 {
        let r = client.post(format!("{base}/v1/generate")).bearer_auth("wrong-key-wrong-key").json(&body);
        assert_eq!(status(r).await.0, 401);
    }
    assert_eq!(status(client.post(format!("{base}/v1/generate")).json(&body)).await.0, 401);
    assert_eq!(status(client.get(format!("{base}/no/such/route")).bearer_auth(KEY)).await.0, 404);
    let m = |name: &'static str| metric(&client, server.addr, name);
    assert_eq!(m("t5serve_requests_total{route=\"/v1/generate\",status=\"401\"}").await, 4.0);
    assert_eq!(m("t5serve_requests_rejected_total{reason=\"unauthorized\"}").await, 4.0);
    assert_eq!(m("t5serve_requests_total{route=\"unmatched\",status=\"404\"}").await, 1.0);
    assert_eq!(m("t5serve_requests_rejected_total{reason=\"no_route\"}").await, 1.0);
    server.shutdown().await.unwrap();
}

/// A flood of wrong keys leaves a trace in the log, at most one line per 10 s, with the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_keys_are_logged_at_a_bounded_rate() {
    let server = spawn_binary(&["--api-key", KEY]);
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
    let started = Instant::now();
    for _ in 0..50 {
        let r = client.get(format!("{}/v1/models", server.base)).bearer_auth("wrong-key-wrong-key");
        assert_eq!(r.send().await.unwrap().status().as_u16(), 401);
    }
    let windows = started.elapsed().as_secs() / 10 + 1;
    let text = server.kill_and_log();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("authentication refused")).collect();
    assert!(!lines.is_empty() && lines.len() as u64 <= windows, "{lines:?}");
    assert!(lines[0].contains("refused=1") && lines[0].contains("the API key is wrong"), "{}", lines[0]);
    assert!(!text.contains("wrong-key-wrong-key") && !text.contains(KEY), "no key in the log");
}
