//! The journal of cardsync jobs in PostgreSQL, shared by many workers on many machines, with
//! the exactly-once promise of the single-machine SQLite journal.
//!
//! # How work is shared
//!
//! A job's plan is a set of requests (one row each, up to 10,000 cards). Workers claim them with
//! `SELECT … FOR UPDATE SKIP LOCKED` in a short transaction that bumps the request's fencing
//! token (`epoch`) and sets a lease (`lease_owner`, `lease_until`), then make their HTTP call
//! outside any transaction, then write what they learned with `WHERE epoch = <their token>`:
//! a worker that paused past its lease and woke up writes nothing ([`PgError::Fenced`]).
//!
//! - A request is moved to `sending` by the same commit that claims it, before its POST: the
//!   intent is durable before anything leaves.
//! - A batch request found in `sending` with its lease run out may have reached CardSync. It is
//!   never sent again by itself: it waits for a decision ([`Decision`]), as with one machine.
//!   Subscriptions are idempotent and are claimed again.
//! - Status checks and results fetches are idempotent: a request whose worker died is claimed
//!   again when its lease runs out. Its results are written in the same transaction that marks
//!   it done, under its token, so they are written once.
//! - At most `max_in_flight` requests of one merchant are under way at once (claims of one
//!   merchant are serialised by an advisory lock), and a `Retry-After` holds every worker off
//!   that merchant until it passes.
//! - Webhook events are recorded once (`ON CONFLICT (event_id) DO NOTHING`) whichever receiver
//!   got them, and mark their batch ready in the same transaction.
//!
//! # Card numbers
//!
//! Card numbers (in the plan and in results) are sealed with AES-256-GCM under a
//! [`JournalKey`] that the database never sees, bound to their row; duplicate checks use keyed
//! fingerprints. The cards and results of a job are erased when it is exported or abandoned.
//!
//! # Schema
//!
//! Versioned migrations ([`SCHEMA_VERSION`]) are applied by [`PgJournal::connect`], once, under
//! an advisory lock. One schema holds any number of jobs and merchants.
//!
//! ```no_run
//! use cardsync_job_postgres::{JournalKey, PgJournal};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let journal = PgJournal::connect("postgres://cardsync@127.0.0.1/cardsync", JournalKey::from_env()?).await?;
//! let status = journal.status("nightly").await?;
//! println!("{} requests done", status.requests.get("done").copied().unwrap_or(0));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod codec;
mod connect;
mod crypto;
mod journal;
mod schema;
mod worker;

/// The one type of a decision and of a request waiting for one, on one machine and here.
pub use cardsync_job::{Decision, Unconfirmed};
pub use crypto::{JournalKey, KEY_ENV, KEY_FILE_ENV, KeyError, OLD_KEY_ENV, OLD_KEY_FILE_ENV};
pub use journal::{Claim, JobId, JobSpec, JobState, JobStatus, OpenJob, PgJournal, Scope, Work};
pub use schema::SCHEMA_VERSION;
pub use worker::{WorkSummary, WorkerOptions, work};

use std::fmt;

/// Errors of the PostgreSQL journal.
#[derive(Debug)]
#[non_exhaustive]
pub enum PgError {
    /// The database answered with an error, or the connection failed.
    Database(tokio_postgres::Error),
    /// No connection could be had from the pool.
    Pool(String),
    /// The journal URL or its TLS settings cannot be used.
    Config(String),
    /// The journal key is missing or wrong, or a sealed card does not open.
    Key(KeyError),
    /// The database's schema is newer than this build.
    NewerSchema {
        /// The version found.
        found: i32,
        /// The newest version this build knows.
        known: i32,
    },
    /// No job has this name.
    NoSuchJob(String),
    /// A job of this name exists already.
    JobExists(String),
    /// The claim this write was made under is no longer current: another worker took the
    /// request, or a decision was made about it. Nothing was written.
    Fenced {
        /// The job.
        job: String,
        /// The request.
        seq: u64,
    },
    /// The job is not in a state that allows this (with what it is in).
    State(String),
    /// The job's results were exported already (by this process or another).
    Exported(String),
    /// Another process is exporting the job's results right now.
    ExportRunning(String),
    /// The journal holds something this version cannot read.
    Corrupt(String),
    /// A row that decides where or what is sent was changed by someone without the journal
    /// key (or was written by an earlier cardsync that did not authenticate its rows). It is
    /// not used.
    Tampered {
        /// The job.
        job: String,
        /// What does not match.
        what: String,
    },
    /// The job is sealed under a key this process does not hold (its key was rotated): give
    /// the process the journal's current key (and, while a rotation runs, the previous one).
    KeyRotated {
        /// The job.
        job: String,
        /// The id of the key the job is sealed under.
        key_id: String,
    },
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Database(e) => match e.as_db_error() {
                Some(db) => write!(f, "the journal database: {}", db.message()),
                None => write!(f, "the journal database: {e}"),
            },
            PgError::Pool(e) => write!(f, "cannot connect to the journal database: {e}"),
            PgError::Config(e) => write!(f, "the journal: {e}"),
            PgError::Key(e) => e.fmt(f),
            PgError::NewerSchema { found, known } => write!(
                f,
                "the journal's schema is version {found}, newer than this cardsync knows ({known}): upgrade cardsync"
            ),
            PgError::NoSuchJob(name) => write!(f, "no job named {name:?} in the journal"),
            PgError::JobExists(name) => write!(f, "a job named {name:?} exists already"),
            PgError::Fenced { job, seq } => write!(
                f,
                "request {seq} of job {job:?} was taken over by another worker or a decision: this worker's claim ran out"
            ),
            PgError::State(what) => f.write_str(what),
            PgError::Exported(name) => write!(f, "job {name:?} is exported: nothing to export"),
            PgError::ExportRunning(name) => {
                write!(f, "job {name:?} is being exported by another process")
            }
            PgError::Corrupt(what) => write!(f, "the journal is damaged: {what}"),
            PgError::Tampered { job, what } => write!(
                f,
                "job {job:?}: {what}. The row was changed without the journal key, so it is not \
                 used: find out who can write to the journal's database (a job created by an \
                 earlier cardsync carries no authentication: finish it with that version, or \
                 abandon it)"
            ),
            PgError::KeyRotated { job, key_id } => write!(
                f,
                "job {job:?} is sealed under journal key {key_id}, which this process does not \
                 hold: give it the journal's current key in CARDSYNC_JOURNAL_KEY (and, while a \
                 rotation runs, the previous one in CARDSYNC_JOURNAL_OLD_KEY)"
            ),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgError::Database(e) => Some(e),
            PgError::Key(e) => Some(e),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> PgError {
        connect::note_if_lost(&e);
        PgError::Database(e)
    }
}

impl From<KeyError> for PgError {
    fn from(e: KeyError) -> PgError {
        PgError::Key(e)
    }
}
