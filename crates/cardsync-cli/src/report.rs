//! What `validate` and `plan` print: a readable table, or one JSON object per line.
//!
//! Card numbers reach this module only masked ([`PanFragment`]); ids go through
//! [`crate::show`] (anything that looks like a card number masked, control characters escaped
//! on the terminal), on the terminal, in JSON output and in the rejects file.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cardsync_core::{
    AcceptedRow, Brand, PanFragment, PlannedRequest, RejectedRow, RouteKind, RowWarning,
    RowWarnings,
};
use cardsync_proto::paths;
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::error::CliError;

/// A row that could not be used, with every reason.
#[derive(Debug)]
pub(crate) struct Problem<'a> {
    pub(crate) row: u64,
    pub(crate) id: &'a str,
    pub(crate) card: PanFragment,
    pub(crate) brand: Option<Brand>,
    /// (code, message) pairs.
    pub(crate) reasons: Vec<(&'static str, String)>,
    pub(crate) warnings: RowWarnings,
}

impl<'a> From<&'a RejectedRow> for Problem<'a> {
    fn from(r: &'a RejectedRow) -> Self {
        Problem {
            row: r.row,
            id: &r.id,
            card: r.card,
            brand: r.brand,
            reasons: r
                .reasons
                .iter()
                .map(|reason| (reason.code(), reason.to_string()))
                .collect(),
            warnings: r.warnings,
        }
    }
}

/// Counts for the closing summary.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    pub(crate) rows: u64,
    pub(crate) valid: u64,
    pub(crate) invalid: u64,
    pub(crate) batch: u64,
    pub(crate) subscription: u64,
    /// Valid rows per brand, in the order of [`Brand::ALL`]; shown as a map by name.
    #[serde(serialize_with = "brand_map")]
    pub(crate) brands: [u64; Brand::ALL.len()],
    pub(crate) errors: BTreeMap<&'static str, u64>,
    /// Rows (valid or not) per warning code.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) warnings: BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) requests: Option<RequestCounts>,
}

/// Counts in the order of [`Brand::ALL`], by name, without the zeros.
fn named(brands: &[u64; Brand::ALL.len()]) -> BTreeMap<&'static str, u64> {
    Brand::ALL
        .iter()
        .zip(brands)
        .filter(|(_, n)| **n > 0)
        .map(|(b, n)| (b.as_str(), *n))
        .collect()
}

fn brand_map<S: serde::Serializer>(
    brands: &[u64; Brand::ALL.len()],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(named(brands))
}

/// Request counts, for `plan`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct RequestCounts {
    pub(crate) batch: u64,
    pub(crate) subscription: u64,
}

impl Summary {
    fn count_warnings(&mut self, warnings: RowWarnings) {
        for w in warnings.iter() {
            *self.warnings.entry(w.code()).or_default() += 1;
        }
    }

    fn count_valid(&mut self, brand: Brand, route: RouteKind, warnings: RowWarnings) {
        self.count_warnings(warnings);
        self.rows += 1;
        self.valid += 1;
        match route {
            RouteKind::Subscription => self.subscription += 1,
            _ => self.batch += 1,
        }
        if let Some(i) = Brand::ALL.iter().position(|b| *b == brand) {
            self.brands[i] += 1;
        }
    }

    /// Valid rows per brand name, for the brands that have any.
    pub(crate) fn brand_counts(&self) -> BTreeMap<&'static str, u64> {
        named(&self.brands)
    }

    fn count_invalid(&mut self, problem: &Problem<'_>) {
        self.count_warnings(problem.warnings);
        self.rows += 1;
        self.invalid += 1;
        for (code, _) in &problem.reasons {
            *self.errors.entry(code).or_default() += 1;
        }
    }
}

#[derive(Serialize)]
struct InvalidJson<'a> {
    row: u64,
    id: &'a str,
    ok: bool,
    errors: Vec<&'static str>,
    messages: Vec<&'a str>,
    card: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    brand: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<&'static str>,
}

#[derive(Serialize)]
struct RequestJson<'a> {
    request: u64,
    method: &'static str,
    path: &'static str,
    route: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    se_number: Option<&'a str>,
    cards: usize,
    first_row: u64,
    last_row: u64,
    brands: BTreeMap<&'static str, usize>,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    summary: &'a Summary,
}

