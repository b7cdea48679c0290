//! Reading card files: CSV with a header, or JSON Lines, a block of rows at a time.
//!
//! Blocks are lent to a callback and their buffers reused, so memory does not grow with the
//! file. A row that cannot be read at all (bytes that are not UTF-8, a line that is not a JSON
//! object) is handed over as an [`Unreadable`] row in its place, never skipped silently.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use cardsync_core::{AcceptedRow, CheckedRecord, Checker, Record};
use cardsync_job::Format;

use crate::csvread::CsvReader;
use crate::error::CliError;

/// One data row of the input.
#[derive(Debug)]
enum Row<'a> {
    /// A row whose fields could be read (they may still be invalid).
    Record(Record<'a>),
    /// A row that could not be read.
    Unreadable(Unreadable),
}

/// A row that could not be read.
#[derive(Debug)]
pub(crate) struct Unreadable {
    /// The id, if it could be made out (for reporting only).
    pub(crate) id: String,
    /// What the card field held, if anything could be made out (for masking only).
    pub(crate) card: String,
    /// A stable snake_case code.
    pub(crate) code: &'static str,
    /// What is wrong, for a person.
    pub(crate) message: String,
}

/// How many rows [`for_each_block`] hands over at once.
const BLOCK: usize = 256;

/// Prepares the output line of a row that is good so far (see [`CheckedRecord::accepted`]).
pub(crate) type Render<'a> = &'a (dyn Fn(&Record<'_>, &AcceptedRow, &mut Vec<u8>) + Sync);

/// What [`for_each_block`] works out for every row before handing it over.
pub(crate) struct Ahead<'a> {
    /// The planner's checker.
    pub(crate) checker: &'a Checker,
    /// The planner's number for the first row of the file.
    pub(crate) first_row: u64,
    /// Renders the line of each row that is good so far, when lines are printed.
    pub(crate) render: Option<Render<'a>>,
}

/// Where one row's fields are in its block's text (kept small: a block has many).
enum Span {
    Record {
        id: Field,
        card: Field,
        exp: Field,
        se_number: Option<Field>,
    },
    Unreadable(Box<Unreadable>),
}

/// A field's start and end in its block's text.
#[derive(Clone, Copy)]
struct Field(u32, u32);

impl Field {
    fn of(self, text: &str) -> &str {
        &text[self.0 as usize..self.1 as usize]
    }
}

/// One block of rows and what was worked out for it. The fields are copied into one string,
/// so that the block can be handed to another thread without the reader's buffers, and
/// without being checked for UTF-8 again.
#[derive(Default)]
pub(crate) struct Prepared {
    fields: String,
    spans: Vec<Span>,
    /// What the checker found of each readable row, in order.
    checked: Vec<CheckedRecord>,
    /// The rendered lines, back to back; row `i`'s ends at `ends[i]` (empty if it has none).
    text: Vec<u8>,
    ends: Vec<usize>,
}

/// A block's rows, borrowed from a [`Prepared`].
pub(crate) struct Block<'a> {
    /// How many rows the block has.
    pub(crate) len: usize,
    /// The readable rows, in order.
    pub(crate) records: Vec<Record<'a>>,
    /// The unreadable rows, with their positions in the block, in order.
    pub(crate) unreadable: Vec<(usize, &'a Unreadable)>,
    /// What the checker found of each readable row, in order (for
    /// [`Planner::admit_records`](cardsync_core::Planner::admit_records)).
    pub(crate) checked: &'a mut Vec<CheckedRecord>,
    /// The lines rendered ahead.
    pub(crate) lines: Lines<'a>,
}

/// The lines rendered ahead for a block's rows.
pub(crate) struct Lines<'a> {
    text: &'a [u8],
    ends: &'a [usize],
}

impl Lines<'_> {
    /// The line rendered for row `i` of the block, or nothing.
    pub(crate) fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }
}

