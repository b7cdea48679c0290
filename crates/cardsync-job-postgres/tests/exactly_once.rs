//! The exactly-once harness of `cardsync-job` (its `tests/harness`) on the PostgreSQL journal:
//! the same cards against the same in-process emulator behind the same faulty network, sent by
//! several workers at once (each with several lanes) instead of one job. A worker is killed at
//! each crash point of its lanes (`claimed`, `before-post`, `after-post`, `before-results`,
//! `recorded`), at every time that point is reached in turn: its lane panics there and the
//! worker dies with all its lanes, wherever they are; it is started again, as a supervisor
//! would. Once the workers have done what they can, the requests that wait for a decision are
//! decided as a person would (each looked up by its first card's id in what the emulator
//! created: adopted when found, sent again when not), and the workers run again, until the job
//! is finished; then it is exported. Every card reaches CardSync once and every result the
//! export once, checked as for the other stores.
//!
//! With a webhook receiver, the emulator's events (each delivered twice) are recorded in the
//! journal while the workers run, and every American Express update must be exported; without
//! one, the workers find everything by polling.

#[path = "../../cardsync-job/tests/harness/mod.rs"]
mod harness;

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cardsync_job::{MemorySink, PlanRecorder, Snapshot, Wait};
use cardsync_job_postgres::{Decision, JobSpec, PgError, PgJournal, WorkerOptions, work};
use cardsync_proto::{MerchantKey, Trigger, WebhookEvent};
use common::{TestDb, database};
use harness::world::{self, World};
use proptest::prelude::*;

const JOB: &str = "nightly";
const KEY_ENV: &str = "CARDSYNC_TEST_MERCHANT_KEY";

/// The crash points of a worker's lane, in the order a request meets them.
const POINTS: [&str; 5] = [
    "claimed",
    "before-post",
    "after-post",
    "before-results",
    "recorded",
];

/// The workers' lease: what a killed worker held is taken over once it runs out.
const LEASE: Duration = Duration::from_secs(1);

/// How the workers of a case run.
#[derive(Clone, Copy, Debug)]
struct Mode {
    /// Workers at once.
    workers: usize,
    /// Lanes of each (requests it works on at once).
    lanes: usize,
    /// A webhook receiver records the emulator's events while the workers run, and the case
    /// waits for every American Express update; without one, everything is found by polling.
    webhooks: bool,
}

impl Mode {
    fn wait(self) -> Wait {
        if self.webhooks {
            Wait::Webhook
        } else {
            Wait::Poll
        }
    }
}

/// The worker whose lane reaches `point` for the `n`-th time (counted from 1, over every
/// worker of the case) is killed there.
#[derive(Clone, Copy, Debug)]
struct Crash {
    point: &'static str,
    n: u32,
}

/// What a case did.
#[derive(Debug)]
struct Outcome {
    /// How often a lane reached each crash point.
    reached: BTreeMap<String, u32>,
    /// Whether a worker was killed.
    killed: bool,
    /// Rounds of workers it took (each followed by decisions).
    rounds: u32,
}

/// Whether the crash points are compiled in: the cases that kill a worker are skipped without
/// the `test-hooks` feature (which the README's test command turns on), except under `CI=true`.
fn hooks_compiled() -> bool {
    if cfg!(feature = "test-hooks") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: run the tests with --features cardsync-cli/test-hooks (README)"
    );
    eprintln!("skipped: the crash points are compiled only with --features test-hooks");
    false
}

/// Runs `f` to its end on a runtime of its own, where cases can run side by side.
fn block_on<F: Future>(f: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, f)
}

fn worker_options(name: &str, lanes: usize) -> WorkerOptions {
    let mut options = WorkerOptions::new(name)
        .with_concurrency(lanes)
        .with_lease(LEASE)
        .with_polling(Duration::from_millis(10), Duration::from_millis(50))
        .with_key(KEY_ENV, MerchantKey::new(world::MERCHANT_KEY).unwrap())
        .with_base_url(world::config().base_url().clone());
    options.idle = Duration::from_millis(20);
    options
}

