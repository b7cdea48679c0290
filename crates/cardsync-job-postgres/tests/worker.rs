//! Workers against the emulator on loopback and a real PostgreSQL: several at once send every
//! card once; a worker that dies at any step (its task panics there, the others go on) loses
//! nothing and repeats nothing once the requests it may have sent are decided about as a
//! person would (looking the batch up by its first card's id, as in the CardSync dashboard).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cardsync_core::{PlanOptions, Planner, Record};
use cardsync_hyper::{HyperTransport, Options};
use cardsync_job::{MemorySink, PlanRecorder, Snapshot};
use cardsync_job_postgres::{
    Decision, JobSpec, JournalKey, PgError, PgJournal, Scope, WorkerOptions, work,
};
use cardsync_proto::{BaseUrl, MerchantKey};
use cardsync_sandbox::{Sandbox, Settings};

mod common;
use common::{PrivateServer, TestDb, database};

const KEY_ENV: &str = "CARDSYNC_TEST_MERCHANT_KEY";

/// Valid Visa numbers, none of them a documented test card.
fn numbers(n: usize) -> Vec<String> {
    common::numbers_with("424242", n, 0)
}

/// Plans `cards` cards, `per` a request, into a new job: the ids of each request's first card.
async fn plan(
    journal: &PgJournal,
    sandbox: &Sandbox,
    name: &str,
    cards: usize,
    per: usize,
) -> HashMap<u64, String> {
    let spec = JobSpec::new(name, KEY_ENV, sandbox.base_url()).with_max_in_flight(8);
    let job = journal
        .create_job(&spec, &sandbox.settings().merchant_key)
        .await
        .unwrap();
    let options = PlanOptions::default().with_max_per_request(per).unwrap();
    let mut planner = Planner::new(options);
    for (i, n) in numbers(cards).iter().enumerate() {
        let id = format!("cus-{i}");
        planner.handle_record(Record::new(&id, n.as_str(), "12/29"));
    }
    planner.finish();
    let mut recorder = PlanRecorder::new(&Snapshot::default());
    let mut first_ids = HashMap::new();
    while let Some(request) = planner.poll_request() {
        first_ids.insert(request.seq, request.cards[0].id.clone());
        let dups = journal
            .apply_plan(job, &recorder.request(request))
            .await
            .unwrap();
        assert!(dups.is_empty());
    }
    journal.finish_plan(job, cards as u64, 0, 0).await.unwrap();
    first_ids
}

/// A job planned as [`plan`] does, but left being planned: its id.
async fn plan_unfinished(
    journal: &PgJournal,
    sandbox: &Sandbox,
    name: &str,
    cards: usize,
    per: usize,
) -> cardsync_job_postgres::JobId {
    let spec = JobSpec::new(name, KEY_ENV, sandbox.base_url());
    let job = journal
        .create_job(&spec, &sandbox.settings().merchant_key)
        .await
        .unwrap();
    let options = PlanOptions::default().with_max_per_request(per).unwrap();
    let mut planner = Planner::new(options);
    for (i, n) in numbers(cards).iter().enumerate() {
        planner.handle_record(Record::new(&format!("cus-{i}"), n.as_str(), "12/29"));
    }
    planner.finish();
    let mut recorder = PlanRecorder::new(&Snapshot::default());
    while let Some(request) = planner.poll_request() {
        journal
            .apply_plan(job, &recorder.request(request))
            .await
            .unwrap();
    }
    job
}

fn options(name: &str, sandbox: &Sandbox) -> WorkerOptions {
    let mut o = WorkerOptions::new(name)
        .with_concurrency(2)
        .with_lease(Duration::from_millis(1500))
        .with_polling(Duration::from_millis(20), Duration::from_millis(200))
        .with_key(
            KEY_ENV,
            MerchantKey::new(&sandbox.settings().merchant_key).unwrap(),
        )
        .with_base_url(BaseUrl::parse(sandbox.base_url()).unwrap());
    o.idle = Duration::from_millis(30);
    o
}

fn transport() -> Arc<HyperTransport> {
    Arc::new(HyperTransport::new(Options::loopback()).unwrap())
}

