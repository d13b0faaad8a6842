//! Test doubles and harness for AgentNexus's tests, never part of what ships: a fresh database
//! per test on either backend (`db`), a webhook receiver (`webhooks`), an SMTP server
//! (`smtp`), and stand-ins for Slack and Microsoft Teams that check what they receive against
//! the services' published formats (`chat`). Each is a real server on loopback, driven over
//! the network as the real service would be. This crate depends on none of AgentNexus's own.

pub mod chat;
pub mod db;
pub mod smtp;
pub mod webhooks;

pub use db::{Backend, TestDatabase, tamper};
pub use smtp::{Mail, SmtpSink};
pub use webhooks::{Received, Receiver, Reply, verify};
