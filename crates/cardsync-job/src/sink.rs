//! Where results go: the [`Sink`] trait, [`FileSink`] (the CSV or JSON Lines results file and
//! the changes file that `cardsync sync` writes) and [`MemorySink`] (for tests and examples).
//!
//! A sink is written in steps: rows are appended, then [`Sink::checkpoint`] makes them durable
//! and returns a [`Checkpoint`] that the job stores with the state it depends on. A resumed job
//! rewinds the sink to the stored checkpoint, so that rows written after it by a run that died
//! are dropped and written again once: every result is in the sink exactly once.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use cardsync_core::{UpdateStatus, redact_digit_runs};

use crate::model::{Checkpoint, ResultRow};

/// Errors of a sink.
#[derive(Debug)]
#[non_exhaustive]
pub enum SinkError {
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The sink does not hold what the checkpoint says it durably held: it was changed
    /// outside the job.
    Mismatch(String),
    /// The sink's own failure (an embedder's database).
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            SinkError::Mismatch(what) => f.write_str(what),
            SinkError::Other(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SinkError::Io { source, .. } => Some(source),
            SinkError::Other(e) => Some(&**e),
            SinkError::Mismatch(_) => None,
        }
    }
}

/// Where a job's results go.
pub trait Sink {
    /// Goes back to `checkpoint` (the default checkpoint: empty), dropping anything written
    /// after it. Called once, before the first row of a run.
    ///
    /// # Errors
    ///
    /// [`SinkError`].
    fn rewind(&mut self, checkpoint: &Checkpoint) -> Result<(), SinkError>;

    /// Appends rows (not yet durable).
    ///
    /// # Errors
    ///
    /// [`SinkError`].
    fn append(&mut self, rows: &[ResultRow]) -> Result<(), SinkError>;

    /// Makes every row appended so far durable, and says where the sink stands.
    ///
    /// # Errors
    ///
    /// [`SinkError`].
    fn checkpoint(&mut self) -> Result<Checkpoint, SinkError>;

    /// Puts the results in place (for files: renames the partial file to its name). Called
    /// once every result is durable, and again by a resumed run if the job died before it was
    /// recorded as done: it must be safe to repeat.
    ///
    /// # Errors
    ///
    /// [`SinkError`].
    fn finish(&mut self) -> Result<(), SinkError>;
}

/// The columns of a results file.
pub const RESULT_COLUMNS: &[&str] = &[
    "id",
    "status",
    "card",
    "exp",
    "se_number",
    "batch_id",
    "event_id",
];

/// The columns of the changes file: what a billing system acts on, with no full card numbers
/// (an id that holds one is masked, see [`RowFile::change`]), and what to do
/// ([`ResultRow::action`]).
pub const CHANGE_COLUMNS: &[&str] = &[
    "id",
    "status",
    "brand",
    "old_last4",
    "new_last4",
    "new_exp",
    "batch_id",
    "event_id",
    "action",
];

/// Creates `path` (or truncates it) readable and writable by its owner only; see
/// [`open_private`] for the checks.
///
/// # Errors
///
/// The I/O error.
pub fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    open_private(&mut options, path)
}

/// Opens `path` with `options` as a file that holds card numbers or secrets: never through a
/// symbolic link (the last part of the path), only a regular file owned by this process's
/// user, and with mode 0600 (new files are created so; an existing one is set so). A link,
/// a device, a FIFO or another user's file planted where the file goes is refused before
/// anything is written to it (a file to be truncated is checked before it is: links are
/// refused by the open itself).
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let dir = std::env::temp_dir().join(format!("cardsync-private-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("results.csv");
/// let mut options = std::fs::OpenOptions::new();
/// options.write(true).create(true).truncate(true);
/// let file = cardsync_job::open_private(&mut options, &path)?;
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt;
/// assert_eq!(file.metadata()?.permissions().mode() & 0o777, 0o600);
/// std::os::unix::fs::symlink(&path, dir.join("link"))?;
/// assert!(cardsync_job::open_private(&mut options, &dir.join("link")).is_err());
/// # }
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// The I/O error; `InvalidInput` for a file that is not a regular file of this user's.
pub fn open_private(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ELOOP) {
            return io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symbolic link: cardsync writes card numbers only to a file of its own",
                    path.display()
                ),
            );
        }
        e
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // This process's user: the owner of /proc/self (where there is one).
        if let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid())
            && meta.uid() != me
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} belongs to another user (uid {}): cardsync writes card numbers only to \
                     a file of its own",
                    path.display(),
                    meta.uid()
                ),
            ));
        }
    }
    restrict(&file)?;
    Ok(file)
}