/// The tests that stop a worker at one of its steps need the crash points compiled in: skipped
/// without the `test-hooks` feature (which the README's test command turns on), except under
/// `CI=true`.
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

async fn start_sandbox() -> Sandbox {
    let mut settings = Settings::default();
    settings.complete_after = Duration::from_millis(100);
    settings.report_unchanged = true;
    Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Every card reached the emulator once, and the export holds every card's result once.
async fn assert_exactly_once(journal: &PgJournal, sandbox: &Sandbox, name: &str, cards: usize) {
    let counts = sandbox.counters()["POST /v2/batch"];
    assert_eq!(
        (counts.cards, counts.distinct_cards, counts.repeats),
        (cards as u64, cards as u64, 0)
    );
    let mut sink = MemorySink::new();
    assert_eq!(journal.export(name, &mut sink).await.unwrap(), cards as u64);
    let mut ids: Vec<String> = sink.rows().into_iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), cards, "every result once");
}

/// Decides about the requests that wait for one as a person would: each looked up in the
/// emulator by its first card's id (as in the CardSync dashboard), adopted when found; the
/// rest sent again. How many were adopted.
async fn decide_as_an_operator(
    journal: &PgJournal,
    sandbox: &Sandbox,
    first_ids: &HashMap<u64, String>,
    status: &cardsync_job_postgres::JobStatus,
) -> usize {
    let mut adopted = 0;
    for u in &status.unconfirmed {
        let first = &first_ids[&u.seq];
        if let Some(batch) = sandbox
            .batches()
            .into_iter()
            .find(|b| b.first_card_id.as_ref() == Some(first))
        {
            let adopt = Decision::Adopt(batch.batch_id.clone());
            journal
                .decide(&status.name, Some(u.seq), &adopt)
                .await
                .unwrap();
            adopted += 1;
        }
    }
    journal
        .decide(&status.name, None, &Decision::Resend)
        .await
        .unwrap();
    adopted
}

#[tokio::test]
async fn four_workers_send_every_card_once() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    let sandbox = start_sandbox().await;
    plan(&journal, &sandbox, "nightly", 3_000, 100).await;
    let mut workers = Vec::new();
    for w in 0..4 {
        let journal = journal.clone();
        let options = options(&format!("w{w}"), &sandbox);
        workers.push(tokio::spawn(async move {
            work(&journal, transport(), &options).await
        }));
    }
    let mut sent = 0;
    let mut busy = 0;
    for w in workers {
        let summary = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        sent += summary.sent;
        busy += u64::from(summary.sent > 0);
        assert_eq!(summary.waiting_for_decision, 0);
    }
    assert_eq!(sent, 30);
    assert!(busy >= 2, "the work was shared");
    assert!(journal.status("nightly").await.unwrap().finished());
    assert_exactly_once(&journal, &sandbox, "nightly", 3_000).await;
    sandbox.shutdown().await;
    db.drop().await;
}

