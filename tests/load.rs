//! Load on the bundled model through a real socket: 5,000 requests at concurrency 64, every
//! answer checked against an independent reference (optimum's outputs in the end-to-end fixture),
//! no error, and resident memory at the end within 10% of after warm-up. Alone in its test
//! binary, so that the process's memory is the server's.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::*;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Fixture {
    max_new_tokens: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize, Clone)]
struct Case {
    task: String,
    prompt: String,
    optimum: String,
    near_tie: bool,
}

/// Resident memory of this process (the server runs in it), in bytes: `VmRSS` of
/// /proc/self/status, which the kernel gives in kB whatever the page size (statm counts pages,
/// and pages are 4 KiB on most x86-64 kernels but not all Linux ones).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS in /proc/self/status");
    kb.trim().strip_suffix("kB").expect("VmRSS in kB").trim().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_requests_at_concurrency_64_are_all_answered_correctly_in_bounded_memory() {
    let fx: Fixture = serde_json::from_str(&cpu_fixture("numbers_heldout.json")).unwrap();
    let model = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/t5-numbers");
    // max_concurrent_requests (256) is above the concurrency: no 429 can occur.
    let server = start_server(model).await;
    let url = format!("http://{}/v1/generate", server.addr);
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let max_new = fx.max_new_tokens;

    // One client task per connection; request i asks prompt i mod the fixture's count.
    let run = |total: usize, concurrency: usize| {
        let (client, url, cases) = (client.clone(), url.clone(), fx.cases.clone());
        async move {
            let mut tasks = Vec::new();
            for worker in 0..concurrency {
                let (c, u, cases) = (client.clone(), url.clone(), cases.clone());
                tasks.push(tokio::spawn(async move {
                    let mut out = BTreeMap::new();
                    for i in (worker..total).step_by(concurrency) {
                        let case = &cases[i % cases.len()];
                        let body = json!({"inputs": case.prompt, "parameters": {"max_new_tokens": max_new}});
                        let r = c.post(&u).json(&body).send().await.unwrap();
                        let status = r.status().as_u16();
                        let v: Value = r.json().await.unwrap();
                        out.insert(i, (status, v["generated_text"].as_str().unwrap_or("").to_string()));
                    }
                    out
                }));
            }
            let mut all = BTreeMap::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        }
    };
    // A warm-up round the size of the measured one, then the memory baseline: ONNX Runtime's
    // arenas keep their peak, and which rows share a batch (so the peak shapes: the extraction
    // prompts' long answers) varies with the interleaving; a leak still grows in the second round.
    // With a 640-request warm-up the bundled model grew 307 -> 352 MB over the 5000.
    let warm = run(5000, 64).await;
    assert!(warm.values().all(|(s, _)| *s == 200));
    let before = rss_bytes();
    let started = Instant::now();
    let results = run(5000, 64).await;
    let seconds = started.elapsed().as_secs_f64();
    let after = rss_bytes();

    assert_eq!(results.len(), 5000);
    // int8 answers move a little with their batch-mates (common::BATCH_MOVED_PCT); those of the
    // tasks the model has not learned yet are only counted.
    let (mut non_2xx, mut learned, mut unlearned_moved) = (0, 0, 0);
    let mut differ = Vec::new();
    for (i, (status, text)) in &results {
        let case = &fx.cases[i % fx.cases.len()];
        let held = common::learned(&case.task);
        learned += usize::from(held);
        if *status != 200 {
            non_2xx += 1;
        } else if *text != case.optimum && !case.near_tie {
            if held {
                differ.push((case.prompt.clone(), text.clone(), case.optimum.clone()));
            } else {
                unlearned_moved += 1;
            }
        }
    }
    println!(
        "5000 requests at concurrency 64: {:.1} s ({:.0} requests/s), {non_2xx} non-2xx, {} of {learned} \
         differ from optimum ({unlearned_moved} of tasks not learned yet); \
         resident memory {:.1} MB after warm-up, {:.1} MB at the end",
        seconds,
        5000.0 / seconds,
        differ.len(),
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    assert_eq!(non_2xx, 0);
    assert!(
        few_moved(differ.len(), learned),
        "{} answers differ from optimum's: {:?}",
        differ.len(),
        &differ[..differ.len().min(5)]
    );
    assert!((after as f64) <= before as f64 * 1.10, "memory grew from {before} to {after} bytes");
    let client = reqwest::Client::new();
    assert_eq!(wait_for_metric(&client, server.addr, "t5serve_active_rows", 0.0).await, 0.0);
    server.shutdown().await.unwrap();
}
