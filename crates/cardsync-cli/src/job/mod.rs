//! The command's job wing: `sync` on one machine (`local`, the SQLite journal) and on the shared
//! journal (`shared`: `sync --journal`, `job`, `worker`, `listen --journal`), `listen --out`
//! (`listen`), the options they share (`args`), and what they lean on: who holds a journal
//! (`lease`) and the duplicate check with flat memory (`dedupe`). The rules of the job itself
//! are `cardsync-job`'s; nothing here decides what an answer means.

pub(crate) mod args;
pub(crate) mod dedupe;
pub(crate) mod lease;
pub(crate) mod listen;
pub(crate) mod local;
pub(crate) mod shared;
pub(crate) mod summary;

use std::process::ExitCode;

use crate::cli::Global;
use crate::error::CliError;

pub(crate) use args::{Args, Wait};

/// `cardsync sync`: on the shared journal with `--journal`, else on one machine.
pub(crate) fn sync(args: Args, global: &Global) -> Result<ExitCode, CliError> {
    global.remote.need_api_key()?;
    if args.file.as_os_str() == "-" {
        return Err(CliError::Usage(
            "sync needs a file, not standard input, so that it can resume".to_owned(),
        ));
    }
    if args.journal.is_some() {
        return shared::sync(args, global);
    }
    local::run(args, global)
}
