//! t5serve: an HTTP inference service for T5-family encoder-decoder models on ONNX Runtime.
//!
//! Data flows one way: `http` (thin handlers) -> `scheduler` (the decode thread that owns the
//! sessions) -> `model` (ONNX Runtime graphs, KV cache, tokenizer). `generation` holds the
//! token-selection logic on plain slices; `api` the request/response types and their limits.

pub mod api;
pub mod config;
pub mod generation;
pub mod http;
pub mod metrics;
pub mod model;
pub mod scheduler;
pub mod tasks;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::Config;

use crate::model::{SessionSettings, TextTokenizer};
use crate::scheduler::SchedulerHandle;

/// A server listening on a socket; dropping it does not stop it, `shutdown` does.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting connections, lets in-flight requests finish, and waits.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.context("server task")?.context("server")
    }

    /// Waits until the server stops by itself (it does not, short of an I/O error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?.context("server")
    }
}

/// Loads the model, binds the socket and starts serving. Returns once the server accepts requests.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    config.validate()?;
    let settings = SessionSettings {
        intra_threads: config.intra_op_threads,
        spinning: config.intra_op_spinning,
        ort_library: config.ort_library.clone(),
    };
    let model_dir = config.model.clone();
    let scheduling = config.scheduler_settings();
    let (scheduler, info) =
        tokio::task::spawn_blocking(move || SchedulerHandle::start(model_dir, settings, scheduling))
            .await
            .context("model loading task")?
            .with_context(|| format!("cannot start on model {}", config.model.display()))?;
    let tokenizer = TextTokenizer::from_file(&info.tokenizer_path())?;
    tracing::info!(
        model = %info.dims.name,
        dir = %info.model_dir.display(),
        decoder = info.layout,
        d_model = info.dims.d_model,
        layers = info.dims.num_layers,
        decoder_layers = info.dims.num_decoder_layers,
        heads = info.dims.num_heads,
        vocab = info.dims.vocab_size,
        load_seconds = info.load_seconds,
        "model loaded"
    );
    let state = http::AppState {
        scheduler: scheduler.clone(),
        admission: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
        metrics: Arc::new(metrics::Metrics::new(scheduler.stats.clone())),
        tasks: Arc::new(http::TaskSettings::resolve(&config, &info.tasks)),
        tokenizer: Arc::new(tokenizer),
        limits: Arc::new((&config).into()),
        info: Arc::new(info),
    };
    let app = http::router(state, config.max_body_bytes);
    let addr = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, "listening");
    Ok(RunningServer { addr, shutdown: Some(tx), task })
}

/// Serves until SIGINT or SIGTERM, then drains in-flight requests.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let server = start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
