//! Tenancy by type: the only way a handler gets a [`Tenant`] is from an authenticated key.

use std::sync::Arc;

use agentnexus_store::{Actor, Scope, Tenant};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::state::AppState;

/// A request made with a valid key of any scope.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: Tenant,
    pub key_id: String,
    pub scope: Scope,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::Key(self.key_id.clone())
    }
}

/// A request made with an admin key.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let secret = bearer(parts)
            .filter(|t| t.starts_with("anx_"))
            .ok_or(ApiError::Unauthorized)?;
        let key = state
            .authenticate(secret)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        state.limits.check_key(&key.identity.key_id)?;
        key.touch(state.now());
        Ok(Caller {
            tenant: key.identity.tenant.clone(),
            key_id: key.identity.key_id.clone(),
            scope: key.identity.scope,
        })
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match caller.scope {
            Scope::Admin => {
                state.limits.check_management(&caller.key_id)?;
                Ok(Admin(caller))
            }
            Scope::Agent => Err(ApiError::Forbidden),
        }
    }
}
