//! The SQLite journal: atomic changes, compare-and-set, leases and fencing, duplicates as
//! deletes, and cards erased for good.

use std::path::PathBuf;

use cardsync_core::{Expiry, Pan, SeNumber};
use cardsync_job::{
    Acquired, Change, Changes, Checkpoint, EventRecord, EventState, Holder, Lease, RequestKind,
    RequestRecord, RequestState, RequestUpdate, Store, StoreError, StoredCard,
};
use cardsync_job_sqlite::SqliteStore;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("cardsync-sqlite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn journal(&self) -> PathBuf {
        self.0.join("job.journal")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn take(store: &mut SqliteStore, pid: u32, now: u64) -> Lease {
    match store
        .acquire(&Holder::new("host", pid, now), now, 1_000, &|_| false)
        .unwrap()
    {
        Acquired::Taken(l) => l,
        Acquired::Held(l) => panic!("held: {l:?}"),
    }
}

fn card(row: u64, id: &str, pan: &str) -> StoredCard {
    StoredCard::new(
        row,
        id,
        Pan::parse(pan).unwrap(),
        Expiry::parse("01/50").unwrap(),
        None,
    )
}

fn plan(store: &mut SqliteStore, lease: &Lease) {
    let batch = RequestRecord::new(1, RequestKind::Batch, None, 3);
    let sub = RequestRecord::new(2, RequestKind::Subscription, Some("1234567890".into()), 1);
    let se = SeNumber::parse("1234567890").unwrap();
    let amex = StoredCard::new(
        4,
        "a",
        Pan::parse("342132335566772").unwrap(),
        Expiry::parse("12/28").unwrap(),
        Some(se),
    );
    store
        .apply(
            lease,
            &Changes::new(vec![
                Change::AddRequest {
                    request: batch,
                    cards: vec![
                        card(1, "x", "4457010000000009"),
                        card(2, "y", "5112010000000003"),
                        card(3, "z", "4100200300011001"),
                    ],
                },
                Change::AddRequest {
                    request: sub,
                    cards: vec![amex],
                },
                Change::Meta {
                    key: "planned".into(),
                    value: "1".into(),
                },
            ]),
        )
        .unwrap();
}

#[test]
fn cards_are_rows_and_duplicates_are_deletes() {
    let dir = Scratch::new("rows");
    let mut store = SqliteStore::open(&dir.journal()).unwrap();
    let lease = take(&mut store, 1, 0);
    plan(&mut store, &lease);
    let cards = store.cards(1).unwrap();
    assert_eq!(cards.len(), 3);
    assert_eq!(cards[1].id, "y");
    assert_eq!(cards[1].last4().as_str(), "0003");
    assert_eq!(
        store.cards(2).unwrap()[0]
            .se_number
            .as_ref()
            .unwrap()
            .as_str(),
        "1234567890"
    );

    store
        .apply(
            &lease,
            &Changes::new(vec![Change::RemoveRows { rows: vec![2, 4] }]),
        )
        .unwrap();
    let snapshot = store.load().unwrap();
    assert!(snapshot.is_planned());
    assert_eq!(
        snapshot.requests.len(),
        1,
        "the emptied subscription is gone"
    );
    assert_eq!(snapshot.requests[0].cards, 2);
    let ids: Vec<String> = store.cards(1).unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["x", "z"]);
}

#[test]
fn a_failed_compare_and_set_writes_nothing() {
    let dir = Scratch::new("cas");
    let mut store = SqliteStore::open(&dir.journal()).unwrap();
    let lease = take(&mut store, 1, 0);
    plan(&mut store, &lease);
    store
        .compare_and_set(&lease, 1, RequestState::Planned, RequestState::Sending)
        .unwrap();
    let err = store
        .apply(
            &lease,
            &Changes::new(vec![
                Change::Tally {
                    status: "valid".into(),
                    delta: 5,
                },
                Change::Request(RequestUpdate::new(
                    1,
                    RequestState::Planned,
                    RequestState::Sending,
                )),
            ]),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::Conflict {
            seq: 1,
            expected: RequestState::Planned,
            found: Some(RequestState::Sending)
        }
    ));
    let snapshot = store.load().unwrap();
    assert!(
        snapshot.tally.is_empty(),
        "the tally of a refused set was kept"
    );
    assert_eq!(snapshot.requests[0].state, RequestState::Sending);

    // Events, checkpoints and batch ids round-trip.
    store
        .apply(
            &lease,
            &Changes::new(vec![
                Change::Request(
                    RequestUpdate::new(1, RequestState::Sending, RequestState::Sent)
                        .with_batch_id("b-1"),
                ),
                Change::Event(EventRecord::new(
                    "ev-1",
                    Some(20),
                    Some("b-1".into()),
                    EventState::Handled,
                )),
                Change::Checkpoint(Checkpoint::new(vec![120, 40])),
            ]),
        )
        .unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.requests[0].batch_id.as_deref(), Some("b-1"));
    assert_eq!(snapshot.events[0].state, EventState::Handled);
    assert_eq!(snapshot.checkpoint, Checkpoint::new(vec![120, 40]));
}

