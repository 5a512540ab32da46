//! Shared by the integration tests: the committed tiny model, its golden outputs (computed by
//! transformers), and a real server on port 0.
#![allow(dead_code)]

use std::path::PathBuf;

use serde::Deserialize;
use t5serve::generation::GenerationParams;
use t5serve::model::{Seq2SeqModel, SessionSettings};
use t5serve::scheduler::batch::{StepObserver, run_batch};
use t5serve::scheduler::{Event, RowRequest};

/// Absolute tolerance on logits, as the issue sets it.
pub const TOL: f32 = 1e-4;

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The text of a fixture of the bundled int8 model's figures (`numbers_heldout.json`,
/// `numbers_decoding.json`) that holds on this machine's CPU.
///
/// int8 figures depend on ONNX Runtime's u8 x s8 kernel, which depends on the CPU
/// (src/model/cpu.rs). The reference is therefore the one `scripts/cpu_reference.py` computed on
/// this machine (optimum + transformers on the same files), in `target/cpu-reference/` or
/// `$T5SERVE_CPU_REFERENCE` (`scripts/test.sh` makes it first). Without one, the committed
/// fixture holds where its kernel and this CPU's both sum the products in 32 bits: those products
/// are then exact integers, so such CPUs agree to the last printed digit (the fixtures the
/// export's machine made, and a reference made with AMX, agreed on every text, margin and
/// score). A kernel that saturates needs the reference made here: under an emulated AVX2 CPU, 10
/// of the 114 beam hypotheses changed.
pub fn cpu_fixture(name: &str) -> String {
    use t5serve::model::cpu::{CpuFeatures, host};
    let made_on = |text: &str| -> CpuFeatures {
        let v: serde_json::Value = serde_json::from_str(text).expect("fixture parses");
        let names: Vec<&str> = v["cpu"]["features"]
            .as_array()
            .expect("the fixture records its cpu")
            .iter()
            .filter_map(|f| f.as_str())
            .collect();
        CpuFeatures::from_names(&names)
    };
    let dir = std::env::var_os("T5SERVE_CPU_REFERENCE")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cpu-reference"), PathBuf::from);
    let make_it =
        "make it with `.venv/bin/python scripts/cpu_reference.py target/cpu-reference` (scripts/test.sh does)";
    if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
        let then = made_on(&text);
        assert_eq!(
            then,
            *host(),
            "{} was made on another CPU ({:?}), not this one: {make_it}",
            dir.join(name).display(),
            then.names()
        );
        return text;
    }
    let text = std::fs::read_to_string(data_dir().join(name)).unwrap();
    let (then, now) = (made_on(&text).int8_kernel(), host().int8_kernel());
    assert!(
        then == now || !(then.saturates() || now.saturates()),
        "tests/data/{name} holds the figures of the {} int8 kernel; this CPU's {} kernel saturates, so the reference \
         must be computed here: {make_it}",
        then.name(),
        now.name()
    );
    text
}

pub fn tiny_model() -> PathBuf {
    data_dir().join("tiny-t5")
}

pub fn tiny_model_merged() -> PathBuf {
    data_dir().join("tiny-t5-merged")
}

#[derive(Debug, Deserialize)]
pub struct Golden {
    pub steps: usize,
    pub min_new_tokens: usize,
    pub eos_token_id: u32,
    pub cases: Vec<GoldenCase>,
}

#[derive(Debug, Deserialize)]
pub struct GoldenCase {
    pub prompt: String,
    pub input_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub natural_ids: Vec<u32>,
    pub top5: Vec<TopK>,
}

#[derive(Debug, Deserialize)]
pub struct TopK {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}

pub fn golden() -> Golden {
    let text = std::fs::read_to_string(data_dir().join("golden.json")).expect("tests/data/golden.json");
    serde_json::from_str(&text).expect("golden.json parses")
}

pub fn load(dir: &std::path::Path) -> Seq2SeqModel {
    Seq2SeqModel::load(dir, &SessionSettings::default()).expect("model loads")
}

/// Records every row's logits at every step.
#[derive(Default)]
pub struct Recorder {
    pub steps: std::collections::HashMap<usize, Vec<Vec<f32>>>,
}

