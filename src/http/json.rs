//! A `Json` extractor whose rejections are JSON errors like every other error of the API.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct ApiJson<T>(pub T);

/// How long a client may take to send its whole body (a request extension set by the router).
/// A deadline for the whole body, not per chunk: a client trickling a byte at a time is cut off too.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub std::time::Duration);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
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
        let read = axum::Json::<T>::from_request(req, state);
        let axum::Json(value) = match limit {
            Some(BodyReadTimeout(t)) => tokio::time::timeout(t, read).await.map_err(|_| {
                ApiError::RequestTimeout(format!(
                    "the request body did not arrive within body_read_timeout_ms ({} ms)",
                    t.as_millis()
                ))
            })??,
            None => read.await?,
        };
        Ok(ApiJson(value))
    }
}
