//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` (ServerLive,
//! ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelInfer) on `grpc_port`, beside
//! the HTTP port. ModelInfer runs what `POST /v2/models/{name}/infer` runs (`infer::run`):
//! `text_input` from `raw_input_contents` (4-byte little-endian length before each element) or
//! the typed `bytes_contents`; outputs in `raw_output_contents`, which Triton's client reads.
//! The API key comes as the metadata `authorization: Bearer <key>` (not for ServerLive and
//! ServerReady, as the HTTP health routes); a client that cancels (or whose deadline passes)
//! drops the call, and with it the request's rows, as a closed HTTP connection does. Every call
//! is counted in the metrics under its method's path as the route.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Number, Value};
use tonic::{Request, Response, Status};

use super::super::error::ApiError;
use super::super::{Access, AppState};
use super::infer::{self, Data, Output};
use super::{EXTENSIONS, INPUTS, OUTPUTS, OipError, PLATFORM, VERSION};

/// The messages and service, generated from `proto/grpc_service.proto` by build.rs.
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::infer_parameter::ParameterChoice;

/// Largest message a client may send (tonic's default is 4 MiB): the HTTP body limit.
pub fn service(app: AppState, access: Arc<Access>, max_message_bytes: usize) -> GrpcInferenceServiceServer<Oip> {
    GrpcInferenceServiceServer::new(Oip { app, access })
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(usize::MAX)
}

pub struct Oip {
    app: AppState,
    access: Arc<Access>,
}

/// The gRPC status of an error, by its HTTP status: the same cases, the same words.
fn status(e: ApiError) -> Status {
    let code = match e.status_code().as_u16() {
        400 | 413 | 415 | 422 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        404 => tonic::Code::NotFound,
        408 | 504 => tonic::Code::DeadlineExceeded,
        409 => tonic::Code::FailedPrecondition,
        429 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    };
    // A 5xx's text stays in the log, as on HTTP.
    Status::new(code, e.into_body().error)
}

impl Oip {
    /// Runs one call: checks the API key (unless `open`), notes its model for the metrics and
    /// counts it under `route` with the HTTP status it stands for.
    async fn call<T, F>(
        &self,
        route: &'static str,
        open: bool,
        authorization: Option<String>,
        f: F,
    ) -> Result<Response<T>, Status>
    where
        F: Future<Output = Result<T, OipError>>,
    {
        let started = std::time::Instant::now();
        let allowed = if open { Ok(()) } else { self.access.check(authorization.as_deref()) };
        let (result, model) = match allowed {
            Ok(()) => super::super::with_request_model(f).await,
            Err(e) => (Err(OipError(e)), None),
        };
        let (code, rejected) = match &result {
            Ok(_) => (200, None),
            Err(OipError(e)) => (e.status_code().as_u16(), e.rejection_reason()),
        };
        let seconds = started.elapsed().as_secs_f64();
        self.app.metrics.record_response(route, code, model.as_deref().unwrap_or(""), rejected, seconds);
        result.map(Response::new).map_err(|OipError(e)| status(e))
    }
}

fn authorization<T>(req: &Request<T>) -> Option<String> {
    req.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A request parameter as JSON, as the REST side has it.
fn parameter(p: pb::InferParameter) -> Value {
    match p.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => Value::Bool(b),
        Some(ParameterChoice::Int64Param(i)) => Value::from(i),
        Some(ParameterChoice::Uint64Param(u)) => Value::from(u),
        Some(ParameterChoice::DoubleParam(d)) => Number::from_f64(d).map_or(Value::Null, Value::Number),
        Some(ParameterChoice::StringParam(s)) => Value::String(s),
        None => Value::Null,
    }
}

fn parameters(p: HashMap<String, pb::InferParameter>) -> Map<String, Value> {
    p.into_iter().map(|(k, v)| (k, parameter(v))).collect()
}

fn tensors(list: &[(&str, &str, &[i64])]) -> Vec<pb::model_metadata_response::TensorMetadata> {
    list.iter()
        .map(|(name, datatype, shape)| pb::model_metadata_response::TensorMetadata {
            name: name.to_string(),
            datatype: datatype.to_string(),
            shape: shape.to_vec(),
        })
        .collect()
}

/// The texts of `text_input` and its shape, from the raw contents (index-aligned with the
/// inputs) or the typed ones.
fn texts(req: &mut pb::ModelInferRequest) -> Result<(Vec<String>, Vec<i64>), OipError> {
    let mut found = None;
    for (i, input) in req.inputs.iter_mut().enumerate() {
        infer::check_input(&input.name, &input.datatype, &input.shape, found.is_some())?;
        let elements = match req.raw_input_contents.get(i) {
            Some(raw) => super::tensor::decode_bytes(raw).map_err(|e| infer::bad(format!("{}: {e}", infer::INPUT)))?,
            None => input.contents.take().map(|c| c.bytes_contents).unwrap_or_default(),
        };
        found = Some((infer::input_texts(&input.shape, elements)?, input.shape.clone()));
    }
    if req.raw_input_contents.len() > req.inputs.len() {
        return Err(infer::bad("more raw_input_contents than inputs"));
    }
    found.ok_or_else(|| infer::bad(format!("the input {} is missing", infer::INPUT)))
}