/// Plans the harness's cards into a new job, as `job create` does: the first card's id of
/// each request.
async fn plan(journal: &PgJournal) -> HashMap<u64, String> {
    let config = world::config();
    let spec = JobSpec::new(JOB, KEY_ENV, config.base_url().as_str()).with_max_in_flight(8);
    let job = journal
        .create_job(&spec, world::MERCHANT_KEY)
        .await
        .unwrap();
    let mut recorder = PlanRecorder::new(&Snapshot::default());
    let mut first_ids = HashMap::new();
    let (requests, rows) = world::planned();
    for request in requests {
        first_ids.insert(request.seq, request.cards[0].id.clone());
        let left_out = journal
            .apply_plan(job, &recorder.request(request))
            .await
            .unwrap();
        assert!(left_out.is_empty(), "no duplicates among the cards");
    }
    journal.finish_plan(job, rows, 0, 0).await.unwrap();
    first_ids
}

/// Delivers the webhooks the emulator sent so far to a receiver that records them in the
/// journal, as `listen --journal` does (each event comes twice; the second is recognised):
/// how many were new.
async fn receive(journal: &PgJournal, world: &World) -> u32 {
    let merchant = journal.merchant_fingerprint(world::MERCHANT_KEY);
    let mut new = 0;
    while let Some(event) = world.next_event() {
        let key = event.dedup_key().expect("the emulator's events have ids");
        let batch_id = match &event {
            WebhookEvent::BatchAvailable(e) => e.batch_id.clone(),
            WebhookEvent::BatchError(e) => e.batch_id.clone(),
            _ => None,
        };
        let event_id = event.event_id().map(str::to_owned).unwrap_or(key);
        let trigger = event.trigger().map(Trigger::id);
        let recorded = journal
            .record_event(
                &event_id,
                trigger,
                batch_id.as_deref(),
                Some(&merchant),
                "receiver",
            )
            .await
            .expect("the event is recorded");
        new += u32::from(recorded);
    }
    new
}

/// Decides about every request that waits for a decision as a person would: looked up by its
/// first card's id in what the emulator created (the CardSync dashboard), adopted when found,
/// sent again when not. How many were decided.
async fn decide_by_lookup(
    journal: &PgJournal,
    world: &World,
    first_ids: &HashMap<u64, String>,
) -> usize {
    let status = journal.status(JOB).await.unwrap();
    for u in &status.unconfirmed {
        let created = world.created(&first_ids[&u.seq]);
        // A batch a worker created after its claim ran out is named for the person deciding,
        // and it is the one CardSync has.
        for late in &u.late_batch_ids {
            assert_eq!(Some(late), created.as_ref(), "request {}: {u:?}", u.seq);
        }
        let decision = match created {
            Some(batch) => Decision::Adopt(batch),
            None => Decision::Resend,
        };
        let changed = journal.decide(JOB, Some(u.seq), &decision).await.unwrap();
        assert_eq!(changed, 1);
    }
    status.unconfirmed.len()
}