impl Prepared {
    /// Works `rows` out, reusing the buffers.
    fn fill<'r>(
        &mut self,
        ahead: &Ahead<'_>,
        rows: impl IntoIterator<Item = Row<'r>>,
        first_row: u64,
    ) {
        self.clear();
        for (row, r) in (first_row..).zip(rows) {
            self.push(ahead, r, row);
        }
    }

    /// Empties the block, keeping its buffers.
    fn clear(&mut self) {
        self.fields.clear();
        self.spans.clear();
        self.checked.clear();
        self.text.clear();
        self.ends.clear();
    }

    /// Works out one more row, the planner's row number `row`.
    fn push(&mut self, ahead: &Ahead<'_>, r: Row<'_>, row: u64) {
        let span = match r {
            Row::Record(record) => {
                let checked = ahead.checker.check(&record);
                if let (Some(render), Some(a)) = (ahead.render, checked.accepted(row)) {
                    render(&record, &a, &mut self.text);
                }
                self.checked.push(checked);
                // A block's text is far below 4 GB.
                let mut keep = |s: &str| {
                    let start = self.fields.len() as u32;
                    self.fields.push_str(s);
                    Field(start, self.fields.len() as u32)
                };
                Span::Record {
                    id: keep(record.id),
                    card: keep(record.card),
                    exp: keep(record.exp),
                    se_number: record.se_number.map(keep),
                }
            }
            Row::Unreadable(row) => Span::Unreadable(Box::new(row)),
        };
        self.spans.push(span);
        self.ends.push(self.text.len());
    }

    /// The rows, and what was worked out for them.
    pub(crate) fn block(&mut self) -> Block<'_> {
        let fields = self.fields.as_str();
        let mut records = Vec::with_capacity(self.checked.len());
        let mut unreadable = Vec::new();
        for (i, span) in self.spans.iter().enumerate() {
            match span {
                Span::Record {
                    id,
                    card,
                    exp,
                    se_number,
                } => records.push(
                    Record::new(id.of(fields), card.of(fields), exp.of(fields))
                        .with_se_number(se_number.map(|f| f.of(fields))),
                ),
                Span::Unreadable(row) => unreadable.push((i, &**row)),
            }
        }
        Block {
            len: self.spans.len(),
            records,
            unreadable,
            checked: &mut self.checked,
            lines: Lines {
                text: &self.text,
                ends: &self.ends,
            },
        }
    }
}

/// Calls `each` with every data row of the file at `path`, in order, a block of rows at a
/// time, together with what was worked out for it ([`Ahead`]). `-` reads CSV from standard
/// input.
///
/// CSV is read, checked and rendered on a second thread while `each` handles the previous
/// block, so that this work overlaps with the planner's sequential work and the writing.
pub(crate) fn for_each_block(
    path: &Path,
    ahead: &Ahead<'_>,
    mut each: impl FnMut(&mut Prepared) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let io_err = |source: io::Error| CliError::Io {
        path: path.to_path_buf(),
        source,
    };
    let reader: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).map_err(io_err)?)
    };
    // One format enum for every file (cards in, results out): JSON Lines for `.jsonl` and
    // `.ndjson`, CSV otherwise.
    match Format::of(path) {
        Format::Jsonl => {
            let reader = BufReader::with_capacity(1 << 16, reader);
            let mut next_row = ahead.first_row;
            let mut prepared = Prepared::default();
            read_jsonl(path, reader, &mut |row| {
                prepared.fill(ahead, [row], next_row);
                next_row += 1;
                each(&mut prepared)
            })
        }
        // The CSV reader buffers on its own.
        _ => read_csv(path, reader, ahead, &mut each),
    }
}

