//! `POST /tokenize` in TGI's shape (each token with its id, its text and its span of the input
//! in characters; the EOS the model appends is the last, with an empty span at the end) and
//! `POST /detokenize` in vLLM's (`tokens` in, `prompt` out). Tokenizing runs on the tokenizer
//! threads, like every request's.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    pub inputs: String,
    /// TGI's request carries generation parameters; they do not change the tokens.
    pub parameters: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct SimpleToken {
    pub id: u32,
    /// The input's characters `start..stop` (empty for the EOS the model appends).
    pub text: String,
    pub start: usize,
    pub stop: usize,
}

pub async fn tokenize(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Result<Json<Vec<SimpleToken>>, ApiError> {
    // The default model's tokenizer (TGI's request names no model).
    let tokenizer = app.models.default_model().tokenizer.clone();
    let chars: Vec<char> = req.inputs.chars().collect();
    let pieces = super::tokenize::offsets(app.tokenizing.clone(), tokenizer.clone(), req.inputs).await?;
    let tokens = pieces
        .into_iter()
        .map(|(id, start, stop)| {
            let (start, stop) = (start.min(chars.len()), stop.min(chars.len()));
            let (start, stop) =
                if tokenizer.is_special(id) { (chars.len(), chars.len()) } else { (start, stop.max(start)) };
            SimpleToken { id, text: chars[start..stop].iter().collect(), start, stop }
        })
        .collect();
    Ok(Json(tokens))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
    /// The served model's id, if given (vLLM's request carries it).
    pub model: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DetokenizeResponse {
    /// The text of the ids, special tokens left out.
    pub prompt: String,
}

pub async fn detokenize(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let model = app.models.get(req.model.as_deref())?;
    let vocab = model.limits.vocab_size;
    if let Some(bad) = req.tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::Validation(format!(
            "tokens holds id {bad}; ids are below the vocabulary size ({vocab})"
        )));
    }
    let prompt = model.tokenizer.decode(&req.tokens).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(DetokenizeResponse { prompt }))
}