impl StepObserver for Recorder {
    fn logits(&mut self, row: usize, step: usize, logits: &[f32]) {
        let rows = self.steps.entry(row).or_default();
        assert_eq!(rows.len(), step, "steps arrive in order");
        rows.push(logits.to_vec());
    }
}

/// One decoded row: its ids and how it finished.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub ids: Vec<u32>,
    pub finished: Event,
}

/// Decodes the inputs as one batch on the calling thread, recording logits.
pub fn decode_batch(
    model: &Seq2SeqModel,
    inputs: &[Vec<u32>],
    params: GenerationParams,
    rec: &mut Recorder,
) -> Vec<Decoded> {
    let (rows, mut rxs): (Vec<_>, Vec<_>) = inputs.iter().map(|ids| RowRequest::new(ids.clone(), params)).unzip();
    run_batch(model, rows, rec);
    rxs.iter_mut()
        .map(|rx| {
            let mut ids = Vec::new();
            loop {
                match rx.try_recv().expect("the batch is finished, all events are queued") {
                    Event::Token { id, .. } => ids.push(id),
                    other => {
                        return Decoded { ids, finished: other };
                    }
                }
            }
        })
        .collect()
}

pub fn golden_params(g: &Golden) -> GenerationParams {
    GenerationParams::greedy(g.steps, g.min_new_tokens)
}

/// Starts the real server on 127.0.0.1:0 with the given model, and waits until it is ready.
pub async fn start_server(model: PathBuf) -> t5serve::RunningServer {
    start_server_with(model, |_| {}).await
}

async fn wait_ready(server: &t5serve::RunningServer) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !server.health.ready.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(std::time::Instant::now() < until, "the server did not become ready");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Starts the real server on 127.0.0.1:0 with a changed config.
pub async fn start_server_with(model: PathBuf, change: impl FnOnce(&mut t5serve::Config)) -> t5serve::RunningServer {
    let mut config = t5serve::Config { model: model.into(), host: "127.0.0.1".into(), port: 0, ..Default::default() };
    change(&mut config);
    let server = t5serve::start(config).await.expect("server starts");
    wait_ready(&server).await;
    server
}

/// The value of a metric in /metrics: `query` is a name, or a name with labels
/// (`name{route="/v1/generate",status="200"}`); the series whose labels include the given ones
/// are summed (most series are split by the `model` label, for instance).
pub async fn metric(client: &reqwest::Client, addr: std::net::SocketAddr, query: &str) -> f64 {
    let text = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    let (name, want) = series(query.trim());
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(s, v)| {
            let (n, labels) = series(s);
            (n == name && want.iter().all(|w| labels.contains(w))).then(|| v.parse().unwrap())
        })
        .collect();
    assert!(!values.is_empty(), "metric {query} not in /metrics:\n{text}");
    values.iter().sum()
}

/// A series' name and its labels, from `name{k="v",...}` (values may hold braces and escaped
/// quotes).
fn series(s: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = s.split_once('{') else { return (s, Vec::new()) };
    let mut labels = Vec::new();
    let mut chars = rest.chars();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect::<String>();
        let key = key.trim_start_matches(',').to_string();
        if key.is_empty() || key.starts_with('}') || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key, value));
    }
    (name, labels)
}

