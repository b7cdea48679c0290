//! The PostgreSQL journal against a real PostgreSQL: the one `CARDSYNC_TEST_POSTGRES` names
//! (`.ci/postgres.sh run …` starts a throwaway one). Without it these tests say so and pass,
//! except under `CI=true`, where a missing database is a failure. Each test works in a schema
//! of its own, dropped at the end.

use std::time::Duration;

use cardsync_core::{Expiry, Pan, SeNumber, UpdateStatus};
use cardsync_job::{MemorySink, RequestKind, RequestRecord, ResultRow, StoredCard};
use cardsync_job_postgres::{
    Claim, Decision, JobSpec, JournalKey, PgError, PgJournal, SCHEMA_VERSION, Scope, Work,
};
use cardsync_proto::ReturnedCard;

mod common;
use common::{TestDb, database};

const MERCHANT_KEY: &str = "sandbox_merchant_key";

fn card(row: u64, number: &str) -> StoredCard {
    StoredCard::new(
        row,
        format!("cus-{row}"),
        Pan::parse(number).unwrap(),
        Expiry::parse("12/29").unwrap(),
        None,
    )
}

/// Valid card numbers: a Visa prefix, a counter, a check digit.
fn numbers(n: usize, from: usize) -> Vec<String> {
    common::numbers_with("411111", n, from)
}

/// A planned job of `requests` batch requests of `per` cards each.
async fn planned(
    journal: &PgJournal,
    name: &str,
    requests: u64,
    per: usize,
) -> (Vec<String>, cardsync_job_postgres::JobId) {
    let spec =
        JobSpec::new(name, "CARDSYNC_API_KEY", "http://127.0.0.1:9/").with_max_in_flight(100);
    let job = journal.create_job(&spec, MERCHANT_KEY).await.unwrap();
    let mut all = Vec::new();
    for seq in 1..=requests {
        let nums = numbers(per, (seq as usize) * 1000);
        let cards: Vec<StoredCard> = nums
            .iter()
            .enumerate()
            .map(|(i, n)| card(seq * 1000 + i as u64, n))
            .collect();
        let record = RequestRecord::new(seq, RequestKind::Batch, None, cards.len() as u64);
        assert!(
            journal
                .add_request(job, &record, &cards)
                .await
                .unwrap()
                .is_empty()
        );
        all.extend(nums);
    }
    journal
        .finish_plan(job, requests * per as u64, 0, 0)
        .await
        .unwrap();
    (all, job)
}

/// What `worker` claims of any job, with the usual lease.
async fn claim_all(journal: &PgJournal, worker: &str) -> Option<Claim> {
    journal.claim(worker, &Scope::All, LEASE).await.unwrap()
}

fn hex_ascii(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn migrations_apply_once_even_when_many_connect_at_once() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let mut connecting = Vec::new();
    for _ in 0..8 {
        let url = db.url.clone();
        connecting.push(tokio::spawn(async move {
            PgJournal::connect_with(&url, JournalKey::from_hex(&"01".repeat(32)).unwrap(), 1).await
        }));
    }
    for c in connecting {
        c.await.unwrap().expect("every one connects");
    }
    let versions = db
        .admin
        .query(
            &format!("SELECT version FROM {}.cardsync_schema", db.schema),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(versions.len(), SCHEMA_VERSION as usize);
    // A newer schema is refused rather than misread.
    db.admin
        .batch_execute(&format!(
            "INSERT INTO {}.cardsync_schema (version) VALUES (999)",
            db.schema
        ))
        .await
        .unwrap();
    let err = PgJournal::connect_with(&db.url, JournalKey::from_hex(&"01".repeat(32)).unwrap(), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PgError::NewerSchema { found: 999, .. }),
        "{err}"
    );
    db.drop().await;
}

