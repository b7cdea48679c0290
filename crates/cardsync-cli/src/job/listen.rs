//! `cardsync listen --out DIR`: a webhook receiver that keeps what the events announce in a
//! folder (`--journal` records them in the shared journal instead: `shared.rs`).
//!
//! Commit, then answer. An event is answered 200 only once it is recorded in
//! `DIR/listen.journal` (state `received`); CardSync stops delivering an event once it is
//! answered, so anything not recorded by then would be lost. The results an event announces are
//! fetched afterwards, from that record: written to their file, a line appended to
//! `events.jsonl`, and the event marked `handled` with the new length of `events.jsonl`, in one
//! commit. A fetch that fails leaves the event recorded and is tried again with backoff (and by
//! the next start, which takes up every event recorded and not handled). A redelivery of an
//! event already recorded is answered 200 and changes nothing, across restarts too; a batch's
//! results are fetched once however many events name it. At most `--max-waiting` events
//! ([`MAX_WAITING`] by default) wait to be handled: past that, deliveries are answered 503
//! (CardSync comes back later), so that forged events cannot queue without bound or cost a
//! CardSync call each beyond it.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cardsync_hyper::{Client, HandlerError, ReceiverOptions, WebhookReceiver};
use cardsync_job::{
    Acquired, Change, Changes, Checkpoint, EventRecord, EventState, LeaseKeeper, Store,
};
use cardsync_job_sqlite::SqliteStore;
use cardsync_proto::{Results, Trigger, WebhookEvent};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::lease;
use crate::cli::{Global, OutputFormat};
use crate::error::{CliError, io_err};
use crate::pipeline::runtime;
use crate::remote::remote_error;

/// How many recorded events may wait to be handled before deliveries are answered 503, unless
/// `--max-waiting` says otherwise.
pub(crate) const MAX_WAITING: u32 = 1_000;
/// How many results fetches run at once.
const FETCHES_AT_ONCE: usize = 4;
/// The pause before the first retry of a failed fetch; doubled each time, up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between two tries of a fetch.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How long the folder's lease lasts without renewal (renewed every third of it).
const LEASE: Duration = Duration::from_secs(30);

/// Options of `cardsync listen`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListenArgs {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8788")]
    addr: SocketAddr,
    /// The secret path token (16 or more letters, digits, - and _): CardSync must call
    /// /webhooks/TOKEN.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CARDSYNC_WEBHOOK_TOKEN",
        hide_env_values = true
    )]
    token: String,
    /// Where results are written: batch-ID.csv and amex-EVENT.csv (mode 0600), events.jsonl
    /// (the log of every event handled) and listen.journal (what was received and handled).
    /// An event is answered 200 only once it is recorded there.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "journal",
        conflicts_with = "journal"
    )]
    out: Option<PathBuf>,
    /// Record each event in the shared journal instead (a PostgreSQL URL), once whichever
    /// receiver gets it, and mark its batch ready for the workers: run as many receivers as
    /// you like behind a load balancer. Needs CARDSYNC_JOURNAL_KEY like the other journal
    /// commands.
    #[arg(long, value_name = "URL")]
    journal: Option<String>,
    /// With --out: how many recorded events may wait for their results to be fetched; past
    /// that, deliveries are answered 503 (with Retry-After) and CardSync delivers them later.
    #[arg(long, value_name = "N", default_value_t = MAX_WAITING,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_waiting: u32,
    /// Stop after this long (for scripts and tests), such as 10m; runs until Ctrl-C without it.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
    stop_after: Option<Duration>,
}

/// `cardsync listen`. One listener at a time holds a folder.
pub(crate) fn listen<W: Write>(
    args: ListenArgs,
    global: &Global,
    out: W,
) -> Result<ExitCode, CliError> {
    let Some(dir) = args.out.clone() else {
        let journal = super::shared::JournalArgs {
            journal: args.journal.clone().unwrap_or_default(),
        };
        return super::shared::listen(
            args.addr,
            &args.token,
            args.stop_after,
            &journal,
            global,
            out,
        );
    };
    global.remote.need_api_key()?;
    let client = global.remote.client()?;
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let book = Book::open(&dir, args.max_waiting as usize)?;
    let result = runtime()?.block_on(run(&args, global, client, dir, book, out));
    result.map(|()| ExitCode::SUCCESS)
}

