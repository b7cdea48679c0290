//! The journal of a `sync` job: a SQLite file that makes the job resumable.
//!
//! It holds the plan (each request's body, exactly as it is sent), each request's state, the
//! webhook events received, how far the results file has been written, and the count of
//! results per status. Every change is committed before the next step that depends on it, so
//! a process killed at any point leaves a journal that says what happened, with one exception
//! that no journal can close: a batch whose POST was under way. Its state is `sending`, and
//! the next run asks what to do with it rather than guessing.
//!
//! The file holds full card numbers (in the request bodies) until the job is done, so it is
//! created with mode 0600; the bodies are erased when the job completes.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

/// The journal format this build writes and reads.
const FORMAT: &str = "2";

/// Where a request is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReqState {
    /// Planned, not sent.
    Planned,
    /// Its POST was started; the server may or may not have it.
    Sending,
    /// The server accepted it (batches: with a batch id).
    Sent,
    /// The batch is complete; its results can be fetched.
    Completed,
    /// Its results are in the results file (batches), or it was acknowledged (subscriptions,
    /// whose updates arrive as events).
    Done,
    /// The server refused it, or the batch ended in error.
    Failed,
    /// The user chose not to send it again after an interrupted POST.
    Abandoned,
}

impl ReqState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReqState::Planned => "planned",
            ReqState::Sending => "sending",
            ReqState::Sent => "sent",
            ReqState::Completed => "completed",
            ReqState::Done => "done",
            ReqState::Failed => "failed",
            ReqState::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> ReqState {
        match s {
            "planned" => ReqState::Planned,
            "sending" => ReqState::Sending,
            "sent" => ReqState::Sent,
            "completed" => ReqState::Completed,
            "done" => ReqState::Done,
            "abandoned" => ReqState::Abandoned,
            _ => ReqState::Failed,
        }
    }

    /// Nothing more will happen to the request.
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            ReqState::Done | ReqState::Failed | ReqState::Abandoned
        )
    }
}

/// One planned request, as the journal holds it (without its body).
#[derive(Clone, Debug)]
pub(crate) struct RequestRow {
    pub(crate) seq: i64,
    /// `batch` or `subscription`.
    pub(crate) kind: String,
    pub(crate) cards: i64,
    pub(crate) state: ReqState,
    pub(crate) batch_id: Option<String>,
    pub(crate) event_id: Option<String>,
    pub(crate) message: Option<String>,
}

impl RequestRow {
    pub(crate) fn is_batch(&self) -> bool {
        self.kind == "batch"
    }
}

/// A webhook event recorded and not yet handled.
pub(crate) struct PendingEvent {
    pub(crate) event_id: String,
    pub(crate) trigger_id: Option<i64>,
    pub(crate) batch_id: Option<String>,
}

/// Errors of the journal file.
#[derive(Debug)]
pub(crate) struct JournalError {
    pub(crate) path: PathBuf,
    pub(crate) source: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "journal {}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

pub(crate) type Result<T> = std::result::Result<T, JournalError>;

/// The journal of one job.
pub(crate) struct Journal {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
CREATE TABLE IF NOT EXISTS bodies (seq INTEGER PRIMARY KEY, body BLOB NOT NULL, rows BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    trigger_id INTEGER,
    batch_id TEXT,
    received_at INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tally (status TEXT PRIMARY KEY, n INTEGER NOT NULL);
";

impl Journal {
    /// Opens the journal at `path`, creating it (mode 0600) if it does not exist.
    pub(crate) fn open(path: &Path) -> Result<Journal> {
        let err = |source: rusqlite::Error| JournalError {
            path: path.to_owned(),
            source: Box::new(source),
        };
        if !path.exists() {
            // Create it ourselves so that its mode is 0600 from the first byte.
            crate::files::create_private(path).map_err(|e| JournalError {
                path: path.to_owned(),
                source: Box::new(e),
            })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        // Large pages keep a request body (about 600 kB for 10,000 cards) in a short chain of
        // overflow pages; the setting only takes effect on a new, empty file.
        conn.execute_batch(
            "PRAGMA page_size = 65536; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 2000;",
        )
        .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let journal = Journal {
            conn,
            path: path.to_owned(),
        };
        match journal.meta("format")? {
            None => journal.set_meta("format", FORMAT)?,
            Some(f) if f == FORMAT => {}
            Some(f) => {
                return Err(JournalError {
                    path: path.to_owned(),
                    source: format!(
                        "written by another version of cardsync (format {f}, this one reads {FORMAT})"
                    )
                    .into(),
                });
            }
        }
        Ok(journal)
    }

    fn err(&self, source: rusqlite::Error) -> JournalError {
        JournalError {
            path: self.path.clone(),
            source: Box::new(source),
        }
    }

    pub(crate) fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    pub(crate) fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub(crate) fn meta_u64(&self, key: &str) -> Result<u64> {
        Ok(self
            .meta(key)?
            .and_then(|v| v.parse().ok())
            .unwrap_or_default())
    }

    /// Starts a transaction; [`commit`](Journal::commit) ends it.
    pub(crate) fn begin(&self) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))
    }

    pub(crate) fn commit(&self) -> Result<()> {
        self.conn.execute_batch("COMMIT").map_err(|e| self.err(e))
    }

