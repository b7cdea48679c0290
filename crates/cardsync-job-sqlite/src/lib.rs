//! A [`Store`] for `cardsync-job` in one SQLite file: what `cardsync sync` keeps beside the
//! results file.
//!
//! Each [`Store::apply`] is one `BEGIN IMMEDIATE` transaction that first checks the lease's
//! fencing token, then compare-and-sets every request state it changes; the file is in WAL
//! mode with `synchronous = FULL`, so a committed change survives a crash or a power cut. The
//! lease row holds the holder's host, process id and start time, so that a later run can say
//! who holds the job and tell a dead holder from a live one.
//!
//! The planned cards are rows (request, input row, id, card, expiry, SE number, last 4), not
//! encoded request bodies. The file holds full card numbers until the job is done, so it is
//! created with mode 0600, deleted rows are overwritten (`secure_delete`), and the cards are
//! erased when the job completes.
//!
//! ```
//! use cardsync_job::{Acquired, Change, Changes, Holder, Store};
//! use cardsync_job_sqlite::SqliteStore;
//!
//! let path = std::env::temp_dir().join(format!("cardsync-sqlite-doc-{}.journal", std::process::id()));
//! let mut store = SqliteStore::open(&path)?;
//! let Acquired::Taken(lease) = store.acquire(&Holder::new("h", 1, 0), 0, 30_000, &|_| false)? else { panic!() };
//! store.apply(&lease, &Changes::new(vec![Change::Meta { key: "k".into(), value: "v".into() }]))?;
//! assert_eq!(store.load()?.meta("k"), Some("v"));
//! # drop(store);
//! # let _ = std::fs::remove_file(&path);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use cardsync_core::{Expiry, Pan, SeNumber};
use cardsync_job::{
    Acquired, Change, Changes, EventRecord, EventState, Holder, Lease, RequestKind, RequestRecord,
    RequestState, Snapshot, Store, StoreError, StoredCard,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

/// The journal format this build writes and reads.
const FORMAT: &str = "3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    token INTEGER NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    process_start INTEGER,
    since_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    se_number TEXT,
    cards INTEGER NOT NULL,
    state TEXT NOT NULL,
    batch_id TEXT,
    event_id TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS cards (
    seq INTEGER NOT NULL,
    row INTEGER NOT NULL,
    id TEXT NOT NULL,
    card TEXT NOT NULL,
    exp TEXT NOT NULL,
    se_number TEXT,
    last4 TEXT NOT NULL,
    PRIMARY KEY (seq, row)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    trigger_id INTEGER,
    batch_id TEXT,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tally (status TEXT PRIMARY KEY, n INTEGER NOT NULL);
";

/// A job's journal in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Whether commits are synced to disk one by one (`synchronous = FULL`).
    full_sync: bool,
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    let busy = e
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
        .is_some_and(|c| {
            matches!(
                c,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            )
        });
    if busy {
        return StoreError::Backend(
            format!(
                "the journal stayed locked for {} s by another process (one that is paused or \
                 stuck in the middle of a change); nothing was changed",
                BUSY_TIMEOUT_MS / 1000
            )
            .into(),
        );
    }
    StoreError::Backend(e)
}

/// Puts the journal in WAL mode. A new journal that several processes open at once: the first
/// to switch it needs it to itself, and SQLite answers the others "busy" at once, without
/// waiting (nor can the switch wait for them): tried again for up to [`BUSY_TIMEOUT_MS`].
fn set_wal(conn: &Connection) -> Result<(), StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(BUSY_TIMEOUT_MS);
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        let mode = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0));
        let busy = match &mode {
            Ok(m) if m.eq_ignore_ascii_case("wal") => return Ok(()),
            // The mode it could not leave is returned when the switch did not happen.
            Ok(_) => true,
            Err(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy),
        };
        if !busy || std::time::Instant::now() >= deadline {
            return match mode {
                Ok(m) => Err(StoreError::Backend(
                    format!("the journal could not be put in WAL mode (it is in {m} mode)").into(),
                )),
                Err(e) => Err(backend(e)),
            };
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}

/// How long a change waits for another process's change to the same journal.
const BUSY_TIMEOUT_MS: u64 = 10_000;