/// About how many rows the file at `path` holds, from its size and the lines of its first
/// 64 kB; `None` for standard input or an unreadable file.
pub(crate) fn estimate_rows(path: &Path) -> Option<usize> {
    if path == Path::new("-") {
        return None;
    }
    let mut file = File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let mut head = vec![0; 1 << 16];
    let mut len = 0;
    while len < head.len() {
        match file.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    let lines = head[..len].iter().filter(|&&b| b == b'\n').count().max(1);
    usize::try_from(size.saturating_mul(lines as u64) / len.max(1) as u64).ok()
}

/// The names of the input's columns (CSV header names, JSON Lines keys): `id`, `card`, `exp`
/// and `se_number` unless `--columns` says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ColumnNames {
    pub(crate) id: String,
    pub(crate) card: String,
    pub(crate) exp: String,
    pub(crate) se_number: String,
}

impl Default for ColumnNames {
    fn default() -> ColumnNames {
        ColumnNames {
            id: "id".to_owned(),
            card: "card".to_owned(),
            exp: "exp".to_owned(),
            se_number: "se_number".to_owned(),
        }
    }
}

impl ColumnNames {
    /// `--columns id=CustomerRef,card=Number,exp=Expiry[,se_number=SE]`: the columns named
    /// are read under those names, the others under their own.
    pub(crate) fn parse(value: &str) -> Result<ColumnNames, String> {
        let mut names = ColumnNames::default();
        for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
            let (field, name) = pair
                .split_once('=')
                .map(|(f, n)| (f.trim(), n.trim()))
                .filter(|(_, n)| !n.is_empty())
                .ok_or_else(|| format!("{pair:?}: expected FIELD=COLUMN, such as card=Number"))?;
            let slot = match field.to_ascii_lowercase().as_str() {
                "id" => &mut names.id,
                "card" => &mut names.card,
                "exp" => &mut names.exp,
                "se_number" => &mut names.se_number,
                other => {
                    return Err(format!(
                        "{other:?} is not a field: the fields are id, card, exp and se_number"
                    ));
                }
            };
            *slot = name.to_owned();
        }
        let all = [&names.id, &names.card, &names.exp, &names.se_number];
        for (i, a) in all.iter().enumerate() {
            if all[i + 1..].iter().any(|b| a.eq_ignore_ascii_case(b)) {
                return Err(format!("the column {a:?} is named for two fields"));
            }
        }
        Ok(names)
    }

    /// How the names differ from the defaults, as `--columns` would give them ("" when they do
    /// not): part of what a journal's job is planned from.
    pub(crate) fn describe(&self) -> String {
        let default = ColumnNames::default();
        [
            ("id", &self.id, &default.id),
            ("card", &self.card, &default.card),
            ("exp", &self.exp, &default.exp),
            ("se_number", &self.se_number, &default.se_number),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(f, a, _)| format!("{f}={a}"))
        .collect::<Vec<_>>()
        .join(",")
    }
}

static COLUMN_NAMES: std::sync::OnceLock<ColumnNames> = std::sync::OnceLock::new();

/// Sets the column names for this process (from `--columns`, once, at the start).
pub(crate) fn set_column_names(names: ColumnNames) {
    let _ = COLUMN_NAMES.set(names);
}

/// The column names in use.
pub(crate) fn column_names() -> &'static ColumnNames {
    COLUMN_NAMES.get_or_init(ColumnNames::default)
}

/// Column positions of a CSV header.
struct Columns {
    id: usize,
    card: usize,
    exp: usize,
    se_number: Option<usize>,
}