#[tokio::test]
async fn no_card_number_in_the_tables_and_the_cards_open_with_the_key() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    let (nums, _) = planned(&journal, "nightly", 3, 50).await;
    // A duplicate card in a later request is left out by its keyed fingerprint.
    let spec = JobSpec::new("second", "CARDSYNC_API_KEY", "http://127.0.0.1:9/");
    let job2 = journal.create_job(&spec, MERCHANT_KEY).await.unwrap();
    let first = RequestRecord::new(1, RequestKind::Batch, None, 2);
    let dup = [card(1, &nums[0]), card(2, &nums[1])];
    assert!(
        journal
            .add_request(job2, &first, &dup)
            .await
            .unwrap()
            .is_empty()
    );
    let again = [card(3, &nums[0]), card(4, &nums[2])];
    let second = RequestRecord::new(2, RequestKind::Batch, None, 2);
    assert_eq!(
        journal.add_request(job2, &second, &again).await.unwrap(),
        [3]
    );

    let dump = db.dump().await;
    for n in &nums {
        assert!(!dump.contains(n.as_str()), "a card number in the tables");
        assert!(
            !dump.contains(&hex_ascii(n)),
            "a card number's bytes in the tables"
        );
        assert!(
            !dump.contains(&n[n.len() - 10..]),
            "most of a card number in the tables"
        );
    }
    assert!(
        !dump.contains(MERCHANT_KEY),
        "the merchant key in the tables"
    );

    // A worker gets the cards back, opened.
    let claim = journal
        .claim("w1", &Scope::Jobs(vec!["nightly".into()]), LEASE)
        .await
        .unwrap()
        .unwrap();
    let Work::Send { cards } = &claim.work else {
        panic!("{claim:?}")
    };
    assert_eq!(cards.len(), 50);
    assert_eq!(cards[0].pan.expose().as_str(), nums[0]);
    assert!(
        !format!("{claim:?}").contains(&nums[0]),
        "Debug shows no card"
    );
    // Another key opens nothing: the journal says so as soon as it is opened with it.
    let err = db.journal_with("02", None).await.unwrap_err();
    assert!(matches!(err, PgError::Key(_)), "{err}");
    db.drop().await;
}

#[tokio::test]
async fn workers_claim_distinct_requests_and_a_late_worker_writes_nothing() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    planned(&journal, "nightly", 6, 3).await;

    // Six workers at once: six distinct requests, each moved to sending by its claim.
    let mut claiming = Vec::new();
    for w in 0..6 {
        let journal = journal.clone();
        claiming.push(tokio::spawn(async move {
            journal
                .claim(&format!("w{w}"), &Scope::All, Duration::from_millis(300))
                .await
        }));
    }
    let mut claims = Vec::new();
    for c in claiming {
        claims.push(c.await.unwrap().unwrap().expect("a request for each"));
    }
    let mut seqs: Vec<u64> = claims.iter().map(|c| c.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert!(claim_all(&journal, "w9").await.is_none());
    let status = journal.status("nightly").await.unwrap();
    assert_eq!(status.requests["sending"], 6);
    assert_eq!(status.in_flight, 6);

    // Worker 0 answers in time; the others pause past their leases.
    journal
        .sent(&claims[0], "batch-a", Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // A batch whose POST may have left is not claimed again: it waits for a decision.
    let next = claim_all(&journal, "w9").await.expect("the sent batch");
    assert_eq!(next.seq, claims[0].seq);
    assert!(matches!(next.work, Work::Check { ref batch_id, .. } if batch_id == "batch-a"));
    assert!(claim_all(&journal, "w9").await.is_none());
    let status = journal.status("nightly").await.unwrap();
    assert_eq!(status.unconfirmed.len(), 5);

    // A worker whose lease ran out, but whom nobody replaced, still records its batch.
    journal
        .sent(&claims[1], "batch-late-1", Duration::ZERO)
        .await
        .unwrap();
    // Decisions bump the fencing token: a late answer after one is refused, and kept.
    let adopted = Decision::Adopt("batch-2".into());
    let seq = Some(claims[2].seq);
    assert_eq!(journal.decide("nightly", seq, &adopted).await.unwrap(), 1);
    assert!(
        journal.decide("nightly", seq, &adopted).await.is_err(),
        "decided once"
    );
    let err = journal
        .sent(&claims[2], "batch-2-other", Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Fenced { .. }), "{err}");
    assert!(
        db.dump().await.contains("batch-2-other"),
        "the late answer is kept"
    );
    // "Send them again", then a late worker says its batch was created after all: adopted,
    // not sent twice (as long as no worker took it again).
    assert_eq!(
        journal
            .decide("nightly", None, &Decision::Resend)
            .await
            .unwrap(),
        3
    );
    journal
        .sent(&claims[3], "batch-3-late", Duration::ZERO)
        .await
        .unwrap();
    // Due status checks come first; the planned requests are among the next claims.
    let mut retaken = None;
    for _ in 0..6 {
        let c = claim_all(&journal, "w9").await.unwrap();
        if matches!(c.work, Work::Send { .. }) {
            retaken = Some(c);
            break;
        }
    }
    let retaken = retaken.expect("a request sent again");
    let late = claims.iter().find(|c| c.seq == retaken.seq).unwrap();
    let err = journal
        .sent(late, "batch-too-late", Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Fenced { .. }), "taken again: {err}");
    let status = journal.status("nightly").await.unwrap();
    assert_eq!(status.requests["sent"], 4, "{status:?}");
    assert_eq!(status.requests["planned"], 1, "{status:?}");
    assert_eq!(status.requests["sending"], 1, "{status:?}");
    assert!(status.unconfirmed.is_empty(), "the one sending is claimed");
    db.drop().await;
}

