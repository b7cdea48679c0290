//! Counters of results by status.

use std::iter::Sum;
use std::ops::{Add, AddAssign};

use crate::UpdateStatus;

/// Counts of cards by result, as CardSync reports them in batch and subscription stats.
///
/// `closed` counts both spellings (`closed` and `contact_closed`). `other` counts results whose
/// status the documents do not describe, so that [`Stats::total`] adds up. Counters saturate
/// rather than overflow.
///
/// ```
/// use cardsync_core::{Stats, UpdateStatus};
///
/// let mut a = Stats::default();
/// a.record(&UpdateStatus::UpdatedCard);
/// a.record(&UpdateStatus::parse("contact_closed"));
///
/// let mut b = Stats::default();
/// b.record(&UpdateStatus::Closed);
/// b.number_submitted = 10;
///
/// let all = a + b;
/// assert_eq!((all.updated_card, all.closed, all.number_submitted), (1, 2, 10));
/// assert_eq!(all.total(), 3);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Stats {
    /// Cards submitted.
    pub number_submitted: u64,
    /// Cards with no change.
    pub no_change: u64,
    /// Cards with a new number.
    pub updated_card: u64,
    /// Cards with a new expiry date.
    pub updated_expiry: u64,
    /// Cards the networks could not match.
    pub no_match: u64,
    /// Cards that are current.
    pub valid: u64,
    /// Cards whose holder should be contacted.
    pub contact: u64,
    /// Closed accounts (`closed` or `contact_closed`).
    pub closed: u64,
    /// Results with a status the documents do not describe.
    pub other: u64,
}

impl Stats {
    /// Counts one result.
    pub fn record(&mut self, status: &UpdateStatus) {
        let counter = match status {
            UpdateStatus::UpdatedCard => &mut self.updated_card,
            UpdateStatus::UpdatedExpiry => &mut self.updated_expiry,
            UpdateStatus::NoMatch => &mut self.no_match,
            UpdateStatus::Valid => &mut self.valid,
            UpdateStatus::Contact => &mut self.contact,
            UpdateStatus::Closed => &mut self.closed,
            UpdateStatus::NoChange => &mut self.no_change,
            UpdateStatus::Unknown(_) => &mut self.other,
        };
        *counter = counter.saturating_add(1);
    }

    /// The count for one status (`other` for unknown ones).
    ///
    /// ```
    /// use cardsync_core::{Stats, UpdateStatus};
    ///
    /// let mut s = Stats::default();
    /// s.record(&UpdateStatus::Valid);
    /// assert_eq!(s.get(&UpdateStatus::Valid), 1);
    /// ```
    pub fn get(&self, status: &UpdateStatus) -> u64 {
        match status {
            UpdateStatus::UpdatedCard => self.updated_card,
            UpdateStatus::UpdatedExpiry => self.updated_expiry,
            UpdateStatus::NoMatch => self.no_match,
            UpdateStatus::Valid => self.valid,
            UpdateStatus::Contact => self.contact,
            UpdateStatus::Closed => self.closed,
            UpdateStatus::NoChange => self.no_change,
            UpdateStatus::Unknown(_) => self.other,
        }
    }

    /// The number of results counted: every counter but `number_submitted`.
    pub fn total(&self) -> u64 {
        [
            self.no_change,
            self.updated_card,
            self.updated_expiry,
            self.no_match,
            self.valid,
            self.contact,
            self.closed,
            self.other,
        ]
        .into_iter()
        .fold(0, u64::saturating_add)
    }

    /// Adds every counter of `other` to this one.
    pub fn merge(&mut self, other: &Stats) {
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.number_submitted, other.number_submitted);
        add(&mut self.no_change, other.no_change);
        add(&mut self.updated_card, other.updated_card);
        add(&mut self.updated_expiry, other.updated_expiry);
        add(&mut self.no_match, other.no_match);
        add(&mut self.valid, other.valid);
        add(&mut self.contact, other.contact);
        add(&mut self.closed, other.closed);
        add(&mut self.other, other.other);
    }
}

impl AddAssign for Stats {
    fn add_assign(&mut self, rhs: Stats) {
        self.merge(&rhs);
    }
}

impl AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, rhs: &Stats) {
        self.merge(rhs);
    }
}

impl Add for Stats {
    type Output = Stats;

    fn add(mut self, rhs: Stats) -> Stats {
        self.merge(&rhs);
        self
    }
}

impl Sum for Stats {
    fn sum<I: Iterator<Item = Stats>>(iter: I) -> Stats {
        iter.fold(Stats::default(), Add::add)
    }
}

impl<'a> Sum<&'a Stats> for Stats {
    fn sum<I: Iterator<Item = &'a Stats>>(iter: I) -> Stats {
        iter.fold(Stats::default(), |mut acc, s| {
            acc.merge(s);
            acc
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_get_agree_for_every_status() {
        let mut statuses = UpdateStatus::KNOWN.to_vec();
        statuses.push(UpdateStatus::Unknown("x".into()));
        for (i, status) in statuses.iter().enumerate() {
            let mut s = Stats::default();
            for _ in 0..=i {
                s.record(status);
            }
            assert_eq!(s.get(status), i as u64 + 1);
            assert_eq!(s.total(), i as u64 + 1);
        }
    }

    #[test]
    fn sums_saturate() {
        let mut a = Stats {
            closed: u64::MAX,
            ..Stats::default()
        };
        a += Stats {
            closed: 1,
            ..Stats::default()
        };
        assert_eq!(a.closed, u64::MAX);
        let parts = [a, Stats::default()];
        assert_eq!(parts.iter().sum::<Stats>().closed, u64::MAX);
    }
}