/// One round: `mode.workers` workers at once until nothing is left that they can do, each
/// started again when it is killed (at most three times), with the webhook receiver running
/// meanwhile when there is one. How many workers were killed.
async fn round(
    journal: &PgJournal,
    world: &Arc<World>,
    mode: Mode,
    names: &str,
    killed: &Arc<AtomicBool>,
) -> u32 {
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..mode.workers {
        let (journal, world, killed) = (journal.clone(), world.clone(), killed.clone());
        let names = names.to_owned();
        slots.spawn(async move {
            let mut deaths = 0;
            for life in 0..4 {
                let name = format!("{names}w{slot}.{life}");
                let options = worker_options(&name, mode.lanes);
                let worked = tokio::time::timeout(
                    Duration::from_secs(60),
                    work(&journal, world.clone(), &options),
                )
                .await
                .unwrap_or_else(|_| panic!("{name} did not stop within a minute"));
                match worked {
                    Ok(_) => return deaths,
                    // Killed at its crash point (its lane panicked, its other lanes were
                    // stopped wherever they were): started again, as a new process.
                    Err(PgError::State(e))
                        if e.contains("a worker task failed") && killed.load(Ordering::SeqCst) =>
                    {
                        deaths += 1;
                    }
                    Err(e) => panic!("{name} failed: {e}"),
                }
            }
            panic!("{names}w{slot} was killed four times");
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = mode.webhooks.then(|| {
        let (journal, world, stop) = (journal.clone(), world.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                receive(&journal, &world).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    });
    let mut deaths = 0;
    while let Some(slot) = slots.join_next().await {
        deaths += finished(slot);
    }
    stop.store(true, Ordering::SeqCst);
    if let Some(receiver) = receiver {
        finished(receiver.await);
    }
    deaths
}

/// Names the case when it fails (the checks shared with the other stores do not know it).
struct Named(String);

impl Drop for Named {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failed: {}", self.0);
        }
    }
}

/// One case: a new journal and a new world (`fault_permille` of the calls failing, as drawn
/// from `fault_seed`), the job planned, workers run in rounds until it is finished (a worker
/// killed as `crash` says, and started again), the requests waiting for a decision decided
/// by lookup after each round; then exported and checked: every card at CardSync once, every
/// result once in the export, the counts right, the cards and results erased.
async fn run_case(
    base: &str,
    mode: Mode,
    crash: Option<Crash>,
    (fault_seed, fault_permille): (u64, u64),
) -> Outcome {
    static CASES: AtomicU64 = AtomicU64::new(0);
    let case = format!("eo{}-", CASES.fetch_add(1, Ordering::SeqCst));
    let what = format!("{mode:?}, {crash:?}, faults {fault_permille}‰ from {fault_seed}");
    let _named = Named(what.clone());
    let db = TestDb::new(base).await;
    let journal = db.journal("01").await;
    let world = World::new(fault_seed, fault_permille);
    let first_ids = plan(&journal).await;

    // Every crash point the case's lanes reach is counted; the chosen one kills its worker.
    let reached = Arc::new(Mutex::new(BTreeMap::<String, u32>::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let _hook = {
        let (reached, killed) = (reached.clone(), killed.clone());
        cardsync_job::hooks::on(&case, move |at: &str| {
            let n = {
                let mut reached = reached.lock().unwrap();
                let n = reached.entry(at.to_owned()).or_default();
                *n += 1;
                *n
            };
            if let Some(crash) = crash
                && crash.point == at
                && crash.n == n
            {
                killed.store(true, Ordering::SeqCst);
                panic!("killed at {at} ({n})");
            }
        })
    };

    let started = Instant::now();
    let mut deaths = 0;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(
            rounds <= 30 && started.elapsed() < Duration::from_secs(240),
            "{what}: not finished after {rounds} rounds: {:?}",
            journal.status(JOB).await.unwrap()
        );
        let names = format!("{case}r{rounds}");
        deaths += round(&journal, &world, mode, &names, &killed).await;
        // The events sent until the workers stopped, recorded.
        if mode.webhooks {
            receive(&journal, &world).await;
        }
        let decided = decide_by_lookup(&journal, &world, &first_ids).await;
        let status = journal.status(JOB).await.unwrap();
        if decided == 0 && status.finished() {
            break;
        }
    }
    let killed = killed.load(Ordering::SeqCst);
    assert_eq!(deaths, u32::from(killed), "{what}: one worker is killed");

    let status = journal.status(JOB).await.unwrap();
    assert!(
        status.unconfirmed.is_empty() && status.in_flight == 0,
        "{what}: {status:?}"
    );
    let summary = status.summary();
    let mut sink = MemorySink::new();
    let written = journal.export(JOB, &mut sink).await.unwrap();
    let rows = sink.rows();
    assert_eq!(written, rows.len() as u64, "{what}");
    world::check_received(&world, &summary);
    world::check_results(&rows, &summary, mode.wait());
    assert_eq!(sink.finished(), 1, "{what}");
    // Exported once: a second export writes nothing.
    let again = journal.export(JOB, &mut MemorySink::new()).await;
    assert!(
        matches!(again, Err(PgError::Exported(_))),
        "{what}: {again:?}"
    );
    // The cards and results are erased.
    for table in ["cardsync_card_sets", "cardsync_results", "cardsync_updates"] {
        let left: i64 = db
            .admin
            .query_one(&format!("SELECT count(*) FROM {}.{table}", db.schema), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{what}: {table}");
    }
    db.drop().await;
    let reached = reached.lock().unwrap().clone();
    Outcome {
        reached,
        killed,
        rounds,
    }
}

/// Cases at once: each has a journal, a world and workers of its own, and spends most of its
/// time waiting for a killed worker's claims to run out.
const AT_ONCE: usize = 3;

/// Runs `cases` (mode, crash, fault plan), [`AT_ONCE`] at a time: their outcomes, in order.
async fn run_cases(base: &str, cases: Vec<(Mode, Option<Crash>, (u64, u64))>) -> Vec<Outcome> {
    let mut running = tokio::task::JoinSet::new();
    let mut outcomes = BTreeMap::new();
    let total = cases.len();
    for (i, (mode, crash, faults)) in cases.into_iter().enumerate() {
        if running.len() == AT_ONCE
            && let Some(done) = running.join_next().await
        {
            let (j, outcome) = finished(done);
            outcomes.insert(j, outcome);
        }
        let base = base.to_owned();
        // On this thread (an export's sink need not be `Send`).
        running.spawn_local(async move { (i, run_case(&base, mode, crash, faults).await) });
    }
    while let Some(done) = running.join_next().await {
        let (j, outcome) = finished(done);
        outcomes.insert(j, outcome);
    }
    assert_eq!(outcomes.len(), total);
    outcomes.into_values().collect()
}

/// What a task returned; its panic, if it failed.
fn finished<T>(done: Result<T, tokio::task::JoinError>) -> T {
    match done {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a task stopped: {e}"),
    }
}

/// Kills a worker at every crash point, every time it is reached in a run without crashes (as
/// many times as the point was reached there), with three workers of two lanes at once,
/// polling and with webhooks: nothing lost, nothing repeated.
#[test]
fn a_worker_killed_at_every_crash_point_loses_nothing_and_repeats_nothing() {
    let Some(base) = database() else { return };
    if !hooks_compiled() {
        return;
    }
    block_on(async {
        for webhooks in [false, true] {
            let mode = Mode {
                workers: 3,
                lanes: 2,
                webhooks,
            };
            let clean = run_case(&base, mode, None, (1, 0)).await;
            // Nothing waits for a decision (a webhook that came after the workers stopped
            // may take another round).
            assert!(
                !clean.killed && (clean.rounds == 1 || webhooks),
                "{clean:?}"
            );
            eprintln!(
                "{mode:?}: crash points reached without crashes: {:?}",
                clean.reached
            );
            let mut cases = Vec::new();
            for point in POINTS {
                let times = clean.reached.get(point).copied().unwrap_or(0);
                assert!(times > 0, "{point} is reached: {clean:?}");
                for n in 1..=times {
                    cases.push((mode, Some(Crash { point, n }), (1, 0)));
                }
            }
            let outcomes = run_cases(&base, cases.clone()).await;
            for ((_, crash, _), outcome) in cases.iter().zip(&outcomes) {
                assert!(outcome.killed, "{mode:?}, {crash:?}: the worker was killed");
            }
        }
    });
}

/// The same with server trouble (a fixed fault plan: refused connections, 503s before the
/// server saw the request, answers lost or 500s after it handled it): a worker killed at each
/// crash point, the first, second and fourth time it is reached, polling and with webhooks.
#[test]
fn a_worker_killed_amid_server_faults_loses_nothing_and_repeats_nothing() {
    let Some(base) = database() else { return };
    if !hooks_compiled() {
        return;
    }
    block_on(async {
        let mut cases = Vec::new();
        for webhooks in [false, true] {
            let mode = Mode {
                workers: 3,
                lanes: 2,
                webhooks,
            };
            for point in POINTS {
                for n in [1, 2, 4] {
                    cases.push((mode, Some(Crash { point, n }), (0x5eed, 150)));
                }
            }
        }
        let outcomes = run_cases(&base, cases.clone()).await;
        for ((mode, crash, _), outcome) in cases.iter().zip(&outcomes) {
            assert!(outcome.killed, "{mode:?}, {crash:?}: the worker was killed");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]

    /// Random server trouble, a worker killed at a random crash point (when the case reaches
    /// it that often), one to three workers of one to three lanes, polling or webhooks.
    #[test]
    fn random_crashes_and_faults(
        fault_seed in any::<u64>(),
        permille in 0u64..250,
        point in prop::sample::select(POINTS.to_vec()),
        n in 1u32..12,
        webhooks in any::<bool>(),
        workers in 1usize..=3,
        lanes in 1usize..=3,
    ) {
        let Some(base) = database() else { return Ok(()) };
        if !hooks_compiled() {
            return Ok(());
        }
        let mode = Mode { workers, lanes, webhooks };
        let crash = Some(Crash { point, n });
        block_on(run_case(&base, mode, crash, (fault_seed, permille)));
    }
}