/// What one recorded event is about.
#[derive(Clone, Debug)]
struct Noted {
    trigger: Option<u32>,
    batch_id: Option<String>,
    state: EventState,
}

/// Why an event was not recorded.
enum NotRecorded {
    /// This many events wait already.
    Full(usize),
    /// The journal failed (or another listener took the folder over).
    Journal(CliError),
}

/// The folder's record: the journal, the lease on it, `events.jsonl`, and every event known.
struct Book {
    journal_path: PathBuf,
    journal: SqliteStore,
    keeper: LeaseKeeper,
    log_path: PathBuf,
    log: RowLog,
    events: HashMap<String, Noted>,
    waiting: usize,
    max_waiting: usize,
}

impl Book {
    fn open(dir: &Path, max_waiting: usize) -> Result<Book, CliError> {
        let journal_path = dir.join("listen.journal");
        let journal_err = |source| CliError::Journal {
            path: journal_path.clone(),
            source,
        };
        let mut journal = SqliteStore::open(&journal_path).map_err(journal_err)?;
        let holder = lease::this_holder();
        let keeper = match journal
            .acquire(
                &holder,
                lease::now_ms(),
                LEASE.as_millis() as u64,
                &lease::holder_gone,
            )
            .map_err(journal_err)?
        {
            Acquired::Taken(lease) => LeaseKeeper::new(lease, LEASE),
            Acquired::Held(held) => {
                return Err(CliError::Usage(format!(
                    "another listener ({}) keeps {}: one listener at a time per folder",
                    held.holder,
                    dir.display()
                )));
            }
        };
        let snapshot = journal.load().map_err(journal_err)?;
        let events: HashMap<String, Noted> = snapshot
            .events
            .into_iter()
            .map(|e| {
                let noted = Noted {
                    trigger: e.trigger,
                    batch_id: e.batch_id,
                    state: e.state,
                };
                (e.event_id, noted)
            })
            .collect();
        let waiting = events
            .values()
            .filter(|n| n.state == EventState::Received)
            .count();
        // Lines a listener wrote after its last commit are dropped; their events are handled
        // again.
        let log_path = dir.join("events.jsonl");
        let log = RowLog::open(&log_path, snapshot.checkpoint.positions().first().copied())
            .map_err(io_err(&log_path))?;
        Ok(Book {
            journal_path,
            journal,
            keeper,
            log_path,
            log,
            events,
            waiting,
            max_waiting,
        })
    }

    /// Renews the lease when due.
    fn renew(&mut self) -> Result<(), CliError> {
        let now = lease::now_ms();
        self.keeper
            .keep(&mut self.journal, now)
            .map_err(|source| CliError::Journal {
                path: self.journal_path.clone(),
                source,
            })
    }

    /// Gives the lease back (refused quietly when it was lost).
    fn release(&mut self) {
        let lease = self.keeper.lease().clone();
        let _ = self.journal.release(&lease);
    }

    /// Commits `changes` under the lease (renewed first when due).
    fn commit(&mut self, changes: Vec<Change>) -> Result<(), CliError> {
        let now = lease::now_ms();
        let journal_err = |source| CliError::Journal {
            path: self.journal_path.clone(),
            source,
        };
        self.keeper
            .keep(&mut self.journal, now)
            .map_err(journal_err)?;
        self.journal
            .apply(self.keeper.lease(), &Changes::new(changes))
            .map_err(journal_err)
    }

