//! Jobs in a shared PostgreSQL journal: `cardsync job …`, `cardsync worker`, and the journal
//! side of `cardsync listen --journal`. The work itself is `cardsync-job-postgres`'s; this
//! module parses, drives and prints.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cardsync_core::Planner;
use cardsync_hyper::{HyperTransport, Options};
use cardsync_job::{FileSink, PlanRecorder, Snapshot};
use cardsync_job_postgres::{
    Decision, Hook, JobSpec, JobStatus, JournalKey, PgError, PgJournal, Scope, WorkerOptions,
};
use serde::Serialize;

use crate::cli::{Global, OutputFormat};
use crate::error::CliError;
use crate::report::Reporter;

/// The journal's URL.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct JournalArgs {
    /// The shared journal: a PostgreSQL URL (postgres://user@host/db; TLS as its sslmode
    /// says). Card numbers in it are sealed with the key in CARDSYNC_JOURNAL_KEY (64 hex
    /// digits) or the file CARDSYNC_JOURNAL_KEY_FILE names.
    #[arg(
        long,
        value_name = "URL",
        env = "CARDSYNC_JOURNAL",
        hide_env_values = true
    )]
    pub(crate) journal: String,
}

/// `cardsync job …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum JobCommand {
    /// Validate and plan a card file into the shared journal (rejects reported as `sync`
    /// does). Sends nothing: workers do.
    Create(CreateArgs),
    /// Requests per state, results per status, and what waits for a decision.
    Status {
        /// The job.
        name: String,
        #[command(flatten)]
        journal: JournalArgs,
    },
    /// Write the results file (mode 0600) and the changes file, as `sync` does, once every
    /// request is final; then erase the job's cards and results from the journal.
    Export {
        /// The job.
        name: String,
        /// The results file (.csv or .jsonl).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        journal: JournalArgs,
    },
    /// Decide about requests whose POST may have reached CardSync (a worker died or lost its
    /// answer): look each up in the CardSync dashboard by its first card's id first.
    Decide(DecideArgs),
    /// Stop the job: no worker takes its requests any more; its cards and results are erased.
    Abandon {
        /// The job.
        name: String,
        #[command(flatten)]
        journal: JournalArgs,
    },
    /// Re-seal every card in the journal with the key in CARDSYNC_JOURNAL_KEY, reading it
    /// with the old key in CARDSYNC_JOURNAL_OLD_KEY.
    RotateKey {
        #[command(flatten)]
        journal: JournalArgs,
    },
}

/// `cardsync job create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// The job's name, unique in the journal.
    name: String,
    /// The card file.
    file: PathBuf,
    /// SE number for American Express rows that have none.
    #[arg(long, value_name = "SE")]
    se_number: Option<String>,
    /// The environment variable every worker reads this job's merchant key from (it must
    /// hold the key here too).
    #[arg(long, value_name = "VAR", default_value = "CARDSYNC_API_KEY")]
    merchant_key_env: String,
    /// At most this many requests of the merchant under way at once, over every worker.
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_in_flight: u32,
    /// Cards per request, at most 10000.
    #[arg(long, value_name = "N", default_value_t = cardsync_core::MAX_CARDS_PER_REQUEST)]
    max_per_request: usize,
    #[command(flatten)]
    journal: JournalArgs,
}

/// `cardsync job decide`.
#[derive(Debug, clap::Args)]
pub(crate) struct DecideArgs {
    /// The job.
    name: String,
    /// Request N reached CardSync as batch BATCH_ID (repeatable).
    #[arg(long, value_name = "N=BATCH_ID")]
    adopt: Vec<String>,
    /// The other requests waiting for a decision did not reach CardSync: send them again.
    #[arg(long, conflicts_with = "abandon_unconfirmed")]
    resend_unconfirmed: bool,
    /// Leave the cards of the other requests waiting for a decision out.
    #[arg(long)]
    abandon_unconfirmed: bool,
    #[command(flatten)]
    journal: JournalArgs,
}

/// `cardsync worker`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Only these jobs (comma-separated names); every open job without it.
    #[arg(long, value_name = "NAME,…", value_delimiter = ',')]
    jobs: Vec<String>,
    /// Requests worked on at once by this worker.
    #[arg(long, value_name = "N", default_value_t = 4)]
    concurrency: u16,
    /// Keep going when every job is done, for jobs created later (until Ctrl-C).
    #[arg(long)]
    follow: bool,
    /// How long a claim lasts without being renewed, such as 30s.
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = crate::duration::parse_duration)]
    lease: Duration,
    /// The longest pause between two status checks of a batch (with receivers running, a
    /// fallback), such as 60s.
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = crate::duration::parse_duration)]
    poll_max: Duration,
    #[command(flatten)]
    journal: JournalArgs,
}

