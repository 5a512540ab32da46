//! The connection loop: accepts TCP connections up to `max_connections` (beyond it a new
//! connection is closed at once and counted), serves each with hyper's HTTP/1 under a header-read
//! timeout (hyper starts it whenever a connection is ready for a request: a client that trickles
//! its headers, or an idle keep-alive connection, is closed once it runs out), and at shutdown
//! tells every connection to close, gives them `LINGER`, then drops what is left: a half-sent
//! request or a silent client cannot keep the process alive.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// How long connections may take to close after the server stops, before they are dropped.
pub const LINGER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `stop` turns true; then closes every connection within `LINGER`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            () = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.connection_refused("max_connections");
            drop(stream);
            continue;
        };
        let (app, metrics, mut stop) = (app.clone(), metrics.clone(), stop.clone());
        let open = Open::new(&metrics);
        connections.spawn(async move {
            let (_slot, _open) = (slot, open);
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result
                && e.is_timeout()
            {
                metrics.connection_refused("header_timeout");
            }
        });
    }
    drop(listener);
    let closing = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(LINGER, closing).await.is_err() {
        tracing::info!(left = connections.len(), "connections still open after the linger time; dropped");
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Counts a connection in `t5serve_open_connections` while it lives (aborted ones included).
struct Open(prometheus::IntGauge);

impl Open {
    fn new(metrics: &Metrics) -> Self {
        metrics.open_connections.inc();
        Self(metrics.open_connections.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}