/// Writes the line `validate` prints for a valid row. A free function, so that the line can
/// be prepared on the thread that checks rows (see [`Reporter::valid`]).
///
/// The JSON line is written by hand: it is the one line printed for nearly every row of a
/// large file, and its fields are known. Only the id can need escaping. The id is masked when
/// the row has the `id_card_number` warning (the checker ran the rule on it already).
pub(crate) fn render_valid(format: OutputFormat, out: &mut Vec<u8>, id: &str, a: &AcceptedRow) {
    let id = crate::show::checked_id(id, a.warnings, format);
    match format {
        OutputFormat::Json => {
            out.extend_from_slice(b"{\"row\":");
            push_u64(out, a.row);
            out.extend_from_slice(b",\"id\":");
            push_json_str(out, &id);
            out.extend_from_slice(b",\"ok\":true,\"brand\":\"");
            out.extend_from_slice(a.brand.as_str().as_bytes());
            out.extend_from_slice(b"\",\"card\":\"");
            out.extend_from_slice(a.card.as_str().as_bytes());
            out.extend_from_slice(b"\",\"exp\":\"");
            push_two_digits(out, a.exp.month().into());
            out.push(b'/');
            push_two_digits(out, a.exp.year() % 100);
            out.extend_from_slice(b"\",\"route\":\"");
            out.extend_from_slice(a.route.as_str().as_bytes());
            out.push(b'"');
            for (i, w) in a.warnings.iter().enumerate() {
                out.extend_from_slice(if i == 0 { b",\"warnings\":[\"" } else { b",\"" });
                out.extend_from_slice(w.code().as_bytes());
                out.push(b'"');
            }
            if !a.warnings.is_empty() {
                out.push(b']');
            }
            out.extend_from_slice(b"}\n");
        }
        OutputFormat::Text => {
            // Writing to a Vec cannot fail.
            let _ = writeln!(
                out,
                "{:>7}  {id:<20} {:<20} {}  {:<16} {:<12} ok{}",
                a.row,
                a.card,
                a.exp,
                a.brand,
                a.route,
                warning_text(a.warnings)
            );
        }
    }
}

