//! What can be told of a row alone (parsing, route, fingerprints): `Checker`, which may run
//! on another thread.

use super::*;

/// The stateless half of a [`Planner`]'s work: parsing a record's fields, choosing its route
/// and fingerprinting its id and card for the duplicate check. A checker can run on another
/// thread than its planner (it is `Send` and cheap to clone), so that a program can check the
/// next rows while the planner admits these; [`Planner::admit_records`] takes the results.
///
/// ```
/// use cardsync_core::{Planner, PlanOptions, Record, RowVerdict};
///
/// let mut planner = Planner::new(PlanOptions::default());
/// let checker = planner.checker();
/// let rows = [Record::new("a", "4457010000000009", "01/50")];
/// // This could run on another thread.
/// let checked = std::thread::scope(|s| {
///     s.spawn(|| rows.iter().map(|r| checker.check(r)).collect::<Vec<_>>()).join().unwrap()
/// });
/// let mut checked = checked;
/// planner.admit_records(&rows, &mut checked, |_, _, verdict| {
///     assert!(matches!(verdict, RowVerdict::Accepted(_)));
/// });
/// ```
#[derive(Clone)]
pub struct Checker {
    pub(super) default_se_number: Option<SeNumber>,
    /// Fingerprint keys, when the duplicate check is on.
    pub(super) keys: Option<foldhash::quality::FixedState>,
    /// Which planner this checker belongs to.
    pub(super) planner: u64,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("default_se_number", &self.default_se_number)
            .field("duplicate_check", &self.keys.is_some())
            .finish_non_exhaustive()
    }
}

/// What a [`Checker`] found out about one record: hand it to the planner the checker came
/// from, with [`Planner::admit_records`]. The card number inside is masked in `Debug`.
#[derive(Debug)]
pub struct CheckedRecord {
    pub(super) planner: u64,
    /// Reasons found so far (the duplicate check adds to them).
    pub(super) reasons: Vec<RejectReason>,
    pub(super) warnings: RowWarnings,
    pub(super) pan: Option<Pan>,
    /// The card number masked, worked out once.
    pub(super) masked: Option<PanFragment>,
    pub(super) exp: Option<Expiry>,
    pub(super) se: Option<SeNumber>,
    /// Fingerprints for the duplicate check, when it is on and the value is there.
    pub(super) id_fingerprint: Option<u64>,
    pub(super) card_fingerprint: Option<u64>,
}

/// The verdict of a good card.
pub(super) fn accepted_row(
    row: u64,
    pan: &Pan,
    masked: PanFragment,
    exp: Expiry,
    se: Option<&SeNumber>,
    warnings: RowWarnings,
) -> AcceptedRow {
    AcceptedRow {
        row,
        brand: pan.brand(),
        card: masked,
        exp,
        warnings,
        route: if se.is_some() {
            RouteKind::Subscription
        } else {
            RouteKind::Batch
        },
    }
}

impl CheckedRecord {
    /// The verdict this record gets, as row `row`, if the duplicate check finds neither its
    /// id nor its card earlier; `None` if it is rejected whatever that check finds. Lets a
    /// program prepare a good row's output on the thread that checked it.
    ///
    /// ```
    /// use cardsync_core::{Planner, PlanOptions, Record};
    ///
    /// let planner = Planner::new(PlanOptions::default());
    /// let checked = planner.checker().check(&Record::new("a", "4457010000000009", "01/50"));
    /// assert_eq!(checked.accepted(7).map(|a| a.row), Some(7));
    /// let bad = planner.checker().check(&Record::new("b", "4457010000000008", "01/50"));
    /// assert!(bad.accepted(8).is_none());
    /// ```
    pub fn accepted(&self, row: u64) -> Option<AcceptedRow> {
        match (&self.pan, self.masked, self.exp) {
            (Some(pan), Some(masked), Some(exp)) if self.reasons.is_empty() => Some(accepted_row(
                row,
                pan,
                masked,
                exp,
                self.se.as_ref(),
                self.warnings,
            )),
            _ => None,
        }
    }
}

impl Checker {
    /// Everything that can be told of a record on its own.
    pub fn check(&self, record: &Record<'_>) -> CheckedRecord {
        let mut reasons = Vec::new();
        let warnings = RowWarnings::of_id(record.id);
        let mut id_fingerprint = None;
        if record.id.is_empty() {
            reasons.push(RejectReason::MissingId);
        } else if record.id.len() > MAX_ID_LEN {
            reasons.push(RejectReason::IdTooLong {
                len: record.id.len(),
            });
        } else if let Some(keys) = &self.keys {
            id_fingerprint = Some(keys.hash_one(record.id));
        }

        let pan = Pan::parse(record.card)
            .map_err(|e| reasons.push(RejectReason::Card(e)))
            .ok();
        let exp = Expiry::parse(record.exp)
            .map_err(|e| reasons.push(RejectReason::Exp(e)))
            .ok();

        let mut se = None;
        let mut card_fingerprint = None;
        if let Some(pan) = &pan {
            let kind = pan.brand().route();
            if kind.is_none() {
                reasons.push(RejectReason::UnsupportedBrand(pan.brand()));
            }
            if kind == Some(RouteKind::Subscription) {
                match record.se_number.map(SeNumber::parse) {
                    Some(Ok(s)) => se = Some(s),
                    Some(Err(e)) => reasons.push(RejectReason::SeNumber(e)),
                    None => match &self.default_se_number {
                        Some(s) => se = Some(s.clone()),
                        None => reasons.push(RejectReason::AmexNeedsSeNumber),
                    },
                }
            }
            if let Some(keys) = &self.keys {
                let mut h = keys.build_hasher();
                pan.hash(&mut h);
                se.hash(&mut h);
                card_fingerprint = Some(h.finish());
            }
        }
        CheckedRecord {
            planner: self.planner,
            reasons,
            warnings,
            masked: pan.as_ref().map(Pan::masked),
            pan,
            exp,
            se,
            id_fingerprint,
            card_fingerprint,
        }
    }
}
