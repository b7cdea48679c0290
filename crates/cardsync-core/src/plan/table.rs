//! The duplicate check's fingerprint table: five fingerprints and rows per cache line, at
//! most three quarters full.

/// Five fingerprints and their rows in one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket {
    fingerprints: [u64; 5],
    rows: [u32; 5],
}

/// A set of fingerprints with the row that first held each: open addressing over buckets of
/// one cache line each (five slots), probed bucket after bucket, so that a lookup nearly
/// always touches one line. Fingerprints are uniformly distributed keyed hashes: their high
/// bits pick the bucket. Fingerprint 0 marks an empty slot (a real 0 is stored as 1); slots
/// fill in order, so an empty slot ends a search. At most three quarters full: about 17 bytes
/// per entry.
#[derive(Default)]
pub(super) struct FingerprintTable {
    buckets: Vec<Bucket>,
    len: usize,
    /// Rows past `u32::MAX` (whose slot holds `u32::MAX`), which only files of more than
    /// four billion rows have.
    big_rows: std::collections::HashMap<u64, u64>,
}

impl FingerprintTable {
    const SLOTS: usize = 5;
    const MIN_BUCKETS: usize = 256;

    pub(super) fn capacity(&self) -> usize {
        self.buckets.len() * Self::SLOTS * 3 / 4
    }

    pub(super) fn home(fingerprint: u64, buckets: usize) -> usize {
        ((u128::from(fingerprint) * buckets as u128) >> 64) as usize
    }

    pub(super) fn claim(&mut self, fingerprint: u64, row: u64) -> Option<u64> {
        if self.len >= self.capacity() {
            self.grow((self.buckets.len() * 2).max(Self::MIN_BUCKETS));
        }
        let fingerprint = fingerprint.max(1);
        let mut b = Self::home(fingerprint, self.buckets.len());
        loop {
            let bucket = &mut self.buckets[b];
            // The first slot holding the fingerprint and the first empty one, found without a
            // branch per slot (which slot is the first empty one is different every time).
            let (mut hit, mut empty) = (Self::SLOTS, Self::SLOTS);
            for k in (0..Self::SLOTS).rev() {
                if bucket.fingerprints[k] == fingerprint {
                    hit = k;
                }
                if bucket.fingerprints[k] == 0 {
                    empty = k;
                }
            }
            // Slots fill in order, so a fingerprint is only ever before the first empty slot.
            if hit < empty {
                let first = bucket.rows[hit];
                return Some(if first == u32::MAX {
                    self.big_rows[&fingerprint]
                } else {
                    u64::from(first)
                });
            }
            if empty < Self::SLOTS {
                bucket.fingerprints[empty] = fingerprint;
                bucket.rows[empty] = u32::try_from(row).unwrap_or(u32::MAX);
                if bucket.rows[empty] == u32::MAX {
                    self.big_rows.insert(fingerprint, row);
                }
                self.len += 1;
                return None;
            }
            b += 1;
            if b == self.buckets.len() {
                b = 0;
            }
        }
    }

    /// Reads the bucket `fingerprint` starts at, so that the claim that follows finds it in
    /// the cache. Reads of a block's buckets do not depend on each other, so the processor
    /// fetches them in parallel.
    pub(super) fn warm(&self, fingerprint: u64) {
        if !self.buckets.is_empty() {
            let b = Self::home(fingerprint.max(1), self.buckets.len());
            std::hint::black_box(self.buckets[b].fingerprints[0]);
        }
    }

    /// Makes room for `more` fingerprints without growing again.
    pub(super) fn reserve(&mut self, more: usize) {
        let needed = (self.len + more)
            .saturating_mul(4)
            .div_ceil(3 * Self::SLOTS);
        if needed > self.buckets.len() {
            self.grow(needed.max(Self::MIN_BUCKETS));
        }
    }

    pub(super) fn grow(&mut self, buckets: usize) {
        // Written out rather than allocated zeroed: a zeroed allocation maps its pages lazily,
        // and each would then fault twice (the first read maps the shared zero page, the first
        // write copies it), at random, in the middle of the duplicate check.
        let mut new = Vec::with_capacity(buckets);
        new.resize(buckets, Bucket::default());
        let old = std::mem::replace(&mut self.buckets, new);
        for bucket in old {
            for k in 0..Self::SLOTS {
                let fingerprint = bucket.fingerprints[k];
                if fingerprint == 0 {
                    break;
                }
                let mut b = Self::home(fingerprint, buckets);
                loop {
                    let to = &mut self.buckets[b];
                    if let Some(free) = to.fingerprints.iter().position(|&f| f == 0) {
                        to.fingerprints[free] = fingerprint;
                        to.rows[free] = bucket.rows[k];
                        break;
                    }
                    b = (b + 1) % buckets;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_table_grows_and_remembers_first_rows() {
        let mut table = FingerprintTable::default();
        // Fingerprints are uniform keyed hashes; 0 (the first) stands for itself.
        let fingerprints: Vec<u64> = (0..50_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        for (row, &fp) in (1..).zip(&fingerprints) {
            assert_eq!(table.claim(fp, row), None, "row {row}");
        }
        assert!(table.len <= table.capacity());
        for (row, &fp) in (1..).zip(&fingerprints) {
            assert_eq!(table.claim(fp, 1_000_000), Some(row));
        }
        // Rows past u32::MAX are kept exactly.
        let big = u64::from(u32::MAX) + 7;
        assert_eq!(table.claim(0xDEAD_BEEF_0000_0001, big), None);
        table.reserve(200_000);
        assert_eq!(table.claim(0xDEAD_BEEF_0000_0001, 1), Some(big));
        assert_eq!(table.len, fingerprints.len() + 1);
    }
}
