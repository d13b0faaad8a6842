//! The few statements the group-commit writer runs, over either of two drivers.
//!
//! Everything in the store goes through sqlx, except the writer on a SQLite file: sqlx's SQLite
//! driver runs each connection on a thread of its own and hands every statement and every
//! result across with a channel, so a batch's seven or so statements cost fourteen thread
//! wake-ups plus sqlx's argument conversions — under `perf`, more of the writer's time than
//! SQLite's own work. The writer there holds a rusqlite connection (the same SQLite library)
//! on its own thread instead. What a batch writes is written once, generic over [`Exec`].

use std::borrow::Cow;
use std::future::Future;

use sqlx::{AnyConnection, Row};

use crate::{Result, StoreError};

/// A value bound to a statement. NULLs are typed: PostgreSQL checks a parameter's type.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<Cow<'a, str>>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
}

impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Arg::Text(Some(Cow::Owned(v)))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v.map(Cow::Borrowed))
    }
}

impl From<Option<String>> for Arg<'_> {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v.map(Cow::Owned))
    }
}

/// One column of a row read back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Int(i64),
    Text(String),
    Null,
}

/// A row read back, its columns found by name (a few per row: a scan beats a map).
#[derive(Debug)]
pub(crate) struct Cells {
    /// The statement's column names, shared by its rows.
    names: std::sync::Arc<[String]>,
    cells: Vec<Cell>,
}

impl Cells {
    fn get(&self, name: &str) -> Option<&Cell> {
        let i = self.names.iter().position(|n| n == name)?;
        self.cells.get(i)
    }

    pub(crate) fn int(&self, name: &str) -> Result<i64> {
        match self.get(name) {
            Some(Cell::Int(v)) => Ok(*v),
            other => Err(StoreError::Corrupt(format!(
                "column {name}: {other:?}, not an integer"
            ))),
        }
    }

    pub(crate) fn text(&self, name: &str) -> Result<String> {
        match self.get(name) {
            Some(Cell::Text(v)) => Ok(v.clone()),
            other => Err(StoreError::Corrupt(format!(
                "column {name}: {other:?}, not text"
            ))),
        }
    }

    /// Text, or `None` for NULL.
    pub(crate) fn opt_text(&self, name: &str) -> Result<Option<String>> {
        match self.get(name) {
            Some(Cell::Null) => Ok(None),
            _ => self.text(name).map(Some),
        }
    }
}

fn names_of(row: &sqlx::any::AnyRow) -> std::sync::Arc<[String]> {
    use sqlx::Column;
    row.columns().iter().map(|c| c.name().to_owned()).collect()
}

/// A connection inside a transaction that the writer's statements run on.
pub(crate) trait Exec: Send {
    /// SQLite takes anonymous `?` parameters in long statements (see `values_list`).
    fn is_sqlite(&self) -> bool;

    /// The transaction took SQLite's write lock when it began (`BEGIN IMMEDIATE`: the SQLite
    /// writer's), and a failed statement ends it (the writer then writes each entry alone).
    fn write_locked(&self) -> bool {
        false
    }

    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> impl Future<Output = Result<u64>> + Send;

    fn fetch_optional(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<Cells>>> + Send;

    fn fetch_all(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<Cells>>> + Send;
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &'q [Arg<'_>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.as_deref()),
        };
    }
    q
}

impl Exec for AnyConnection {
    fn is_sqlite(&self) -> bool {
        self.backend_name() == <sqlx::Sqlite as sqlx::Database>::NAME
    }

    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let done = bind_all(sqlx::query(sql), args).execute(&mut *self).await?;
        Ok(done.rows_affected())
    }

    async fn fetch_optional(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Cells>> {
        let row = bind_all(sqlx::query(sql), args)
            .fetch_optional(&mut *self)
            .await?;
        row.as_ref().map(|r| any_cells(r, names_of(r))).transpose()
    }

    async fn fetch_all(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Cells>> {
        let rows = bind_all(sqlx::query(sql), args)
            .fetch_all(&mut *self)
            .await?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let names = names_of(first);
        rows.iter().map(|r| any_cells(r, names.clone())).collect()
    }
}

fn any_cells(row: &sqlx::any::AnyRow, names: std::sync::Arc<[String]>) -> Result<Cells> {
    let cells = (0..row.len())
        .map(|i| {
            if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                Ok(v.map_or(Cell::Null, Cell::Int))
            } else {
                let v: Option<String> = row.try_get(i)?;
                Ok(v.map_or(Cell::Null, Cell::Text))
            }
        })
        .collect::<Result<_>>()?;
    Ok(Cells { names, cells })
}

