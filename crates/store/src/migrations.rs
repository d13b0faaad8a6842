//! Embedded, append-only migrations, one directory per backend. Never edit one that shipped:
//! add the next number instead.

use std::borrow::Cow;

use sqlx::AnyPool;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::{Backend, Result};

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

const SQLITE: &[(i64, &str, &str)] = &[(
    1,
    "foundation",
    include_str!("../migrations/sqlite/0001_foundation.sql"),
)];

const POSTGRES: &[(i64, &str, &str)] = &[(
    1,
    "foundation",
    include_str!("../migrations/postgres/0001_foundation.sql"),
)];

#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
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

pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    let source = match backend {
        Backend::Sqlite => Embedded(SQLITE),
        Backend::Postgres => Embedded(POSTGRES),
    };
    Migrator::new(source).await?.run(pool).await?;
    Ok(())
}
