//! `cardsync`: validate, plan and run CardSync Account Updater jobs from the command line.
//!
//! Exit codes: 0 when everything is fine, 1 when the job found problems (invalid rows, failed
//! batches), 2 on usage or I/O errors, 3 when CardSync answered with an error or not at all.

#![forbid(unsafe_code)]

mod commands;
mod dedupe;
mod files;
mod input;
mod remote;
mod report;
mod sandbox;
mod sync;

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cardsync_core::{
    AcceptedRow, PlanOptions, PlannedRequest, Planner, Record, RowVerdict, SeNumber, mask_card_text,
};
use clap::{Parser, Subcommand, ValueEnum};

use crate::report::{Problem, Reporter};

/// Keep stored cards current with the CardSync Account Updater.
#[derive(Debug, Parser)]
#[command(name = "cardsync", version, about, max_term_width = 100)]
struct Cli {
    /// Output format: a readable table, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,

    /// Log what happens on standard error (-vv for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Print nothing but results and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(flatten)]
    remote: remote::Remote,

    #[command(subcommand)]
    command: Command,
}

/// The global options, as the commands see them.
#[derive(Clone, Debug)]
pub(crate) struct Global {
    pub(crate) output: OutputFormat,
    pub(crate) quiet: bool,
    pub(crate) remote: remote::Remote,
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
        /// Show every row on a terminal too (there, only the problem rows are shown by
        /// default; piped or with --output json, every row always is).
        #[arg(long)]
        all: bool,
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
    /// Run the whole job: validate, plan, submit, wait, fetch every result, write one file.
    ///
    /// Safe to interrupt: a journal (default OUT.journal) records every step, and running the
    /// same command again resumes without sending any request twice. The results file holds
    /// full card numbers and is created with mode 0600; OUT's stem .changes.csv lists what
    /// changed per id, and .summary.json the counts per status.
    Sync(sync::Args),
    /// Run `sync` on the documented test cards against an emulator started in-process.
    ///
    /// Needs no key and no network. Writes its files to a temporary directory (or --dir).
    Demo(commands::DemoArgs),
    /// Plan a card file and send its requests; print the batch ids created.
    ///
    /// Unlike `sync`, this keeps no journal: use `sync` for anything you may need to resume.
    Submit {
        /// The card file.
        file: PathBuf,
        /// SE number for American Express rows that have none.
        #[arg(long, value_name = "SE")]
        se_number: Option<String>,
    },
    /// Show a batch's status and counts.
    Status {
        /// The batch id.
        batch_id: String,
    },
    /// Fetch the results of a batch, or of an American Express update event.
    Results(commands::ResultsArgs),
    /// Remove American Express cards from their subscriptions.
    Unsubscribe {
        /// The card file (American Express cards).
        file: PathBuf,
        /// SE number for rows that have none.
        #[arg(long, value_name = "SE")]
        se_number: String,
    },
    /// Register webhook URLs.
    #[command(subcommand)]
    Webhooks(commands::WebhooksCommand),
    /// Enroll merchants and check their enrollment (partner key).
    #[command(subcommand)]
    Merchant(commands::MerchantCommand),
    /// Run a webhook receiver: fetch and save results as their events arrive.
    Listen(commands::ListenArgs),
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
    /// The journal could not be read or written.
    Journal {
        path: PathBuf,
        source: cardsync_job::StoreError,
    },
    /// The results files could not be written.
    Results(String),
    /// CardSync answered with an error, or did not answer.
    Remote(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) => f.write_str(m),
            CliError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CliError::Input { path, message } => write!(f, "{}: {message}", path.display()),
            CliError::Stdout(e) => write!(f, "cannot write to standard output: {e}"),
            CliError::Journal { path, source } => write!(f, "journal {}: {source}", path.display()),
            CliError::Results(m) => write!(f, "results: {m}"),
            CliError::Remote(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Io { source, .. } | CliError::Stdout(source) => Some(source),
            CliError::Journal { source, .. } => Some(source),
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
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(CliError::Stdout(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(0),
        Err(e @ CliError::Remote(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to standard error: warnings by default, more with -v; RUST_LOG overrides.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,cardsync=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let global = Global {
        output: cli.output,
        quiet: cli.quiet,
        remote: cli.remote,
    };
    let stdout = io::stdout().lock();
    let out = io::BufWriter::with_capacity(1 << 16, stdout);
    match cli.command {
        Command::Validate {
            file,
            se_number,
            all,
        } => {
            let options = plan_options(se_number.as_deref(), None)?;
            let every_row =
                all || global.output == OutputFormat::Json || !io::stdout().is_terminal();
            validate(&file, options, Reporter::new(out, global.output), every_row)
        }
        Command::Plan {
            file,
            se_number,
            max_per_request,
        } => {
            let options = plan_options(se_number.as_deref(), Some(max_per_request))?;
            plan(&file, options, Reporter::new(out, global.output))
        }
        Command::Sandbox(args) => sandbox::run(args, cli.output, out),
        Command::Sync(args) => {
            drop(out);
            sync::run(args, &global)
        }
        Command::Demo(args) => {
            drop(out);
            commands::demo(args, &global)
        }
        Command::Submit { file, se_number } => commands::submit(&file, se_number, &global, out),
        Command::Status { batch_id } => commands::status(&batch_id, &global, out),
        Command::Results(args) => commands::results(args, &global, out),
        Command::Unsubscribe { file, se_number } => {
            commands::unsubscribe(&file, &se_number, &global, out)
        }
        Command::Webhooks(c) => commands::webhooks(c, &global, out),
        Command::Merchant(c) => commands::merchant(c, &global, out),
        Command::Listen(args) => commands::listen(args, &global, out),
    }
}

pub(crate) fn plan_options(
    se_number: Option<&str>,
    max: Option<usize>,
) -> Result<PlanOptions, CliError> {
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

/// The async runtime of the commands that talk to CardSync: two workers are plenty for one
/// job's requests.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Stdout)
}

/// Maps an I/O error on `path` to [`CliError::Io`].
pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CliError + '_ {
    move |source| CliError::Io {
        path: path.to_owned(),
        source,
    }
}

fn exit_code(invalid: u64) -> ExitCode {
    if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Feeds every row of `file` to `planner` and reports it; `print_valid` says whether valid rows
/// are printed or only counted. Requests are handed to `on_request` as they become ready, and
/// the partly filled ones at the end.
///
/// Rows are read and checked on a second thread, which also prepares the line of every row
/// that is good so far (when valid rows are printed); this thread runs the duplicate check,
/// plans and writes, in row order.
pub(crate) fn check_rows<W: Write>(
    file: &Path,
    planner: &mut Planner,
    reporter: &mut Reporter<W>,
    print_valid: bool,
    mut on_request: impl FnMut(&mut Reporter<W>, PlannedRequest) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut estimate = input::estimate_rows(file);
    let checker = planner.checker();
    let format = reporter.format();
    let render = move |record: &Record<'_>, a: &AcceptedRow, out: &mut Vec<u8>| {
        report::render_valid(format, out, record.id, a);
    };
    let ahead = input::Ahead {
        checker: &checker,
        first_row: planner.rows() + 1,
        render: print_valid.then_some(&render as input::Render<'_>),
    };
    input::for_each_block(file, &ahead, |prepared| {
        // Make room for the duplicate check once the reader is under way, so that the two
        // overlap; with some margin, as the estimate comes from the first lines only.
        if let Some(rows) = estimate.take() {
            planner.reserve(rows + rows / 8);
        }
        let block = prepared.block();
        let lines = &block.lines;
        // Runs of readable records go to the planner at once; each unreadable row ends one.
        let (mut at, mut record) = (0, 0);
        let ends = block.unreadable.iter().map(Some).chain([None]);
        for end in ends {
            let stop = end.map_or(block.len, |(i, _)| *i);
            let run = &block.records[record..record + (stop - at)];
            let mut failed = None;
            let mut i = at;
            planner.admit_records(run, block.checked, |planner, _, verdict| {
                let line = lines.line(i);
                i += 1;
                if failed.is_some() {
                    return;
                }
                let reported = match verdict {
                    RowVerdict::Rejected(r) => reporter.invalid(&Problem::from(&r)),
                    // The reader rendered every row that could be accepted, when printing.
                    RowVerdict::Accepted(a) => reporter.valid(&a, line),
                    other => unreachable!("a verdict this version does not know: {other:?}"),
                };
                let polled = reported.map_err(CliError::Stdout).and_then(|()| {
                    while let Some(request) = planner.poll_request() {
                        on_request(reporter, request)?;
                    }
                    Ok(())
                });
                failed = polled.err();
            });
            if let Some(e) = failed {
                return Err(e);
            }
            record += run.len();
            at = stop;
            let Some((_, row)) = end else {
                continue;
            };
            // Keep the planner's row numbers in step with the file.
            reporter.invalid(&Problem {
                row: planner.skip_record(),
                id: &row.id,
                card: mask_card_text(&row.card),
                brand: None,
                reasons: vec![(row.code, row.message.clone())],
            })?;
            at += 1;
        }
        Ok(())
    })?;
    planner.finish();
    while let Some(request) = planner.poll_request() {
        on_request(reporter, request)?;
    }
    Ok(())
}

/// `validate`: every row's verdict, or (`every_row` false) only the problem rows, then the
/// summary.
fn validate<W: Write>(
    file: &Path,
    options: PlanOptions,
    mut reporter: Reporter<W>,
    every_row: bool,
) -> Result<ExitCode, CliError> {
    // Routes and duplicates are checked, but no request is built: nothing is sent.
    check_rows(
        file,
        &mut Planner::new(options.with_requests(false)),
        &mut reporter,
        every_row,
        |_, _| Ok(()),
    )?;
    Ok(exit_code(reporter.finish()?.invalid))
}

fn plan<W: Write>(
    file: &Path,
    options: PlanOptions,
    mut reporter: Reporter<W>,
) -> Result<ExitCode, CliError> {
    check_rows(
        file,
        &mut Planner::new(options),
        &mut reporter,
        false,
        |reporter, request| Ok(reporter.request(&request)?),
    )?;
    Ok(exit_code(reporter.finish()?.invalid))
}