impl Columns {
    /// The columns of `header` (the first record's fields; `raw` its bytes). A missing column
    /// is explained: what the file looks like instead (another delimiter, UTF-16, gzip, JSON,
    /// not text), or the columns found. A column given twice is refused.
    fn find<'h>(
        path: &Path,
        raw: &[u8],
        header: impl Iterator<Item = &'h [u8]> + Clone,
    ) -> Result<Columns, CliError> {
        let input_error = |message: String| CliError::Input {
            path: path.to_path_buf(),
            message,
        };
        let is = |h: &[u8], name: &str| {
            let h = h.trim_ascii();
            let h = h.strip_prefix("\u{feff}".as_bytes()).unwrap_or(h);
            h.eq_ignore_ascii_case(name.as_bytes())
        };
        let names = column_names();
        let find = |name: &str| -> Result<Option<usize>, CliError> {
            let mut at = header
                .clone()
                .enumerate()
                .filter(|(_, h)| is(h, name))
                .map(|(i, _)| i);
            match (at.next(), at.next()) {
                (Some(a), Some(b)) => Err(input_error(format!(
                    "the header has two `{name}` columns (the {} and the {}): keep one",
                    ordinal(a + 1),
                    ordinal(b + 1)
                ))),
                (first, _) => Ok(first),
            }
        };
        let need = |name: &str| -> Result<usize, CliError> {
            find(name)?.ok_or_else(|| {
                input_error(format!(
                    "the header has no `{name}` column: {}",
                    missing_column(raw, header.clone())
                ))
            })
        };
        Ok(Columns {
            id: need(&names.id)?,
            card: need(&names.card)?,
            exp: need(&names.exp)?,
            se_number: find(&names.se_number)?,
        })
    }
}

/// "1st", "2nd", "3rd", "4th"…
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Why a header lacks a needed column, as far as its bytes tell: the file is gzip, UTF-16,
/// JSON or not text, or uses another delimiter; else the columns it has.
fn missing_column<'h>(raw: &[u8], header: impl Iterator<Item = &'h [u8]>) -> String {
    const NEEDED: &str = "the columns are id, card, exp, and se_number for American Express, in \
                          any order and any case, separated by commas; other names are read \
                          with --columns id=CustomerRef,card=Number,exp=Expiry";
    if raw.starts_with(&[0x1f, 0x8b]) {
        return format!("the file is gzip-compressed; decompress it first (gunzip). {NEEDED}");
    }
    let head = &raw[..raw.len().min(256)];
    // UTF-16: a byte order mark, or ASCII text with a zero byte beside each character.
    let zeros_at = |parity: usize| {
        head.iter()
            .skip(parity)
            .step_by(2)
            .filter(|&&b| b == 0)
            .count()
    };
    let half = head.len() / 2;
    let utf16 = half >= 4 && (zeros_at(0) * 10 >= half * 8 || zeros_at(1) * 10 >= half * 8);
    if raw.starts_with(&[0xff, 0xfe]) || raw.starts_with(&[0xfe, 0xff]) || utf16 {
        return format!(
            "the file is UTF-16 text (what spreadsheets save as \"Unicode text\"); save it as \
             \"CSV UTF-8\" instead. {NEEDED}"
        );
    }
    let Ok(text) = std::str::from_utf8(head).or_else(|e| {
        // A cut in the middle of a character at the end of the first 256 bytes is fine.
        std::str::from_utf8(&head[..e.valid_up_to()]).map_err(|_| e)
    }) else {
        return format!("the file is not text (not UTF-8). {NEEDED}");
    };
    if text.len() < head.len().saturating_sub(3)
        || text
            .chars()
            .any(|c| c.is_control() && c != '\t' && c != '\r')
    {
        return format!("the file is not text. {NEEDED}");
    }
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return format!(
            "the file looks like JSON; JSON Lines (one object per line, such as \
             {{\"id\":\"c1\",\"card\":\"4111…\",\"exp\":\"12/30\"}}) is read from a file \
             named .jsonl or .ndjson. {NEEDED}"
        );
    }
    let fields: Vec<String> = header
        .map(|h| String::from_utf8_lossy(h.trim_ascii()).into_owned())
        .collect();
    if fields.len() == 1 {
        for (delimiter, name) in [(';', "semicolons (;)"), ('\t', "tabs"), ('|', "bars (|)")] {
            if fields[0].contains(delimiter) {
                return format!(
                    "its columns are separated by {name}, not commas; save the file as CSV with \
                     commas (in a spreadsheet: \"CSV (comma delimited)\"). {NEEDED}"
                );
            }
        }
    }
    let found: Vec<String> = fields
        .iter()
        .take(12)
        .map(|f| {
            format!(
                "{:?}",
                crate::show::message(&cardsync_core::redact_digit_runs(f))
            )
        })
        .collect();
    format!(
        "the columns found are {}{}; {NEEDED}",
        found.join(", "),
        if fields.len() > 12 { ", …" } else { "" }
    )
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// How CSV files are read: in buffers of this size.
const CSV_BUFFER: usize = 1 << 16;

