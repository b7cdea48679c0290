//! `cardsync sync` on one machine: a thin driver of `cardsync-job` over the SQLite journal,
//! the HTTPS transport and the results files.
//!
//! This module takes the job's lease (or says who holds it), plans the card file into the
//! journal, starts the webhook receiver when asked, runs the job with `cardsync_job::run`, and
//! prints the summary and the exit code. Everything that makes the job exactly-once lives in
//! `cardsync-job`.

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cardsync_core::{Planner, RejectReason};
use cardsync_hyper::{Client, HyperTransport, WebhookReceiver};
use cardsync_job::{
    Acquired, Change, Changes, Decision, Env, EventState, FileSink, Holder, Job, JobOptions, Lease,
    LeaseKeeper, PlanRecorder, RequestState, RunError, Sink, Snapshot, Store, StoreError, Summary,
    Unconfirmed, Wait as JobWait, run as run_job,
};
use cardsync_job_sqlite::SqliteStore;
use cardsync_proto::transport::{Transport, TransportError};
use cardsync_proto::{BaseUrl, WebhookEvent, paths};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use super::args::{Args, Wait};
use super::dedupe::SpillSeen;
use super::lease::{holder_gone, now_ms, this_holder};
use crate::cli::Global;
use crate::error::{CliError, Exit, io_err};
use crate::files;
use crate::remote::{Delivered, receiver_channel, remote_error};
use crate::report::{Problem, Reporter};

use super::summary::{SyncSummary, UnconfirmedRequest, exit_for, print_summary, summary_path};

pub(crate) use cardsync_job::RESULT_COLUMNS;

/// How many invalid rows `sync` shows on the terminal; the rejects file has every one.
const SHOWN_REJECTS: u64 = 5;

/// The crash and freeze points of the process tests (`cardsync_job::hooks`: compiled only for
/// the tests; nothing in a release build).
fn crash_point(point: &str) {
    cardsync_job::hooks::reached(point);
}

/// The journal, with the crash test's hook after each commit.
struct Journal {
    store: SqliteStore,
}

impl Journal {
    fn path(&self) -> &Path {
        self.store.path()
    }

    fn err(&self) -> impl Fn(StoreError) -> CliError + '_ {
        |source| CliError::Journal {
            path: self.store.path().to_owned(),
            source,
        }
    }
}

impl Store for Journal {
    fn acquire(
        &mut self,
        holder: &Holder,
        now_ms: u64,
        ttl_ms: u64,
        gone: &dyn Fn(&Holder) -> bool,
    ) -> Result<Acquired, StoreError> {
        self.store.acquire(holder, now_ms, ttl_ms, gone)
    }

    fn renew(&mut self, lease: &Lease, now_ms: u64, ttl_ms: u64) -> Result<Lease, StoreError> {
        self.store.renew(lease, now_ms, ttl_ms)
    }

    fn release(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.store.release(lease)
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.store.load()
    }

    fn cards(&mut self, seq: u64) -> Result<Vec<cardsync_job::StoredCard>, StoreError> {
        self.store.cards(seq)
    }

