//! t5serve: an HTTP inference service for T5-family encoder-decoder models on ONNX Runtime.
//!
//! Data flows one way: `http` (thin handlers over one request path) -> `scheduler` (the decode
//! lanes, whose threads own the sessions) -> `model` (ONNX Runtime graphs, KV cache, tokenizer).
//! `generation` holds the token-selection logic on plain slices; `api` the request/response
//! types and their validation; `plan` the thread plan; `tasks` the classify/translate helpers.

#[cfg(feature = "alloc-count")]
pub mod alloc_count;
pub mod api;
pub mod batch;
pub mod config;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod generation;
pub mod http;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod scheduler;
pub mod tasks;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;

pub use config::Config;

/// With `load_all`, the models of `model_repository` (its subfolders, by name) that the config
/// does not name already.
fn repository_models(config: &Config) -> anyhow::Result<Vec<config::ModelSpec>> {
    let Some(repo) = config.model_repository.as_ref().filter(|_| config.load_all) else { return Ok(Vec::new()) };
    let named: Vec<String> = config.model.0.iter().map(config::ModelSpec::id).collect();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo).with_context(|| format!("model_repository {}", repo.display()))? {
        let path = entry?.path();
        let Some(id) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
        if path.is_dir() && config::ModelSpec::valid_id(&id) && !named.contains(&id) {
            out.push(config::ModelSpec { id: Some(id), path, ..Default::default() });
        }
    }
    out.sort_by_key(config::ModelSpec::id);
    Ok(out)
}

/// A server listening on a socket; dropping it does not stop it, `shutdown` does.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub health: http::Health,
    models: Arc<http::served::ModelSet>,
    admission: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
    grace: std::time::Duration,
    task: JoinHandle<std::io::Result<()>>,
    /// The Open Inference Protocol's gRPC service, with `grpc_port`.
    pub grpc_addr: Option<SocketAddr>,
    grpc: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// The warm-up task: true once ready, false when it gave up.
    warm_up: Option<JoinHandle<bool>>,
}

impl RunningServer {
    /// Stops: streams still running get an error event, connections are told to close and
    /// dropped after `http::serve::LINGER`; returns once the connection loop has ended.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.health.stop.send_replace(true);
        let http = self.task.await.context("server task")?.context("server");
        // tonic waits for calls in flight without a limit; a drain has let them finish already.
        if let Some(grpc) = self.grpc
            && let Ok(done) = tokio::time::timeout(http::serve::LINGER, grpc).await
        {
            done.context("gRPC server task")?.context("gRPC server")?;
        }
        http
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

/// How often a failing warm-up is tried before the process gives up (and exits non-zero).
pub const WARM_UP_ATTEMPTS: usize = 3;

/// The service without a socket: its models loaded, the shared state and the router built.
/// `start` serves it; `t5serve batch` sends its router requests in-process.
pub struct Service {
    pub state: http::AppState,
    pub app: axum::Router,
    access: Arc<http::Access>,
}

/// Reads the model directories and opens their sessions (the default model must load; another
/// that fails is reported and the rest are served), then builds the state and the router.
pub async fn build(config: &Config) -> anyhow::Result<Service> {
    config.validate()?;
    let cpu = model::cpu::host();
    let provider = plan::ThreadPlan::for_host(config, false).sessions.provider_name();
    let specs = &config.model.0;
    let metrics = Arc::new(metrics::Metrics::new(&specs[0].id(), provider, cpu));
    let loader = http::served::Loader {
        config: Arc::new(config.clone()),
        metrics: metrics.clone(),
        process: scheduler::Process::new(config.max_batch_memory_mb.saturating_mul(1 << 20)),
    };
    // The default model must load; another that fails is reported and the rest are served.
    let mut served = Vec::with_capacity(specs.len());
    let mut failed = Vec::new();
    for (i, spec) in specs.iter().chain(&repository_models(config)?).enumerate() {
        match http::served::load(&loader, spec).await {
            Ok(m) => served.push(m),
            Err(e) if i == 0 => return Err(e),
            Err(e) => {
                tracing::error!(model = %spec.id(), dir = %spec.path.display(), error = format!("{e:#}"), "model failed to load; serving the others");
                failed.push((spec.id(), format!("{e:#}")));
            }
        }
    }
    let state = http::AppState {
        health: http::Health::default(),
        models: Arc::new(http::served::ModelSet::new(served, failed, loader)),
        admission: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
        metrics,
        limits: Arc::new(api::Limits::new(config, 0)),
        tokenizing: Arc::new(http::tokenize::Load::new(config.tokenizer_threads)),
    };
    let access = Arc::new(http::Access {
        api_key: config.api_key.clone(),
        metrics_need_key: config.metrics_need_key,
        cors_origins: config.cors_origins.clone(),
        refusals: Default::default(),
    });
    let body = http::BodyLimits {
        max_bytes: config.max_body_bytes,
        read_timeout: std::time::Duration::from_millis(config.body_read_timeout_ms),
    };
    let app = http::router(state.clone(), body, access.clone());
    Ok(Service { state, app, access })
}

/// Builds the service, binds the socket and starts serving. Returns once the server accepts
/// requests; it turns ready once a warm-up request has gone through.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let Service { state, app, access } = build(&config).await?;
    let addr = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let limits = http::serve::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_millis(config.header_read_timeout_ms),
        max_connections: config.max_connections,
    };
    let task =
        tokio::spawn(http::serve::serve(listener, app, limits, state.metrics.clone(), state.health.stop.subscribe()));
    tracing::info!(%addr, "listening");
    let grpc = match config.grpc_port {
        0 => None,
        port => Some(serve_grpc(SocketAddr::new(addr.ip(), port), &state, access, config.max_body_bytes).await?),
    };
    Ok(RunningServer {
        addr,
        grpc_addr: grpc.as_ref().map(|g| g.0),
        grpc: grpc.map(|g| g.1),
        health: state.health.clone(),
        models: state.models.clone(),
        admission: state.admission.clone(),
        max_in_flight: config.max_concurrent_requests,
        grace: std::time::Duration::from_millis(config.shutdown_grace_ms),
        task,
        warm_up: Some(tokio::spawn(warm_up(state))),
    })
}

