//! The one error type of the command, and the one place exit codes are decided.
//!
//! Exit codes: 0 when everything is fine, 1 when the job found problems (invalid rows, failed
//! batches), 2 on usage or I/O errors (and when another run holds the job), 3 when CardSync
//! answered with an error or not at all, or a request's fate needs the user's decision, 4 when
//! the shared journal's database failed (unreachable, or holding what it should not).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Everything went well.
    Ok,
    /// The job found problems: an invalid row, a batch refused or failed.
    Problems,
    /// Usage or I/O error, or another run holds the job.
    Usage,
    /// CardSync answered with an error or not at all, or a request needs a decision.
    Remote,
    /// The shared journal's database failed: unreachable, refused the connection, or holds a
    /// row changed without the journal key.
    Database,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(match exit {
            Exit::Ok => 0,
            Exit::Problems => 1,
            Exit::Usage => 2,
            Exit::Remote => 3,
            Exit::Database => 4,
        })
    }
}

impl Exit {
    /// `Problems` when any row was invalid.
    pub(crate) fn for_invalid(invalid: u64) -> Exit {
        if invalid == 0 {
            Exit::Ok
        } else {
            Exit::Problems
        }
    }
}

/// Errors that stop a command.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The arguments do not make sense (or another run holds the job).
    Usage(String),
    /// Reading or writing a file failed.
    Io { path: PathBuf, source: io::Error },
    /// A file is not in a form cardsync can read.
    Input { path: PathBuf, message: String },
    /// Writing to standard output failed (a closed pipe ends quietly).
    Stdout(io::Error),
    /// The async runtime could not start.
    Runtime(io::Error),
    /// The journal could not be read or written.
    Journal {
        path: PathBuf,
        source: cardsync_job::StoreError,
    },
    /// The results files could not be written.
    Results(cardsync_job::SinkError),
    /// The shared journal failed.
    Shared(cardsync_job_postgres::PgError),
    /// CardSync answered with an error, or did not answer: what was being done, a hint, and
    /// the error.
    Remote {
        what: String,
        hint: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) => f.write_str(m),
            CliError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CliError::Input { path, message } => write!(f, "{}: {message}", path.display()),
            CliError::Stdout(e) => write!(f, "cannot write to standard output: {e}"),
            CliError::Runtime(e) => write!(f, "cannot start the async runtime: {e}"),
            CliError::Journal { path, source } => write!(f, "journal {}: {source}", path.display()),
            CliError::Results(e) => write!(f, "results: {e}"),
            CliError::Shared(e) => e.fmt(f),
            CliError::Remote { what, hint, source } => write!(f, "{what}: {source}{hint}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Io { source, .. } | CliError::Stdout(source) | CliError::Runtime(source) => {
                Some(source)
            }
            CliError::Journal { source, .. } => Some(source),
            CliError::Results(e) => Some(e),
            CliError::Shared(e) => Some(e),
            CliError::Remote { source, .. } => Some(&**source),
            CliError::Usage(_) | CliError::Input { .. } => None,
        }
    }
}

/// Writes to standard output (the reports) fail with [`CliError::Stdout`].
impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        CliError::Stdout(e)
    }
}

impl CliError {
    /// The exit code for this error, and whether to say anything (a reader that closed the
    /// pipe ends the command quietly, with 0).
    pub(crate) fn exit(&self) -> (Exit, bool) {
        match self {
            CliError::Stdout(e) if e.kind() == io::ErrorKind::BrokenPipe => (Exit::Ok, false),
            CliError::Remote { .. } => (Exit::Remote, true),
            CliError::Shared(e) => {
                use cardsync_job_postgres::PgError;
                match e {
                    // The database, not the command, failed.
                    PgError::Database(_)
                    | PgError::Pool(_)
                    | PgError::Tampered { .. }
                    | PgError::Corrupt(_)
                    | PgError::NewerSchema { .. } => (Exit::Database, true),
                    _ => (Exit::Usage, true),
                }
            }
            _ => (Exit::Usage, true),
        }
    }
}

/// Maps an I/O error on `path` to [`CliError::Io`].
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CliError + '_ {
    move |source| CliError::Io {
        path: path.to_owned(),
        source,
    }
}