    fn apply(&mut self, lease: &Lease, changes: &Changes) -> Result<(), StoreError> {
        if changes
            .items()
            .iter()
            .any(|c| matches!(c, Change::Event(e) if e.state == EventState::Received))
        {
            crash_point("recording");
        }
        self.store.apply(lease, changes)?;
        crash_point("apply");
        for change in changes.items() {
            match change {
                Change::Meta { key, value } if key == "planned" && value == "1" => {
                    crash_point("planned");
                }
                Change::Meta { key, value } if key == "phase" => crash_point(value),
                Change::Request(u) if u.to == RequestState::Sending => crash_point("sending"),
                Change::Request(u)
                    if u.from == RequestState::Sending && u.to == RequestState::Sent =>
                {
                    crash_point("sent");
                }
                Change::Request(u)
                    if u.to == RequestState::Done && u.from != RequestState::Sending =>
                {
                    crash_point("fetched");
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The results files, with the crash test's hook once they are renamed into place.
struct HookedSink(FileSink);

impl Sink for HookedSink {
    fn rewind(
        &mut self,
        checkpoint: &cardsync_job::Checkpoint,
    ) -> Result<(), cardsync_job::SinkError> {
        self.0.rewind(checkpoint)
    }

    fn append(&mut self, rows: &[cardsync_job::ResultRow]) -> Result<(), cardsync_job::SinkError> {
        self.0.append(rows)
    }

    fn checkpoint(&mut self) -> Result<cardsync_job::Checkpoint, cardsync_job::SinkError> {
        self.0.checkpoint()
    }

    fn finish(&mut self) -> Result<(), cardsync_job::SinkError> {
        self.0.finish()?;
        crash_point("renamed");
        Ok(())
    }
}

/// The HTTPS transport, with the crash test's hook once a batch POST is answered.
struct Hooked<'a>(&'a HyperTransport);

impl Transport for Hooked<'_> {
    async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        let creates =
            request.method() == http::Method::POST && request.uri().path() == paths::BATCH;
        let answer = self.0.send(request).await;
        if creates {
            crash_point("answered");
        }
        answer
    }
}

/// The progress bar, drawn on stderr only when it is a terminal.
fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template(
            "[{bar:30}] {pos}/{len} requests done, {elapsed} (about {eta} left) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The runtime's part of the job: tokio's clock, the webhook receiver's events (each
/// acknowledged once the job recorded it), the decisions given on the command line, the
/// progress bar.
struct CliEnv {
    /// Set by the first Ctrl-C or SIGTERM.
    interrupt: Interrupt,
    events: Option<mpsc::Receiver<Delivered>>,
    /// Deliveries waiting for their event to be recorded, by the event's key.
    acks: HashMap<String, Vec<tokio::sync::oneshot::Sender<()>>>,
    adopt: HashMap<u64, String>,
    resend: bool,
    abandon: bool,
    bar: ProgressBar,
}

impl Env for CliEnv {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        now_ms()
    }

    async fn wait(&mut self, deadline: Option<Instant>) -> Option<WebhookEvent> {
        let interrupted = self.interrupt.notify.clone();
        let sleep = async {
            tokio::select! {
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                } => {}
                // A stop is asked: back to the driver, which asks `stop_requested`.
                () = interrupted.notified() => {}
            }
        };
        let Some(events) = &mut self.events else {
            sleep.await;
            return None;
        };
        tokio::select! {
            delivered = events.recv() => match delivered {
                Some((event, ack)) => {
                    // Keyless events are refused by the receiver before they get here.
                    if let Some(key) = event.dedup_key() {
                        self.acks.entry(key).or_default().push(ack);
                    }
                    Some(event)
                }
                None => {
                    self.events = None;
                    None
                }
            },
            () = sleep => None,
        }
    }

    fn recorded(&mut self, key: &str) {
        for ack in self.acks.remove(key).into_iter().flatten() {
            let _ = ack.send(());
        }
    }

    fn decide(&mut self, unconfirmed: &Unconfirmed) -> Option<Decision> {
        if !unconfirmed.earlier {
            // Left so by this run: the user has not seen it yet.
            return None;
        }
        if let Some(batch_id) = self.adopt.remove(&unconfirmed.seq) {
            Some(Decision::Adopt(batch_id))
        } else if self.resend {
            Some(Decision::Resend)
        } else if self.abandon {
            Some(Decision::Abandon)
        } else {
            None
        }
    }

    fn stop_requested(&mut self) -> Option<String> {
        let signal = self.interrupt.signal.load(Ordering::SeqCst);
        (signal != 0).then(|| {
            format!(
                "stopped by {} before the job was done; what was under way was answered and \
                 recorded",
                if signal == SIGTERM {
                    "SIGTERM"
                } else {
                    "Ctrl-C"
                }
            )
        })
    }

    fn progress(&mut self, job: &Job) {
        let requests = job.requests();
        self.bar.set_length(requests.len() as u64);
        self.bar
            .set_position(requests.iter().filter(|r| r.state.is_final()).count() as u64);
        self.bar.set_message(phases(requests));
    }
}

/// Where the requests stand, by phase: "to send 4 · sending 2 · at CardSync 3 · fetching 1".
fn phases(requests: &[cardsync_job::RequestRecord]) -> String {
    let count = |state: RequestState| requests.iter().filter(|r| r.state == state).count();
    [
        ("to send", count(RequestState::Planned)),
        ("sending", count(RequestState::Sending)),
        ("at CardSync", count(RequestState::Sent)),
        ("fetching results", count(RequestState::Completed)),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(phase, n)| format!("{phase} {n}"))
    .collect::<Vec<_>>()
    .join(" · ")
}

const SIGINT: u8 = 2;
const SIGTERM: u8 = 15;

/// Ctrl-C and SIGTERM while the job runs: the first asks the run to stop once what is under
/// way is answered and recorded (the job then starts no call); a second one stops the process
/// at once.
struct Interrupt {
    /// The signal that asked for the stop (`SIGINT` or `SIGTERM`), 0 for none.
    signal: Arc<AtomicU8>,
    notify: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Interrupt {
    fn listen(quiet: bool) -> Result<Interrupt, CliError> {
        let signal = Arc::new(AtomicU8::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| CliError::Usage(format!("cannot listen for SIGTERM: {e}")))?;
        let task = {
            let (signal, notify) = (signal.clone(), notify.clone());
            tokio::spawn(async move {
                loop {
                    #[cfg(unix)]
                    let which = tokio::select! {
                        r = tokio::signal::ctrl_c() => { if r.is_err() { return; } SIGINT }
                        _ = term.recv() => SIGTERM,
                    };
                    #[cfg(not(unix))]
                    let which = match tokio::signal::ctrl_c().await {
                        Ok(()) => SIGINT,
                        Err(_) => return,
                    };
                    if signal.swap(which, Ordering::SeqCst) != 0 {
                        eprintln!(
                            "\nstopped at once; requests that were being sent may need a decision"
                        );
                        std::process::exit(128 + i32::from(which));
                    }
                    if !quiet {
                        eprintln!(
                            "\nstopping: no new request is sent; waiting for the answers under way \
                             to be recorded (again to stop at once)"
                        );
                    }
                    notify.notify_one();
                }
            })
        };
        Ok(Interrupt {
            signal,
            notify,
            task,
        })
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Identifies the input and the settings a journal belongs to.
fn identity(args: &Args, base_url: &str) -> Result<Vec<(String, String)>, CliError> {
    let meta = std::fs::metadata(&args.file).map_err(io_err(&args.file))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let file = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
    Ok([
        ("input", file.display().to_string()),
        ("input_size", meta.len().to_string()),
        ("input_mtime", mtime.to_string()),
        ("base_url", base_url.to_owned()),
        ("se_number", args.se_number.clone().unwrap_or_default()),
        ("max_per_request", args.max_per_request.to_string()),
        ("columns", crate::input::column_names().describe()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect())
}

/// `--public-url` must be a URL CardSync may call, ending in `/webhooks/TOKEN` with `--token`'s
/// value: otherwise every webhook would miss the receiver, and the run would wait the whole
/// `--poll-max` for each batch. Checked before anything is planned.
fn check_public_url(args: &Args) -> Result<(), CliError> {
    let Some(url) = &args.public_url else {
        return Ok(());
    };
    let shown = cardsync_proto::webhook_url::display(url);
    cardsync_proto::webhook_url::check(url)
        .map_err(|e| CliError::Usage(format!("--public-url {shown}: {e}")))?;
    let path = url
        .parse::<http::Uri>()
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let token = args.token.as_deref().unwrap_or_default();
    if token.is_empty() || !path.ends_with(&format!("/webhooks/{token}")) {
        return Err(CliError::Usage(format!(
            "--public-url {shown}: its path must end with /webhooks/TOKEN, with the receiver's \
             --token (CARDSYNC_WEBHOOK_TOKEN), or CardSync's events would never reach it"
        )));
    }
    Ok(())
}

/// Whether a recorded setting of the journal's job is the same as now: base URLs compared as
/// parsed (`http://h:1` is `http://h:1/`), the rest as written.
fn same_setting(key: &str, recorded: &str, now: &str) -> bool {
    if key == "base_url" {
        let parsed = |s: &str| BaseUrl::parse(s).map(|b| b.as_str().to_owned());
        if let (Ok(a), Ok(b)) = (parsed(recorded), parsed(now)) {
            return a == b;
        }
    }
    recorded == now
}

/// What differs, in words.
fn differs(key: &str, recorded: &str, now: &str) -> String {
    match key {
        "input" => format!("it was planned from {recorded}, and this run reads {now}"),
        "input_size" => {
            format!("the card file changed since it was planned ({recorded} bytes then, {now} now)")
        }
        "input_mtime" => {
            let when = |ns: &str| {
                ns.parse::<u128>()
                    .ok()
                    .map(|ns| crate::show::utc_time((ns / 1_000_000_000) as u64))
                    .unwrap_or_else(|| ns.to_owned())
            };
            format!(
                "the card file was modified since it was planned (at {} then, {} now)",
                when(recorded),
                when(now)
            )
        }
        "base_url" => format!("it sends to {recorded}, and this run to {now}"),
        "se_number" => format!(
            "its --se-number was {:?}, and this run's is {:?}",
            recorded, now
        ),
        "max_per_request" => {
            format!("its --max-per-request was {recorded}, and this run's is {now}")
        }
        "columns" => format!("its --columns was {recorded:?}, and this run's is {now:?}"),
        _ => format!("{key} was {recorded:?}, now {now:?}"),
    }
}

/// Runs `sync` on the single-machine journal.
pub(crate) fn run(args: Args, global: &Global) -> Result<ExitCode, CliError> {
    crate::pipeline::runtime()?.block_on(run_async(&args, global))
}

fn journal_path(args: &Args) -> PathBuf {
    args.state.clone().unwrap_or_else(|| {
        let mut s = args.out.as_os_str().to_owned();
        s.push(".journal");
        PathBuf::from(s)
    })
}

/// No file `sync` writes may be the card file; an existing results or changes file is written
/// over only with `--force`, or when it is this job's own (its journal exists: a resumed or a
/// finished run).
pub(crate) fn check_files(args: &Args, journal: &Path) -> Result<(), CliError> {
    let sink = FileSink::new(&args.out);
    let input = (args.file.as_os_str() != "-").then_some(args.file.as_path());
    let summary = summary_path(&args.out);
    let rejects = crate::report::rejects_path(&args.out);
    let mut partial = args.out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    files::check_outputs(
        input,
        &[journal, &summary, &rejects, &partial],
        &[sink.path(), sink.changes_path()],
        journal.exists(),
        args.force,
    )
}

fn sync_summary(
    summary: Summary,
    files: &(PathBuf, PathBuf),
    journal: &mut Journal,
) -> SyncSummary {
    let unconfirmed_requests = summary
        .unconfirmed
        .iter()
        .map(|&seq| {
            // A journal that cannot be read here still gives the request number.
            let cards = journal.cards(seq).unwrap_or_default();
            let id = |c: Option<&cardsync_job::StoredCard>| {
                c.map(|c| crate::show::json(&c.id).into_owned())
            };
            UnconfirmedRequest {
                request: seq,
                cards: cards.len(),
                first_id: id(cards.first()),
                last_id: id(cards.last()),
            }
        })
        .collect();
    SyncSummary::new(summary, files, unconfirmed_requests)
}

/// Takes the job's lease, waiting for it as long as `--wait-for-lock` says.
async fn take_lease(journal: &mut Journal, args: &Args, quiet: bool) -> Result<Lease, CliError> {
    let holder = this_holder();
    let ttl = args.lease.as_millis() as u64;
    let deadline = args.wait_for_lock.map(|d| Instant::now() + d);
    let mut said = false;
    loop {
        match journal
            .acquire(&holder, now_ms(), ttl, &holder_gone)
            .map_err(journal.err())?
        {
            Acquired::Taken(lease) => return Ok(lease),
            Acquired::Held(held) => {
                let since = held.holder.since_ms;
                let ago = Duration::from_millis(now_ms().saturating_sub(since)).as_secs();
                let who = format!(
                    "{} (since {ago} s ago; its lease runs out in {} s unless renewed)",
                    held.holder,
                    held.expires_ms.saturating_sub(now_ms()).div_ceil(1000)
                );
                match deadline {
                    Some(d) if Instant::now() < d => {
                        if !said && !quiet {
                            eprintln!(
                                "the job in {} is held by {who}; waiting",
                                journal.path().display()
                            );
                            said = true;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    _ => {
                        return Err(CliError::Usage(format!(
                            "another run holds this job: {who}. Nothing was sent. Wait for it to \
                             finish (or pass --wait-for-lock DURATION), or stop it; a run that was \
                             killed is taken over once its lease runs out (journal {})",
                            journal.path().display()
                        )));
                    }
                }
            }
        }
    }
}

/// Runs `sync` inside a runtime (`demo` uses this).
pub(crate) async fn run_async(args: &Args, global: &Global) -> Result<ExitCode, CliError> {
    let (transport, config) = global.remote.parts()?;
    let journal_path = journal_path(args);
    check_files(args, &journal_path)?;
    check_public_url(args)?;
    let mut journal = Journal {
        store: SqliteStore::open(&journal_path).map_err(|source| CliError::Journal {
            path: journal_path.clone(),
            source,
        })?,
    };
    let lease = take_lease(&mut journal, args, global.quiet).await?;
    let outcome =
        run_with_lease(args, global, &mut journal, lease.clone(), transport, config).await;
    // Give the lease back, so that the next run need not wait for it to run out (refused
    // quietly when this run lost it).
    let _ = journal.release(&lease);
    outcome
}

async fn run_with_lease(
    args: &Args,
    global: &Global,
    journal: &mut Journal,
    lease: Lease,
    transport: HyperTransport,
    config: cardsync_proto::Config,
) -> Result<ExitCode, CliError> {
    let stdout = io::stdout().lock();
    let mut reporter = Reporter::new(io::BufWriter::new(stdout), global.output);
    let mut sink = HookedSink(FileSink::new(&args.out));
    let files = (sink.0.path().to_owned(), sink.0.changes_path().to_owned());
    // Nothing is sent whose results could not be written safely.
    sink.0.check().map_err(CliError::Results)?;

    // The journal must belong to this job.
    let identity = identity(args, config.base_url().as_str())?;
    let snapshot = journal.load().map_err(journal.err())?;
    // Planned again from the card file when the journal is another job's that is finished
    // (kept as a copy first) or that sent nothing yet; the plan's first change discards it.
    let mut start_over = false;
    if snapshot.is_planned()
        && let Some((key, value)) = identity
            .iter()
            .find(|(key, value)| !same_setting(key, snapshot.meta(key).unwrap_or_default(), value))
    {
        let recorded = snapshot.meta(key).unwrap_or_default();
        let why = differs(key, recorded, value);
        let nothing_sent = snapshot
            .requests
            .iter()
            .all(|r| r.state == RequestState::Planned)
            && snapshot.events.is_empty();
        if snapshot.is_done() {
            let stamp = crate::show::utc_time(now_ms() / 1000)
                .replace(['-', ':'], "")
                .replace(' ', "T")
                .replace("TUTC", "Z");
            let mut kept = journal.path().as_os_str().to_owned();
            kept.push(format!(".{stamp}"));
            let kept = PathBuf::from(kept);
            journal.store.archive(&kept).map_err(journal.err())?;
            if !global.quiet {
                eprintln!(
                    "the journal {} holds a finished job ({why}): it was kept as {}, and this \
                     run is a new job (its results replace {} once it is done)",
                    journal.path().display(),
                    kept.display(),
                    args.out.display()
                );
            }
            start_over = true;
        } else if nothing_sent {
            if !global.quiet {
                eprintln!(
                    "planning again: the job in {} had sent nothing yet ({why})",
                    journal.path().display()
                );
            }
            start_over = true;
        } else {
            return Err(CliError::Usage(format!(
                "the journal {} belongs to another job, which is under way: {why}. Run the \
                 command that started that job to finish it, or pass --state with a new file \
                 (or another --out) to start another",
                journal.path().display(),
            )));
        }
    }
    if snapshot.is_done() && !start_over {
        if !global.quiet {
            eprintln!(
                "this job is already complete (journal {}); delete the journal to run it again",
                journal.path().display()
            );
        }
        let summary = sync_summary(Summary::of(&snapshot), &files, journal);
        print_summary(&mut reporter, &summary)?;
        return Ok(exit_for(&summary));
    }

    let adopt = if start_over {
        HashMap::new()
    } else {
        adoptions(args, &snapshot)?
    };
    if !snapshot.is_planned() || start_over {
        let mut reporter = Reporter::new(reporter.out(), global.output)
            .with_rejects(crate::report::rejects_path(&args.out), SHOWN_REJECTS);
        plan(args, journal, &lease, identity, &mut reporter)?;
        reporter.rejects_note()?;
        reporter.warnings_note()?;
        reporter.flush()?;
    } else if !global.quiet {
        eprintln!(
            "resuming the job in {} ({} rows planned earlier)",
            journal.path().display(),
            snapshot.meta_u64("rows")
        );
    }
    let snapshot = journal.load().map_err(journal.err())?;
    sink.rewind(&snapshot.checkpoint)
        .map_err(CliError::Results)?;

    let wait = match args.wait {
        Wait::Poll => JobWait::Poll,
        Wait::Webhook => JobWait::Webhook,
    };
    let now = Instant::now();
    let seed = now_ms() ^ (u64::from(std::process::id()) << 32);
    let options = JobOptions::new(config.clone())
        .with_wait(wait)
        .with_poll_max(args.poll_max)
        .with_amex_wait(args.amex_wait)
        .with_concurrency(usize::from(args.concurrency))
        .with_seed(seed)
        .with_wall_clock(now, SystemTime::now());
    let mut job = Job::new(snapshot, options, now);

    // The webhook receiver, when asked for.
    let (receiver, events) = if args.wait == Wait::Webhook {
        let client = Client::new(transport.clone(), config);
        let (receiver, events, registered) = start_receiver(args, &client, global.quiet).await?;
        (Some((receiver, registered)), Some(events))
    } else {
        (None, None)
    };
    let mut env = CliEnv {
        interrupt: Interrupt::listen(global.quiet)?,
        events,
        acks: HashMap::new(),
        adopt,
        resend: args.resend_unconfirmed,
        abandon: args.abandon_unconfirmed,
        bar: progress_bar(global.quiet),
    };
    let mut keeper = LeaseKeeper::new(lease, args.lease);
    let hooked = Hooked(&transport);
    let outcome = run_job(&mut job, &hooked, journal, &mut sink, &mut keeper, &mut env).await;
    env.bar.finish_and_clear();
    let interrupted = env.interrupt.signal.load(Ordering::SeqCst);
    // Events not recorded are answered 500 (CardSync delivers them again), at once.
    env.events = None;
    env.acks.clear();
    if let Some((receiver, registered)) = receiver {
        receiver.shutdown().await;
        if registered && args.public_url.is_none() && !args.own_emulator && !global.quiet {
            eprintln!(
                "note: the merchant's webhooks still name this run's receiver, which has stopped; \
                 register the merchant's own receiver again (`cardsync webhooks set`)"
            );
        }
    }
    let summary = match outcome {
        Ok(summary) => summary,
        Err(e @ RunError::LostLease { .. }) => return Err(CliError::Usage(e.to_string())),
        Err(e) => {
            // Say what was done and how to go on, then fail.
            if let Ok(snapshot) = journal.load() {
                print_summary(
                    &mut reporter,
                    &sync_summary(Summary::of(&snapshot), &files, journal),
                )?;
            }
            eprintln!("error: {}", crate::show::message(&e.to_string()));
            eprintln!(
                "nothing is lost: run the same command again to resume from the journal {}",
                journal.path().display()
            );
            return Ok(Exit::Usage.into());
        }
    };
    let key_refused = summary.key_refused;
    let summary = sync_summary(summary, &files, journal);
    if summary.done {
        let path = summary_path(&args.out);
        files::write_json(&path, &summary).map_err(io_err(&path))?;
    } else if let Some(e) = &summary.error {
        eprintln!("error: {}", crate::show::message(e));
        if key_refused {
            eprintln!(
                "nothing is lost: the refused request was not created; run the same command with the right API key to go on from the journal {}",
                journal.path().display()
            );
        } else {
            eprintln!(
                "nothing is lost: run the same command again to resume from the journal {}",
                journal.path().display()
            );
        }
    }
    print_summary(&mut reporter, &summary)?;
    if interrupted != 0 && !summary.done {
        // 130 for Ctrl-C, 143 for SIGTERM, as a shell reports a process stopped by them.
        return Ok(ExitCode::from(128 + interrupted));
    }
    Ok(exit_for(&summary))
}

/// The `--adopt` decisions, each for a request that waits for one.
fn adoptions(args: &Args, snapshot: &Snapshot) -> Result<HashMap<u64, String>, CliError> {
    let mut adopt = HashMap::new();
    for spec in &args.adopt {
        let (seq, id) = spec
            .split_once('=')
            .and_then(|(s, id)| Some((s.trim().parse::<u64>().ok()?, id.trim().to_owned())))
            .filter(|(_, id)| !id.is_empty())
            .ok_or_else(|| {
                CliError::Usage(format!("--adopt {spec:?}: expected REQUEST=BATCH_ID"))
            })?;
        match snapshot.requests.iter().find(|r| r.seq == seq) {
            Some(r) if r.state == RequestState::Sending => {}
            Some(r) => {
                return Err(CliError::Usage(format!(
                    "--adopt: request {seq} is not waiting for a decision (it is {})",
                    r.state
                )));
            }
            None => {
                return Err(CliError::Usage(format!(
                    "--adopt: this job has no request {seq}"
                )));
            }
        }
        adopt.insert(seq, id);
    }
    Ok(adopt)
}

/// Starts the webhook receiver, and registers it with CardSync when asked (whether it did is
/// the third value). Registering replaces the merchant's registrations for the three
/// triggers, which nothing can read back: so only when asked, and said.
async fn start_receiver(
    args: &Args,
    client: &Client,
    quiet: bool,
) -> Result<(WebhookReceiver, mpsc::Receiver<Delivered>, bool), CliError> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => cardsync_hyper::random_token().map_err(|e| {
            CliError::Usage(format!("no random bytes from the operating system: {e}"))
        })?,
    };
    let (receiver, events) = receiver_channel(args.listen, &token).await?;
    let register = args.register_webhooks || args.public_url.is_some();
    if !register {
        if !quiet {
            eprintln!(
                "webhook receiver at http://{}/webhooks/… (not registered with CardSync: pass \
                 --register-webhooks to register it, or register its URL yourself; polling \
                 every {} s meanwhile)",
                receiver.local_addr(),
                args.poll_max.as_secs()
            );
        }
        return Ok((receiver, events, false));
    }
    let url = args.public_url.clone().unwrap_or_else(|| receiver.url());
    client
        .register_receiver(&url)
        .await
        .map_err(|e| remote_error("registering the webhook receiver", e))?;
    if !quiet && !args.own_emulator {
        let shown = url
            .rsplit_once("/webhooks/")
            .map_or(url.as_str(), |(base, _)| base);
        eprintln!(
            "registered {shown}/webhooks/… for this merchant's batch available (20), batch error \
             (22) and American Express update (23) events. This replaced whatever was \
             registered for them (CardSync cannot show what that was); to put your own back, \
             run `cardsync webhooks set --batch-available URL --batch-error URL --amex-update URL`"
        );
    }
    Ok((receiver, events, true))
}

/// Validates every row and records the plan in the journal, one request at a time; the plan
/// counts only once its last change (the mark) is committed, so a run killed while planning
/// leaves a plan that the next run discards and makes again. Nothing is sent before.
fn plan<W: Write>(
    args: &Args,
    journal: &mut Journal,
    lease: &Lease,
    identity: Vec<(String, String)>,
    reporter: &mut Reporter<W>,
) -> Result<(), CliError> {
    let options =
        crate::pipeline::plan_options(args.se_number.as_deref(), Some(args.max_per_request))?;
    let scratch = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let seen = SpillSeen::new(scratch).map_err(io_err(scratch))?;
    let mut planner = Planner::with_seen_store(options, Box::new(seen.clone()));
    let mut recorder = PlanRecorder::new(&journal.load().map_err(journal.err())?);
    // The journal is written on a thread of its own, a few requests behind the planning, so
    // that the two overlap; the plan is whole (and this function returns) only once every
    // request is written.
    std::thread::scope(|scope| {
        let (to_writer, requests) = std::sync::mpsc::sync_channel(2);
        let writer = {
            let journal = &mut *journal;
            scope.spawn(move || {
                for changes in requests {
                    journal.apply(lease, &changes).map_err(journal.err())?;
                }
                Ok::<(), CliError>(())
            })
        };
        let planned = crate::pipeline::check_rows(
            &args.file,
            &mut planner,
            reporter,
            crate::pipeline::ShowValid::None,
            |_, request| {
                // A closed channel means the writer stopped on an error, which it returns.
                to_writer
                    .send(recorder.request(request))
                    .map_err(|_| CliError::Usage("the journal writer stopped".to_owned()))
            },
        );
        drop(to_writer);
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // The writer's error first: it is why planning stopped, if it did.
        written.and(planned)
    })?;
    let rows = planner.rows();
    drop(planner);
    let duplicates = seen.duplicates().map_err(io_err(scratch))?;
    drop(seen);
    if !duplicates.is_empty() {
        report_duplicates(journal, &duplicates, reporter)?;
        let changes = recorder.duplicates(duplicates.iter().map(|d| d.row).collect());
        journal.apply(lease, &changes).map_err(journal.err())?;
    }
    let invalid = reporter.summary().invalid;
    let changes = recorder.finish(rows, invalid, identity);
    journal.apply(lease, &changes).map_err(journal.err())?;
    reporter.flush()?;
    Ok(())
}

/// Reports the duplicate rows found after planning, with their ids and masked cards.
fn report_duplicates<W: Write>(
    journal: &mut Journal,
    duplicates: &[super::dedupe::Duplicate],
    reporter: &mut Reporter<W>,
) -> Result<(), CliError> {
    let mut reasons: std::collections::BTreeMap<u64, Vec<RejectReason>> = Default::default();
    for d in duplicates {
        let first_row = d.first_row;
        reasons.entry(d.row).or_default().push(if d.card {
            RejectReason::DuplicateCard { first_row }
        } else {
            RejectReason::DuplicateId { first_row }
        });
    }
    let rows: Vec<u64> = reasons.keys().copied().collect();
    let cards = journal.store.cards_at_rows(&rows).map_err(journal.err())?;
    for card in cards {
        let Some(r) = reasons.get(&card.row) else {
            continue;
        };
        reporter.invalid(&Problem {
            row: card.row,
            id: &card.id,
            card: card.pan.masked(),
            brand: Some(card.pan.brand()),
            reasons: r.iter().map(|r| (r.code(), r.to_string())).collect(),
            // Counted when the row was planned.
            warnings: cardsync_core::RowWarnings::NONE,
        })?;
    }
    Ok(())
}
