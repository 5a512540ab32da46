//! The HTTP surface: the router, its shared state, and every cross-cutting layer (request id,
//! tracing, body limit, panics -> 500) in one place. Every route that runs the model goes
//! through one path (`pipeline`: admit, validate, tokenize, submit; `collect`: results or a
//! stream, under the request timeout); its handler, one per file, only translates its dialect.

pub mod classify;
pub mod cohere;
pub mod collect;
pub mod control;
pub mod error;
pub mod extract;
pub mod generate;
pub mod health;
pub mod json;
pub mod metrics;
pub mod models;
pub mod oip;
pub mod openai;
pub mod openapi;
pub mod pipeline;
pub mod rerank;
pub mod serve;
pub mod served;
pub mod tei;
pub mod tgi;
pub mod tokenize;
pub mod tokens;
pub mod translate;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::Limits;

use error::ApiError;
pub use health::Health;

const REQUEST_ID: &str = "x-request-id";

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub health: Health,
    /// The served models; a request names one, or gets the default.
    pub models: Arc<served::ModelSet>,
    /// One permit per request in flight (`max_concurrent_requests`).
    pub admission: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The request limits of the config (each model's own, with its vocabulary, are in its
    /// `Served`).
    pub limits: Arc<Limits>,
    /// The tokenizer threads (TGI's `validation_workers`) and how many of them are at work.
    pub tokenizing: Arc<tokenize::Load>,
}

/// Defaults of the task endpoints: the config's when set, else the model's, else built in.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    pub classify_labels: Vec<String>,
    pub classify_template: String,
    pub translate_pairs: Vec<crate::tasks::translate::LanguagePair>,
    pub embedding: crate::tasks::embed::EmbedSettings,
    /// The model's chat template, compiled; `None`: the plain prompt (`tasks::chat`).
    pub chat_template: Option<Arc<crate::tasks::chat::ChatTemplate>>,
    /// The rerank template and the first tokens of its two words ("true", then "false").
    pub rerank: Arc<crate::tasks::rerank::RerankSettings>,
    pub rerank_tokens: [u32; 2],
    pub extract: crate::tasks::extract::ExtractSettings,
}

impl TaskSettings {
    /// Fails on a chat template that does not compile, or a rerank template or words that
    /// cannot work.
    pub fn resolve(
        config: &crate::config::Config,
        model: &crate::model::ModelTasks,
        tokenizer: &crate::model::TextTokenizer,
    ) -> Result<Self, String> {
        use crate::tasks::translate::LanguagePair;
        let pick = |a: &Vec<String>, b: &Vec<String>| if a.is_empty() { b.clone() } else { a.clone() };
        let translate_pairs = if !config.translate_pairs.is_empty() {
            config.translate_pairs.clone()
        } else if !model.translate.pairs.is_empty() {
            model.translate.pairs.clone()
        } else {
            vec![
                LanguagePair::t5("English", "German"),
                LanguagePair::t5("English", "French"),
                LanguagePair::t5("English", "Romanian"),
            ]
        };
        let chat_template = match &model.chat_template {
            Some(source) => Some(Arc::new(crate::tasks::chat::ChatTemplate::new(source)?)),
            None => None,
        };
        model.rerank.check()?;
        model.extract.check()?;
        // The first token of each word, as monoT5 reads them (`▁true`, `▁false`).
        let first = |word: &str| -> Result<u32, String> {
            let ids = tokenizer.encode(word).map_err(|e| e.to_string())?;
            ids.first().copied().ok_or_else(|| format!("rerank word {word:?} has no tokens"))
        };
        let rerank_tokens = [first(&model.rerank.true_word)?, first(&model.rerank.false_word)?];
        if rerank_tokens[0] == rerank_tokens[1] {
            return Err(format!(
                "rerank words {:?} and {:?} start with the same token ({})",
                model.rerank.true_word, model.rerank.false_word, rerank_tokens[0]
            ));
        }
        Ok(Self {
            rerank: Arc::new(model.rerank.clone()),
            rerank_tokens,
            extract: model.extract.clone(),
            classify_labels: pick(&config.classify_labels, &model.classify.labels),
            classify_template: config
                .classify_template
                .clone()
                .or_else(|| model.classify.template.clone())
                .unwrap_or_else(|| crate::tasks::classify::TEXT_SLOT.to_string()),
            translate_pairs,
            embedding: model.embedding,
            chat_template,
        })
    }
}