impl Exec for sqlx::Transaction<'_, sqlx::Any> {
    fn is_sqlite(&self) -> bool {
        (**self).is_sqlite()
    }

    fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> impl Future<Output = Result<u64>> + Send {
        (**self).execute(sql, args)
    }

    fn fetch_optional(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<Cells>>> + Send {
        (**self).fetch_optional(sql, args)
    }

    fn fetch_all(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<Cells>>> + Send {
        (**self).fetch_all(sql, args)
    }
}

/// Binds by position, or by name where the statement numbers its parameters `$1`, `$2`, …
/// (SQLite numbers named parameters in order of first appearance, not by their digits).
fn bind_rusqlite(stmt: &mut rusqlite::CachedStatement<'_>, args: &[Arg<'_>]) -> Result<()> {
    let named = stmt.parameter_name(1).is_some_and(|n| n.starts_with('$'));
    for (i, a) in args.iter().enumerate() {
        let index = if named {
            stmt.parameter_index(&format!("${}", i + 1))?
                .ok_or_else(|| StoreError::Corrupt(format!("no parameter ${}", i + 1)))?
        } else {
            i + 1
        };
        match a {
            Arg::Int(v) => stmt.raw_bind_parameter(index, v)?,
            Arg::Text(v) => stmt.raw_bind_parameter(index, v.as_deref())?,
        }
    }
    Ok(())
}

// rusqlite never waits: these futures are ready when first polled (see `writer::now`).
impl Exec for rusqlite::Connection {
    fn is_sqlite(&self) -> bool {
        true
    }

    fn write_locked(&self) -> bool {
        true
    }

    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let mut stmt = self.prepare_cached(sql)?;
        bind_rusqlite(&mut stmt, args)?;
        Ok(stmt.raw_execute()? as u64)
    }

    async fn fetch_optional(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Cells>> {
        let mut stmt = self.prepare_cached(sql)?;
        bind_rusqlite(&mut stmt, args)?;
        let names = rusqlite_names(&stmt);
        let mut rows = stmt.raw_query();
        let row = rows.next()?;
        row.map(|row| rusqlite_cells(row, names)).transpose()
    }

    async fn fetch_all(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Cells>> {
        let mut stmt = self.prepare_cached(sql)?;
        bind_rusqlite(&mut stmt, args)?;
        let names = rusqlite_names(&stmt);
        let mut rows = stmt.raw_query();
        let mut all = Vec::new();
        while let Some(row) = rows.next()? {
            all.push(rusqlite_cells(row, names.clone())?);
        }
        Ok(all)
    }
}

fn rusqlite_names(stmt: &rusqlite::CachedStatement<'_>) -> std::sync::Arc<[String]> {
    stmt.column_names().into_iter().map(str::to_owned).collect()
}

fn rusqlite_cells(row: &rusqlite::Row<'_>, names: std::sync::Arc<[String]>) -> Result<Cells> {
    let cells = (0..names.len())
        .map(|i| {
            Ok(match row.get_ref(i)? {
                rusqlite::types::ValueRef::Integer(v) => Cell::Int(v),
                rusqlite::types::ValueRef::Text(t) => {
                    Cell::Text(String::from_utf8_lossy(t).into_owned())
                }
                rusqlite::types::ValueRef::Null => Cell::Null,
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "unexpected {:?}",
                        other.data_type()
                    )));
                }
            })
        })
        .collect::<Result<_>>()?;
    Ok(Cells { names, cells })
}