/// Whether `path` may be written as a private file: absent, or a regular file of this
/// process's user (not a symbolic link, not a device).
fn check_private_path(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let refuse = |what: String| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {what}: cardsync writes card numbers only to a file of its own",
                path.display()
            ),
        ))
    };
    if meta.file_type().is_symlink() {
        return refuse("a symbolic link".into());
    }
    if !meta.is_file() {
        return refuse("not a regular file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid())
            && meta.uid() != me
        {
            return refuse(format!("another user's file (uid {})", meta.uid()));
        }
    }
    Ok(())
}

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

/// How a results file is written: JSON Lines for names ending in `.jsonl` and `.ndjson`, CSV
/// otherwise.
///
/// ```
/// use cardsync_job::Format;
/// assert_eq!(Format::of("out.ndjson".as_ref()), Format::Jsonl);
/// assert_eq!(Format::of("out.csv".as_ref()), Format::Csv);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// Comma-separated, with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// The format a file's name asks for.
    pub fn of(path: &Path) -> Format {
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
/// whatever a killed process wrote after it. Created with mode 0600.
#[derive(Debug)]
pub struct RowFile {
    format: Format,
    out: BufWriter<File>,
    header: &'static [&'static str],
}

impl RowFile {
    /// Opens `path` for appending at `len` bytes (0: a new file with its header).
    ///
    /// # Errors
    ///
    /// The I/O error, or `UnexpectedEof` when the file is shorter than `len`.
    pub fn open(
        path: &Path,
        format: Format,
        header: &'static [&'static str],
        len: u64,
    ) -> io::Result<RowFile> {
        let file = if len == 0 {
            create_private(path)?
        } else {
            let file = open_private(OpenOptions::new().write(true), path)?;
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
    ///
    /// # Errors
    ///
    /// The I/O error.
    pub fn row(&mut self, fields: &[Option<&str>]) -> io::Result<()> {
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

    /// Writes a result row in [`RESULT_COLUMNS`] order.
    ///
    /// # Errors
    ///
    /// The I/O error.
    pub fn result(&mut self, row: &ResultRow) -> io::Result<()> {
        self.row(&[
            Some(&row.id),
            row.status.as_ref().map(UpdateStatus::as_str),
            Some(row.card.expose()),
            row.exp.as_deref(),
            row.se_number.as_deref(),
            row.batch_id.as_deref(),
            row.event_id.as_deref(),
        ])
    }

    /// Writes a change row in [`CHANGE_COLUMNS`] order (for rows with a
    /// [`ResultRow::action`]; a `closed` or `contact` row names the card on file by its last
    /// four digits, with nothing new). No full card number goes in: the new card is its last
    /// four digits, and the id
    /// and an expiry that did not parse (the merchant's and CardSync's text) go through
    /// [`redact_digit_runs`], so that an id that is, or holds, a card number is masked
    /// (`4532 0151 1283 0366` is written `453201******0366`). Batch and event ids are
    /// CardSync's handles, written as they are.
    ///
    /// ```
    /// use cardsync_core::{UpdateStatus, redact_digit_runs};
    /// use cardsync_job::{Format, ResultRow, RowFile, CHANGE_COLUMNS};
    /// use cardsync_proto::ReturnedCard;
    ///
    /// let path = std::env::temp_dir().join(format!("cardsync-change-doc-{}.csv", std::process::id()));
    /// let mut file = RowFile::open(&path, Format::Csv, CHANGE_COLUMNS, 0)?;
    /// let mut row = ResultRow::new("4532-0151-1283-0366", Some(UpdateStatus::UpdatedCard), ReturnedCard::new("4457010000000009"));
    /// row.exp = Some("01/53".to_owned());
    /// file.change(&row)?;
    /// file.checkpoint()?;
    /// let text = std::fs::read_to_string(&path)?;
    /// assert_eq!(
    ///     text.lines().nth(1),
    ///     Some("453201******0366,updated_card,visa,,0009,01/53,,,replace the card number and expiry on file")
    /// );
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The I/O error.
    pub fn change(&mut self, row: &ResultRow) -> io::Result<()> {
        let masked = row.card.masked();
        let last4 = masked.as_str();
        let last4 = &last4[last4.len().saturating_sub(4)..];
        let exp = row.expiry().map(|e| e.to_string());
        let id = redact_digit_runs(&row.id);
        let raw_exp = row.exp.as_deref().map(redact_digit_runs);
        // A closed account or a customer to contact: the card named is the one on file, and
        // there is nothing new.
        let changed = row.is_change();
        let (old, new, new_exp) = if changed {
            (
                row.old_last4.as_deref(),
                Some(last4),
                exp.as_deref().or(raw_exp.as_deref()),
            )
        } else {
            (row.old_last4.as_deref().or(Some(last4)), None, None)
        };
        self.row(&[
            Some(&id),
            row.status.as_ref().map(UpdateStatus::as_str),
            Some(row.brand().as_str()),
            old,
            new,
            new_exp,
            row.batch_id.as_deref(),
            row.event_id.as_deref(),
            row.action(),
        ])
    }

    /// Makes everything written so far durable; returns the file's length.
    ///
    /// # Errors
    ///
    /// The I/O error.
    pub fn checkpoint(&mut self) -> io::Result<u64> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        self.out.stream_position()
    }
}

/// The results file and the changes file of `cardsync sync`.
///
/// Results are written to `OUT.partial` and renamed to `OUT` by [`Sink::finish`]; beside them,
/// `STEM.changes.csv` lists the rows a billing system acts on (`updated_card`,
/// `updated_expiry`, `closed`, `contact`), with what to do and without full numbers.
/// Both are created with mode 0600. The results file holds full card numbers, and the ids as
/// CardSync returned them (the merchant's own, to join the results back to their records); the
/// changes file masks an id that holds a card number (see [`RowFile::change`]).
///
/// ```
/// use cardsync_job::{FileSink, Sink, ResultRow, Checkpoint};
/// use cardsync_proto::ReturnedCard;
///
/// let dir = std::env::temp_dir().join(format!("cardsync-job-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let mut sink = FileSink::new(&dir.join("results.csv"));
/// sink.rewind(&Checkpoint::default())?;
/// sink.append(&[ResultRow::new("sub-1", None, ReturnedCard::new("4457010000000009"))])?;
/// let checkpoint = sink.checkpoint()?;
/// sink.finish()?;
/// sink.finish()?; // safe to repeat
/// let text = std::fs::read_to_string(dir.join("results.csv"))?;
/// assert_eq!(text.lines().count(), 2);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileSink {
    out: PathBuf,
    partial: PathBuf,
    changes_path: PathBuf,
    format: Format,
    at: Checkpoint,
    files: Option<(RowFile, RowFile)>,
}

