//! `cardsync`: validate, plan and run CardSync Account Updater jobs from the command line.
//!
//! Exit codes: 0 when everything is fine, 1 when the job found problems (invalid rows), 2 on
//! usage or I/O errors.

#![forbid(unsafe_code)]

mod input;
mod report;
mod sandbox;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cardsync_core::{PlanOptions, PlannedRequest, Planner, RowVerdict, SeNumber, mask_card_text};
use clap::{Parser, Subcommand, ValueEnum};

use crate::input::Row;
use crate::report::{Problem, Reporter};

/// Keep stored cards current with the CardSync Account Updater.
#[derive(Debug, Parser)]
#[command(name = "cardsync", version, about, max_term_width = 100)]
struct Cli {
    /// Output format: a readable table, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,

    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// A table for people.
    Text,
    /// One JSON object per line, for programs.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check every row of a card file and say what is wrong with each bad one.
    ///
    /// FILE is CSV with a header naming the columns id, card, exp and (for American Express)
    /// se_number, in any order and case; or JSON Lines (.jsonl) with the same keys; or - for
    /// CSV on standard input. Exits 0 when every row is valid, 1 when any is not.
    Validate {
        /// The card file.
        file: PathBuf,
        /// SE number for American Express rows that have none.
        #[arg(long, value_name = "SE")]
        se_number: Option<String>,
    },
    /// Show the requests that submitting a card file would send, without sending anything.
    ///
    /// Visa, Mastercard and Discover cards go in batches (POST /v2/batch); American Express
    /// cards go in subscriptions (POST /v2/subscribe), one group per SE number. Exits 0 when
    /// every row is valid, 1 when any is not.
    Plan {
        /// The card file.
        file: PathBuf,
        /// SE number for American Express rows that have none.
        #[arg(long, value_name = "SE")]
        se_number: Option<String>,
        /// Cards per request, at most 10000.
        #[arg(long, value_name = "N", default_value_t = cardsync_core::MAX_CARDS_PER_REQUEST)]
        max_per_request: usize,
    },
    /// Run a local emulator of the CardSync API until Ctrl-C.
    ///
    /// It keeps state in memory, completes batches after --complete-after, answers the
    /// documented sandbox test cards with their documented results, and sends webhooks. It
    /// prints its base URL and the keys to use (one JSON line with --output json). Control
    /// endpoints under /_sandbox/ move its clock, show webhook deliveries and card counters, and
    /// inject faults.
    Sandbox(sandbox::Args),
}

/// Errors that stop a command: usage, I/O, or a file that cannot be read as cards.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The arguments do not make sense.
    Usage(String),
    /// Reading or writing a file failed.
    Io { path: PathBuf, source: io::Error },
    /// A file is not in a form cardsync can read.
    Input { path: PathBuf, message: String },
    /// Writing to standard output failed (a closed pipe ends quietly).
    Stdout(io::Error),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) => f.write_str(m),
            CliError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CliError::Input { path, message } => write!(f, "{}: {message}", path.display()),
            CliError::Stdout(e) => write!(f, "cannot write to standard output: {e}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Io { source, .. } | CliError::Stdout(source) => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for CliError {
    fn from(e: io::Error) -> Self {
        CliError::Stdout(e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(CliError::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(0),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let stdout = io::stdout().lock();
    let out = io::BufWriter::with_capacity(1 << 16, stdout);
    match cli.command {
        Command::Validate { file, se_number } => {
            let options = plan_options(se_number.as_deref(), None)?;
            validate(&file, options, Reporter::new(out, cli.output))
        }
        Command::Plan {
            file,
            se_number,
            max_per_request,
        } => {
            let options = plan_options(se_number.as_deref(), Some(max_per_request))?;
            plan(&file, options, Reporter::new(out, cli.output))
        }
        Command::Sandbox(args) => sandbox::run(args, cli.output, out),
    }
}

fn plan_options(se_number: Option<&str>, max: Option<usize>) -> Result<PlanOptions, CliError> {
    let se = se_number
        .map(|s| SeNumber::parse(s).map_err(|e| CliError::Usage(format!("--se-number {s:?}: {e}"))))
        .transpose()?;
    let mut options = PlanOptions::default().with_default_se_number(se);
    if let Some(max) = max {
        options = options
            .with_max_per_request(max)
            .map_err(|e| CliError::Usage(format!("--max-per-request: {e}")))?;
    }
    Ok(options)
}

fn exit_code(invalid: u64) -> ExitCode {
    if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Feeds every row of `file` to a planner and reports it; `print_valid` says whether valid rows
/// are printed or only counted. Requests are handed to `on_request` as they become ready, and
/// the partly filled ones at the end.
fn check_rows<W: Write>(
    file: &Path,
    options: PlanOptions,
    reporter: &mut Reporter<W>,
    print_valid: bool,
    mut on_request: impl FnMut(&mut Reporter<W>, PlannedRequest) -> io::Result<()>,
) -> Result<(), CliError> {
    let mut planner = Planner::new(options);
    input::for_each_row(file, |row| {
        match row {
            Row::Record(record) => match planner.handle_record(record) {
                RowVerdict::Rejected(r) => reporter.invalid(&Problem::from(&r))?,
                RowVerdict::Accepted(a) => reporter.valid(print_valid, record.id, &a)?,
                other => unreachable!("a verdict this version does not know: {other:?}"),
            },
            Row::Unreadable {
                id,
                card,
                code,
                message,
            } => {
                // Keep the planner's row numbers in step with the file.
                let row = planner.skip_record();
                reporter.invalid(&Problem {
                    row,
                    id: &id,
                    card: mask_card_text(&card),
                    brand: None,
                    reasons: vec![(code, message)],
                })?;
            }
        }
        while let Some(request) = planner.poll_request() {
            on_request(reporter, request)?;
        }
        Ok(())
    })?;
    planner.finish();
    while let Some(request) = planner.poll_request() {
        on_request(reporter, request)?;
    }
    Ok(())
}

fn validate<W: Write>(
    file: &Path,
    options: PlanOptions,
    mut reporter: Reporter<W>,
) -> Result<ExitCode, CliError> {
    // Requests are dropped as they fill, so memory stays bounded while routes and duplicates
    // are checked.
    check_rows(file, options, &mut reporter, true, |_, _| Ok(()))?;
    Ok(exit_code(reporter.finish()?.invalid))
}

fn plan<W: Write>(
    file: &Path,
    options: PlanOptions,
    mut reporter: Reporter<W>,
) -> Result<ExitCode, CliError> {
    check_rows(file, options, &mut reporter, false, |reporter, request| {
        reporter.request(&request)
    })?;
    Ok(exit_code(reporter.finish()?.invalid))
}