fn read_csv(
    path: &Path,
    reader: impl Read + Send,
    ahead: &Ahead<'_>,
    each: &mut impl FnMut(&mut Prepared) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let io_err = |source: io::Error| CliError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut csv = CsvReader::new(reader, CSV_BUFFER);
    if !csv.read().map_err(io_err)? {
        return Err(CliError::Input {
            path: path.to_path_buf(),
            message: "the file is empty; it needs a header line such as id,card,exp".to_owned(),
        });
    }
    let header = csv.bytes();
    let cols = Columns::find(
        path,
        header,
        (0..)
            .map_while(|i| csv.field(i))
            .map(|(a, b)| &header[a..b]),
    )?;
    let cols = &cols;
    std::thread::scope(|scope| {
        // Blocks go round: the reader fills them while this thread handles others, and each
        // comes back, buffers and all, to be filled again. The reader may run some way ahead
        // (about 16,000 rows), which covers this thread's pauses, such as making room for the
        // duplicate check at the start.
        const BLOCKS: usize = 64;
        let (full_tx, full_rx) =
            std::sync::mpsc::sync_channel::<Result<Prepared, CliError>>(BLOCKS);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Prepared>();
        scope.spawn(move || {
            let mut next_row = ahead.first_row;
            let mut made = 0;
            loop {
                let mut prepared = if made < BLOCKS {
                    empty_rx.try_recv().unwrap_or_else(|_| {
                        made += 1;
                        Prepared::default()
                    })
                } else {
                    match empty_rx.recv() {
                        Ok(block) => block,
                        Err(_) => return, // The consumer stopped.
                    }
                };
                prepared.clear();
                let mut len = 0;
                let mut failed = None;
                while len < BLOCK {
                    let plain = csv.read_plain(BLOCK - len, |line, fields| {
                        let field = |i: usize| fields.get(i).copied();
                        // Fields cut at commas of UTF-8 text are UTF-8 each: a record, always.
                        let row = match csv_record(cols, line, field) {
                            Some(record) => Row::Record(record),
                            None => csv_row(cols, line.as_bytes(), field),
                        };
                        prepared.push(ahead, row, next_row);
                        next_row += 1;
                    });
                    len += plain;
                    if plain > 0 {
                        continue;
                    }
                    match csv.read() {
                        Ok(true) => {
                            let row = csv_row(cols, csv.bytes(), |i| csv.field(i));
                            prepared.push(ahead, row, next_row);
                            next_row += 1;
                            len += 1;
                        }
                        Ok(false) => break,
                        Err(e) => {
                            failed = Some(io_err(e));
                            break;
                        }
                    }
                }
                let last = len < BLOCK || failed.is_some();
                if len > 0 && full_tx.send(Ok(prepared)).is_err() {
                    return; // The consumer stopped.
                }
                if let Some(e) = failed {
                    let _ = full_tx.send(Err(e));
                }
                if last {
                    return;
                }
            }
        });
        for prepared in full_rx {
            let mut prepared = prepared?;
            each(&mut prepared)?;
            let _ = empty_tx.send(prepared);
        }
        Ok(())
    })
}

/// The record whose fields are at `field` in `text`, trimmed; `None` if a field it reads does
/// not start and end at character boundaries (the fields of a quoted record lie back to back,
/// and one may end inside a character that the next completes): such a field is not UTF-8 on
/// its own.
fn csv_record<'a>(
    cols: &Columns,
    text: &'a str,
    field: impl Fn(usize) -> Option<(usize, usize)>,
) -> Option<Record<'a>> {
    let get = |i: usize| match field(i) {
        Some((a, b)) => text.get(a..b).map(str::trim_ascii),
        None => Some(""),
    };
    let se_number = match cols.se_number {
        Some(i) => Some(get(i)?),
        None => None,
    };
    Some(Record::new(get(cols.id)?, get(cols.card)?, get(cols.exp)?).with_se_number(se_number))
}