/// Polls a metric until it reaches `want` or 30 seconds pass; returns its last value.
pub async fn wait_for_metric(client: &reqwest::Client, addr: std::net::SocketAddr, name: &str, want: f64) -> f64 {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v = metric(client, addr, name).await;
        if v == want || std::time::Instant::now() > until {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// POSTs JSON; returns the status and the JSON answer.
pub async fn post(client: &reqwest::Client, url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = client.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The real binary serving the tiny model on a free port, its output in a log file.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub base: String,
    pub log: PathBuf,
}

/// Starts `t5serve serve` on the tiny model with `extra` flags and returns once it listens.
pub fn spawn_binary(extra: &[&str]) -> ServerProcess {
    spawn_binary_on(&tiny_model(), extra)
}

/// Starts `t5serve serve` on `model` with `extra` flags and returns once it listens.
pub fn spawn_binary_on(model: &std::path::Path, extra: &[&str]) -> ServerProcess {
    spawn_binary_env(model, extra, &[])
}

/// `spawn_binary_on` with extra environment variables.
// The caller waits for the child: the tests are about how it exits.
#[allow(clippy::zombie_processes)]
pub fn spawn_binary_env(model: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
    static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let log = std::env::temp_dir().join(format!("t5serve-process-{}-{n}.log", std::process::id()));
    let file = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_t5serve"))
        .args(["serve", "--model", model.to_str().unwrap(), "--port", "0"])
        .args(extra)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::from(file.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(file))
        .spawn()
        .unwrap();
    let mut server = ServerProcess { child, base: String::new(), log };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = server.log_text();
        if let Some(i) = text.find("listening addr=") {
            let addr: String = text[i + 15..].chars().take_while(|c| !c.is_whitespace()).collect();
            server.base = format!("http://{addr}");
            return server;
        }
        assert!(std::time::Instant::now() < until, "server did not start:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl ServerProcess {
    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Polls /health/ready until it answers 200.
    pub async fn wait_ready(&self, client: &reqwest::Client) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while client.get(format!("{}/health/ready", self.base)).send().await.unwrap().status().as_u16() != 200 {
            assert!(std::time::Instant::now() < until, "never ready");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Polls /health/ready until it answers 503 (the process drains after SIGTERM), for at most
    /// 10 s: how soon a signal is handled depends on the machine's load, not on the server.
    pub async fn wait_draining(&self, client: &reqwest::Client) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while client.get(format!("{}/health/ready", self.base)).send().await.unwrap().status().as_u16() != 503 {
            assert!(std::time::Instant::now() < until, "readiness never turned 503 after SIGTERM");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Kills the process and returns its log (the log file is removed).
    pub fn kill_and_log(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let text = self.log_text();
        std::fs::remove_file(&self.log).ok();
        text
    }

    /// Waits for the process to exit (`wait_exit`), checking meanwhile that it never answers
    /// ready while it is still up.
    pub async fn wait_exit_unready(self, client: &reqwest::Client) -> (std::process::ExitStatus, String) {
        let base = self.base.clone();
        self.wait_exit(async || {
            if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
                assert_eq!(r.status().as_u16(), 503);
            }
        })
        .await
    }

    /// Waits up to 30 s for the process to exit, calling `meanwhile` between polls; returns its
    /// status and its log (the log file is removed).
    pub async fn wait_exit(mut self, mut meanwhile: impl AsyncFnMut()) -> (std::process::ExitStatus, String) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            meanwhile().await;
            assert!(std::time::Instant::now() < until, "the process did not exit");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let text = self.log_text();
        std::fs::remove_file(&self.log).ok();
        (status, text)
    }
}

/// Most number-task answers (%) that may change with their batch-mates. The int8 activation
/// scales are computed over the whole batch, so a row's logits move with the other rows. Measured
/// on the bundled model (2-core AVX2 EPYC, the 600 number-task fixture prompts alone and 32 per
/// request): 4 answers moved, all with all-caps inputs, with top-2 margins alone up to 0.66; the
/// fp32 export of the same checkpoint through the same server moved none (so the cache and padding
/// are not the cause; tests/batching.rs holds fp32 batching exact). Twice the measured share.
pub const BATCH_MOVED_PCT: usize = 2;

/// Tasks the bundled model has not learned yet (issue 24: extraction is at entity F1 0.13-0.16,
/// its answers mostly degenerate, and 14 of its 100 fixture answers moved in a batch): their
/// moves are reported, not held to BATCH_MOVED_PCT.
pub const UNLEARNED: &[&str] = &["entities"];

/// Whether a task of the bundled model is held to BATCH_MOVED_PCT (not in UNLEARNED).
pub fn learned(task: &str) -> bool {
    !UNLEARNED.contains(&task)
}

/// Whether `moved` answers of `held` (of learned tasks) stay within BATCH_MOVED_PCT.
pub fn few_moved(moved: usize, held: usize) -> bool {
    moved * 100 <= held * BATCH_MOVED_PCT
}
