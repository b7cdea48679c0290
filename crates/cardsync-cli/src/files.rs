//! Files that hold card numbers: created with mode 0600, written in steps that can be resumed.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Serialize;

/// Creates `path` (or truncates it) readable and writable by its owner only.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    private(&mut options);
    let file = options.open(path)?;
    restrict(&file)?;
    Ok(file)
}

#[cfg(unix)]
fn private(options: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600);
}

#[cfg(not(unix))]
fn private(_: &mut OpenOptions) {}

/// A file that existed before keeps its mode on open; make sure it is 0600.
#[cfg(unix)]
fn restrict(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_: &File) -> io::Result<()> {
    Ok(())
}

/// How a results file is written, from its extension: JSON Lines for `.jsonl` and `.ndjson`,
/// CSV otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Jsonl,
}

impl Format {
    pub(crate) fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson") => {
                Format::Jsonl
            }
            _ => Format::Csv,
        }
    }
}

/// A file of rows written in steps: each [`checkpoint`](RowFile::checkpoint) makes what was
/// written durable and returns the length to record; reopening at a recorded length drops
/// whatever a killed process wrote after it.
pub(crate) struct RowFile {
    format: Format,
    out: BufWriter<File>,
    header: &'static [&'static str],
}

impl RowFile {
    /// Opens `path` for appending at `len` bytes (0: a new file with its header).
    pub(crate) fn open(
        path: &Path,
        format: Format,
        header: &'static [&'static str],
        len: u64,
    ) -> io::Result<RowFile> {
        let file = if len == 0 {
            create_private(path)?
        } else {
            let file = OpenOptions::new().write(true).open(path)?;
            restrict(&file)?;
            let actual = file.metadata()?.len();
            if actual < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} is shorter ({actual} bytes) than the journal recorded ({len} bytes); \
                         it was changed outside cardsync",
                        path.display()
                    ),
                ));
            }
            file.set_len(len)?;
            file
        };
        let mut rows = RowFile {
            format,
            out: BufWriter::with_capacity(1 << 16, file),
            header,
        };
        rows.out.seek(SeekFrom::Start(len))?;
        if len == 0 && format == Format::Csv {
            rows.write_csv_line(header.iter().map(|h| Some(*h)))?;
        }
        Ok(rows)
    }

    fn write_csv_line<'a>(
        &mut self,
        fields: impl Iterator<Item = Option<&'a str>>,
    ) -> io::Result<()> {
        for (i, field) in fields.enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            let field = field.unwrap_or("");
            if field
                .bytes()
                .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
            {
                self.out.write_all(b"\"")?;
                self.out.write_all(field.replace('"', "\"\"").as_bytes())?;
                self.out.write_all(b"\"")?;
            } else {
                self.out.write_all(field.as_bytes())?;
            }
        }
        self.out.write_all(b"\n")
    }

    /// Writes one row; `fields` are in header order.
    pub(crate) fn row(&mut self, fields: &[Option<&str>]) -> io::Result<()> {
        debug_assert_eq!(fields.len(), self.header.len());
        match self.format {
            Format::Csv => self.write_csv_line(fields.iter().copied()),
            Format::Jsonl => {
                // In header order, with null for a missing value.
                for (i, (key, value)) in self.header.iter().zip(fields).enumerate() {
                    self.out.write_all(if i == 0 { b"{\"" } else { b",\"" })?;
                    self.out.write_all(key.as_bytes())?;
                    self.out.write_all(b"\":")?;
                    serde_json::to_writer(&mut self.out, value)?;
                }
                self.out.write_all(b"}\n")
            }
        }
    }

    /// Makes everything written so far durable; returns the file's length.
    pub(crate) fn checkpoint(&mut self) -> io::Result<u64> {
        self.out.flush()?;
        let file = self.out.get_ref();
        file.sync_data()?;
        self.out.stream_position()
    }
}

/// Writes `value` as pretty JSON to `path`, mode 0600.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let mut out = BufWriter::new(create_private(path)?);
    serde_json::to_writer_pretty(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}