/// The row of a CSV record: its `bytes`, and where its fields are in them (`field`).
fn csv_row<'a>(
    cols: &Columns,
    bytes: &'a [u8],
    field: impl Fn(usize) -> Option<(usize, usize)>,
) -> Row<'a> {
    // One check of the whole record first; then each field read on its own.
    if let Some(record) = std::str::from_utf8(bytes)
        .ok()
        .and_then(|all| csv_record(cols, all, &field))
    {
        return Row::Record(record);
    }
    let raw = |i: usize| field(i).map_or(&b""[..], |(a, b)| bytes[a..b].trim_ascii());
    let se = cols.se_number.map(raw);
    match (
        text(raw(cols.id)),
        text(raw(cols.card)),
        text(raw(cols.exp)),
        se.map(text),
    ) {
        (Some(id), Some(card), Some(exp), None | Some(Some(_))) => {
            let se = se.and_then(text);
            Row::Record(Record::new(id, card, exp).with_se_number(se))
        }
        _ => Row::Unreadable(Unreadable {
            id: String::from_utf8_lossy(raw(cols.id)).into_owned(),
            card: String::from_utf8_lossy(raw(cols.card)).into_owned(),
            code: "invalid_utf8",
            message: "the row holds bytes that are not UTF-8 text".to_owned(),
        }),
    }
}

/// The text of a JSON Lines field: strings as they are, numbers as written, null as missing.
fn json_text(v: Option<&serde_json::Value>) -> Result<Option<Cow<'_, str>>, ()> {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(Cow::Borrowed(s))),
        Some(Value::Number(n)) => Ok(Some(Cow::Owned(n.to_string()))),
        Some(_) => Err(()),
    }
}

fn read_jsonl(
    path: &Path,
    mut reader: impl BufRead,
    each: &mut impl FnMut(Row<'_>) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|source| CliError::Io {
                path: PathBuf::from(path),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let unreadable = |code, message: &str| {
            Row::Unreadable(Unreadable {
                id: String::new(),
                card: String::from_utf8_lossy(trimmed).into_owned(),
                code,
                message: message.to_owned(),
            })
        };
        let object = match serde_json::from_slice::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => {
                each(unreadable(
                    "malformed_row",
                    "the line is JSON but not an object",
                ))?;
                continue;
            }
            Err(_) => {
                each(unreadable("malformed_json", "the line is not valid JSON"))?;
                continue;
            }
        };
        let get = |name: &str| {
            object
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let names = column_names();
        let fields = (
            json_text(get(&names.id)),
            json_text(get(&names.card)),
            json_text(get(&names.exp)),
            json_text(get(&names.se_number)),
        );
        let row = match fields {
            (Ok(id), Ok(card), Ok(exp), Ok(se)) => Some((id, card, exp, se)),
            _ => None,
        };
        match &row {
            Some((id, card, exp, se)) => {
                let record = Record::new(
                    id.as_deref().unwrap_or(""),
                    card.as_deref().unwrap_or(""),
                    exp.as_deref().unwrap_or(""),
                )
                .with_se_number(se.as_deref());
                each(Row::Record(record))?;
            }
            None => each(Row::Unreadable(Unreadable {
                id: json_text(get("id"))
                    .ok()
                    .flatten()
                    .map(Cow::into_owned)
                    .unwrap_or_default(),
                card: json_text(get("card"))
                    .ok()
                    .flatten()
                    .map(Cow::into_owned)
                    .unwrap_or_default(),
                code: "malformed_row",
                message: "id, card, exp and se_number must be strings or numbers".to_owned(),
            }))?,
        }
    }
}
