//! The request's key, as the use cases know it: [`Caller`] for any valid key, [`Admin`] for
//! an admin key. Tenancy comes only from here, never from a request's body.

use std::sync::Arc;

use agentnexus_app::App;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::ApiError;

/// A request made with a valid key of any scope.
pub struct Caller(pub agentnexus_app::Caller);

/// A request made with an admin key.
pub struct Admin(pub agentnexus_app::Admin);

/// The bearer token of an `Authorization` header.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller(app.authenticate(secret).await?))
    }
}

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let Caller(caller) = Caller::from_request_parts(parts, app).await?;
        Ok(Admin(app.admin(caller)?))
    }
}
