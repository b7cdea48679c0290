//! The job against the in-process emulator on the memory store, crashed at every change and
//! resumed, with server faults and several POSTs at once: every card reaches CardSync exactly
//! once and every result reaches the sink exactly once. The harness (`harness/mod.rs`) runs the
//! same way for the SQLite journal (`cardsync-job-sqlite`'s tests), and for the PostgreSQL
//! journal (`cardsync-job-postgres`'s tests) with the same world, faults, decisions by lookup
//! and checks: several workers at once, one killed at every crash point of its lanes.

mod harness;

use cardsync_job::MemoryStore;
use harness::Journals;
use proptest::prelude::*;

/// The memory store: one store, shared by the runs as a file is by processes.
struct Memory(MemoryStore);

impl Journals for Memory {
    type Store = MemoryStore;
    fn open(&self) -> MemoryStore {
        self.0.clone()
    }
}

fn memory() -> Memory {
    Memory(MemoryStore::new())
}

#[test]
fn a_crash_at_every_change_loses_nothing_and_repeats_nothing() {
    harness::crash_at_every_change(memory);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

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
        harness::random_case(memory(), fault_seed, permille, crash_at, after, webhook, concurrency);
    }
}