    /// Forgets a plan that was not finished (the previous run stopped while planning).
    pub(crate) fn discard_plan(&self) -> Result<()> {
        self.conn
            .execute_batch(
                "DELETE FROM requests; DELETE FROM bodies; DELETE FROM tally; DELETE FROM meta WHERE key != 'format';",
            )
            .map_err(|e| self.err(e))
    }

    pub(crate) fn add_request(
        &self,
        seq: u64,
        kind: &str,
        se_number: Option<&str>,
        cards: usize,
        body: &[u8],
        rows: &[u64],
    ) -> Result<()> {
        // Bodies live in a table of their own, so that the frequent state updates of
        // `requests` never rewrite them.
        self.conn
            .prepare_cached(
                "INSERT INTO requests (seq, kind, se_number, cards, state)
                 VALUES (?1, ?2, ?3, ?4, 'planned')",
            )
            .and_then(|mut s| s.execute(params![seq as i64, kind, se_number, cards as i64]))
            .and_then(|_| {
                self.conn
                    .prepare_cached("INSERT INTO bodies (seq, body, rows) VALUES (?1, ?2, ?3)")
            })
            .and_then(|mut s| s.execute(params![seq as i64, body, encode_rows(rows)]))
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub(crate) fn requests(&self) -> Result<Vec<RequestRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, kind, cards, state, batch_id, event_id, message
                 FROM requests ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RequestRow {
                    seq: r.get(0)?,
                    kind: r.get(1)?,
                    cards: r.get(2)?,
                    state: ReqState::parse(&r.get::<_, String>(3)?),
                    batch_id: r.get(4)?,
                    event_id: r.get(5)?,
                    message: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// The input row of each card of a request, in body order.
    pub(crate) fn rows(&self, seq: i64) -> Result<Vec<u64>> {
        self.conn
            .query_row("SELECT rows FROM bodies WHERE seq = ?1", [seq], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()
            .map(|b| {
                b.unwrap_or_default()
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Replaces a planned request's cards (after duplicates were taken out); an empty request
    /// is removed.
    pub(crate) fn replace_request(&self, seq: i64, body: &[u8], rows: &[u64]) -> Result<()> {
        let result = if rows.is_empty() {
            self.conn
                .execute("DELETE FROM requests WHERE seq = ?1", [seq])
                .and_then(|_| {
                    self.conn
                        .execute("DELETE FROM bodies WHERE seq = ?1", [seq])
                })
        } else {
            self.conn
                .execute(
                    "UPDATE requests SET cards = ?2 WHERE seq = ?1",
                    params![seq, rows.len() as i64],
                )
                .and_then(|_| {
                    self.conn.execute(
                        "UPDATE bodies SET body = ?2, rows = ?3 WHERE seq = ?1",
                        params![seq, body, encode_rows(rows)],
                    )
                })
        };
        result.map(drop).map_err(|e| self.err(e))
    }

    /// A request's body; empty once the bodies are erased.
    pub(crate) fn body(&self, seq: i64) -> Result<Vec<u8>> {
        self.conn
            .query_row("SELECT body FROM bodies WHERE seq = ?1", [seq], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|e| self.err(e))
    }

    /// Moves a request to `state`, with what is known of it.
    pub(crate) fn set_state(
        &self,
        seq: i64,
        state: ReqState,
        batch_id: Option<&str>,
        message: Option<&str>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE requests SET state = ?2, batch_id = COALESCE(?3, batch_id),
                 message = ?4 WHERE seq = ?1",
                params![seq, state.as_str(), batch_id, message],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub(crate) fn set_event(&self, seq: i64, event_id: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE requests SET event_id = ?2 WHERE seq = ?1",
                params![seq, event_id],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records a webhook event; false if it was already recorded (a redelivery).
    pub(crate) fn add_event(
        &self,
        event_id: &str,
        trigger_id: Option<u64>,
        batch_id: Option<&str>,
        now: u64,
    ) -> Result<bool> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO events (event_id, trigger_id, batch_id, received_at, state)
                 VALUES (?1, ?2, ?3, ?4, 'received')",
                params![event_id, trigger_id.map(|t| t as i64), batch_id, now as i64],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Events not yet handled, oldest first.
    pub(crate) fn pending_events(&self) -> Result<Vec<PendingEvent>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT event_id, trigger_id, batch_id FROM events WHERE state = 'received'
                 ORDER BY received_at, rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PendingEvent {
                    event_id: r.get(0)?,
                    trigger_id: r.get(1)?,
                    batch_id: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    pub(crate) fn set_event_state(&self, event_id: &str, state: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE events SET state = ?2 WHERE event_id = ?1",
                params![event_id, state],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub(crate) fn add_tally(&self, status: &str, n: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO tally (status, n) VALUES (?1, ?2)
                 ON CONFLICT (status) DO UPDATE SET n = n + excluded.n",
            )
            .and_then(|mut s| s.execute(params![status, n]))
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Results per status, most common first.
    pub(crate) fn tally(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT status, n FROM tally ORDER BY n DESC, status")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(|e| self.err(e))
    }

    /// Erases the request bodies (and their card numbers) once they can no longer be needed.
    pub(crate) fn erase_bodies(&self) -> Result<()> {
        self.conn
            .execute_batch("DELETE FROM bodies; PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
            .map_err(|e| self.err(e))
    }
}

fn encode_rows(rows: &[u64]) -> Vec<u8> {
    rows.iter().flat_map(|r| r.to_le_bytes()).collect()
}
