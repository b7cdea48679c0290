//! [`Job`]: the account-updater job as a sans-IO state machine, and [`PlanRecorder`], which
//! turns planned requests into changes for the store.
//!
//! A job is fed what happened (the store acknowledged changes, the cards of a request were
//! loaded, a call was answered or failed, a webhook event arrived, the user decided about an
//! unconfirmed request, time passed) and says what to do next through [`Job::poll_output`]:
//! persist changes, load cards, send a request, write result rows, ask for a decision, finish
//! the sink, or stop with a summary. It reads no clock, touches no file and opens no socket.
//!
//! The rules that make it exactly-once:
//!
//! - Invariant: a `Send` of `POST /v2/batch` or `POST /v2/subscribe` is emitted only once the
//!   `Persist` that moved its request to `sending` has been acknowledged.
//! - Invariant: a request that may have reached CardSync (`sending`, found so by a later run or
//!   left so by a failed POST) is never sent again without a [`Decision`], except
//!   subscriptions, which are idempotent and are resent.
//! - Invariant: result rows are written to the sink before the `Persist` that records them
//!   (with the sink's checkpoint) is emitted, and a request's results are recorded in the same
//!   `Persist` that moves it to `done`.
//! - Invariant: at most one operation (a load, a persist, a call) is under way per request at
//!   a time, so that two changes to one request never race; every request change is a
//!   compare-and-set from the state the job last saw persisted.
//! - Invariant: at most `concurrency` creating requests (`POST`s) are under way at once, at
//!   most `concurrency` status checks, and at most `concurrency` results fetches: the rest
//!   wait their turn, so that the server sees a bounded load and memory holds at most
//!   `concurrency` results bodies however many batches are done. Until CardSync has answered
//!   a call of the run with success, one POST at a time: a wrong key costs one request.
//! - Invariant: a POST whose key CardSync refused (401 or 403, in its own words) goes back to
//!   `planned`, and the run stops ([`Summary::key_refused`]): nothing was created, and the
//!   same run with the right key goes on.
//! - Invariant: the job finishes in two persisted steps (`finishing`, then `done` with the
//!   cards erased) around the sink's `finish`, each safe to repeat after a crash.
//! - Invariant: a webhook event is recorded (state `received`) before anything is done about
//!   it, and [`Output::Recorded`] (after which its delivery may be acknowledged) is emitted only
//!   once the `Persist` that records it has been acknowledged; a later run acts on every event
//!   recorded and not acted on.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many planned requests are loaded and encoded ahead of a free place to send them.
const PREPARED_AHEAD: usize = 2;

use cardsync_core::{PlannedRequest, Route};
use cardsync_proto::retry::{Decision as RetryDecision, RetryPolicy};
use cardsync_proto::transport::TransportError;
use cardsync_proto::{
    Config, Endpoint, GetBatch, GetBatchResults, GetSubscriptionResults, Idempotency, Results,
    Trigger, WebhookEvent,
};

use crate::model::{
    EventRecord, EventState, META_AMEX_RESULTS, META_INVALID, META_PHASE, META_PLANNED, META_ROWS,
    PHASE_DONE, PHASE_FINISHING, RequestKind, RequestRecord, RequestState, ResultRow, Snapshot,
    StoredCard, Summary,
};
use crate::rules::{self, Created, Rows, Status};
use crate::store::{Change, Changes, RequestUpdate};

/// How the job learns that a batch is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Wait {
    /// Ask for each batch's status, with backoff.
    Poll,
    /// Webhook events (fed with [`Job::handle_event`]); polls only every `poll_max` as a
    /// fallback, and waits up to `amex_wait` for American Express updates at the end.
    Webhook,
}

/// How a job runs.
///
/// ```
/// use std::time::Duration;
/// use cardsync_job::{JobOptions, Wait};
/// use cardsync_proto::{BaseUrl, Config, MerchantKey};
///
/// let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("key")?);
/// let options = JobOptions::new(config).with_wait(Wait::Webhook).with_poll_max(Duration::from_secs(30));
/// assert_eq!(options.concurrency(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct JobOptions {
    config: Config,
    wait: Wait,
    poll_first: Duration,
    poll_max: Duration,
    amex_wait: Duration,
    concurrency: usize,
    retry: RetryPolicy,
    seed: u64,
    wall_anchor: Option<(Instant, SystemTime)>,
}

impl JobOptions {
    /// Defaults: polling, 50 ms to 60 s between status checks, 60 s for American Express
    /// updates, one POST at a time, the default retry policy.
    pub fn new(config: Config) -> JobOptions {
        JobOptions {
            config,
            wait: Wait::Poll,
            poll_first: Duration::from_millis(50),
            poll_max: Duration::from_secs(60),
            amex_wait: Duration::from_secs(60),
            concurrency: 1,
            retry: RetryPolicy::default(),
            seed: 0x9e37_79b9_7f4a_7c15,
            wall_anchor: None,
        }
    }

    /// How to wait for results.
    pub fn with_wait(mut self, wait: Wait) -> JobOptions {
        self.wait = wait;
        self
    }

    /// The longest pause between two status checks of a batch.
    pub fn with_poll_max(mut self, max: Duration) -> JobOptions {
        self.poll_max = max.max(self.poll_first);
        self
    }

    /// With [`Wait::Webhook`]: how long to wait for American Express updates once every batch
    /// is done.
    pub fn with_amex_wait(mut self, wait: Duration) -> JobOptions {
        self.amex_wait = wait;
        self
    }

    /// How many POSTs may be under way at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> JobOptions {
        self.concurrency = n.max(1);
        self
    }

    /// The retry policy.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> JobOptions {
        self.retry = policy;
        self
    }

    /// The seed of the backoff jitter (the job has no randomness of its own).
    pub fn with_seed(mut self, seed: u64) -> JobOptions {
        self.seed = seed | 1;
        self
    }

    /// Which wall-clock time an instant stands for, to read `Retry-After` dates.
    pub fn with_wall_clock(mut self, instant: Instant, wall: SystemTime) -> JobOptions {
        self.wall_anchor = Some((instant, wall));
        self
    }

    /// How many POSTs may be under way at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The configuration requests are encoded with.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// What the user decided about a request whose POST may or may not have reached CardSync: the
/// one type for it, on one machine and in the shared journal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// It arrived, as this batch (checked with `GET /v2/batch` before it is taken on).
    Adopt(String),
    /// It did not arrive: send it again.
    Resend,
    /// Leave its cards out of the job.
    Abandon,
}

