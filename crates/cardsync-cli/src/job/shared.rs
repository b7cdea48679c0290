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
    Decision, JobSpec, JobState, JobStatus, JournalKey, PgError, PgJournal, Scope, WorkerOptions,
};
use serde::Serialize;

use crate::cli::{Global, OutputFormat};
use crate::error::CliError;
use crate::report::Reporter;

/// The journal's URL.
#[derive(Clone, Debug, Default, clap::Args)]
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
        /// Write over an existing results file (and its changes file).
        #[arg(long)]
        force: bool,
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
    /// The URL a `listen --journal` receiver takes this merchant's webhooks at (the receiver's
    /// URL and the merchant's fingerprint, from CARDSYNC_API_KEY): American Express updates do
    /// not say whose they are, so each merchant registers its own. With --register, registers
    /// it for batch available, batch error and American Express update events (replacing the
    /// merchant's registrations for them).
    WebhookUrl {
        /// The receiver's public URL, https://host/webhooks/TOKEN (it holds the secret token:
        /// better from the environment than on the command line).
        #[arg(
            long,
            value_name = "URL",
            env = "CARDSYNC_RECEIVER_URL",
            hide_env_values = true
        )]
        receiver: String,
        /// Register it with CardSync for this merchant.
        #[arg(long)]
        register: bool,
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
    CliError::Shared(e)
}

/// Connects to the journal with the key from the environment.
pub(crate) async fn connect(journal: &JournalArgs) -> Result<PgJournal, CliError> {
    if journal.journal.trim().is_empty() {
        return Err(CliError::Usage(
            "give the shared journal: --journal postgres://… (or CARDSYNC_JOURNAL)".into(),
        ));
    }
    let key = JournalKey::from_env().map_err(|e| CliError::Usage(e.to_string()))?;
    // During a rotation, the previous key too: what is still sealed under it opens, and each
    // job's values are sealed under the key its job is under.
    let old = JournalKey::old_from_env().map_err(|e| CliError::Usage(e.to_string()))?;
    PgJournal::connect_with_keys(&journal.journal, key, old, 16)
        .await
        .map_err(pg)
}

