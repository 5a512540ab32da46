//! The real server over a real socket (port 0): /health, /v1/generate against the golden
//! outputs of transformers, list inputs, and JSON errors for bad requests.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_generate_over_a_socket() {
    let g = golden();
    let server = start_server(tiny_model()).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();

    let r = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");

    let params = json!({"max_new_tokens": g.steps, "min_new_tokens": g.min_new_tokens});
    // "" is not a valid input over HTTP; every other golden prompt is.
    let cases: Vec<&GoldenCase> = g.cases.iter().filter(|c| !c.prompt.is_empty()).collect();
    for case in &cases {
        let (status, body) =
            post(&client, &format!("{base}/v1/generate"), json!({"inputs": case.prompt, "parameters": params})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["generated_text"], case.text, "{:?}", case.prompt);
        assert_eq!(body["finish_reason"], "length");
        assert_eq!(body["usage"]["input_tokens"], case.input_ids.len());
        assert_eq!(body["usage"]["generated_tokens"], g.steps);
    }

    // All prompts in one request: one result per input, in order, equal to the single answers.
    let prompts: Vec<&str> = cases.iter().map(|c| c.prompt.as_str()).collect();
    let (status, body) =
        post(&client, &format!("{base}/v1/generate"), json!({"inputs": prompts, "parameters": params})).await;
    assert_eq!(status, 200, "{body}");
    let results = body.as_array().expect("a list input gives a list");
    assert_eq!(results.len(), cases.len());
    for (r, case) in results.iter().zip(&cases) {
        assert_eq!(r["generated_text"], case.text, "{:?} in a batch", case.prompt);
    }

    // Without min_new_tokens the defaults apply and max_new_tokens bounds the output.
    let (status, body) =
        post(&client, &format!("{base}/v1/generate"), json!({"inputs": "Hi", "parameters": {"max_new_tokens": 3}}))
            .await;
    assert_eq!(status, 200);
    assert!(body["usage"]["generated_tokens"].as_u64().unwrap() <= 3);

    server.shutdown().await.unwrap();
}

