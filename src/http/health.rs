//! `GET /health`: 200 while the decode thread runs, 503 once it has stopped.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

pub async fn health(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    if !app.scheduler.is_alive() {
        return Err(ApiError::Unavailable("the decode thread has stopped".into()));
    }
    Ok(Json(json!({ "status": "ok", "model": app.info.dims.name })))
}
