//! `cardsync`: validate, plan and run CardSync Account Updater jobs from the command line.
//!
//! Exit codes: 0 when everything is fine, 1 when the job found problems (invalid rows, failed
//! batches), 2 on usage or I/O errors, 3 when CardSync answered with an error or not at all.

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod csvread;
mod duration;
mod error;
mod files;
mod input;
mod issuer;
mod job;
mod pipeline;
mod remote;
mod report;
mod sandbox;
mod show;

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cli::{Global, OutputFormat};
use crate::error::CliError;
use crate::pipeline::{plan, plan_options, validate};
use crate::report::Reporter;

/// Keep stored cards current with the CardSync Account Updater.
#[derive(Debug, Parser)]
#[command(name = "cardsync", version, about, max_term_width = 100)]
struct Cli {
    /// What is printed: a readable table (text), or one JSON object per line (json). (The
    /// results file is --out FILE.)
    #[arg(
        long,
        visible_alias = "format",
        global = true,
        value_name = "text|json",
        value_parser = OutputFormat::parse,
        default_value = "text"
    )]
    output: OutputFormat,

    /// Log what happens on standard error (-vv for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Read the card file's columns under other names: id=CustomerRef,card=Number,exp=Expiry
    /// (and se_number=…); those not named keep their own.
    #[arg(
        long,
        global = true,
        value_name = "FIELD=COLUMN,…",
        value_parser = input::ColumnNames::parse
    )]
    columns: Option<input::ColumnNames>,

    /// Print nothing but results and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    #[command(flatten)]
    remote: remote::Remote,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check every row of a card file and say what is wrong with each bad one.
    ///
    /// FILE is CSV with a header naming the columns id, card, exp and (for American Express)
    /// se_number, in any order and case; or JSON Lines (.jsonl) with the same keys; or - for
    /// CSV on standard input. Exits 0 when every row is valid, 1 when any is not (warnings,
    /// such as an id that looks like a card number, do not count).
    Validate {
        /// The card file.
        file: PathBuf,
        /// SE number for American Express rows that have none.
        #[arg(long, value_name = "SE")]
        se_number: Option<String>,
        /// Show every row on a terminal too (there, only the rows with problems or warnings
        /// are shown by default; piped or with --output json, every row always is).
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
    Sync(job::Args),
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
    Listen(job::listen::ListenArgs),
    /// The issuer side of the card network: register cards with the issuing platform, change
    /// their status, send issuer feed files (against the local emulator by default).
    #[command(subcommand)]
    Issuer(issuer::IssuerCommand),
    /// Jobs in a shared PostgreSQL journal, worked on by any number of `cardsync worker`s on
    /// any number of machines: create, status, export, decide, abandon, rotate-key.
    #[command(subcommand)]
    Job(job::shared::JobCommand),
    /// Claim requests of the open jobs in the shared journal (or of those named), send them,
    /// wait for and fetch their results, until every job is done (or forever with --follow).
    /// Run as many as you like, anywhere: every card is sent once.
    Worker(job::shared::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Some(names) = cli.columns.clone() {
        input::set_column_names(names);
    }
    // The receivers and the emulator hold a descriptor per connection: many systems start
    // processes with a soft limit of 1024 open files although the hard limit allows more.
    if let Err(e) = cardsync_hyper::server::raise_open_file_limit() {
        tracing::debug!("the limit on open files stays as it was: {e}");
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let (exit, say) = e.exit();
            if say {
                eprintln!("error: {}", show::message(&e.to_string()));
            }
            exit.into()
        }
    }
}

/// Logs go to standard error: warnings by default; with -v what the job does, step by step
/// (each request's call and answer, in plain words, no card data); -vv more of cardsync's own
/// detail; -vvv everything, the HTTP libraries included. RUST_LOG overrides.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => {
            "warn,cardsync=info,cardsync_job=info,cardsync_job_postgres=info,cardsync_client=info,cardsync_hyper=info"
        }
        2 => {
            "warn,cardsync=debug,cardsync_job=debug,cardsync_job_postgres=debug,cardsync_client=debug,cardsync_hyper=debug"
        }
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(false)
        // A log line that cannot be written (standard error closed) is dropped; reporting it
        // would write to standard error again, which panics, and would cut off whatever the
        // logging task was doing (answering a webhook, say).
        .log_internal_errors(false)
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
            job::sync(args, &global)
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
        Command::Listen(args) => job::listen::listen(args, &global, out),
        Command::Issuer(c) => issuer::run(c, &global, out),
        Command::Job(c) => job::shared::job(c, &global, out),
        Command::Worker(args) => job::shared::worker(args, &global, out),
    }
}
