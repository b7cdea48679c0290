//! The exactly-once harness, for any store: the job against the in-process emulator, crashed at
//! every change and resumed, with server faults and several POSTs at once; every card must
//! reach CardSync exactly once and every result the sink exactly once.
//!
//! A run "crashes" when the store fails an `apply` (before its commit, or right after it, as a
//! process killed on either side of the commit would: [`Crashing`] does it to any store); the
//! next run is a new `Job` on a store opened afresh ([`Journals::open`], a new process), with
//! the sink rewound to the stored checkpoint. Unconfirmed batches are decided the way a person
//! would: by looking the batch up at CardSync (here, in the record of what the emulator
//! received).
//!
//! Used by `cardsync-job`'s tests (the memory store) and `cardsync-job-sqlite`'s (the SQLite
//! journal), which include this file.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cardsync_core::{
    Brand, PlanOptions, Planner, Record, SANDBOX_TEST_CARDS, SeNumber, luhn_check_digit,
};
use cardsync_job::{
    Acquired, Changes, Decision, Env, Holder, Job, JobOptions, Lease, LeaseKeeper, MemorySink,
    PlanRecorder, RequestState, RunError, Sink, Snapshot, Store, StoreError, StoredCard, Summary,
    Unconfirmed, Wait, run,
};
use cardsync_proto::retry::{Reached, RetryPolicy};
use cardsync_proto::transport::{TransportError, TransportErrorKind};
use cardsync_proto::{
    BaseUrl, Config, Endpoint, MerchantKey, SetWebhooks, Trigger, WebhookEvent, decode_webhook,
};
use cardsync_sandbox::{Emulator, Settings};

/// A fault the transport injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The connection was refused: the request never left.
    Refused,
    /// 503 from a proxy, before the server saw the request.
    UnavailableBefore,
    /// The server handled it, and the answer was lost (a timeout).
    LostAfter,
    /// The server handled it, then answered 500.
    ErrorAfter,
}

/// The emulator, and what it received.
pub(crate) struct World {
    emulator: Mutex<Emulator>,
    started: Instant,
    /// First card id of each batch the emulator created -> its batch id.
    created: Mutex<HashMap<String, String>>,
    /// Fault plan: a small generator, and the share of calls that fail (per mille).
    faults: Mutex<(u64, u64)>,
    /// Webhook events to deliver (each twice: redeliveries must be recognised).
    events: Mutex<VecDeque<WebhookEvent>>,
}

impl World {
    fn new(fault_seed: u64, fault_permille: u64) -> Arc<World> {
        let mut settings = Settings::default();
        settings.complete_after = Duration::ZERO;
        let world = Arc::new(World {
            emulator: Mutex::new(Emulator::new(settings, SystemTime::now())),
            started: Instant::now(),
            created: Mutex::new(HashMap::new()),
            faults: Mutex::new((fault_seed | 1, fault_permille)),
            events: Mutex::new(VecDeque::new()),
        });
        // Webhooks for every trigger the job listens to.
        let hooks = SetWebhooks::new()
            .with(Trigger::BatchAvailable, "http://hooks.test/w")
            .with(Trigger::BatchError, "http://hooks.test/w")
            .with(Trigger::AmexUpdate, "http://hooks.test/w");
        let request = hooks.encode(&config()).expect("encode");
        let answer = world.handle(&request);
        assert_eq!(answer.status(), 200);
        world
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn handle(&self, request: &http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
        let answer = self.emulator.lock().unwrap().handle(request, self.now());
        if request.uri().path() == "/v2/batch" && request.method() == "POST" {
            let body: serde_json::Value = serde_json::from_slice(request.body()).expect("json");
            let answer_json: serde_json::Value =
                serde_json::from_slice(answer.body()).unwrap_or_default();
            if let (Some(first), Some(batch)) = (
                body["cards"][0]["id"].as_str(),
                answer_json["data"]["batch_id"].as_str(),
            ) {
                self.created
                    .lock()
                    .unwrap()
                    .insert(first.to_owned(), batch.to_owned());
            }
        }
        answer
    }

    fn next_fault(&self) -> Option<Fault> {
        let mut f = self.faults.lock().unwrap();
        // xorshift
        f.0 ^= f.0 << 13;
        f.0 ^= f.0 >> 7;
        f.0 ^= f.0 << 17;
        if f.0 % 1000 >= f.1 {
            return None;
        }
        Some(match (f.0 >> 20) % 4 {
            0 => Fault::Refused,
            1 => Fault::UnavailableBefore,
            2 => Fault::LostAfter,
            _ => Fault::ErrorAfter,
        })
    }

    fn send(
        &self,
        request: &http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        let status = |code: u16| {
            let mut r =
                http::Response::new(br#"{"status":"failed","message":"injected"}"#.to_vec());
            *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        };
        match self.next_fault() {
            None => Ok(self.handle(request)),
            Some(Fault::Refused) => Err(TransportError::new(
                TransportErrorKind::Connect,
                Reached::No,
            )),
            Some(Fault::UnavailableBefore) => Ok(status(503)),
            Some(Fault::LostAfter) => {
                self.handle(request);
                Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    Reached::Maybe,
                ))
            }
            Some(Fault::ErrorAfter) => {
                self.handle(request);
                Ok(status(500))
            }
        }
    }

