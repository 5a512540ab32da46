//! Health: `/health/live` (the process serves HTTP; never touches the model), `/health/ready`
//! (the model is loaded, a warm-up request has run, every decode lane runs, the server can take
//! work now (below max_concurrent_requests, a tokenizer thread free), and it is not
//! draining), and `/health`, an alias of ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

/// Readiness flags shared by the server and its handlers.
#[derive(Clone)]
pub struct Health {
    /// Set once the warm-up batch has finished.
    pub ready: Arc<AtomicBool>,
    /// Set on SIGTERM/SIGINT: new work is refused while requests in flight finish.
    pub draining: Arc<AtomicBool>,
    /// Turns true when the server stops: streams still running end with an error event, and
    /// connections are closed (`serve`).
    pub stop: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            ready: Default::default(),
            draining: Default::default(),
            stop: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }
}

impl Health {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

pub async fn live() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

pub async fn ready(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    if app.health.is_draining() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    let model = app.models.default_model();
    if !model.scheduler.is_alive() {
        return Err(ApiError::Unavailable("the decode thread has stopped".into()));
    }
    if !app.health.ready.load(Ordering::SeqCst) {
        return Err(ApiError::Unavailable("warming up".into()));
    }
    // Ready means able to take work now: not at max_concurrent_requests (a new request would get
    // 429), and not with every tokenizer thread busy (it would wait).
    if app.admission.available_permits() == 0 {
        return Err(ApiError::Unavailable(format!(
            "at max_concurrent_requests ({}): not taking more work now",
            app.limits.max_concurrent_requests
        )));
    }
    if app.tokenizing.saturated() {
        return Err(ApiError::Unavailable("every tokenizer thread is busy".into()));
    }
    Ok(Json(json!({ "status": "ok", "model": model.id })))
}
