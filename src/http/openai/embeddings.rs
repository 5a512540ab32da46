//! `POST /v1/embeddings`: the encoder's last hidden states pooled over the real tokens and
//! normalized, as the model sets it (`tasks::embed`). Embedding rows run the encoder only; they
//! share the queue, the length buckets and the memory budget with every other row.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api;
use crate::tasks::embed;

use super::super::AppState;
use super::super::pipeline::Caller;
use super::{OaiJson, OpenAiError, PromptInput, invalid};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    pub model: Option<String>,
    pub input: Value,
    /// `float` (the default) or `base64` (little-endian f32 bytes).
    pub encoding_format: Option<String>,
    /// Keep the first `dimensions` values (renormalized when the model normalizes).
    pub dimensions: Option<i64>,
    pub user: Option<String>,
}

pub async fn embeddings(
    State(app): State<AppState>,
    OaiJson(req): OaiJson<EmbeddingRequest>,
) -> Result<Response, OpenAiError> {
    let model = super::check_model(&app, req.model.as_deref())?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(
                "encoding_format",
                format!("encoding_format must be float or base64, got {}", api::echo(other)),
            ));
        }
    };
    let dimensions =
        embed::dimensions(req.dimensions, model.info.dims.d_model).map_err(|e| invalid("dimensions", e))?;
    let input = PromptInput::parse("input", req.input)?;
    let (inputs, prompt, _) = input.into_request(&model)?;
    let settings = model.tasks.embedding;
    let request = api::Request { embed: Some(settings), ..api::Request::generate("input", inputs, Default::default()) };
    tracing::debug!(user = req.user.as_deref().unwrap_or(""), "embeddings");
    let rows = app.submit(Caller::Client, &model, request, prompt).await?.collect().await?;
    let mut tokens = 0;
    let mut data = Vec::with_capacity(rows.len());
    for (index, (_, output)) in rows.into_iter().enumerate() {
        let (vector, input_tokens) = output.embedding()?;
        tokens += input_tokens;
        let vector = embed::shorten(vector, dimensions, settings.normalize);
        let embedding = if base64 { json!(encode_base64(&vector)) } else { json!(vector) };
        data.push(json!({"object": "embedding", "index": index, "embedding": embedding}));
    }
    Ok(Json(json!({"object": "list", "data": data, "model": model.id, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})).into_response())
}

/// The vector's little-endian f32 bytes in standard base64 (what OpenAI's `base64` format holds).
pub fn encode_base64(v: &[f32]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(TABLE[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_encoding() {
        // 1.0f32 is 00 00 80 3f; -2.0f32 is 00 00 00 c0 (RFC 4648 alphabet, padded).
        assert_eq!(encode_base64(&[1.0]), "AACAPw==");
        assert_eq!(encode_base64(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(encode_base64(&[]), "");
    }
}
