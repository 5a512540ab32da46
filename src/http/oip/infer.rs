//! `POST /v2/models/{name}[/versions/{version}]/infer`: the Open Inference Protocol's inference
//! over REST. A `BYTES` input `text_input` of shape `[n]` or `[n, 1]` is generated from (output
//! `text_output`, same shape); with the request parameter `task` = `classify`, its texts are
//! classified instead (outputs `label`, same shape, and `scores`, `FP32` `[n, labels]` in the
//! labels' order). The other request parameters are `/v1/generate`'s, by the same names. Tensors
//! come as JSON `data` or in Triton's binary tensor data extension, and outputs go back binary
//! when asked (`binary_data_output`, or an output's `binary_data`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use std::sync::Arc;

use crate::api::{self, GenerateParameters, Inputs};

use super::super::AppState;
use super::super::classify::{self, Task};
use super::super::error::ApiError;
use super::super::json::ApiBytes;
use super::super::pipeline::{Caller, Prompt};
use super::super::served::Served;
use super::tensor::{self, HEADER_LENGTH};
use super::{ModelPath, OipError};

/// The one input.
pub const INPUT: &str = "text_input";

#[derive(Deserialize)]
struct InferRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Vec<RequestedOutput>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// An output tensor's values.
pub enum Data {
    Bytes(Vec<String>),
    Fp32(Vec<f32>),
}

impl Data {
    pub fn datatype(&self) -> &'static str {
        match self {
            Data::Bytes(_) => "BYTES",
            Data::Fp32(_) => "FP32",
        }
    }

    /// The values as a binary part (Triton's binary tensor data; gRPC's raw contents).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Data::Bytes(v) => tensor::encode_bytes(v.iter().map(|s| s.as_bytes())),
            Data::Fp32(v) => tensor::encode_fp32(v),
        }
    }
}

/// An output tensor.
pub struct Output {
    pub name: &'static str,
    pub shape: Vec<i64>,
    pub data: Data,
}

pub async fn infer(
    State(app): State<AppState>,
    Path(path): Path<ModelPath>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Response, OipError> {
    let model = path.model(&app)?;
    let length = headers.get(HEADER_LENGTH).map(|v| v.to_str().unwrap_or("?"));
    let body = tensor::split(&body, length).map_err(bad)?;
    let req: InferRequest = serde_json::from_slice(body.json).map_err(|e| bad(format!("the request's JSON: {e}")))?;
    let (texts, shape) = texts(&req.inputs, body.binary)?;
    let mut parameters = req.parameters;
    let binary_output = match parameters.remove("binary_data_output") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(other) => return Err(bad(format!("binary_data_output is true or false, not {other}"))),
    };
    let outputs = run(&app, &model, texts, shape, parameters).await?;
    respond(&model.id, req.id, outputs, &req.outputs, binary_output)
}

/// Runs the texts of `text_input` (of `shape`) on `model` with the request's `parameters`:
/// generation, or classification with `task` = `classify`. The same for every transport.
pub async fn run(
    app: &AppState,
    model: &Arc<Served>,
    texts: Vec<String>,
    shape: Vec<i64>,
    mut parameters: Map<String, Value>,
) -> Result<Vec<Output>, OipError> {
    let task = match parameters.remove("task") {
        None => "generate".to_string(),
        Some(Value::String(t)) => t,
        Some(other) => return Err(bad(format!("task is \"generate\" or \"classify\", not {other}"))),
    };
    let n = texts.len() as i64;
    Ok(match task.as_str() {
        "generate" => {
            let params = generate_parameters(parameters)?;
            let request = api::Request::generate(INPUT, Inputs::Many(texts), params);
            let submitted = app.submit(Caller::Client, model, request, Prompt::Text).await?;
            let mut generated = Vec::new();
            for (_, output) in submitted.collect().await? {
                generated.push(output.generated()?.text);
            }
            vec![Output { name: "text_output", shape, data: Data::Bytes(generated) }]
        }
        "classify" => {
            let task = classify_task(parameters)?;
            let (ranked, labels) = classify::run(app, model, Inputs::Many(texts), task).await?;
            let mut scores = Vec::with_capacity(ranked.len() * labels.len());
            for c in &ranked {
                scores.extend(
                    labels.iter().map(|l| c.scores.iter().find(|s| &s.label == l).map_or(0.0, |s| s.score as f32)),
                );
            }
            let label = ranked.into_iter().map(|c| c.label).collect();
            vec![
                Output { name: "label", shape, data: Data::Bytes(label) },
                Output { name: "scores", shape: vec![n, labels.len() as i64], data: Data::Fp32(scores) },
            ]
        }
        other => return Err(bad(format!("task is \"generate\" or \"classify\", not {:?}", api::echo(other)))),
    })
}