/// (description, content type, raw body, expected status, expected error_type)
type BadCase<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let server = start_server(tiny_model()).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::new();
    let json_ct = "application/json";
    // (description, content type, raw body, expected status, expected error_type)
    let cases: &[(&str, Option<&str>, &str, u16, &str)] = &[
        ("invalid JSON", Some(json_ct), r#"{"inputs": "Hi""#, 400, "bad_request"),
        ("not JSON at all", Some(json_ct), "inputs=Hi", 400, "bad_request"),
        ("wrong content type", Some("text/plain"), r#"{"inputs": "Hi"}"#, 415, "unsupported_media_type"),
        ("no content type", None, r#"{"inputs": "Hi"}"#, 415, "unsupported_media_type"),
        ("empty string", Some(json_ct), r#"{"inputs": ""}"#, 422, "validation"),
        ("empty list", Some(json_ct), r#"{"inputs": []}"#, 422, "validation"),
        ("empty item", Some(json_ct), r#"{"inputs": ["Hi", ""]}"#, 422, "validation"),
        ("missing inputs", Some(json_ct), r#"{"parameters": {"max_new_tokens": 4}}"#, 422, "validation"),
        ("empty object", Some(json_ct), "{}", 422, "validation"),
        ("inputs of wrong type", Some(json_ct), r#"{"inputs": 42}"#, 422, "validation"),
        (
            "zero max_new_tokens",
            Some(json_ct),
            r#"{"inputs": "Hi", "parameters": {"max_new_tokens": 0}}"#,
            422,
            "validation",
        ),
        (
            "negative max_new_tokens",
            Some(json_ct),
            r#"{"inputs": "Hi", "parameters": {"max_new_tokens": -5}}"#,
            422,
            "validation",
        ),
        (
            "huge max_new_tokens",
            Some(json_ct),
            r#"{"inputs": "Hi", "parameters": {"max_new_tokens": 100000}}"#,
            422,
            "validation",
        ),
        (
            "min above max",
            Some(json_ct),
            r#"{"inputs": "Hi", "parameters": {"max_new_tokens": 2, "min_new_tokens": 3}}"#,
            422,
            "validation",
        ),
        ("unknown field", Some(json_ct), r#"{"inputs": "Hi", "temprature": 1}"#, 422, "validation"),
        ("unknown parameter", Some(json_ct), r#"{"inputs": "Hi", "parameters": {"max_tokens": 3}}"#, 422, "validation"),
        ("zero temperature", Some(json_ct), r#"{"inputs": "Hi", "parameters": {"temperature": 0}}"#, 422, "validation"),
        ("top_p above 1", Some(json_ct), r#"{"inputs": "Hi", "parameters": {"top_p": 1.5}}"#, 422, "validation"),
        ("negative seed", Some(json_ct), r#"{"inputs": "Hi", "parameters": {"seed": -1}}"#, 422, "validation"),
        (
            "warper without sampling",
            Some(json_ct),
            r#"{"inputs": "Hi", "parameters": {"do_sample": false, "top_k": 3}}"#,
            422,
            "validation",
        ),
    ];
    let many_inputs = serde_json::to_string(&json!({"inputs": vec!["Hi"; 33]})).unwrap();
    let many_stops = r#"{"inputs": "Hi", "parameters": {"stop": ["a", "b", "c", "d", "e"]}}"#;
    let long_input = serde_json::to_string(&json!({"inputs": "word ".repeat(600)})).unwrap();
    // Byte-level cases: invalid UTF-8, raw control characters, oversize bodies, limits.
    let raw: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("invalid UTF-8", b"{\"inputs\": \"caf\xe9 \xff\xfe\"}".to_vec(), 400, "bad_request"),
        ("raw control character in a string", b"{\"inputs\": \"a\x01b\"}".to_vec(), 400, "bad_request"),
        ("NUL byte outside a string", b"{\"inputs\": \"Hi\"}\x00".to_vec(), 400, "bad_request"),
        ("empty body", Vec::new(), 400, "bad_request"),
        ("top-level array", br#"[{"inputs": "Hi"}]"#.to_vec(), 422, "validation"),
        ("null inputs", br#"{"inputs": null}"#.to_vec(), 422, "validation"),
        ("nested list inputs", br#"{"inputs": [["Hi"]]}"#.to_vec(), 422, "validation"),
        ("more inputs than max_client_batch_size", many_inputs.into_bytes(), 422, "validation"),
        ("more stop sequences than max_stop_sequences", many_stops.as_bytes().to_vec(), 422, "validation"),
        ("empty stop sequence", br#"{"inputs": "Hi", "parameters": {"stop": [""]}}"#.to_vec(), 422, "validation"),
        ("zero beams", br#"{"inputs": "Hi", "parameters": {"num_beams": 0}}"#.to_vec(), 422, "validation"),
        (
            "negative repetition penalty",
            br#"{"inputs": "Hi", "parameters": {"repetition_penalty": -1}}"#.to_vec(),
            422,
            "validation",
        ),
        (
            "max_new_tokens as a string",
            br#"{"inputs": "Hi", "parameters": {"max_new_tokens": "4"}}"#.to_vec(),
            422,
            "validation",
        ),
        (
            "fractional max_new_tokens",
            br#"{"inputs": "Hi", "parameters": {"max_new_tokens": 2.5}}"#.to_vec(),
            422,
            "validation",
        ),
        ("input over max_input_tokens", long_input.into_bytes(), 422, "validation"),
        (
            "body over max_body_bytes",
            serde_json::to_vec(&json!({"inputs": "a ".repeat(600_000)})).unwrap(),
            413,
            "payload_too_large",
        ),
    ];
    let all: Vec<BadCase> = cases
        .iter()
        .map(|(w, ct, b, s, e)| (*w, *ct, b.as_bytes().to_vec(), *s, *e))
        .chain(raw.into_iter().map(|(w, b, s, e)| (w, Some(json_ct), b, s, e)))
        .collect();
    assert!(all.len() >= 35, "{} cases", all.len());
    for (what, ct, body, status, error_type) in &all {
        let mut req = client.post(&url).body(body.clone());
        if let Some(ct) = ct {
            req = req.header("content-type", *ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), *status, "{what}");
        assert!(r.headers().contains_key("x-request-id"), "{what}");
        assert_eq!(r.headers()["content-type"], "application/json", "{what}");
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
        assert_eq!(v["error_type"], *error_type, "{what}: {v}");
        assert!(v["error"].as_str().is_some_and(|s| !s.is_empty()), "{what}: {v}");
    }
    // The messages name what is wrong.
    let (_, v) = post(&client, &url, json!({"inputs": "Hi", "parameters": {"max_new_tokens": -5}})).await;
    assert!(v["error"].as_str().unwrap().contains("max_new_tokens"), "{v}");
    let (_, v) = post(&client, &url, json!({"inputs": ["Hi", ""]})).await;
    assert!(v["error"].as_str().unwrap().contains("inputs[1]"), "{v}");

    // Unknown routes and methods are JSON errors too.
    let r = client.get(format!("http://{}/nope", server.addr)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error_type"], "not_found");
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["error_type"], "method_not_allowed");

    // An input over max_input_tokens is refused before decoding, naming the limit.
    let long = "word ".repeat(600);
    let (status, v) = post(&client, &url, json!({"inputs": long})).await;
    assert_eq!(status, 422);
    assert!(v["error"].as_str().unwrap().contains("max_input_tokens"), "{v}");
    // Unless the request asks to truncate: then the last N tokens are kept (TGI's route too).
    let (status, v) =
        post(&client, &url, json!({"inputs": long, "parameters": {"truncate": 8, "max_new_tokens": 2}})).await;
    assert_eq!((status, v["usage"]["input_tokens"].as_u64()), (200, Some(8)), "{v}");
    let much_longer = "word ".repeat(20_000);
    let tgi = format!("http://{}/generate", server.addr);
    let (status, v) =
        post(&client, &tgi, json!({"inputs": much_longer, "parameters": {"truncate": 8, "max_new_tokens": 2}})).await;
    assert_eq!(status, 200, "{v}");
    // TGI's top_p / typical_p out of range are refused, not dropped.
    for p in [json!({"top_p": 2.0}), json!({"typical_p": 0.0}), json!({"top_p": -1})] {
        let (status, v) = post(&client, &tgi, json!({"inputs": "Hi", "parameters": p})).await;
        assert_eq!(status, 422, "{p}: {v}");
    }
    let (status, v) = post(&client, &url, json!({"inputs": "Hi", "parameters": {"truncate": 513}})).await;
    assert_eq!(status, 422);
    assert!(v["error"].as_str().unwrap().contains("truncate"), "{v}");

    // After all that, a good request still succeeds.
    let (status, v) = post(&client, &url, json!({"inputs": "Hi", "parameters": {"max_new_tokens": 4}})).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["generated_text"].is_string());
    server.shutdown().await.unwrap();
}

/// Every route the router serves is described in openapi.yaml (under `paths:`, with its method).
#[test]
fn openapi_describes_every_route() {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let paths = spec.split("\npaths:\n").nth(1).expect("a paths section");
    let paths = format!("\n{}", paths.split("\ncomponents:").next().unwrap());
    for (method, route) in t5serve::http::ROUTES {
        let start = paths.find(&format!("\n  {route}:\n")).unwrap_or_else(|| panic!("openapi.yaml lacks path {route}"));
        let rest = &paths[start + 1..];
        let end = rest[1..].find("\n  /").map_or(rest.len(), |e| e + 1);
        assert!(rest[..end].contains(&format!("\n    {method}:")), "openapi.yaml lacks {method} {route}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_reports_the_model_and_its_limits() {
    let server = start_server(tiny_model()).await;
    let v: Value = reqwest::get(format!("http://{}/v1/models", server.addr)).await.unwrap().json().await.unwrap();
    assert_eq!(v["execution_provider"], "CPUExecutionProvider");
    assert_eq!(v["models"][0]["id"], "tiny-t5");
    assert_eq!(v["models"][0]["dimensions"]["d_model"], 32);
    assert_eq!(v["models"][0]["limits"]["max_input_tokens"], 512);
    assert_eq!(v["models"][0]["weights"], "float32");
    assert_eq!(v["models"][0]["quantization"], Value::Null);
    server.shutdown().await.unwrap();
}

/// Sends raw bytes on a fresh connection and returns the status line's code and the body.
async fn raw_exchange(addr: std::net::SocketAddr, parts: &[&[u8]], pause: std::time::Duration) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    for part in parts {
        // The server may answer (and close) before everything is sent: later writes may fail.
        if stream.write_all(part).await.is_err() {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_oversize_bodies_get_413_and_slow_bodies_408() {
    let server = common::start_server_with(tiny_model(), |c| {
        c.max_body_bytes = 4096;
        c.body_read_timeout_ms = 300;
    })
    .await;
    // Chunked: no Content-Length to refuse up front; the limit applies while reading.
    let head = b"POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let chunk = format!("400\r\n{}\r\n", "a".repeat(0x400));
    let chunks: Vec<&[u8]> = std::iter::once(&head[..]).chain(std::iter::repeat_n(chunk.as_bytes(), 8)).collect();
    let (status, v) = raw_exchange(server.addr, &chunks, std::time::Duration::ZERO).await;
    assert_eq!((status, v["error_type"].as_str()), (413, Some("payload_too_large")), "{v}");

    // A client that announces a body and stops sending it is cut off at body_read_timeout_ms.
    let head = b"POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"inputs\"";
    let started = std::time::Instant::now();
    let (status, v) = raw_exchange(server.addr, &[head], std::time::Duration::ZERO).await;
    assert_eq!((status, v["error_type"].as_str()), (408, Some("request_timeout")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("body_read_timeout_ms"), "{v}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));

    // One trickling a byte every 50 ms is cut off too: the timeout covers the whole body.
    let body = br#"{"inputs": "Hi", "parameters": {"max_new_tokens": 2}}"#;
    let head = format!(
        "POST /v1/generate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut parts: Vec<&[u8]> = vec![head.as_bytes()];
    parts.extend(body.chunks(1));
    let (status, v) = raw_exchange(server.addr, &parts, std::time::Duration::from_millis(50)).await;
    assert_eq!((status, v["error_type"].as_str()), (408, Some("request_timeout")), "{v}");

    // The same body sent at once is served.
    let mut whole = head.into_bytes();
    whole.extend_from_slice(body);
    let (status, v) = raw_exchange(server.addr, &[&whole, b""], std::time::Duration::ZERO).await;
    assert_eq!(status, 200, "{v}");
    server.shutdown().await.unwrap();
}