fn result_rows(claim: &Claim, n: usize) -> cardsync_job::rules::Rows {
    let rows = (0..n)
        .map(|i| {
            let mut row = ResultRow::new(
                format!("cus-{}-{i}", claim.seq),
                Some(UpdateStatus::UpdatedCard),
                ReturnedCard::new(numbers(1, 900_000 + claim.seq as usize * 100 + i)[0].clone()),
            );
            row.exp = Some("12/32".into());
            row.batch_id = Some(format!("batch-{}", claim.seq));
            row
        })
        .collect();
    cardsync_job::rules::Rows::counted(rows)
}

#[tokio::test]
async fn results_are_written_once_under_the_claim_and_exported_then_erased() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    planned(&journal, "nightly", 2, 4).await;
    for _ in 0..2 {
        let c = claim_all(&journal, "w1").await.unwrap();
        journal
            .sent(&c, &format!("batch-{}", c.seq), Duration::from_secs(3600))
            .await
            .unwrap();
    }
    // Nothing due yet; a webhook (received twice, by two receivers) makes batch 1 ready.
    assert!(claim_all(&journal, "w1").await.is_none());
    let (a, b) = tokio::join!(
        journal.record_event("ev-1", Some(20), Some("batch-1"), None, "receiver-a"),
        journal.record_event("ev-1", Some(20), Some("batch-1"), None, "receiver-b"),
    );
    assert_eq!(
        u8::from(a.unwrap()) + u8::from(b.unwrap()),
        1,
        "recorded once"
    );
    assert!(
        !journal
            .record_event("ev-1", Some(20), Some("batch-1"), None, "receiver-a")
            .await
            .unwrap()
    );
    let check = journal
        .claim("w1", &Scope::All, Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(check.work, Work::Check { ready: true, ref event_id, .. } if event_id.as_deref() == Some("ev-1"))
    );

    // The worker pauses past its lease; another takes the request and finishes it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = claim_all(&journal, "w2").await.unwrap();
    assert_eq!(again.seq, check.seq);
    journal
        .completed(&again, &result_rows(&again, 3))
        .await
        .unwrap();
    // The first worker wakes up with the same results. The cards it reads for the old last
    // four digits of changed cards were erased with the request done: its claim was taken
    // over (fenced), the journal is not damaged.
    let err = journal.cards(&check).await.unwrap_err();
    assert!(matches!(err, PgError::Fenced { .. }), "{err}");
    // Its results are refused, nothing written twice.
    let err = journal
        .completed(&check, &result_rows(&check, 3))
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Fenced { .. }));

    // Not finished: batch 2 is still out.
    let mut sink = MemorySink::new();
    let err = journal.export("nightly", &mut sink).await.unwrap_err();
    assert!(err.to_string().contains("not finished"), "{err}");
    db.admin
        .batch_execute(&format!(
            "UPDATE {}.cardsync_requests SET next_check = now()",
            db.schema
        ))
        .await
        .unwrap();
    let last = claim_all(&journal, "w1").await.unwrap();
    journal
        .completed(&last, &result_rows(&last, 2))
        .await
        .unwrap();
    let status = journal.status("nightly").await.unwrap();
    assert_eq!(status.results["updated_card"], 5);
    assert!(status.finished());
    let dump = db.dump().await;
    let returned: Vec<String> = [&check, &last]
        .iter()
        .flat_map(|c| result_rows(c, 3).rows)
        .map(|r| r.card.expose().to_owned())
        .collect();
    for n in &returned {
        assert!(
            !dump.contains(n.as_str()) && !dump.contains(&hex_ascii(n)),
            "a result card in the tables"
        );
    }

    assert_eq!(journal.export("nightly", &mut sink).await.unwrap(), 5);
    let rows = sink.rows();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0].id, "cus-1-0");
    assert_eq!(rows[4].id, "cus-2-1");
    assert_eq!(
        rows[0].card.expose(),
        result_rows(&check, 1).rows[0].card.expose()
    );
    assert_eq!(sink.finished(), 1);
    // Exported: cards and results erased, and no second export.
    let count = |table: &'static str| {
        let q = format!("SELECT count(*) FROM {}.{table}", db.schema);
        let admin = &db.admin;
        async move { admin.query_one(&q, &[]).await.unwrap().get::<_, i64>(0) }
    };
    for table in [
        "cardsync_results",
        "cardsync_result_counts",
        "cardsync_card_sets",
        "cardsync_fingerprints",
    ] {
        assert_eq!(count(table).await, 0, "{table}");
    }
    assert!(
        journal
            .export("nightly", &mut MemorySink::new())
            .await
            .is_err()
    );
    assert_eq!(
        journal.status("nightly").await.unwrap().state,
        cardsync_job_postgres::JobState::Exported
    );
    db.drop().await;
}