impl SqliteStore {
    /// Opens the journal at `path`, creating it (mode 0600) if it does not exist. Several
    /// processes may open one journal at once; the lease decides which of them works.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the file cannot be opened, [`StoreError::Corrupt`] when it
    /// was written by another version.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        create_new_private(path).map_err(backend)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(backend)?;
        // Deleted rows (duplicates, erased cards) are overwritten. Statement journals, if any
        // statement needs one, stay in memory.
        set_wal(&conn)?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;
             PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16384;
             PRAGMA wal_autocheckpoint = 16384;",
        )
        .map_err(backend)?;
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
            .map_err(backend)?;
        let store = SqliteStore {
            conn,
            path: path.to_owned(),
            full_sync: true,
        };
        let format: Option<String> = store
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)?;
        match format.as_deref() {
            None => {
                store
                    .conn
                    .execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('format', ?1)",
                        [FORMAT],
                    )
                    .map_err(backend)?;
            }
            Some(FORMAT) => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "{} was written by another version of cardsync (journal format {other}, \
                     this one reads {FORMAT}); finish that job with the version that started it, \
                     or delete the journal to start again",
                    path.display()
                )));
            }
        }
        let mut store = store;
        let done: Option<String> = store
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'phase'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)?;
        let free: i64 = store
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .map_err(backend)?;
        if done.as_deref() == Some("done") && free > 0 {
            store.compact();
        }
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rebuilds the file without its free pages and empties the write-ahead log, so that no
    /// copy of erased cards is left in either. Done after the cards are erased, and again on
    /// opening a finished job's journal if a run died before it was done.
    fn compact(&mut self) {
        let _ = self
            .conn
            .execute_batch("PRAGMA secure_delete = ON; VACUUM; PRAGMA wal_checkpoint(TRUNCATE);");
    }

    /// Copies the journal, as it stands, to a new file at `to` (mode 0600; refused if a file is
    /// there already): to keep a finished job's record before the journal is used for the
    /// next one.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = std::env::temp_dir().join(format!("cardsync-archive-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let mut store = cardsync_job_sqlite::SqliteStore::open(&dir.join("j"))?;
    /// store.archive(&dir.join("j.old"))?;
    /// assert!(store.archive(&dir.join("j.old")).is_err(), "never over a file");
    /// cardsync_job_sqlite::SqliteStore::open(&dir.join("j.old"))?;
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the copy cannot be made.
    pub fn archive(&mut self, to: &Path) -> Result<(), StoreError> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        cardsync_job::open_private(&mut options, to)
            .map(drop)
            .map_err(backend)?;
        let copied = self
            .conn
            .execute("VACUUM INTO ?1", [to.to_string_lossy().as_ref()])
            .map(drop)
            .map_err(backend);
        if copied.is_err() {
            let _ = std::fs::remove_file(to);
        }
        copied
    }

    /// The planned cards of these input rows (those that are in the plan), in row order: for
    /// reporting duplicates found after planning.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub fn cards_at_rows(&mut self, rows: &[u64]) -> Result<Vec<StoredCard>, StoreError> {
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT row, id, card, exp, se_number FROM cards ORDER BY row")
            .map_err(backend)?;
        // Duplicates are few, and found once per plan: one pass over the cards (which are
        // kept in request order) finds them all.
        let wanted: HashSet<u64> = rows.iter().copied().collect();
        let found = stmt.query_map([], card_columns).map_err(backend)?;
        for columns in found {
            let columns = columns.map_err(backend)?;
            if wanted.contains(&(columns.0 as u64)) {
                out.push(stored_card(columns)?);
            }
        }
        Ok(out)
    }

    fn lease_row(conn: &Connection) -> Result<Option<Lease>, StoreError> {
        conn.query_row(
            "SELECT token, host, pid, process_start, since_ms, expires_ms FROM lease WHERE id = 1",
            [],
            |r| {
                let holder = Holder::new(
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, i64>(4)? as u64,
                )
                .with_process_start(r.get::<_, Option<i64>>(3)?.map(|s| s as u64));
                Ok(Lease::new(
                    r.get::<_, i64>(0)? as u64,
                    holder,
                    r.get::<_, i64>(5)? as u64,
                ))
            },
        )
        .optional()
        .map_err(backend)
    }

    fn check_token(conn: &Connection, lease: &Lease) -> Result<(), StoreError> {
        match Self::lease_row(conn)? {
            Some(l) if l.token == lease.token => Ok(()),
            other => Err(StoreError::Fenced {
                holder: other.map(|l| l.holder),
            }),
        }
    }
}

