//! A fresh database per test, on either backend.
//!
//! PostgreSQL comes from `AGENTNEXUS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`): each test creates its own database there.
//! An unreachable server fails the test; it is never skipped.

use std::path::PathBuf;

use sqlx::{Connection, Executor};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    dir: Option<PathBuf>,
    pg_name: Option<String>,
}

fn postgres_admin_url() -> String {
    std::env::var("AGENTNEXUS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES.into())
}

/// The admin URL with another database name.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let root = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |s| s + 2) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> TestDatabase {
        let unique = ulid::Ulid::new().to_string().to_lowercase();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("anx-test-{unique}"));
                std::fs::create_dir_all(&dir).expect("a temp dir");
                TestDatabase {
                    url: format!("sqlite://{}", dir.join("agentnexus.db").display()),
                    backend,
                    dir: Some(dir),
                    pg_name: None,
                }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("anx_t_{unique}");
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL is needed for this test and is not reachable at the \
                             server AGENTNEXUS_TEST_POSTGRES_URL names, or its default ({e}); \
                             start it or set the variable"
                        )
                    });
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("CREATE DATABASE");
                TestDatabase {
                    url: with_database(&admin, &name),
                    backend,
                    dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// Removes the database; call at the end of a passing test.
    pub async fn drop_database(self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(name) = &self.pg_name
            && let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await
        {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
}

/// Runs `sql` around the append-only triggers, as someone holding the database's keys could:
/// how tests tamper with the audit trail to show that verification notices.
pub async fn tamper(pool: &sqlx::AnyPool, backend: Backend, sql: &str) {
    let (off, on): (&[&str], &str) = match backend {
        Backend::Postgres => (
            &["ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_or_delete"],
            "ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_or_delete",
        ),
        // SQLite cannot disable a trigger: drop them (the test database is thrown away).
        Backend::Sqlite => (
            &[
                "DROP TRIGGER IF EXISTS audit_events_no_update",
                "DROP TRIGGER IF EXISTS audit_events_no_delete",
            ],
            "SELECT 1",
        ),
    };
    for off in off {
        sqlx::query(off).execute(pool).await.expect("triggers off");
    }
    sqlx::query(sql).execute(pool).await.expect("tampering");
    sqlx::query(on).execute(pool).await.expect("triggers on");
}

/// Runs an async test body once per backend: `both_backends!(name, |backend| async { … })`
/// makes `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)($crate::Backend::Postgres).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h", "x"),
            "postgres://u@h/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
