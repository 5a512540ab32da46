//! Hugging Face TEI's (text-embeddings-inference) routes: `POST /embed` in TEI's request and
//! response shape, on the same encoder-only rows as OpenAI's `/v1/embeddings` (one
//! implementation, two dialects): pooled over the real tokens as the model sets it
//! (`t5serve.json`, mean by default), normalized unless the request says `normalize: false`.
//! `POST /rerank` scores documents against a query the monoT5 way (`super::rerank`, shared with
//! Cohere's `/v1/rerank`).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::api::{self, GenerateParameters, Inputs};
use crate::tasks::{embed, rerank};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    /// The served model's id; absent: the default model.
    pub model: Option<String>,
    pub query: String,
    /// The documents to rank (at most max_client_batch_size).
    pub texts: Vec<String>,
    /// Scores as `logit_true - logit_false` instead of its sigmoid (default false).
    pub raw_scores: Option<bool>,
    /// Each result holds its text (default false).
    pub return_text: Option<bool>,
    /// Cut a document whose pair is longer than max_input_tokens instead of refusing it.
    pub truncate: Option<bool>,
    pub truncation_direction: Option<TruncationDirection>,
}

#[derive(Debug, Serialize)]
pub struct Rank {
    pub index: usize,
    pub score: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `POST /rerank`: every text with its score, most relevant first.
pub async fn rerank(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RerankRequest>,
) -> Result<Json<Vec<Rank>>, ApiError> {
    let model = app.models.get(req.model.as_deref())?;
    let pairs = super::rerank::Pairs {
        field: "texts",
        query: req.query,
        documents: req.texts.clone(),
        truncate: req.truncate.unwrap_or(false),
        keep_start: req.truncation_direction.unwrap_or_default() == TruncationDirection::Right,
    };
    let diffs = super::rerank::run(&app, &model, pairs).await?;
    let (raw, with_text) = (req.raw_scores.unwrap_or(false), req.return_text.unwrap_or(false));
    let scores: Vec<f64> = diffs.iter().map(|&d| rerank::score(d, raw)).collect();
    let ranks = rerank::ranking(&scores, None)
        .into_iter()
        .map(|index| Rank { index, score: scores[index], text: with_text.then(|| req.texts[index].clone()) })
        .collect();
    Ok(Json(ranks))
}
