//! Verifying a workspace's chain: every seq in order from 1, every `prev_hash` equal to the
//! hash before it, every hash recomputed from the columns, the head matching the end.
//!
//! Chains grow to millions of events, so events are read in chunks ahead of the checking,
//! hashed on several threads at once, and on SQLite read outside sqlx.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentnexus_engine::canonical::{self, AuditFields, GENESIS_HASH};
use rusqlite::types::{FromSqlResult, ValueRef};
use rusqlite::{OpenFlags, OptionalExtension};
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::timestamp_text;
use crate::{Result, Store, StoreError, Tenant, Verification};

/// Events per chunk, the unit of reading and of hashing. At most `READ_AHEAD` chunks wait
/// to be hashed and one per thread is being hashed, so memory stays bounded for any chain.
/// Small under test, so that short chains cross chunk boundaries.
const CHUNK: usize = if cfg!(test) { 16 } else { 8_192 };
const READ_AHEAD: usize = 2;
/// Chunks hashed at once, at most: one reader keeps about two threads hashing, and
/// a verification should not take a big server's every core.
const HASHING_THREADS: usize = 4;
/// A typical event's text columns, to size a chunk's buffer.
const EVENT_BYTES: usize = 512;

/// The head and the highest stored seq in one statement, so from one snapshot: an event slipped
/// in past the head is caught, and one appended while verifying is not mistaken for it.
const HEAD: &str = "SELECT h.seq, h.hash, (SELECT MAX(e.seq) FROM audit_events e \
    WHERE e.workspace_id = h.workspace_id) AS stored_max FROM audit_heads h \
    WHERE h.workspace_id = $1";

/// The events after seq `$2` up to the head's seq `$3`, in order.
const EVENTS: &str = "SELECT seq, occurred_at, type, actor, evaluation_id, data, prev_hash, \
    hash FROM audit_events WHERE workspace_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq";

impl Store {
    /// Recomputes the whole chain: every seq in order from 1, every `prev_hash` equal to the
    /// hash before it, every hash recomputed from the columns, the head matching the end.
    pub async fn verify_audit(&self, tenant: &Tenant) -> Result<Verification> {
        let ws = tenant.workspace_id();
        // The head is read first: events appended while verifying are after it and wait for
        // the next run, so a busy workspace never looks broken.
        let (head, mut chunks) = match &self.sqlite_file {
            Some(file) => read_sqlite(file.clone(), ws.to_owned()).await?,
            None => read_sqlx(self.pool.clone(), ws.to_owned()).await?,
        };
        let broken = |seq: i64, reason: String| Verification::Broken {
            ok: false,
            broken_at_seq: seq,
            events_checked: seq - 1,
            reason,
        };
        // An event's hash depends only on its own columns and its stored `prev_hash`, so chunks
        // are hashed on the blocking pool, several at once, while the linkage is checked here
        // in order. The first event that fails any check is the one reported, as if each
        // were checked in turn.
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(HASHING_THREADS);
        let mut hashing = VecDeque::with_capacity(threads);
        let mut more = true;
        let mut prev = GENESIS_HASH.to_owned();
        let mut expected_seq = 1;
        loop {
            while more && hashing.len() < threads {
                match chunks.recv().await {
                    Some(chunk) => {
                        let (ws, chunk) = (ws.to_owned(), chunk?);
                        hashing.push_back(tokio::task::spawn_blocking(move || {
                            let first_bad = first_bad_hash(&ws, &chunk);
                            (chunk, first_bad)
                        }));
                    }
                    None => more = false,
                }
            }
            let Some(next) = hashing.pop_front() else {
                break;
            };
            let (chunk, first_bad) = match next.await {
                Ok(hashed) => hashed,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => return Err(StoreError::Closed),
            };
            for (i, event) in chunk.iter().enumerate() {
                if event.seq != expected_seq {
                    return Ok(broken(
                        expected_seq,
                        format!("event {expected_seq} is missing"),
                    ));
                }
                if event.prev_hash != prev {
                    return Ok(broken(
                        event.seq,
                        "prev_hash does not match the event before".into(),
                    ));
                }
                // Hashed over its stored `prev_hash`, which is the hash before: just checked.
                if first_bad == Some(i) {
                    return Ok(broken(event.seq, "hash does not match the event".into()));
                }
                prev.clear();
                prev.push_str(event.hash);
                expected_seq += 1;
            }
        }
        if expected_seq <= head.seq {
            return Ok(broken(
                expected_seq,
                format!("event {expected_seq} is missing"),
            ));
        }
        if head.stored_max.unwrap_or(0) > head.seq {
            let head_seq = head.seq;
            return Ok(broken(
                head_seq + 1,
                format!("events after the chain head ({head_seq}) were added outside the chain"),
            ));
        }
        if prev != head.hash {
            return Ok(broken(
                head.seq,
                "the chain head does not match the last event".into(),
            ));
        }
        Ok(Verification::Ok {
            ok: true,
            events: head.seq,
            head_hash: prev,
        })
    }
}

