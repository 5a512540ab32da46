//! Reranking for every dialect that offers it (TEI's `POST /rerank`, Cohere's and Jina's
//! `POST /v1/rerank`): each document is one row, the query and the document in the model's
//! rerank template, scored at the first decoder step (`tasks::rerank`) on the same path as
//! every other request (admission, validation, queue, request timeout).

use std::sync::Arc;

use crate::api::{self, GenerateParameters, Inputs};

use super::AppState;
use super::error::ApiError;
use super::pipeline::{Caller, Prompt};
use super::served::Served;

/// A rerank request as a dialect states it.
pub struct Pairs {
    /// The request field that holds the documents, for error messages.
    pub field: &'static str,
    pub query: String,
    pub documents: Vec<String>,
    /// Cut a pair longer than max_input_tokens (its document) instead of refusing it.
    pub truncate: bool,
    /// With `truncate`: keep the document's beginning (otherwise its end).
    pub keep_start: bool,
}

/// Each document's `logit_true - logit_false`, in the documents' order.
pub async fn run(app: &AppState, model: &Arc<Served>, pairs: Pairs) -> Result<Vec<f64>, ApiError> {
    if pairs.query.trim().is_empty() {
        return Err(ApiError::Validation("query must not be empty".into()));
    }
    if pairs.query.len() > model.limits.max_input_tokens.saturating_mul(32) {
        return Err(ApiError::Validation(format!(
            "query is longer than max_input_tokens ({}) tokens can be",
            model.limits.max_input_tokens
        )));
    }
    if pairs.documents.is_empty() {
        return Err(ApiError::Validation(format!("{} must not be empty", pairs.field)));
    }
    let truncate = pairs.truncate.then_some(model.limits.max_input_tokens as i64);
    let parameters = GenerateParameters { truncate, ..Default::default() };
    let request = api::Request {
        labels: Some(api::Labels::FirstTokens(model.tasks.rerank_tokens.to_vec())),
        truncate_right: pairs.keep_start,
        ..api::Request::generate(pairs.field, Inputs::Many(pairs.documents), parameters)
    };
    let prompt = Prompt::Rerank { settings: model.tasks.rerank.clone(), query: pairs.query.into() };
    let rows = app.submit(Caller::Client, model, request, prompt).await?.collect().await?;
    let mut out = Vec::with_capacity(rows.len());
    for (_, output) in rows {
        let scores = output.scores()?;
        let [yes, no] = scores[..] else {
            return Err(ApiError::Internal(format!("a rerank row gave {} scores, not 2", scores.len())));
        };
        out.push(yes.first_logit as f64 - no.first_logit as f64);
    }
    Ok(out)
}
