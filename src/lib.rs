//! t5serve: an HTTP inference service for T5-family encoder-decoder models on ONNX Runtime.
//!
//! Data flows one way: `http` (thin handlers) -> `scheduler` (the decode thread that owns the
//! sessions) -> `model` (ONNX Runtime graphs, KV cache, tokenizer). `generation` holds the
//! token-selection logic on plain slices; `api` the request/response types and their limits.

#[cfg(feature = "alloc-count")]
pub mod alloc_count;
pub mod api;
pub mod config;
#[cfg(feature = "fault-injection")]
pub mod faults;
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
    pub health: http::Health,
    scheduler: SchedulerHandle,
    admission: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
    grace: std::time::Duration,
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

    /// Graceful drain: readiness turns 503 and new work gets 503 at once, while requests in
    /// flight (streams included) finish, for at most `shutdown_grace`; then the server stops.
    pub async fn drain(self) -> anyhow::Result<()> {
        self.health.draining.store(true, std::sync::atomic::Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + self.grace;
        loop {
            let in_flight = self.max_in_flight - self.admission.available_permits();
            if in_flight == 0 {
                tracing::info!("drained: no request in flight");
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(in_flight, "shutdown_grace over; stopping with requests in flight");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.shutdown().await
    }

    /// Waits until the server stops by itself (it does not, short of an I/O error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?.context("server")
    }
}

/// Loads the model, binds the socket and starts serving. Returns once the server accepts requests.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    config.validate()?;
    // A model directory that cannot be read fails in the scheduler, with the reason.
    let quantized =
        model::ModelFiles::discover(&config.model).ok().and_then(|f| f.quantization().ok().flatten()).is_some();
    let lanes = config.lanes(quantized);
    // Several lanes: each session gets its own pool of the lane's share of the cores, and each
    // lane prefills inline (the lanes, not a shared pool or prefill threads, spread the work).
    let (intra_threads, global_pool, prefill_threads) = if lanes > 1 {
        (config.lane_threads(lanes), false, None)
    } else {
        (
            config.intra_op_threads,
            config.ort_thread_pool == config::ThreadPool::Global,
            config.prefill_thread.then_some(config.prefill_threads),
        )
    };
    let settings = SessionSettings {
        intra_threads,
        global_pool,
        prefill_threads,
        spinning: config.intra_op_spinning,
        ort_library: config.ort_library.clone(),
        cuda_device: (config.execution_provider == config::ExecutionProvider::Cuda).then_some(config.device_id),
    };
    // On the process-wide pool, with one spinning set of threads: with a pool per session, each
    // session's spinning threads would compete with the running one.
    let solo = (lanes > 1 && config.solo_sessions).then(|| SessionSettings {
        intra_threads: config.intra_op_threads,
        global_pool: true,
        ..settings.clone()
    });
    let settings_threads = settings.split_threads();
    let model_dir = config.model.clone();
    let scheduling = config.scheduler_settings(lanes);
    let (scheduler, info) =
        tokio::task::spawn_blocking(move || SchedulerHandle::start(model_dir, settings, scheduling, solo))
            .await
            .context("model loading task")?
            .with_context(|| format!("cannot start on model {}", config.model.display()))?;
    let tokenizer = TextTokenizer::from_file(&info.tokenizer_path())?;
    let cpu = model::cpu::host();
    tracing::info!(
        model = %info.dims.name,
        dir = %info.model_dir.display(),
        files = %info.files.join(", "),
        decoder = info.layout,
        d_model = info.dims.d_model,
        layers = info.dims.num_layers,
        decoder_layers = info.dims.num_decoder_layers,
        heads = info.dims.num_heads,
        vocab = info.dims.vocab_size,
        joins_running_batch = info.can_join,
        weights = info.weights(),
        quantization = %info.quantization.as_ref().map_or_else(|| "none".to_string(), |q| q.to_string()),
        execution_provider = info.execution_provider,
        device_id = ?info.cuda_device,
        cpu_features = %cpu.names().join(","),
        int8_kernel = cpu.int8_kernel().name(),
        decode_lanes = lanes,
        intra_op_threads = intra_threads,
        ort_thread_pool = if global_pool { "global" } else { "per-session" },
        prefill_thread = prefill_threads.is_some(),
        solo_sessions = lanes > 1 && config.solo_sessions,
        prefill_and_step_threads = ?settings_threads,
        http_threads = config.http_worker_threads(),
        tokenizer_threads = config.tokenizer_threads,
        intra_op_spinning = config.intra_op_spinning,
        load_seconds = info.load_seconds,
        "model loaded"
    );
    if info.int8_may_saturate() {
        tracing::warn!(
            int8_kernel = cpu.int8_kernel().name(),
            "this int8 model has signed 8-bit weights, and this CPU has neither VNNI nor AMX: ONNX Runtime's \
             u8 x s8 kernel adds pairs of products in 16 bits with saturation, so outputs can differ from \
             other CPUs and lose accuracy; re-quantize with scripts/quantize_model.py --reduce-range \
             (7-bit weights, which cannot saturate) or serve the float32 export"
        );
    }
    let health = http::Health::default();
    let metrics =
        Arc::new(metrics::Metrics::new(scheduler.stats.clone(), &info.dims.name, info.execution_provider, cpu));
    let observer: Arc<dyn scheduler::LoopObserver> = metrics.clone();
    let _ = scheduler.stats.observer.set(observer);
    let admission = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests));
    let state = http::AppState {
        health: health.clone(),
        scheduler: scheduler.clone(),
        admission: admission.clone(),
        metrics: metrics.clone(),
        tasks: Arc::new(http::TaskSettings::resolve(&config, &info.tasks)),
        tokenizer: Arc::new(tokenizer),
        limits: Arc::new((&config).into()),
        info: Arc::new(info),
    };
    let access = http::Access {
        api_key: config.api_key.clone(),
        metrics_need_key: config.metrics_need_key,
        cors_origins: config.cors_origins.clone(),
    };
    let body = http::BodyLimits {
        max_bytes: config.max_body_bytes,
        read_timeout: std::time::Duration::from_millis(config.body_read_timeout_ms),
    };
    let app = http::router(state.clone(), body, access);
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
    // Ready once a warm-up batch has gone through the whole path (first runs allocate).
    let warm = state.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        match warm.warm_up().await {
            Ok(()) => {
                warm.health.ready.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(seconds = started.elapsed().as_secs_f64(), "warm-up done; ready");
            }
            Err(e) => tracing::error!(error = %e, "warm-up failed; not ready"),
        }
    });
    Ok(RunningServer {
        addr,
        health,
        scheduler,
        admission,
        max_in_flight: config.max_concurrent_requests,
        grace: std::time::Duration::from_millis(config.shutdown_grace_ms),
        shutdown: Some(tx),
        task,
    })
}

/// Serves until SIGINT or SIGTERM, then drains in-flight requests. If the decode thread dies,
/// stops at once with an error (the process exits non-zero, and the orchestrator restarts it):
/// it never goes on serving with a cache in an unknown state.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let server = start(config).await?;
    let decode = server.scheduler.clone();
    let decode_died = async move {
        while decode.is_alive() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("signal received: draining");
            server.drain().await
        }
        _ = decode_died => {
            tracing::error!("the decode thread stopped; exiting so that the service is restarted");
            server.shutdown().await?;
            anyhow::bail!("the decode thread stopped")
        }
    }
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
