//! The AgentNexus server: the HTTP doors to the use cases (`agentnexus_app`) — the REST API,
//! the MCP gateway, the approval pages — and the operations endpoints. Each handler parses its
//! request, calls one use case and renders the answer; errors become problem+json here.
#![forbid(unsafe_code)]

pub mod api;
pub mod approval_page;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod html;
pub mod mcp;
pub mod openapi;
pub mod ops;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use agentnexus_app::App;
use agentnexus_app::maintenance::Background;

use crate::error::ApiError;

/// Every route, with body limit, metrics and problem+json for unknown paths.
pub fn router(app: Arc<App>) -> Router {
    api::router()
        .merge(dashboard::router())
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
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(axum::middleware::from_fn(ops::track))
        .with_state(app)
}

/// Serves until `shutdown` resolves, with the background work (deliveries, deadlines,
/// maintenance) beside it; then lets in-flight requests finish (up to the grace period),
/// writes what is queued, and closes the store.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    ops::prometheus();
    app.prepare().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let background = Background::start(&app, stop_rx.clone());
    let grace = Duration::from_secs(app.config.shutdown_grace_secs);
    let mut stopping = stop_rx.clone();
    let stopper = app.clone();
    let service = router(app.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
        // Long polls answer with what they have instead of holding the shutdown.
        stopper.stopping.send_replace(true);
    });
    tokio::select! {
        result = server => result?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(?grace, "requests still running after the grace period; stopping"),
    }
    background.finish().await;
    app.close().await;
    tracing::info!("stopped");
    Ok(())
}