/// Creates the file with mode 0600 if it does not exist (never truncating one that does, which
/// another process may be using).
fn create_new_private(path: &Path) -> std::io::Result<()> {
    // Created 0600 if new; a link, a device or another user's file where the journal goes is
    // refused (see `cardsync_job::open_private`), and SQLite then opens it without following
    // links either.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    cardsync_job::open_private(&mut options, path).map(drop)
}

impl Store for SqliteStore {
    fn acquire(
        &mut self,
        holder: &Holder,
        now_ms: u64,
        ttl_ms: u64,
        gone: &dyn Fn(&Holder) -> bool,
    ) -> Result<Acquired, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let current = Self::lease_row(&tx)?;
        if let Some(l) = &current
            && !l.can_be_taken(holder, now_ms, gone)
        {
            return Ok(Acquired::Held(l.clone()));
        }
        let token = current.map_or(0, |l| l.token) + 1;
        let lease = Lease::new(token, holder.clone(), now_ms + ttl_ms);
        tx.execute(
            "INSERT INTO lease (id, token, host, pid, process_start, since_ms, expires_ms)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET token = excluded.token, host = excluded.host,
               pid = excluded.pid, process_start = excluded.process_start,
               since_ms = excluded.since_ms, expires_ms = excluded.expires_ms",
            params![
                token as i64,
                holder.host,
                holder.pid,
                holder.process_start.map(|s| s as i64),
                holder.since_ms as i64,
                lease.expires_ms as i64
            ],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(Acquired::Taken(lease))
    }

    fn renew(&mut self, lease: &Lease, now_ms: u64, ttl_ms: u64) -> Result<Lease, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        Self::check_token(&tx, lease)?;
        let expires = now_ms + ttl_ms;
        tx.execute(
            "UPDATE lease SET expires_ms = ?1 WHERE id = 1",
            [expires as i64],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        let mut renewed = lease.clone();
        renewed.expires_ms = expires;
        Ok(renewed)
    }

    fn release(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE lease SET expires_ms = 0 WHERE id = 1 AND token = ?1",
                [lease.token as i64],
            )
            .map(drop)
            .map_err(backend)
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let tx = self.conn.transaction().map_err(backend)?;
        let mut s = Snapshot::default();
        {
            let mut stmt = tx
                .prepare("SELECT key, value FROM meta WHERE key != 'format'")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(backend)?;
            for row in rows {
                let (k, v) = row.map_err(backend)?;
                if k == "checkpoint" {
                    s.checkpoint = v
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("checkpoint {v:?}")))?;
                } else {
                    s.meta.insert(k, v);
                }
            }
            let mut stmt = tx
                .prepare(
                    "SELECT seq, kind, se_number, cards, state, batch_id, event_id, message
                     FROM requests ORDER BY seq",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                })
                .map_err(backend)?;
            for row in rows {
                let (seq, kind, se, cards, state, batch_id, event_id, message) =
                    row.map_err(backend)?;
                let kind = RequestKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("request kind {kind:?}")))?;
                let state = RequestState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("request state {state:?}")))?;
                let mut record = RequestRecord::new(seq as u64, kind, se, cards as u64);
                record.state = state;
                record.batch_id = batch_id;
                record.event_id = event_id;
                record.message = message;
                s.requests.push(record);
            }
            let mut stmt = tx
                .prepare("SELECT event_id, trigger_id, batch_id, state FROM events ORDER BY rowid")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(backend)?;
            for row in rows {
                let (id, trigger, batch, state) = row.map_err(backend)?;
                let state = EventState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("event state {state:?}")))?;
                s.events.push(EventRecord::new(
                    id,
                    trigger.map(|t| t as u32),
                    batch,
                    state,
                ));
            }
            let mut stmt = tx.prepare("SELECT status, n FROM tally").map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(backend)?;
            for row in rows {
                let (status, n) = row.map_err(backend)?;
                s.tally.insert(status, n);
            }
        }
        tx.commit().map_err(backend)?;
        Ok(s)
    }

    fn cards(&mut self, seq: u64) -> Result<Vec<StoredCard>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT row, id, card, exp, se_number FROM cards WHERE seq = ?1 ORDER BY row",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([seq as i64], card_columns)
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(stored_card(row.map_err(backend)?)?);
        }
        Ok(out)
    }

    fn apply(&mut self, lease: &Lease, changes: &Changes) -> Result<(), StoreError> {
        // A commit survives a crash of the process as soon as it is made; it is synced to
        // the disk (to survive a power cut) before `apply` returns when something that cannot
        // be taken back follows it. In WAL mode a commit that was not synced can be lost on a
        // power cut, never half applied, and the next synced commit carries every one before
        // it: a journal that loses some goes back to a state the job resumes from.
        let full = changes.before_effect();
        if full != self.full_sync {
            let mode = if full { "FULL" } else { "NORMAL" };
            self.conn
                .execute_batch(&format!("PRAGMA synchronous = {mode}"))
                .map_err(backend)?;
            self.full_sync = full;
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        Self::check_token(&tx, lease)?;
        let erase = changes
            .items()
            .iter()
            .any(|c| matches!(c, Change::EraseCards));
        if erase {
            // Erased cards are not overwritten page by page (that rewrites the whole table
            // through the log): the file is rebuilt without them just after (below).
            tx.execute_batch("PRAGMA secure_delete = OFF")
                .map_err(backend)?;
        }
        for change in changes.items() {
            apply_change(&tx, change)?;
        }
        tx.commit().map_err(backend)?;
        if erase {
            self.compact();
        }
        Ok(())
    }
}