#[tokio::test]
async fn a_worker_killed_at_any_step_loses_and_repeats_nothing() {
    let Some(base) = database() else { return };
    if !hooks_compiled() {
        return;
    }
    for point in [
        "claimed",
        "before-post",
        "after-post",
        "recorded",
        "before-results",
    ] {
        let db = TestDb::new(&base).await;
        let journal = db.journal("01").await;
        let sandbox = start_sandbox().await;
        let first_ids = plan(&journal, &sandbox, "nightly", 1_000, 100).await;

        // The doomed worker dies the first time it reaches `point`; two others go on.
        let fired = Arc::new(AtomicBool::new(false));
        let _doomed = {
            let fired = fired.clone();
            cardsync_job::hooks::on("doomed", move |at: &str| {
                if at == point && !fired.swap(true, Ordering::SeqCst) {
                    panic!("killed at {at}");
                }
            })
        };
        let doomed_run = {
            let journal = journal.clone();
            let options = options("doomed", &sandbox);
            tokio::spawn(async move { work(&journal, transport(), &options).await })
        };
        let mut others = Vec::new();
        for w in 0..2 {
            let journal = journal.clone();
            let options = options(&format!("w{w}"), &sandbox);
            others.push(tokio::spawn(async move {
                work(&journal, transport(), &options).await
            }));
        }
        let died = tokio::time::timeout(Duration::from_secs(60), doomed_run)
            .await
            .unwrap()
            .unwrap();
        assert!(died.is_err(), "{point}: the doomed worker died");
        assert!(fired.load(Ordering::SeqCst), "{point}: reached");
        for w in others {
            tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }

        // What the dead worker may have sent waits for a person: look it up as in the CardSync
        // dashboard, adopt what was created, send again what was not.
        let status = journal.status("nightly").await.unwrap();
        // A death during a POST's claim leaves its request waiting for a decision (so can the
        // dying process's other lane, killed with it); a death while fetching results is healed
        // by the others, with no decision.
        let at_post = matches!(point, "claimed" | "before-post" | "after-post");
        let waiting = status.unconfirmed.len();
        assert!(
            waiting <= 2 && (!at_post || waiting >= 1),
            "{point}: {status:?}"
        );
        let adopted = decide_as_an_operator(&journal, &sandbox, &first_ids, &status).await;
        // The POST it died after reached the emulator, and is adopted rather than resent.
        assert!(point != "after-post" || adopted >= 1, "{point}");
        let summary = work(&journal, transport(), &options("finisher", &sandbox))
            .await
            .unwrap();
        assert_eq!(summary.waiting_for_decision, 0, "{point}");
        assert!(
            journal.status("nightly").await.unwrap().finished(),
            "{point}"
        );
        assert_exactly_once(&journal, &sandbox, "nightly", 1_000).await;
        sandbox.shutdown().await;
        db.drop().await;
    }
}

#[tokio::test]
async fn a_worker_without_the_merchant_key_leaves_the_job_alone() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    let sandbox = start_sandbox().await;
    plan(&journal, &sandbox, "nightly", 10, 100).await;
    // Another merchant's key under the job's variable: not this job's merchant.
    let mut wrong = WorkerOptions::new("w")
        .with_key(KEY_ENV, MerchantKey::new("someone_elses_key").unwrap())
        .with_base_url(BaseUrl::parse(sandbox.base_url()).unwrap())
        .with_scope(Scope::Jobs(vec!["nightly".into()]));
    wrong.idle = Duration::from_millis(10);
    // It leaves the job to workers that hold the key, and says so.
    let summary =
        tokio::time::timeout(Duration::from_secs(10), work(&journal, transport(), &wrong))
            .await
            .expect("it stops: nothing is left that it can do")
            .unwrap();
    assert_eq!(summary.claims, 0);
    assert_eq!(
        summary.skipped.iter().collect::<Vec<_>>(),
        [&format!("nightly ({KEY_ENV})")]
    );
    assert_eq!(
        journal.status("nightly").await.unwrap().requests["planned"],
        1
    );
    assert!(sandbox.counters().is_empty());
    sandbox.shutdown().await;
    db.drop().await;
}

#[tokio::test]
async fn workers_ride_out_the_database_dropping_their_connections() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    let sandbox = start_sandbox().await;
    let mut faults = cardsync_sandbox::Faults::default();
    faults.latency_ms = 20;
    sandbox.set_faults(faults);
    let first_ids = plan(&journal, &sandbox, "nightly", 3_000, 100).await;
    let mut workers = Vec::new();
    for w in 0..2 {
        let journal = journal.clone();
        let options = options(&format!("w{w}"), &sandbox);
        workers.push(tokio::spawn(async move {
            work(&journal, transport(), &options).await
        }));
    }
    // Every connection of the workers is cut, again and again, while they work.
    let mut cuts = 0;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        cuts += db.cut_connections().await;
    }
    assert!(cuts > 0, "no connection was cut");
    for w in workers {
        let summary = tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .unwrap()
            .unwrap()
            .expect("the workers ride it out");
        assert!(summary.sent + summary.completed > 0);
    }
    // A cut in the instant a claim committed leaves its request to a decision, as a crash would.
    let status = journal.status("nightly").await.unwrap();
    decide_as_an_operator(&journal, &sandbox, &first_ids, &status).await;
    work(&journal, transport(), &options("finisher", &sandbox))
        .await
        .unwrap();
    assert_exactly_once(&journal, &sandbox, "nightly", 3_000).await;
    sandbox.shutdown().await;
    db.drop().await;
}

