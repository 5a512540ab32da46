//! KServe's Open Inference Protocol (v2, the protocol Triton and MLServer speak) over REST:
//! server and model metadata, health and readiness, and inference (`infer.rs`) through the one
//! path every route takes. Errors are the protocol's `{"error": "..."}` (with t5serve's
//! `error_type` beside it), with 400 for a request the server cannot run.

pub mod grpc;
pub mod infer;
pub mod tensor;

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api;

use super::AppState;
use super::error::ApiError;
use super::served::Served;

/// The one version of every model: a reload replaces the model in place.
pub const VERSION: &str = "1";

/// The protocol extensions served.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// An error in the protocol's shape: `{"error": ...}`, with 400 where t5serve's own routes say
/// 422 (a well-formed request asking for something invalid).
pub struct OipError(pub ApiError);

impl From<ApiError> for OipError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        if response.status() == StatusCode::UNPROCESSABLE_ENTITY {
            *response.status_mut() = StatusCode::BAD_REQUEST;
        }
        response
    }
}

/// `/v2/models/{name}[/versions/{version}]`.
#[derive(Deserialize)]
pub struct ModelPath {
    name: String,
    version: Option<String>,
}

impl ModelPath {
    /// A model and version as gRPC's messages name them (an empty version: none named).
    pub fn new(name: String, version: String) -> Self {
        Self { name, version: Some(version).filter(|v| !v.is_empty()) }
    }

    /// The served model it names, at a version it has.
    pub fn model(&self, app: &AppState) -> Result<Arc<Served>, OipError> {
        let model = app.models.get(Some(&self.name))?;
        match self.version.as_deref() {
            None | Some(VERSION) => Ok(model),
            Some(v) => Err(OipError(ApiError::NotFound(format!(
                "model {:?} has no version {:?}; its only version is {VERSION:?}",
                model.id,
                api::echo(v)
            )))),
        }
    }
}

/// `GET /v2`: the server's metadata.
pub async fn server_metadata() -> Json<Value> {
    Json(json!({"name": "t5serve", "version": env!("CARGO_PKG_VERSION"), "extensions": EXTENSIONS}))
}

/// `GET /v2/health/live`.
pub async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

/// `GET /v2/health/ready`: ready as `/health/ready` is; otherwise 503 saying why.
pub async fn ready(state: State<AppState>) -> Response {
    match super::health::ready(state).await {
        Ok(_) => Json(json!({"ready": true})).into_response(),
        Err(e) => {
            let status = e.status_code();
            (status, Json(json!({"ready": false, "error": e.to_string()}))).into_response()
        }
    }
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`: 200 when it serves, 404 when it is not
/// served (or not yet, or no longer).
pub async fn model_ready(State(app): State<AppState>, Path(path): Path<ModelPath>) -> Result<Json<Value>, OipError> {
    let model = path.model(&app)?;
    if !model.scheduler.is_alive() {
        return Err(OipError(ApiError::Unavailable(format!("model {:?}: its decode thread has stopped", model.id))));
    }
    Ok(Json(json!({"name": model.id, "ready": true})))
}

/// The input every model takes and the outputs it gives: name, datatype, shape (-1: any).
/// `text_output` answers a generation; `label` and `scores` a classification (`task` =
/// `classify`).
pub const INPUTS: &[(&str, &str, &[i64])] = &[(infer::INPUT, "BYTES", &[-1])];
pub const OUTPUTS: &[(&str, &str, &[i64])] =
    &[("text_output", "BYTES", &[-1]), ("label", "BYTES", &[-1]), ("scores", "FP32", &[-1, -1])];
/// What the metadata calls the platform.
pub const PLATFORM: &str = "t5serve";

/// `GET /v2/models/{name}[/versions/{version}]`: the model's input and outputs.
pub async fn model_metadata(State(app): State<AppState>, Path(path): Path<ModelPath>) -> Result<Json<Value>, OipError> {
    let model = path.model(&app)?;
    let tensors = |list: &[(&str, &str, &[i64])]| -> Vec<Value> {
        list.iter().map(|(name, datatype, shape)| json!({"name": name, "datatype": datatype, "shape": shape})).collect()
    };
    Ok(Json(json!({
        "name": model.id,
        "versions": [VERSION],
        "platform": PLATFORM,
        "inputs": tensors(INPUTS),
        "outputs": tensors(OUTPUTS),
    })))
}
