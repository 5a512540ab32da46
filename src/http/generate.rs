//! `POST /v1/generate`: text in, generated text out; a list of inputs is decoded as one batch.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{self, GenerateRequest, Generation, Usage};
use crate::scheduler::{Event, RowError, RowRequest};

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;

pub async fn generate(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<GenerateRequest>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let _permit = app.admit()?;
    let texts = api::parse_inputs(&req.inputs, &app.limits)?;
    let params = req.parameters.validate(&app.limits)?;
    let deadline = Instant::now() + req.parameters.queue_deadline(&app.limits)?;
    let ids = app.tokenize(texts.texts).await?;
    let (rows, receivers): (Vec<_>, Vec<_>) = ids
        .into_iter()
        .map(|ids| {
            let (row, rx) = RowRequest::new(ids, params);
            (row.with_deadline(Some(deadline)), rx)
        })
        .unzip();
    app.scheduler.submit(rows)?;
    let mut out = Vec::with_capacity(receivers.len());
    for rx in receivers {
        out.push(collect(&app, rx, arrived).await?);
    }
    Ok(if texts.single {
        Json(out.pop().expect("one input, one result")).into_response()
    } else {
        Json(out).into_response()
    })
}

/// Gathers one row's events into its final result.
async fn collect(app: &AppState, mut rx: UnboundedReceiver<Event>, arrived: Instant) -> Result<Generation, ApiError> {
    let mut ids = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            Event::Token { id } => {
                if ids.is_empty() {
                    app.metrics.time_to_first_token_seconds.observe(arrived.elapsed().as_secs_f64());
                }
                ids.push(id)
            }
            Event::Finished { reason, input_tokens, generated_tokens } => {
                let generated_text = app.tokenizer.decode(&ids).map_err(|e| ApiError::Internal(e.to_string()))?;
                return Ok(Generation {
                    generated_text,
                    finish_reason: reason,
                    usage: Usage { input_tokens, generated_tokens },
                });
            }
            Event::Error(RowError::DeadlineExceeded) => {
                return Err(ApiError::DeadlineExceeded("the request waited in the queue past its deadline".into()));
            }
            Event::Error(RowError::Internal(e)) => return Err(ApiError::Internal(format!("decoding failed: {e}"))),
        }
    }
    Err(ApiError::Internal("the decode thread dropped a row without finishing it".into()))
}