    /// Delivers the webhooks the emulator queued (each twice).
    fn pump_webhooks(&self) {
        let outgoing = {
            let mut e = self.emulator.lock().unwrap();
            e.tick(self.now());
            e.take_outgoing()
        };
        let mut events = self.events.lock().unwrap();
        for o in outgoing {
            let event = decode_webhook(&o.body).expect("the emulator's webhook decodes");
            events.push_back(event.clone());
            events.push_back(event);
        }
    }

    fn counts(&self, endpoint: &str) -> cardsync_sandbox::EndpointCounts {
        let counters = self.emulator.lock().unwrap().counters();
        counters.get(endpoint).copied().unwrap_or_default()
    }
}

fn config() -> Config {
    Config::new(BaseUrl::parse("http://127.0.0.1:1/").unwrap())
        .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap())
}

/// The test's runtime: tokio's clock, webhooks from the emulator, decisions by lookup.
struct TestEnv<S> {
    world: Arc<World>,
    store: S,
}

impl<S: Store> Env for TestEnv<S> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    async fn wait(&mut self, deadline: Option<Instant>) -> Option<WebhookEvent> {
        self.world.pump_webhooks();
        if let Some(event) = self.world.events.lock().unwrap().pop_front() {
            return Some(event);
        }
        let nap = Instant::now() + Duration::from_millis(2);
        let until = deadline.map_or(nap, |d| d.min(nap));
        tokio::time::sleep_until(until.into()).await;
        None
    }

    fn decide(&mut self, unconfirmed: &Unconfirmed) -> Option<Decision> {
        let cards = self.store.cards(unconfirmed.seq).ok()?;
        let first = cards.first()?.id.clone();
        Some(match self.world.created.lock().unwrap().get(&first) {
            Some(batch) => Decision::Adopt(batch.clone()),
            None => Decision::Resend,
        })
    }
}

/// A card number with a valid check digit.
fn pan(prefix: &str, n: usize) -> String {
    let body = format!("{prefix}{n:0width$}", width = 15 - prefix.len());
    let check = luhn_check_digit(&body).expect("digits");
    format!("{body}{}", char::from(check))
}

/// The cards: the documented test cards (every status), 40 more, and the American Express
/// test cards; (id, card, exp, se).
fn cards() -> Vec<(String, String, String, Option<String>)> {
    let mut out = Vec::new();
    for (i, c) in SANDBOX_TEST_CARDS.iter().enumerate() {
        let amex = c.brand == Brand::AmericanExpress;
        out.push((
            format!("t{i}"),
            c.card.to_owned(),
            c.exp.unwrap_or("12/28").to_owned(),
            amex.then(|| "1234567890".to_owned()),
        ));
    }
    for i in 0..40 {
        out.push((
            format!("g{i}"),
            pan(["4", "51", "6011"][i % 3], 5000 + i),
            "07/31".into(),
            None,
        ));
    }
    out
}

const PER_REQUEST: usize = 7;

fn batch_cards() -> u64 {
    cards().iter().filter(|c| c.3.is_none()).count() as u64
}

fn amex_cards() -> u64 {
    cards().iter().filter(|c| c.3.is_some()).count() as u64
}