/// The base URL workers send to: the one of the command line (`--base-url`,
/// `CARDSYNC_BASE_URL`), never one read from the journal.
fn own_base_url(global: &Global) -> Result<cardsync_proto::BaseUrl, CliError> {
    cardsync_proto::BaseUrl::parse(&global.remote.base_url)
        .map_err(|e| CliError::Usage(format!("--base-url {:?}: {e}", global.remote.base_url)))
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
        JobCommand::Export { name, out: path, force, journal } => runtime.block_on(async {
            let mut sink = FileSink::new(&path);
            crate::files::check_outputs(
                None,
                &[],
                &[sink.path(), sink.changes_path()],
                false,
                force,
            )?;
            let journal = connect(&journal).await?;
            let waiting = journal
                .status(&name)
                .await
                .map_err(pg)?
                .results
                .get("subscribed")
                .copied()
                .unwrap_or(0);
            let before = journal.status(&name).await.map_err(pg)?;
            let rows = journal.export(&name, &mut sink).await.map_err(pg)?;
            // The summary file, as `sync` writes it.
            let summary = exported_summary(&before, &path, &sink);
            let summary_file = super::summary::summary_path(&path);
            crate::files::write_json(&summary_file, &summary)
                .map_err(crate::error::io_err(&summary_file))?;
            if waiting > 0 && !global.quiet {
                eprintln!(
                    "{waiting} subscribed American Express cards had no update yet; updates that \
                     come after this export are not in it (collect them with `cardsync listen --out DIR`)"
                );
            }
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
        JobCommand::WebhookUrl {
            receiver,
            register,
            journal,
        } => runtime.block_on(async {
            global.remote.need_api_key()?;
            let journal = connect(&journal).await?;
            let key = global.remote.api_key.clone().unwrap_or_default();
            let url = format!(
                "{}/{}",
                receiver.trim_end_matches('/'),
                journal.merchant_fingerprint(&key)
            );
            if register {
                global
                    .remote
                    .client()?
                    .register_receiver(&url)
                    .await
                    .map_err(|e| crate::remote::remote_error("registering the receiver", e))?;
            }
            // Registered: the URL need not be shown, and its token is a secret.
            let shown = if register {
                url.rsplit_once("/webhooks/")
                    .map_or(url.clone(), |(base, rest)| {
                        let merchant = rest.rsplit('/').next().unwrap_or("");
                        format!("{base}/webhooks/…/{merchant}")
                    })
            } else {
                url.clone()
            };
            say(
                out,
                global.output,
                &serde_json::json!({"url": shown, "registered": register}),
                &if register {
                    format!("registered {shown} for batch available (20), batch error (22) and American Express update (23) events; this replaced the merchant's registrations for them")
                } else {
                    shown.clone()
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }),
        JobCommand::RotateKey { journal } => runtime.block_on(async {
            let old = JournalKey::old_from_env()
                .map_err(|e| CliError::Usage(e.to_string()))?
                .ok_or_else(|| CliError::Usage(
                    "set CARDSYNC_JOURNAL_OLD_KEY (or CARDSYNC_JOURNAL_OLD_KEY_FILE) to the key the journal is sealed with, and CARDSYNC_JOURNAL_KEY to the new one".into(),
                ))?;
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

/// What a job is planned from.
struct PlanInput<'a> {
    name: &'a str,
    file: &'a std::path::Path,
    se_number: Option<&'a str>,
    max_per_request: usize,
    key_env: &'a str,
    merchant_key: &'a str,
    max_in_flight: u32,
}

/// Validates and plans a card file into a new job of the journal: (rows, invalid,
/// duplicates, requests). Rejects are reported as `sync` reports them.
async fn plan_job<W: Write>(
    journal: &PgJournal,
    input: &PlanInput<'_>,
    global: &Global,
    reporter: &mut Reporter<W>,
) -> Result<(u64, u64, u64, u64), CliError> {
    let spec = JobSpec::new(input.name, input.key_env, &global.remote.base_url)
        .with_max_in_flight(input.max_in_flight);
    let job = journal
        .create_job(&spec, input.merchant_key)
        .await
        .map_err(pg)?;
    let options = crate::pipeline::plan_options(input.se_number, Some(input.max_per_request))?;
    let mut planner = Planner::new(options);
    let mut recorder = PlanRecorder::new(&Snapshot::default());
    let handle = tokio::runtime::Handle::current();
    let mut duplicates = 0u64;
    let mut requests = 0u64;
    // Reading and planning is blocking work; each planned request is stored as it comes.
    tokio::task::block_in_place(|| {
        crate::pipeline::check_rows(
            input.file,
            &mut planner,
            reporter,
            crate::pipeline::ShowValid::None,
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
    reporter.warnings_note()?;
    let invalid = reporter.summary().invalid;
    journal
        .finish_plan(job, planner.rows(), invalid, duplicates)
        .await
        .map_err(pg)?;
    reporter.flush()?;
    Ok((planner.rows(), invalid, duplicates, requests))
}

async fn create<W: Write>(args: CreateArgs, global: &Global, out: W) -> Result<ExitCode, CliError> {
    let merchant_key = std::env::var(&args.merchant_key_env).map_err(|_| {
        CliError::Usage(format!(
            "{} must hold the merchant key (workers read it from there too)",
            args.merchant_key_env
        ))
    })?;
    let journal = connect(&args.journal).await?;
    let input = PlanInput {
        name: &args.name,
        file: &args.file,
        se_number: args.se_number.as_deref(),
        max_per_request: args.max_per_request,
        key_env: &args.merchant_key_env,
        merchant_key: &merchant_key,
        max_in_flight: args.max_in_flight,
    };
    let mut reporter = Reporter::new(out, global.output);
    let (rows, invalid, duplicates, requests) =
        plan_job(&journal, &input, global, &mut reporter).await?;
    say(
        reporter.out(),
        global.output,
        &serde_json::json!({"job": args.name, "rows": rows, "invalid": invalid,
            "duplicates": duplicates, "requests": requests}),
        &format!(
            "job {} created: {rows} rows, {invalid} rejected, {duplicates} duplicates left out, {requests} requests; run `cardsync worker` to send them",
            args.name
        ),
    )?;
    Ok(if invalid > 0 {
        crate::error::Exit::Problems.into()
    } else {
        ExitCode::SUCCESS
    })
}

/// `cardsync sync FILE --out FILE --journal postgres://…`: create the job (unless a run
/// before created it), work on it in this process (other workers may help), apply the
/// decisions given, and export.
pub(crate) fn sync(args: super::args::Args, global: &Global) -> Result<ExitCode, CliError> {
    let merchant_key = global.remote.api_key.clone().unwrap_or_default();
    let name = args.job.clone().unwrap_or_else(|| {
        args.out.file_name().map_or_else(
            || "results".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    let journal_args = JournalArgs {
        journal: args.journal.clone().unwrap_or_default(),
    };
    let runtime = crate::pipeline::runtime()?;
    runtime.block_on(async {
        let journal = connect(&journal_args).await?;
        let stdout = std::io::stdout().lock();
        let mut reporter = Reporter::new(std::io::BufWriter::new(stdout), global.output);
        let invalid;
        let (existing, known) = match journal.status(&name).await {
            Ok(s) if s.state != JobState::Planning => (Some(s), true),
            Ok(_) => (None, true),
            Err(PgError::NoSuchJob(_)) => (None, false),
            Err(e) => return Err(pg(e)),
        };
        // The results and changes files are this job's own once it exists in the journal.
        let sink = FileSink::new(&args.out);
        let input = (args.file.as_os_str() != "-").then_some(args.file.as_path());
        crate::files::check_outputs(
            input,
            &[&super::summary::summary_path(&args.out), &crate::report::rejects_path(&args.out)],
            &[sink.path(), sink.changes_path()],
            known,
            args.force,
        )?;
        match &existing {
            Some(s) if s.state == JobState::Exported => {
                if !global.quiet {
                    eprintln!(
                        "job {name} is already complete: its results were exported (to {} unless another run wrote them elsewhere); give another --job name to run it again",
                        args.out.display()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            Some(s) if s.state != JobState::Open => {
                return Err(CliError::Usage(format!(
                    "job {name} in the journal is {}: give another --job name to run it again",
                    s.state
                )));
            }
            Some(s) => {
                invalid = s.invalid;
                if !global.quiet {
                    eprintln!("resuming job {name} from the shared journal ({} rows planned earlier)", s.rows);
                }
            }
            None => {
                let input = PlanInput {
                    name: &name,
                    file: &args.file,
                    se_number: args.se_number.as_deref(),
                    max_per_request: args.max_per_request,
                    key_env: "CARDSYNC_API_KEY",
                    merchant_key: &merchant_key,
                    max_in_flight: u32::from(args.concurrency),
                };
                invalid = match plan_job(&journal, &input, global, &mut reporter).await {
                    Ok(planned) => planned.1,
                    // Another run is planning it: work on it once it is planned.
                    Err(_) if wait_until(&journal, &name, |s| s != JobState::Planning).await? => {
                        journal.status(&name).await.map_err(pg)?.invalid
                    }
                    Err(e) => return Err(e),
                };
            }
        }
        let key = cardsync_proto::MerchantKey::new(&merchant_key)
            .map_err(|e| CliError::Usage(format!("the API key cannot be used: {e}")))?;
        let mut options = WorkerOptions::new(worker_name())
            .with_scope(Scope::Jobs(vec![name.clone()]))
            .with_concurrency(usize::from(args.concurrency))
            .with_lease(args.lease)
            .with_key("CARDSYNC_API_KEY", key)
            .with_base_url(own_base_url(global)?);
        options.poll_max = args.poll_max;
        let transport = Arc::new(
            HyperTransport::new(Options::loopback())
                .map_err(|e| CliError::Usage(format!("cannot set up TLS: {e}")))?,
        );
        let summary =
            cardsync_job_postgres::work(&journal, transport.clone(), &options).await.map_err(pg)?;
        if let Some(why) = &summary.key_refused {
            eprintln!("error: {}", crate::show::message(why));
            eprintln!(
                "nothing is lost: the refused request was not created and is sent again; run the same command with the right API key"
            );
            return Ok(crate::error::Exit::Remote.into());
        }
        if summary.waiting_for_decision > 0 {
            let mut decided = 0;
            for (seq, batch_id) in checked_adoptions(&journal, &name, &args.adopt, global).await? {
                decided += journal.decide(&name, Some(seq), &Decision::Adopt(batch_id)).await.map_err(pg)?;
            }
            if args.resend_unconfirmed {
                decided += journal.decide(&name, None, &Decision::Resend).await.map_err(pg)?;
            } else if args.abandon_unconfirmed {
                decided += journal.decide(&name, None, &Decision::Abandon).await.map_err(pg)?;
            }
            if decided > 0 {
                cardsync_job_postgres::work(&journal, transport.clone(), &options)
                    .await
                    .map_err(pg)?;
            }
        }
        let mut status = journal.status(&name).await.map_err(pg)?;
        // With webhooks, American Express updates are waited for as on one machine: until
        // every subscribed card has one, or --amex-wait passes (receivers record them; this
        // run's worker fetches them).
        if args.wait == super::args::Wait::Webhook && status.finished() {
            let deadline = tokio::time::Instant::now() + args.amex_wait;
            while status.results.get("subscribed").copied().unwrap_or(0) > 0
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
                cardsync_job_postgres::work(&journal, transport.clone(), &options)
                    .await
                    .map_err(pg)?;
                status = journal.status(&name).await.map_err(pg)?;
            }
        }
        if !status.finished() {
            print_status(reporter.out(), global.output, &status)?;
            eprintln!(
                "nothing is lost: decide (or pass --adopt, --resend-unconfirmed or --abandon-unconfirmed), then run the same command again"
            );
            return Ok(crate::error::Exit::Remote.into());
        }
        let mut sink = FileSink::new(&args.out);
        let rows = match journal.export(&name, &mut sink).await {
            Ok(rows) => rows,
            // Another run of the same job exports it (or did).
            Err(e @ (PgError::ExportRunning(_) | PgError::Exported(_)))
                if wait_until(&journal, &name, |s| s == JobState::Exported).await? =>
            {
                if !global.quiet {
                    eprintln!("job {name} was exported by another run: {e}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return Err(pg(e)),
        };
        let _ = (rows, invalid);
        // The same summary as on one machine: printed, and written beside the results.
        let summary = exported_summary(&status, &args.out, &sink);
        let path = super::summary::summary_path(&args.out);
        crate::files::write_json(&path, &summary).map_err(crate::error::io_err(&path))?;
        super::summary::print_summary(&mut reporter, &summary)?;
        Ok(super::summary::exit_for(&summary))
    })
}

/// The summary of a job just exported (its counts as they were before the export erased them).
fn exported_summary(
    status: &JobStatus,
    out: &std::path::Path,
    sink: &FileSink,
) -> super::summary::SyncSummary {
    let mut summary = status.summary();
    summary.done = true;
    super::summary::SyncSummary::new(
        summary,
        &(out.to_owned(), sink.changes_path().to_owned()),
        Vec::new(),
    )
}

/// The `--adopt N=BATCH_ID` decisions, each checked with CardSync first, as `sync --adopt`
/// does: the request must wait for a decision, and the batch must be one CardSync knows,
/// holding as many cards as the request (see `cardsync_job::rules::check_adoption`).
async fn checked_adoptions(
    journal: &PgJournal,
    name: &str,
    specs: &[String],
    global: &Global,
) -> Result<Vec<(u64, String)>, CliError> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let status = journal.status(name).await.map_err(pg)?;
    let client = global.remote.client()?;
    let mut out = Vec::new();
    for spec in specs {
        let (seq, batch_id) = spec
            .split_once('=')
            .and_then(|(n, b)| Some((n.trim().parse::<u64>().ok()?, b.trim().to_owned())))
            .filter(|(_, b)| !b.is_empty())
            .ok_or_else(|| CliError::Usage(format!("--adopt takes N=BATCH_ID, not {spec:?}")))?;
        let Some(waiting) = status.unconfirmed.iter().find(|u| u.seq == seq) else {
            return Err(CliError::Usage(format!(
                "--adopt {spec}: request {seq} of job {name} does not wait for a decision"
            )));
        };
        let info = client.batch(&batch_id).await.map_err(|e| {
            crate::remote::remote_error(&format!("--adopt {spec}: batch {batch_id}"), e)
        })?;
        cardsync_job::rules::check_adoption(&batch_id, &info, waiting.cards)
            .map_err(|why| CliError::Usage(format!("--adopt {spec}: {why}")))?;
        out.push((seq, batch_id));
    }
    Ok(out)
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
    for (seq, batch_id) in checked_adoptions(&journal, &args.name, &args.adopt, global).await? {
        changed += journal
            .decide(&args.name, Some(seq), &Decision::Adopt(batch_id))
            .await
            .map_err(pg)?;
    }
    if args.resend_unconfirmed {
        changed += journal
            .decide(&args.name, None, &Decision::Resend)
            .await
            .map_err(pg)?;
    }
    if args.abandon_unconfirmed {
        changed += journal
            .decide(&args.name, None, &Decision::Abandon)
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
    /// By status word: CardSync's text, masked as any outside text is.
    results: std::collections::BTreeMap<String, u64>,
    in_flight: u64,
    finished: bool,
    unconfirmed: Vec<serde_json::Value>,
}

fn print_status<W: Write>(mut out: W, format: OutputFormat, s: &JobStatus) -> Result<(), CliError> {
    match format {
        OutputFormat::Json => {
            let status = StatusOut {
                job: &s.name,
                state: s.state.as_str(),
                rows: s.rows,
                invalid: s.invalid,
                duplicates: s.duplicates,
                requests: &s.requests,
                cards: &s.cards,
                results: s
                    .results
                    .iter()
                    .map(|(k, n)| (crate::show::json(k).into_owned(), *n))
                    .collect(),
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
            let results: Vec<String> = s
                .results
                .iter()
                .map(|(k, n)| format!("{} {n}", crate::show::text(k)))
                .collect();
            writeln!(
                out,
                "results: {}",
                if results.is_empty() {
                    if s.state == JobState::Open {
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
                        .map(|m| format!(": {}", crate::show::plain(m)))
                        .unwrap_or_default()
                )?;
                if !u.late_batch_ids.is_empty() {
                    write!(
                        out,
                        "; a worker reported batch {} after its claim ran out",
                        crate::show::plain(&u.late_batch_ids.join(", "))
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
            } else if s.finished() && s.state == JobState::Open {
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
        super::lease::this_holder().host,
        std::process::id()
    )
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
            .with_follow(args.follow)
            .with_base_url(own_base_url(global)?);
        options.poll_max = args.poll_max;
        let transport = Arc::new(
            HyperTransport::new(Options::loopback())
                .map_err(|e| CliError::Usage(format!("cannot set up TLS: {e}")))?,
        );
        let work = cardsync_job_postgres::work(&journal, transport, &options);
        let summary = tokio::select! {
            s = work => s.map_err(pg)?,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped; what was under way is taken up by another worker once its claim runs out");
                return Ok(crate::error::Exit::Usage.into());
            }
        };
        if !summary.skipped.is_empty() && !global.quiet {
            eprintln!(
                "left to other workers: {}",
                summary.skipped.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        say(
            out,
            global.output,
            &serde_json::json!({"sent": summary.sent, "completed": summary.completed,
                "failed": summary.failed, "unconfirmed": summary.unconfirmed,
                "fenced": summary.fenced, "waiting_for_decision": summary.waiting_for_decision,
                "claims": summary.claims, "http_ms": summary.http.as_millis() as u64,
                "journal_ms": summary.journal.as_millis() as u64,
                "idle_ms": summary.idle.as_millis() as u64, "busy_ms": summary.busy.as_millis() as u64,
                "skipped_jobs": summary.skipped, "key_refused": summary.key_refused}),
            &format!(
                "sent {}, completed {}, failed {}, lost to other workers {}; {} requests wait for a decision",
                summary.sent, summary.completed, summary.failed, summary.fenced, summary.waiting_for_decision
            ),
        )?;
        if let Some(why) = &summary.key_refused {
            eprintln!("error: {}", crate::show::message(why));
            eprintln!("this worker stopped; what it was sending goes to other workers, unsent");
        }
        Ok(if summary.waiting_for_decision > 0 || summary.key_refused.is_some() {
            crate::error::Exit::Remote.into()
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// `cardsync listen --journal`: each event is recorded once in the shared journal, whichever
/// receiver gets it, and marks its batch ready; the receiver answers 200 only once it is
/// recorded (a failure answers 500, and CardSync delivers again).
pub(crate) fn listen<W: Write>(
    addr: std::net::SocketAddr,
    token: &str,
    stop_after: Option<Duration>,
    journal: &JournalArgs,
    global: &Global,
    mut out: W,
) -> Result<ExitCode, CliError> {
    use cardsync_hyper::{HandlerError, ReceiverOptions, WebhookReceiver};
    use cardsync_proto::{Trigger, WebhookEvent};
    let runtime = crate::pipeline::runtime()?;
    runtime.block_on(async {
        let journal = connect(journal).await?;
        let me = worker_name();
        let (tx, mut recorded) = tokio::sync::mpsc::unbounded_channel();
        let handler = {
            let journal = journal.clone();
            move |merchant: Option<String>, event: WebhookEvent| {
                let (journal, tx, me) = (journal.clone(), tx.clone(), me.clone());
                async move {
                    let Some(key) = event.dedup_key() else {
                        // The inbox refuses these (422) before the handler; never acknowledged.
                        return Err(HandlerError::new("the event has nothing to record it by"));
                    };
                    let batch_id = match &event {
                        WebhookEvent::BatchAvailable(e) => e.batch_id.clone(),
                        WebhookEvent::BatchError(e) => e.batch_id.clone(),
                        _ => None,
                    };
                    let event_id = event.event_id().map(str::to_owned).unwrap_or(key);
                    let trigger = event.trigger().map(Trigger::id);
                    let new = journal
                        .record_event(&event_id, trigger, batch_id.as_deref(), merchant.as_deref(), &me)
                        .await
                        .map_err(HandlerError::new)?;
                    let _ = tx.send((event_id, trigger, batch_id, new));
                    Ok(())
                }
            }
        };
        // `/webhooks/TOKEN/MERCHANT`: the merchant whose event it is (American Express
        // updates do not say); see `cardsync job webhook-url`.
        let receiver = WebhookReceiver::start_scoped(addr, token, ReceiverOptions::default(), handler)
            .await
            .map_err(|e| CliError::Usage(format!("cannot start the webhook receiver on {addr}: {e}")))?;
        if !global.quiet {
            eprintln!(
                "listening at {} (token path hidden), recording events in the shared journal; Ctrl-C stops.",
                receiver.local_addr()
            );
        }
        let stop = async {
            match stop_after {
                Some(d) => tokio::time::sleep(d).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::pin!(stop);
        loop {
            let (event_id, trigger, batch_id, new) = tokio::select! {
                _ = &mut stop => break,
                e = recorded.recv() => match e { Some(e) => e, None => break },
            };
            match global.output {
                OutputFormat::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({"event_id": event_id, "trigger_id": trigger,
                        "batch_id": batch_id, "recorded": new})
                )?,
                OutputFormat::Text if new => writeln!(
                    out,
                    "event {} recorded{}",
                    crate::show::plain(&event_id),
                    batch_id
                        .map(|b| format!(": batch {} is ready", crate::show::plain(&b)))
                        .unwrap_or_default()
                )?,
                OutputFormat::Text => writeln!(
                    out,
                    "event {}: recorded already",
                    crate::show::plain(&event_id)
                )?,
            }
            out.flush()?;
        }
        receiver.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Waits (up to ten minutes) until job `name`'s state satisfies `done`: whether it did.
async fn wait_until(
    journal: &PgJournal,
    name: &str,
    done: impl Fn(JobState) -> bool,
) -> Result<bool, CliError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while tokio::time::Instant::now() < deadline {
        match journal.status(name).await {
            Ok(s) if done(s.state) => return Ok(true),
            Ok(_) => {}
            Err(PgError::NoSuchJob(_)) => return Ok(false),
            Err(e) => return Err(pg(e)),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(false)
}