/// PostgreSQL stops while a POST is under way, for longer than the worker's lease, and the
/// answer comes while it is down: the worker keeps driving the POST (a failed lease renewal
/// does not drop it), and records the batch once the database is back. No request waits for a
/// decision, and every card reached CardSync once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_under_way_outlives_the_database_stopping() {
    if database().is_none() || !hooks_compiled() {
        return;
    }
    let Some(server) = PrivateServer::start() else {
        return;
    };
    let db = TestDb::new(&server.url).await;
    let journal = db.journal("01").await;
    let sandbox = start_sandbox().await;
    plan(&journal, &sandbox, "nightly", 300, 100).await;
    // The first POST takes four seconds.
    let mut faults = cardsync_sandbox::Faults::default();
    faults.latency_ms = 4_000;
    faults.paths = vec!["/v2/batch".to_owned()];
    sandbox.set_faults(faults);
    let (posting, mut posted) = tokio::sync::mpsc::unbounded_channel();
    let _hook = cardsync_job::hooks::on("outage", move |step: &str| {
        if step == "before-post" {
            let _ = posting.send(());
        }
    });
    let worker = {
        let journal = journal.clone();
        // One lane, a 1.5 s lease: the outage below is four times as long.
        let options = options("outage", &sandbox).with_concurrency(1);
        tokio::spawn(async move { work(&journal, transport(), &options).await })
    };
    tokio::time::timeout(Duration::from_secs(30), posted.recv())
        .await
        .expect("the worker starts a POST")
        .expect("hook");
    // The POST is on its way: the database goes away for six seconds (the answer comes
    // after four), and the next POSTs are quick again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = Arc::new(server);
    let halted = server.clone();
    tokio::task::spawn_blocking(move || halted.halt())
        .await
        .unwrap();
    sandbox.set_faults(cardsync_sandbox::Faults::default());
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        sandbox.counters()["POST /v2/batch"].requests,
        1,
        "the POST under way reached CardSync while the database was down"
    );
    let resumed = server.clone();
    tokio::task::spawn_blocking(move || resumed.resume())
        .await
        .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(120), worker)
        .await
        .expect("the worker finishes")
        .unwrap()
        .expect("the worker rides the outage out");
    assert_eq!(summary.unconfirmed, 0, "{summary:?}");
    assert_eq!(summary.waiting_for_decision, 0, "{summary:?}");
    let status = journal.status("nightly").await.unwrap();
    assert!(status.unconfirmed.is_empty(), "{status:?}");
    assert_exactly_once(&journal, &sandbox, "nightly", 300).await;
    sandbox.shutdown().await;
    // The whole server goes with `server`; the test's schema need not be dropped.
    drop(db);
}

/// Runs workers on the journal until they stop (at most a minute): their summary or error.
async fn work_once(
    journal: &PgJournal,
    sandbox: &Sandbox,
    name: &str,
) -> Result<cardsync_job_postgres::WorkSummary, PgError> {
    tokio::time::timeout(
        Duration::from_secs(60),
        work(journal, transport(), &options(name, sandbox)),
    )
    .await
    .expect("the worker stops")
}

