//! Request extractors that answer problem+json when the input is bad.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The most a request body may hold (SPEC §4).
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body: 413 past the limit, 400 when it is not JSON, 422 when its fields are wrong.
/// The content type is not checked, so `curl -d '{…}'` works as it does against most APIs.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, BODY_LIMIT).await?;
        parse_json(&bytes).map(Json)
    }
}

/// The body, at most `limit` bytes (413 past it).
pub async fn body_bytes(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::TooLarge { limit }
            } else {
                ApiError::Malformed(format!("the body could not be read: {e}"))
            }
        })
}

/// Every JSON body the API takes is an object; serde would also read a struct from an array,
/// which is refused once the body is known to be JSON.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let parsed = serde_json::from_slice(bytes);
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if parsed.is_ok() && first != Some(&b'{') {
        return Err(ApiError::invalid(
            "the body must be a JSON object",
            serde_json::json!([{"message": "the body must be a JSON object"}]),
        ));
    }
    parsed.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(
            e.to_string(),
            serde_json::json!([{"message": e.to_string(), "line": e.line(), "column": e.column()}]),
        ),
        _ => ApiError::Malformed(format!("the body is not valid JSON: {e}")),
    })
}

/// An optional field that may be left out but not sent as `null`: for fields whose schema is
/// a plain string, so that what the API accepts is exactly what its OpenAPI document says.
pub fn not_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// Query parameters; a bad one is a 422 naming it.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::invalid(e.body_text(), serde_json::json!([])))
    }
}

/// Path parameters; a bad one is a 404, as for any path that names nothing.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|_| ApiError::NotFound)
    }
}