/// Plans the cards into the store (one `apply` per request, then the mark).
fn plan(store: &mut impl Store, lease: &Lease) -> Result<(), StoreError> {
    let options = PlanOptions::default()
        .with_max_per_request(PER_REQUEST)
        .unwrap()
        .with_default_se_number(Some(SeNumber::parse("1234567890").unwrap()));
    let mut planner = Planner::new(options);
    let mut recorder = PlanRecorder::new(&store.load()?);
    let cards = cards();
    for (id, card, exp, se) in &cards {
        planner.handle_record(Record::new(id, card, exp).with_se_number(se.as_deref()));
        while let Some(request) = planner.poll_request() {
            store.apply(lease, &recorder.request(request))?;
        }
    }
    planner.finish();
    while let Some(request) = planner.poll_request() {
        store.apply(lease, &recorder.request(request))?;
    }
    store.apply(lease, &recorder.finish(planner.rows(), 0, vec![]))
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Crash {
    Before(u64),
    After(u64),
}

/// Where journals come from: each [`Journals::open`] is what a new process would open.
pub(crate) trait Journals {
    /// The store.
    type Store: Store;
    /// The journal, as a new process opens it.
    fn open(&self) -> Self::Store;
}

/// A store that fails one `apply` (before its commit, or right after it), as a process killed
/// on either side of the commit would; and counts the applies.
pub(crate) struct Crashing<S> {
    inner: S,
    /// The apply to fail (counted from 1), and whether after its commit.
    crash: Option<(u64, bool)>,
    applied: Arc<Mutex<u64>>,
}

impl<S: Store> Store for Crashing<S> {
    fn acquire(
        &mut self,
        holder: &Holder,
        now_ms: u64,
        ttl_ms: u64,
        gone: &dyn Fn(&Holder) -> bool,
    ) -> Result<Acquired, StoreError> {
        self.inner.acquire(holder, now_ms, ttl_ms, gone)
    }

    fn renew(&mut self, lease: &Lease, now_ms: u64, ttl_ms: u64) -> Result<Lease, StoreError> {
        self.inner.renew(lease, now_ms, ttl_ms)
    }

    fn release(&mut self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease)
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }

    fn cards(&mut self, seq: u64) -> Result<Vec<StoredCard>, StoreError> {
        self.inner.cards(seq)
    }

    fn apply(&mut self, lease: &Lease, changes: &Changes) -> Result<(), StoreError> {
        let n = {
            let mut applied = self.applied.lock().unwrap();
            *applied += 1;
            *applied
        };
        match self.crash {
            Some((at, false)) if at == n => {
                self.crash = None;
                Err(StoreError::Backend("injected failure".into()))
            }
            Some((at, true)) if at == n => {
                self.crash = None;
                self.inner.apply(lease, changes)?;
                Err(StoreError::Backend(
                    "injected failure after the commit".into(),
                ))
            }
            _ => self.inner.apply(lease, changes),
        }
    }

    fn compare_and_set(
        &mut self,
        lease: &Lease,
        seq: u64,
        from: RequestState,
        to: RequestState,
    ) -> Result<(), StoreError> {
        self.inner.compare_and_set(lease, seq, from, to)
    }
}

/// Runs the job to its end, crashing once as told, resuming as often as needed: how many runs
/// it took, the summary, and how many changes were applied.
pub(crate) async fn run_to_end<J: Journals>(
    world: &Arc<World>,
    journals: &J,
    sink: &MemorySink,
    (wait, concurrency): (Wait, usize),
    crash: Option<Crash>,
) -> (u32, Summary, u64) {
    let options = JobOptions::new(config())
        .with_wait(wait)
        .with_concurrency(concurrency)
        .with_poll_max(Duration::from_millis(20))
        .with_amex_wait(Duration::from_secs(5))
        .with_retry_policy(
            RetryPolicy::default().with_delays(Duration::from_millis(1), Duration::from_millis(4)),
        );
    let mut crash = crash;
    let applied = Arc::new(Mutex::new(0u64));
    for runs in 1..=40u32 {
        let start = *applied.lock().unwrap();
        let mut store = Crashing {
            inner: journals.open(),
            crash: crash.take().map(|c| match c {
                Crash::Before(n) => (start + n, false),
                Crash::After(n) => (start + n, true),
            }),
            applied: applied.clone(),
        };
        let mut sink = sink.clone();
        // Each run is a new process: the one before is gone.
        let holder = Holder::new("test", runs, 0);
        let lease = match store
            .acquire(&holder, 0, 60_000, &|h| h.pid != runs)
            .unwrap()
        {
            Acquired::Taken(l) => l,
            Acquired::Held(l) => panic!("held by {l:?}"),
        };
        let snapshot = store.load().unwrap();
        if !snapshot.is_planned() && plan(&mut store, &lease).is_err() {
            continue;
        }
        let snapshot = store.load().unwrap();
        sink.rewind(&snapshot.checkpoint).unwrap();
        let mut job = Job::new(snapshot, options.clone(), Instant::now());
        let mut keeper = LeaseKeeper::new(lease, Duration::from_secs(60));
        let mut env = TestEnv {
            world: world.clone(),
            store: journals.open(),
        };
        // The server sees a request only once the driver waits, as over a network: with
        // a concurrency above 1, several POSTs are under way (and `sending`) at once.
        let transport = |request: http::Request<Vec<u8>>| {
            let world = world.clone();
            async move {
                tokio::task::yield_now().await;
                world.send(&request)
            }
        };
        match run(
            &mut job,
            &transport,
            &mut store,
            &mut sink,
            &mut keeper,
            &mut env,
        )
        .await
        {
            Ok(summary) if summary.done => {
                let total = *applied.lock().unwrap();
                return (runs, summary, total);
            }
            Ok(_) => {}
            Err(RunError::Store(_)) => {}
            Err(e) => panic!("run failed: {e}"),
        }
    }
    panic!("the job did not finish in 40 runs");
}

