//! The one configuration of the service. Precedence: built-in defaults < the TOML file
//! (`config/default.toml`, or `--config`) < environment variables (`T5SERVE_*`) < command-line
//! flags. `validate()` runs at start-up and names the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

/// The bundled model served when none is configured: a small T5 trained here on number words
/// (`scripts/train_default_model.py`; its card is `models/t5-numbers/README.md`).
pub const DEFAULT_MODEL: &str = "models/t5-numbers";

/// The file read when neither `--config` nor `T5SERVE_CONFIG` names one, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "config/default.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Where ONNX Runtime runs the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Cpu,
    /// NVIDIA GPU; needs the onnxruntime-gpu library (`scripts/setup_ort.sh gpu`), CUDA 13 and cuDNN 9.
    Cuda,
}

/// Whose intra-op threads run the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
#[clap(rename_all = "kebab-case")]
pub enum ThreadPool {
    /// One process-wide pool that the encoder and decoder sessions share.
    Global,
    /// A pool per session (ONNX Runtime's default).
    PerSession,
}

/// A secret that never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// When set, /v1/*, /generate, /generate_stream and / need `Authorization: Bearer <key>`.
    pub api_key: Option<Secret>,
    /// With an api_key: whether /metrics needs it too (the /health routes never do).
    pub metrics_need_key: bool,
    /// Browser origins allowed by CORS (e.g. "https://app.example"); none by default.
    pub cors_origins: Vec<String>,
    /// Model directory in optimum's seq2seq-with-past layout.
    pub model: PathBuf,
    /// Address to listen on.
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Path of libonnxruntime.so; unset means ORT_DYLIB_PATH, then .ort/.
    pub ort_library: Option<PathBuf>,
    /// ONNX Runtime intra-op threads (of the global pool, or of each session's); 0 means one per core.
    pub intra_op_threads: usize,
    /// One global ONNX Runtime thread pool shared by every session, or one pool per session.
    pub ort_thread_pool: ThreadPool,
    /// Run prefill (the encoder and first decoder step of new rows) on its own thread, overlapped
    /// with the running rows' decoder steps (on the global pool, which both then share).
    pub prefill_thread: bool,
    /// With prefill_thread and ort_thread_pool = per-session: ONNX Runtime threads of the
    /// prefill sessions, 0 = half the cores; the decoder-step sessions get intra_op_threads,
    /// 0 = the other cores.
    pub prefill_threads: usize,
    /// Let ONNX Runtime threads busy-wait between ops (they block again after a short spin).
    pub intra_op_spinning: bool,
    /// Independent decode loops, each with its own sessions (with a pool of intra_op_threads each,
    /// 0 = an equal share of the cores), queue, and share of the batch size and memory budget; new
    /// requests go to the least loaded. With 1, the sessions use ort_thread_pool.
    pub decode_lanes: usize,
    /// With several decode lanes: one more set of sessions with a thread per core (one more copy
    /// of the weights in memory), shared by the lanes; a lane runs on it while the other lanes
    /// are idle, so that a lone request gets every core.
    pub solo_sessions: bool,
    /// Tokio worker threads (HTTP, JSON, SSE); 0 = auto: one per 4 cores, at least 1, so that
    /// HTTP work does not take the cores ONNX Runtime's pool runs on.
    pub http_threads: usize,
    /// Threads that tokenize request texts (and run other blocking work); at least 1.
    pub tokenizer_threads: usize,
    /// Where the graphs run: cpu, or cuda (registered explicitly; start-up fails if it cannot be).
    pub execution_provider: ExecutionProvider,
    /// GPU index for the cuda provider.
    pub device_id: u32,
    /// Longest accepted input, in tokens (EOS included).
    pub max_input_tokens: usize,
    /// Largest `max_new_tokens` a request may ask for.
    pub max_new_tokens_limit: usize,
    /// `max_new_tokens` when a request does not set it.
    pub default_max_new_tokens: usize,
    /// Most inputs in one request.
    pub max_client_batch_size: usize,
    /// Most stop sequences in one request.
    pub max_stop_sequences: usize,
    /// Most beams a request may ask for.
    pub max_num_beams: usize,
    /// Most candidate labels in one classify request.
    pub max_labels: usize,
    /// Default labels of /v1/classify; empty means the model's own (its t5serve.json).
    pub classify_labels: Vec<String>,
    /// Default prompt of /v1/classify, with {text}; unset means the model's own, else "{text}".
    pub classify_template: Option<String>,
    /// Language pairs of /v1/translate; empty means the model's own, else T5's
    /// (English to German, French and Romanian).
    pub translate_pairs: Vec<crate::tasks::translate::LanguagePair>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long a client may take to send a whole request body, in milliseconds; then 408.
    pub body_read_timeout_ms: u64,
    /// Requests in flight at once (queued or decoding); beyond it, 429 at once.
    pub max_concurrent_requests: usize,
    /// Most rows decoding at once, over all cohorts.
    pub max_batch_size: usize,
    /// Memory budget of running rows (encoder output + worst-case key/value cache), in MiB.
    pub max_batch_memory_mb: usize,
    /// How long a queued request may wait for others to start a batch with, in milliseconds.
    pub max_queue_delay_ms: u64,
    /// Most batches (cohorts) decoding side by side.
    pub max_cohorts: usize,
    /// Default deadline of a request while queued, in milliseconds; a request may set a shorter one.
    pub queue_deadline_ms: u64,
    /// Longest a request may take in all (queue and decoding), in milliseconds; then 504.
    pub request_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long requests in flight may take to finish, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Log output: pretty (human) or json (one object per line).
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_key: None,
            metrics_need_key: false,
            cors_origins: Vec::new(),
            model: PathBuf::from(DEFAULT_MODEL),
            host: "127.0.0.1".into(),
            port: 8080,
            ort_library: None,
            intra_op_threads: 0,
            ort_thread_pool: ThreadPool::Global,
            prefill_thread: true,
            prefill_threads: 0,
            http_threads: 0,
            tokenizer_threads: 2,
            intra_op_spinning: true,
            decode_lanes: 0,
            solo_sessions: true,
            execution_provider: ExecutionProvider::Cpu,
            device_id: 0,
            max_input_tokens: 512,
            max_new_tokens_limit: 512,
            default_max_new_tokens: 64,
            max_client_batch_size: 32,
            max_stop_sequences: 4,
            max_num_beams: 8,
            max_labels: 64,
            classify_labels: Vec::new(),
            classify_template: None,
            translate_pairs: Vec::new(),
            max_body_bytes: 1 << 20,
            body_read_timeout_ms: 10_000,
            max_concurrent_requests: 256,
            max_batch_size: 32,
            max_batch_memory_mb: 1024,
            max_queue_delay_ms: 2,
            max_cohorts: 4,
            queue_deadline_ms: 30_000,
            request_timeout_ms: 600_000,
            shutdown_grace_ms: 30_000,
            log_format: LogFormat::Pretty,
        }
    }
}

