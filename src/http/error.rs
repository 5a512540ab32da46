//! The only place where errors become HTTP status codes. Every error body is
//! `{"error": "...", "error_type": "..."}`; a 5xx never carries internal text (it is logged,
//! and the `x-request-id` response header finds the log line).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::ValidationError;
use crate::scheduler::SchedulerError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Well-formed JSON asking for something invalid.
    #[error("{0}")]
    Validation(String),
    /// The body is not valid JSON (or not valid UTF-8).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The client did not send its whole body within `body_read_timeout_ms`.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request conflicts with the state of what it names (a model being loaded).
    #[error("{0}")]
    Conflict(String),
    /// A missing or wrong API key.
    #[error("{0}")]
    Unauthorized(String),
    /// `max_concurrent_requests` are in flight; retry later.
    #[error("{0}")]
    Overloaded(String),
    /// The request waited in the queue past its deadline and never ran.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The model worker cannot take work.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a runtime failure; the text is logged, not sent.
    #[error("{0}")]
    Internal(String),
}

/// Longest error message sent, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1024;

#[derive(Serialize)]
pub struct ErrorBody {
    pub error: String,
    pub error_type: &'static str,
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::DeadlineExceeded(_) => "deadline_exceeded",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// `t5serve_requests_rejected_total`'s reason for a request refused before any work.
    pub fn rejection_reason(&self) -> Option<&'static str> {
        match self {
            ApiError::PayloadTooLarge(_) => Some("too_large"),
            ApiError::UnsupportedMediaType(_) | ApiError::BadRequest(_) => Some("malformed"),
            ApiError::Validation(_) => Some("invalid"),
            ApiError::Overloaded(_) => Some("overloaded"),
            ApiError::Unavailable(_) => Some("unavailable"),
            ApiError::DeadlineExceeded(_) => Some("deadline"),
            ApiError::Unauthorized(_) => Some("unauthorized"),
            ApiError::NotFound(_) | ApiError::MethodNotAllowed(_) => Some("no_route"),
            _ => None,
        }
    }

    /// The text a client may see: internal details stay in the log (see `into_body`), and no
    /// message is longer than `MAX_MESSAGE_CHARS` (a parser's message may repeat a client's
    /// value, an unknown field's name for one).
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => {
                "internal error; the x-request-id response header identifies it in the server log".to_string()
            }
            other => {
                let text = other.to_string();
                match text.char_indices().nth(MAX_MESSAGE_CHARS) {
                    Some((end, _)) => format!("{}…", &text[..end]),
                    None => text,
                }
            }
        }
    }

    /// The body a client gets; an internal error's detail is logged here, once.
    pub fn into_body(self) -> ErrorBody {
        match &self {
            ApiError::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            other => tracing::debug!(status = other.status_code().as_u16(), error = %other, "request rejected"),
        }
        ErrorBody { error: self.public_message(), error_type: self.error_type() }
    }
}

/// Set on an error response: why the request was refused (for the metrics).
#[derive(Debug, Clone, Copy)]
pub struct Rejected(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let reason = self.rejection_reason();
        let mut response = (status, Json(self.into_body())).into_response();
        if let Some(reason) = reason {
            response.extensions_mut().insert(Rejected(reason));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::Validation(e.0)
    }
}

impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::WorkerGone => ApiError::Unavailable("the model is not available".into()),
            e @ SchedulerError::TooLarge { .. } => ApiError::Validation(e.to_string()),
            SchedulerError::Startup(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let text = r.body_text();
        match r {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("expected a request with `Content-Type: application/json`".into())
            }
            JsonRejection::JsonSyntaxError(_) => ApiError::BadRequest(text),
            JsonRejection::JsonDataError(_) => ApiError::Validation(text),
            JsonRejection::BytesRejection(b) => b.into(),
            _ => ApiError::BadRequest(text),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::PayloadTooLarge("the request body is larger than max_body_bytes".into());
        }
        ApiError::BadRequest(r.body_text())
    }
}