/// Whoever can write rows of the journal, without its key, cannot steer a worker: a job's
/// base URL, key variable or merchant changed, a sent request moved back to planned, an
/// older sealed card set put back. Each is refused loudly, and nothing is sent anywhere.
#[tokio::test]
async fn rows_changed_without_the_key_steer_no_worker() {
    let Some(base) = database() else { return };
    // Somewhere else a worker could be sent to.
    let elsewhere = start_sandbox().await;
    let edits: [(&str, &str); 3] = [
        (
            "base URL",
            "UPDATE cardsync_jobs SET base_url = 'ELSEWHERE'",
        ),
        (
            "key variable",
            "UPDATE cardsync_jobs SET key_env = 'SOME_OTHER_MERCHANT_KEY'",
        ),
        (
            "a sent request back to planned",
            "UPDATE cardsync_requests SET state = 'planned', batch_id = NULL WHERE seq = 1",
        ),
    ];
    for (what, sql) in edits {
        let db = TestDb::new(&base).await;
        let journal = db.journal("01").await;
        let sandbox = start_sandbox().await;
        plan(&journal, &sandbox, "nightly", 30, 10).await;
        let schema = &db.schema;
        if what == "a sent request back to planned" {
            // Request 1 is sent by a worker that then stops.
            let claim = journal
                .claim("first", &Scope::All, Duration::from_secs(30))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(claim.seq, 1);
            journal
                .sent(&claim, "b-real", Duration::from_secs(3600))
                .await
                .unwrap();
        }
        let sql = sql
            .replace("cardsync_", &format!("{schema}.cardsync_"))
            .replace("ELSEWHERE", elsewhere.base_url());
        db.admin.batch_execute(&sql).await.unwrap();
        // One lane, so that the changed request is the first it meets.
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            work(
                &journal,
                transport(),
                &options("w", &sandbox).with_concurrency(1),
            ),
        )
        .await
        .expect("the worker stops");
        let err = outcome.expect_err(what);
        assert!(matches!(err, PgError::Tampered { .. }), "{what}: {err}");
        assert!(err.to_string().contains("without the journal key"), "{err}");
        assert!(
            elsewhere.counters().is_empty(),
            "{what}: something was sent elsewhere"
        );
        let posts = sandbox
            .counters()
            .get("POST /v2/batch")
            .map_or(0, |c| c.requests);
        assert_eq!(posts, 0, "{what}: a batch was sent from a changed row");
        sandbox.shutdown().await;
        db.drop().await;
    }
    elsewhere.shutdown().await;
}

/// A worker sends only to its own base URL: a job created for another is left alone, said.
#[tokio::test]
async fn a_job_for_another_base_url_is_left_alone() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    let sandbox = start_sandbox().await;
    let other = start_sandbox().await;
    plan(&journal, &other, "nightly", 10, 10).await;
    let summary = work_once(&journal, &sandbox, "w").await.unwrap();
    assert_eq!(summary.claims, 0);
    let skipped: Vec<&String> = summary.skipped.iter().collect();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].contains("sends only to"), "{skipped:?}");
    assert!(sandbox.counters().is_empty() && other.counters().is_empty());
    sandbox.shutdown().await;
    other.shutdown().await;
    db.drop().await;
}

