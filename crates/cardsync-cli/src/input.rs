//! Reading card files: CSV with a header, or JSON Lines, one row at a time.
//!
//! Rows are lent to a callback rather than collected, so memory does not grow with the file. A
//! row that cannot be read at all (bytes that are not UTF-8, a line that is not a JSON object)
//! is handed over as [`Row::Unreadable`] with its row number, never skipped silently.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use cardsync_core::Record;

use crate::CliError;

/// One data row of the input.
#[derive(Debug)]
pub(crate) enum Row<'a> {
    /// A row whose fields could be read (they may still be invalid).
    Record(Record<'a>),
    /// A row that could not be read.
    Unreadable {
        /// The id, if it could be made out (for reporting only).
        id: String,
        /// What the card field held, if anything could be made out (for masking only).
        card: String,
        /// A stable snake_case code.
        code: &'static str,
        /// What is wrong, for a person.
        message: String,
    },
}

/// The format of an input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// JSON Lines for `.jsonl` and `.ndjson`, CSV otherwise.
    pub(crate) fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson") => {
                Format::JsonLines
            }
            _ => Format::Csv,
        }
    }
}

/// How many rows [`for_each_block`] hands over at once.
const BLOCK: usize = 256;

/// Calls `each` with every data row of the file at `path`, in order, a block of rows at a
/// time. `-` reads CSV from standard input.
pub(crate) fn for_each_block(
    path: &Path,
    mut each: impl FnMut(&[Row<'_>]) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let io_err = |source: io::Error| CliError::Io {
        path: path.to_path_buf(),
        source,
    };
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(io_err)?)
    };
    let reader = BufReader::with_capacity(1 << 16, reader);
    match Format::of(path) {
        Format::Csv => read_csv(path, reader, &mut each),
        Format::JsonLines => read_jsonl(path, reader, &mut each),
    }
}

/// Column positions of a CSV header.
struct Columns {
    id: usize,
    card: usize,
    exp: usize,
    se_number: Option<usize>,
}

impl Columns {
    fn find(path: &Path, header: &csv::ByteRecord) -> Result<Columns, CliError> {
        let find = |name: &str| {
            header.iter().position(|h| {
                let h = h.strip_prefix("\u{feff}".as_bytes()).unwrap_or(h);
                h.eq_ignore_ascii_case(name.as_bytes())
            })
        };
        let need = |name: &'static str| {
            find(name).ok_or_else(|| CliError::Input {
                path: path.to_path_buf(),
                message: format!(
                    "the header has no `{name}` column (columns: id, card, exp, and se_number for \
                     American Express; any order, any case)"
                ),
            })
        };
        Ok(Columns {
            id: need("id")?,
            card: need("card")?,
            exp: need("exp")?,
            se_number: find("se_number"),
        })
    }
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

fn read_csv(
    path: &Path,
    reader: impl Read,
    each: &mut impl FnMut(&[Row<'_>]) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let csv_err = |path: &Path, e: csv::Error| {
        if e.is_io_error() {
            let csv::ErrorKind::Io(source) = e.into_kind() else {
                unreachable!("is_io_error said so")
            };
            CliError::Io {
                path: path.to_path_buf(),
                source,
            }
        } else {
            CliError::Input {
                path: path.to_path_buf(),
                message: format!("not a readable CSV file: {e}"),
            }
        }
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let header = rdr.byte_headers().map_err(|e| csv_err(path, e))?.clone();
    if header.is_empty() {
        return Err(CliError::Input {
            path: path.to_path_buf(),
            message: "the file is empty; it needs a header line such as id,card,exp".to_owned(),
        });
    }
    let cols = Columns::find(path, &header)?;
    let mut block: Vec<csv::ByteRecord> = (0..BLOCK).map(|_| csv::ByteRecord::new()).collect();
    loop {
        let mut n = 0;
        while n < BLOCK
            && rdr
                .read_byte_record(&mut block[n])
                .map_err(|e| csv_err(path, e))?
        {
            n += 1;
        }
        let rows: Vec<Row<'_>> = block[..n].iter().map(|rec| csv_row(&cols, rec)).collect();
        if !rows.is_empty() {
            each(&rows)?;
        }
        if n < BLOCK {
            return Ok(());
        }
    }
}

fn csv_row<'a>(cols: &Columns, rec: &'a csv::ByteRecord) -> Row<'a> {
    let field = |i: usize| rec.get(i).unwrap_or_default();
    let se = cols.se_number.map(field);
    match (
        text(field(cols.id)),
        text(field(cols.card)),
        text(field(cols.exp)),
        se.map(text),
    ) {
        (Some(id), Some(card), Some(exp), None | Some(Some(_))) => {
            let se = se.and_then(text);
            Row::Record(Record::new(id, card, exp).with_se_number(se))
        }
        _ => Row::Unreadable {
            id: String::from_utf8_lossy(field(cols.id)).into_owned(),
            card: String::from_utf8_lossy(field(cols.card)).into_owned(),
            code: "invalid_utf8",
            message: "the row holds bytes that are not UTF-8 text".to_owned(),
        },
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
    each: &mut impl FnMut(&[Row<'_>]) -> Result<(), CliError>,
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
        let unreadable = |code, message: &str| Row::Unreadable {
            id: String::new(),
            card: String::from_utf8_lossy(trimmed).into_owned(),
            code,
            message: message.to_owned(),
        };
        let object = match serde_json::from_slice::<serde_json::Value>(trimmed) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => {
                each(&[unreadable(
                    "malformed_row",
                    "the line is JSON but not an object",
                )])?;
                continue;
            }
            Err(_) => {
                each(&[unreadable("malformed_json", "the line is not valid JSON")])?;
                continue;
            }
        };
        let get = |name: &str| {
            object
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let fields = (
            json_text(get("id")),
            json_text(get("card")),
            json_text(get("exp")),
            json_text(get("se_number")),
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
                each(&[Row::Record(record)])?;
            }
            None => each(&[Row::Unreadable {
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
            }])?,
        }
    }
}