fn pg(e: PgError) -> CliError {
    CliError::Usage(e.to_string())
}

/// Connects to the journal with the key from the environment.
pub(crate) async fn connect(journal: &JournalArgs) -> Result<PgJournal, CliError> {
    let key = JournalKey::from_env().map_err(|e| CliError::Usage(e.to_string()))?;
    PgJournal::connect(&journal.journal, key).await.map_err(pg)
}

/// `cardsync job …`.
pub(crate) fn job<W: Write>(
    command: JobCommand,
    global: &Global,
    out: W,
) -> Result<ExitCode, CliError> {
    let runtime = crate::pipeline::runtime()?;
    match command {
        JobCommand::Create(args) => runtime.block_on(create(args, global, out)),
        JobCommand::Status { name, journal } => runtime.block_on(async {
            let journal = connect(&journal).await?;
            let status = journal.status(&name).await.map_err(pg)?;
            print_status(out, global.output, &status)?;
            Ok(ExitCode::SUCCESS)
        }),
        JobCommand::Export { name, out: path, journal } => runtime.block_on(async {
            let journal = connect(&journal).await?;
            let mut sink = FileSink::new(&path);
            let rows = journal.export(&name, &mut sink).await.map_err(pg)?;
            say(
                out,
                global.output,
                &serde_json::json!({"job": name, "results": rows, "out": path.display().to_string(),
                    "changes": sink.changes_path().display().to_string()}),
                &format!(
                    "{rows} results written to {} (changes in {}); the job's cards and results are erased from the journal",
                    path.display(),
                    sink.changes_path().display()
                ),
            )?;
            Ok(ExitCode::SUCCESS)
        }),
        JobCommand::Decide(args) => runtime.block_on(decide(args, global, out)),
        JobCommand::Abandon { name, journal } => runtime.block_on(async {
            let journal = connect(&journal).await?;
            journal.abandon(&name).await.map_err(pg)?;
            say(
                out,
                global.output,
                &serde_json::json!({"job": name, "state": "abandoned"}),
                &format!("job {name} abandoned; its cards and results are erased"),
            )?;
            Ok(ExitCode::SUCCESS)
        }),
        JobCommand::RotateKey { journal } => runtime.block_on(async {
            let old = std::env::var("CARDSYNC_JOURNAL_OLD_KEY")
                .map_err(|_| CliError::Usage("set CARDSYNC_JOURNAL_OLD_KEY to the key the journal was sealed with".into()))
                .and_then(|hex| JournalKey::from_hex(&hex).map_err(|e| CliError::Usage(e.to_string())))?;
            let journal = connect(&journal).await?;
            let n = journal.rotate_from(&old).await.map_err(pg)?;
            say(
                out,
                global.output,
                &serde_json::json!({"resealed": n, "key_id": journal.key().id()}),
                &format!("{n} cards and results re-sealed with key {}", journal.key().id()),
            )?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// One line: JSON, or text.
fn say<W: Write>(
    mut out: W,
    format: OutputFormat,
    json: &serde_json::Value,
    text: &str,
) -> Result<(), CliError> {
    match format {
        OutputFormat::Json => writeln!(out, "{json}")?,
        OutputFormat::Text => writeln!(out, "{text}")?,
    }
    out.flush()?;
    Ok(())
}

async fn create<W: Write>(args: CreateArgs, global: &Global, out: W) -> Result<ExitCode, CliError> {
    let merchant_key = std::env::var(&args.merchant_key_env).map_err(|_| {
        CliError::Usage(format!(
            "{} must hold the merchant key (workers read it from there too)",
            args.merchant_key_env
        ))
    })?;
    let journal = connect(&args.journal).await?;
    let spec = JobSpec::new(&args.name, &args.merchant_key_env, &global.remote.base_url)
        .with_max_in_flight(args.max_in_flight);
    let job = journal.create_job(&spec, &merchant_key).await.map_err(pg)?;
    let options =
        crate::pipeline::plan_options(args.se_number.as_deref(), Some(args.max_per_request))?;
    let mut planner = Planner::new(options);
    let mut recorder = PlanRecorder::new(&Snapshot::default());
    let mut reporter = Reporter::new(out, global.output);
    let handle = tokio::runtime::Handle::current();
    let mut duplicates = 0u64;
    let mut requests = 0u64;
    // Reading and planning is blocking work; each planned request is stored as it comes.
    tokio::task::block_in_place(|| {
        crate::pipeline::check_rows(
            &args.file,
            &mut planner,
            &mut reporter,
            false,
            |_, request| {
                requests += 1;
                let changes = recorder.request(request);
                let left_out = handle
                    .block_on(journal.apply_plan(job, &changes))
                    .map_err(pg)?;
                duplicates += left_out.len() as u64;
                Ok(())
            },
        )
    })?;
    let invalid = reporter.summary().invalid;
    journal
        .finish_plan(job, planner.rows(), invalid, duplicates)
        .await
        .map_err(pg)?;
    reporter.flush()?;
    let out = reporter.out();
    say(
        out,
        global.output,
        &serde_json::json!({"job": args.name, "rows": planner.rows(), "invalid": invalid,
            "duplicates": duplicates, "requests": requests}),
        &format!(
            "job {} created: {} rows, {invalid} rejected, {duplicates} duplicates left out, {requests} requests; run `cardsync worker` to send them",
            args.name,
            planner.rows()
        ),
    )?;
    Ok(if invalid > 0 {
        crate::error::Exit::Problems.into()
    } else {
        ExitCode::SUCCESS
    })
}

async fn decide<W: Write>(args: DecideArgs, global: &Global, out: W) -> Result<ExitCode, CliError> {
    if args.adopt.is_empty() && !args.resend_unconfirmed && !args.abandon_unconfirmed {
        return Err(CliError::Usage(
            "say what to do: --adopt N=BATCH_ID, --resend-unconfirmed or --abandon-unconfirmed"
                .into(),
        ));
    }
    let journal = connect(&args.journal).await?;
    let mut changed = 0;
    for spec in &args.adopt {
        let (seq, batch_id) = spec
            .split_once('=')
            .and_then(|(n, b)| Some((n.trim().parse::<u64>().ok()?, b.trim().to_owned())))
            .filter(|(_, b)| !b.is_empty())
            .ok_or_else(|| CliError::Usage(format!("--adopt takes N=BATCH_ID, not {spec:?}")))?;
        changed += journal
            .decide(&args.name, &Decision::Adopt { seq, batch_id })
            .await
            .map_err(pg)?;
    }
    if args.resend_unconfirmed {
        changed += journal
            .decide(&args.name, &Decision::Resend)
            .await
            .map_err(pg)?;
    }
    if args.abandon_unconfirmed {
        changed += journal
            .decide(&args.name, &Decision::Abandon)
            .await
            .map_err(pg)?;
    }
    say(
        out,
        global.output,
        &serde_json::json!({"job": args.name, "decided": changed}),
        &format!("{changed} requests decided"),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `cardsync job status` as JSON.
#[derive(Serialize)]
struct StatusOut<'a> {
    job: &'a str,
    state: &'a str,
    rows: u64,
    invalid: u64,
    duplicates: u64,
    requests: &'a std::collections::BTreeMap<String, u64>,
    cards: &'a std::collections::BTreeMap<String, u64>,
    results: &'a std::collections::BTreeMap<String, u64>,
    in_flight: u64,
    finished: bool,
    unconfirmed: Vec<serde_json::Value>,
}

fn print_status<W: Write>(mut out: W, format: OutputFormat, s: &JobStatus) -> Result<(), CliError> {
    match format {
        OutputFormat::Json => {
            let status = StatusOut {
                job: &s.name,
                state: &s.state,
                rows: s.rows,
                invalid: s.invalid,
                duplicates: s.duplicates,
                requests: &s.requests,
                cards: &s.cards,
                results: &s.results,
                in_flight: s.in_flight,
                finished: s.finished(),
                unconfirmed: s
                    .unconfirmed
                    .iter()
                    .map(|u| {
                        serde_json::json!({"request": u.seq, "cards": u.cards,
                            "message": u.message, "late_batch_ids": u.late_batch_ids})
                    })
                    .collect(),
            };
            writeln!(
                out,
                "{}",
                serde_json::to_string(&status).unwrap_or_default()
            )?;
        }
        OutputFormat::Text => {
            writeln!(
                out,
                "job {}: {}, {} rows ({} rejected, {} duplicates left out)",
                s.name, s.state, s.rows, s.invalid, s.duplicates
            )?;
            let requests: Vec<String> = s
                .requests
                .iter()
                .map(|(state, n)| {
                    format!(
                        "{n} {state} ({} cards)",
                        s.cards.get(state).copied().unwrap_or(0)
                    )
                })
                .collect();
            writeln!(
                out,
                "requests: {}",
                if requests.is_empty() {
                    "none".to_owned()
                } else {
                    requests.join(", ")
                }
            )?;
            let results: Vec<String> = s.results.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(
                out,
                "results: {}",
                if results.is_empty() {
                    if s.state == "open" {
                        "none yet"
                    } else {
                        "erased with the job"
                    }
                    .to_owned()
                } else {
                    results.join(", ")
                }
            )?;
            writeln!(out, "under way now: {}", s.in_flight)?;
            for u in &s.unconfirmed {
                write!(
                    out,
                    "waiting for a decision: request {} ({} cards){}",
                    u.seq,
                    u.cards,
                    u.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )?;
                if !u.late_batch_ids.is_empty() {
                    write!(
                        out,
                        "; a worker reported batch {} after its claim ran out",
                        u.late_batch_ids.join(", ")
                    )?;
                }
                writeln!(out)?;
            }
            if !s.unconfirmed.is_empty() {
                writeln!(
                    out,
                    "look each up in the CardSync dashboard by its first card's id, then: cardsync job decide {} --adopt N=BATCH_ID for those CardSync has, and --resend-unconfirmed (or --abandon-unconfirmed) for the rest",
                    s.name
                )?;
            } else if s.finished() && s.state == "open" {
                writeln!(
                    out,
                    "every request is final: cardsync job export {} --out FILE",
                    s.name
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// This process's name in leases.
fn worker_name() -> String {
    format!(
        "{}:{}",
        crate::lease::this_holder().host,
        std::process::id()
    )
}

/// The crash hook: `CARDSYNC_CRASH_AT=POINT:N` aborts the process the Nth time a worker lane
/// reaches POINT (`claimed`, `before-post`, `after-post`, `before-results`, `recorded`), and
/// `CARDSYNC_FREEZE_AT=POINT:N` stops it there with SIGSTOP, for the kill and freeze tests.
fn hook() -> Arc<Hook> {
    use std::sync::atomic::{AtomicU32, Ordering};
    let crash = std::env::var("CARDSYNC_CRASH_AT").ok();
    let freeze = std::env::var("CARDSYNC_FREEZE_AT").ok();
    if crash.is_none() && freeze.is_none() {
        return Arc::new(|_: &str| {});
    }
    let counts: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>> = Arc::default();
    let parse = |spec: &Option<String>| {
        spec.as_deref().and_then(|s| {
            let (point, n) = s.split_once(':').unwrap_or((s, "1"));
            Some((point.to_owned(), n.parse::<u32>().ok()?))
        })
    };
    let (crash, freeze) = (parse(&crash), parse(&freeze));
    let frozen = Arc::new(AtomicU32::new(0));
    Arc::new(move |at: &str| {
        let n = {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry(at.to_owned()).or_default();
            *n += 1;
            *n
        };
        if crash.as_ref().is_some_and(|(p, k)| p == at && *k == n) {
            std::process::abort();
        }
        if freeze.as_ref().is_some_and(|(p, k)| p == at && *k == n)
            && frozen.fetch_add(1, Ordering::SeqCst) == 0
        {
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &std::process::id().to_string()])
                .status();
        }
    })
}

/// `cardsync worker`.
pub(crate) fn worker<W: Write>(
    args: WorkerArgs,
    global: &Global,
    out: W,
) -> Result<ExitCode, CliError> {
    let runtime = crate::pipeline::runtime()?;
    runtime.block_on(async {
        let journal = connect(&args.journal).await?;
        let scope = if args.jobs.is_empty() {
            Scope::All
        } else {
            Scope::Jobs(args.jobs.clone())
        };
        let mut options = WorkerOptions::new(worker_name())
            .with_scope(scope)
            .with_concurrency(usize::from(args.concurrency))
            .with_lease(args.lease)
            .with_follow(args.follow);
        options.poll_max = args.poll_max;
        let transport = Arc::new(
            HyperTransport::new(Options::loopback())
                .map_err(|e| CliError::Usage(format!("cannot set up TLS: {e}")))?,
        );
        let work = cardsync_job_postgres::work(&journal, transport, &options, hook());
        let summary = tokio::select! {
            s = work => s.map_err(pg)?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped; what was under way is taken up by another worker once its claim runs out");
                return Ok(crate::error::Exit::Usage.into());
            }
        };
        say(
            out,
            global.output,
            &serde_json::json!({"sent": summary.sent, "completed": summary.completed,
                "failed": summary.failed, "unconfirmed": summary.unconfirmed,
                "fenced": summary.fenced, "waiting_for_decision": summary.waiting_for_decision}),
            &format!(
                "sent {}, completed {}, failed {}, lost to other workers {}; {} requests wait for a decision",
                summary.sent, summary.completed, summary.failed, summary.fenced, summary.waiting_for_decision
            ),
        )?;
        Ok(if summary.waiting_for_decision > 0 {
            crate::error::Exit::Remote.into()
        } else {
            ExitCode::SUCCESS
        })
    })
}