/// The warnings of a row for the RESULT column: `; code: message` each.
fn warning_text(warnings: RowWarnings) -> String {
    warnings
        .iter()
        .map(|w: RowWarning| format!("; {}: {w}", w.code()))
        .collect()
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_two_digits(out: &mut Vec<u8>, n: u16) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// A JSON string: copied as is when nothing in it needs escaping, else through serde_json.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// The columns of a rejects file.
const REJECT_COLUMNS: &[&str] = &["row", "id", "card", "errors", "messages"];

/// Where every invalid row goes when the terminal shows only the first few.
struct Rejects {
    path: PathBuf,
    file: Option<crate::files::RowFile>,
    /// How many invalid rows the text output shows.
    shown: u64,
    /// The first failure to write the file, told apart from failures to write the output and
    /// reported by [`Reporter::rejects_note`].
    failed: Option<io::Error>,
}

/// The rejects file beside `beside` (a results file or an input file): `STEM.rejects.csv`.
pub(crate) fn rejects_path(beside: &Path) -> PathBuf {
    let stem = beside
        .file_stem()
        .filter(|s| !s.is_empty() && *s != "-")
        .map_or_else(|| "stdin".into(), |s| s.to_string_lossy().into_owned());
    beside.with_file_name(format!("{stem}.rejects.csv"))
}

/// Writes rows, requests and the summary in one format, counting as it goes.
pub(crate) struct Reporter<W: Write> {
    out: W,
    format: OutputFormat,
    summary: Summary,
    header_done: bool,
    rejects: Option<Rejects>,
}

impl<W: Write> Reporter<W> {
    pub(crate) fn new(out: W, format: OutputFormat) -> Self {
        Reporter {
            out,
            format,
            summary: Summary::default(),
            header_done: false,
            rejects: None,
        }
    }

    /// Writes every invalid row to `path` as well (masked, like everything else), and shows
    /// only the first `shown` of them as text; JSON output still has every one. A rejects file
    /// left by an earlier run is removed.
    pub(crate) fn with_rejects(mut self, path: PathBuf, shown: u64) -> Self {
        let _ = std::fs::remove_file(&path);
        self.rejects = Some(Rejects {
            path,
            file: None,
            shown,
            failed: None,
        });
        self
    }

    fn write_reject(&mut self, problem: &Problem<'_>, id: &str) {
        let Some(rejects) = &mut self.rejects else {
            return;
        };
        if rejects.failed.is_some() {
            return;
        }
        if let Err(e) = Self::append_reject(rejects, problem, id) {
            rejects.failed = Some(e);
        }
    }

    fn append_reject(rejects: &mut Rejects, problem: &Problem<'_>, id: &str) -> io::Result<()> {
        if rejects.file.is_none() {
            rejects.file = Some(crate::files::RowFile::open(
                &rejects.path,
                crate::files::Format::Csv,
                REJECT_COLUMNS,
                0,
            )?);
        }
        let codes: Vec<&str> = problem.reasons.iter().map(|(c, _)| *c).collect();
        let messages: Vec<&str> = problem.reasons.iter().map(|(_, m)| m.as_str()).collect();
        let row = problem.row.to_string();
        rejects.file.as_mut().expect("opened above").row(&[
            Some(&row),
            Some(id),
            Some(problem.card.as_str()),
            Some(&codes.join(";")),
            Some(&messages.join("; ")),
        ])
    }

    /// After the rows: where the invalid ones are, and how many of each problem (text), or one
    /// JSON line with the same.
    ///
    /// # Errors
    ///
    /// [`CliError::Io`] naming the rejects file when it could not be written;
    /// [`CliError::Stdout`] when the output could not.
    pub(crate) fn rejects_note(&mut self) -> Result<(), CliError> {
        let Some(rejects) = &mut self.rejects else {
            return Ok(());
        };
        let io = |source| CliError::Io {
            path: rejects.path.clone(),
            source,
        };
        if let Some(e) = rejects.failed.take() {
            return Err(io(e));
        }
        let Some(file) = &mut rejects.file else {
            return Ok(());
        };
        file.checkpoint().map_err(io)?;
        let s = &self.summary;
        match self.format {
            OutputFormat::Json => {
                let value = serde_json::json!({
                    "rejects": {"rows": s.invalid, "file": rejects.path.display().to_string(), "errors": s.errors}
                });
                serde_json::to_writer(&mut self.out, &value).map_err(io::Error::from)?;
                Ok(self.out.write_all(b"\n")?)
            }
            OutputFormat::Text => {
                let errors: Vec<String> =
                    s.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
                let shown = if s.invalid > rejects.shown {
                    format!("the first {} are shown above; ", rejects.shown)
                } else {
                    String::new()
                };
                Ok(writeln!(
                    self.out,
                    "\n{} rows could not be used ({}); {shown}every one is in {} (no full card numbers)",
                    s.invalid,
                    errors.join(", "),
                    rejects.path.display()
                )?)
            }
        }
    }

    /// After the rows, for the commands that do not print valid rows (`sync`, `submit`, `job
    /// create`): how many rows had each warning (text), or one JSON line with the same;
    /// nothing when none had any.
    pub(crate) fn warnings_note(&mut self) -> io::Result<()> {
        let warnings = &self.summary.warnings;
        if warnings.is_empty() {
            return Ok(());
        }
        match self.format {
            OutputFormat::Json => {
                serde_json::to_writer(&mut self.out, &serde_json::json!({ "warnings": warnings }))?;
                self.out.write_all(b"\n")
            }
            OutputFormat::Text => {
                for w in RowWarning::ALL {
                    let Some(n) = warnings.get(w.code()) else {
                        continue;
                    };
                    let what = match w {
                        RowWarning::IdCardNumber => {
                            "the id looks like a card number. Such ids are masked wherever \
                             cardsync shows or writes them except the results file, which keeps \
                             them as given; valid rows are planned all the same"
                        }
                        _ => "",
                    };
                    writeln!(self.out, "\n{n} rows warned of ({}): {what}", w.code())?;
                }
                Ok(())
            }
        }
    }

    fn json(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    fn table_header(&mut self) -> io::Result<()> {
        if !self.header_done && self.format == OutputFormat::Text {
            self.header_done = true;
            writeln!(
                self.out,
                "{:>7}  {:<20} {:<20} {:<5}  {:<16} {:<12} RESULT",
                "ROW", "ID", "CARD", "EXP", "BRAND", "ROUTE"
            )?;
        }
        Ok(())
    }

    /// A valid row, with the line [`render_valid`] prepared for it: `validate` prints these;
    /// `plan` only counts them, and passes an empty line.
    pub(crate) fn valid(&mut self, a: &AcceptedRow, line: &[u8]) -> io::Result<()> {
        self.summary.count_valid(a.brand, a.route, a.warnings);
        if line.is_empty() {
            return Ok(());
        }
        self.table_header()?;
        self.out.write_all(line)
    }

    /// A row that could not be used.
    pub(crate) fn invalid(&mut self, problem: &Problem<'_>) -> io::Result<()> {
        self.summary.count_invalid(problem);
        // The rejects file and JSON output: masked; the terminal: escaped as well.
        let id = crate::show::json(problem.id);
        self.write_reject(problem, &id);
        if self.format == OutputFormat::Text
            && let Some(r) = &self.rejects
            && self.summary.invalid > r.shown
        {
            return Ok(());
        }
        match self.format {
            OutputFormat::Json => self.json(&InvalidJson {
                row: problem.row,
                id: &id,
                ok: false,
                errors: problem.reasons.iter().map(|(c, _)| *c).collect(),
                messages: problem.reasons.iter().map(|(_, m)| m.as_str()).collect(),
                card: problem.card.as_str(),
                brand: problem.brand.map(Brand::as_str),
                warnings: problem.warnings.iter().map(RowWarning::code).collect(),
            }),
            OutputFormat::Text => {
                self.table_header()?;
                let brand = problem.brand.map_or("", Brand::as_str);
                let result = problem
                    .reasons
                    .iter()
                    .map(|(code, message)| format!("{code}: {message}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                let id = crate::show::text(&id);
                writeln!(
                    self.out,
                    "{:>7}  {id:<20} {:<20} {:<5}  {brand:<16} {:<12} {result}{}",
                    problem.row,
                    problem.card,
                    "",
                    "",
                    warning_text(problem.warnings)
                )
            }
        }
    }

    /// A request `plan` would send.
    pub(crate) fn request(&mut self, request: &PlannedRequest) -> io::Result<()> {
        let counts = self.summary.requests.get_or_insert_with(Default::default);
        let (method, path) = match request.route.kind() {
            RouteKind::Subscription => {
                counts.subscription += 1;
                ("POST", paths::SUBSCRIBE)
            }
            _ => {
                counts.batch += 1;
                ("POST", paths::BATCH)
            }
        };
        let brands: BTreeMap<&'static str, usize> = request
            .brand_counts()
            .into_iter()
            .map(|(b, n)| (b.as_str(), n))
            .collect();
        let first_row = request.cards.first().map_or(0, |c| c.row);
        let last_row = request.cards.last().map_or(0, |c| c.row);
        let se = request.route.se_number().map(|s| s.as_str());
        match self.format {
            OutputFormat::Json => self.json(&RequestJson {
                request: request.seq,
                method,
                path,
                route: request.route.kind().as_str(),
                se_number: se,
                cards: request.cards.len(),
                first_row,
                last_row,
                brands,
            }),
            OutputFormat::Text => {
                let brands = brands
                    .iter()
                    .map(|(b, n)| format!("{b} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let se = se.map(|s| format!(" for SE {s}")).unwrap_or_default();
                writeln!(
                    self.out,
                    "request {:>4}  {method} {path:<13} {:>6} cards{se}, rows {first_row}..={last_row}: {brands}",
                    request.seq,
                    request.cards.len(),
                )
            }
        }
    }

    /// The output format.
    pub(crate) fn format(&self) -> OutputFormat {
        self.format
    }

    /// The counts so far.
    pub(crate) fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Writes one JSON object as a line.
    pub(crate) fn json_line(&mut self, value: &impl Serialize) -> io::Result<()> {
        self.json(value)
    }

    /// The output, for free-form text.
    pub(crate) fn out(&mut self) -> &mut W {
        &mut self.out
    }

    /// The output, giving up the reporter.
    pub(crate) fn into_inner(self) -> W {
        self.out
    }

    /// Flushes the output.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes the summary and returns it.
    pub(crate) fn finish(mut self) -> io::Result<Summary> {
        match self.format {
            OutputFormat::Json => {
                let summary = std::mem::take(&mut self.summary);
                self.json(&SummaryJson { summary: &summary })?;
                self.summary = summary;
            }
            OutputFormat::Text => {
                let s = &self.summary;
                writeln!(
                    self.out,
                    "\n{} rows: {} valid ({} batch, {} subscription), {} invalid",
                    s.rows, s.valid, s.batch, s.subscription, s.invalid
                )?;
                let brands = s.brand_counts();
                if !brands.is_empty() {
                    let brands: Vec<String> =
                        brands.iter().map(|(b, n)| format!("{b} {n}")).collect();
                    writeln!(self.out, "valid by brand: {}", brands.join(", "))?;
                }
                if !s.errors.is_empty() {
                    let errors: Vec<String> =
                        s.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
                    writeln!(self.out, "problems: {}", errors.join(", "))?;
                }
                if !s.warnings.is_empty() {
                    let warnings: Vec<String> =
                        s.warnings.iter().map(|(c, n)| format!("{c} {n}")).collect();
                    writeln!(self.out, "warnings: {}", warnings.join(", "))?;
                }
                if let Some(r) = &s.requests {
                    writeln!(
                        self.out,
                        "requests: {} batch, {} subscription",
                        r.batch, r.subscription
                    )?;
                }
            }
        }
        self.out.flush()?;
        Ok(self.summary)
    }
}
