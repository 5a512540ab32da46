//! `POST /v1/classify`: scores candidate labels by their likelihood under the decoder, for
//! labelling pipelines. Goes through the same path as generation (admission, validation,
//! queue, request timeout).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::api::{self, Classification, ClassifyRequest};
use crate::tasks::classify;

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use super::pipeline::{Caller, Prompt};

pub async fn classify(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<ClassifyRequest>,
) -> Result<Response, ApiError> {
    let model = app.models.get(req.model.as_deref())?;
    let labels = match req.labels {
        Some(l) => l,
        None if model.tasks.classify_labels.is_empty() => {
            return Err(ApiError::Validation("labels are required: no default label set is configured".into()));
        }
        None => model.tasks.classify_labels.clone(),
    };
    let template = req.template.unwrap_or_else(|| model.tasks.classify_template.clone());
    classify::check_template(&template).map_err(ApiError::Validation)?;
    let request = api::Request::score(req.inputs, labels.clone());
    let submitted = app.submit(Caller::Client, &model, request, Prompt::Template(template)).await?;
    let single = submitted.single;
    let normalize = req.length_normalize.unwrap_or(false);
    let multi = req.multi_label.unwrap_or(false);
    let mut out = Vec::new();
    for (_, output) in submitted.collect().await? {
        let values: Vec<f64> = output
            .scores()?
            .iter()
            .map(|s| if normalize { s.logprob as f64 / s.tokens as f64 } else { s.logprob as f64 })
            .collect();
        let ranked = classify::probabilities(&labels, &values, multi);
        out.push(Classification { label: ranked[0].label.clone(), scores: ranked });
    }
    Ok(if single { Json(out.pop().expect("one input")).into_response() } else { Json(out).into_response() })
}
