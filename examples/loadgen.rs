//! Load generator for the benchmark (bench/run.sh): drives a running t5serve over HTTP and
//! prints one JSON line of figures.
//!
//!   closed loop:  loadgen URL closed CONCURRENCY REQUESTS PROMPT_FILE NEW_TOKENS
//!   open loop:    loadgen URL open RATE_PER_S REQUESTS PROMPT_FILE NEW_TOKENS SEED
//!   classify:     loadgen URL classify CONCURRENCY REQUESTS INPUTS_FILE BATCH
//!
//! Every generate request asks for exactly NEW_TOKENS tokens (min_new_tokens = max_new_tokens).
//! A classify request sends BATCH inputs (lines of INPUTS_FILE, in turn) to /v1/classify with the
//! model's default labels; its `tokens_per_s` figure counts classified inputs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

struct Sample {
    latency: Duration,
    tokens: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// What every request of a run asks.
enum Work {
    Generate { prompt: String, new_tokens: u64 },
    Classify { inputs: Vec<String>, batch: usize },
}

async fn one(client: &reqwest::Client, base: &str, work: &Work, i: usize) -> Sample {
    let (url, body) = match work {
        Work::Generate { prompt, new_tokens: n } => (
            format!("{base}/v1/generate"),
            json!({"inputs": prompt, "parameters": {"max_new_tokens": n, "min_new_tokens": n}}),
        ),
        Work::Classify { inputs, batch } => {
            let chunk: Vec<&String> = inputs.iter().cycle().skip(i * batch % inputs.len()).take(*batch).collect();
            (format!("{base}/v1/classify"), json!({"inputs": chunk}))
        }
    };
    let t = Instant::now();
    let r = client.post(url).json(&body).send().await.expect("request sent");
    assert!(r.status().is_success(), "status {}", r.status());
    let v: serde_json::Value = r.json().await.expect("JSON answer");
    let tokens = match work {
        Work::Generate { .. } => v["usage"]["generated_tokens"].as_u64().unwrap_or(0),
        Work::Classify { .. } => v.as_array().map_or(0, |a| a.len() as u64),
    };
    Sample { latency: t.elapsed(), tokens }
}

/// (sum, count) of the server's time-to-first-token histogram.
async fn ttft(client: &reqwest::Client, base: &str) -> (f64, f64) {
    let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let get = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    (get("t5serve_time_to_first_token_seconds_sum"), get("t5serve_time_to_first_token_seconds_count"))
}

/// A small deterministic generator for exponential inter-arrival times.
struct Lcg(u64);
impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!(
            "usage: loadgen URL closed|open|classify CONCURRENCY|RATE REQUESTS PROMPT_FILE NEW_TOKENS|BATCH [SEED]"
        );
        std::process::exit(2);
    }
    let base = args[1].trim_end_matches('/').to_string();
    let mode = args[2].as_str();
    let param: f64 = args[3].parse().expect("concurrency or rate");
    let requests: usize = args[4].parse().expect("requests");
    let text = std::fs::read_to_string(&args[5]).expect("prompt file");
    let n: u64 = args[6].parse().expect("new tokens or batch");
    let work = Arc::new(if mode == "classify" {
        Work::Classify { inputs: text.lines().map(str::to_string).collect(), batch: n as usize }
    } else {
        Work::Generate { prompt: text.trim_end().to_string(), new_tokens: n }
    });
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    // Warm-up: one request.
    one(&client, &base, &work, 0).await;

    let ttft_before = ttft(&client, &base).await;
    let start = Instant::now();
    let mut handles = Vec::new();
    match mode {
        "closed" | "classify" => {
            let concurrency = param as usize;
            let per = requests.div_ceil(concurrency);
            for k in 0..concurrency {
                let (c, u, w) = (client.clone(), base.clone(), work.clone());
                handles.push(tokio::spawn(async move {
                    let mut out = Vec::with_capacity(per);
                    for j in 0..per {
                        out.push(one(&c, &u, &w, k * per + j).await);
                    }
                    out
                }));
            }
        }
        "open" => {
            let mut rng = Lcg(args.get(7).and_then(|s| s.parse().ok()).unwrap_or(7));
            let mut at = Duration::ZERO;
            for _ in 0..requests {
                at += Duration::from_secs_f64(-rng.uniform().ln() / param);
                let (c, u, w) = (client.clone(), base.clone(), work.clone());
                let when = start + at;
                handles.push(tokio::spawn(async move {
                    tokio::time::sleep_until(when.into()).await;
                    vec![one(&c, &u, &w, 0).await]
                }));
            }
        }
        other => panic!("unknown mode {other}"),
    }
    let mut samples = Vec::new();
    for h in handles {
        samples.extend(h.await.unwrap());
    }
    let wall = start.elapsed().as_secs_f64();
    let ttft_after = ttft(&client, &base).await;
    let ttft_mean = (ttft_after.0 - ttft_before.0) / (ttft_after.1 - ttft_before.1).max(1.0);
    let tokens: u64 = samples.iter().map(|s| s.tokens).sum();
    let mut lat: Vec<f64> = samples.iter().map(|s| s.latency.as_secs_f64()).collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "mode": mode, "param": param, "requests": samples.len(), "wall_s": wall,
            "tokens_per_s": tokens as f64 / wall, "requests_per_s": samples.len() as f64 / wall,
            "p50_s": percentile(&lat, 0.5), "p99_s": percentile(&lat, 0.99), "mean_s": lat.iter().sum::<f64>() / lat.len() as f64, "ttft_mean_s": ttft_mean,
        })
    );
}
