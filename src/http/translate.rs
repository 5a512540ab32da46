//! `POST /v1/translate` and `GET /v1/translate/languages`: translation between configured
//! language pairs, each with its prompt template. A text too long for the model's input limit
//! is split at sentence boundaries, translated as one batch, and rejoined.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::{self, TranslateRequest, TranslateResponse};
use crate::tasks::{classify, translate};

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use super::rows::{self, RowOptions};

pub async fn languages(State(app): State<AppState>) -> Json<Value> {
    let pairs: Vec<Value> =
        app.tasks.translate_pairs.iter().map(|p| json!({"source": p.source, "target": p.target})).collect();
    Json(json!({ "pairs": pairs }))
}

pub async fn translate(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<TranslateRequest>,
) -> Result<Json<TranslateResponse>, ApiError> {
    let arrived = Instant::now();
    let _permit = app.admit()?;
    // Long texts are split, not refused: the body limit bounds them.
    let texts = api::parse_texts("text", &req.text, &app.limits, usize::MAX)?;
    let pair = app
        .tasks
        .translate_pairs
        .iter()
        .find(|p| p.matches(&req.source_lang, &req.target_lang))
        .ok_or_else(|| {
            let supported: Vec<String> =
                app.tasks.translate_pairs.iter().map(|p| format!("{} -> {}", p.source, p.target)).collect();
            ApiError::Validation(format!(
                "{} -> {} is not a supported language pair; supported: {}",
                req.source_lang,
                req.target_lang,
                supported.join(", ")
            ))
        })?
        .clone();
    let p = &req.parameters;
    if p.stop.is_some() || p.details.is_some() {
        return Err(ApiError::Validation(
            "parameters.stop and parameters.details are not available on /v1/translate".into(),
        ));
    }
    let options = RowOptions {
        beam: p.beam(&app.limits)?,
        params: p.validate(&app.limits)?,
        stop: Vec::new(),
        logprobs: false,
        deadline: arrived + p.queue_deadline(&app.limits)?,
    };
    let (prompts, owners) = split_prompts(&app, &pair, texts.texts).await?;
    let receivers = rows::submit(&app, prompts, &options)?;
    let mut translations = vec![String::new(); owners.iter().max().map_or(0, |m| m + 1)];
    for (rx, owner) in receivers.into_iter().zip(owners) {
        let c = rows::collect(&app, rx, arrived).await?;
        let t = &mut translations[owner];
        if !t.is_empty() {
            t.push(' ');
        }
        t.push_str(c.text.trim());
    }
    Ok(Json(TranslateResponse { translations }))
}

/// Tokenized prompts (one per chunk) and, for each, the index of the text it came from.
async fn split_prompts(
    app: &AppState,
    pair: &translate::LanguagePair,
    texts: Vec<String>,
) -> Result<(Vec<Vec<u32>>, Vec<usize>), ApiError> {
    let tokenizer = app.tokenizer.clone();
    let limit = app.limits.max_input_tokens;
    let template = pair.template.clone();
    tokio::task::spawn_blocking(move || {
        let count = |chunk: &str| {
            tokenizer.encode(&classify::fill(&template, chunk)).map(|ids| ids.len()).unwrap_or(usize::MAX)
        };
        let mut prompts = Vec::new();
        let mut owners = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let pieces = if count(text) <= limit {
                vec![text.clone()]
            } else {
                translate::chunks(&translate::sentences(text), limit, count)
            };
            for piece in pieces {
                let ids = tokenizer
                    .encode(&classify::fill(&template, &piece))
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                if ids.len() > limit {
                    return Err(ApiError::Validation(format!(
                        "text[{i}] has a sentence of {} tokens; the limit is {limit} (max_input_tokens)",
                        ids.len()
                    )));
                }
                prompts.push(ids);
                owners.push(i);
            }
        }
        Ok((prompts, owners))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("tokenizer task failed: {e}")))?
}
