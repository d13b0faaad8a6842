//! What a use case answers when it does not do what was asked. Each door says it its own way
//! (an RFC 9457 problem over HTTP, an error result over MCP, a page, a line on stderr); no
//! door status lives here. Displayed, an error is a sentence for the person who asked.

use agentnexus_engine::Problem;
use agentnexus_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is wrong; `problems` name each field or rule.
    #[error("{detail}")]
    Invalid {
        detail: String,
        problems: Vec<Problem>,
    },
    /// No key, or one that is unknown or revoked.
    #[error("missing, unknown or revoked API key")]
    Unauthorized,
    /// The key's scope does not allow it.
    #[error("this key's scope does not allow it")]
    Forbidden,
    /// Nothing by that name in the caller's workspace (another workspace's ids included).
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    /// It existed but can no longer be used (a used or expired link, a decided stage).
    #[error("{0}")]
    Gone(String),
    /// Not allowed for this person (separation of duties).
    #[error("{0}")]
    Refused(String),
    /// Over a request rate.
    #[error("rate limited; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Over a limit other than a request rate (open waits, a full job queue, a verification
    /// already running).
    #[error("{detail}")]
    TooMany {
        detail: String,
        retry_after_secs: u64,
    },
    /// Not now (the server is stopping, a stored policy no longer compiles).
    #[error("{0}")]
    Unavailable(String),
    /// A fault of ours: logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single invalid field.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Error {
        let message = message.to_string();
        Error::Invalid {
            detail: format!("{field}: {message}"),
            problems: vec![Problem {
                rule: None,
                field: Some(field.to_owned()),
                position: None,
                message,
            }],
        }
    }

    /// A document's problems.
    pub fn invalid(detail: impl Into<String>, invalid: agentnexus_engine::Invalid) -> Error {
        Error::Invalid {
            detail: detail.into(),
            problems: invalid.0,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Error {
        Error::Internal(e.to_string())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::NotFound,
            StoreError::Conflict(m) => Error::Conflict(m),
            StoreError::Closed => Error::Unavailable("the server is shutting down".into()),
            StoreError::Gone(m) => Error::Gone(m),
            StoreError::Refused(m) => Error::Refused(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
