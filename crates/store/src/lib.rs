//! Storage for AgentNexus: one implementation over SQLite and PostgreSQL.
//!
//! Both backends run the same SQL through sqlx's `Any` driver; where the dialects differ
//! (migrations, pragmas) the difference is isolated in [`Backend`]. Two SQLite paths step
//! outside sqlx onto rusqlite, for measured costs: the group-commit writer (`writer`, over the
//! `exec::Exec` trait it shares with PostgreSQL) and audit verification. Every tenant-owned read
//! or write takes a [`Tenant`], which only this crate can mint, so there is no way to query
//! a workspace's data without having resolved it from a key or a name first.
#![forbid(unsafe_code)]

mod agents;
mod analytics;
mod approvals;
mod audit;
mod channels;
mod evaluations;
mod exec;
mod jobs;
mod listing;
mod members;
mod migrations;
mod model;
mod policies;
mod receipts;
mod rows;
mod sealed;
mod sessions;
mod sources;
mod sso;
pub use policies::PolicyChange;
pub use workspaces::{NewOwner, key_hash};
mod workspaces;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use tokio::sync::Notify;

pub use agents::{AgentProfile, AgentRecord, Halt, HaltScope, Halts};
pub use analytics::{CostGroup, CostLine, Governance, Lot, Lots};
pub use approvals::{
    CODES_PER_LINK, CodeSent, Decide, DecideOutcome, Decided, DueStage, LINKS_PER_APPROVER, Link,
    WRONG_CODES_PER_LINK, WaitingStage, normalize_email,
};
pub use channels::ChannelSettings;
pub use jobs::{Attempt, Delivery, Finished, Job, Next};
pub use members::{EmptyStage, NewMember};
pub use model::*;
pub use sealed::{LegacySealed, SealedAt};
pub use sessions::{ChainCheck, Invitation, Membership, NewInvitation, Session, WaitingApproval};
pub use sources::{GitHubFile, PolicyBinding, SyncRecord, SyncResult};
pub use sso::{NewSsoConnection, SsoConnection};
pub use writer::WriterConfig;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How `occurred_at` is written in the hashed form and in the API.
pub fn timestamp_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// From the SQLite reader that verification uses beside sqlx.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The thing existed but can no longer be acted on (a used or expired link).
    #[error("gone: {0}")]
    Gone(String),
    /// Refused by a rule of the product (separation of duties).
    #[error("refused: {0}")]
    Refused(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("the store is shutting down")]
    Closed,
    /// Written, but making it durable failed: it was not acknowledged.
    #[error("syncing the database: {0}")]
    Sync(String),
    /// Opened with [`StoreConfig::create`] off, and there is no store there yet.
    #[error("{0}")]
    Missing(String),
}

impl StoreError {
    /// A unique-constraint violation, which callers report as a conflict.
    pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
        matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// The workspace a request acts for. Minted only by the store, from a key or a name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant {
    workspace_id: String,
}

impl Tenant {
    pub fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    pub(crate) fn new(workspace_id: String) -> Tenant {
        Tenant { workspace_id }
    }
}

/// Timestamps are stored as microseconds since the epoch: portable across both backends,
/// cheap to compare, exact to round-trip.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// A new evaluation id: `ev_` and a ULID, so ids sort by creation time.
/// An evaluation's id: `ev_` and a ULID whose time is the evaluation's creation (to the
/// millisecond), so that periods cut by id (lists, analytics' edges) and by creation time
/// (daily and hourly sums) agree on every evaluation.
pub fn new_evaluation_id(created_at: DateTime<Utc>) -> String {
    let ms = u64::try_from(created_at.timestamp_millis()).unwrap_or(0);
    let ulid = ulid::Ulid::from_parts(ms, rand_bits());
    format!("ev_{}", ulid.to_string().to_lowercase())
}

/// The random part of a ULID.
fn rand_bits() -> u128 {
    ulid::Ulid::new().random()
}

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The SQLite database file, when there is one (not in memory): verification reads it
    /// directly.
    sqlite_file: Option<Arc<Path>>,
    writer: writer::Handle,
    jobs_ready: Arc<Notify>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub max_connections: u32,
    pub writer: WriterConfig,
    /// Create (a SQLite file) and migrate an empty database; when false, [`Store::open`]
    /// answers [`StoreError::Missing`] rather than making a store nobody asked for (the
    /// admin CLI). An existing store is upgraded either way.
    pub create: bool,
}

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            max_connections: 16,
            writer: WriterConfig::default(),
            create: true,
        }
    }
}