struct Head {
    seq: i64,
    hash: String,
    stored_max: Option<i64>,
}

type Chunks = mpsc::Receiver<Result<Chunk>>;

/// One stored event, borrowed from its chunk.
struct Event<'a> {
    seq: i64,
    occurred_at: i64,
    kind: &'a str,
    actor: &'a str,
    evaluation_id: Option<&'a str>,
    data: &'a str,
    prev_hash: &'a str,
    hash: &'a str,
}

/// Consecutive events as stored. Their text columns share one buffer: six strings allocated
/// per event were measured at half the cost of reading it from SQLite.
struct Chunk {
    text: String,
    events: Vec<Columns>,
}

struct Columns {
    seq: i64,
    occurred_at: i64,
    /// Where kind, actor, evaluation_id, data, prev_hash and hash end in the chunk's text,
    /// each starting where the one before it ends (the first where the last event's ends).
    ends: [usize; 6],
    has_evaluation_id: bool,
}

impl Chunk {
    fn with_capacity(text: usize) -> Chunk {
        Chunk {
            text: String::with_capacity(text),
            events: Vec::with_capacity(CHUNK),
        }
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn push(&mut self, event: Event<'_>) {
        let columns = [
            event.kind,
            event.actor,
            event.evaluation_id.unwrap_or_default(),
            event.data,
            event.prev_hash,
            event.hash,
        ];
        let mut ends = [0; 6];
        for (end, column) in ends.iter_mut().zip(columns) {
            self.text.push_str(column);
            *end = self.text.len();
        }
        self.events.push(Columns {
            seq: event.seq,
            occurred_at: event.occurred_at,
            ends,
            has_evaluation_id: event.evaluation_id.is_some(),
        });
    }

    fn iter(&self) -> impl Iterator<Item = Event<'_>> {
        let mut start = 0;
        self.events.iter().map(move |e| {
            let [kind, actor, evaluation_id, data, prev_hash, hash] = e.ends.map(|end| {
                let column = &self.text[start..end];
                start = end;
                column
            });
            Event {
                seq: e.seq,
                occurred_at: e.occurred_at,
                kind,
                actor,
                evaluation_id: e.has_evaluation_id.then_some(evaluation_id),
                data,
                prev_hash,
                hash,
            }
        })
    }

    fn last_seq(&self) -> Option<i64> {
        self.events.last().map(|e| e.seq)
    }
}

/// The position of the first event whose stored hash is not the hash of its columns over its
/// own stored `prev_hash` (the caller checks, in order, that this is the hash before it).
fn first_bad_hash(workspace_id: &str, chunk: &Chunk) -> Option<usize> {
    chunk.iter().position(|e| {
        let fields = AuditFields {
            workspace_id,
            seq: e.seq,
            occurred_at: &timestamp_text(crate::from_micros(e.occurred_at)),
            kind: e.kind,
            actor: e.actor,
            evaluation_id: e.evaluation_id,
            data: e.data,
        };
        canonical::chain_hash(e.prev_hash, &fields.canonical()) != e.hash
    })
}