/// `rotate_from` while workers run with both keys: nothing is lost; then a worker with only the
/// new key finishes, and the export (with only the new key) holds every result once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_while_workers_run_loses_nothing() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let old = db.journal("01").await;
    let sandbox = start_sandbox().await;
    let mut faults = cardsync_sandbox::Faults::default();
    faults.latency_ms = 30;
    sandbox.set_faults(faults);
    let cards = 2_000;
    plan(&old, &sandbox, "nightly", cards, 50).await;
    // The documented order: workers get both keys (the new one current), then the rotation.
    let both = db.journal_with("02", Some("01")).await.unwrap();
    let mut workers = Vec::new();
    for w in 0..2 {
        let journal = both.clone();
        let options = options(&format!("w{w}"), &sandbox);
        workers.push(tokio::spawn(async move {
            work(&journal, transport(), &options).await
        }));
    }
    // Rotate once some results are written and others are still to come.
    let mut waited = 0;
    while both
        .status("nightly")
        .await
        .unwrap()
        .requests
        .get("done")
        .copied()
        .unwrap_or(0)
        < 5
    {
        waited += 1;
        assert!(waited < 600, "no results written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old_key = JournalKey::from_hex(&"01".repeat(32)).unwrap();
    let resealed = both.rotate_from(&old_key).await.unwrap();
    assert!(resealed > 0);
    for w in workers {
        let summary = tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .unwrap()
            .unwrap()
            .expect("the workers ride the rotation out");
        assert!(summary.skipped.is_empty(), "{summary:?}");
    }
    // The old key is dropped: a worker and an export with the new key alone.
    drop(old);
    let new = db.journal("02").await;
    let summary = work_once(&new, &sandbox, "after").await.unwrap();
    assert!(summary.skipped.is_empty(), "{summary:?}");
    let status = new.status("nightly").await.unwrap();
    assert!(status.finished(), "{status:?}");
    assert!(status.unconfirmed.is_empty(), "{status:?}");
    assert_exactly_once(&new, &sandbox, "nightly", cards).await;
    sandbox.shutdown().await;
    db.drop().await;
}

/// A request's cards re-sealed at a newer version (a duplicate taken out after planning), and
/// the older sealed set put back by someone without the key: it does not open for the
/// request, and nothing is sent.
#[tokio::test]
async fn an_older_card_set_put_back_is_refused() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    let sandbox = start_sandbox().await;
    let job = plan_unfinished(&journal, &sandbox, "nightly", 30, 10).await;
    let schema = &db.schema;
    let saved: Vec<u8> = db
        .admin
        .query_one(
            &format!("SELECT cards FROM {schema}.cardsync_card_sets WHERE seq = 2"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Row 11 (in request 2) is taken out: request 2's cards are sealed again, version 1.
    journal.remove_rows(job, &[11]).await.unwrap();
    journal.finish_plan(job, 30, 0, 1).await.unwrap();
    db.admin
        .execute(
            &format!("UPDATE {schema}.cardsync_card_sets SET cards = $1 WHERE seq = 2"),
            &[&saved],
        )
        .await
        .unwrap();
    let mut one = options("w", &sandbox).with_concurrency(1);
    one.scope = Scope::Jobs(vec!["nightly".into()]);
    let err = tokio::time::timeout(Duration::from_secs(60), work(&journal, transport(), &one))
        .await
        .expect("the worker stops")
        .expect_err("the older set is refused");
    assert!(matches!(err, PgError::Tampered { .. }), "{err}");
    // Request 1 went; request 2 did not (its older set, with row 11, never left).
    let counts = sandbox.counters()["POST /v2/batch"];
    assert_eq!((counts.requests, counts.cards), (1, 10));
    sandbox.shutdown().await;
    db.drop().await;
}

/// A key CardSync refuses (revoked since the job was created) stops the worker: the requests it
/// was sending go back unsent, nothing fails, nothing waits for a decision, and a worker whose
/// key CardSync accepts finishes the job with every card once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_the_worker_and_fails_nothing() {
    use cardsync_proto::transport::Transport;
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    let sandbox = start_sandbox().await;
    plan(&journal, &sandbox, "nightly", 100, 10).await;
    // What CardSync sees from a worker whose key was revoked: another key.
    let refused = {
        let inner = transport();
        Arc::new(move |mut request: http::Request<Vec<u8>>| {
            let inner = inner.clone();
            async move {
                request.headers_mut().insert(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_static("revoked_key"),
                );
                inner.send(request).await
            }
        })
    };
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        work(&journal, refused, &options("revoked", &sandbox)),
    )
    .await
    .expect("the worker stops")
    .unwrap();
    let why = summary.key_refused.as_deref().expect("the key was refused");
    assert!(why.contains("check the API key"), "{why}");
    assert_eq!(
        (summary.sent, summary.failed, summary.unconfirmed),
        (0, 0, 0),
        "{summary:?}"
    );
    // Each lane sent at most one POST before the worker stopped.
    let posts = sandbox
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert!((1..=2).contains(&posts), "{posts} POSTs");
    let status = journal.status("nightly").await.unwrap();
    assert!(
        status.failed.is_empty() && status.unconfirmed.is_empty(),
        "{status:?}"
    );

    let summary = work_once(&journal, &sandbox, "w").await.unwrap();
    assert_eq!(summary.key_refused, None);
    assert!(journal.status("nightly").await.unwrap().finished());
    assert_exactly_once(&journal, &sandbox, "nightly", 100).await;
    sandbox.shutdown().await;
    db.drop().await;
}
