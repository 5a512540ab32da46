//! `POST /v1/classify`: scores candidate labels by their likelihood under the decoder, for
//! labelling pipelines. Goes through the same admission and queue as generation.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::api::{self, Classification, ClassifyRequest};
use crate::scheduler::{Event, RowRequest};
use crate::tasks::classify;

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use super::rows::row_error;

pub async fn classify(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<ClassifyRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let _permit = app.admit()?;
    let texts = api::parse_inputs(&req.inputs, &app.limits)?;
    let labels = match req.labels {
        Some(l) => l,
        None if app.tasks.classify_labels.is_empty() => {
            return Err(ApiError::Validation("labels are required: no default label set is configured".into()));
        }
        None => app.tasks.classify_labels.clone(),
    };
    api::check_labels(&labels, &app.limits)?;
    let template = req.template.unwrap_or_else(|| app.tasks.classify_template.clone());
    classify::check_template(&template).map_err(ApiError::Validation)?;
    let prompts: Vec<String> = texts.texts.iter().map(|t| classify::fill(&template, t)).collect();
    let inputs = app.tokenize(prompts).await?;
    let label_ids = app.tokenize_labels(labels.clone()).await?;
    let deadline = arrived + std::time::Duration::from_millis(app.limits.queue_deadline_ms);
    let (rows, receivers): (Vec<_>, Vec<_>) = inputs
        .into_iter()
        .map(|ids| {
            let (row, rx) = RowRequest::scoring(ids, label_ids.clone());
            (row.with_deadline(Some(deadline)), rx)
        })
        .unzip();
    app.metrics.input_tokens_total.inc_by(rows.iter().map(|r| r.input_ids.len() as u64).sum());
    app.scheduler.submit(rows)?;
    let normalize = req.length_normalize.unwrap_or(false);
    let multi = req.multi_label.unwrap_or(false);
    let mut out = Vec::with_capacity(receivers.len());
    for mut rx in receivers {
        let scores = match rx.recv().await {
            Some(Event::Scores(s)) => s,
            Some(Event::Error(e)) => return Err(row_error(e)),
            _ => return Err(ApiError::Internal("a scoring row ended without scores".into())),
        };
        let values: Vec<f64> = scores
            .iter()
            .map(|s| if normalize { s.logprob as f64 / s.tokens as f64 } else { s.logprob as f64 })
            .collect();
        let ranked = classify::probabilities(&labels, &values, multi);
        out.push(Classification { label: ranked[0].label.clone(), scores: ranked });
    }
    Ok(if texts.single { Json(out.pop().expect("one input")).into_response() } else { Json(out).into_response() })
}