/// Through sqlx: PostgreSQL, and a SQLite database that is not a file. The next chunk is
/// fetched while this one is hashed.
async fn read_sqlx(pool: AnyPool, ws: String) -> Result<(Head, Chunks)> {
    let row = sqlx::query(HEAD)
        .bind(&ws)
        .fetch_optional(&pool)
        .await?
        .ok_or(StoreError::NotFound)?;
    let head = Head {
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
        stored_max: row.try_get("stored_max")?,
    };
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let head_seq = head.seq;
    tokio::spawn(async move {
        let mut after = 0;
        while after < head_seq {
            let chunk = match fetch_sqlx(&pool, &ws, after, head_seq).await {
                Ok(chunk) => chunk,
                Err(e) => return drop(tx.send(Err(e)).await),
            };
            // None when fewer events are stored than the head counts: the verifier reports
            // the first missing one.
            let Some(last) = chunk.last_seq() else {
                return;
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            after = last;
        }
    });
    Ok((head, rx))
}

async fn fetch_sqlx(pool: &AnyPool, ws: &str, after: i64, head_seq: i64) -> Result<Chunk> {
    let rows = sqlx::query(&format!("{EVENTS} LIMIT $4"))
        .bind(ws)
        .bind(after)
        .bind(head_seq)
        .bind(CHUNK as i64)
        .fetch_all(pool)
        .await?;
    let mut chunk = Chunk::with_capacity(rows.len() * EVENT_BYTES);
    for row in &rows {
        chunk.push(Event {
            seq: row.try_get("seq")?,
            occurred_at: row.try_get("occurred_at")?,
            kind: row.try_get("type")?,
            actor: row.try_get("actor")?,
            evaluation_id: row.try_get("evaluation_id")?,
            data: row.try_get("data")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        });
    }
    Ok(chunk)
}

/// Straight from the SQLite file on a blocking thread, bypassing sqlx, whose per-row cost was
/// most of a verification's time (docs/performance.md). Read-only, and
/// the head and the events are read in one read transaction: one snapshot, however long the
/// chain takes to read.
async fn read_sqlite(file: Arc<Path>, ws: String) -> Result<(Head, Chunks)> {
    let (head_tx, head_rx) = oneshot::channel();
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let (conn, head) = match open_snapshot(&file, &ws) {
            Ok(opened) => opened,
            Err(e) => return drop(head_tx.send(Err(e))),
        };
        let head_seq = head.seq;
        if head_tx.send(Ok(head)).is_err() {
            return;
        }
        if let Err(e) = send_events(&conn, &ws, head_seq, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    // Dropped unsent only if the runtime shuts down before the reader starts.
    let head = head_rx.await.map_err(|_| StoreError::Closed)??;
    Ok((head, rx))
}

/// A read-only connection inside a read transaction, and the head as of its snapshot. The
/// transaction lasts until the connection is dropped, so every event read on it comes from
/// the same snapshot as the head.
fn open_snapshot(file: &Path, ws: &str) -> Result<(rusqlite::Connection, Head)> {
    let conn = rusqlite::Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // As long as the pool's connections wait (lib.rs).
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("BEGIN")?;
    let head = conn
        .query_row(HEAD, [ws], |row| {
            Ok(Head {
                seq: row.get("seq")?,
                hash: row.get("hash")?,
                stored_max: row.get("stored_max")?,
            })
        })
        .optional()?
        .ok_or(StoreError::NotFound)?;
    Ok((conn, head))
}

/// Sends the events up to the head in chunks, until the last or until the verifier stops
/// listening (it stops at a broken event).
fn send_events(
    conn: &rusqlite::Connection,
    ws: &str,
    head_seq: i64,
    tx: &mpsc::Sender<Result<Chunk>>,
) -> Result<()> {
    let mut events = conn.prepare(EVENTS)?;
    // Columns by name, looked up once rather than for every row.
    let at = |name: &str| events.column_index(name);
    let (seq, occurred_at, kind, actor, evaluation_id, data, prev_hash, hash) = (
        at("seq")?,
        at("occurred_at")?,
        at("type")?,
        at("actor")?,
        at("evaluation_id")?,
        at("data")?,
        at("prev_hash")?,
        at("hash")?,
    );
    let mut rows = events.query(rusqlite::params![ws, 0, head_seq])?;
    let mut chunk = Chunk::with_capacity(CHUNK * EVENT_BYTES);
    while let Some(row) = rows.next()? {
        chunk.push(Event {
            seq: row.get(seq)?,
            occurred_at: row.get(occurred_at)?,
            kind: column(row, kind, ValueRef::as_str)?,
            actor: column(row, actor, ValueRef::as_str)?,
            evaluation_id: column(row, evaluation_id, ValueRef::as_str_or_null)?,
            data: column(row, data, ValueRef::as_str)?,
            prev_hash: column(row, prev_hash, ValueRef::as_str)?,
            hash: column(row, hash, ValueRef::as_str)?,
        });
        if chunk.len() == CHUNK {
            let next = Chunk::with_capacity(chunk.text.len());
            if tx
                .blocking_send(Ok(std::mem::replace(&mut chunk, next)))
                .is_err()
            {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}

/// A text column borrowed from the row rather than copied into a `String` of its own.
fn column<'r, T>(
    row: &'r rusqlite::Row<'_>,
    i: usize,
    read: fn(&ValueRef<'r>) -> FromSqlResult<T>,
) -> rusqlite::Result<T> {
    let value = row.get_ref(i)?;
    read(&value)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, value.data_type(), Box::new(e)))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use agentnexus_testkit::Backend;
    use agentnexus_testkit::{TestDatabase, tamper};

    use crate::{Actor, NewAuditEvent, NewOwner, Store, StoreConfig, Verification};

    /// Verifies through the store's reader and, on SQLite, through sqlx as well: both must
    /// give the same answer.
    async fn verify(store: &Store, tenant: &crate::Tenant) -> Verification {
        let verification = store.verify_audit(tenant).await.unwrap();
        if store.sqlite_file.is_some() {
            let through_sqlx = Store {
                sqlite_file: None,
                ..store.clone()
            };
            assert_eq!(
                through_sqlx.verify_audit(tenant).await.unwrap(),
                verification
            );
        }
        verification
    }

    fn broken(v: &Verification) -> (i64, &str) {
        match v {
            Verification::Broken {
                broken_at_seq,
                events_checked,
                reason,
                ..
            } => {
                assert_eq!(*events_checked, broken_at_seq - 1);
                (*broken_at_seq, reason.as_str())
            }
            ok => panic!("tampering went unnoticed: {ok:?}"),
        }
    }

    agentnexus_testkit::both_backends!(
        the_first_broken_event_is_reported_across_chunks,
        |backend| async move {
            let db = TestDatabase::new(backend).await;
            let store = Store::open(StoreConfig::new(&db.url)).await.unwrap();
            let owner = NewOwner {
                email: "o@example.com".into(),
                name: None,
                password_hash: "-".into(),
            };
            let (_, tenant, _) = store
                .create_workspace("acme", owner, Actor::Cli, Utc::now())
                .await
                .unwrap();
            let events: Vec<_> = (0..100)
                .map(|i| NewAuditEvent {
                    kind: crate::EventKind::ApprovalViewed,
                    actor: Actor::Key("key_1".into()),
                    evaluation_id: (i % 3 != 0).then(|| format!("ev_{i}")),
                    data: json!({"i": i, "text": "é\"\\"}),
                    occurred_at: Utc::now(),
                })
                .collect();
            store.append_audit(&tenant, &events).await.unwrap();
            // 3 events at creation: 103 in 7 chunks.
            match verify(&store, &tenant).await {
                Verification::Ok { events, .. } => assert_eq!(events, 103),
                broken => panic!("{broken:?}"),
            }
            if backend == Backend::Sqlite {
                sqlx::query("DROP TRIGGER audit_events_no_delete")
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
            // Each change is before the last, so each becomes the first broken event.
            let changes = [
                (
                    "UPDATE audit_heads SET hash = upper(hash)",
                    103,
                    "the chain head does not match the last event",
                ),
                (
                    "DELETE FROM audit_events WHERE seq = 103",
                    103,
                    "event 103 is missing",
                ),
                (
                    "UPDATE audit_events SET prev_hash = hash WHERE seq = 70",
                    70,
                    "prev_hash does not match the event before",
                ),
                (
                    "UPDATE audit_events SET data = '{\"i\":0}' WHERE seq = 50",
                    50,
                    "hash does not match the event",
                ),
                // The first event of the third chunk.
                (
                    "DELETE FROM audit_events WHERE seq = 33",
                    33,
                    "event 33 is missing",
                ),
                (
                    "UPDATE audit_events SET seq = 200 WHERE seq = 17",
                    17,
                    "event 17 is missing",
                ),
                (
                    "DELETE FROM audit_events WHERE seq = 1",
                    1,
                    "event 1 is missing",
                ),
            ];
            for (sql, seq, reason) in changes {
                tamper(store.pool(), backend, sql).await;
                assert_eq!(
                    broken(&verify(&store, &tenant).await),
                    (seq, reason),
                    "{sql}"
                );
            }
            store.close().await;
            db.drop_database().await;
        }
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_in_memory_is_read_through_sqlx() {
        let store = Store::open(StoreConfig::new(
            "sqlite:file:anx-verify?mode=memory&cache=shared",
        ))
        .await
        .unwrap();
        assert!(store.sqlite_file.is_none());
        let owner = NewOwner {
            email: "o@example.com".into(),
            name: None,
            password_hash: "-".into(),
        };
        let (_, tenant, _) = store
            .create_workspace("acme", owner, Actor::Cli, Utc::now())
            .await
            .unwrap();
        assert!(store.verify_audit(&tenant).await.unwrap().is_ok());
        store.close().await;
    }
}