/// Cards inserted by one statement while planning.
const CARDS_PER_INSERT: usize = 64;

/// An INSERT of `n` cards.
fn insert_cards(n: usize) -> String {
    let rows = vec!["(?, ?, ?, ?, ?, ?, ?)"; n].join(", ");
    format!("INSERT INTO cards (row, seq, id, card, exp, se_number, last4) VALUES {rows}")
}

/// Binds one card's seven columns after the `at` parameters before it.
fn bind_card(
    stmt: &mut rusqlite::CachedStatement<'_>,
    at: usize,
    seq: u64,
    c: &StoredCard,
) -> rusqlite::Result<()> {
    let exp = c.exp.to_string();
    stmt.raw_bind_parameter(at + 1, c.row as i64)?;
    stmt.raw_bind_parameter(at + 2, seq as i64)?;
    stmt.raw_bind_parameter(at + 3, c.id.as_str())?;
    stmt.raw_bind_parameter(at + 4, c.pan.expose().as_str())?;
    stmt.raw_bind_parameter(at + 5, exp.as_str())?;
    stmt.raw_bind_parameter(at + 6, c.se_number.as_ref().map(SeNumber::as_str))?;
    stmt.raw_bind_parameter(at + 7, c.last4().as_str())
}

/// The columns of a card row: row, id, card, expiry, SE number.
type CardColumns = (i64, String, String, String, Option<String>);

fn card_columns(r: &rusqlite::Row<'_>) -> rusqlite::Result<CardColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn stored_card((row, id, card, exp, se): CardColumns) -> Result<StoredCard, StoreError> {
    let damaged = |what: &str| StoreError::Corrupt(format!("the {what} of row {row}"));
    let pan = Pan::parse(&card).map_err(|_| damaged("card"))?;
    let exp = Expiry::parse(&exp).map_err(|_| damaged("expiry"))?;
    let se = match se {
        Some(se) => Some(SeNumber::parse(&se).map_err(|_| damaged("SE number"))?),
        None => None,
    };
    Ok(StoredCard::new(row as u64, id, pan, exp, se))
}

