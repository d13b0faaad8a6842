//! Embedded, append-only migrations: the schema both backends share (`migrations/`) and what
//! each does its own way (`migrations/sqlite/`, `migrations/postgres/`), in one numbering.
//! Never edit one that shipped: add the next number instead.

use std::borrow::Cow;

use sqlx::AnyPool;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::{Backend, Result};

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The schema both backends share, then what each does its own way.
const SHARED: &[Embedded] = &[
    (
        1,
        "foundation",
        include_str!("../migrations/0001_foundation.sql"),
    ),
    (
        3,
        "delivery",
        include_str!("../migrations/0003_delivery.sql"),
    ),
    (
        4,
        "approvals",
        include_str!("../migrations/0004_approvals.sql"),
    ),
    (
        5,
        "channels",
        include_str!("../migrations/0005_channels.sql"),
    ),
    (
        6,
        "evaluation index",
        include_str!("../migrations/0006_evaluation_index.sql"),
    ),
    (
        8,
        "evaluation facets",
        include_str!("../migrations/0008_evaluation_facets.sql"),
    ),
    (
        10,
        "evaluation seq",
        include_str!("../migrations/0010_evaluation_seq.sql"),
    ),
    (
        11,
        "hardening",
        include_str!("../migrations/0011_hardening.sql"),
    ),
    (
        12,
        "dashboard",
        include_str!("../migrations/0012_dashboard.sql"),
    ),
    (
        14,
        "delivery retry",
        include_str!("../migrations/0014_delivery_retry.sql"),
    ),
    (
        15,
        "workspace currency",
        include_str!("../migrations/0015_workspace_currency.sql"),
    ),
    (
        16,
        "receipts",
        include_str!("../migrations/0016_receipts.sql"),
    ),
    (17, "agents", include_str!("../migrations/0017_agents.sql")),
    (
        19,
        "policy sources",
        include_str!("../migrations/0019_policy_sources.sql"),
    ),
    (20, "sso", include_str!("../migrations/0020_sso.sql")),
    (
        21,
        "evaluation batches",
        include_str!("../migrations/0021_evaluation_batches.sql"),
    ),
];

const SQLITE: &[Embedded] = &[
    (
        2,
        "append only",
        include_str!("../migrations/sqlite/0002_append_only.sql"),
    ),
    (
        7,
        "evaluation index status",
        include_str!("../migrations/sqlite/0007_evaluation_index_status.sql"),
    ),
    (
        9,
        "evaluation facets status",
        include_str!("../migrations/sqlite/0009_evaluation_facets_status.sql"),
    ),
    (
        13,
        "decision counts",
        include_str!("../migrations/sqlite/0013_decision_counts.sql"),
    ),
    (
        18,
        "evaluation hours",
        include_str!("../migrations/sqlite/0018_evaluation_hours.sql"),
    ),
    (
        22,
        "evaluation batches filled",
        include_str!("../migrations/sqlite/0022_evaluation_batches_filled.sql"),
    ),
];

const POSTGRES: &[Embedded] = &[
    (
        2,
        "append only",
        include_str!("../migrations/postgres/0002_append_only.sql"),
    ),
    (
        7,
        "evaluation index status",
        include_str!("../migrations/postgres/0007_evaluation_index_status.sql"),
    ),
    (
        9,
        "evaluation facets status",
        include_str!("../migrations/postgres/0009_evaluation_facets_status.sql"),
    ),
    (
        13,
        "decision counts",
        include_str!("../migrations/postgres/0013_decision_counts.sql"),
    ),
    (
        18,
        "evaluation hours",
        include_str!("../migrations/postgres/0018_evaluation_hours.sql"),
    ),
    (
        22,
        "evaluation batches filled",
        include_str!("../migrations/postgres/0022_evaluation_batches_filled.sql"),
    ),
];

type Embedded = (i64, &'static str, &'static str);

#[derive(Debug)]
struct Source(Vec<Embedded>);

impl MigrationSource<'static> for Source {
    fn resolve(self) -> BoxFuture<Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*name),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Whether the database holds a store (any migration has run), so that opening it need not
/// create one.
pub(crate) async fn present(pool: &AnyPool, backend: Backend) -> Result<bool> {
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_catalog.pg_tables \
             WHERE schemaname = current_schema() AND tablename = '_sqlx_migrations'"
        }
    };
    let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
    Ok(n > 0)
}

pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    let own = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    let mut all = [SHARED, own].concat();
    all.sort_by_key(|m| m.0);
    let source = Source(all);
    Migrator::new(source).await?.run(pool).await?;
    Ok(())
}
