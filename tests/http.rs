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
    for (what, ct, body, status, error_type) in cases {
        let mut req = client.post(&url).body(body.to_string());
        if let Some(ct) = ct {
            req = req.header("content-type", *ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), *status, "{what}");
        assert!(r.headers().contains_key("x-request-id"), "{what}");
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

    // A body over max_body_bytes is refused with 413 and JSON.
    let big = json!({"inputs": "a ".repeat(600_000)});
    let (status, v) = post(&client, &url, big).await;
    assert_eq!((status, v["error_type"].as_str()), (413, Some("payload_too_large")), "{v}");

    // An input over max_input_tokens is refused before decoding, naming the limit.
    let long = "word ".repeat(600);
    let (status, v) = post(&client, &url, json!({"inputs": long})).await;
    assert_eq!(status, 422);
    assert!(v["error"].as_str().unwrap().contains("max_input_tokens"), "{v}");

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
    server.shutdown().await.unwrap();
}