/// Every card once at CardSync, every result once in the sink, the counts right.
pub(crate) fn check<J: Journals>(
    world: &World,
    journals: &J,
    sink: &MemorySink,
    summary: &Summary,
    wait: Wait,
) {
    assert_eq!(
        world.counts("POST /v2/batch").cards,
        batch_cards(),
        "{summary:?}"
    );
    assert_eq!(world.counts("POST /v2/batch").repeats, 0);
    assert_eq!(
        world.counts("POST /v2/subscribe").distinct_cards,
        amex_cards()
    );
    let rows = sink.rows();
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *per_id.entry(r.id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "results written twice: {twice:?}");
    // Every documented batch test card has its result.
    let batch_test_cards = SANDBOX_TEST_CARDS
        .iter()
        .filter(|c| c.brand != Brand::AmericanExpress)
        .count();
    let test_rows = rows
        .iter()
        .filter(|r| r.id.starts_with('t') && r.batch_id.is_some())
        .count();
    assert_eq!(test_rows, batch_test_cards, "{summary:?}");
    // American Express updates arrive by webhook (the test delivers them in both modes; a job
    // that waits for webhooks waits for them).
    let amex_rows = rows.iter().filter(|r| r.batch_id.is_none()).count() as u64;
    if wait == Wait::Webhook {
        assert_eq!(amex_rows, amex_cards(), "{summary:?}");
    }
    assert_eq!(summary.count("subscribed"), amex_cards() - amex_rows);
    // Counts: every batch card has a status or `no_result`.
    let counted: u64 = summary
        .statuses
        .iter()
        .filter(|s| s.status != "subscribed")
        .map(|s| s.cards)
        .sum::<u64>()
        - amex_rows;
    assert_eq!(counted, batch_cards(), "{summary:?}");
    assert!(sink.finished() >= 1);
    // The cards are erased once the job is done.
    let requests = journals.open().load().unwrap().requests;
    for r in requests {
        assert!(journals.open().cards(r.seq).unwrap().is_empty());
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// How many changes an uninterrupted run applies.
pub(crate) fn clean_run<J: Journals>(
    journals: impl Fn() -> J,
    wait: Wait,
    concurrency: usize,
) -> u64 {
    let world = World::new(1, 0);
    let journals = journals();
    let sink = MemorySink::new();
    let (runs, summary, applied) = runtime().block_on(run_to_end(
        &world,
        &journals,
        &sink,
        (wait, concurrency),
        None,
    ));
    assert_eq!(runs, 1);
    check(&world, &journals, &sink, &summary, wait);
    applied
}

/// Crashes a run at every change, before and after its commit, in each mode (one POST at a
/// time by polling and by webhook, three at once): nothing lost, nothing repeated. `journals`
/// makes a new, empty journal.
pub(crate) fn crash_at_every_change<J: Journals>(journals: impl Fn() -> J) {
    for (wait, concurrency) in [(Wait::Poll, 1), (Wait::Webhook, 1), (Wait::Poll, 3)] {
        let changes = clean_run(&journals, wait, concurrency);
        assert!(changes > 10, "{changes} changes");
        for n in 1..=changes {
            for crash in [Crash::Before(n), Crash::After(n)] {
                let world = World::new(1, 0);
                let journal = journals();
                let sink = MemorySink::new();
                let mode = (wait, concurrency);
                let (runs, summary, _) =
                    runtime().block_on(run_to_end(&world, &journal, &sink, mode, Some(crash)));
                assert!(runs >= 2, "{crash:?}: the crash did not happen");
                check(&world, &journal, &sink, &summary, wait);
            }
        }
    }
}

/// One random case: a crash at `crash_at` (before or after its commit), server trouble
/// (refused connections, 503s before the server saw the request, answers lost or 500s after
/// it handled it) at `permille`, polling or webhooks, 1 to 4 POSTs at once.
#[allow(clippy::too_many_arguments)]
pub(crate) fn random_case<J: Journals>(
    journal: J,
    fault_seed: u64,
    permille: u64,
    crash_at: u64,
    after: bool,
    webhook: bool,
    concurrency: usize,
) {
    let wait = if webhook { Wait::Webhook } else { Wait::Poll };
    let world = World::new(fault_seed, permille);
    let sink = MemorySink::new();
    let crash = if after {
        Crash::After(crash_at)
    } else {
        Crash::Before(crash_at)
    };
    let mode = (wait, concurrency);
    let (_, summary, _) =
        runtime().block_on(run_to_end(&world, &journal, &sink, mode, Some(crash)));
    check(&world, &journal, &sink, &summary, wait);
}
