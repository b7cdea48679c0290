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

/// Opens `path` for appending, creating it readable and writable by its owner only (an
/// existing file is made so too); see [`cardsync_job::open_private`] for the checks.
pub(crate) fn open_private_append(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    cardsync_job::open_private(&mut options, path)
}

/// Makes a rename or a new file in `path`'s folder durable (a no-op where folders cannot be
/// synced).
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    let _ = path;
    Ok(())
}