impl FileSink {
    /// The sink for the results file `out`.
    pub fn new(out: &Path) -> FileSink {
        let mut partial = out.as_os_str().to_owned();
        partial.push(".partial");
        let stem = out
            .file_stem()
            .map_or_else(|| "results".into(), |s| s.to_string_lossy().into_owned());
        FileSink {
            out: out.to_owned(),
            partial: PathBuf::from(partial),
            changes_path: out.with_file_name(format!("{stem}.changes.csv")),
            format: Format::of(out),
            at: Checkpoint::default(),
            files: None,
        }
    }

    /// The results file, once finished.
    pub fn path(&self) -> &Path {
        &self.out
    }

    /// The results file while it is written.
    pub fn partial_path(&self) -> &Path {
        &self.partial
    }

    /// The changes file.
    pub fn changes_path(&self) -> &Path {
        &self.changes_path
    }

    /// Checks that the files this sink writes can be written safely, before a job starts: none
    /// of them (the results file, its partial file, the changes file) is a symbolic link, a
    /// device or another user's file. A job should not send anything whose results it could not
    /// then write.
    ///
    /// # Errors
    ///
    /// [`SinkError::Io`] naming the file (`InvalidInput`).
    pub fn check(&self) -> Result<(), SinkError> {
        for path in [&self.out, &self.partial, &self.changes_path] {
            check_private_path(path).map_err(Self::io(path))?;
        }
        Ok(())
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> SinkError + '_ {
        move |source| SinkError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn files(&mut self) -> Result<&mut (RowFile, RowFile), SinkError> {
        if self.files.is_none() {
            let (results, changes) = match self.at.positions() {
                [] => (0, 0),
                [r, c] => (*r, *c),
                other => {
                    return Err(SinkError::Mismatch(format!(
                        "the journal's checkpoint of the results files has {} positions, not 2",
                        other.len()
                    )));
                }
            };
            let r = RowFile::open(&self.partial, self.format, RESULT_COLUMNS, results)
                .map_err(Self::io(&self.partial))?;
            let c = RowFile::open(&self.changes_path, Format::Csv, CHANGE_COLUMNS, changes)
                .map_err(Self::io(&self.changes_path))?;
            self.files = Some((r, c));
        }
        Ok(self.files.as_mut().expect("opened above"))
    }
}

impl Sink for FileSink {
    fn rewind(&mut self, checkpoint: &Checkpoint) -> Result<(), SinkError> {
        // The files are opened (and cut back to the checkpoint) when first needed, so that a
        // job that only has to finish never touches a results file already renamed.
        self.files = None;
        self.at = checkpoint.clone();
        Ok(())
    }

