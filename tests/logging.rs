//! Request ids in the logs of the real binary (JSON format, debug level): taken from
//! `x-request-id` (or generated), returned in the response, and present on the request's log
//! lines, those the decode thread writes about its rows included.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_on_every_log_line_of_the_request() {
    let log = std::env::temp_dir().join(format!("t5serve-logging-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny-t5");
    let mut child = Command::new(env!("CARGO_BIN_EXE_t5serve"))
        .args(["serve", "--model", model, "--port", "0", "--log-format", "json"])
        .env("RUST_LOG", "debug,ort=warn,hyper=info,reqwest=info")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let lines = || -> Vec<Value> {
        let mut text = String::new();
        std::fs::File::open(&log).unwrap().read_to_string(&mut text).unwrap();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let until = Instant::now() + Duration::from_secs(60);
    let base = loop {
        if let Some(addr) = lines().iter().find_map(|l| {
            (l["fields"]["message"] == "listening").then(|| l["fields"]["addr"].as_str().unwrap().to_string())
        }) {
            break format!("http://{addr}");
        }
        assert!(Instant::now() < until, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = reqwest::Client::new();
    while client.get(format!("{base}/health/ready")).send().await.unwrap().status().as_u16() != 200 {
        assert!(Instant::now() < until, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A given id is echoed; the request's rows finish on the decode thread.
    let body = json!({"inputs": ["Hi", "Ho"], "parameters": {"max_new_tokens": 3, "min_new_tokens": 3}});
    let r = client.post(format!("{base}/v1/generate")).header("x-request-id", "req-logs-7").json(&body).send().await;
    let r = r.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-logs-7");
    // Without one, an id is generated and returned.
    let r = client.post(format!("{base}/v1/generate")).json(&body).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!generated.is_empty() && generated != "req-logs-7");
    let id_of = |l: &Value| -> Vec<String> {
        let spans = l["spans"].as_array().cloned().unwrap_or_default();
        spans.iter().filter_map(|s| s["request_id"].as_str().map(str::to_string)).collect()
    };
    let finished_rows = |all: &[Value], id: &str| {
        all.iter().filter(|l| l["fields"]["message"] == "row finished" && id_of(l).iter().any(|i| i == id)).count()
    };
    // The decode thread writes its lines on its own; wait for them, however long that takes here.
    while ["req-logs-7", generated.as_str()].iter().any(|id| finished_rows(&lines(), id) < 2) {
        assert!(Instant::now() < until, "the rows' log lines never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let all = lines();
    std::fs::remove_file(&log).ok();

    // The rows' "row finished" lines come from the decode thread, in the request's span.
    for id in ["req-logs-7", generated.as_str()] {
        assert_eq!(finished_rows(&all, id), 2, "two rows of request {id} finished, each logged with its id");
    }
    // Every line written while serving a request carries an id.
    let request_lines: Vec<&Value> = all.iter().filter(|l| l["span"]["name"] == "request").collect();
    assert!(request_lines.len() >= 4, "{request_lines:?}");
    assert!(request_lines.iter().all(|l| !id_of(l).is_empty()), "{request_lines:?}");
}
