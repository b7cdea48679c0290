//! The brand of a card number, looked up from its first digits.
//!
//! The brands' IIN ranges ([`IinRange`]s) live in `data/iin-ranges.txt`; `cargo xtask codegen`
//! turns them into `generated/iin_table.rs`. At compile time that table is expanded here into
//! an array indexed by the first four digits, holding the brand and the lengths it issues, so
//! that finding a brand costs one load for every prefix but those around Discover's
//! 622126–622925, which need six digits and a binary search. [`Pan`](crate::Pan) parsing looks
//! up [`entry`]; [`Brand::from_prefix`] is written here too, next to the table it reads.

use crate::brand::{Brand, IinRange};
use crate::generated::iin_table::IIN_RANGES;

impl Brand {
    /// The brand of a card number from its leading digits alone, without checking its length or
    /// check digit. Non-digits end the prefix; fewer than two digits give `Unknown` unless the
    /// first is a 4.
    ///
    /// ```
    /// use cardsync_core::Brand;
    ///
    /// assert_eq!(Brand::from_prefix("622126"), Brand::Discover);
    /// assert_eq!(Brand::from_prefix("622125"), Brand::UnionPay);
    /// assert_eq!(Brand::from_prefix("2221"), Brand::Mastercard);
    /// ```
    pub fn from_prefix(digits: &str) -> Brand {
        let mut head = [b'0'; 6];
        let mut n = 0;
        for (slot, b) in head.iter_mut().zip(digits.bytes()) {
            if !b.is_ascii_digit() {
                break;
            }
            *slot = b;
            n += 1;
        }
        // Every six-digit IIN under a shorter prefix must fall in one range: "3" is no brand,
        // although 300000 is Diners Club's.
        let mut last = head;
        for slot in &mut last[n..] {
            *slot = b'9';
        }
        match lookup_slow(six_digits(&head)) {
            Some(r) if r.last >= six_digits(&last) => r.brand,
            _ => Brand::Unknown,
        }
    }
}

/// What the four-digit prefix table says about a prefix: the brand, and the lengths 12–19 it
/// issues there as bits 0–7. No lengths at all means "ranges cover this prefix only in part;
/// look at six digits".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    brand: Brand,
    lengths: u8,
}

impl Entry {
    /// No known brand: any length of 12 to 19 digits.
    const UNKNOWN: Entry = Entry {
        brand: Brand::Unknown,
        lengths: 0xFF,
    };

    /// Look at six digits.
    const REFINE: Entry = Entry {
        brand: Brand::Unknown,
        lengths: 0,
    };

    const fn of(range: &IinRange) -> Entry {
        Entry {
            brand: range.brand,
            lengths: ((range.lengths >> 12) & 0xFF) as u8,
        }
    }

    /// The brand.
    #[inline]
    pub(crate) fn brand(self) -> Brand {
        self.brand
    }

    /// Whether the brand issues card numbers of `len` digits (12 to 19).
    #[inline]
    pub(crate) fn allows_len(self, len: usize) -> bool {
        (self.lengths >> (len.wrapping_sub(12) & 7)) & 1 == 1
    }
}

// Every range allows some length, so an empty mask can only mean REFINE.
const _: () = {
    let mut i = 0;
    while i < IIN_RANGES.len() {
        assert!(Entry::of(&IIN_RANGES[i]).lengths != 0);
        i += 1;
    }
};

/// [`Entry`]s by four-digit prefix, padded to 2¹⁴ so that a masked index needs no bounds check.
static PREFIX4: [Entry; 1 << 14] = build_prefix4();

const fn build_prefix4() -> [Entry; 1 << 14] {
    let mut table = [Entry::UNKNOWN; 1 << 14];
    let mut p = 0;
    while p < 10_000 {
        let lo = p as u32 * 100;
        let hi = lo + 99;
        let mut i = 0;
        while i < IIN_RANGES.len() {
            let r = &IIN_RANGES[i];
            if r.first <= lo && hi <= r.last {
                table[p] = Entry::of(r);
            } else if r.first <= hi && lo <= r.last {
                table[p] = Entry::REFINE;
            }
            i += 1;
        }
        p += 1;
    }
    table
}

/// The entry for a card number from its first four digits (`first4`, 0 to 9999) and, only for
/// the few prefixes that need them, its first six (`bin6`, computed on demand).
#[inline]
pub(crate) fn entry(first4: u32, bin6: impl FnOnce() -> u32) -> Entry {
    let e = PREFIX4[first4 as usize & ((1 << 14) - 1)];
    if e.lengths != 0 {
        e
    } else {
        entry_slow(bin6())
    }
}

#[cold]
#[inline(never)]
fn entry_slow(bin6: u32) -> Entry {
    lookup_slow(bin6).map_or(Entry::UNKNOWN, Entry::of)
}

/// The range covering a six-digit IIN, by binary search.
fn lookup_slow(bin6: u32) -> Option<&'static IinRange> {
    let i = IIN_RANGES.partition_point(|r| r.last < bin6);
    IIN_RANGES.get(i).filter(|r| r.first <= bin6)
}

/// The number made of six ASCII digits.
fn six_digits(head: &[u8; 6]) -> u32 {
    head.iter()
        .fold(0, |n, &b| n * 10 + u32::from(b.wrapping_sub(b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_sorted_and_disjoint() {
        for pair in IIN_RANGES.windows(2) {
            assert!(pair[0].first <= pair[0].last);
            assert!(pair[0].last < pair[1].first, "{pair:?}");
        }
    }

    #[test]
    fn table_agrees_with_binary_search_for_every_six_digit_prefix() {
        for bin6 in 0..1_000_000u32 {
            let fast = entry(bin6 / 100, || bin6);
            let slow = lookup_slow(bin6).map_or(Entry::UNKNOWN, Entry::of);
            assert_eq!(fast, slow, "{bin6}");
            let brand = lookup_slow(bin6).map_or(Brand::Unknown, |r| r.brand);
            assert_eq!(fast.brand(), brand, "{bin6}");
            for len in 12..=19 {
                let allowed = lookup_slow(bin6).is_none_or(|r| r.lengths >> len & 1 == 1);
                assert_eq!(fast.allows_len(len), allowed, "{bin6} {len}");
            }
        }
    }

    #[test]
    fn short_prefixes() {
        assert_eq!(Brand::from_prefix("4"), Brand::Visa);
        assert_eq!(Brand::from_prefix("3"), Brand::Unknown);
        assert_eq!(Brand::from_prefix("37"), Brand::AmericanExpress);
        assert_eq!(Brand::from_prefix("62"), Brand::Unknown);
        assert_eq!(Brand::from_prefix("6229"), Brand::Unknown);
        assert_eq!(Brand::from_prefix("6230"), Brand::UnionPay);
        assert_eq!(Brand::from_prefix(""), Brand::Unknown);
        assert_eq!(Brand::from_prefix("35x"), Brand::Unknown);
    }
}
