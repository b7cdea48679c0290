//! `cardsync sync`: the whole job, resumable and exactly-once.
//!
//! Phases: plan (validate every row and store each request body in the journal), send (each
//! request marked `sending` before its POST and `sent` with its batch id after), wait (poll
//! with backoff, or webhooks), fetch (results appended to `OUT.partial`, the length recorded in
//! the journal after the bytes are on disk), finish (rename to `OUT`, write the summaries,
//! erase the request bodies from the journal).

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cardsync_core::{Brand, Expiry, Pan, Planner, SeNumber, UpdateStatus, mask_card_text};
use cardsync_hyper::{CallError, Client, HandlerError, ReceiverOptions, WebhookReceiver};
use cardsync_proto::retry::Reached;
use cardsync_proto::{
    BatchCard, BatchState, CreateBatch, Endpoint, Results, SetWebhooks, Subscribe,
    SubscriptionCard, Trigger, WebhookEvent, decode_cards_body,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::dedupe::SpillSeen;
use crate::files::{self, Format, RowFile};
use crate::journal::{Journal, ReqState, RequestRow};
use crate::remote::{Remote, remote_error};
use crate::report::{Problem, Reporter};
use crate::{CliError, Global, OutputFormat, io_err};

/// The columns of the results file.
pub(crate) const RESULT_COLUMNS: &[&str] = &[
    "id",
    "status",
    "card",
    "exp",
    "se_number",
    "batch_id",
    "event_id",
];

/// The columns of the "what changed" file.
const CHANGE_COLUMNS: &[&str] = &[
    "id",
    "status",
    "brand",
    "old_last4",
    "new_last4",
    "new_exp",
    "batch_id",
    "event_id",
];

/// How `sync` learns that results are ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Wait {
    /// Ask CardSync for each batch's status, with backoff.
    Poll,
    /// Run a webhook receiver and register it with CardSync; poll slowly as a fallback.
    Webhook,
}

/// Options of `cardsync sync`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct Args {
    /// The card file (CSV or JSON Lines; see `validate`).
    pub(crate) file: PathBuf,
    /// The results file: CSV, or JSON Lines if it ends in .jsonl. Created with mode 0600: it
    /// holds full card numbers.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: PathBuf,
    /// SE number for American Express rows that have none.
    #[arg(long, value_name = "SE")]
    pub(crate) se_number: Option<String>,
    /// The journal that makes the job resumable [default: OUT.journal].
    #[arg(long, value_name = "FILE")]
    pub(crate) state: Option<PathBuf>,
    /// How to wait for results.
    #[arg(long, value_enum, default_value_t = Wait::Poll)]
    pub(crate) wait: Wait,
    /// With --wait webhook: the address the receiver listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub(crate) listen: SocketAddr,
    /// With --wait webhook: the URL CardSync calls, if not the receiver's own address (behind
    /// a proxy or tunnel). The path must be /webhooks/TOKEN with --token's value.
    #[arg(long, value_name = "URL", requires = "token")]
    pub(crate) public_url: Option<String>,
    /// With --wait webhook: the receiver's secret path token [default: random].
    #[arg(long, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
    /// With --wait webhook: how long to wait for American Express updates once every batch is
    /// done, such as 30s, 10m.
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = crate::sandbox::parse_duration)]
    pub(crate) amex_wait: Duration,
    /// The longest pause between two status checks.
    #[arg(long, value_name = "DURATION", default_value = "60s",
          value_parser = crate::sandbox::parse_duration)]
    pub(crate) poll_max: Duration,
    /// Cards per request, at most 10000.
    #[arg(long, value_name = "N", default_value_t = cardsync_core::MAX_CARDS_PER_REQUEST)]
    pub(crate) max_per_request: usize,
    /// Send again the batches whose POST was interrupted (CardSync may then bill them twice).
    #[arg(long, conflicts_with = "abandon_unconfirmed")]
    pub(crate) resend_unconfirmed: bool,
    /// Give up on the batches whose POST was interrupted; their cards get no results.
    #[arg(long)]
    pub(crate) abandon_unconfirmed: bool,
    /// A batch whose POST was interrupted but which CardSync did receive, as REQUEST=BATCH_ID
    /// (the request number from the message, the batch id from CardSync).
    #[arg(long, value_name = "REQUEST=BATCH_ID")]
    pub(crate) adopt: Vec<String>,
}

/// What `sync` tells the user at the end, and writes to `<stem>.summary.json`.
#[derive(Debug, Default, Serialize)]
struct SyncSummary {
    done: bool,
    rows: u64,
    invalid_rows: u64,
    requests: usize,
    batches: usize,
    subscriptions: usize,
    results: u64,
    statuses: Vec<StatusCount>,
    unconfirmed: Vec<i64>,
    failed: Vec<(i64, String)>,
    results_file: Option<String>,
    changes_file: Option<String>,
}

/// How many results have one status.
#[derive(Debug, Serialize)]
struct StatusCount {
    status: String,
    cards: u64,
    meaning: &'static str,
}

/// What a status means for the billing system.
fn meaning(status: &str) -> &'static str {
    match status {
        "updated_card" => "new card number: replace the stored card",
        "updated_expiry" => "new expiry date: update the stored expiry",
        "closed" => "account closed: stop billing, ask for a new card",
        "contact" | "contact_closed" => "contact the cardholder",
        "no_match" | "unknown" => "no update from the issuer",
        "valid" | "no_change" => "card is current",
        "no_result" => "no news: CardSync returns only cards with an update",
        "subscribed" => "American Express: subscribed, updates come by webhook",
        _ => "",
    }
}

