//! The HTTP edge's errors and their one conversion to RFC 9457 problem+json: what a use case
//! refused ([`agentnexus_app::Error`]) and what only HTTP can get wrong (a body that is not
//! JSON or too large, a media type, a method). Internal detail goes to the log, never to the
//! client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use agentnexus_app::Error;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("invalid request: {detail}")]
    Invalid { detail: String, errors: Value },
    #[error("missing or unknown API key")]
    Unauthorized,
    /// A delivery without a valid signature (GitHub's push webhook).
    #[error("missing or wrong signature")]
    BadSignature,
    #[error("this key's scope does not allow it")]
    Forbidden,
    #[error("not found")]
    NotFound,
    /// A path nothing is served at (no workspace involved).
    #[error("no such path")]
    NoRoute,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("request body too large")]
    TooLarge { limit: usize },
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    /// Over a limit other than the key's request rate (open waits, a full job queue, a
    /// verification already running): 429 with what to wait for.
    #[error("too many: {detail}")]
    TooMany {
        detail: String,
        retry_after_secs: u64,
    },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("gone: {0}")]
    Gone(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(detail: impl Into<String>, errors: Value) -> ApiError {
        ApiError::Invalid {
            detail: detail.into(),
            errors,
        }
    }

    /// A single invalid field.
    pub fn field(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::invalid(
            format!("{field}: {message}"),
            serde_json::json!([{"field": field, "message": message.to_string()}]),
        )
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed", "Malformed request"),
            ApiError::Invalid { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Missing, unknown or revoked API key",
            ),
            ApiError::BadSignature => (
                StatusCode::UNAUTHORIZED,
                "signature",
                "Missing or wrong signature",
            ),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Insufficient scope"),
            ApiError::NotFound | ApiError::NoRoute => {
                (StatusCode::NOT_FOUND, "not-found", "Not found")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Request body too large",
            ),
            ApiError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::RateLimited { .. } | ApiError::TooMany { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Gone(_) => (StatusCode::GONE, "gone", "No longer usable"),
            ApiError::Refused(_) => (StatusCode::FORBIDDEN, "refused", "Not allowed"),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { detail, problems } => ApiError::Invalid {
                detail,
                errors: serde_json::to_value(problems).unwrap_or_default(),
            },
            Error::Unauthorized => ApiError::Unauthorized,
            Error::Forbidden => ApiError::Forbidden,
            Error::NotFound => ApiError::NotFound,
            Error::Conflict(m) => ApiError::Conflict(m),
            Error::Gone(m) => ApiError::Gone(m),
            Error::Refused(m) => ApiError::Refused(m),
            Error::RateLimited { retry_after_secs } => ApiError::RateLimited { retry_after_secs },
            Error::TooMany {
                detail,
                retry_after_secs,
            } => ApiError::TooMany {
                detail,
                retry_after_secs,
            },
            Error::Unavailable(m) => ApiError::Unavailable(m),
            Error::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Per-field or per-rule problems, for 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub errors: Option<Value>,
}

pub const PROBLEM_TYPE_BASE: &str = "https://agentnexus.dev/problems/";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let detail = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "The server could not complete the request; nothing was changed.".to_owned()
            }
            ApiError::Unauthorized => {
                "Send an active API key as `Authorization: Bearer anx_…`.".to_owned()
            }
            ApiError::BadSignature => "Sign the body with the workspace's webhook secret: \
                                        `X-Hub-Signature-256: sha256=HMAC_HEX`."
                .to_owned(),
            ApiError::Forbidden => "This requires an admin key.".to_owned(),
            ApiError::NotFound => "No such resource in this workspace.".to_owned(),
            ApiError::NoRoute => {
                "Nothing is served at this path; the API's paths are in /api/openapi.json."
                    .to_owned()
            }
            ApiError::RateLimited { retry_after_secs } => {
                format!("This key is over its rate limit; retry in {retry_after_secs} s.")
            }
            ApiError::TooLarge { limit } => {
                format!("The request body is larger than {} KiB.", limit / 1024)
            }
            ApiError::Malformed(d)
            | ApiError::Conflict(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::Unavailable(d)
            | ApiError::Gone(d)
            | ApiError::Refused(d) => d.clone(),
            ApiError::Invalid { detail, .. } | ApiError::TooMany { detail, .. } => detail.clone(),
            ApiError::MethodNotAllowed => "This path does not take that method.".to_owned(),
        };
        let errors = match &self {
            ApiError::Invalid { errors, .. } => Some(errors.clone()),
            _ => None,
        };
        let body = Problem {
            kind: format!("{PROBLEM_TYPE_BASE}{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"agentnexus\""),
                );
            }
            ApiError::RateLimited { retry_after_secs }
            | ApiError::TooMany {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
