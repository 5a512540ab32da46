//! Hugging Face TEI's (text-embeddings-inference) routes: `POST /embed` in TEI's request and
//! response shape, on the same encoder-only rows as OpenAI's `/v1/embeddings` (one
//! implementation, two dialects): pooled over the real tokens as the model sets it
//! (`t5serve.json`, mean by default), normalized unless the request says `normalize: false`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use crate::api::{self, GenerateParameters, Inputs};
use crate::tasks::embed;

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use super::pipeline::{Caller, Prompt};

/// Which end of a too-long input `truncate` cuts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum TruncationDirection {
    /// Keep the beginning (TEI's default).
    #[default]
    Right,
    /// Keep the end.
    Left,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// The served model's id; absent: the default model (TEI serves one model).
    pub model: Option<String>,
    /// One text or a list (at most max_client_batch_size).
    pub inputs: Inputs,
    /// Scale each vector to unit length (default true).
    pub normalize: Option<bool>,
    /// Cut a text longer than max_input_tokens instead of refusing it (default false).
    pub truncate: Option<bool>,
    pub truncation_direction: Option<TruncationDirection>,
    /// Keep the first `dimensions` values (renormalized when normalizing).
    pub dimensions: Option<i64>,
}

/// `POST /embed`: one vector per input, as a list of lists (a single input too, as TEI does).
pub async fn embed(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<EmbedRequest>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    let model = app.models.get(req.model.as_deref())?;
    let dimensions = embed::dimensions(req.dimensions, model.info.dims.d_model).map_err(ApiError::Validation)?;
    let settings = embed::EmbedSettings { normalize: req.normalize.unwrap_or(true), ..model.tasks.embedding };
    let truncate = req.truncate.unwrap_or(false).then_some(model.limits.max_input_tokens as i64);
    let parameters = GenerateParameters { truncate, ..Default::default() };
    let request = api::Request {
        embed: Some(settings),
        truncate_right: req.truncation_direction.unwrap_or_default() == TruncationDirection::Right,
        ..api::Request::generate("inputs", req.inputs, parameters)
    };
    let rows = app.submit(Caller::Client, &model, request, Prompt::Text).await?.collect().await?;
    let mut out = Vec::with_capacity(rows.len());
    for (_, output) in rows {
        let (vector, _) = output.embedding()?;
        out.push(embed::shorten(vector, dimensions, settings.normalize));
    }
    Ok(Json(out))
}