/// A request whose fate is unknown, waiting for a [`Decision`]: the one type for it, on one
/// machine and in the shared journal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unconfirmed {
    /// The request.
    pub seq: u64,
    /// How many cards it holds.
    pub cards: u64,
    /// Whether an earlier run left it so (rather than this run).
    pub earlier: bool,
    /// What happened, when the journal says.
    pub message: Option<String>,
    /// Batch ids that a runner learned after it lost its hold on the request (a strong hint
    /// for [`Decision::Adopt`]).
    pub late_batch_ids: Vec<String>,
}

impl Unconfirmed {
    /// Request `seq` of `cards` cards, left unconfirmed by an earlier run.
    pub fn new(seq: u64, cards: u64) -> Unconfirmed {
        Unconfirmed {
            seq,
            cards,
            earlier: true,
            message: None,
            late_batch_ids: Vec::new(),
        }
    }
}

/// The identity of a call, to give back with its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(u64);

/// A request to send.
#[derive(Debug)]
#[non_exhaustive]
pub struct Call {
    /// Give it back with the answer, to [`Job::handle_response`].
    pub id: CallId,
    /// The request, complete.
    pub request: http::Request<Vec<u8>>,
    /// Whether it creates something CardSync bills (`POST /v2/batch`): a runner must not send
    /// it without holding the job's lease.
    pub creates: bool,
}

/// What the job asks its driver to do.
///
/// Exhaustive on purpose: a driver that ignored a kind of output added later would break the
/// job's guarantees, so adding one is a breaking change that makes every driver say what to do
/// with it.
#[derive(Debug)]
#[allow(clippy::exhaustive_enums)]
pub enum Output {
    /// Apply these changes atomically (after adding the sink's checkpoint when
    /// [`Changes::wants_checkpoint`]), then call [`Job::handle_persisted`].
    Persist(Changes),
    /// Load the cards of this request, and give them to [`Job::handle_cards`].
    LoadCards(u64),
    /// Send this request, and give the answer to [`Job::handle_response`].
    Send(Call),
    /// Append these rows to the sink (they become durable with the next checkpoint).
    Write(Vec<ResultRow>),
    /// A request needs a [`Decision`] ([`Job::decide`]). Without one, the job ends with it
    /// listed as unconfirmed.
    NeedsDecision(Unconfirmed),
    /// Every result is durable: put them in place ([`crate::Sink::finish`]), then call
    /// [`Job::handle_finished`].
    Finish,
    /// The webhook event with this key ([`WebhookEvent::dedup_key`]) is durably recorded: its
    /// delivery may now be acknowledged (a receiver answers 200 only then). Whatever the event
    /// asks for is done from the record, in this run or a later one.
    Recorded(String),
    /// The job stopped: done, or with requests left unconfirmed, or after an error.
    Finished(Summary),
}

/// A webhook event as the job keeps it: enough to act on it, and to act on it again after a
/// restart.
#[derive(Clone, Debug)]
struct Noted {
    /// The id it is recorded under: its event id, or for an event without one, its key.
    id: String,
    /// Its event id, when it has one (results are fetched with it).
    event_id: Option<String>,
    trigger: Option<u32>,
    batch_id: Option<String>,
}

impl Noted {
    fn of(record: &EventRecord) -> Noted {
        // Events without an event id are recorded under their key, which names its kind.
        let keyed = ["batch:", "delivery:", "enrollment:", "event:"]
            .iter()
            .any(|p| record.event_id.starts_with(p));
        Noted {
            id: record.event_id.clone(),
            event_id: (!keyed).then(|| record.event_id.clone()),
            trigger: record.trigger,
            batch_id: record.batch_id.clone(),
        }
    }

    fn record(&self, state: EventState) -> EventRecord {
        EventRecord::new(self.id.clone(), self.trigger, self.batch_id.clone(), state)
    }
}

/// What a call was for.
#[derive(Clone, Debug)]
enum Purpose {
    Create(u64),
    Status(u64),
    Results(u64),
    Adopt(u64, String),
    AmexResults(String),
}

/// A call under way or waiting to be retried.
#[derive(Debug)]
struct Pending {
    purpose: Purpose,
    request: http::Request<Vec<u8>>,
    attempt: u32,
    started: Instant,
}

/// What to do once a persist is acknowledged.
#[derive(Debug)]
enum After {
    Nothing,
    Send(u64, Box<http::Request<Vec<u8>>>),
    Poll(u64),
    Fetch(u64),
    /// An event is recorded: acknowledge it (by its key), then act on it.
    Recorded(String, Noted),
    Finish,
    Done,
}

/// What a load of cards is for.
#[derive(Debug)]
enum LoadFor {
    Send,
    Last4(Box<Results>),
}

/// Where the job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Finishing,
    Finished,
}

/// The account-updater job: every planned request sent once, waited for, and its results
/// written once, across any number of runs.
///
/// Build it from what a store holds ([`Job::new`]), then loop: take outputs with
/// [`Job::poll_output`] and carry them out, feed back what happened, and when there is nothing
/// to do, wait until [`Job::poll_timeout`] (or an answer, or an event) and call
/// [`Job::handle_timeout`]. [`crate::run`] is that loop over any [`cardsync_proto::transport::Transport`].
///
/// ```
/// use std::time::Instant;
/// use cardsync_job::{Job, JobOptions, Output, Snapshot};
/// use cardsync_proto::{BaseUrl, Config, MerchantKey};
///
/// let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("key")?);
/// // An empty (planned) job has nothing to send: it finishes at once.
/// let mut snapshot = Snapshot::default();
/// snapshot.meta.insert("planned".into(), "1".into());
/// let mut job = Job::new(snapshot, JobOptions::new(config), Instant::now());
/// let Some(Output::Persist(changes)) = job.poll_output() else { panic!() };
/// job.handle_persisted(changes.id(), Instant::now());
/// assert!(matches!(job.poll_output(), Some(Output::Finish)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Job {
    options: JobOptions,
    phase: Phase,
    snapshot: Snapshot,
    now: Instant,
    outputs: VecDeque<Output>,
    next_change: u64,
    next_call: u64,
    /// Persists awaiting acknowledgement: their changes (applied to `snapshot` on
    /// acknowledgement) and what follows.
    awaiting: HashMap<u64, (Vec<Change>, After)>,
    loads: HashMap<u64, LoadFor>,
    calls: HashMap<CallId, Pending>,
    /// Reads (status checks, results) waiting for one of the `concurrency` places of their
    /// kind.
    queued: VecDeque<Pending>,
    retries: Vec<(Instant, Pending)>,
    /// Next status check of each sent batch, and the pause after it.
    polls: BTreeMap<u64, (Instant, Duration)>,
    /// Requests with an operation under way.
    busy: HashSet<u64>,
    /// Creating requests under way: `sending` being persisted, or their POST in flight.
    creating: BTreeSet<u64>,
    /// Planned requests loaded and encoded, waiting for a place among the POSTs.
    prepared: BTreeMap<u64, Box<http::Request<Vec<u8>>>>,
    undecided: BTreeSet<u64>,
    decisions: VecDeque<(u64, Decision)>,
    /// Events recorded and not acted on yet.
    inbox: VecDeque<Noted>,
    /// Events seen, by the id they are recorded under (recorded, or being recorded).
    seen_events: HashSet<String>,
    /// Keys of deliveries waiting for their event's record to be acknowledged, by that id.
    recording: HashMap<String, Vec<String>>,
    amex_deadline: Option<Instant>,
    error: Option<String>,
    /// CardSync refused the API key: the run stops.
    key_refused: bool,
    /// Asked to stop ([`Job::drain`]): nothing new is sent.
    draining: bool,
    /// CardSync answered a call of this run with success, so the key is good: until then,
    /// one POST at a time (a wrong key costs one request, not `concurrency`).
    key_accepted: bool,
    rng: u64,
}