#[tokio::test]
async fn one_merchant_gets_at_most_its_limit_and_a_retry_after_holds_every_worker_off() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    let spec =
        JobSpec::new("limited", "CARDSYNC_API_KEY", "http://127.0.0.1:9/").with_max_in_flight(2);
    let job = journal.create_job(&spec, MERCHANT_KEY).await.unwrap();
    for seq in 1..=5u64 {
        let cards = [card(seq, &numbers(1, seq as usize)[0])];
        journal
            .add_request(
                job,
                &RequestRecord::new(seq, RequestKind::Batch, None, 1),
                &cards,
            )
            .await
            .unwrap();
    }
    journal.finish_plan(job, 5, 0, 0).await.unwrap();
    // Another merchant's job is not held up by the first one's limit.
    let other = JobSpec::new("other", "OTHER_KEY", "http://127.0.0.1:9/");
    let job2 = journal
        .create_job(&other, "another_merchant_key")
        .await
        .unwrap();
    journal
        .add_request(
            job2,
            &RequestRecord::new(1, RequestKind::Batch, None, 1),
            &[card(1, &numbers(1, 77)[0])],
        )
        .await
        .unwrap();
    journal.finish_plan(job2, 1, 0, 0).await.unwrap();

    let mut claiming = Vec::new();
    for w in 0..6 {
        let journal = journal.clone();
        claiming.push(tokio::spawn(async move {
            journal
                .claim(
                    &format!("w{w}"),
                    &Scope::Jobs(vec!["limited".into()]),
                    LEASE,
                )
                .await
        }));
    }
    let mut got = Vec::new();
    for c in claiming {
        if let Some(claim) = c.await.unwrap().unwrap() {
            got.push(claim);
        }
    }
    assert_eq!(got.len(), 2, "the merchant's limit");
    let theirs = claim_all(&journal, "w9").await.unwrap();
    assert_eq!(theirs.job_name, "other");

    // A Retry-After on one request holds every worker off the merchant.
    journal
        .sent(&got[0], "batch-x", Duration::ZERO)
        .await
        .unwrap();
    let check = journal
        .claim("w1", &Scope::Jobs(vec!["limited".into()]), LEASE)
        .await
        .unwrap()
        .unwrap();
    journal
        .pending(&check, Duration::ZERO, Some(Duration::from_millis(600)))
        .await
        .unwrap();
    assert!(
        journal
            .claim("w1", &Scope::Jobs(vec!["limited".into()]), LEASE)
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        journal
            .claim("w1", &Scope::Jobs(vec!["limited".into()]), LEASE)
            .await
            .unwrap()
            .is_some()
    );
    db.drop().await;
}

#[tokio::test]
async fn subscriptions_are_claimed_again_and_cards_are_erased_when_final() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    let spec = JobSpec::new("amex", "CARDSYNC_API_KEY", "http://127.0.0.1:9/");
    let job = journal.create_job(&spec, MERCHANT_KEY).await.unwrap();
    let se = SeNumber::parse("1234567890").unwrap();
    let amex = StoredCard::new(
        1,
        "a1",
        Pan::parse("342132335566772").unwrap(),
        Expiry::parse("01/50").unwrap(),
        Some(se),
    );
    let record = RequestRecord::new(1, RequestKind::Subscription, Some("1234567890".into()), 1);
    journal.add_request(job, &record, &[amex]).await.unwrap();
    journal.finish_plan(job, 1, 0, 0).await.unwrap();
    let first = journal
        .claim("w1", &Scope::All, Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.kind, RequestKind::Subscription);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Idempotent: claimed again once the lease ran out, with no decision.
    let second = claim_all(&journal, "w2").await.unwrap();
    assert_eq!((second.seq, second.epoch), (first.seq, first.epoch + 1));
    assert!(journal.subscribed(&first).await.is_err());
    journal.subscribed(&second).await.unwrap();
    let status = journal.status("amex").await.unwrap();
    assert_eq!(status.requests["done"], 1);
    let cards: i64 = db
        .admin
        .query_one(
            &format!("SELECT count(*) FROM {}.cardsync_card_sets", db.schema),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cards, 0, "a final request's cards are erased");
    db.drop().await;
}

