//! The job against the in-process emulator, crashed at every change and resumed: every card
//! reaches CardSync exactly once and every result reaches the sink exactly once.
//!
//! A run "crashes" when the store fails an `apply` (before its commit, or right after it, as a
//! process killed on either side of the commit would); the next run is a new `Job` loaded from
//! what the store holds, with the sink rewound to the stored checkpoint. Unconfirmed batches
//! are decided the way a person would: by looking the batch up at CardSync (here, in the
//! record of what the emulator received).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cardsync_core::{
    Brand, PlanOptions, Planner, Record, SANDBOX_TEST_CARDS, SeNumber, luhn_check_digit,
};
use cardsync_job::{
    Acquired, Decision, Env, Holder, Job, JobOptions, LeaseKeeper, MemorySink, MemoryStore,
    PlanRecorder, RunError, Sink, Store, Summary, Unconfirmed, Wait, run,
};
use cardsync_proto::retry::{Reached, RetryPolicy};
use cardsync_proto::transport::{TransportError, TransportErrorKind};
use cardsync_proto::{
    BaseUrl, Config, Endpoint, MerchantKey, SetWebhooks, Trigger, WebhookEvent, decode_webhook,
};
use cardsync_sandbox::{Emulator, Settings};
use proptest::prelude::*;

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
struct World {
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
struct TestEnv {
    world: Arc<World>,
    store: MemoryStore,
}

impl Env for TestEnv {
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
fn plan(
    store: &mut MemoryStore,
    lease: &cardsync_job::Lease,
) -> Result<(), cardsync_job::StoreError> {
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
enum Crash {
    Before(u64),
    After(u64),
}

/// Runs the job to its end, crashing once as told, resuming as often as needed.
async fn run_to_end(
    world: &Arc<World>,
    store: &MemoryStore,
    sink: &MemorySink,
    (wait, concurrency): (Wait, usize),
    crash: Option<Crash>,
) -> (u32, Summary) {
    let options = JobOptions::new(config())
        .with_wait(wait)
        .with_concurrency(concurrency)
        .with_poll_max(Duration::from_millis(20))
        .with_amex_wait(Duration::from_secs(5))
        .with_retry_policy(
            RetryPolicy::default().with_delays(Duration::from_millis(1), Duration::from_millis(4)),
        );
    let mut crash = crash;
    for runs in 1..=40u32 {
        let mut store = store.clone();
        let mut sink = sink.clone();
        match crash.take() {
            Some(Crash::Before(n)) => store.fail_at(n),
            Some(Crash::After(n)) => store.fail_after(n),
            None => {}
        }
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
            store: store.clone(),
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
            Ok(summary) if summary.done => return (runs, summary),
            Ok(_) => {}
            Err(RunError::Store(_)) => {}
            Err(e) => panic!("run failed: {e}"),
        }
    }
    panic!("the job did not finish in 40 runs");
}

/// Every card once at CardSync, every result once in the sink, the counts right.
fn check(world: &World, store: &MemoryStore, sink: &MemorySink, summary: &Summary, wait: Wait) {
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
    let requests = store.clone().load().unwrap().requests;
    for r in requests {
        assert!(store.clone().cards(r.seq).unwrap().is_empty());
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// How many changes an uninterrupted run applies.
fn clean_run(wait: Wait, concurrency: usize) -> u64 {
    let world = World::new(1, 0);
    let store = MemoryStore::new();
    let sink = MemorySink::new();
    let (runs, summary) =
        runtime().block_on(run_to_end(&world, &store, &sink, (wait, concurrency), None));
    assert_eq!(runs, 1);
    check(&world, &store, &sink, &summary, wait);
    store.applied()
}

#[test]
fn a_crash_at_every_change_loses_nothing_and_repeats_nothing() {
    // One POST at a time, and three (several requests unconfirmed at once after a crash).
    for (wait, concurrency) in [(Wait::Poll, 1), (Wait::Webhook, 1), (Wait::Poll, 3)] {
        let changes = clean_run(wait, concurrency);
        assert!(changes > 10, "{changes} changes");
        for n in 1..=changes {
            for crash in [Crash::Before(n), Crash::After(n)] {
                let world = World::new(1, 0);
                let store = MemoryStore::new();
                let sink = MemorySink::new();
                let mode = (wait, concurrency);
                let (runs, summary) =
                    runtime().block_on(run_to_end(&world, &store, &sink, mode, Some(crash)));
                assert!(runs >= 2, "{crash:?}: the crash did not happen");
                check(&world, &store, &sink, &summary, wait);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random crash points and random server trouble (refused connections, 503s before the
    /// server saw the request, answers lost or 500s after it handled it).
    #[test]
    fn random_crashes_and_faults(
        fault_seed in any::<u64>(),
        permille in 0u64..250,
        crash_at in 1u64..60,
        after in any::<bool>(),
        webhook in any::<bool>(),
        concurrency in 1usize..=4,
    ) {
        let wait = if webhook { Wait::Webhook } else { Wait::Poll };
        let world = World::new(fault_seed, permille);
        let store = MemoryStore::new();
        let sink = MemorySink::new();
        let crash = if after { Crash::After(crash_at) } else { Crash::Before(crash_at) };
        let mode = (wait, concurrency);
        let (_, summary) = runtime().block_on(run_to_end(&world, &store, &sink, mode, Some(crash)));
        check(&world, &store, &sink, &summary, wait);
    }
}
