//! Cohere's rerank API, which Jina's follows: `POST /v1/rerank` (and `/v2/rerank`, Cohere's
//! current client) with `query`, `documents` as strings or `{"text"}` objects, `top_n` and
//! `return_documents`; `results` hold `index` and `relevance_score`, most relevant first. The
//! scoring is `super::rerank`, shared with TEI's `/rerank`. As Cohere does, a document too long
//! for the model is cut (its end), not refused.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::tasks::rerank;

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Document {
    Text(String),
    Object(DocumentObject),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentObject {
    text: String,
}

impl Document {
    fn text(&self) -> &str {
        match self {
            Document::Text(text) | Document::Object(DocumentObject { text }) => text,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    /// The served model's id; absent: the default model.
    pub model: Option<String>,
    pub query: String,
    /// The documents to rank (at most max_client_batch_size).
    pub documents: Vec<Document>,
    /// Return only the `top_n` most relevant (default: all).
    pub top_n: Option<i64>,
    /// Each result holds its document as `{"text"}` (default false).
    pub return_documents: Option<bool>,
}

/// `POST /v1/rerank`
pub async fn rerank(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RerankRequest>,
) -> Result<Json<Value>, ApiError> {
    let model = app.models.get(req.model.as_deref())?;
    let top_n = match req.top_n {
        None => None,
        Some(n) if n >= 1 => Some(n as usize),
        Some(n) => return Err(ApiError::Validation(format!("top_n must be at least 1, got {n}"))),
    };
    let pairs = super::rerank::Pairs {
        field: "documents",
        query: req.query,
        documents: req.documents.iter().map(|d| d.text().to_string()).collect(),
        truncate: true,
        keep_start: true,
    };
    let diffs = super::rerank::run(&app, &model, pairs).await?;
    let scores: Vec<f64> = diffs.iter().map(|&d| rerank::score(d, false)).collect();
    let with_documents = req.return_documents.unwrap_or(false);
    let results: Vec<Value> = rerank::ranking(&scores, top_n)
        .into_iter()
        .map(|index| {
            let mut r = json!({"index": index, "relevance_score": scores[index]});
            if with_documents {
                r["document"] = json!({"text": req.documents[index].text()});
            }
            r
        })
        .collect();
    Ok(Json(json!({
        "id": super::openai::response_id("rerank"),
        "model": model.id,
        "results": results,
        "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
    })))
}
