//! `POST /v1/extract`: entities the T5 way. Each input in the model's extraction prompt
//! (`t5serve.json` `"extract"`, or the request's `template`) is decoded like any generation, on the
//! same path; the output `TYPE: span; TYPE: span` is read back and each span found in the input
//! (`tasks::extract` has the rules): its type, text, offsets in Unicode characters, whether it was
//! found, and a score from its tokens' log-probabilities.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::api::{self, GenerateParameters, Inputs};
use crate::tasks::{classify, extract};

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use super::pipeline::{Caller, Prompt};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractRequest {
    /// The served model's id; absent: the default model.
    pub model: Option<String>,
    /// One text or a list (at most max_client_batch_size).
    pub inputs: Inputs,
    /// The prompt, with `{text}` where the input goes; default: the model's.
    pub template: Option<String>,
    /// Keep only entities of these types (the others are counted in `dropped`).
    pub types: Option<Vec<String>>,
    /// Decoding settings, as /v1/generate takes them (greedy by default).
    #[serde(default)]
    pub parameters: GenerateParameters,
}

#[derive(Debug, Serialize)]
pub struct Entity {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    /// Where it is in the input, in Unicode characters (`null` when it was not found there).
    pub start: Option<usize>,
    pub end: Option<usize>,
    /// Whether the span was found in the input.
    pub located: bool,
    /// The probability its tokens' mean log-probability stands for.
    pub score: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Extraction {
    /// Found entities in input order, then those not found, in the model's order.
    pub entities: Vec<Entity>,
    /// Entities of a type outside `types`.
    pub dropped: usize,
    /// Parts of the output that are not `TYPE: span`.
    pub unparsed: Vec<String>,
    /// What the model wrote.
    pub output: String,
}

pub async fn extract(State(app): State<AppState>, ApiJson(req): ApiJson<ExtractRequest>) -> Result<Response, ApiError> {
    let model = app.models.get(req.model.as_deref())?;
    let settings = &model.tasks.extract;
    let template = req.template.unwrap_or_else(|| settings.template.clone());
    classify::check_template(&template).map_err(ApiError::Validation)?;
    if let Some(types) = &req.types
        && let Some(i) = types.iter().position(|t| t.trim().is_empty())
    {
        return Err(ApiError::Validation(format!("types[{i}] must not be empty")));
    }
    if req.parameters.details.is_some() || req.parameters.stop.is_some() {
        return Err(ApiError::Validation(
            "parameters.details and parameters.stop are not available on /v1/extract".into(),
        ));
    }
    let single = req.inputs.is_single();
    let texts = req.inputs.clone().into_vec();
    let request = api::Request { logprobs: true, ..api::Request::generate("inputs", req.inputs, req.parameters) };
    let submitted = app.submit(Caller::Client, &model, request, Prompt::Template(template)).await?;
    let mut out = Vec::new();
    for (owner, output) in submitted.collect().await? {
        let c = output.generated()?;
        let pieces: Vec<(&str, f32)> =
            c.tokens.iter().map(|t| (t.text.as_str(), t.logprob.unwrap_or(f32::NEG_INFINITY))).collect();
        let parsed = extract::parse(&c.text, settings);
        let input = &texts[owner];
        let (kept, dropped): (Vec<_>, Vec<_>) =
            parsed.entities.into_iter().partition(|e| req.types.as_ref().is_none_or(|types| types.contains(&e.kind)));
        let places = extract::locate(input, &kept);
        let mut entities: Vec<Entity> = kept
            .iter()
            .zip(places)
            .map(|(e, place)| Entity {
                kind: e.kind.clone(),
                text: e.text.clone(),
                start: place.as_ref().map(|r| extract::chars_at(input, r.start)),
                end: place.as_ref().map(|r| extract::chars_at(input, r.end)),
                located: place.is_some(),
                score: extract::score(&pieces, &e.in_output),
            })
            .collect();
        // Found ones by where they start; the others after them (a stable sort keeps their order).
        entities.sort_by_key(|e| e.start.unwrap_or(usize::MAX));
        model.metrics.extracted(
            &entities.iter().map(|e| e.located).collect::<Vec<_>>(),
            dropped.len(),
            parsed.malformed.len(),
        );
        out.push(Extraction { entities, dropped: dropped.len(), unparsed: parsed.malformed, output: c.text });
    }
    Ok(if single { Json(out.pop().expect("one input")).into_response() } else { Json(out).into_response() })
}