pub fn bad(message: impl Into<String>) -> OipError {
    OipError(ApiError::BadRequest(message.into()))
}

/// The texts of `text_input`, and its shape (`[n]` or `[n, 1]`).
fn texts(inputs: &[InputTensor], mut binary: &[u8]) -> Result<(Vec<String>, Vec<i64>), OipError> {
    let mut found = None;
    for input in inputs {
        check_input(&input.name, &input.datatype, &input.shape, found.is_some())?;
        let elements = match input.parameters.get("binary_data_size") {
            Some(size) => {
                let size = size.as_u64().ok_or_else(|| bad("binary_data_size must be a byte count"))? as usize;
                if size > binary.len() {
                    return Err(bad(format!(
                        "{INPUT}: binary_data_size {size} is more than the {} bytes sent",
                        binary.len()
                    )));
                }
                let (part, rest) = binary.split_at(size);
                binary = rest;
                tensor::decode_bytes(part).map_err(|e| bad(format!("{INPUT}: {e}")))?
            }
            None => {
                let data =
                    input.data.as_ref().ok_or_else(|| bad(format!("{INPUT} has neither data nor binary_data_size")))?;
                let strings = tensor::json_strings(data).map_err(|e| bad(format!("{INPUT}: {e}")))?;
                strings.into_iter().map(String::into_bytes).collect()
            }
        };
        found = Some((input_texts(&input.shape, elements)?, input.shape.clone()));
    }
    if !binary.is_empty() {
        return Err(bad(format!("{} bytes of binary data follow the inputs that no input claims", binary.len())));
    }
    found.ok_or_else(|| bad(format!("the input {INPUT} is missing")))
}

/// Checks an input's name, datatype and shape: the one input, `text_input`, `BYTES`, `[n]` or
/// `[n, 1]`. `seen`: it came already.
pub fn check_input(name: &str, datatype: &str, shape: &[i64], seen: bool) -> Result<(), OipError> {
    if name != INPUT {
        return Err(bad(format!("unexpected input {:?}: the only input is {INPUT:?}", api::echo(name))));
    }
    if seen {
        return Err(bad(format!("{INPUT} is given twice")));
    }
    if datatype != "BYTES" {
        return Err(bad(format!("{INPUT} must be BYTES, not {}", api::echo(datatype))));
    }
    match shape {
        [n] | [n, 1] if *n >= 1 => Ok(()),
        _ => Err(bad(format!("{INPUT} has shape {shape:?}; it must be [n] or [n, 1] with n >= 1"))),
    }
}

/// The texts of an input of `shape` from its elements, which must be as many, and UTF-8.
pub fn input_texts(shape: &[i64], elements: Vec<Vec<u8>>) -> Result<Vec<String>, OipError> {
    if Some(elements.len()) != tensor::elements(shape) {
        return Err(bad(format!("{INPUT} has shape {shape:?} but {} elements", elements.len())));
    }
    elements
        .into_iter()
        .map(|e| String::from_utf8(e).map_err(|_| bad(format!("{INPUT}: an element is not UTF-8 text"))))
        .collect()
}

