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
        serde_json::error::Category::Data => {
            let (field, message) = data_error::<T>(bytes);
            let mut problem =
                serde_json::json!({"message": message, "line": e.line(), "column": e.column()});
            let detail = match field {
                Some(field) => {
                    let detail = format!("{field}: {message}");
                    problem["field"] = field.into();
                    detail
                }
                None => message,
            };
            ApiError::invalid(detail, serde_json::json!([problem]))
        }
        _ => ApiError::Malformed(format!("the body is not valid JSON: {e}")),
    })
}

/// Which field a body's value is wrong in, and what JSON it should be, said in JSON's terms
/// (serde says `expected i64`). The body is read again with the path tracked: only bodies
/// that failed pay for it, never the evaluations that parse.
fn data_error<T: DeserializeOwned>(bytes: &[u8]) -> (Option<String>, String) {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Err(e) = serde_path_to_error::deserialize::<_, T>(&mut de) else {
        return (None, "the body does not fit the operation".into());
    };
    let path = e.path().to_string();
    let field = (path != ".").then_some(path);
    let mut message = e.inner().to_string();
    // serde_json adds where it was; the field names it better.
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    (field, json_terms(&message))
}

/// serde's wording in JSON's types: `invalid type: floating point `12.5`, expected i64`
/// becomes `expected a whole number (a JSON integer), got 12.5`.
fn json_terms(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return match message.strip_prefix("missing field ") {
            Some(name) => format!("{name} is required"),
            None => message.to_owned(),
        };
    };
    let Some((got, expected)) = rest.split_once(", expected ") else {
        return message.to_owned();
    };
    let expected = match expected {
        "i64" | "i32" | "i16" | "i8" | "u64" | "u32" | "u16" | "u8" | "usize" | "isize" => {
            "a whole number (a JSON integer)"
        }
        "f64" | "f32" => "a number",
        "a string" | "a borrowed string" => "a string",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        e if e.starts_with("struct ") || e == "a map" => "an object",
        e => e,
    };
    let got = if let Some(n) = got
        .strip_prefix("floating point `")
        .or_else(|| got.strip_prefix("integer `"))
    {
        n.trim_end_matches('`').to_owned()
    } else if let Some(b) = got.strip_prefix("boolean `") {
        b.trim_end_matches('`').to_owned()
    } else if let Some(s) = got.strip_prefix("string ") {
        format!("the string {s}")
    } else {
        match got {
            "map" => "an object".to_owned(),
            "sequence" => "an array".to_owned(),
            "null" | "unit value" => "null".to_owned(),
            other => other.to_owned(),
        }
    };
    format!("expected {expected}, got {got}")
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
