//! Files that hold card numbers: created with mode 0600 (the row files themselves are
//! `cardsync-job`'s, shared with `sync`).

use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::error::CliError;

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

/// Whether `a` and `b` name one file (the same device and inode: links and other spellings of
/// a path included); false when either does not exist.
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        },
        _ => false,
    }
}

/// Before anything is sent: no file a command writes may be its `input` (whatever `--force`
/// says), and the files in `kept` (the results and changes files) must not exist already,
/// unless `force`, or `own` (they are this job's own, being resumed).
///
/// # Errors
///
/// [`CliError::Usage`], saying which file and what to do.
pub(crate) fn check_outputs(
    input: Option<&Path>,
    writes: &[&Path],
    kept: &[&Path],
    own: bool,
    force: bool,
) -> Result<(), CliError> {
    if let Some(input) = input {
        for path in writes.iter().chain(kept) {
            if same_file(input, path) {
                return Err(CliError::Usage(format!(
                    "{} would be written over the card file {}: give the results another name \
                     (nothing was sent)",
                    path.display(),
                    input.display()
                )));
            }
        }
    }
    if own || force {
        return Ok(());
    }
    for path in kept {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            return Err(CliError::Usage(format!(
                "{} is a symbolic link: results are never written through one (nothing was \
                 sent)",
                path.display()
            )));
        }
        return Err(CliError::Usage(format!(
            "{} exists: pass --force to write over it, or give another file (nothing was sent)",
            path.display()
        )));
    }
    Ok(())
}