/// `/v1/generate`'s parameters from the request's, by name. Lists (`stop`) and maps
/// (`logit_bias`) may come as JSON text, since Triton's clients send only scalars; `stop` may
/// be one string.
fn generate_parameters(mut p: Map<String, Value>) -> Result<GenerateParameters, OipError> {
    for key in ["stop", "logit_bias"] {
        if let Some(Value::String(s)) = p.get(key) {
            let parsed = match serde_json::from_str::<Value>(s) {
                Ok(v @ (Value::Array(_) | Value::Object(_))) => v,
                _ if key == "stop" => json!([s]),
                _ => return Err(bad(format!("{key} is a JSON object, not {:?}", api::echo(s)))),
            };
            p.insert(key.into(), parsed);
        }
    }
    serde_json::from_value(Value::Object(p)).map_err(|e| bad(format!("parameters: {e}")))
}

/// A classification's settings from the request's parameters: `labels` (a list, JSON text of
/// one, or comma-separated), `template`, `multi_label`, `length_normalize`.
fn classify_task(mut p: Map<String, Value>) -> Result<Task, OipError> {
    let labels = match p.remove("labels") {
        None => None,
        Some(Value::String(s)) if s.trim_start().starts_with('[') => {
            Some(serde_json::from_str(&s).map_err(|e| bad(format!("labels: {e}")))?)
        }
        Some(Value::String(s)) => Some(s.split(',').map(|l| l.trim().to_string()).collect()),
        Some(v) => Some(serde_json::from_value(v).map_err(|e| bad(format!("labels: {e}")))?),
    };
    let flag = |p: &mut Map<String, Value>, key: &str| match p.remove(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(other) => Err(bad(format!("{key} is true or false, not {other}"))),
    };
    let task = Task {
        labels,
        template: match p.remove("template") {
            None => None,
            Some(Value::String(t)) => Some(t),
            Some(other) => return Err(bad(format!("template is a string, not {other}"))),
        },
        multi_label: flag(&mut p, "multi_label")?,
        length_normalize: flag(&mut p, "length_normalize")?,
    };
    if let Some(key) = p.keys().next() {
        return Err(bad(format!(
            "unknown parameter {:?} for task classify (it takes labels, template, multi_label, length_normalize)",
            api::echo(key)
        )));
    }
    Ok(task)
}

/// The response: the requested outputs (all when none is named), each in JSON `data` or as a
/// binary part after the JSON.
fn respond(
    model: &str,
    id: Option<String>,
    outputs: Vec<Output>,
    requested: &[RequestedOutput],
    binary_default: bool,
) -> Result<Response, OipError> {
    for r in requested {
        if !outputs.iter().any(|o| o.name == r.name) {
            let names: Vec<&str> = outputs.iter().map(|o| o.name).collect();
            return Err(bad(format!("unknown output {:?}; this request has {}", api::echo(&r.name), names.join(", "))));
        }
    }
    let mut tensors = Vec::new();
    let mut binary = Vec::new();
    for o in outputs {
        let asked = requested.iter().find(|r| r.name == o.name);
        if !requested.is_empty() && asked.is_none() {
            continue;
        }
        let as_binary = match asked.and_then(|r| r.parameters.get("binary_data")) {
            None => binary_default,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(bad(format!("{}: binary_data is true or false, not {other}", o.name))),
        };
        let mut t = json!({"name": o.name, "datatype": o.data.datatype(), "shape": o.shape});
        if as_binary {
            let bytes = o.data.to_bytes();
            t["parameters"] = json!({"binary_data_size": bytes.len()});
            binary.extend_from_slice(&bytes);
        } else {
            t["data"] = match &o.data {
                Data::Bytes(v) => json!(v),
                Data::Fp32(v) => json!(v),
            };
        }
        tensors.push(t);
    }
    let mut head = json!({"model_name": model, "model_version": super::VERSION, "outputs": tensors});
    if let Some(id) = id {
        head["id"] = json!(id);
    }
    let head = serde_json::to_vec(&head).map_err(|e| OipError(ApiError::Internal(e.to_string())))?;
    if binary.is_empty() {
        return Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], head).into_response());
    }
    let length = head.len().to_string();
    let mut body = head;
    body.extend_from_slice(&binary);
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (header::HeaderName::from_static(HEADER_LENGTH), HeaderValue::from_str(&length).expect("digits")),
    ];
    Ok((headers, body).into_response())
}
