//! The job's written invariants, checked by driving it by hand against the in-process
//! emulator: no batch is sent before its `sending` state is stored, at most `concurrency`
//! POSTs, status checks and results fetches each are under way, answers may come back in any
//! order, and an unconfirmed batch is never sent again without a decision.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use cardsync_core::{PlanOptions, Planner, Record, luhn_check_digit};
use cardsync_job::{
    Acquired, Decision, Holder, Job, JobOptions, Lease, MemorySink, MemoryStore, Output,
    PlanRecorder, RequestState, Sink, Store,
};
use cardsync_proto::{BaseUrl, Config, MerchantKey};
use cardsync_sandbox::{Emulator, Settings};

fn config() -> Config {
    Config::new(BaseUrl::parse("http://127.0.0.1:1/").unwrap())
        .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap())
}

fn pan(n: usize) -> String {
    let body = format!("4{n:014}");
    format!("{body}{}", char::from(luhn_check_digit(&body).unwrap()))
}

/// 50 Visa cards in requests of 5, planned into a new store.
fn planned() -> (MemoryStore, Lease) {
    let mut store = MemoryStore::new();
    let Acquired::Taken(lease) = store
        .acquire(&Holder::new("h", 1, 0), 0, 60_000, &|_| false)
        .unwrap()
    else {
        panic!()
    };
    let mut planner = Planner::new(PlanOptions::default().with_max_per_request(5).unwrap());
    let mut recorder = PlanRecorder::new(&store.load().unwrap());
    let cards: Vec<(String, String)> = (0..50).map(|i| (format!("c{i}"), pan(1000 + i))).collect();
    for (id, card) in &cards {
        planner.handle_record(Record::new(id, card, "03/31"));
    }
    planner.finish();
    while let Some(r) = planner.poll_request() {
        store.apply(&lease, &recorder.request(r)).unwrap();
    }
    store
        .apply(&lease, &recorder.finish(planner.rows(), 0, vec![]))
        .unwrap();
    (store, lease)
}

/// How the test answers the calls waiting.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// Alternately the newest and the oldest.
    Alternate,
    /// POSTs first, so that status checks and results fetches pile up.
    PostsFirst,
}

/// The most calls of each kind seen under way at once: POSTs, status checks, results.
type Peaks = [usize; 3];

fn kind(request: &http::Request<Vec<u8>>) -> usize {
    match (request.method(), request.uri().path()) {
        (&http::Method::POST, _) => 0,
        (_, "/v2/batch") => 1,
        _ => 2,
    }
}

/// Drives the job by hand; answers calls in `order`. Returns the emulator's count of batch
/// POSTs and the peaks of calls under way.
fn drive(
    job: &mut Job,
    store: &mut MemoryStore,
    lease: &Lease,
    (concurrency, order): (usize, Order),
    mut decide: impl FnMut(u64) -> Option<Decision>,
) -> (u64, Peaks) {
    let mut peaks: Peaks = [0; 3];
    let mut settings = Settings::default();
    settings.complete_after = Duration::ZERO;
    settings.report_unchanged = true;
    let mut emulator = Emulator::new(settings, SystemTime::now());
    let started = Instant::now();
    let mut sink = MemorySink::new();
    let mut waiting: Vec<(cardsync_job::CallId, http::Request<Vec<u8>>, bool)> = Vec::new();
    let mut posts = 0;
    let mut turn = 0u64;
    for _ in 0..100_000 {
        while let Some(output) = job.poll_output() {
            match output {
                Output::Persist(mut changes) => {
                    if changes.wants_checkpoint() {
                        changes.set_checkpoint(sink.checkpoint().unwrap());
                    }
                    store.apply(lease, &changes).unwrap();
                    job.handle_persisted(changes.id(), Instant::now());
                }
                Output::LoadCards(seq) => {
                    let cards = store.cards(seq).unwrap();
                    job.handle_cards(seq, cards, Instant::now());
                }
                Output::Send(call) => {
                    if call.creates {
                        // Invariant: its request is `sending` in the store already.
                        let body: serde_json::Value =
                            serde_json::from_slice(call.request.body()).unwrap();
                        let first = body["cards"][0]["id"].as_str().unwrap().to_owned();
                        let snapshot = store.load().unwrap();
                        let sending: Vec<u64> = snapshot
                            .requests
                            .iter()
                            .filter(|r| r.state == RequestState::Sending)
                            .map(|r| r.seq)
                            .collect();
                        assert!(
                            sending
                                .iter()
                                .any(|seq| store.cards(*seq).unwrap()[0].id == first),
                            "a batch was sent before its `sending` state was stored"
                        );
                    }
                    let k = kind(&call.request);
                    waiting.push((call.id, call.request, call.creates));
                    // Invariant: at most `concurrency` calls of each kind under way.
                    let under_way = waiting.iter().filter(|w| kind(&w.1) == k).count();
                    assert!(under_way <= concurrency, "{under_way} calls of kind {k}");
                    peaks[k] = peaks[k].max(under_way);
                }
                Output::Write(rows) => sink.append(&rows).unwrap(),
                Output::NeedsDecision(u) => {
                    if let Some(d) = decide(u.seq) {
                        job.decide(u.seq, d, Instant::now());
                    }
                }
                Output::Finish => {
                    sink.finish().unwrap();
                    job.handle_finished(Instant::now());
                }
                // No webhooks in this run.
                Output::Recorded(key) => panic!("no event was given, yet {key} was recorded"),
                Output::Finished(_) => return (posts, peaks),
            }
        }
        if waiting.is_empty() {
            job.handle_timeout(Instant::now() + Duration::from_secs(3600));
            continue;
        }
        turn += 1;
        let i = match order {
            Order::PostsFirst => waiting.iter().position(|w| w.2).unwrap_or(0),
            Order::Alternate if turn.is_multiple_of(2) => waiting.len() - 1,
            Order::Alternate => 0,
        };
        let (id, request, creates) = waiting.remove(i);
        if creates && request.uri().path() == "/v2/batch" {
            posts += 1;
        }
        let answer = emulator.handle(&request, started.elapsed());
        job.handle_response(id, Ok(answer), Instant::now());
    }
    panic!("the job did not finish");
}