/// Request ids: the client's `x-request-id` is kept; otherwise a process-unique one is made.
#[derive(Clone)]
struct NextRequestId {
    prefix: u32,
    counter: Arc<AtomicU64>,
}

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n:08x}", self.prefix)).ok().map(RequestId::new)
    }
}

/// Longest client request id kept (and echoed back); a longer one is replaced by a generated id.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Removes a client's `x-request-id` that is empty, longer than `MAX_REQUEST_ID_BYTES` or not
/// visible ASCII, so that a generated one takes its place (in the logs and the response).
async fn drop_unusable_request_id(mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let usable = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= MAX_REQUEST_ID_BYTES && b.iter().all(|c| (0x21..=0x7e).contains(c))
    };
    if req.headers().get(REQUEST_ID).is_some_and(|v| !usable(v)) {
        req.headers_mut().remove(REQUEST_ID);
    }
    next.run(req).await
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("a handler panicked".into()).into_response()
}

tokio::task_local! {
    /// The model the request being handled runs on, set by `AppState::submit`; `record` labels
    /// the request's metrics with it. Only ids of served models are set, never one a client sent.
    static REQUEST_MODEL: Arc<std::sync::OnceLock<String>>;
}

/// Runs a request's handling with its model noted (`note_request_model`), and says which.
pub(crate) async fn with_request_model<F: Future>(f: F) -> (F::Output, Option<String>) {
    let model = Arc::new(std::sync::OnceLock::new());
    let out = REQUEST_MODEL.scope(model.clone(), f).await;
    (out, model.get().cloned())
}

/// Notes the model the current request runs on (outside a request, nothing).
pub(crate) fn note_request_model(id: &str) {
    let _ = REQUEST_MODEL.try_with(|m| m.set(id.to_string()));
}

/// Counts every answered request by route template (never the raw path; `unmatched` for an
/// unknown one), status, and the model it ran on.
async fn record(
    axum::extract::State(app): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let (response, model) = with_request_model(next.run(req)).await;
    let rejected = response.extensions().get::<error::Rejected>().map(|r| r.0);
    let model = model.as_deref().unwrap_or("");
    let status = response.status().as_u16();
    app.metrics.record_response(&route, status, model, rejected, started.elapsed().as_secs_f64());
    response
}

/// Who may call what: with an API key configured, every route but /health* (and /metrics,
/// unless `metrics_need_key`) needs `Authorization: Bearer <key>`.
pub struct Access {
    pub api_key: Option<crate::config::Secret>,
    pub metrics_need_key: bool,
    /// Browser origins allowed by CORS; empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    pub refusals: Refusals,
}

impl Access {
    /// Whether an `Authorization` value (the HTTP header, gRPC's metadata) carries the API key,
    /// when one is set. A refusal is noted (logged at a bounded rate).
    pub fn check(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else { return Ok(()) };
        // The scheme name is case-insensitive (RFC 7235 section 2.1).
        let given = authorization
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim_start());
        let refusal = match given {
            Some(token) if constant_time_eq(token.as_bytes(), key.0.as_bytes()) => return Ok(()),
            Some(_) => "the API key is wrong",
            None => "this route needs `Authorization: Bearer <api key>`",
        };
        self.refusals.note(refusal);
        Err(ApiError::Unauthorized(refusal.into()))
    }
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(
    axum::extract::State(access): axum::extract::State<Arc<Access>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if path.starts_with("/health")
        || path.starts_with("/v2/health/")
        || (path == "/metrics" && !access.metrics_need_key)
    {
        return next.run(req).await;
    }
    let given = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Err(error) = access.check(given) else { return next.run(req).await };
    if openai::PATHS.contains(&path) {
        return openai::OpenAiError::from(error).into_response();
    }
    error.into_response()
}

/// Refused authentications, logged at most once per `EVERY` with the count since the last line,
/// so that a flood of wrong keys leaves a trace without flooding the log.
#[derive(Default)]
pub struct Refusals {
    count: AtomicU64,
    /// Milliseconds since `START` of the last line.
    logged_at: AtomicU64,
}

