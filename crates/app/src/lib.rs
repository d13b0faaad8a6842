//! AgentNexus use cases: every operation a person or an agent can do — evaluate, decide an
//! approval, manage policies, keys, members and settings, read the audit trail — and the
//! background work that follows (deliveries, deadlines, maintenance). Doors (REST, MCP, the
//! approval pages, the CLI) parse their input into the types here, call one use case, and
//! render its answer; none of them holds logic of its own, and nothing here knows HTTP.
//!
//! Each use case is a method of [`App`] taking a [`Caller`] or an [`Admin`] (from which its
//! workspace comes), typed inputs, and answering [`Result`].
#![forbid(unsafe_code)]

pub mod accounts;
pub mod agents;
pub mod analytics;
mod app;
pub mod approvals;
pub mod audit;
mod auth;
pub mod checkpoints;
pub mod config;
pub mod crypto;
pub mod deadlines;
mod error;
pub mod evaluations;
pub mod evidence;
pub mod github;
pub mod inbox;
pub mod keys;
pub mod limits;
pub mod maintenance;
pub mod members;
pub mod notary;
mod notify;
mod oidc;
pub mod outbound;
pub mod policies;
pub mod receipts;
pub mod render;
pub mod replay;
pub mod retry;
mod saml;
pub mod sessions;
pub mod settings;
mod signing;
pub mod sources;
pub mod sso;
pub mod types;
pub mod webhooks;
pub mod workers;

pub use app::{App, Clock};
pub use auth::{Admin, Caller, Reader, Reads, Signed};
pub use config::Config;
pub use error::{Error, Result};