#[test]
fn sends_follow_their_stored_state_and_concurrency_is_bounded() {
    for concurrency in [1, 3] {
        for order in [Order::Alternate, Order::PostsFirst] {
            let (mut store, lease) = planned();
            let options = JobOptions::new(config()).with_concurrency(concurrency);
            let mut job = Job::new(store.load().unwrap(), options, Instant::now());
            let (posts, peaks) =
                drive(&mut job, &mut store, &lease, (concurrency, order), |_| None);
            assert_eq!(posts, 10);
            let summary = job.summary();
            assert!(summary.done, "{summary:?}");
            assert_eq!(summary.count("no_change"), 50);
            if order == Order::PostsFirst {
                // The bounds were reached, not merely respected.
                assert_eq!(peaks, [concurrency; 3], "{peaks:?}");
            }
        }
    }
}

#[test]
fn an_unconfirmed_batch_is_not_sent_again_without_a_decision() {
    let (mut store, lease) = planned();
    // Two requests were being sent when an earlier run stopped.
    for seq in [2, 5] {
        store
            .compare_and_set(&lease, seq, RequestState::Planned, RequestState::Sending)
            .unwrap();
    }
    let mut job = Job::new(
        store.load().unwrap(),
        JobOptions::new(config()),
        Instant::now(),
    );
    let mut asked = HashSet::new();
    let (posts, _) = drive(&mut job, &mut store, &lease, (1, Order::Alternate), |seq| {
        asked.insert(seq);
        None
    });
    assert_eq!(asked, HashSet::from([2, 5]));
    assert_eq!(posts, 8, "only the other eight were sent");
    let summary = job.summary();
    assert!(!summary.done);
    assert_eq!(summary.unconfirmed, vec![2, 5]);

    // The next run decides: request 2 is sent again, request 5 abandoned.
    let mut job = Job::new(
        store.load().unwrap(),
        JobOptions::new(config()),
        Instant::now(),
    );
    let (posts, _) = drive(&mut job, &mut store, &lease, (1, Order::Alternate), |seq| {
        Some(if seq == 2 {
            Decision::Resend
        } else {
            Decision::Abandon
        })
    });
    assert_eq!(posts, 1);
    let summary = job.summary();
    assert!(summary.done, "{summary:?}");
    assert_eq!(summary.count("no_change"), 45);
    let states: Vec<RequestState> = store
        .load()
        .unwrap()
        .requests
        .iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == RequestState::Abandoned)
            .count(),
        1
    );
}