    /// Records a new event as received (durably); an event known already is left as it is.
    /// `Ok(true)` when it is new.
    fn record(
        &mut self,
        key: &str,
        trigger: Option<u32>,
        batch_id: Option<String>,
    ) -> Result<bool, NotRecorded> {
        if self.events.contains_key(key) {
            return Ok(false);
        }
        if self.waiting >= self.max_waiting {
            return Err(NotRecorded::Full(self.max_waiting));
        }
        let record = EventRecord::new(key, trigger, batch_id.clone(), EventState::Received);
        self.commit(vec![Change::Event(record)])
            .map_err(NotRecorded::Journal)?;
        self.events.insert(
            key.to_owned(),
            Noted {
                trigger,
                batch_id,
                state: EventState::Received,
            },
        );
        self.waiting += 1;
        Ok(true)
    }

    /// Appends the event's line to `events.jsonl` and marks it handled, in one commit.
    fn handled(&mut self, key: &str, line: &str) -> Result<(), CliError> {
        let len = self.log.append(line).map_err(io_err(&self.log_path))?;
        let Some(noted) = self.events.get(key).cloned() else {
            return Ok(());
        };
        let record = EventRecord::new(
            key,
            noted.trigger,
            noted.batch_id.clone(),
            EventState::Handled,
        );
        self.commit(vec![
            Change::Checkpoint(Checkpoint::new(vec![len])),
            Change::Event(record),
        ])?;
        if let Some(n) = self.events.get_mut(key)
            && n.state == EventState::Received
        {
            n.state = EventState::Handled;
            self.waiting = self.waiting.saturating_sub(1);
        }
        Ok(())
    }

    /// The event (other than `key`) that already had `batch`'s results written, if one did.
    fn batch_written(&self, batch: &str, key: &str) -> Option<String> {
        self.events.iter().find_map(|(k, n)| {
            (k != key
                && n.state == EventState::Handled
                && n.trigger == Some(Trigger::BatchAvailable.id())
                && n.batch_id.as_deref() == Some(batch))
            .then(|| k.clone())
        })
    }

    /// The events recorded and not handled.
    fn waiting_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .events
            .iter()
            .filter(|(_, n)| n.state == EventState::Received)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }
}

/// The book, shared by the receiver's handler and the loop that handles events.
type Shared = Arc<Mutex<Book>>;

fn lock(book: &Shared) -> MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

/// The receiver's handler: records the event (on a blocking thread: the journal commits with
/// a sync), then answers. Whatever the event asks for is done later, from the record.
async fn take(book: Shared, wake: Arc<Notify>, event: WebhookEvent) -> Result<(), HandlerError> {
    let Some(key) = event.dedup_key() else {
        // The inbox answers 422 before the handler for these; never acknowledged silently.
        return Err(HandlerError::new("the event has nothing to record it by"));
    };
    let trigger = event_trigger(&event);
    let batch_id = event.batch_id().map(str::to_owned);
    let recorded = tokio::task::spawn_blocking(move || lock(&book).record(&key, trigger, batch_id))
        .await
        .map_err(|e| HandlerError::new(format!("the recording task failed: {e}")))?;
    match recorded {
        Ok(new) => {
            if new {
                wake.notify_one();
            }
            Ok(())
        }
        Err(NotRecorded::Full(n)) => {
            Err(HandlerError::busy(format!("{n} events wait to be handled")))
        }
        Err(NotRecorded::Journal(e)) => {
            // Another delivery will come; the loop notices a lost lease at its next renewal.
            wake.notify_one();
            Err(HandlerError::new(e.to_string()))
        }
    }
}

/// The trigger id of an event, the unknown ones' included.
fn event_trigger(event: &WebhookEvent) -> Option<u32> {
    match event {
        WebhookEvent::Unknown(u) => u.trigger_id.parse().ok(),
        other => other.trigger().map(Trigger::id),
    }
}

/// The event id a key was made from (`event:ID`), if it was.
fn event_id_of(key: &str) -> Option<&str> {
    key.strip_prefix("event:")
}

/// A fetch's outcome: the results file written, or why not.
type Fetched = (String, Result<PathBuf, String>);

/// When each waiting event is tried next, and how often it was tried.
#[derive(Default)]
struct Schedule {
    due: HashMap<String, (Instant, u32)>,
    /// Events being fetched, and the batches they fetch.
    fetching: HashMap<String, Option<String>>,
}