impl Store {
    /// Connects and migrates; a SQLite file is created when missing.
    pub async fn open(config: StoreConfig) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(&config.url).ok_or_else(|| {
            StoreError::Database(sqlx::Error::Configuration(
                format!(
                    "unsupported database URL `{}`: use sqlite://FILE or postgres://…",
                    redact(&config.url)
                )
                .into(),
            ))
        })?;
        if backend == Backend::Sqlite {
            if config.create {
                create_private_file(&config.url)?;
            } else if let Some(path) = sqlite_file(&config.url)?
                && !path.exists()
            {
                return Err(StoreError::Missing(format!(
                    "there is no store at {}",
                    std::path::absolute(&path).unwrap_or(path).display()
                )));
            }
        }
        let url = match backend {
            Backend::Sqlite if !config.url.contains("mode=") => {
                let sep = if config.url.contains('?') { '&' } else { '?' };
                let mode = if config.create { "rwc" } else { "rw" };
                format!("{}{sep}mode={mode}", config.url)
            }
            _ => config.url.clone(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; FULL makes every commit
                        // durable before it is acknowledged (group commit pays one fsync
                        // for many evaluations).
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        // Statement journals (which a multi-row INSERT inside a transaction
                        // needs) in memory, not in a temporary file created, written and
                        // deleted on every commit (docs/performance.md).
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                        conn.execute(
                            format!("PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}").as_str(),
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if !config.create && !migrations::present(&pool, backend).await? {
            pool.close().await;
            return Err(StoreError::Missing(format!(
                "{} holds no AgentNexus store",
                redact(&config.url)
            )));
        }
        migrations::run(&pool, backend).await?;
        let sqlite_file = match backend {
            Backend::Sqlite => {
                // The file SQLite itself opened, whatever the URL's spelling; empty when the
                // database is in memory.
                let file: String =
                    sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                        .fetch_one(&pool)
                        .await?;
                (!file.is_empty()).then(|| Arc::from(Path::new(&file)))
            }
            Backend::Postgres => None,
        };
        let jobs_ready = Arc::new(Notify::new());
        let writer = writer::Handle::spawn(
            pool.clone(),
            config.writer,
            sqlite_file.as_deref(),
            jobs_ready.clone(),
        )?;
        Ok(Store {
            pool,
            backend,
            sqlite_file,
            writer,
            jobs_ready,
        })
    }

    /// The SQLite file the store is in, as SQLite opened it (none on PostgreSQL or in memory).
    pub fn file(&self) -> Option<&Path> {
        self.sqlite_file.as_deref()
    }

    /// Woken when this process queues a job, so its worker need not wait for the next poll.
    pub fn jobs_ready(&self) -> &Notify {
        &self.jobs_ready
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Waits for queued writes to commit, then closes the pool.
    pub async fn close(&self) {
        self.writer.shutdown().await;
        self.pool.close().await;
    }

    /// Direct access for tests that must do what the product never does (tamper with rows).
    #[doc(hidden)]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Creates a SQLite database file that does not exist yet, readable and writable by its owner
/// only: it holds the audit trail and every workspace's data. SQLite gives the WAL and shared
/// memory files it creates beside it the same mode. An existing file is left as it is, with a
/// warning when others may read it.
/// The file a SQLite URL names; none for a database in memory.
fn sqlite_file(url: &str) -> Result<Option<std::path::PathBuf>> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    let path = options.get_filename();
    let memory =
        path.as_os_str().is_empty() || path == Path::new(":memory:") || url.contains("mode=memory");
    Ok((!memory).then(|| path.to_path_buf()))
}

fn create_private_file(url: &str) -> Result<()> {
    let Some(path) = sqlite_file(url)? else {
        return Ok(());
    };
    let path = path.as_path();
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(file = %path.display(),
                        "the database file can be read by other users: chmod 600 it");
                }
            }
            Ok(())
        }
        Err(e) => Err(StoreError::Database(sqlx::Error::Io(e))),
    }
}

/// WAL frames (pages) after which a committing SQLite connection copies the WAL into the
/// database file. The pages every commit rewrites (index leaves, the tables' last pages) are
/// copied once per checkpoint, so fewer, longer checkpoints write less than SQLite's default
/// 1,000, up to a point (docs/performance.md). The WAL grows to about 16 MB.
pub(crate) const WAL_AUTOCHECKPOINT: u32 = 4000;

/// A database URL with its password hidden, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The `VALUES` list of a multi-row INSERT: `rows` groups of `cols` parameters, made once per
/// shape (batches repeat a few shapes). SQLite gets anonymous `?` parameters: sqlx asks for
/// every parameter's name, and SQLite finds a name by scanning all the statement's named
/// parameters, so `$N` made a 736-parameter INSERT quadratic. PostgreSQL needs `$N`.
pub(crate) fn values_list(sqlite: bool, cols: usize, rows: usize) -> &'static str {
    type Shapes = std::collections::HashMap<(bool, usize, usize), &'static str>;
    static SHAPES: std::sync::LazyLock<std::sync::Mutex<Shapes>> =
        std::sync::LazyLock::new(Default::default);
    let mut shapes = SHAPES.lock().unwrap_or_else(|e| e.into_inner());
    shapes.entry((sqlite, cols, rows)).or_insert_with(|| {
        let group = |r: usize| {
            let params: Vec<String> = (1..=cols)
                .map(|c| {
                    if sqlite {
                        "?".to_owned()
                    } else {
                        format!("${}", r * cols + c)
                    }
                })
                .collect();
            format!("({})", params.join(", "))
        };
        let list: Vec<String> = (0..rows).map(group).collect();
        // Bounded by the shapes the store writes (a few kinds, at most 64 rows each).
        Box::leak(list.join(", ").into_boxed_str())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