/// Invariant: a webhook event is acknowledged ([`Output::Recorded`]) only once the `Persist`
/// that records it was applied; a run that stops between the two leaves the event recorded,
/// and the next run acts on it (fetches the batch's results) with no redelivery.
#[test]
fn an_event_is_acknowledged_only_once_recorded_and_a_restart_acts_on_it() {
    use cardsync_job::{Change, Changes, RequestUpdate, Wait};
    let (mut store, lease) = planned();
    // Request 1 was sent as batch b1.
    for (from, to) in [
        (RequestState::Planned, RequestState::Sending),
        (RequestState::Sending, RequestState::Sent),
    ] {
        let update = RequestUpdate::new(1, from, to).with_batch_id("b1".to_owned());
        store
            .apply(&lease, &Changes::new(vec![Change::Request(update)]))
            .unwrap();
    }
    let options = || {
        JobOptions::new(config())
            .with_wait(Wait::Webhook)
            .with_poll_max(Duration::from_secs(3600))
    };
    let event =
        cardsync_proto::decode_webhook(br#"{"trigger_id":20,"batch_id":"b1","event_id":"e1"}"#)
            .unwrap();
    let now = Instant::now();
    let mut job = Job::new(store.load().unwrap(), options(), now);
    // Whatever the job starts with (loading cards to send), then the event.
    let mut before: Vec<Output> = std::iter::from_fn(|| job.poll_output()).collect();
    job.handle_event(event.clone(), now);
    before.extend(std::iter::from_fn(|| job.poll_output()));
    assert!(
        !before.iter().any(|o| matches!(o, Output::Recorded(_))),
        "acknowledged before its record was stored"
    );
    let record = before
        .into_iter()
        .find_map(|o| match o {
            Output::Persist(c)
                if c.items()
                    .iter()
                    .any(|i| matches!(i, Change::Event(e) if e.event_id == "e1")) =>
            {
                Some(c)
            }
            _ => None,
        })
        .expect("the event's record");
    store.apply(&lease, &record).unwrap();
    job.handle_persisted(record.id(), now);
    let after: Vec<Output> = std::iter::from_fn(|| job.poll_output()).collect();
    assert!(
        after
            .iter()
            .any(|o| matches!(o, Output::Recorded(k) if k == "event:e1")),
        "{after:?}"
    );
    // The run stops here. The next one fetches the results the event announced.
    drop(job);
    let mut job = Job::new(store.load().unwrap(), options(), now);
    let mut fetched = false;
    for _ in 0..20 {
        let Some(output) = job.poll_output() else {
            break;
        };
        match output {
            Output::Persist(c) => {
                store.apply(&lease, &c).unwrap();
                job.handle_persisted(c.id(), now);
            }
            Output::Send(call) if call.request.uri().path() == "/v2/batch/results" => {
                assert!(
                    call.request
                        .uri()
                        .query()
                        .unwrap_or("")
                        .contains("event_id=e1")
                );
                fetched = true;
                break;
            }
            _ => {}
        }
    }
    assert!(fetched, "the recorded event was not acted on");
    // A redelivery is acknowledged at once and not recorded again.
    job.handle_event(event, now);
    let again: Vec<Output> = std::iter::from_fn(|| job.poll_output()).collect();
    assert!(
        again
            .iter()
            .any(|o| matches!(o, Output::Recorded(k) if k == "event:e1"))
    );
    assert!(!again.iter().any(|o| matches!(o, Output::Persist(_))));
}

/// A batch's event can come before the answer to its POST is recorded (a fast batch): it is
/// kept until the batches being created are, then acted on (the results fetched), not ignored.
#[test]
fn an_event_that_comes_before_its_batch_is_recorded_is_acted_on() {
    use cardsync_job::Wait;
    use cardsync_proto::server::{Spelling, batch_created, respond};
    use cardsync_proto::{BatchCreated, BatchState};
    let (mut store, lease) = planned();
    let options = JobOptions::new(config())
        .with_wait(Wait::Webhook)
        .with_poll_max(Duration::from_secs(3600));
    let now = Instant::now();
    let mut job = Job::new(store.load().unwrap(), options, now);
    let event =
        cardsync_proto::decode_webhook(br#"{"trigger_id":20,"batch_id":"b-fast","event_id":"e9"}"#)
            .unwrap();
    let mut post = None;
    let mut fetched = None;
    let mut event_given = false;
    for _ in 0..200 {
        let Some(output) = job.poll_output() else {
            if let Some(call) = post.take() {
                // The event first, then the POST's answer.
                if !event_given {
                    job.handle_event(event.clone(), now);
                    event_given = true;
                    post = Some(call);
                    continue;
                }
                let created = respond(
                    http::StatusCode::OK,
                    batch_created(
                        &BatchCreated::new("b-fast", BatchState::Pending),
                        Spelling::Universal,
                    ),
                );
                job.handle_response(call, Ok(created), now);
                continue;
            }
            break;
        };
        match output {
            Output::Persist(c) => {
                store.apply(&lease, &c).unwrap();
                job.handle_persisted(c.id(), now);
            }
            Output::LoadCards(seq) => {
                let cards = store.cards(seq).unwrap();
                job.handle_cards(seq, cards, now);
            }
            Output::Send(call) if call.creates && post.is_none() && !event_given => {
                post = Some(call.id);
            }
            Output::Send(call) if call.request.uri().path() == "/v2/batch/results" => {
                fetched = Some(call.request.uri().query().unwrap_or("").to_owned());
                break;
            }
            _ => {}
        }
    }
    let query = fetched.expect("the results announced by the early event were fetched");
    assert!(
        query.contains("batch_id=b-fast") && query.contains("event_id=e9"),
        "{query}"
    );
    let snapshot = store.load().unwrap();
    assert!(
        snapshot
            .events
            .iter()
            .any(|e| e.event_id == "e9" && e.state == cardsync_job::EventState::Handled),
        "{:?}",
        snapshot.events
    );
}