/// Serves the Open Inference Protocol over gRPC on `addr` until the server stops (it stops
/// taking connections then; calls in flight finish, within `RunningServer::shutdown`'s wait).
async fn serve_grpc(
    addr: SocketAddr,
    state: &http::AppState,
    access: Arc<http::Access>,
    max_message_bytes: usize,
) -> anyhow::Result<(SocketAddr, JoinHandle<Result<(), tonic::transport::Error>>)> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen for gRPC on {addr}"))?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = http::oip::grpc::service(state.clone(), access, max_message_bytes);
    let mut stop = state.health.stop.subscribe();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            })
            .await
    });
    tracing::info!(%addr, "gRPC listening");
    Ok((addr, task))
}

/// Ready once a warm-up request has gone through the whole path (first runs allocate). A
/// failure is retried with backoff; after `WARM_UP_ATTEMPTS` the server gives up (`run` exits
/// non-zero) rather than staying up unready, which an orchestrator would neither route to nor
/// restart. Returns whether the server became ready.
async fn warm_up(state: http::AppState) -> bool {
    let started = std::time::Instant::now();
    let mut backoff = std::time::Duration::from_millis(500);
    for attempt in 1..=WARM_UP_ATTEMPTS {
        match state.warm_up().await {
            Ok(()) => {
                state.health.ready.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!(seconds = started.elapsed().as_secs_f64(), "warm-up done; ready");
                return true;
            }
            Err(e) if attempt < WARM_UP_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, retry_in_ms = backoff.as_millis() as u64, "warm-up failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(e) => tracing::error!(error = %e, "warm-up failed {WARM_UP_ATTEMPTS} times; exiting"),
        }
    }
    false
}

/// Serves until SIGINT or SIGTERM, then drains in-flight requests. If a decode lane dies,
/// stops at once with an error (the process exits non-zero, and the orchestrator restarts it):
/// it never goes on serving with a cache in an unknown state. A warm-up that fails every
/// attempt stops it the same way.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut server = start(config).await?;
    let models = server.models.clone();
    let decode_died = async move {
        while models.all().iter().all(|m| m.scheduler.is_alive()) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let warm_up = server.warm_up.take();
    let warm_up_failed = async move {
        let ready = match warm_up {
            Some(task) => task.await.unwrap_or(false),
            None => true,
        };
        if ready {
            // Nothing more to wait for.
            std::future::pending::<()>().await;
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
        _ = warm_up_failed => {
            server.shutdown().await?;
            anyhow::bail!("the warm-up failed; exiting so that the service is restarted")
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
