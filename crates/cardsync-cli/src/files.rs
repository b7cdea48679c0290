//! Files that hold card numbers: created with mode 0600 (the row files themselves are
//! `cardsync-job`'s, shared with `sync`).

use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::Serialize;

pub(crate) use cardsync_job::{Format, RowFile, create_private};

/// Writes `value` as pretty JSON to `path`, mode 0600.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let mut out = BufWriter::new(create_private(path)?);
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}
