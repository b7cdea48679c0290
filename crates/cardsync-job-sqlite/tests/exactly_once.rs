//! The exactly-once harness of `cardsync-job` (its `tests/harness`) on the SQLite journal: the
//! job crashed at every change and resumed, each run opening the journal file anew as a new
//! process would, with server faults and several POSTs at once; every card reaches CardSync
//! once and every result the sink once.

#[path = "../../cardsync-job/tests/harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use cardsync_job_sqlite::SqliteStore;
use harness::Journals;
use proptest::prelude::*;

/// A journal file of its own, removed on drop.
struct Sqlite(PathBuf);

impl Journals for Sqlite {
    type Store = SqliteStore;
    fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.0).expect("the journal opens")
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
}

fn sqlite() -> Sqlite {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("cardsync-exactly-once-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Sqlite(dir.join(format!("{}.journal", N.fetch_add(1, Ordering::SeqCst))))
}

#[test]
fn a_crash_at_every_change_loses_nothing_and_repeats_nothing() {
    harness::crash_at_every_change(sqlite);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// Random crash points and random server trouble.
    #[test]
    fn random_crashes_and_faults(
        fault_seed in any::<u64>(),
        permille in 0u64..250,
        crash_at in 1u64..60,
        after in any::<bool>(),
        webhook in any::<bool>(),
        concurrency in 1usize..=4,
    ) {
        harness::random_case(sqlite(), fault_seed, permille, crash_at, after, webhook, concurrency);
    }
}