#[tokio::test]
async fn rotation_reseals_every_card_under_the_new_key() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let old = db.journal("01").await;
    let (nums, _) = planned(&old, "nightly", 2, 10).await;
    let fingerprint = old.merchant_fingerprint(MERCHANT_KEY);
    let rotating = db.journal_with("02", Some("01")).await.unwrap();
    let old_key = JournalKey::from_hex(&"01".repeat(32)).unwrap();
    assert_eq!(
        rotating.rotate_from(&old_key).await.unwrap(),
        2,
        "two card sets"
    );
    assert_eq!(
        rotating.rotate_from(&old_key).await.unwrap(),
        0,
        "nothing left"
    );
    // The new key alone opens everything, and the merchant is still the same merchant.
    let new = db.journal("02").await;
    assert_eq!(new.merchant_fingerprint(MERCHANT_KEY), fingerprint);
    let claim = claim_all(&new, "w1").await.unwrap();
    let Work::Send { cards } = &claim.work else {
        panic!()
    };
    assert_eq!(cards[0].pan.expose().as_str(), nums[0]);
    // A process with the old key alone is told at once.
    assert!(matches!(
        db.journal_with("01", None).await.unwrap_err(),
        PgError::Key(_)
    ));
    // One that was running with it is refused at its next claim.
    assert!(matches!(
        old.claim("w2", &Scope::All, LEASE).await.unwrap_err(),
        PgError::KeyRotated { .. } | PgError::Key(_)
    ));
    db.drop().await;
}

#[tokio::test]
async fn a_create_that_died_while_planning_is_started_again_and_names_are_unique() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("01").await;
    let spec = JobSpec::new("nightly", "CARDSYNC_API_KEY", "http://127.0.0.1:9/");
    let dead = journal.create_job(&spec, MERCHANT_KEY).await.unwrap();
    journal
        .add_request(
            dead,
            &RequestRecord::new(1, RequestKind::Batch, None, 1),
            &[card(1, &numbers(1, 1)[0])],
        )
        .await
        .unwrap();
    // Planning jobs are never worked on.
    assert!(claim_all(&journal, "w").await.is_none());
    // A create still at work is not disturbed; one silent for a minute is started again.
    assert!(matches!(
        journal.create_job(&spec, MERCHANT_KEY).await.unwrap_err(),
        PgError::JobExists(_)
    ));
    db.admin
        .batch_execute(&format!(
            "UPDATE {}.cardsync_jobs SET touched_at = now() - interval '2 minutes'",
            db.schema
        ))
        .await
        .unwrap();
    let job = journal.create_job(&spec, MERCHANT_KEY).await.unwrap();
    assert_ne!(job, dead);
    assert!(
        journal
            .add_request(
                dead,
                &RequestRecord::new(2, RequestKind::Batch, None, 1),
                &[]
            )
            .await
            .is_err()
    );
    journal.finish_plan(job, 0, 0, 0).await.unwrap();
    assert!(matches!(
        journal.create_job(&spec, MERCHANT_KEY).await.unwrap_err(),
        PgError::JobExists(_)
    ));
    assert!(matches!(
        journal.status("nope").await.unwrap_err(),
        PgError::NoSuchJob(_)
    ));
    db.drop().await;
}

#[tokio::test]
async fn reads_after_the_database_dropped_the_pools_connections_get_fresh_ones() {
    let Some(base) = database() else { return };
    let db = TestDb::new(&base).await;
    let journal = db.journal("11").await;
    planned(&journal, "nightly", 2, 3).await;
    let scope = Scope::default();
    for round in 0..3 {
        // Several connections in the pool, all idle.
        let (a, b, c, d) = tokio::join!(
            journal.status("nightly"),
            journal.status("nightly"),
            journal.outstanding(&scope),
            journal.open_jobs(&scope),
        );
        a.unwrap();
        b.unwrap();
        c.unwrap();
        d.unwrap();
        // The database drops every one of them (a restart, a failover, an administrator).
        assert!(
            db.cut_connections().await > 0,
            "round {round}: no connection was cut"
        );
        // At once, and again a moment later: each read gets a connection that works.
        let status = journal
            .status("nightly")
            .await
            .unwrap_or_else(|e| panic!("round {round}: the first read after the cut failed: {e}"));
        assert_eq!(status.rows, 6);
        journal.outstanding(&scope).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        journal.open_jobs(&scope).await.unwrap();
        journal.status("nightly").await.unwrap();
    }
    db.drop().await;
}