impl Refusals {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn note(&self, why: &str) {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1;
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.logged_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= Self::EVERY.as_millis() as u64;
        if due && self.logged_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.count.fetch_sub(count, Ordering::Relaxed);
            tracing::warn!(refused = count, reason = why, "authentication refused (at most one line per 10 s)");
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this route".into())
}

/// Every route the router serves (method, path); tests check that openapi.yaml has each.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/generate"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{id}"),
    ("post", "/v1/models/{id}/load"),
    ("post", "/v1/models/{id}/unload"),
    ("post", "/v1/classify"),
    ("post", "/v1/translate"),
    ("get", "/v1/translate/languages"),
    ("post", "/v1/completions"),
    ("post", "/v1/chat/completions"),
    ("post", "/v1/embeddings"),
    ("post", "/tokenize"),
    ("post", "/detokenize"),
    ("post", "/generate"),
    ("post", "/generate_stream"),
    ("post", "/"),
    ("get", "/info"),
    ("get", "/openapi.yaml"),
    ("get", "/openapi.json"),
    ("get", "/health"),
    ("get", "/health/ready"),
    ("get", "/health/live"),
    ("get", "/metrics"),
];

/// Limits on how a request body is received.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: std::time::Duration,
}

pub fn router(state: AppState, body: BodyLimits, access: Arc<Access>) -> Router {
    let origins: Vec<HeaderValue> = access.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    let cors = (!origins.is_empty()).then(|| {
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([axum::http::header::CONTENT_TYPE, axum::http::header::AUTHORIZATION])
            .expose_headers([axum::http::HeaderName::from_static(REQUEST_ID)])
    });
    let ids = NextRequestId {
        prefix: std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)),
        counter: Arc::new(AtomicU64::new(1)),
    };
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
    });
    Router::new()
        .route("/v1/generate", post(generate::generate))
        .route("/generate", post(tgi::generate))
        .route("/generate_stream", post(tgi::generate_stream))
        .route("/", post(tgi::compat))
        .route("/info", get(tgi::info))
        .route("/openapi.yaml", get(openapi::yaml))
        .route("/openapi.json", get(openapi::json))
        .route("/v1/models", get(models::models))
        .route("/v1/models/{id}", get(control::model))
        .route("/v1/models/{id}/load", post(control::load))
        .route("/v1/models/{id}/unload", post(control::unload))
        .route("/v1/classify", post(classify::classify))
        .route("/v1/extract", post(extract::extract))
        .route("/v1/translate", post(translate::translate))
        .route("/v1/translate/languages", get(translate::languages))
        .route("/v1/completions", post(openai::completions::completions))
        .route("/v1/chat/completions", post(openai::chat::chat))
        .route("/v1/embeddings", post(openai::embeddings::embeddings))
        .route("/embed", post(tei::embed))
        .route("/rerank", post(tei::rerank))
        .route("/v1/rerank", post(cohere::rerank))
        .route("/v2/rerank", post(cohere::rerank))
        .route("/tokenize", post(tokens::tokenize))
        .route("/detokenize", post(tokens::detokenize))
        .route("/v2", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/v2/models/{name}", get(oip::model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(oip::model_metadata))
        .route("/v2/models/{name}/ready", get(oip::model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(oip::model_ready))
        .route("/v2/models/{name}/infer", post(oip::infer::infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(oip::infer::infer))
        .route("/health", get(health::ready))
        .route("/health/ready", get(health::ready))
        .route("/health/live", get(health::live))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(access, authorize))
        // Outside authorization, so that refusals (401) and unknown routes are counted too.
        .layer(axum::middleware::from_fn_with_state(state, record))
        .layer(DefaultBodyLimit::max(body.max_bytes))
        .layer(axum::Extension(json::BodyReadTimeout(body.read_timeout)))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.parse().expect("valid header name")))
        .layer(SetRequestIdLayer::new(REQUEST_ID.parse().expect("valid header name"), ids))
        // Before the id is kept: an unusable one (too long, not visible ASCII) is replaced.
        .layer(axum::middleware::from_fn(drop_unusable_request_id))
        // Outermost, so that preflight requests are answered before authentication.
        .layer(tower::util::option_layer(cors))
}
