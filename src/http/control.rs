//! Model control (Triton's explicit model control, behind the API key like every /v1 route):
//! `POST /v1/models/{id}/load` loads a model from the repository (`model_repository`), or
//! reloads from its directory a model already loaded; `POST /v1/models/{id}/unload` stops
//! admitting to it, lets its requests in flight finish and frees its sessions; `GET
//! /v1/models/{id}` tells its state. A model is warmed up before it serves; a reload swaps the
//! new version in at once (new requests go to it, rows in flight finish on the old one).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::api;
use crate::config::ModelSpec;

use super::AppState;
use super::error::ApiError;
use super::served::{self, State as ModelState};

/// How often an unload looks whether its model's requests and threads are done.
const POLL: Duration = Duration::from_millis(10);

/// `GET /v1/models/{id}`: one model's state (and its description when it is ready).
pub async fn model(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    match app.models.state(&id) {
        Some(ModelState::Ready(m)) => Ok(Json(super::models::describe(&m))),
        Some(ModelState::Failed(why)) => Ok(Json(json!({"id": id, "state": "failed", "reason": why}))),
        Some(s) => Ok(Json(json!({"id": id, "state": s.name()}))),
        None => Err(app.models.not_served(&id)),
    }
}

/// `POST /v1/models/{id}/load`.
pub async fn load(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if !ModelSpec::valid_id(&id) {
        return Err(ApiError::NotFound(format!("{} is not a model id", api::echo(&format!("{id:?}")))));
    }
    let _busy = app.models.control(&id)?;
    let current = app.models.state(&id);
    let reload = matches!(current, Some(ModelState::Ready(_)));
    // A reload reads the same directory with the same per-model settings.
    let spec = match &current {
        Some(ModelState::Ready(m)) => m.spec.clone(),
        _ => ModelSpec { id: Some(id.clone()), path: repository_dir(&app, &id)?, ..Default::default() },
    };
    if !reload {
        app.models.set(&id, ModelState::Loading);
    }
    let loader = &app.models.loader;
    let started = std::time::Instant::now();
    let loaded = match served::load(loader, &spec).await {
        Ok(m) => Arc::new(m),
        Err(e) => return Err(failed(&app, &id, current, format!("{e:#}"))),
    };
    if let Err(e) = app.warm_up_model(&loaded).await {
        return Err(failed(&app, &id, current, format!("its warm-up failed: {e}")));
    }
    if let Some(ModelState::Ready(old)) = app.models.set(&id, ModelState::Ready(loaded)) {
        app.models.retire(&old);
        // The old version's rows in flight finish on it; once its threads have ended, its
        // memory goes back to the system.
        let threads = old.scheduler.threads();
        drop(old);
        tokio::spawn(async move {
            while threads.strong_count() > 0 {
                tokio::time::sleep(POLL).await;
            }
            release_freed_memory();
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(model = %id, reload, seconds, "model ready");
    Ok(Json(json!({"id": id, "state": "ready", "reloaded": reload, "seconds": seconds})))
}

/// The repository's folder for `id`.
fn repository_dir(app: &AppState, id: &str) -> Result<std::path::PathBuf, ApiError> {
    let Some(repo) = &app.models.loader.config.model_repository else {
        return Err(ApiError::NotFound(format!(
            "model {id:?} is not loaded, and no model_repository is configured to load it from"
        )));
    };
    let dir = repo.join(id);
    if !dir.is_dir() {
        return Err(ApiError::NotFound(format!("model_repository {} has no model {id:?}", repo.display())));
    }
    Ok(dir)
}

/// A load that failed: a reload leaves the old version serving; a new model is marked failed.
fn failed(app: &AppState, id: &str, before: Option<ModelState>, why: String) -> ApiError {
    tracing::error!(model = %id, error = %why, "model failed to load");
    if !matches!(before, Some(ModelState::Ready(_))) {
        app.models.set(id, ModelState::Failed(why.clone()));
    }
    ApiError::Validation(format!("model {id:?} failed to load: {why}"))
}

/// `POST /v1/models/{id}/unload`: answers once its requests are done and its threads ended.
pub async fn unload(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if id == app.models.default_id() {
        return Err(ApiError::Conflict(format!("{id:?} is the default model; it cannot be unloaded")));
    }
    let _busy = app.models.control(&id)?;
    let model = match app.models.state(&id) {
        Some(ModelState::Ready(m)) => m,
        Some(_) => {
            app.models.remove(&id);
            return Ok(Json(json!({"id": id, "state": "unloaded"})));
        }
        None => return Err(app.models.not_served(&id)),
    };
    // From here new requests get 404; each request in flight holds the model until answered.
    app.models.set(&id, ModelState::Unloading);
    app.models.retire(&model);
    let started = std::time::Instant::now();
    while Arc::strong_count(&model) > 1 {
        tokio::time::sleep(POLL).await;
    }
    // The last handle is the one here: dropped, the decode threads end and free the sessions.
    let threads = model.scheduler.threads();
    drop(model);
    while threads.strong_count() > 0 {
        tokio::time::sleep(POLL).await;
    }
    app.models.remove(&id);
    release_freed_memory();
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(model = %id, seconds, "model unloaded");
    Ok(Json(json!({"id": id, "state": "unloaded", "seconds": seconds})))
}

/// Hands the heap pages freed with a model's sessions back to the system: glibc keeps freed
/// memory in its arenas (one per thread that allocated), so resident memory fell by less than
/// the model's size after an unload without it.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own arenas; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
