//! The AgentNexus server: REST API and operations endpoints over one store.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod api;
pub mod approval_page;
pub mod approvals;
pub mod auth;
pub mod channels;
pub mod config;
pub mod crypto;
pub mod error;
pub mod extract;
pub mod limits;
pub mod mcp;
pub mod openapi;
pub mod ops;
pub mod state;
pub mod webhooks;
pub mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
pub use state::{AppState, Clock};

use crate::error::ApiError;

/// Every route, with body limit, metrics and problem+json for unknown paths.
pub fn router(state: Arc<AppState>) -> Router {
    api::router()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/api/mcp", axum::routing::any(mcp::handle))
        .merge(
            Router::new()
                .route(
                    "/approvals/{token}",
                    get(approval_page::show).post(approval_page::submit),
                )
                .route(
                    "/approvals/evaluations/{id}",
                    get(approval_page::sign_in).post(approval_page::request_link),
                )
                .layer(axum::middleware::map_response(
                    approval_page::security_headers,
                )),
        )
        .route(
            "/api/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    openapi::document(),
                )
            }),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(axum::middleware::from_fn(ops::track))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish (up to the grace
/// period), writes what is queued, and closes the store.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    ops::prometheus();
    match crypto::reseal_legacy(&state.store, &state.cipher).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            values = n,
            "stored secrets sealed again, bound to their workspace and use"
        ),
        Err(e) => tracing::warn!(error = %e, "sealing stored secrets again failed"),
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let background = tokio::spawn(refresh_loop(state.clone(), stop_rx.clone()));
    let delivery = tokio::spawn(workers::delivery::run(state.clone(), stop_rx.clone()));
    let deadlines = tokio::spawn(workers::deadlines::run(state.clone(), stop_rx.clone()));
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let mut stopping = stop_rx.clone();
    let app = state.clone();
    let server = axum::serve(listener, router(state.clone())).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        // Long polls answer with what they have instead of holding the shutdown.
        app.stopping.send_replace(true);
    });
    tokio::select! {
        result = server => result?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(?grace, "requests still running after the grace period; stopping"),
    }
    let _ = background.await;
    // Deliveries under way finish (each within its timeout) and are recorded; queued jobs
    // stay in the store for the next start.
    let _ = delivery.await;
    let _ = deadlines.await;
    flush_key_uses(&state).await;
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Picks up what changed elsewhere (policies, revocations), catches up the evaluation lists
/// and records key use, every `refresh_secs`.
async fn refresh_loop(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_secs(state.config.refresh_secs.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        state.limits.forget_idle();
        match state
            .store
            .workspaces_with_full_queues(state.config.queue_limit_per_workspace)
            .await
        {
            Ok(full) => state
                .limits
                .set_full_queues(full.iter().map(|t| t.workspace_id().to_owned()).collect()),
            Err(e) => tracing::warn!(error = %e, "counting queued jobs failed"),
        }
        if let Err(e) = state.store.catch_up_lists().await {
            tracing::warn!(error = %e, "catching up evaluation lists failed");
        }
        match state.store.policy_generations().await {
            Ok(generations) => {
                let cached: std::collections::HashMap<_, _> =
                    state.policies.generations().into_iter().collect();
                for (tenant, generation) in generations {
                    if cached
                        .get(tenant.workspace_id())
                        .is_some_and(|g| *g != generation)
                        && let Err(e) = state.reload_policies(&tenant).await
                    {
                        tracing::error!(error = %e, "reloading policies failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "checking policy changes failed"),
        }
        match state.store.revoked_among(&state.keys.key_ids()).await {
            Ok(revoked) => {
                let uses = state.keys.forget(&revoked);
                record_key_uses(&state, &uses).await;
            }
            Err(e) => tracing::warn!(error = %e, "checking key revocations failed"),
        }
        flush_key_uses(&state).await;
    }
}

async fn flush_key_uses(state: &AppState) {
    record_key_uses(state, &state.keys.take_uses()).await;
}

pub(crate) async fn record_key_uses(
    state: &AppState,
    uses: &[(String, chrono::DateTime<chrono::Utc>)],
) {
    if !uses.is_empty()
        && let Err(e) = state.store.touch_keys(uses).await
    {
        tracing::warn!(error = %e, "recording key use failed");
    }
}