    fn append(&mut self, rows: &[ResultRow]) -> Result<(), SinkError> {
        let (partial, changes_path) = (self.partial.clone(), self.changes_path.clone());
        let (results, changes) = self.files()?;
        for row in rows {
            results.result(row).map_err(Self::io(&partial))?;
        }
        for row in rows.iter().filter(|r| r.action().is_some()) {
            changes.change(row).map_err(Self::io(&changes_path))?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<Checkpoint, SinkError> {
        let (partial, changes_path) = (self.partial.clone(), self.changes_path.clone());
        let (results, changes) = self.files()?;
        let r = results.checkpoint().map_err(Self::io(&partial))?;
        let c = changes.checkpoint().map_err(Self::io(&changes_path))?;
        self.at = Checkpoint::new(vec![r, c]);
        Ok(self.at.clone())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        // The rename would replace a link planted at the results file's name: refused, said.
        check_private_path(&self.out).map_err(Self::io(&self.out))?;
        if !self.partial.exists() && self.out.exists() {
            // Renamed by an earlier call (or an earlier run that died before recording it).
            return Ok(());
        }
        // Cut back to the checkpoint, in case a run died after writing past it.
        self.checkpoint()?;
        self.files = None;
        std::fs::rename(&self.partial, &self.out).map_err(Self::io(&self.out))?;
        // The rename itself must survive a crash.
        #[cfg(unix)]
        if let Some(dir) = self.out.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(Self::io(dir))?;
        }
        Ok(())
    }
}

/// A sink in memory, for tests and examples. Clones share the rows; only rows made durable
/// by a checkpoint survive a [`Sink::rewind`], as in a file cut back after a crash.
///
/// ```
/// use cardsync_job::{MemorySink, ResultRow, Sink};
/// use cardsync_proto::ReturnedCard;
///
/// let mut sink = MemorySink::new();
/// sink.append(&[ResultRow::new("a", None, ReturnedCard::new("4457010000000009"))])?;
/// let cp = sink.checkpoint()?;
/// sink.append(&[ResultRow::new("b", None, ReturnedCard::new("4457010000000009"))])?;
/// sink.rewind(&cp)?; // "b" was never made durable
/// assert_eq!(sink.rows().len(), 1);
/// # Ok::<(), cardsync_job::SinkError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    inner: Arc<Mutex<(Vec<ResultRow>, u32)>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    fn lock(&self) -> MutexGuard<'_, (Vec<ResultRow>, u32)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The rows written (durable or not).
    pub fn rows(&self) -> Vec<ResultRow> {
        self.lock().0.clone()
    }

    /// How many times [`Sink::finish`] was called.
    pub fn finished(&self) -> u32 {
        self.lock().1
    }
}

impl Sink for MemorySink {
    fn rewind(&mut self, checkpoint: &Checkpoint) -> Result<(), SinkError> {
        let keep = checkpoint.positions().first().copied().unwrap_or(0) as usize;
        let mut m = self.lock();
        if m.0.len() < keep {
            return Err(SinkError::Mismatch(format!(
                "{} rows, fewer than the {keep} recorded",
                m.0.len()
            )));
        }
        m.0.truncate(keep);
        Ok(())
    }

    fn append(&mut self, rows: &[ResultRow]) -> Result<(), SinkError> {
        self.lock().0.extend_from_slice(rows);
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<Checkpoint, SinkError> {
        Ok(Checkpoint::new(vec![self.lock().0.len() as u64]))
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.lock().1 += 1;
        Ok(())
    }
}