fn apply_change(tx: &rusqlite::Transaction<'_>, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::DiscardPlan => tx
            .execute_batch(
                "DELETE FROM requests; DELETE FROM cards; DELETE FROM events; DELETE FROM tally;
                 DELETE FROM meta WHERE key != 'format';",
            )
            .map_err(backend),
        Change::Meta { key, value } => tx
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(drop)
            .map_err(backend),
        Change::Checkpoint(c) => apply_change(
            tx,
            &Change::Meta {
                key: "checkpoint".to_owned(),
                value: c.to_string(),
            },
        ),
        Change::AddRequest { request, cards } => {
            tx.execute(
                "INSERT INTO requests (seq, kind, se_number, cards, state, batch_id, event_id, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    request.seq as i64,
                    request.kind.as_str(),
                    request.se_number,
                    request.cards as i64,
                    request.state.as_str(),
                    request.batch_id,
                    request.event_id,
                    request.message
                ],
            )
            .map_err(backend)?;
            // Plain INSERTs need no statement journal (OR REPLACE would copy every page it
            // touches into one); rows go in many to a statement.
            let mut many = tx
                .prepare_cached(&insert_cards(CARDS_PER_INSERT))
                .map_err(backend)?;
            let mut one = tx.prepare_cached(&insert_cards(1)).map_err(backend)?;
            for chunk in cards.chunks(CARDS_PER_INSERT) {
                let (stmt, groups) = if chunk.len() == CARDS_PER_INSERT {
                    (&mut many, chunk.chunks(CARDS_PER_INSERT))
                } else {
                    (&mut one, chunk.chunks(1))
                };
                for group in groups {
                    for (i, c) in group.iter().enumerate() {
                        bind_card(stmt, i * 7, request.seq, c).map_err(backend)?;
                    }
                    stmt.raw_execute().map_err(backend)?;
                }
            }
            Ok(())
        }
        Change::RemoveRows { rows } => {
            // Cards are keyed by request: one pass finds the requests of these rows.
            let wanted: HashSet<i64> = rows.iter().map(|r| *r as i64).collect();
            let mut found: Vec<(i64, i64)> = Vec::new();
            {
                let mut stmt = tx.prepare("SELECT seq, row FROM cards").map_err(backend)?;
                let all = stmt
                    .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                    .map_err(backend)?;
                for pair in all {
                    let (seq, row) = pair.map_err(backend)?;
                    if wanted.contains(&row) {
                        found.push((seq, row));
                    }
                }
                let mut delete = tx
                    .prepare_cached("DELETE FROM cards WHERE seq = ?1 AND row = ?2")
                    .map_err(backend)?;
                for (seq, row) in &found {
                    delete.execute([*seq, *row]).map_err(backend)?;
                }
            }
            let touched: HashSet<i64> = found.iter().map(|(seq, _)| *seq).collect();
            for seq in touched {
                tx.execute(
                    "UPDATE requests SET cards = (SELECT COUNT(*) FROM cards WHERE seq = ?1) WHERE seq = ?1",
                    [seq],
                )
                .map_err(backend)?;
                tx.execute("DELETE FROM requests WHERE seq = ?1 AND cards = 0", [seq])
                    .map_err(backend)?;
            }
            Ok(())
        }
        Change::Request(u) => {
            let found: Option<String> = tx
                .query_row(
                    "SELECT state FROM requests WHERE seq = ?1",
                    [u.seq as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            let found = found.as_deref().and_then(RequestState::parse);
            if found != Some(u.from) {
                return Err(StoreError::Conflict {
                    seq: u.seq,
                    expected: u.from,
                    found,
                });
            }
            tx.execute(
                "UPDATE requests SET state = ?2, batch_id = COALESCE(?3, batch_id),
                 event_id = COALESCE(?4, event_id), message = ?5 WHERE seq = ?1",
                params![
                    u.seq as i64,
                    u.to.as_str(),
                    u.batch_id,
                    u.event_id,
                    u.message
                ],
            )
            .map(drop)
            .map_err(backend)
        }
        Change::Event(e) => tx
            .execute(
                "INSERT INTO events (event_id, trigger_id, batch_id, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (event_id) DO UPDATE SET trigger_id = excluded.trigger_id,
                   batch_id = excluded.batch_id, state = excluded.state",
                params![
                    e.event_id,
                    e.trigger.map(i64::from),
                    e.batch_id,
                    e.state.as_str()
                ],
            )
            .map(drop)
            .map_err(backend),
        Change::Tally { status, delta } => tx
            .execute(
                "INSERT INTO tally (status, n) VALUES (?1, ?2)
                 ON CONFLICT (status) DO UPDATE SET n = n + excluded.n",
                params![status, delta],
            )
            .map(drop)
            .map_err(backend),
        Change::EraseCards => tx
            .execute("DELETE FROM cards", [])
            .map(drop)
            .map_err(backend),
        _ => Err(StoreError::Corrupt(
            "a change this version of the SQLite store does not know".to_owned(),
        )),
    }
}