impl Job {
    /// A job from what its store holds. The snapshot must be of a complete plan
    /// ([`Snapshot::is_planned`]); see [`PlanRecorder`].
    pub fn new(snapshot: Snapshot, options: JobOptions, now: Instant) -> Job {
        let rng = options.seed | 1;
        let mut job = Job {
            options,
            phase: Phase::Running,
            snapshot,
            now,
            outputs: VecDeque::new(),
            next_change: 1,
            next_call: 1,
            awaiting: HashMap::new(),
            loads: HashMap::new(),
            calls: HashMap::new(),
            queued: VecDeque::new(),
            retries: Vec::new(),
            polls: BTreeMap::new(),
            busy: HashSet::new(),
            creating: BTreeSet::new(),
            prepared: BTreeMap::new(),
            undecided: BTreeSet::new(),
            decisions: VecDeque::new(),
            inbox: VecDeque::new(),
            seen_events: HashSet::new(),
            recording: HashMap::new(),
            amex_deadline: None,
            error: None,
            key_refused: false,
            draining: false,
            key_accepted: false,
            rng,
        };
        job.start();
        job
    }

    fn start(&mut self) {
        for e in &self.snapshot.events {
            self.seen_events.insert(e.event_id.clone());
        }
        if self.snapshot.is_done() {
            self.phase = Phase::Finished;
            self.outputs.push_back(Output::Finished(self.summary()));
            return;
        }
        if self.snapshot.meta(META_PHASE) == Some(PHASE_FINISHING) {
            // The previous run died around the sink's finish: do it again.
            self.phase = Phase::Finishing;
            self.outputs.push_back(Output::Finish);
            return;
        }
        let requests: Vec<RequestRecord> = self.snapshot.requests.clone();
        for r in &requests {
            match (r.state, r.kind) {
                (RequestState::Sending, RequestKind::Subscription) => {
                    // Subscribing twice is the same as subscribing once.
                    self.persist_request(
                        RequestUpdate::new(r.seq, RequestState::Sending, RequestState::Planned),
                        vec![],
                        After::Nothing,
                    );
                }
                (RequestState::Sending, RequestKind::Batch) => {
                    self.undecided.insert(r.seq);
                    let mut u = Unconfirmed::new(r.seq, r.cards);
                    u.message.clone_from(&r.message);
                    self.outputs.push_back(Output::NeedsDecision(u));
                }
                (RequestState::Sent, _) => self.schedule_poll(r.seq, true),
                _ => {}
            }
        }
        // Events recorded and not acted on (a run that stopped after recording them): acted on
        // now, American Express updates fetched.
        let received: Vec<Noted> = self
            .snapshot
            .events
            .iter()
            .filter(|e| e.state == EventState::Received)
            .map(Noted::of)
            .collect();
        self.inbox.extend(received);
        self.advance();
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(output) = self.outputs.pop_front() {
            return Some(output);
        }
        // Everything asked for was handed out (decisions included, which the driver answers
        // before it asks again): the job may be over.
        self.maybe_finish();
        self.outputs.pop_front()
    }

