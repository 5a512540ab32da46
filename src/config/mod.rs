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

mod models;

pub use models::{ModelList, ModelSpec};

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

/// Declares every configuration key once: its doc (the flag's help, ending with the default),
/// name, type, default, and its flag (the type it parses, `long` and its `T5SERVE_*` variable).
/// From that one list come `Config`, `Config::default()`, `Overrides` (the flags, each also read
/// from its environment variable) and `Config::apply`.
macro_rules! config_keys {
    (
        $(#[$meta:meta])*
        pub struct $config:ident {
            $(
                $(#[doc = $doc:literal])+
                #[flag($flag_ty:ty; $($flag:tt)*)]
                $(#[serde($($serde:tt)*)])?
                $(#[scope($scope:ident)])?
                pub $key:ident: $ty:ty = $default:expr,
            )*
        }
    ) => {
        $(#[$meta])*
        pub struct $config {
            $( $(#[doc = $doc])+ $(#[serde($($serde)*)])? pub $key: $ty, )*
        }

        /// The keys a `[[models]]` table may set for its model alone.
        pub const PER_MODEL_KEYS: &[&str] = &[$($(per_model!($scope $key),)?)*];

        impl Default for $config {
            fn default() -> Self {
                Self { $( $key: $default, )* }
            }
        }

        /// Command-line flags; each also reads its `T5SERVE_*` environment variable, and
        /// overrides the file.
        #[derive(Debug, Clone, Default, Args)]
        pub struct Overrides {
            /// Configuration file (TOML) [default: config/default.toml when it exists]
            #[arg(long, env = "T5SERVE_CONFIG")]
            pub config: Option<PathBuf>,
            $(
                #[arg($($flag)*, help = flag_help(&[$($doc),+], stringify!($key)))]
                pub $key: Option<$flag_ty>,
            )*
        }

        impl $config {
            /// Overlays the flags (and environment variables) that are set.
            pub fn apply(&mut self, o: &Overrides) {
                $( if let Some(v) = &o.$key { self.$key = FromFlag::from_flag(v.clone()); } )*
            }
        }
    };
}

/// A key marked `#[scope(model)]`: its name.
macro_rules! per_model {
    (model $key:ident) => {
        stringify!($key)
    };
}

/// A key's value from its flag's: the same type, or `Some` of it for an optional key.
trait FromFlag<F> {
    fn from_flag(f: F) -> Self;
}

impl<T> FromFlag<T> for T {
    fn from_flag(f: T) -> T {
        f
    }
}

impl<T> FromFlag<T> for Option<T> {
    fn from_flag(f: T) -> Option<T> {
        Some(f)
    }
}

/// A flag's help: the key's doc on one line, then its default.
fn flag_help(doc: &[&str], key: &str) -> String {
    let text = doc.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    let defaults = serde_json::to_value(Config::default()).expect("the config serializes");
    let default = match &defaults[key] {
        serde_json::Value::Null => "none".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) if a.is_empty() => "none".to_string(),
        other => other.to_string(),
    };
    format!("{text} [default: {default}]")
}

// The keys. Unindented, so that each reads as the struct field it becomes.
config_keys! {
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// When set, /v1/*, /generate, /generate_stream and / need `Authorization: Bearer <key>`.
    #[flag(Secret; long, env = "T5SERVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret> = None,
    /// With an api_key: whether /metrics needs it too (the /health routes never do).
    #[flag(bool; long, env = "T5SERVE_METRICS_NEED_KEY")]
    pub metrics_need_key: bool = false,
    /// Browser origins allowed by CORS (e.g. "https://app.example"); none by default.
    #[flag(Vec<String>; long, env = "T5SERVE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String> = Vec::new(),
    /// Model directories in optimum's seq2seq-with-past layout, each `[ID=]DIR` (the id defaults
    /// to the directory's name); the first is the default model. Repeat the flag to serve several.
    #[flag(Vec<ModelSpec>; long, env = "T5SERVE_MODEL", value_delimiter = ',')]
    #[serde(alias = "models")]
    pub model: ModelList = ModelList::from(PathBuf::from(DEFAULT_MODEL)),
    /// A folder whose subfolders are models that `POST /v1/models/{id}/load` loads by name.
    #[flag(PathBuf; long, env = "T5SERVE_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf> = None,
    /// Load every model of model_repository at start (beside the --model ones).
    #[flag(bool; long, env = "T5SERVE_LOAD_ALL")]
    pub load_all: bool = false,
    /// Address to listen on.
    #[flag(String; long, env = "T5SERVE_HOST")]
    pub host: String = "127.0.0.1".into(),
    /// Port to listen on; 0 picks a free one.
    #[flag(u16; long, env = "T5SERVE_PORT")]
    pub port: u16 = 8080,
    /// Port of the Open Inference Protocol's gRPC service (inference.GRPCInferenceService, as
    /// Triton's and KServe's clients call it), on host; 0 turns it off.
    #[flag(u16; long, env = "T5SERVE_GRPC_PORT")]
    pub grpc_port: u16 = 0,
    /// Path of libonnxruntime.so; unset means ORT_DYLIB_PATH, then .ort/.
    #[flag(PathBuf; long, env = "T5SERVE_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf> = None,
    /// ONNX Runtime intra-op threads (of the global pool, or of each session's); 0 means one per core.
    #[flag(usize; long, env = "T5SERVE_INTRA_OP_THREADS")]
    pub intra_op_threads: usize = 0,
    /// One global ONNX Runtime thread pool shared by every session, or one pool per session.
    #[flag(ThreadPool; long, env = "T5SERVE_ORT_THREAD_POOL", value_enum)]
    pub ort_thread_pool: ThreadPool = ThreadPool::Global,
    /// Run prefill (the encoder and first decoder step of new rows) on its own thread, overlapped
    /// with the running rows' decoder steps (on the global pool, which both then share).
    #[flag(bool; long, env = "T5SERVE_PREFILL_THREAD")]
    pub prefill_thread: bool = true,
    /// With prefill_thread and ort_thread_pool = per-session: ONNX Runtime threads of the
    /// prefill sessions, 0 = half the cores; the decoder-step sessions get intra_op_threads,
    /// 0 = the other cores.
    #[flag(usize; long, env = "T5SERVE_PREFILL_THREADS")]
    pub prefill_threads: usize = 0,
    /// Let ONNX Runtime threads busy-wait between ops (they block again after a short spin).
    #[flag(bool; long, env = "T5SERVE_INTRA_OP_SPINNING")]
    pub intra_op_spinning: bool = true,
    /// One copy of each large weight, and of its prepacked form, for every CPU session of the
    /// process (the lanes', the solo set's, both decoders'); false gives each session its own
    /// copies (more memory; for comparing the two).
    #[flag(bool; long, env = "T5SERVE_SHARE_WEIGHTS")]
    pub share_weights: bool = true,
    /// Independent decode loops, each with its own sessions (with a pool of intra_op_threads each,
    /// 0 = an equal share of the cores), queue, and share of the batch size and memory budget; new
    /// requests go to the least loaded. With 1, the sessions use ort_thread_pool.
    #[flag(usize; long, env = "T5SERVE_DECODE_LANES")]
    #[scope(model)]
    pub decode_lanes: usize = 0,
    /// With several decode lanes: one more set of sessions with a thread per core (one more copy
    /// of the weights in memory), shared by the lanes; a lane runs on it while the other lanes
    /// are idle, so that a lone request gets every core.
    #[flag(bool; long, env = "T5SERVE_SOLO_SESSIONS")]
    #[scope(model)]
    pub solo_sessions: bool = true,
    /// Tokio worker threads (HTTP, JSON, SSE); 0 = auto: one per 4 cores, at least 1, so that
    /// HTTP work does not take the cores ONNX Runtime's pool runs on.
    #[flag(usize; long, env = "T5SERVE_HTTP_THREADS")]
    pub http_threads: usize = 0,
    /// Threads that tokenize request texts (and run other blocking work); at least 1.
    #[flag(usize; long, env = "T5SERVE_TOKENIZER_THREADS")]
    pub tokenizer_threads: usize = 2,
    /// Where the graphs run: cpu, or cuda (registered explicitly; start-up fails if it cannot be).
    #[flag(ExecutionProvider; long, env = "T5SERVE_EXECUTION_PROVIDER", value_enum)]
    pub execution_provider: ExecutionProvider = ExecutionProvider::Cpu,
    /// GPU index for the cuda provider.
    #[flag(u32; long, env = "T5SERVE_DEVICE_ID")]
    pub device_id: u32 = 0,
    /// Longest accepted input, in tokens (EOS included).
    #[flag(usize; long, env = "T5SERVE_MAX_INPUT_TOKENS")]
    #[scope(model)]
    pub max_input_tokens: usize = 512,
    /// Largest `max_new_tokens` a request may ask for.
    #[flag(usize; long, env = "T5SERVE_MAX_NEW_TOKENS_LIMIT")]
    #[scope(model)]
    pub max_new_tokens_limit: usize = 512,
    /// `max_new_tokens` when a request does not set it.
    #[flag(usize; long, env = "T5SERVE_DEFAULT_MAX_NEW_TOKENS")]
    #[scope(model)]
    pub default_max_new_tokens: usize = 64,
    /// Most inputs in one request.
    #[flag(usize; long, env = "T5SERVE_MAX_CLIENT_BATCH_SIZE")]
    pub max_client_batch_size: usize = 32,
    /// Most chunks the texts of one /v1/translate request may be split into (a text longer than
    /// max_input_tokens is split at sentences); beyond it, 422.
    #[flag(usize; long, env = "T5SERVE_MAX_TRANSLATE_CHUNKS")]
    pub max_translate_chunks: usize = 64,
    /// Most work one request may ask for, in token-steps: over its inputs, the input tokens plus
    /// beams (or labels) times max_new_tokens (or the longest label); beyond it, 422. 0: no limit.
    #[flag(usize; long, env = "T5SERVE_MAX_REQUEST_COST")]
    #[scope(model)]
    pub max_request_cost: usize = 131_072,
    /// Most stop sequences in one request.
    #[flag(usize; long, env = "T5SERVE_MAX_STOP_SEQUENCES")]
    pub max_stop_sequences: usize = 4,
    /// Most beams a request may ask for.
    #[flag(usize; long, env = "T5SERVE_MAX_NUM_BEAMS")]
    #[scope(model)]
    pub max_num_beams: usize = 8,
    /// Most candidate labels in one classify request.
    #[flag(usize; long, env = "T5SERVE_MAX_LABELS")]
    #[scope(model)]
    pub max_labels: usize = 64,
    /// Default labels of /v1/classify; empty means the model's own (its t5serve.json).
    #[flag(Vec<String>; long, env = "T5SERVE_CLASSIFY_LABELS", value_delimiter = ',')]
    #[scope(model)]
    pub classify_labels: Vec<String> = Vec::new(),
    /// Default prompt of /v1/classify, with {text}; unset means the model's own, else "{text}".
    #[flag(String; long, env = "T5SERVE_CLASSIFY_TEMPLATE")]
    #[scope(model)]
    pub classify_template: Option<String> = None,
    /// Language pairs of /v1/translate; empty means the model's own, else T5's
    /// (English to German, French and Romanian). As a flag: SOURCE:TARGET pairs,
    /// comma-separated, with T5's prompt; other templates in the file.
    #[flag(Vec<crate::tasks::translate::LanguagePair>; long, env = "T5SERVE_TRANSLATE_PAIRS", value_delimiter = ',')]
    #[scope(model)]
    pub translate_pairs: Vec<crate::tasks::translate::LanguagePair> = Vec::new(),
    /// Largest accepted request body, in bytes.
    #[flag(usize; long, env = "T5SERVE_MAX_BODY_BYTES")]
    pub max_body_bytes: usize = 1 << 20,
    /// How long a connection may take to send a request's headers, in milliseconds, counted from
    /// when it is ready for one (just opened, or idle after a response): a client that trickles
    /// its headers and an idle keep-alive connection are both closed after it.
    #[flag(u64; long, env = "T5SERVE_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: u64 = 10_000,
    /// Most open client connections; a connection beyond it is closed at once (and counted in
    /// t5serve_connections_refused_total).
    #[flag(usize; long, env = "T5SERVE_MAX_CONNECTIONS")]
    pub max_connections: usize = 1024,
    /// How long a client may take to send a whole request body, in milliseconds; then 408.
    #[flag(u64; long, env = "T5SERVE_BODY_READ_TIMEOUT_MS")]
    pub body_read_timeout_ms: u64 = 10_000,
    /// Requests in flight at once (queued or decoding); beyond it, 429 at once.
    #[flag(usize; long, env = "T5SERVE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: usize = 256,
    /// Most rows decoding at once, over all cohorts.
    #[flag(usize; long, env = "T5SERVE_MAX_BATCH_SIZE")]
    #[scope(model)]
    pub max_batch_size: usize = 32,
    /// Memory budget of running rows (encoder output + worst-case key/value cache), in MiB, shared
    /// by every model (each other model keeps a reserve of it); a model's own value caps it lower.
    #[flag(usize; long, env = "T5SERVE_MAX_BATCH_MEMORY_MB")]
    #[scope(model)]
    pub max_batch_memory_mb: usize = 1024,
    /// The model's encoder cache, in MiB (0: off): for inputs seen before, the encoder's output
    /// and the first decoder step (cross-attention K/V included), least recently used first
    /// out. Outside max_batch_memory_mb. An int8 model's values depend on the batch that
    /// computed them (dynamic quantization), so a hit returns those of the batch that first
    /// encoded the input.
    #[flag(usize; long, env = "T5SERVE_ENCODER_CACHE_MB")]
    #[scope(model)]
    pub encoder_cache_mb: usize = 0,
    /// How long a queued request may wait for others to start a batch with, in milliseconds.
    #[flag(u64; long, env = "T5SERVE_MAX_QUEUE_DELAY_MS")]
    #[scope(model)]
    pub max_queue_delay_ms: u64 = 2,
    /// Most batches (cohorts) decoding side by side.
    #[flag(usize; long, env = "T5SERVE_MAX_COHORTS")]
    #[scope(model)]
    pub max_cohorts: usize = 4,
    /// Most input tokens one prefill encodes (its rows times the longest of their inputs, as
    /// padded; 0: no cap). Rows beyond it wait for the next prefill, so a burst of long inputs
    /// is encoded in parts and the running rows step in between. A single request is never split.
    #[flag(usize; long, env = "T5SERVE_MAX_PREFILL_TOKENS")]
    #[scope(model)]
    pub max_prefill_tokens: usize = 0,
    /// Default deadline of a request while queued, in milliseconds; a request may set a shorter one.
    #[flag(u64; long, env = "T5SERVE_QUEUE_DEADLINE_MS")]
    #[scope(model)]
    pub queue_deadline_ms: u64 = 30_000,
    /// Longest a request may take in all (queue and decoding), in milliseconds; then 504.
    #[flag(u64; long, env = "T5SERVE_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: u64 = 600_000,
    /// On SIGTERM/SIGINT, how long requests in flight may take to finish, in milliseconds.
    #[flag(u64; long, env = "T5SERVE_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: u64 = 30_000,
    /// Log output: pretty (human) or json (one object per line).
    #[flag(LogFormat; long, env = "T5SERVE_LOG_FORMAT", value_enum)]
    pub log_format: LogFormat = LogFormat::Pretty,
}
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
        let mut ids = std::collections::BTreeSet::new();
        for (i, m) in self.model.0.iter().enumerate() {
            if m.path.as_os_str().is_empty() {
                return Err(ConfigError(format!("model[{i}] must name a model directory")));
            }
            if !ModelSpec::valid_id(&m.id()) {
                return Err(ConfigError(format!(
                    "model[{i}]: the id {:?} must start with a letter or digit and hold only letters, digits, ., _ and -",
                    m.id()
                )));
            }
            if !ids.insert(m.id()) {
                return Err(ConfigError(format!("model[{i}]: the id {:?} is served twice", m.id())));
            }
            if !m.overrides.is_empty() {
                self.for_model(m)?;
            }
        }
        if self.model.0.is_empty() {
            return Err(ConfigError("model must name at least one model directory".into()));
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
        range("header_read_timeout_ms", self.header_read_timeout_ms as usize, 1, 600_000)?;
        range("max_connections", self.max_connections, 1, 1 << 20)?;
        range("request_timeout_ms", self.request_timeout_ms as usize, 1, 86_400_000)?;
        range("max_client_batch_size", self.max_client_batch_size, 1, 4096)?;
        range("max_translate_chunks", self.max_translate_chunks, 1, 65_536)?;
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
        range("encoder_cache_mb", self.encoder_cache_mb, 0, 1 << 20)?;
        range("max_queue_delay_ms", self.max_queue_delay_ms as usize, 0, 10_000)?;
        range("max_cohorts", self.max_cohorts, 1, 64)?;
        range("max_prefill_tokens", self.max_prefill_tokens, 0, 1 << 24)?;
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
mod tests;