#[test]
fn a_lease_is_held_taken_over_and_fenced() {
    let dir = Scratch::new("lease");
    let mut first = SqliteStore::open(&dir.journal()).unwrap();
    let mut second = SqliteStore::open(&dir.journal()).unwrap();
    let lease = take(&mut first, 1, 0);

    // Held while it lasts.
    let b = Holder::new("host", 2, 500);
    match second.acquire(&b, 500, 1_000, &|_| false).unwrap() {
        Acquired::Held(l) => {
            assert_eq!(l.holder.pid, 1);
            assert_eq!(l.expires_ms, 1_000);
        }
        other => panic!("{other:?}"),
    }
    // Renewed, still held.
    let lease = first.renew(&lease, 900, 1_000).unwrap();
    assert!(matches!(
        second.acquire(&b, 1_500, 1_000, &|_| false).unwrap(),
        Acquired::Held(_)
    ));
    // Taken at once when the holder is provably gone.
    let Acquired::Taken(taken) = second.acquire(&b, 1_600, 1_000, &|h| h.pid == 1).unwrap() else {
        panic!("not taken");
    };
    assert_eq!(taken.token, lease.token + 1);
    // The first holder wakes up: nothing it writes is taken.
    let err = first
        .apply(
            &lease,
            &Changes::new(vec![Change::Meta {
                key: "k".into(),
                value: "v".into(),
            }]),
        )
        .unwrap_err();
    match err {
        StoreError::Fenced { holder: Some(h) } => assert_eq!(h.pid, 2),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        first.renew(&lease, 1_700, 1_000),
        Err(StoreError::Fenced { .. })
    ));
    assert!(first.load().unwrap().meta("k").is_none());
    // Released, the next one takes it without waiting.
    second.release(&taken).unwrap();
    let Acquired::Taken(third) = first
        .acquire(&Holder::new("host", 3, 1_700), 1_700, 1_000, &|_| false)
        .unwrap()
    else {
        panic!("not taken after release");
    };
    assert_eq!(third.token, taken.token + 1);
}

#[test]
fn erased_cards_leave_no_trace_in_the_file() {
    let dir = Scratch::new("erase");
    let mut store = SqliteStore::open(&dir.journal()).unwrap();
    let lease = take(&mut store, 1, 0);
    plan(&mut store, &lease);
    store
        .apply(
            &lease,
            &Changes::new(vec![Change::RemoveRows { rows: vec![3] }]),
        )
        .unwrap();
    store
        .apply(&lease, &Changes::new(vec![Change::EraseCards]))
        .unwrap();
    assert!(store.cards(1).unwrap().is_empty());
    drop(store);
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for pan in [
            "4457010000000009",
            "5112010000000003",
            "4100200300011001",
            "342132335566772",
        ] {
            assert!(
                !bytes.windows(pan.len()).any(|w| w == pan.as_bytes()),
                "a card number is still in the journal files"
            );
        }
    }
}

#[test]
fn another_format_is_refused_and_the_file_is_private() {
    let dir = Scratch::new("format");
    let path = dir.journal();
    drop(SqliteStore::open(&path).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    {
        let conn = rusqlite_free_update(&path);
        assert!(conn);
    }
    match SqliteStore::open(&path) {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("format 2"), "{message}"),
        other => panic!("{other:?}"),
    }
}

/// Rewrites the format marker as an older version would have left it (through the store's
/// own connection, so that the test needs no SQLite crate of its own).
fn rusqlite_free_update(path: &std::path::Path) -> bool {
    let mut store = SqliteStore::open(path).unwrap();
    let lease = take(&mut store, 9, 0);
    store
        .apply(
            &lease,
            &Changes::new(vec![Change::Meta {
                key: "format".into(),
                value: "2".into(),
            }]),
        )
        .is_ok()
}

/// A new journal opened by many processes at once (runs started together, a cron that
/// overlaps itself): every open succeeds. SQLite answers "busy" at once to all but one of the
/// processes that switch a new file to WAL mode; each tries again. (The processes are this test
/// run again, each opening the journal that `CARDSYNC_TEST_OPEN` names.)
#[test]
fn a_new_journal_opened_by_many_at_once_opens_for_all() {
    if let Ok(path) = std::env::var("CARDSYNC_TEST_OPEN") {
        // A child: wait for the start, then open.
        let start: u128 = std::env::var("CARDSYNC_TEST_START")
            .unwrap()
            .parse()
            .unwrap();
        while std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            < start
        {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        SqliteStore::open(std::path::Path::new(&path)).unwrap();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for round in 0..8 {
        let scratch = Scratch::new(&format!("many-open-{round}"));
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 300;
        let children: Vec<_> = (0..6)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "a_new_journal_opened_by_many_at_once_opens_for_all",
                        "--test-threads",
                        "1",
                    ])
                    .env("CARDSYNC_TEST_OPEN", scratch.journal())
                    .env("CARDSYNC_TEST_START", start.to_string())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A copy of a journal is a journal with the same content, in a new private file.
#[test]
fn an_archive_holds_what_the_journal_held() {
    let scratch = Scratch::new("archive");
    let mut store = SqliteStore::open(&scratch.journal()).unwrap();
    let lease = take(&mut store, 1, 0);
    let changes = Changes::new(vec![Change::Meta {
        key: "rows".into(),
        value: "7".into(),
    }]);
    store.apply(&lease, &changes).unwrap();
    let copy = scratch.0.join("job.journal.copy");
    store.archive(&copy).unwrap();
    let mut copied = SqliteStore::open(&copy).unwrap();
    assert_eq!(copied.load().unwrap().meta("rows"), Some("7"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(store.archive(&copy).is_err(), "never over a file");
}
