//! `POST /v1/classify`: scores candidate labels by their likelihood under the decoder, for
//! labelling pipelines. Goes through the same path as generation (admission, validation,
//! queue, request timeout). `classify` is that task for every dialect that offers it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::api::{self, Classification, ClassifyRequest, Inputs};
use crate::tasks::classify;

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use super::pipeline::{Caller, Prompt};
use super::served::Served;

pub async fn classify(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<ClassifyRequest>,
) -> Result<Response, ApiError> {
    let model = app.models.get(req.model.as_deref())?;
    let task = Task {
        labels: req.labels,
        template: req.template,
        length_normalize: req.length_normalize.unwrap_or(false),
        multi_label: req.multi_label.unwrap_or(false),
    };
    let single = req.inputs.is_single();
    let (mut out, _) = run(&app, &model, req.inputs, task).await?;
    Ok(if single { Json(out.pop().expect("one input")).into_response() } else { Json(out).into_response() })
}

/// A classification as a request asks for it; what it leaves out comes from the model.
#[derive(Debug, Default)]
pub struct Task {
    pub labels: Option<Vec<String>>,
    pub template: Option<String>,
    pub length_normalize: bool,
    pub multi_label: bool,
}

/// Classifies `inputs` on `model`: each input's labels with their probabilities, most likely
/// first, and the label set used (the request's, or the model's defaults), in its order.
pub async fn run(
    app: &AppState,
    model: &Arc<Served>,
    inputs: Inputs,
    task: Task,
) -> Result<(Vec<Classification>, Vec<String>), ApiError> {
    let labels = match task.labels {
        Some(l) => l,
        None if model.tasks.classify_labels.is_empty() => {
            return Err(ApiError::Validation("labels are required: no default label set is configured".into()));
        }
        None => model.tasks.classify_labels.clone(),
    };
    let template = task.template.unwrap_or_else(|| model.tasks.classify_template.clone());
    classify::check_template(&template).map_err(ApiError::Validation)?;
    let request = api::Request::score(inputs, labels.clone());
    let submitted = app.submit(Caller::Client, model, request, Prompt::Template(template)).await?;
    let mut out = Vec::new();
    for (_, output) in submitted.collect().await? {
        let values: Vec<f64> = output
            .scores()?
            .iter()
            .map(|s| if task.length_normalize { s.logprob as f64 / s.tokens as f64 } else { s.logprob as f64 })
            .collect();
        let ranked = classify::probabilities(&labels, &values, task.multi_label);
        out.push(Classification { label: ranked[0].label.clone(), scores: ranked });
    }
    Ok((out, labels))
}
