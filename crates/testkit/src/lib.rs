//! Test doubles and harness for AgentNexus's tests, never part of what ships: a fresh database
//! per test on either backend (`db`), a webhook receiver (`webhooks`), an SMTP server
//! (`smtp`), the outside programs tests run (`tools`), stand-ins for Slack and Microsoft Teams
//! that check what they receive against the services' published formats (`chat`), one for
//! GitHub's REST API that policy-as-code reads (`github`), and one for the model an agent
//! framework calls (`openai`). Each is a real server on loopback, driven
//! over the network as the real service would be. For single sign-on, real identity providers
//! run as Node.js child processes (`idp`: OpenID Connect and SAML 2.0). This crate depends on
//! none of AgentNexus's own.

pub mod chat;
pub mod db;
pub mod github;
pub mod idp;
pub mod openai;
pub mod smtp;
pub mod tools;
pub mod webhooks;

pub use db::{Backend, TestDatabase, tamper};
pub use smtp::{Mail, SmtpSink};
pub use webhooks::{Received, Receiver, Reply, verify};

/// Serves `app` on `listener` in the background until the answer is dropped (or sent to).
pub(crate) fn serve_until_dropped(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    stop
}