impl Schedule {
    fn add_now(&mut self, key: String) {
        if !self.fetching.contains_key(&key) {
            self.due.entry(key).or_insert((Instant::now(), 0));
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.due.values().map(|(at, _)| *at).min()
    }

    /// The events due now, oldest first.
    fn ready(&self, now: Instant) -> Vec<String> {
        let mut ready: Vec<(&Instant, &String)> = self
            .due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, (at, _))| (at, k))
            .collect();
        ready.sort();
        ready.into_iter().map(|(_, k)| k.clone()).collect()
    }
}

async fn run<W: Write>(
    args: &ListenArgs,
    global: &Global,
    client: Client,
    dir: PathBuf,
    book: Book,
    mut out: W,
) -> Result<(), CliError> {
    let book: Shared = Arc::new(Mutex::new(book));
    let wake = Arc::new(Notify::new());
    let receiver = {
        let (book, wake) = (book.clone(), wake.clone());
        WebhookReceiver::start(
            args.addr,
            &args.token,
            ReceiverOptions::default(),
            move |event| take(book.clone(), wake.clone(), event),
        )
        .await
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot start the webhook receiver on {}: {e}",
                args.addr
            ))
        })?
    };
    let mut schedule = Schedule::default();
    let waiting = lock(&book).waiting_keys();
    if !global.quiet {
        eprintln!(
            "listening at {} (token path hidden); register it with `cardsync webhooks set`. \
             Ctrl-C stops.",
            receiver.local_addr()
        );
        if !waiting.is_empty() {
            eprintln!(
                "{} event(s) recorded earlier and not handled yet: handling them now",
                waiting.len()
            );
        }
    }
    for key in waiting {
        schedule.add_now(key);
    }
    let stop = async {
        match args.stop_after {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    let mut renew = tokio::time::interval(LEASE / 3);
    let mut fetches: JoinSet<Fetched> = JoinSet::new();
    let outcome = loop {
        // Start what is due, a few fetches at a time.
        if let Err(e) = start_due(
            &book,
            &client,
            &dir,
            &mut schedule,
            &mut fetches,
            global,
            &mut out,
        ) {
            break Err(e);
        }
        let next = schedule.next_due();
        tokio::select! {
            _ = &mut stop => break Ok(()),
            _ = renew.tick() => {
                if let Err(e) = lock(&book).renew() {
                    break Err(e);
                }
            }
            () = wake.notified() => {
                let waiting = lock(&book).waiting_keys();
                for key in waiting {
                    schedule.add_now(key);
                }
            }
            () = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
            Some(done) = fetches.join_next(), if !fetches.is_empty() => {
                let Ok((key, fetched)) = done else { continue };
                if let Err(e) = finish_fetch(&book, &mut schedule, key, fetched, global, &mut out) {
                    break Err(e);
                }
            }
        }
    };
    // Stop taking events first; fetches under way are dropped (their events stay recorded,
    // and the next start handles them).
    receiver.shutdown().await;
    fetches.abort_all();
    // The lease goes back, so that the next listener need not wait for it to run out.
    lock(&book).release();
    outcome
}

/// Starts the events that are due: those that need no call are handled at once; fetches start
/// while fewer than [`FETCHES_AT_ONCE`] run, one per batch at a time.
fn start_due<W: Write>(
    book: &Shared,
    client: &Client,
    dir: &Path,
    schedule: &mut Schedule,
    fetches: &mut JoinSet<Fetched>,
    global: &Global,
    out: &mut W,
) -> Result<(), CliError> {
    for key in schedule.ready(Instant::now()) {
        let Some(noted) = lock(book).events.get(&key).cloned() else {
            schedule.due.remove(&key);
            continue;
        };
        if noted.state != EventState::Received {
            schedule.due.remove(&key);
            continue;
        }
        let batch = noted.batch_id.clone();
        match (noted.trigger, event_id_of(&key)) {
            (Some(20), _) if batch.is_some() => {
                let batch = batch.unwrap_or_default();
                // (The lock is let go before `done` takes it again.)
                let earlier = lock(book).batch_written(&batch, &key);
                if let Some(earlier) = earlier {
                    // A batch's results are fetched once, however many events name it.
                    schedule.due.remove(&key);
                    let file = dir.join(format!("batch-{}.csv", safe_name(&batch)));
                    let note = format!(
                        "the results of batch {batch} were written already (event {earlier})"
                    );
                    done(
                        book,
                        &key,
                        &noted,
                        Some(&file),
                        None,
                        Some(&note),
                        global,
                        out,
                    )?;
                    continue;
                }
                if schedule
                    .fetching
                    .values()
                    .any(|b| b.as_deref() == Some(batch.as_str()))
                {
                    // Another event's fetch of the same batch is under way: wait for it.
                    continue;
                }
                if fetches.len() >= FETCHES_AT_ONCE {
                    break;
                }
                schedule.due.remove(&key);
                schedule.fetching.insert(key.clone(), Some(batch.clone()));
                let (client, dir) = (client.clone(), dir.to_owned());
                let event_id = event_id_of(&key).map(str::to_owned);
                fetches.spawn(async move {
                    let fetched = client
                        .batch_results(&batch, event_id.as_deref())
                        .await
                        .map_err(|e| {
                            remote_error(&format!("results of batch {batch}"), e).to_string()
                        });
                    let name = format!("batch-{}.csv", safe_name(&batch));
                    let written =
                        write_in_background(dir.join(name), fetched, Some(batch), event_id).await;
                    (key, written)
                });
            }
            (Some(23), Some(event_id)) => {
                if fetches.len() >= FETCHES_AT_ONCE {
                    break;
                }
                let event_id = event_id.to_owned();
                schedule.due.remove(&key);
                schedule.fetching.insert(key.clone(), None);
                let (client, dir) = (client.clone(), dir.to_owned());
                fetches.spawn(async move {
                    let fetched = client.subscription_results(&event_id).await.map_err(|e| {
                        remote_error(&format!("American Express update {event_id}"), e).to_string()
                    });
                    let name = format!("amex-{}.csv", safe_name(&event_id));
                    let written =
                        write_in_background(dir.join(name), fetched, None, Some(event_id)).await;
                    (key, written)
                });
            }
            (Some(23), None) => {
                schedule.due.remove(&key);
                let error =
                    "the American Express update has no event_id: its results cannot be fetched";
                done(book, &key, &noted, None, Some(error), None, global, out)?;
            }
            _ => {
                // Nothing to fetch (enrollment, a batch error, another trigger): logged.
                schedule.due.remove(&key);
                done(book, &key, &noted, None, None, None, global, out)?;
            }
        }
    }
    Ok(())
}

/// Writes fetched results to their file on a blocking thread.
async fn write_in_background(
    path: PathBuf,
    fetched: Result<Results, String>,
    batch_id: Option<String>,
    event_id: Option<String>,
) -> Result<PathBuf, String> {
    let results = fetched?;
    tokio::task::spawn_blocking(move || {
        crate::commands::write_results_file(
            &path,
            &results,
            batch_id.as_deref(),
            event_id.as_deref(),
        )
        .map(|()| path)
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("the writing task failed: {e}"))?
}

/// A fetch ended: the event is handled, or tried again later.
fn finish_fetch<W: Write>(
    book: &Shared,
    schedule: &mut Schedule,
    key: String,
    fetched: Result<PathBuf, String>,
    global: &Global,
    out: &mut W,
) -> Result<(), CliError> {
    schedule.fetching.remove(&key);
    let Some(noted) = lock(book).events.get(&key).cloned() else {
        return Ok(());
    };
    match fetched {
        Ok(file) => done(book, &key, &noted, Some(&file), None, None, global, out),
        Err(error) => {
            let tries = schedule.due.get(&key).map_or(0, |(_, n)| *n) + 1;
            let pause = RETRY_FIRST
                .saturating_mul(1u32 << (tries - 1).min(16))
                .min(RETRY_MAX);
            schedule
                .due
                .insert(key.clone(), (Instant::now() + pause, tries));
            // Not handled: nothing is written to events.jsonl, and the event stays recorded.
            tracing::warn!(
                event = %crate::show::plain(&key),
                error = %crate::show::plain(&error),
                "results not fetched; trying again"
            );
            let record = json!({
                "trigger_id": noted.trigger,
                "event_id": event_id_of(&key),
                "batch_id": noted.batch_id,
                "error": error,
                "handled": false,
                "retry_in_s": pause.as_secs(),
            });
            match global.output {
                OutputFormat::Json => writeln!(out, "{record}")?,
                OutputFormat::Text => writeln!(
                    out,
                    "event {}: not handled yet: {}; trying again in {} s",
                    crate::show::plain(event_id_of(&key).unwrap_or(&key)),
                    crate::show::plain(&error),
                    pause.as_secs()
                )?,
            }
            out.flush()?;
            Ok(())
        }
    }
}

/// The event is handled: its line goes to `events.jsonl` and the event is marked handled in
/// the same commit; then it is shown.
#[allow(clippy::too_many_arguments)]
fn done<W: Write>(
    book: &Shared,
    key: &str,
    noted: &Noted,
    file: Option<&Path>,
    error: Option<&str>,
    note: Option<&str>,
    global: &Global,
    out: &mut W,
) -> Result<(), CliError> {
    let mut record = json!({
        "trigger_id": noted.trigger,
        "event_id": event_id_of(key),
        "batch_id": noted.batch_id,
        "results_file": file.map(|p| p.display().to_string()),
        "error": error,
    });
    if event_id_of(key).is_none() {
        record["key"] = json!(key);
    }
    if let Some(note) = note {
        record["note"] = json!(note);
    }
    lock(book).handled(key, &record.to_string())?;
    // Event ids, batch ids and errors are the sender's text: escaped on the terminal.
    let event = crate::show::plain(event_id_of(key).unwrap_or(key));
    match global.output {
        OutputFormat::Json => writeln!(out, "{record}")?,
        OutputFormat::Text => match (file, error) {
            (Some(f), _) if note.is_some() => {
                writeln!(out, "event {event}: results already in {}", f.display())?
            }
            (Some(f), _) => writeln!(out, "results written to {}", f.display())?,
            (None, Some(e)) => writeln!(out, "event {event}: {}", crate::show::plain(e))?,
            (None, None) => writeln!(
                out,
                "event {event}: {}",
                noted
                    .trigger
                    .and_then(Trigger::from_id)
                    .map_or_else(|| "unknown trigger".to_owned(), |t| t.to_string())
            )?,
        },
    }
    out.flush()?;
    Ok(())
}

/// `events.jsonl`: lines appended and synced, cut back on open to the length last recorded.
/// Created with mode 0600, like every other file the listener writes.
struct RowLog {
    file: std::fs::File,
}

impl RowLog {
    fn open(path: &Path, recorded: Option<u64>) -> io::Result<RowLog> {
        let file = crate::files::open_private_append(path)?;
        let len = file.metadata()?.len();
        match recorded {
            Some(r) if r <= len => file.set_len(r)?,
            // A log written before listeners kept a journal is kept as it is.
            _ => {}
        }
        Ok(RowLog { file })
    }

    /// Appends a line, makes it durable, and returns the new length.
    fn append(&mut self, line: &str) -> io::Result<u64> {
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.file.sync_data()?;
        self.file.metadata().map(|m| m.len())
    }
}

/// An id made safe for a file name.
pub(crate) fn safe_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        assert_eq!(event_id_of("event:e1"), Some("e1"));
        assert_eq!(event_id_of("batch:20:b1"), None);
        assert_eq!(safe_name("../b 1"), "___b_1");
        let mut s = Schedule::default();
        s.add_now("a".into());
        s.fetching.insert("b".into(), None);
        s.add_now("b".into());
        assert_eq!(s.ready(Instant::now()), ["a"]);
    }
}
