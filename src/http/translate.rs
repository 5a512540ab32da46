//! `POST /v1/translate` and `GET /v1/translate/languages`: translation between configured
//! language pairs, each with its prompt template. A text too long for the model's input limit
//! is split at sentence boundaries, translated as one batch, and rejoined.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::{self, LongTexts, TranslateRequest, TranslateResponse, TranslationDetails, Usage};
use crate::generation::FinishReason;

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use super::pipeline::{Caller, Prompt};

/// The default model's pairs.
pub async fn languages(State(app): State<AppState>) -> Json<Value> {
    let model = app.models.default_model();
    let pairs: Vec<Value> =
        model.tasks.translate_pairs.iter().map(|p| json!({"source": p.source, "target": p.target})).collect();
    Json(json!({ "pairs": pairs }))
}

pub async fn translate(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<TranslateRequest>,
) -> Result<Json<TranslateResponse>, ApiError> {
    let model = app.models.get(req.model.as_deref())?;
    let pairs = &model.tasks.translate_pairs;
    let pair = pairs.iter().find(|p| p.matches(&req.source_lang, &req.target_lang)).ok_or_else(|| {
        let supported: Vec<String> = pairs.iter().map(|p| format!("{} -> {}", p.source, p.target)).collect();
        ApiError::Validation(format!(
            "{} -> {} is not a supported language pair; supported: {}",
            api::echo(&req.source_lang),
            api::echo(&req.target_lang),
            supported.join(", ")
        ))
    })?;
    let p = &req.parameters;
    if p.stop.is_some() || p.details.is_some() {
        return Err(ApiError::Validation(
            "parameters.stop and parameters.details are not available on /v1/translate".into(),
        ));
    }
    // Long texts are split, not refused: the body limit bounds them.
    let request =
        api::Request { long_texts: LongTexts::Split, ..api::Request::generate("text", req.text, req.parameters) };
    let submitted = app.submit(Caller::Client, &model, request, Prompt::Template(pair.template.clone())).await?;
    let mut translations: Vec<String> = Vec::new();
    let mut details: Vec<TranslationDetails> = Vec::new();
    for (owner, output) in submitted.collect().await? {
        let c = output.generated()?;
        if translations.len() <= owner {
            translations.resize(owner + 1, String::new());
            let none = Usage { input_tokens: 0, generated_tokens: 0 };
            details.resize(owner + 1, TranslationDetails { finish_reason: FinishReason::Eos, usage: none, chunks: 0 });
        }
        let (t, d) = (&mut translations[owner], &mut details[owner]);
        if !t.is_empty() {
            t.push(' ');
        }
        t.push_str(c.text.trim());
        if c.reason != FinishReason::Eos {
            d.finish_reason = c.reason;
        }
        d.usage.input_tokens += c.usage.input_tokens;
        d.usage.generated_tokens += c.usage.generated_tokens;
        d.chunks += 1;
    }
    Ok(Json(TranslateResponse { translations, details }))
}
