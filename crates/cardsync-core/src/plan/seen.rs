//! Where the duplicate check keeps its fingerprints: the `SeenStore` trait and the default,
//! in-memory store.

use super::*;

/// Which kind of value a fingerprint given to a [`SeenStore`] stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SeenKind {
    /// A merchant id.
    Id,
    /// A card number (with its SE number, for American Express).
    Card,
}

/// Where a [`Planner`] remembers the ids and cards it has seen, for the duplicate check.
///
/// The planner hands over keyed 64-bit fingerprints, never the values. Two different values
/// share a fingerprint with probability about n² / 2⁶⁵ over n rows (under 3 in 10⁸ for a
/// million rows); such a row would be reported as a duplicate, never dropped silently.
///
/// The default store is a table in memory (about 34 MB for a million rows); a program that
/// must keep memory flat can keep fingerprints on disk instead, with
/// [`Planner::with_seen_store`].
///
/// ```
/// use std::collections::HashMap;
/// use cardsync_core::{Planner, PlanOptions, Record, RowVerdict, SeenKind, SeenStore};
///
/// #[derive(Default)]
/// struct Store(HashMap<(SeenKind, u64), u64>);
///
/// impl SeenStore for Store {
///     fn claim(&mut self, kind: SeenKind, fingerprint: u64, row: u64) -> Option<u64> {
///         match self.0.get(&(kind, fingerprint)) {
///             Some(&first) => Some(first),
///             None => {
///                 self.0.insert((kind, fingerprint), row);
///                 None
///             }
///         }
///     }
/// }
///
/// let mut planner = Planner::with_seen_store(PlanOptions::default(), Box::new(Store::default()));
/// planner.handle_record(Record::new("a", "4457010000000009", "01/50"));
/// let RowVerdict::Rejected(r) = planner.handle_record(Record::new("a", "5112010000000003", "01/50"))
/// else { panic!() };
/// assert_eq!(r.reasons[0].code(), "duplicate_id");
/// ```
pub trait SeenStore: Send {
    /// Records that `row` holds the value with this fingerprint, unless an earlier row did:
    /// then returns that earlier row and records nothing.
    fn claim(&mut self, kind: SeenKind, fingerprint: u64, row: u64) -> Option<u64>;

    /// A hint that `fingerprint` will be claimed soon: [`Planner::handle_records`] gives it
    /// for every fingerprint of a block before claiming them, so that a store in memory can
    /// start fetching them all at once. The default does nothing.
    fn warm(&mut self, kind: SeenKind, fingerprint: u64) {
        let _ = (kind, fingerprint);
    }

    /// A hint that about `rows` more rows will follow (see [`Planner::reserve`]), so that a
    /// store in memory can make room at once rather than grow step by step. The default does
    /// nothing.
    fn reserve(&mut self, rows: usize) {
        let _ = rows;
    }
}

/// The default store: two tables in memory.
#[derive(Default)]
pub(super) struct MemoryStore {
    ids: FingerprintTable,
    cards: FingerprintTable,
}

impl SeenStore for MemoryStore {
    fn claim(&mut self, kind: SeenKind, fingerprint: u64, row: u64) -> Option<u64> {
        let map = match kind {
            SeenKind::Id => &mut self.ids,
            SeenKind::Card => &mut self.cards,
        };
        map.claim(fingerprint, row)
    }

    fn reserve(&mut self, rows: usize) {
        self.ids.reserve(rows);
        self.cards.reserve(rows);
    }

    fn warm(&mut self, kind: SeenKind, fingerprint: u64) {
        match kind {
            SeenKind::Id => self.ids.warm(fingerprint),
            SeenKind::Card => self.cards.warm(fingerprint),
        }
    }
}