    /// When the job next wants [`Job::handle_timeout`], if it waits for time at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Running {
            return None;
        }
        let polls = self
            .polls
            .iter()
            .filter(|(seq, _)| !self.busy.contains(seq))
            .map(|(_, (at, _))| *at);
        let retries = self.retries.iter().map(|(at, _)| *at);
        polls.chain(retries).chain(self.amex_deadline).min()
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.advance();
    }

    /// The store applied the changes numbered `id`.
    pub fn handle_persisted(&mut self, id: u64, now: Instant) {
        self.now = now;
        let Some((changes, after)) = self.awaiting.remove(&id) else {
            return;
        };
        for change in &changes {
            crate::store::apply_to_snapshot(&mut self.snapshot, change);
        }
        match after {
            After::Nothing => {}
            After::Send(seq, _) if self.draining => self.unsend(seq),
            After::Send(seq, request) => {
                // Invariant: the request is `sending` in the store before it is sent.
                debug_assert_eq!(self.state(seq), Some(RequestState::Sending));
                let purpose = Purpose::Create(seq);
                let pending = Pending {
                    purpose,
                    request: *request,
                    attempt: 1,
                    started: now,
                };
                self.send(pending);
            }
            After::Poll(seq) => self.schedule_poll(seq, true),
            After::Fetch(seq) => self.fetch(seq),
            After::Recorded(key, noted) => {
                for key in std::iter::once(key)
                    .chain(self.recording.remove(&noted.id).into_iter().flatten())
                {
                    self.outputs.push_back(Output::Recorded(key));
                }
                self.inbox.push_back(noted);
            }
            After::Finish => {
                self.outputs.push_back(Output::Finish);
            }
            After::Done => {
                self.phase = Phase::Finished;
                self.outputs.push_back(Output::Finished(self.summary()));
                return;
            }
        }
        self.release_changed(&changes);
        self.advance();
    }

    /// The cards of a request, as [`Output::LoadCards`] asked.
    pub fn handle_cards(&mut self, seq: u64, cards: Vec<StoredCard>, now: Instant) {
        self.now = now;
        match self.loads.remove(&seq) {
            Some(LoadFor::Send) => self.prepare_send(seq, cards),
            Some(LoadFor::Last4(results)) => {
                self.store_batch_results(seq, *results, Some(&cards));
            }
            None => {}
        }
        self.advance();
    }

    /// The sink finished ([`Output::Finish`]).
    pub fn handle_finished(&mut self, now: Instant) {
        self.now = now;
        if self.phase != Phase::Finishing {
            return;
        }
        self.persist(
            vec![
                meta(META_PHASE, PHASE_DONE),
                // Nothing can need the card numbers any more.
                Change::EraseCards,
            ],
            false,
            After::Done,
        );
    }

    /// A webhook event arrived. It is recorded first (an [`Output::Persist`]), and
    /// [`Output::Recorded`] with its key ([`WebhookEvent::dedup_key`]) says when that is
    /// durable: acknowledge the delivery only then. A redelivery (the same key) is not recorded
    /// twice; it is acknowledged once the first is recorded. An event without a key can be
    /// neither recorded nor told apart from a new one, and is ignored: refuse it (a receiver
    /// built on `cardsync_client::inbox` answers it 422).
    pub fn handle_event(&mut self, event: WebhookEvent, now: Instant) {
        self.now = now;
        let Some(key) = event.dedup_key() else {
            return;
        };
        let event_id = event
            .event_id()
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        let id = event_id.clone().unwrap_or_else(|| key.clone());
        tracing::info!(event = ?id, trigger = ?event.trigger(), "webhook event received");
        if !self.seen_events.insert(id.clone()) {
            match self.recording.get_mut(&id) {
                // Being recorded: acknowledged with the first.
                Some(keys) => keys.push(key),
                None => self.outputs.push_back(Output::Recorded(key)),
            }
            self.advance();
            return;
        }
        let trigger = match &event {
            WebhookEvent::Unknown(u) => u.trigger_id.parse().ok(),
            other => other.trigger().map(Trigger::id),
        };
        let noted = Noted {
            id: id.clone(),
            event_id,
            trigger,
            batch_id: event.batch_id().map(str::to_owned),
        };
        self.recording.insert(id, Vec::new());
        self.persist(
            vec![Change::Event(noted.record(EventState::Received))],
            false,
            After::Recorded(key, noted),
        );
        self.advance();
    }

    /// The user decided about an unconfirmed request ([`Output::NeedsDecision`]).
    pub fn decide(&mut self, seq: u64, decision: Decision, now: Instant) {
        self.now = now;
        if self.undecided.remove(&seq) {
            self.decisions.push_back((seq, decision));
        }
        self.advance();
    }

    /// Requests waiting for a decision.
    pub fn undecided(&self) -> impl Iterator<Item = u64> + '_ {
        self.undecided.iter().copied()
    }

    /// The answer to a call, or the transport's failure.
    pub fn handle_response(
        &mut self,
        id: CallId,
        answer: Result<http::Response<Vec<u8>>, TransportError>,
        now: Instant,
    ) {
        self.now = now;
        let Some(pending) = self.calls.remove(&id) else {
            return;
        };
        if let Some(outcome) = rules::outcome(&answer, self.wall()) {
            let idempotency = match pending.purpose {
                Purpose::Create(seq) => {
                    rules::create_idempotency(self.kind(seq).unwrap_or(RequestKind::Batch))
                }
                _ => Idempotency::Idempotent,
            };
            let jitter = self.jitter();
            let decision = self.options.retry.decide(
                idempotency,
                pending.attempt,
                now.saturating_duration_since(pending.started),
                outcome,
                jitter,
            );
            if let RetryDecision::Retry { after } = decision {
                self.retries.push((now + after, pending));
                self.advance();
                return;
            }
        }
        self.answered(pending, answer);
        self.advance();
    }

    /// Stops the run as soon as what is under way is answered and recorded (a user's Ctrl-C, a
    /// deploy's SIGTERM): no call is started any more, and the run ends with
    /// [`Summary::error`] saying `why`. A POST whose `sending` is persisted but not sent yet,
    /// or that waits to be tried again (a POST is tried again only when it certainly never
    /// left), goes back to `planned`: the stop leaves nothing waiting for a decision that the
    /// run could have avoided. Reads waiting to be tried again are left to the next run.
    ///
    /// ```
    /// use std::time::Instant;
    /// use cardsync_job::{Job, JobOptions, Snapshot};
    /// use cardsync_proto::{BaseUrl, Config};
    /// let config = Config::new(BaseUrl::parse("https://sandbox.cardsync.io/").unwrap());
    /// let mut snapshot = Snapshot::default();
    /// snapshot.meta.insert("planned".into(), "1".into());
    /// let mut job = Job::new(snapshot, JobOptions::new(config), Instant::now());
    /// job.drain("interrupted", Instant::now());
    /// assert_eq!(job.summary().error.as_deref(), Some("interrupted"));
    /// ```
    pub fn drain(&mut self, why: &str, now: Instant) {
        self.now = now;
        if self.draining {
            return;
        }
        self.draining = true;
        self.stop(why.to_owned());
        for (_, pending) in std::mem::take(&mut self.retries) {
            match pending.purpose {
                Purpose::Create(seq) => self.unsend(seq),
                other => {
                    if let Some(seq) = purpose_seq(&other) {
                        self.busy.remove(&seq);
                    }
                }
            }
        }
        self.advance();
        self.maybe_finish();
    }

    /// A POST that never left goes back to `planned`.
    fn unsend(&mut self, seq: u64) {
        self.persist_request(
            RequestUpdate::new(seq, RequestState::Sending, RequestState::Planned),
            vec![],
            After::Nothing,
        );
    }

    /// Where the job stands.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::of(&self.snapshot);
        s.error.clone_from(&self.error);
        s.key_refused = self.key_refused;
        s
    }

    /// The requests as last persisted.
    pub fn requests(&self) -> &[RequestRecord] {
        &self.snapshot.requests
    }

    /// Whether the job stopped.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Calls under way.
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    fn wall(&self) -> SystemTime {
        match self.options.wall_anchor {
            Some((i, w)) => w + self.now.saturating_duration_since(i),
            None => UNIX_EPOCH,
        }
    }

    fn jitter(&mut self) -> f64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn record(&self, seq: u64) -> Option<&RequestRecord> {
        self.snapshot.requests.iter().find(|r| r.seq == seq)
    }

    fn state(&self, seq: u64) -> Option<RequestState> {
        self.record(seq).map(|r| r.state)
    }

    fn kind(&self, seq: u64) -> Option<RequestKind> {
        self.record(seq).map(|r| r.kind)
    }

    fn persist(&mut self, changes: Vec<Change>, wants_checkpoint: bool, after: After) {
        let id = self.next_change;
        self.next_change += 1;
        // Invariant: the change that precedes a POST (to `sending`) is made durable before
        // the POST.
        let before_effect = matches!(after, After::Send(..));
        self.outputs.push_back(Output::Persist(Changes::numbered(
            id,
            changes.clone(),
            wants_checkpoint,
            before_effect,
        )));
        self.awaiting.insert(id, (changes, after));
    }

    /// Persists a request update (and more), keeping the request busy until acknowledged.
    fn persist_request(&mut self, update: RequestUpdate, mut more: Vec<Change>, after: After) {
        self.busy.insert(update.seq);
        more.insert(0, Change::Request(update));
        self.persist(more, false, after);
    }

    /// Requests whose persisted change was acknowledged are free again (unless what follows
    /// keeps them busy).
    fn release_changed(&mut self, changes: &[Change]) {
        for change in changes {
            if let Change::Request(u) = change {
                // A call waiting for its place among the `concurrency` of its kind is under
                // way too: forgetting it would start the same fetch a second time.
                let still = self
                    .calls
                    .values()
                    .chain(self.queued.iter())
                    .any(|p| purpose_seq(&p.purpose) == Some(u.seq))
                    || self
                        .retries
                        .iter()
                        .any(|(_, p)| purpose_seq(&p.purpose) == Some(u.seq))
                    || self.loads.contains_key(&u.seq)
                    || self.awaiting.values().any(|(c, _)| touches(c, u.seq));
                if !still {
                    self.busy.remove(&u.seq);
                }
                // A POST's place is free once its request leaves `sending`.
                if u.from == RequestState::Sending && u.to != RequestState::Sending {
                    self.creating.remove(&u.seq);
                }
            }
        }
    }

    fn call<E: Endpoint>(&mut self, purpose: Purpose, endpoint: E) {
        match endpoint.encode(&self.options.config) {
            Ok(request) => {
                if let Some(seq) = purpose_seq(&purpose) {
                    self.busy.insert(seq);
                }
                let pending = Pending {
                    purpose,
                    request,
                    attempt: 1,
                    started: self.now,
                };
                self.send(pending);
            }
            Err(e) => self.stop(format!("cannot build a request: {e}")),
        }
    }

    /// Calls of this kind under way.
    fn in_flight(&self, kind: CallKind) -> usize {
        self.calls
            .values()
            .filter(|p| CallKind::of(&p.purpose) == kind)
            .count()
    }

    /// Sends the reads that wait, in order, while there are places for their kind.
    fn release_queued(&mut self) {
        if self.error.is_some() {
            // A stopping job starts nothing new; what the reads were for is picked up by the
            // next run.
            self.queued.clear();
            return;
        }
        let mut waiting = VecDeque::with_capacity(self.queued.len());
        while let Some(pending) = self.queued.pop_front() {
            if self.in_flight(CallKind::of(&pending.purpose)) < self.options.concurrency {
                self.dispatch(pending);
            } else {
                waiting.push_back(pending);
            }
        }
        self.queued = waiting;
    }

    /// Sends a call now, or, for a read when `concurrency` reads of its kind are under way,
    /// when one of them ends. (POSTs are bounded before they are marked `sending`.)
    fn send(&mut self, pending: Pending) {
        let kind = CallKind::of(&pending.purpose);
        if kind != CallKind::Create && self.in_flight(kind) >= self.options.concurrency {
            self.queued.push_back(pending);
            return;
        }
        self.dispatch(pending);
    }

    fn dispatch(&mut self, pending: Pending) {
        let id = CallId(self.next_call);
        self.next_call += 1;
        let creates = matches!(pending.purpose, Purpose::Create(_));
        self.outputs.push_back(Output::Send(Call {
            id,
            request: rules::clone_request(&pending.request),
            creates,
        }));
        self.calls.insert(id, pending);
    }

    fn stop(&mut self, message: String) {
        if self.error.is_none() {
            self.error = Some(message);
        }
    }

    fn schedule_poll(&mut self, seq: u64, first: bool) {
        let pause = match (self.options.wait, first) {
            (Wait::Webhook, _) => self.options.poll_max,
            (Wait::Poll, true) => Duration::ZERO,
            (Wait::Poll, false) => {
                let last = self.polls.get(&seq).map_or(Duration::ZERO, |(_, p)| *p);
                (last * 2).clamp(self.options.poll_first, self.options.poll_max)
            }
        };
        self.polls.insert(seq, (self.now + pause, pause));
    }

    fn fetch(&mut self, seq: u64) {
        let Some(r) = self.record(seq) else { return };
        let Some(batch_id) = r.batch_id.clone() else {
            return;
        };
        let mut get = GetBatchResults::new(batch_id);
        if let Some(ev) = &r.event_id {
            get = get.with_event_id(ev.clone());
        }
        self.call(Purpose::Results(seq), get);
    }

    /// Loads a planned request's cards to send it.
    fn start_send(&mut self, seq: u64) {
        self.busy.insert(seq);
        self.loads.insert(seq, LoadFor::Send);
        self.outputs.push_back(Output::LoadCards(seq));
    }

    fn prepare_send(&mut self, seq: u64, cards: Vec<StoredCard>) {
        let Some(record) = self.record(seq).cloned() else {
            return;
        };
        match rules::create_request(&record, cards, &self.options.config) {
            // Ready: it goes out when a place is free (see `advance`).
            Ok(request) => {
                self.prepared.insert(seq, Box::new(request));
            }
            Err(e) => {
                self.busy.remove(&seq);
                self.stop(format!("cannot build request {seq}: {e}"));
            }
        }
    }

    /// A call's final answer (after retries).
    fn answered(
        &mut self,
        pending: Pending,
        answer: Result<http::Response<Vec<u8>>, TransportError>,
    ) {
        if answer.as_ref().is_ok_and(|r| r.status().is_success()) {
            self.key_accepted = true;
        }
        match pending.purpose {
            Purpose::Create(seq) => self.answered_create(seq, answer),
            Purpose::Status(seq) => {
                let batch = self
                    .record(seq)
                    .and_then(|r| r.batch_id.clone())
                    .unwrap_or_default();
                let status = rules::read_status(&batch, &answer, self.wall());
                match &status {
                    Status::Complete => {
                        tracing::info!(request = seq, batch = ?batch, "CardSync completed the batch: fetching its results");
                    }
                    Status::Pending => {
                        tracing::debug!(request = seq, batch = ?batch, "not complete yet");
                    }
                    Status::Failed(m) | Status::KeyRefused(m) => {
                        tracing::info!(request = seq, batch = ?batch, "{m}");
                    }
                    Status::TryLater { message, .. } => {
                        tracing::info!(request = seq, batch = ?batch, "status check failed: {message}");
                    }
                }
                match status {
                    // Fetched at once; the request goes from `sent` to `done` with its
                    // results (a run that stops before asks for the status again).
                    Status::Complete => {
                        self.polls.remove(&seq);
                        self.fetch(seq);
                    }
                    Status::Failed(message) => {
                        self.batch_failed(seq, RequestState::Sent, &message, vec![])
                    }
                    Status::Pending => {
                        self.busy.remove(&seq);
                        self.schedule_poll(seq, false);
                    }
                    Status::KeyRefused(message) => {
                        self.key_refused = true;
                        self.call_failed(seq, message);
                    }
                    // Retried already as the policy allows: this run stops, and the next one
                    // asks again.
                    Status::TryLater { message, .. } => self.call_failed(seq, message),
                }
            }
            Purpose::Results(seq) => {
                let batch = self
                    .record(seq)
                    .and_then(|r| r.batch_id.clone())
                    .unwrap_or_default();
                match rules::read_results(&format!("batch {batch}"), answer, self.wall()) {
                    Ok(results) if rules::needs_cards(&results) => {
                        // The old last 4 of changed cards come from the cards as sent.
                        self.loads.insert(seq, LoadFor::Last4(Box::new(results)));
                        self.outputs.push_back(Output::LoadCards(seq));
                    }
                    Ok(results) => self.store_batch_results(seq, results, None),
                    // The results exist: this run stops, and the next one fetches them.
                    Err(e) => {
                        self.key_refused |= e.key_refused;
                        self.call_failed(seq, e.message);
                    }
                }
            }
            Purpose::Adopt(seq, batch_id) => {
                let cards = self.record(seq).map_or(0, |r| r.cards);
                match rules::read_adoption(&batch_id, &answer, cards) {
                    Ok(()) => self.persist_request(
                        RequestUpdate::new(seq, RequestState::Sending, RequestState::Sent)
                            .with_batch_id(batch_id),
                        vec![],
                        After::Poll(seq),
                    ),
                    Err(why) => {
                        self.busy.remove(&seq);
                        self.undecided.insert(seq);
                        self.stop(format!(
                            "cannot adopt batch {batch_id} for request {seq}: {why}"
                        ));
                    }
                }
            }
            Purpose::AmexResults(event_id) => match rules::read_results(
                &format!("American Express update {event_id}"),
                answer,
                self.wall(),
            ) {
                Ok(results) => self.store_amex_results(event_id, results),
                // The event stays recorded: this run stops, and the next one fetches them.
                Err(e) => {
                    self.key_refused |= e.key_refused;
                    self.stop(e.message);
                }
            },
        }
    }

    fn call_failed(&mut self, seq: u64, message: String) {
        self.busy.remove(&seq);
        self.stop(message);
    }

    fn answered_create(
        &mut self,
        seq: u64,
        answer: Result<http::Response<Vec<u8>>, TransportError>,
    ) {
        let Some(record) = self.record(seq).cloned() else {
            return;
        };
        let what = format!("request {seq} ({} cards)", record.cards);
        let created = rules::read_create(record.kind, &answer, self.wall());
        match &created {
            Created::Batch(batch_id) => {
                tracing::info!(request = seq, cards = record.cards, batch = ?batch_id, "sent: CardSync created the batch");
            }
            Created::Subscribed => {
                tracing::info!(
                    request = seq,
                    cards = record.cards,
                    "sent: CardSync subscribed the cards"
                );
            }
            Created::Refused(m) | Created::KeyRefused(m) => {
                tracing::info!(
                    request = seq,
                    cards = record.cards,
                    "CardSync refused the request: {m}"
                );
            }
            Created::NotSent(m) => {
                tracing::info!(request = seq, "not sent (it may go again): {m}");
            }
            Created::Unconfirmed { message, .. } => {
                tracing::info!(
                    request = seq,
                    "the request may or may not have reached CardSync: {message}"
                );
            }
        }
        match created {
            Created::Batch(batch_id) => self.persist_request(
                RequestUpdate::new(seq, RequestState::Sending, RequestState::Sent)
                    .with_batch_id(batch_id),
                vec![],
                After::Poll(seq),
            ),
            Created::Subscribed => self.persist_request(
                RequestUpdate::new(seq, RequestState::Sending, RequestState::Done)
                    .with_message("subscribed"),
                vec![tally("subscribed", record.cards as i64)],
                After::Nothing,
            ),
            Created::Refused(message) => {
                // Nothing was created.
                self.persist_request(
                    RequestUpdate::new(seq, RequestState::Sending, RequestState::Failed)
                        .with_message(message),
                    vec![],
                    After::Nothing,
                );
            }
            Created::KeyRefused(message) => {
                // Nothing was created, and no other request would fare better: the request
                // goes back to planned, and the run stops (a run with the right key goes on).
                self.key_refused = true;
                self.persist_request(
                    RequestUpdate::new(seq, RequestState::Sending, RequestState::Planned),
                    vec![],
                    After::Nothing,
                );
                self.stop(format!("sending {what}: {message}"));
            }
            Created::NotSent(message) => {
                // Certainly never left: it can be sent again later without a decision.
                self.persist_request(
                    RequestUpdate::new(seq, RequestState::Sending, RequestState::Planned),
                    vec![],
                    After::Nothing,
                );
                self.stop(format!("sending {what}: {message}"));
            }
            Created::Unconfirmed { message, .. } => {
                // It may have created a batch.
                self.busy.remove(&seq);
                self.creating.remove(&seq);
                self.stop(format!("sending {what}; {message}"));
            }
        }
    }

    fn batch_failed(&mut self, seq: u64, from: RequestState, message: &str, more: Vec<Change>) {
        let cards = self.record(seq).map_or(0, |r| r.cards);
        let mut changes = vec![tally("batch_error", cards as i64)];
        changes.extend(more);
        self.polls.remove(&seq);
        self.persist_request(
            RequestUpdate::new(seq, from, RequestState::Failed).with_message(message),
            changes,
            After::Nothing,
        );
    }

    fn store_batch_results(&mut self, seq: u64, results: Results, sent: Option<&[StoredCard]>) {
        let Some(record) = self.record(seq).cloned() else {
            return;
        };
        if record.state.is_final() {
            // Recorded already (a second answer for one request): written once, counted once.
            debug_assert!(false, "request {seq}'s results came twice");
            self.busy.remove(&seq);
            return;
        }
        let Rows { rows, tallies } = rules::batch_rows(&record, results, sent);
        tracing::info!(
            request = seq,
            results = rows.len(),
            "results fetched and written"
        );
        self.polls.remove(&seq);
        // Invariant: the rows go to the sink before the persist that records them.
        self.outputs.push_back(Output::Write(rows));
        self.busy.insert(seq);
        let mut changes = vec![Change::Request(RequestUpdate::new(
            seq,
            record.state,
            RequestState::Done,
        ))];
        changes.extend(tallies.into_iter().map(|(s, n)| tally(&s, n)));
        self.persist(changes, true, After::Nothing);
    }

    fn store_amex_results(&mut self, event_id: String, results: Results) {
        let got = results.cards.len() as u64;
        let Rows { rows, tallies } = rules::update_rows(&event_id, results);
        self.outputs.push_back(Output::Write(rows));
        let before = self.snapshot.meta_u64(META_AMEX_RESULTS);
        let mut changes = vec![
            Change::Event(EventRecord::new(
                event_id,
                Some(Trigger::AmexUpdate.id()),
                None,
                EventState::Handled,
            )),
            meta(META_AMEX_RESULTS, &(before + got).to_string()),
        ];
        changes.extend(tallies.into_iter().map(|(s, n)| tally(&s, n)));
        self.persist(changes, true, After::Nothing);
    }

    fn handle_inbox(&mut self) {
        let mut deferred = VecDeque::new();
        while let Some(noted) = self.inbox.pop_front() {
            let request = noted.batch_id.as_deref().and_then(|b| {
                self.snapshot
                    .requests
                    .iter()
                    .find(|r| r.batch_id.as_deref() == Some(b))
                    .cloned()
            });
            if let Some(r) = &request
                && self.busy.contains(&r.seq)
            {
                // Act once what is under way for the request is done.
                deferred.push_back(noted);
                continue;
            }
            if request.is_none() && noted.batch_id.is_some() && !self.creating.is_empty() {
                // A batch's event can come before its POST's answer is recorded (a fast
                // batch): it may be one of the batches being created; decided once they are.
                deferred.push_back(noted);
                continue;
            }
            let batch_available = Some(Trigger::BatchAvailable.id());
            let batch_error = Some(Trigger::BatchError.id());
            let amex = Some(Trigger::AmexUpdate.id());
            match request {
                Some(r) if noted.trigger == batch_available && r.state == RequestState::Sent => {
                    self.polls.remove(&r.seq);
                    let mut update =
                        RequestUpdate::new(r.seq, RequestState::Sent, RequestState::Completed);
                    if let Some(event_id) = &noted.event_id {
                        update = update.with_event_id(event_id.clone());
                    }
                    self.persist_request(
                        update,
                        vec![Change::Event(noted.record(EventState::Handled))],
                        After::Fetch(r.seq),
                    );
                }
                Some(r)
                    if noted.trigger == batch_error
                        && matches!(r.state, RequestState::Sent | RequestState::Completed) =>
                {
                    self.batch_failed(
                        r.seq,
                        r.state,
                        "CardSync reported an error in the batch (webhook 22)",
                        vec![Change::Event(noted.record(EventState::Handled))],
                    );
                }
                _ if noted.trigger == amex && noted.event_id.is_some() => {
                    let event_id = noted.event_id.clone().unwrap_or_default();
                    self.call(
                        Purpose::AmexResults(event_id.clone()),
                        GetSubscriptionResults::new(event_id),
                    );
                }
                _ => {
                    // Not ours (another job's batch, another trigger), nothing left to do, or
                    // nothing that can be done (an update without an event id).
                    self.persist(
                        vec![Change::Event(noted.record(EventState::Ignored))],
                        false,
                        After::Nothing,
                    );
                }
            }
        }
        self.inbox = deferred;
    }

    /// Starts whatever can start, and finishes when nothing is left.
    fn advance(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let now = self.now;
        self.release_queued();
        // Retries that are due.
        let mut i = 0;
        while i < self.retries.len() {
            if self.retries[i].0 <= now {
                let (_, mut pending) = self.retries.swap_remove(i);
                pending.attempt += 1;
                self.send(pending);
            } else {
                i += 1;
            }
        }
        if self.error.is_none() {
            // Decisions.
            while let Some((seq, decision)) = self.decisions.pop_front() {
                match decision {
                    Decision::Adopt(batch_id) => {
                        self.call(
                            Purpose::Adopt(seq, batch_id.clone()),
                            GetBatch::new(batch_id),
                        );
                    }
                    Decision::Resend => self.persist_request(
                        RequestUpdate::new(seq, RequestState::Sending, RequestState::Planned)
                            .with_message("sent again after an interrupted POST"),
                        vec![],
                        After::Nothing,
                    ),
                    Decision::Abandon => self.persist_request(
                        RequestUpdate::new(seq, RequestState::Sending, RequestState::Abandoned)
                            .with_message("abandoned after an interrupted POST"),
                        vec![],
                        After::Nothing,
                    ),
                }
            }
            self.handle_inbox();
            // Status checks that are due.
            let due: Vec<u64> = self
                .polls
                .iter()
                .filter(|(seq, (at, _))| *at <= now && !self.busy.contains(seq))
                .map(|(seq, _)| *seq)
                .collect();
            for seq in due {
                if self.state(seq) != Some(RequestState::Sent) {
                    self.polls.remove(&seq);
                    continue;
                }
                let batch_id = self
                    .record(seq)
                    .and_then(|r| r.batch_id.clone())
                    .unwrap_or_default();
                self.call(Purpose::Status(seq), GetBatch::new(batch_id));
            }
            // Completed batches whose results are not fetched (a run that died).
            let completed: Vec<u64> = self
                .snapshot
                .requests
                .iter()
                .filter(|r| r.state == RequestState::Completed && !self.busy.contains(&r.seq))
                .map(|r| r.seq)
                .collect();
            for seq in completed {
                self.fetch(seq);
            }
            // Requests ready to go are marked `sending` (and then sent) in order, while
            // fewer than `concurrency` POSTs are under way (one, until CardSync has accepted
            // the key in this run).
            let window = if self.key_accepted {
                self.options.concurrency
            } else {
                1
            };
            while self.creating.len() < window
                && let Some((seq, request)) = self.prepared.pop_first()
            {
                self.creating.insert(seq);
                self.persist_request(
                    RequestUpdate::new(seq, RequestState::Planned, RequestState::Sending),
                    vec![],
                    After::Send(seq, request),
                );
            }
            // And a couple more are loaded and encoded ahead, so that the next one is ready
            // when a place frees (loading is quick; each encoded request is about 600 KB, so
            // not `concurrency` of them).
            let ahead = self.prepared.len()
                + self
                    .loads
                    .values()
                    .filter(|l| matches!(l, LoadFor::Send))
                    .count();
            let planned: Vec<u64> = self
                .snapshot
                .requests
                .iter()
                .filter(|r| r.state == RequestState::Planned && !self.busy.contains(&r.seq))
                .map(|r| r.seq)
                .take(PREPARED_AHEAD.saturating_sub(ahead))
                .collect();
            for seq in planned {
                self.start_send(seq);
            }
        }
        self.maybe_finish();
    }

    fn maybe_finish(&mut self) {
        let idle = self.phase == Phase::Running
            && self.calls.is_empty()
            && self.queued.is_empty()
            && self.awaiting.is_empty()
            && self.loads.is_empty()
            && self.outputs.is_empty();
        if !idle {
            return;
        }
        if self.error.is_some() {
            // Retries are abandoned: what they were for is picked up by the next run.
            self.retries.clear();
            self.phase = Phase::Finished;
            self.outputs.push_back(Output::Finished(self.summary()));
            return;
        }
        if !self.retries.is_empty() || !self.decisions.is_empty() || !self.inbox.is_empty() {
            return;
        }
        let open = self.snapshot.requests.iter().any(|r| match r.state {
            RequestState::Sending => !self.undecided.contains(&r.seq),
            s => !s.is_final(),
        });
        if open {
            return;
        }
        if !self.undecided.is_empty() {
            self.phase = Phase::Finished;
            self.outputs.push_back(Output::Finished(self.summary()));
            return;
        }
        if self.options.wait == Wait::Webhook {
            let amex_cards: u64 = self
                .snapshot
                .requests
                .iter()
                .filter(|r| r.kind == RequestKind::Subscription && r.state == RequestState::Done)
                .map(|r| r.cards)
                .sum();
            if self.snapshot.meta_u64(META_AMEX_RESULTS) < amex_cards {
                let deadline = *self
                    .amex_deadline
                    .get_or_insert(self.now + self.options.amex_wait);
                if self.now < deadline {
                    return;
                }
            }
        }
        self.phase = Phase::Finishing;
        self.amex_deadline = None;
        self.persist(vec![meta(META_PHASE, PHASE_FINISHING)], true, After::Finish);
    }
}