/// The requested outputs (all when none is named): in `raw_output_contents`, or, for a request
/// that sent its input in the typed contents, in the outputs' typed contents.
fn response(
    model: &str,
    id: String,
    outputs: Vec<Output>,
    requested: &[String],
    typed: bool,
) -> Result<pb::ModelInferResponse, OipError> {
    if let Some(unknown) = requested.iter().find(|r| !outputs.iter().any(|o| &o.name == r)) {
        let names: Vec<&str> = outputs.iter().map(|o| o.name).collect();
        return Err(infer::bad(format!("unknown output {unknown:?}; this request has {}", names.join(", "))));
    }
    let chosen = outputs.into_iter().filter(|o| requested.is_empty() || requested.iter().any(|r| r == o.name));
    let (tensors, raw): (Vec<_>, Vec<_>) = chosen
        .map(|o| {
            let contents = typed.then(|| match &o.data {
                Data::Bytes(v) => pb::InferTensorContents {
                    bytes_contents: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
                    ..Default::default()
                },
                Data::Fp32(v) => pb::InferTensorContents { fp32_contents: v.clone(), ..Default::default() },
            });
            let raw = (!typed).then(|| o.data.to_bytes());
            let tensor = pb::model_infer_response::InferOutputTensor {
                name: o.name.to_string(),
                datatype: o.data.datatype().to_string(),
                shape: o.shape,
                parameters: HashMap::new(),
                contents,
            };
            (tensor, raw)
        })
        .unzip();
    let raw = raw.into_iter().flatten().collect();
    Ok(pb::ModelInferResponse {
        model_name: model.to_string(),
        model_version: VERSION.to_string(),
        id,
        parameters: HashMap::new(),
        outputs: tensors,
        raw_output_contents: raw,
    })
}

#[tonic::async_trait]
impl GrpcInferenceService for Oip {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        self.call("/inference.GRPCInferenceService/ServerLive", true, None, async {
            Ok(pb::ServerLiveResponse { live: true })
        })
        .await
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let app = axum::extract::State(self.app.clone());
        self.call("/inference.GRPCInferenceService/ServerReady", true, None, async {
            Ok(pb::ServerReadyResponse { ready: super::super::health::ready(app).await.is_ok() })
        })
        .await
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let auth = authorization(&req);
        let r = req.into_inner();
        self.call("/inference.GRPCInferenceService/ModelReady", false, auth, async {
            let path = super::ModelPath::new(r.name, r.version);
            let ready = path.model(&self.app).is_ok_and(|m| m.scheduler.is_alive());
            Ok(pb::ModelReadyResponse { ready })
        })
        .await
    }

    async fn server_metadata(
        &self,
        req: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        self.call("/inference.GRPCInferenceService/ServerMetadata", false, authorization(&req), async {
            Ok(pb::ServerMetadataResponse {
                name: PLATFORM.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
            })
        })
        .await
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let auth = authorization(&req);
        let r = req.into_inner();
        self.call("/inference.GRPCInferenceService/ModelMetadata", false, auth, async {
            let path = super::ModelPath::new(r.name, r.version);
            let model = path.model(&self.app)?;
            Ok(pb::ModelMetadataResponse {
                name: model.id.clone(),
                versions: vec![VERSION.to_string()],
                platform: PLATFORM.to_string(),
                inputs: tensors(INPUTS),
                outputs: tensors(OUTPUTS),
            })
        })
        .await
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let auth = authorization(&req);
        let mut r = req.into_inner();
        self.call("/inference.GRPCInferenceService/ModelInfer", false, auth, async {
            let path = super::ModelPath::new(std::mem::take(&mut r.model_name), std::mem::take(&mut r.model_version));
            let model = path.model(&self.app)?;
            let typed = r.raw_input_contents.is_empty();
            let (texts, shape) = texts(&mut r)?;
            let requested: Vec<String> = r.outputs.iter().map(|o| o.name.clone()).collect();
            let mut params = parameters(std::mem::take(&mut r.parameters));
            // The REST side's framing switch means nothing here.
            params.remove("binary_data_output");
            let outputs = infer::run(&self.app, &model, texts, shape, params).await?;
            response(&model.id, r.id, outputs, &requested, typed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_the_rest_sides_json() {
        let p = |c| pb::InferParameter { parameter_choice: Some(c) };
        assert_eq!(parameter(p(ParameterChoice::Int64Param(-3))), Value::from(-3));
        assert_eq!(parameter(p(ParameterChoice::Uint64Param(7))), Value::from(7u64));
        assert_eq!(parameter(p(ParameterChoice::DoubleParam(0.5))), Value::from(0.5));
        assert_eq!(parameter(p(ParameterChoice::StringParam("a".into()))), Value::from("a"));
        assert_eq!(parameter(p(ParameterChoice::BoolParam(true))), Value::Bool(true));
        assert_eq!(parameter(p(ParameterChoice::DoubleParam(f64::NAN))), Value::Null);
    }

    #[test]
    fn errors_map_to_the_grpc_codes_of_their_http_status() {
        assert_eq!(status(ApiError::NotFound("x".into())).code(), tonic::Code::NotFound);
        assert_eq!(status(ApiError::Validation("x".into())).code(), tonic::Code::InvalidArgument);
        assert_eq!(status(ApiError::Overloaded("x".into())).code(), tonic::Code::ResourceExhausted);
        let internal = status(ApiError::Internal("secret detail".into()));
        assert_eq!(internal.code(), tonic::Code::Internal);
        assert!(!internal.message().contains("secret detail"));
    }
}
