//! Body extractors whose rejections are JSON errors like every other error of the API: `ApiJson`
//! (a JSON body) and `ApiBytes` (a raw body, for dialects that frame their own, such as the
//! Open Inference Protocol's binary tensors). Both refuse a compressed body and enforce
//! `body_read_timeout_ms`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

/// A raw request body.
pub struct ApiBytes(pub Bytes);

/// How long a client may take to send its whole body (a request extension set by the router).
/// A deadline for the whole body, not per chunk: a client trickling a byte at a time is cut off too.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub std::time::Duration);

/// Reads a body with `read` once its encoding is checked, under the body read timeout.
async fn read<T, E: Into<ApiError>>(
    req: Request,
    read: impl AsyncFnOnce(Request) -> Result<T, E>,
) -> Result<T, ApiError> {
    // A compressed body read as JSON would be garbage, or worse, be read as something else.
    if let Some(coding) = req.headers().get(axum::http::header::CONTENT_ENCODING)
        && !coding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding {} is not supported; send the body uncompressed",
            crate::api::echo(&String::from_utf8_lossy(coding.as_bytes()))
        )));
    }
    let limit = req.extensions().get::<BodyReadTimeout>().copied();
    let reading = read(req);
    match limit {
        Some(BodyReadTimeout(t)) => tokio::time::timeout(t, reading)
            .await
            .map_err(|_| {
                ApiError::RequestTimeout(format!(
                    "the request body did not arrive within body_read_timeout_ms ({} ms)",
                    t.as_millis()
                ))
            })?
            .map_err(Into::into),
        None => reading.await.map_err(Into::into),
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = read(req, async |r| axum::Json::<T>::from_request(r, state).await).await?;
        Ok(ApiJson(value))
    }
}

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read(req, async |r| Bytes::from_request(r, state).await).await.map(ApiBytes)
    }
}
