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
//! What does not depend on how the store is driven is in [`world`]: the emulator behind the
//! faulty network (`World`, which is also the runs' `Transport`), the cards, and the checks of
//! what CardSync received and of what the output holds.
//!
//! The PostgreSQL journal's workers are not a `Store`: `cardsync-job-postgres`'s tests run them
//! in the same world, with the same faults, several workers of several lanes at once, one
//! killed at every crash point of its lanes (`cardsync_job::hooks`) and started again; they
//! decide by the same lookup and check the export with the same checks.
//!
//! Used by `cardsync-job`'s tests (the memory store), `cardsync-job-sqlite`'s (the SQLite
//! journal) and `cardsync-job-postgres`'s (the PostgreSQL journal), which include this file.
#![allow(dead_code)]

pub(crate) mod world;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cardsync_job::{
    Acquired, Changes, Decision, Env, Holder, Job, JobOptions, Lease, LeaseKeeper, MemorySink,
    PlanRecorder, RequestState, RunError, Sink, Snapshot, Store, StoreError, StoredCard, Summary,
    Unconfirmed, Wait, run,
};
use cardsync_proto::WebhookEvent;
use cardsync_proto::retry::RetryPolicy;

use world::{World, check_received, check_results, config, planned};

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
        if let Some(event) = self.world.next_event() {
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
        Some(match self.world.created(&first) {
            Some(batch) => Decision::Adopt(batch),
            None => Decision::Resend,
        })
    }
}

/// Plans the cards into the store (one `apply` per request, then the mark).
fn plan(store: &mut impl Store, lease: &Lease) -> Result<(), StoreError> {
    let mut recorder = PlanRecorder::new(&store.load()?);
    let (requests, rows) = planned();
    for request in requests {
        store.apply(lease, &recorder.request(request))?;
    }
    store.apply(lease, &recorder.finish(rows, 0, vec![]))
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
        let transport: &World = world;
        match run(
            &mut job,
            transport,
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
    check_received(world, summary);
    check_results(&sink.rows(), summary, wait);
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