/// A hook for the crash tests: `CARDSYNC_CRASH_AT=point:n` makes the process kill itself with
/// SIGKILL at the n-th time it reaches `point` (planned, sending, answered, sent, fetched).
fn crash_point(point: &str) {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let Ok(spec) = std::env::var("CARDSYNC_CRASH_AT") else {
        return;
    };
    let Some((name, n)) = spec.split_once(':') else {
        return;
    };
    if name != point {
        return;
    }
    // Only the named point is counted.
    let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if n.parse() == Ok(count) {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        std::thread::sleep(Duration::from_secs(60));
        std::process::abort();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The progress bars, drawn on stderr only when it is a terminal.
struct Progress {
    visible: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        Progress {
            visible: !quiet && io::stderr().is_terminal(),
        }
    }

    fn bar(&self, len: Option<u64>, message: &'static str) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = match len {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{msg:>10} {spinner} {pos} rows {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// Paths of the files of one job.
struct Paths {
    out: PathBuf,
    partial: PathBuf,
    changes: PathBuf,
    summary: PathBuf,
    journal: PathBuf,
}

impl Paths {
    fn new(out: &Path, state: Option<&Path>) -> Paths {
        let with = |suffix: &str| {
            let mut s = out.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        };
        let stem = out
            .file_stem()
            .map_or_else(|| "results".into(), |s| s.to_string_lossy().into_owned());
        let beside = |name: String| out.with_file_name(name);
        Paths {
            out: out.to_owned(),
            partial: with(".partial"),
            changes: beside(format!("{stem}.changes.csv")),
            summary: beside(format!("{stem}.summary.json")),
            journal: state.map_or_else(|| with(".journal"), Path::to_owned),
        }
    }
}

/// Identifies the input and the settings a journal belongs to.
fn identity(args: &Args, remote: &Remote) -> Result<Vec<(&'static str, String)>, CliError> {
    let meta = std::fs::metadata(&args.file).map_err(io_err(&args.file))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let file = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
    Ok(vec![
        ("input", file.display().to_string()),
        ("input_size", meta.len().to_string()),
        ("input_mtime", mtime.to_string()),
        ("base_url", remote.base_url.clone()),
        ("se_number", args.se_number.clone().unwrap_or_default()),
        ("max_per_request", args.max_per_request.to_string()),
    ])
}

/// Runs `sync`.
pub(crate) fn run(args: Args, global: &Global) -> Result<ExitCode, CliError> {
    global.remote.need_api_key()?;
    if args.file.as_os_str() == "-" {
        return Err(CliError::Usage(
            "sync needs a file, not standard input, so that it can resume".to_owned(),
        ));
    }
    let client = global.remote.client()?;
    crate::runtime()?.block_on(run_async(&args, global, &client))
}

/// Runs `sync` with an existing client, inside a runtime (`demo` uses this).
pub(crate) async fn run_async(
    args: &Args,
    global: &Global,
    client: &Client,
) -> Result<ExitCode, CliError> {
    let paths = Paths::new(&args.out, args.state.as_deref());
    let journal = Journal::open(&paths.journal)?;
    let progress = Progress::new(global.quiet);
    let stdout = io::stdout().lock();
    let mut reporter = Reporter::new(io::BufWriter::new(stdout), global.output);

    // The journal must belong to this job.
    let identity = identity(args, &global.remote)?;
    let planned = journal.meta("planned")?.as_deref() == Some("1");
    if planned {
        for (key, value) in &identity {
            let recorded = journal.meta(key)?.unwrap_or_default();
            if &recorded != value {
                return Err(CliError::Usage(format!(
                    "the journal {} belongs to another job ({key} was {recorded:?}, now {value:?}). \
                     Run the same command as before to finish that job, or pass --state with a \
                     new file to start another",
                    paths.journal.display()
                )));
            }
        }
    }
    if journal.meta("done")?.as_deref() == Some("1") {
        let summary = summarize(&journal, &paths, true)?;
        if !global.quiet {
            eprintln!(
                "this job is already complete (journal {}); delete the journal to run it again",
                paths.journal.display()
            );
        }
        print_summary(&mut reporter, &summary, global)?;
        return Ok(exit_for(&summary));
    }

    if !planned {
        plan(args, &journal, &identity, &mut reporter, &progress, client)?;
        crash_point("planned");
    } else if !global.quiet {
        eprintln!(
            "resuming the job in {} ({} rows planned earlier)",
            paths.journal.display(),
            journal.meta_u64("rows")?
        );
    }

    resolve_unconfirmed(args, &journal, client).await?;

    let mut job = Job {
        args,
        client,
        journal: &journal,
        paths: &paths,
        out: None,
        changes: None,
        progress: &progress,
    };
    let outcome = job.run().await;
    drop(job);
    let finished = match outcome {
        Ok(finished) => finished,
        Err(e) => {
            // Say what was done and how to go on, then fail.
            let summary = summarize(&journal, &paths, false)?;
            print_summary(&mut reporter, &summary, global)?;
            eprintln!("error: {e}");
            eprintln!(
                "nothing is lost: run the same command again to resume from the journal {}",
                paths.journal.display()
            );
            return Ok(if matches!(e, CliError::Remote(_)) {
                ExitCode::from(3)
            } else {
                ExitCode::from(2)
            });
        }
    };
    if finished {
        std::fs::rename(&paths.partial, &paths.out).map_err(io_err(&paths.out))?;
        journal.set_meta("done", "1")?;
        journal.erase_bodies()?;
    }
    let summary = summarize(&journal, &paths, finished)?;
    files::write_json(&paths.summary, &summary).map_err(io_err(&paths.summary))?;
    print_summary(&mut reporter, &summary, global)?;
    Ok(exit_for(&summary))
}

fn exit_for(summary: &SyncSummary) -> ExitCode {
    if !summary.unconfirmed.is_empty() || !summary.done {
        ExitCode::from(3)
    } else if summary.invalid_rows > 0 || !summary.failed.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Validates every row and stores each request's body, all in one transaction: a run killed
/// while planning leaves no plan, and the next run plans again.
fn plan<W: Write>(
    args: &Args,
    journal: &Journal,
    identity: &[(&'static str, String)],
    reporter: &mut Reporter<W>,
    progress: &Progress,
    client: &Client,
) -> Result<(), CliError> {
    let options = crate::plan_options(args.se_number.as_deref(), Some(args.max_per_request))?;
    let scratch = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let seen = SpillSeen::new(scratch).map_err(io_err(scratch))?;
    let mut planner = Planner::with_seen_store(options, Box::new(seen.clone()));
    let bar = progress.bar(None, "planning");

    journal.discard_plan()?;
    journal.begin()?;
    for (key, value) in identity {
        journal.set_meta(key, value)?;
    }
    let config = client.config();
    crate::check_rows(&args.file, &mut planner, reporter, false, |_, request| {
        bar.set_position(request.cards.last().map_or(0, |c| c.row));
        let seq = request.seq;
        let cards = request.cards.len();
        let rows: Vec<u64> = request.cards.iter().map(|c| c.row).collect();
        let se = request.route.se_number().map(|s| s.as_str().to_owned());
        let (kind, encoded) = if se.is_some() {
            let r = Subscribe::from_planned(request).and_then(|r| r.encode(config));
            ("subscription", r)
        } else {
            let r = CreateBatch::from_planned(request).and_then(|r| r.encode(config));
            ("batch", r)
        };
        let encoded =
            encoded.map_err(|e| CliError::Usage(format!("cannot build request {seq}: {e}")))?;
        journal.add_request(seq, kind, se.as_deref(), cards, encoded.body(), &rows)?;
        Ok(())
    })?;
    let rows = planner.rows();
    drop(planner);
    let duplicates = seen.duplicates().map_err(io_err(scratch))?;
    drop(seen);
    remove_duplicates(journal, config, &duplicates, reporter)?;
    let summary = reporter.summary();
    journal.set_meta("rows", &rows.to_string())?;
    journal.set_meta("invalid", &summary.invalid.to_string())?;
    journal.set_meta("planned", "1")?;
    journal.set_meta("results_len", "0")?;
    journal.set_meta("changes_len", "0")?;
    journal.commit()?;
    bar.finish_and_clear();
    reporter.flush()?;
    Ok(())
}

/// Takes the duplicate rows out of the stored requests, and reports them.
fn remove_duplicates<W: Write>(
    journal: &Journal,
    config: &cardsync_proto::Config,
    duplicates: &[crate::dedupe::Duplicate],
    reporter: &mut Reporter<W>,
) -> Result<(), CliError> {
    if duplicates.is_empty() {
        return Ok(());
    }
    let mut reasons: HashMap<u64, Vec<cardsync_core::RejectReason>> = HashMap::new();
    for d in duplicates {
        let first_row = d.first_row;
        reasons.entry(d.row).or_default().push(if d.card {
            cardsync_core::RejectReason::DuplicateCard { first_row }
        } else {
            cardsync_core::RejectReason::DuplicateId { first_row }
        });
    }
    let damaged = |seq: i64| {
        move |e: cardsync_proto::EncodeError| {
            CliError::Usage(format!("cannot rebuild request {seq}: {e}"))
        }
    };
    let mut problems = Vec::new();
    for request in journal.requests()? {
        let rows = journal.rows(request.seq)?;
        if !rows.iter().any(|r| reasons.contains_key(r)) {
            continue;
        }
        let body = journal.body(request.seq)?;
        let cards = decode_cards_body(&body).map_err(|e| {
            CliError::Usage(format!("request {} cannot be read back: {e}", request.seq))
        })?;
        let mut kept_rows = Vec::new();
        let mut batch = Vec::new();
        let mut subscription = Vec::new();
        for (card, row) in cards.into_iter().zip(rows) {
            if let Some(r) = reasons.get(&row) {
                let masked = card
                    .card
                    .as_ref()
                    .map(|c| c.masked())
                    .unwrap_or_else(|| mask_card_text(""));
                problems.push((row, card.id.clone().unwrap_or_default(), masked, r.clone()));
                continue;
            }
            kept_rows.push(row);
            let id = card.id.unwrap_or_default();
            let pan = stored_pan(card.card.as_ref())?;
            let exp = stored_exp(card.exp.as_deref())?;
            match card.se_number.as_deref() {
                Some(se) if !request.is_batch() => subscription.push(SubscriptionCard::new(
                    SeNumber::parse(se).map_err(|e| CliError::Usage(e.to_string()))?,
                    id,
                    pan,
                    exp,
                )),
                _ => batch.push(BatchCard::new(id, pan, exp)),
            }
        }
        let body = if kept_rows.is_empty() {
            Vec::new()
        } else if request.is_batch() {
            CreateBatch::new(batch)
                .and_then(|b| b.encode(config))
                .map_err(damaged(request.seq))?
                .into_body()
        } else {
            Subscribe::new(subscription)
                .and_then(|b| b.encode(config))
                .map_err(damaged(request.seq))?
                .into_body()
        };
        journal.replace_request(request.seq, &body, &kept_rows)?;
    }
    problems.sort_by_key(|p| p.0);
    for (row, id, card, reasons) in problems {
        reporter.invalid(&Problem {
            row,
            id: &id,
            card,
            brand: None,
            reasons: reasons.iter().map(|r| (r.code(), r.to_string())).collect(),
        })?;
    }
    Ok(())
}

/// Deals with batches whose POST was interrupted by the previous run's end.
async fn resolve_unconfirmed(
    args: &Args,
    journal: &Journal,
    client: &Client,
) -> Result<(), CliError> {
    let mut adopt: HashMap<i64, String> = HashMap::new();
    for spec in &args.adopt {
        let (seq, id) = spec
            .split_once('=')
            .and_then(|(s, id)| Some((s.trim().parse().ok()?, id.trim().to_owned())))
            .ok_or_else(|| {
                CliError::Usage(format!("--adopt {spec:?}: expected REQUEST=BATCH_ID"))
            })?;
        adopt.insert(seq, id);
    }
    for request in journal.requests()? {
        if request.state != ReqState::Sending {
            if adopt.contains_key(&request.seq) {
                return Err(CliError::Usage(format!(
                    "--adopt: request {} is not waiting for a decision (it is {})",
                    request.seq,
                    request.state.as_str()
                )));
            }
            continue;
        }
        if let Some(batch_id) = adopt.remove(&request.seq) {
            // Check that the batch exists before taking it on.
            let info = client
                .batch(&batch_id)
                .await
                .map_err(|e| remote_error(&format!("batch {batch_id}"), e))?;
            tracing::info!(request = request.seq, batch_id, status = %info.status, "adopted");
            journal.set_state(request.seq, ReqState::Sent, Some(&batch_id), None)?;
        } else if !request.is_batch() || args.resend_unconfirmed {
            // Subscribing twice is the same as subscribing once.
            journal.set_state(request.seq, ReqState::Planned, None, None)?;
        } else if args.abandon_unconfirmed {
            journal.set_state(
                request.seq,
                ReqState::Abandoned,
                None,
                Some("abandoned after an interrupted POST"),
            )?;
        }
    }
    Ok(())
}

/// One run of the send, wait and fetch phases.
struct Job<'a> {
    args: &'a Args,
    client: &'a Client,
    journal: &'a Journal,
    paths: &'a Paths,
    out: Option<RowFile>,
    changes: Option<RowFile>,
    progress: &'a Progress,
}

impl Job<'_> {
    /// Returns true when the job is complete.
    async fn run(&mut self) -> Result<bool, CliError> {
        let requests = self.journal.requests()?;
        let format = Format::of(&self.args.out);
        self.out = Some(
            RowFile::open(
                &self.paths.partial,
                format,
                RESULT_COLUMNS,
                self.journal.meta_u64("results_len")?,
            )
            .map_err(io_err(&self.paths.partial))?,
        );
        self.changes = Some(
            RowFile::open(
                &self.paths.changes,
                Format::Csv,
                CHANGE_COLUMNS,
                self.journal.meta_u64("changes_len")?,
            )
            .map_err(io_err(&self.paths.changes))?,
        );
        // Save the lengths now, so that a run killed before its first fetch leaves them right.
        self.checkpoint()?;

        // The webhook receiver, when asked for.
        let (tx, mut events) = mpsc::unbounded_channel::<WebhookEvent>();
        let receiver = if self.args.wait == Wait::Webhook {
            Some(self.start_receiver(tx).await?)
        } else {
            drop(tx);
            None
        };

        let result = self.send_and_wait(requests, &mut events).await;
        if let Some(receiver) = receiver {
            receiver.shutdown().await;
        }
        result
    }

    async fn start_receiver(
        &self,
        tx: mpsc::UnboundedSender<WebhookEvent>,
    ) -> Result<WebhookReceiver, CliError> {
        let token = self
            .args
            .token
            .clone()
            .unwrap_or_else(cardsync_hyper::random_token);
        let receiver = WebhookReceiver::start(
            self.args.listen,
            &token,
            ReceiverOptions::default(),
            move |event: WebhookEvent| {
                let tx = tx.clone();
                async move { tx.send(event).map_err(HandlerError::new) }
            },
        )
        .await
        .map_err(|e| CliError::Usage(format!("cannot start the webhook receiver: {e}")))?;
        let url = self
            .args
            .public_url
            .clone()
            .unwrap_or_else(|| receiver.url());
        let hooks = SetWebhooks::new()
            .with(Trigger::BatchAvailable, url.clone())
            .with(Trigger::BatchError, url.clone())
            .with(Trigger::AmexUpdate, url);
        self.client
            .set_webhooks(&hooks)
            .await
            .map_err(|e| remote_error("registering the webhook receiver", e))?;
        Ok(receiver)
    }

    fn checkpoint(&mut self) -> Result<(), CliError> {
        let out = self.out.as_mut().expect("open");
        let len = out.checkpoint().map_err(io_err(&self.paths.partial))?;
        let changes = self.changes.as_mut().expect("open");
        let changes_len = changes.checkpoint().map_err(io_err(&self.paths.changes))?;
        self.journal.set_meta("results_len", &len.to_string())?;
        self.journal
            .set_meta("changes_len", &changes_len.to_string())?;
        Ok(())
    }

    async fn send_and_wait(
        &mut self,
        mut requests: Vec<RequestRow>,
        events: &mut mpsc::UnboundedReceiver<WebhookEvent>,
    ) -> Result<bool, CliError> {
        // Send.
        let to_send = requests
            .iter()
            .filter(|r| r.state == ReqState::Planned)
            .count();
        let bar = self.progress.bar(Some(to_send as u64), "sending");
        let mut previous: Option<RequestRow> = None;
        for request in requests.iter_mut().filter(|r| r.state == ReqState::Planned) {
            let p = previous.take();
            self.send(request, p.as_ref()).await?;
            if request.state == ReqState::Sent {
                previous = Some(request.clone());
            }
            bar.inc(1);
            // Fetch what is ready while sending, so that results stream.
            while let Ok(event) = events.try_recv() {
                self.record_event(&event)?;
            }
        }
        bar.finish_and_clear();

        // Wait and fetch.
        let batches = requests.iter().filter(|r| r.is_batch()).count();
        let bar = self.progress.bar(Some(batches as u64), "fetching");
        let mut pause = Duration::from_millis(50);
        let amex_cards: i64 = requests
            .iter()
            .filter(|r| !r.is_batch() && r.state == ReqState::Done)
            .map(|r| r.cards)
            .sum();
        let mut amex_deadline: Option<Instant> = None;
        loop {
            let mut progressed = self.handle_events().await?;
            let requests = self.journal.requests()?;
            for request in &requests {
                progressed |= self.advance(request).await?;
            }
            let requests = self.journal.requests()?;
            bar.set_position(
                requests
                    .iter()
                    .filter(|r| r.is_batch() && r.state.is_final())
                    .count() as u64,
            );
            let unconfirmed = requests.iter().any(|r| r.state == ReqState::Sending);
            let batches_done = requests
                .iter()
                .filter(|r| r.is_batch())
                .all(|r| r.state.is_final() || r.state == ReqState::Sending);
            if batches_done {
                if unconfirmed {
                    bar.finish_and_clear();
                    return Ok(false);
                }
                let amex_pending = self.args.wait == Wait::Webhook
                    && (self.journal.meta_u64("amex_results")? as i64) < amex_cards;
                if !amex_pending {
                    break;
                }
                let deadline =
                    *amex_deadline.get_or_insert_with(|| Instant::now() + self.args.amex_wait);
                if Instant::now() >= deadline {
                    break;
                }
            }
            if progressed {
                pause = Duration::from_millis(50);
                continue;
            }
            // With webhooks, an event wakes us early; polling stays as a slow fallback.
            let wait = if self.args.wait == Wait::Webhook {
                self.args.poll_max
            } else {
                pause
            };
            let wait = match amex_deadline {
                Some(d) => wait.min(d.saturating_duration_since(Instant::now())),
                None => wait,
            };
            if let Ok(Some(event)) = tokio::time::timeout(wait, events.recv()).await {
                self.record_event(&event)?;
            }
            pause = (pause * 2).min(self.args.poll_max);
        }
        bar.finish_and_clear();
        Ok(true)
    }

    /// Sends one planned request.
    async fn send(
        &mut self,
        request: &mut RequestRow,
        previous: Option<&RequestRow>,
    ) -> Result<(), CliError> {
        let body = self.journal.body(request.seq)?;
        let subscribe = if request.is_batch() {
            None
        } else {
            Some(stored_subscription(request.seq, &body)?)
        };
        // The server may receive it from here on.
        self.journal
            .set_state(request.seq, ReqState::Sending, None, None)?;
        crash_point("sending");
        // While CardSync takes this request, fetch the previous batch's results if they are
        // ready, so that the two sides work at once.
        let client = self.client;
        let post = async {
            match &subscribe {
                // The body exactly as planned; CreateBatch built and checked it.
                None => client
                    .call(&StoredBatch { body })
                    .await
                    .map(|created| Some(created.batch_id)),
                Some(s) => client.subscribe(s).await.map(|_| None),
            }
        };
        let fetch = async {
            match previous {
                Some(p) => ready_results(client, p).await.ok().flatten(),
                None => None,
            }
        };
        let (answer, fetched) = tokio::join!(post, fetch);
        crash_point("answered");
        let outcome = match answer {
            Ok(Some(batch_id)) => {
                self.journal
                    .set_state(request.seq, ReqState::Sent, Some(&batch_id), None)?;
                request.state = ReqState::Sent;
                request.batch_id = Some(batch_id);
                crash_point("sent");
                Ok(())
            }
            Ok(None) => {
                self.journal.begin()?;
                self.journal
                    .set_state(request.seq, ReqState::Done, None, Some("subscribed"))?;
                self.journal.add_tally("subscribed", request.cards)?;
                self.journal.commit()?;
                request.state = ReqState::Done;
                crash_point("sent");
                Ok(())
            }
            Err(e) => self.send_failed(request, e),
        };
        if let (Some(p), Some(results)) = (previous, fetched) {
            self.store_batch_results(p, &results)?;
        }
        outcome
    }

    /// A POST that failed: refused (not created), not sent at all, or unknown.
    fn send_failed(&mut self, request: &mut RequestRow, e: CallError) -> Result<(), CliError> {
        let what = format!("request {} ({} cards)", request.seq, request.cards);
        match (&e, e.status()) {
            (_, Some(s)) if s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429 => {
                // CardSync read it and refused it: nothing was created.
                let message = e.to_string();
                self.journal
                    .set_state(request.seq, ReqState::Failed, None, Some(&message))?;
                request.state = ReqState::Failed;
                eprintln!("CardSync refused {what}: {message}");
                Ok(())
            }
            (CallError::Transport(t), _) if t.reached() == Reached::No => {
                self.journal
                    .set_state(request.seq, ReqState::Planned, None, None)?;
                Err(remote_error(&format!("sending {what}"), e))
            }
            (CallError::Encode(_), _) => {
                self.journal
                    .set_state(request.seq, ReqState::Planned, None, None)?;
                Err(remote_error(&format!("sending {what}"), e))
            }
            _ => Err(remote_error(
                &format!("sending {what}; CardSync may or may not have received it"),
                e,
            )),
        }
    }

    /// Moves a sent batch on: checks its status, fetches its results. Returns whether
    /// anything changed.
    async fn advance(&mut self, request: &RequestRow) -> Result<bool, CliError> {
        let Some(batch_id) = request.batch_id.as_deref() else {
            return Ok(false);
        };
        match request.state {
            ReqState::Sent if self.args.wait == Wait::Poll || request.event_id.is_none() => {
                let info = self
                    .client
                    .batch(batch_id)
                    .await
                    .map_err(|e| remote_error(&format!("batch {batch_id}"), e))?;
                match info.status {
                    BatchState::Completed => {
                        self.journal
                            .set_state(request.seq, ReqState::Completed, None, None)?;
                        let mut request = request.clone();
                        request.state = ReqState::Completed;
                        self.fetch_batch(&request).await?;
                        Ok(true)
                    }
                    BatchState::Error => {
                        self.batch_failed(request, "CardSync reported the batch in error")?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            ReqState::Completed => {
                self.fetch_batch(request).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn batch_failed(&mut self, request: &RequestRow, message: &str) -> Result<(), CliError> {
        self.journal.begin()?;
        self.journal
            .set_state(request.seq, ReqState::Failed, None, Some(message))?;
        self.journal.add_tally("batch_error", request.cards)?;
        self.journal.commit()?;
        eprintln!(
            "batch {} (request {}, {} cards): {message}",
            request.batch_id.as_deref().unwrap_or("?"),
            request.seq,
            request.cards
        );
        Ok(())
    }

    async fn fetch_batch(&mut self, request: &RequestRow) -> Result<(), CliError> {
        let batch_id = request.batch_id.as_deref().unwrap_or_default();
        let results = self
            .client
            .batch_results(batch_id, request.event_id.as_deref())
            .await
            .map_err(|e| remote_error(&format!("results of batch {batch_id}"), e))?;
        self.store_batch_results(request, &results)
    }

    /// Writes a batch's results and records them, with the batch done, in one transaction.
    fn store_batch_results(
        &mut self,
        request: &RequestRow,
        results: &Results,
    ) -> Result<(), CliError> {
        let batch_id = request.batch_id.as_deref().unwrap_or_default();
        // The cards as sent are read back only for what the results alone cannot tell: the
        // old last 4 of changed cards.
        let has_changes = results.cards.iter().any(|c| {
            matches!(
                c.status,
                Some(UpdateStatus::UpdatedCard | UpdateStatus::UpdatedExpiry)
            )
        });
        let submitted = if has_changes {
            decode_cards_body(&self.journal.body(request.seq)?).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.store_results(
            results,
            Submitted {
                cards: request.cards as u64,
                changed: &submitted,
            },
            Some(batch_id),
            request.event_id.as_deref(),
            |journal| journal.set_state(request.seq, ReqState::Done, None, None),
        )
    }

    /// Writes results to the files and, in one transaction, records the files' new lengths,
    /// the counts per status, and whatever `done` records of where they came from.
    fn store_results(
        &mut self,
        results: &Results,
        submitted: Submitted<'_>,
        batch_id: Option<&str>,
        event_id: Option<&str>,
        done: impl FnOnce(&Journal) -> crate::journal::Result<()>,
    ) -> Result<(), CliError> {
        self.write_results(results, submitted.changed, batch_id, event_id)?;
        let mut tally = Vec::new();
        self.count(results, submitted, &mut tally);
        self.journal.begin()?;
        self.checkpoint()?;
        for (status, n) in &tally {
            self.journal.add_tally(status, *n as i64)?;
        }
        done(self.journal)?;
        self.journal.commit()?;
        crash_point("fetched");
        Ok(())
    }

    /// Counts results per status, and the submitted cards that got none.
    fn count(&self, results: &Results, submitted: Submitted<'_>, tally: &mut Vec<(String, u64)>) {
        let mut add = |status: &str, k: u64| match tally.iter_mut().find(|(s, _)| s == status) {
            Some((_, n)) => *n += k,
            None => tally.push((status.to_owned(), k)),
        };
        let mut returned = std::collections::HashSet::with_capacity(results.cards.len());
        for card in &results.cards {
            add(
                card.status.as_ref().map_or("(none)", UpdateStatus::as_str),
                1,
            );
            returned.insert(card.id.as_str());
        }
        // Ids are unique in a request (the plan took duplicates out), so the cards that got
        // no result are the ones left over.
        let missing = submitted.cards.saturating_sub(returned.len() as u64);
        if missing > 0 {
            add("no_result", missing);
        }
    }

    /// Appends results to the results file and the changes file (not yet durable).
    fn write_results(
        &mut self,
        results: &Results,
        submitted: &[cardsync_proto::SubmittedCard],
        batch_id: Option<&str>,
        event_id: Option<&str>,
    ) -> Result<(), CliError> {
        // The cards as submitted, for the old last 4: given only when some card changed
        // (batches; subscription updates carry only the new card).
        let submitted: HashMap<&str, String> = submitted
            .iter()
            .filter_map(|c| Some((c.id.as_deref()?, last4(c.card.as_ref()?))))
            .collect();
        let out = self.out.as_mut().expect("open");
        for card in &results.cards {
            let status = card.status.as_ref().map(UpdateStatus::as_str);
            out.row(&[
                Some(&card.id),
                status,
                Some(card.card.expose()),
                card.exp.as_deref(),
                card.se_number.as_deref(),
                batch_id,
                event_id,
            ])
            .map_err(io_err(&self.paths.partial))?;
        }
        let changes = self.changes.as_mut().expect("open");
        for card in &results.cards {
            let Some(status @ (UpdateStatus::UpdatedCard | UpdateStatus::UpdatedExpiry)) =
                &card.status
            else {
                continue;
            };
            let new = last4(&card.card);
            let brand = card
                .card
                .to_pan()
                .map(|p| p.brand())
                .unwrap_or(Brand::Unknown);
            let exp = card.expiry().map(|e: Expiry| e.to_string());
            changes
                .row(&[
                    Some(&card.id),
                    Some(status.as_str()),
                    Some(brand.as_str()),
                    submitted.get(card.id.as_str()).map(String::as_str),
                    Some(new.as_str()),
                    exp.as_deref().or(card.exp.as_deref()),
                    batch_id,
                    event_id,
                ])
                .map_err(io_err(&self.paths.changes))?;
        }
        Ok(())
    }

    fn record_event(&mut self, event: &WebhookEvent) -> Result<(), CliError> {
        let Some(event_id) = event.event_id() else {
            return Ok(());
        };
        let batch_id = match event {
            WebhookEvent::BatchAvailable(e) => e.batch_id.as_deref(),
            WebhookEvent::BatchError(e) => e.batch_id.as_deref(),
            _ => None,
        };
        let trigger = event.trigger().map(|t| u64::from(t.id()));
        if !self
            .journal
            .add_event(event_id, trigger, batch_id, now_ms())?
        {
            tracing::debug!(event_id, "webhook redelivered; already recorded");
        }
        Ok(())
    }

    /// Acts on the recorded events not yet handled. Returns whether there were any.
    async fn handle_events(&mut self) -> Result<bool, CliError> {
        let pending = self.journal.pending_events()?;
        if pending.is_empty() {
            return Ok(false);
        }
        let requests = self.journal.requests()?;
        for event in pending {
            let event_id = event.event_id;
            let batch_id = event.batch_id;
            let trigger = event.trigger_id.and_then(|t| Trigger::from_id(t as u32));
            let request = batch_id
                .as_deref()
                .and_then(|b| requests.iter().find(|r| r.batch_id.as_deref() == Some(b)));
            match (trigger, request) {
                (Some(Trigger::BatchAvailable), Some(r)) if r.state == ReqState::Sent => {
                    self.journal.begin()?;
                    self.journal.set_event(r.seq, &event_id)?;
                    self.journal
                        .set_state(r.seq, ReqState::Completed, None, None)?;
                    self.journal.set_event_state(&event_id, "handled")?;
                    self.journal.commit()?;
                }
                (Some(Trigger::BatchError), Some(r)) if !r.state.is_final() => {
                    self.batch_failed(r, "CardSync reported an error in the batch (webhook 22)")?;
                    self.journal.set_event_state(&event_id, "handled")?;
                }
                (Some(Trigger::AmexUpdate), _) => {
                    let results =
                        self.client
                            .subscription_results(&event_id)
                            .await
                            .map_err(|e| {
                                remote_error(&format!("American Express update {event_id}"), e)
                            })?;
                    let got = results.cards.len() as u64;
                    let none = Submitted {
                        cards: 0,
                        changed: &[],
                    };
                    self.store_results(&results, none, None, Some(&event_id), |journal| {
                        // These cards were counted as subscribed; now they have a result.
                        journal.add_tally("subscribed", -(got as i64))?;
                        let amex = journal.meta_u64("amex_results")? + got;
                        journal.set_meta("amex_results", &amex.to_string())?;
                        journal.set_event_state(&event_id, "handled")
                    })?;
                }
                _ => {
                    // Not ours (another job's batch), or already handled.
                    self.journal.set_event_state(&event_id, "ignored")?;
                }
            }
        }
        Ok(true)
    }
}

/// A batch request whose body was built by [`CreateBatch`] when the job was planned and kept
/// in the journal: sent as it is, so that a resumed job sends exactly what it planned.
struct StoredBatch {
    body: Vec<u8>,
}

impl Endpoint for StoredBatch {
    type Output = cardsync_proto::BatchCreated;
    const METHOD: http::Method = http::Method::POST;
    const PATH: &'static str = CreateBatch::PATH;
    const SCOPE: cardsync_proto::KeyScope = cardsync_proto::KeyScope::Merchant;
    const IDEMPOTENCY: cardsync_proto::Idempotency = cardsync_proto::Idempotency::NotIdempotent;

    fn encode(
        &self,
        config: &cardsync_proto::Config,
    ) -> Result<http::Request<Vec<u8>>, cardsync_proto::EncodeError> {
        let base = config.base_url().as_str().trim_end_matches('/');
        let uri = format!("{base}{}", Self::PATH);
        http::Request::builder()
            .method(Self::METHOD)
            .uri(uri)
            .header(
                http::header::AUTHORIZATION,
                config.authorization(Self::SCOPE)?,
            )
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, config.user_agent().clone())
            .body(self.body.clone())
            .map_err(|_| cardsync_proto::EncodeError::InvalidUri {
                path: Self::PATH.to_owned(),
            })
    }

    fn decode<B: AsRef<[u8]>>(
        response: &http::Response<B>,
    ) -> Result<cardsync_proto::BatchCreated, cardsync_proto::DecodeError> {
        CreateBatch::decode(response)
    }
}

/// The last four digits of a returned card, as its mask shows them.
fn last4(card: &cardsync_proto::ReturnedCard) -> String {
    let masked = card.masked();
    let s = masked.as_str();
    s[s.len().saturating_sub(4)..].to_owned()
}

/// What was sent for a set of results.
#[derive(Clone, Copy)]
struct Submitted<'a> {
    /// How many cards were sent (0 for American Express updates, which answer no request).
    cards: u64,
    /// The cards as sent, when some result changed a card (for the old last 4); else empty.
    changed: &'a [cardsync_proto::SubmittedCard],
}

/// The results of a sent batch if it is complete, else `None`.
async fn ready_results(
    client: &Client,
    request: &RequestRow,
) -> Result<Option<Results>, CallError> {
    let Some(batch_id) = request.batch_id.as_deref() else {
        return Ok(None);
    };
    if client.batch(batch_id).await?.status != BatchState::Completed {
        return Ok(None);
    }
    client
        .batch_results(batch_id, request.event_id.as_deref())
        .await
        .map(Some)
}

/// A subscription request rebuilt from its stored body.
fn stored_subscription(seq: i64, body: &[u8]) -> Result<Subscribe, CliError> {
    let cards = decode_cards_body(body)
        .map_err(|e| CliError::Usage(format!("request {seq} in the journal is damaged: {e}")))?;
    let cards = cards
        .into_iter()
        .map(|c| {
            let se = SeNumber::parse(c.se_number.as_deref().unwrap_or_default())
                .map_err(|e| CliError::Usage(format!("journal: {e}")))?;
            Ok(SubscriptionCard::new(
                se,
                c.id.unwrap_or_default(),
                stored_pan(c.card.as_ref())?,
                stored_exp(c.exp.as_deref())?,
            ))
        })
        .collect::<Result<Vec<_>, CliError>>()?;
    Subscribe::new(cards).map_err(|e| CliError::Usage(format!("request {seq}: {e}")))
}

fn stored_pan(card: Option<&cardsync_proto::ReturnedCard>) -> Result<Pan, CliError> {
    card.and_then(|c| c.to_pan().ok())
        .ok_or_else(|| CliError::Usage("a card in the journal is damaged".to_owned()))
}

fn stored_exp(exp: Option<&str>) -> Result<Expiry, CliError> {
    exp.and_then(|e| Expiry::parse(e).ok())
        .ok_or_else(|| CliError::Usage("an expiry in the journal is damaged".to_owned()))
}

fn summarize(journal: &Journal, paths: &Paths, done: bool) -> Result<SyncSummary, CliError> {
    let requests = journal.requests()?;
    let statuses: Vec<(String, u64)> = journal
        .tally()?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    Ok(SyncSummary {
        done,
        rows: journal.meta_u64("rows")?,
        invalid_rows: journal.meta_u64("invalid")?,
        requests: requests.len(),
        batches: requests.iter().filter(|r| r.is_batch()).count(),
        subscriptions: requests.iter().filter(|r| !r.is_batch()).count(),
        results: statuses
            .iter()
            .filter(|(s, _)| !matches!(s.as_str(), "subscribed" | "no_result" | "batch_error"))
            .map(|(_, n)| n)
            .sum(),
        statuses: statuses
            .into_iter()
            .map(|(status, cards)| StatusCount {
                meaning: meaning(&status),
                status,
                cards,
            })
            .collect(),
        unconfirmed: requests
            .iter()
            .filter(|r| r.state == ReqState::Sending)
            .map(|r| r.seq)
            .collect(),
        failed: requests
            .iter()
            .filter(|r| r.state == ReqState::Failed)
            .map(|r| (r.seq, r.message.clone().unwrap_or_default()))
            .collect(),
        results_file: done.then(|| paths.out.display().to_string()),
        changes_file: done.then(|| paths.changes.display().to_string()),
    })
}

fn print_summary<W: Write>(
    reporter: &mut Reporter<W>,
    summary: &SyncSummary,
    global: &Global,
) -> Result<(), CliError> {
    match global.output {
        OutputFormat::Json => reporter.json_line(&serde_json::json!({ "sync": summary }))?,
        OutputFormat::Text => {
            let out = reporter.out();
            writeln!(
                out,
                "\n{} rows: {} invalid; {} requests (batches: {}, subscriptions: {})",
                summary.rows,
                summary.invalid_rows,
                summary.requests,
                summary.batches,
                summary.subscriptions
            )?;
            if !summary.statuses.is_empty() {
                writeln!(out, "\n{:<16} {:>9}  MEANING", "STATUS", "CARDS")?;
                for s in &summary.statuses {
                    writeln!(out, "{:<16} {:>9}  {}", s.status, s.cards, s.meaning)?;
                }
            }
            if let (Some(results), Some(changes)) = (&summary.results_file, &summary.changes_file) {
                writeln!(
                    out,
                    "\nresults: {results} (mode 0600: it holds full card numbers; keep it safe \
                     and delete it once applied)"
                )?;
                writeln!(out, "what changed, per id: {changes}")?;
            }
            for seq in &summary.unconfirmed {
                writeln!(
                    out,
                    "\nrequest {seq} was being sent when a run stopped: CardSync may have \
                     created it, and a batch sent twice is billed twice. Find out whether it \
                     arrived (the CardSync dashboard, or a batch-available webhook for a \
                     batch id this job does not know), then run the same command with one of:\n  \
                     --adopt {seq}=BATCH_ID     it arrived, as batch BATCH_ID\n  \
                     --resend-unconfirmed   it did not arrive: send it again\n  \
                     --abandon-unconfirmed  leave its cards out of this job"
                )?;
            }
            for (seq, message) in &summary.failed {
                writeln!(
                    out,
                    "\nrequest {seq} failed, and its cards have no results: {message}"
                )?;
            }
            if summary.statuses.iter().any(|s| s.status == "subscribed") {
                writeln!(
                    out,
                    "\nAmerican Express cards are subscribed: their updates arrive as webhooks. \
                     Run `cardsync listen` (or sync with --wait webhook) to collect them."
                )?;
            }
        }
    }
    reporter.flush()?;
    Ok(())
}