/// The kinds of call that are bounded separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallKind {
    Create,
    Status,
    Results,
}

impl CallKind {
    fn of(p: &Purpose) -> CallKind {
        match p {
            Purpose::Create(_) => CallKind::Create,
            Purpose::Status(_) | Purpose::Adopt(..) => CallKind::Status,
            Purpose::Results(_) | Purpose::AmexResults(_) => CallKind::Results,
        }
    }
}

fn purpose_seq(p: &Purpose) -> Option<u64> {
    match p {
        Purpose::Create(s) | Purpose::Status(s) | Purpose::Results(s) | Purpose::Adopt(s, _) => {
            Some(*s)
        }
        Purpose::AmexResults(_) => None,
    }
}

fn touches(changes: &[Change], seq: u64) -> bool {
    changes
        .iter()
        .any(|c| matches!(c, Change::Request(u) if u.seq == seq))
}

fn meta(key: &str, value: &str) -> Change {
    Change::Meta {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn tally(status: &str, delta: i64) -> Change {
    Change::Tally {
        status: status.to_owned(),
        delta,
    }
}

/// Turns a plan into changes for the store: the planned requests with their cards, then the
/// duplicates found once every row was read (deleted), then the mark that the plan is
/// complete. A run that dies before that mark leaves a plan that the next run discards and
/// makes again; until then nothing is sent.
///
/// ```
/// use cardsync_core::{plan, PlanEvent, PlanOptions, RecordBuf};
/// use cardsync_job::{PlanRecorder, Snapshot};
///
/// let mut recorder = PlanRecorder::new(&Snapshot::default());
/// let rows = vec![RecordBuf::new("sub-1", "4457010000000009", "01/50")];
/// let mut changes = Vec::new();
/// for event in plan(rows, PlanOptions::default()) {
///     if let PlanEvent::Request(request) = event {
///         changes.push(recorder.request(request));
///     }
/// }
/// changes.push(recorder.finish(1, 0, vec![("input".into(), "cards.csv".into())]));
/// assert_eq!(changes.len(), 2);
/// ```
#[derive(Debug, Default)]
pub struct PlanRecorder {
    discard: bool,
}

impl PlanRecorder {
    /// A recorder for the journal `snapshot` came from. Anything it holds is of a plan that
    /// was not finished, and is discarded by the first changes.
    pub fn new(snapshot: &Snapshot) -> PlanRecorder {
        PlanRecorder {
            discard: !snapshot.requests.is_empty() || !snapshot.meta.is_empty(),
        }
    }

    fn with_discard(&mut self, mut items: Vec<Change>) -> Changes {
        if std::mem::take(&mut self.discard) {
            items.insert(0, Change::DiscardPlan);
        }
        // Nothing is sent until the plan is complete, and the change that precedes the first
        // POST is made durable with everything before it.
        Changes::numbered(0, items, false, false)
    }

    /// The changes that store one planned request and its cards.
    pub fn request(&mut self, request: PlannedRequest) -> Changes {
        let (kind, se) = match &request.route {
            Route::Subscription(se) => (RequestKind::Subscription, Some(se.clone())),
            _ => (RequestKind::Batch, None),
        };
        let record = RequestRecord::new(
            request.seq,
            kind,
            se.as_ref().map(|s| s.as_str().to_owned()),
            request.cards.len() as u64,
        );
        let cards = request
            .cards
            .into_iter()
            .map(|c| StoredCard::new(c.row, c.id, c.pan, c.exp, se.clone()))
            .collect();
        self.with_discard(vec![Change::AddRequest {
            request: record,
            cards,
        }])
    }

    /// The changes that take duplicate rows (found after planning) out of the plan.
    pub fn duplicates(&mut self, rows: Vec<u64>) -> Changes {
        self.with_discard(vec![Change::RemoveRows { rows }])
    }

    /// The changes that mark the plan complete, with the counts of rows read and rejected and
    /// whatever identifies the job (`meta`).
    pub fn finish(
        mut self,
        rows: u64,
        invalid: u64,
        meta_values: Vec<(String, String)>,
    ) -> Changes {
        let mut items: Vec<Change> = meta_values
            .into_iter()
            .map(|(key, value)| Change::Meta { key, value })
            .collect();
        items.push(meta(META_ROWS, &rows.to_string()));
        items.push(meta(META_INVALID, &invalid.to_string()));
        items.push(meta(META_PLANNED, "1"));
        self.with_discard(items)
    }
}