/// Command-line flags; each also reads its `T5SERVE_*` environment variable, and overrides the file.
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    /// Configuration file (TOML) [default: config/default.toml when it exists]
    #[arg(long, env = "T5SERVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// API key clients must send as `Authorization: Bearer <key>` [default: none, no key needed]
    #[arg(long, env = "T5SERVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,
    /// With an API key, require it on /metrics too [default: false]
    #[arg(long, env = "T5SERVE_METRICS_NEED_KEY")]
    pub metrics_need_key: Option<bool>,
    /// Browser origins CORS allows, comma-separated [default: none]
    #[arg(long, env = "T5SERVE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// Model directory (optimum seq2seq-with-past export) [default: the bundled model]
    #[arg(long, env = "T5SERVE_MODEL")]
    pub model: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "T5SERVE_HOST")]
    pub host: Option<String>,
    /// Port to listen on, 0 for any free port [default: 8080]
    #[arg(long, env = "T5SERVE_PORT")]
    pub port: Option<u16>,
    /// Path of libonnxruntime.so [default: $ORT_DYLIB_PATH, then .ort/libonnxruntime.so.1.31.1]
    #[arg(long, env = "T5SERVE_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,
    /// ONNX Runtime intra-op threads (of the global pool, or per session), 0 = one per core [default: 0]
    #[arg(long, env = "T5SERVE_INTRA_OP_THREADS")]
    pub intra_op_threads: Option<usize>,
    /// One ONNX Runtime thread pool shared by all sessions, or one per session [default: global]
    #[arg(long, env = "T5SERVE_ORT_THREAD_POOL", value_enum)]
    pub ort_thread_pool: Option<ThreadPool>,
    /// Run prefill on its own thread and cores, overlapped with decoding [default: true]
    #[arg(long, env = "T5SERVE_PREFILL_THREAD")]
    pub prefill_thread: Option<bool>,
    /// With prefill_thread and a pool per session: threads for prefill, 0 = half the cores [default: 0]
    #[arg(long, env = "T5SERVE_PREFILL_THREADS")]
    pub prefill_threads: Option<usize>,
    /// Let ONNX Runtime threads busy-wait between ops [default: true]
    #[arg(long, env = "T5SERVE_INTRA_OP_SPINNING")]
    pub intra_op_spinning: Option<bool>,
    /// Independent decode loops, each with its own sessions and share of the cores and batch; 0 = auto: 2 for an int8 model on 2+ CPU cores, else 1 [default: 0]
    #[arg(long, env = "T5SERVE_DECODE_LANES")]
    pub decode_lanes: Option<usize>,
    /// With several lanes: one more set of sessions on all cores, used by a lane while the others are idle [default: true]
    #[arg(long, env = "T5SERVE_SOLO_SESSIONS")]
    pub solo_sessions: Option<bool>,
    /// Tokio worker threads for HTTP, 0 = one per 4 cores, at least 1 [default: 0]
    #[arg(long, env = "T5SERVE_HTTP_THREADS")]
    pub http_threads: Option<usize>,
    /// Threads that tokenize request texts [default: 2]
    #[arg(long, env = "T5SERVE_TOKENIZER_THREADS")]
    pub tokenizer_threads: Option<usize>,
    /// Where the graphs run; cuda needs the onnxruntime-gpu library and fails loudly without it [default: cpu]
    #[arg(long, env = "T5SERVE_EXECUTION_PROVIDER", value_enum)]
    pub execution_provider: Option<ExecutionProvider>,
    /// GPU index for the cuda provider [default: 0]
    #[arg(long, env = "T5SERVE_DEVICE_ID")]
    pub device_id: Option<u32>,
    /// Longest accepted input in tokens [default: 512]
    #[arg(long, env = "T5SERVE_MAX_INPUT_TOKENS")]
    pub max_input_tokens: Option<usize>,
    /// Largest max_new_tokens a request may ask for [default: 512]
    #[arg(long, env = "T5SERVE_MAX_NEW_TOKENS_LIMIT")]
    pub max_new_tokens_limit: Option<usize>,
    /// max_new_tokens when a request sets none [default: 64]
    #[arg(long, env = "T5SERVE_DEFAULT_MAX_NEW_TOKENS")]
    pub default_max_new_tokens: Option<usize>,
    /// Most inputs in one request [default: 32]
    #[arg(long, env = "T5SERVE_MAX_CLIENT_BATCH_SIZE")]
    pub max_client_batch_size: Option<usize>,
    /// Most stop sequences in one request [default: 4]
    #[arg(long, env = "T5SERVE_MAX_STOP_SEQUENCES")]
    pub max_stop_sequences: Option<usize>,
    /// Most beams a request may ask for [default: 8]
    #[arg(long, env = "T5SERVE_MAX_NUM_BEAMS")]
    pub max_num_beams: Option<usize>,
    /// Most candidate labels in one classify request [default: 64]
    #[arg(long, env = "T5SERVE_MAX_LABELS")]
    pub max_labels: Option<usize>,
    /// Default labels of /v1/classify, comma-separated [default: the model's t5serve.json]
    #[arg(long, env = "T5SERVE_CLASSIFY_LABELS", value_delimiter = ',')]
    pub classify_labels: Option<Vec<String>>,
    /// Default prompt of /v1/classify, with {text} [default: the model's t5serve.json, else {text}]
    #[arg(long, env = "T5SERVE_CLASSIFY_TEMPLATE")]
    pub classify_template: Option<String>,
    /// Largest request body in bytes [default: 1048576]
    #[arg(long, env = "T5SERVE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Time to receive a whole request body in ms; then 408 [default: 10000]
    #[arg(long, env = "T5SERVE_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: Option<u64>,
    /// Requests in flight at once; beyond it, 429 [default: 256]
    #[arg(long, env = "T5SERVE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: Option<usize>,
    /// Most rows decoding at once [default: 32]
    #[arg(long, env = "T5SERVE_MAX_BATCH_SIZE")]
    pub max_batch_size: Option<usize>,
    /// Memory budget of running rows in MiB [default: 1024]
    #[arg(long, env = "T5SERVE_MAX_BATCH_MEMORY_MB")]
    pub max_batch_memory_mb: Option<usize>,
    /// Wait for company before starting a batch, in ms [default: 2]
    #[arg(long, env = "T5SERVE_MAX_QUEUE_DELAY_MS")]
    pub max_queue_delay_ms: Option<u64>,
    /// Most batches decoding side by side [default: 4]
    #[arg(long, env = "T5SERVE_MAX_COHORTS")]
    pub max_cohorts: Option<usize>,
    /// Default queue deadline of a request in ms [default: 30000]
    #[arg(long, env = "T5SERVE_QUEUE_DEADLINE_MS")]
    pub queue_deadline_ms: Option<u64>,
    /// Longest a request may take in all, in ms; then 504 [default: 600000]
    #[arg(long, env = "T5SERVE_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Drain time on SIGTERM/SIGINT in ms [default: 30000]
    #[arg(long, env = "T5SERVE_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Log output format [default: pretty]
    #[arg(long, env = "T5SERVE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Reads a TOML file; unknown keys are errors (a typo must not be ignored silently).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// File (explicit, or the default one when present) overlaid with flags/environment, validated.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config = match &overrides.config {
            Some(path) => Self::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => Self::from_file(Path::new(DEFAULT_CONFIG_FILE))?,
            None => Self::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    pub fn apply(&mut self, o: &Overrides) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &o.$field { self.$field = v.clone(); } )* };
        }
        set!(
            metrics_need_key,
            model,
            host,
            port,
            intra_op_threads,
            ort_thread_pool,
            prefill_thread,
            prefill_threads,
            intra_op_spinning,
            decode_lanes,
            solo_sessions,
            http_threads,
            tokenizer_threads,
            execution_provider,
            device_id,
            max_input_tokens,
            max_new_tokens_limit,
            default_max_new_tokens,
            max_client_batch_size,
            max_stop_sequences,
            max_num_beams,
            max_labels,
            max_body_bytes,
            body_read_timeout_ms,
            max_concurrent_requests,
            max_batch_size,
            max_batch_memory_mb,
            max_queue_delay_ms,
            max_cohorts,
            queue_deadline_ms,
            request_timeout_ms,
            shutdown_grace_ms,
            log_format
        );
        if let Some(p) = &o.ort_library {
            self.ort_library = Some(p.clone());
        }
        if let Some(k) = &o.api_key {
            self.api_key = Some(k.clone());
        }
        if let Some(v) = &o.cors_origins {
            self.cors_origins = v.clone();
        }
        if let Some(v) = &o.classify_labels {
            self.classify_labels = v.clone();
        }
        if let Some(v) = &o.classify_template {
            self.classify_template = Some(v.clone());
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |key: &str, v: usize, lo: usize, hi: usize| {
            if v < lo || v > hi { Err(ConfigError(format!("{key} = {v} is out of range {lo}..={hi}"))) } else { Ok(()) }
        };
        for (i, o) in self.cors_origins.iter().enumerate() {
            if axum::http::HeaderValue::from_str(o).is_err() || !(o.starts_with("http://") || o.starts_with("https://"))
            {
                return Err(ConfigError(format!("cors_origins[{i}] = {o:?} is not an http(s) origin")));
            }
        }
        if self.api_key.as_ref().is_some_and(|k| k.0.len() < 16) {
            return Err(ConfigError("api_key must be at least 16 characters".into()));
        }
        if self.model.as_os_str().is_empty() {
            return Err(ConfigError("model must name a model directory".into()));
        }
        if self.host.parse::<std::net::IpAddr>().is_err() && self.host != "localhost" {
            return Err(ConfigError(format!("host = {:?} is not an IP address", self.host)));
        }
        range("intra_op_threads", self.intra_op_threads, 0, 1024)?;
        range("http_threads", self.http_threads, 0, 1024)?;
        range("prefill_threads", self.prefill_threads, 0, 1024)?;
        range("tokenizer_threads", self.tokenizer_threads, 1, 1024)?;
        range("max_input_tokens", self.max_input_tokens, 1, 65_536)?;
        range("max_new_tokens_limit", self.max_new_tokens_limit, 1, 65_536)?;
        range("default_max_new_tokens", self.default_max_new_tokens, 1, self.max_new_tokens_limit)?;
        range("body_read_timeout_ms", self.body_read_timeout_ms as usize, 1, 600_000)?;
        range("request_timeout_ms", self.request_timeout_ms as usize, 1, 86_400_000)?;
        range("max_client_batch_size", self.max_client_batch_size, 1, 4096)?;
        range("max_stop_sequences", self.max_stop_sequences, 0, 64)?;
        range("max_num_beams", self.max_num_beams, 1, 64)?;
        range("max_labels", self.max_labels, 2, 4096)?;
        if let Some(t) = &self.classify_template {
            crate::tasks::classify::check_template(t).map_err(|e| ConfigError(format!("classify_template: {e}")))?;
        }
        for (i, p) in self.translate_pairs.iter().enumerate() {
            crate::tasks::classify::check_template(&p.template)
                .map_err(|e| ConfigError(format!("translate_pairs[{i}].template: {e}")))?;
        }
        range("max_body_bytes", self.max_body_bytes, 1024, 1 << 30)?;
        range("max_concurrent_requests", self.max_concurrent_requests, 1, 1 << 20)?;
        range("max_batch_size", self.max_batch_size, 1, 4096)?;
        range("max_batch_memory_mb", self.max_batch_memory_mb, 1, 1 << 20)?;
        range("max_queue_delay_ms", self.max_queue_delay_ms as usize, 0, 10_000)?;
        range("max_cohorts", self.max_cohorts, 1, 64)?;
        // Each lane gets at least one row of max_batch_size.
        range("decode_lanes", self.decode_lanes, 0, self.max_batch_size.min(64))?;
        range("queue_deadline_ms", self.queue_deadline_ms as usize, 1, 3_600_000)?;
        range("shutdown_grace_ms", self.shutdown_grace_ms as usize, 0, 3_600_000)?;
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let host = if self.host == "localhost" { "127.0.0.1" } else { &self.host };
        format!("{host}:{}", self.port).parse().map_err(|e| ConfigError(format!("host/port: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_are_overridden_by_flags() {
        let mut c: Config = toml::from_str("port = 9000\nhost = \"0.0.0.0\"").unwrap();
        assert_eq!(c.port, 9000);
        c.apply(&Overrides { port: Some(9100), ..Default::default() });
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 9100));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Config>("prot = 1").is_err());
    }

    #[test]
    fn validate_names_the_key() {
        let c = Config { default_max_new_tokens: 1000, max_new_tokens_limit: 512, ..Default::default() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("default_max_new_tokens"), "{e}");
    }

    #[test]
    fn shipped_default_file_parses_and_validates() {
        let c = Config::from_file(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"))).unwrap();
        c.validate().unwrap();
    }
}
