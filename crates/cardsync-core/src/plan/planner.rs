//! `Planner`: admits checked rows in order, runs the duplicate check, and groups accepted
//! cards into requests.

use super::*;

/// Gives every planner its own number, so that records checked by another planner's checker
/// are recognised (and checked again).
static PLANNERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Turns records into requests, one record at a time, with no I/O.
///
/// Call protocol: [`handle_record`](Planner::handle_record) for each input record, in order;
/// after each call, [`poll_request`](Planner::poll_request) until it returns `None` to take the
/// requests that filled up; at the end of the input, [`finish`](Planner::finish), then
/// `poll_request` again for the partly filled ones.
///
/// ```
/// use cardsync_core::{Planner, PlanOptions, Record, RowVerdict};
///
/// let mut planner = Planner::new(PlanOptions::default().with_max_per_request(2)?);
/// let rows = [
///     Record::new("a", "4457010000000009", "01/50"),
///     Record::new("b", "4457010000000008", "01/50"), // fails Luhn
///     Record::new("c", "5112010000000003", "02/50"),
///     Record::new("d", "6011010000000003", "03/50"),
/// ];
/// let mut sent = Vec::new();
/// for row in rows {
///     if let RowVerdict::Rejected(r) = planner.handle_record(row) {
///         assert_eq!((r.row, r.reasons[0].code()), (2, "luhn"));
///     }
///     while let Some(request) = planner.poll_request() {
///         sent.push(request);
///     }
/// }
/// planner.finish();
/// sent.extend(std::iter::from_fn(|| planner.poll_request()));
/// assert_eq!(sent.iter().map(|r| r.cards.len()).collect::<Vec<_>>(), [2, 1]);
/// # Ok::<(), cardsync_core::MaxPerRequestError>(())
/// ```
pub struct Planner {
    options: PlanOptions,
    rows: u64,
    next_seq: u64,
    batch: Vec<PlannedCard>,
    subscriptions: BTreeMap<SeNumber, Vec<PlannedCard>>,
    ready: VecDeque<PlannedRequest>,
    checker: Checker,
    /// The duplicate check's memory, when the check is on.
    seen: Option<Box<dyn SeenStore>>,
}

impl fmt::Debug for Planner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Planner")
            .field("options", &self.options)
            .field("rows", &self.rows)
            .field("open_batch", &self.batch.len())
            .field("open_subscriptions", &self.subscriptions.len())
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl Planner {
    /// A planner with the given options.
    pub fn new(options: PlanOptions) -> Planner {
        Planner::with_seen_store(options, Box::new(MemoryStore::default()))
    }

    /// A planner that keeps the fingerprints of the duplicate check in `store` (unused when
    /// the options turn the check off). See [`SeenStore`].
    pub fn with_seen_store(options: PlanOptions, store: Box<dyn SeenStore>) -> Planner {
        let checker = Checker {
            default_se_number: options.default_se_number.clone(),
            keys: options
                .check_duplicates
                .then(|| foldhash::quality::FixedState::with_seed(options.fingerprint_key)),
            planner: PLANNERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let seen = options.check_duplicates.then_some(store);
        Planner {
            options,
            rows: 0,
            next_seq: 1,
            batch: Vec::new(),
            subscriptions: BTreeMap::new(),
            ready: VecDeque::new(),
            checker,
            seen,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &PlanOptions {
        &self.options
    }

    /// How many records have been handled.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Validates one record and, if it is good, adds its card to the open request for its route.
    /// The record's row number is one more than the previous record's.
    pub fn handle_record(&mut self, record: Record<'_>) -> RowVerdict {
        let checked = self.checker.check(&record);
        self.admit(&record, checked)
    }

    /// Handles a block of records in order, exactly as [`handle_record`](Planner::handle_record)
    /// would one by one, calling `each` with the planner, every record and its verdict (the
    /// planner is lent so that `each` can take the requests that filled up, with
    /// [`poll_request`](Planner::poll_request), in step with the rows). Faster on large
    /// inputs: the duplicate check looks the whole block up at once (see [`SeenStore::warm`]).
    ///
    /// ```
    /// use cardsync_core::{Planner, PlanOptions, Record, RowVerdict};
    ///
    /// let mut planner = Planner::new(PlanOptions::default());
    /// let rows = [
    ///     Record::new("a", "4457010000000009", "01/50"),
    ///     Record::new("a", "5112010000000003", "01/50"), // the same id again
    /// ];
    /// let mut codes = Vec::new();
    /// planner.handle_records(&rows, |_, _, verdict| {
    ///     if let RowVerdict::Rejected(r) = verdict {
    ///         codes.push(r.reasons[0].code());
    ///     }
    /// });
    /// assert_eq!(codes, ["duplicate_id"]);
    /// ```
    pub fn handle_records<'r>(
        &mut self,
        records: &[Record<'r>],
        each: impl FnMut(&mut Planner, &Record<'r>, RowVerdict),
    ) {
        let mut checked = records.iter().map(|r| self.checker.check(r)).collect();
        self.admit_records(records, &mut checked, each);
    }

    /// Says that about `rows` more records will follow, so that the duplicate check can make
    /// room for them at once (a hint: more or fewer records are fine).
    ///
    /// ```
    /// let mut planner = cardsync_core::Planner::new(cardsync_core::PlanOptions::default());
    /// planner.reserve(1_000_000);
    /// ```
    pub fn reserve(&mut self, rows: usize) {
        if let Some(store) = &mut self.seen {
            store.reserve(rows);
        }
    }

    /// A checker for this planner's records, to run on any thread (see [`Checker`]).
    pub fn checker(&self) -> Checker {
        self.checker.clone()
    }

    /// The second half of [`handle_records`](Planner::handle_records): numbers the records,
    /// runs the duplicate check and plans the good cards, given what this planner's
    /// [`Checker`] found: the first `records.len()` entries of `checked`, one per record in
    /// the same order, which are taken out (the vector keeps its capacity, for reuse). A
    /// record checked by another planner's checker is checked again.
    ///
    /// # Panics
    ///
    /// If `checked` holds fewer entries than there are records.
    pub fn admit_records<'r>(
        &mut self,
        records: &[Record<'r>],
        checked: &mut Vec<CheckedRecord>,
        mut each: impl FnMut(&mut Planner, &Record<'r>, RowVerdict),
    ) {
        assert!(
            checked.len() >= records.len(),
            "one checked record per record"
        );
        for (r, c) in records.iter().zip(checked.iter_mut()) {
            if c.planner != self.checker.planner {
                *c = self.checker.check(r);
            }
        }
        if let Some(store) = &mut self.seen {
            for c in &checked[..records.len()] {
                if let Some(fp) = c.id_fingerprint {
                    store.warm(SeenKind::Id, fp);
                }
                if let Some(fp) = c.card_fingerprint {
                    store.warm(SeenKind::Card, fp);
                }
            }
        }
        for (record, c) in records.iter().zip(checked.drain(..records.len())) {
            let verdict = self.admit(record, c);
            each(self, record, verdict);
        }
    }

    /// Numbers a checked record, runs the duplicate check and plans the card if it is good.
    fn admit(&mut self, record: &Record<'_>, checked: CheckedRecord) -> RowVerdict {
        self.rows += 1;
        let row = self.rows;
        let CheckedRecord {
            planner: _,
            mut reasons,
            warnings,
            pan,
            masked,
            exp,
            se,
            id_fingerprint,
            card_fingerprint,
        } = checked;
        // Only a row good in itself claims its id and card: a row rejected for a typo does not
        // make its corrected copy further down a duplicate.
        if let Some(store) = self.seen.as_mut().filter(|_| reasons.is_empty()) {
            // A duplicate id is the first reason, as a missing id would be.
            if let Some(first_row) =
                id_fingerprint.and_then(|fp| store.claim(SeenKind::Id, fp, row))
            {
                reasons.insert(0, RejectReason::DuplicateId { first_row });
            }
            if let Some(first_row) =
                card_fingerprint.and_then(|fp| store.claim(SeenKind::Card, fp, row))
            {
                reasons.push(RejectReason::DuplicateCard { first_row });
            }
        }
        // `masked` is there exactly when `pan` is.
        match (pan, masked, exp) {
            (Some(pan), Some(masked), Some(exp)) if reasons.is_empty() => {
                let accepted = accepted_row(row, &pan, masked, exp, se.as_ref(), warnings);
                if self.options.build_requests {
                    let card = PlannedCard {
                        row,
                        id: record.id.to_owned(),
                        pan,
                        exp,
                    };
                    self.add(se, card);
                }
                RowVerdict::Accepted(accepted)
            }
            (pan, masked, _) => RowVerdict::Rejected(RejectedRow {
                row,
                id: record.id.to_owned(),
                card: masked.unwrap_or_else(|| mask_card_text(record.card)),
                brand: pan.as_ref().map(Pan::brand),
                reasons,
                warnings,
            }),
        }
    }

    /// Counts a record that the caller could not read at all (say, a line that is not JSON), so
    /// that the next records keep their row numbers. Returns the skipped record's row number;
    /// reporting it is the caller's job.
    ///
    /// ```
    /// use cardsync_core::{Planner, PlanOptions, Record, RowVerdict};
    ///
    /// let mut planner = Planner::new(PlanOptions::default());
    /// assert_eq!(planner.skip_record(), 1);
    /// let verdict = planner.handle_record(Record::new("b", "4457010000000009", "01/50"));
    /// assert_eq!(verdict.row(), 2);
    /// ```
    pub fn skip_record(&mut self) -> u64 {
        self.rows += 1;
        self.rows
    }

    fn add(&mut self, se: Option<SeNumber>, card: PlannedCard) {
        let max = self.options.max_per_request;
        let (route, open) = match se {
            None => (Route::Batch, &mut self.batch),
            Some(se) => {
                let open = self.subscriptions.entry(se.clone()).or_default();
                (Route::Subscription(se), open)
            }
        };
        open.push(card);
        if open.len() >= max {
            let cards = std::mem::take(open);
            if let Route::Subscription(se) = &route {
                self.subscriptions.remove(se);
            }
            self.release(route, cards);
        }
    }

    fn release(&mut self, route: Route, cards: Vec<PlannedCard>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ready.push_back(PlannedRequest { seq, route, cards });
    }

    /// Takes the next request that is ready, in the order they became ready.
    pub fn poll_request(&mut self) -> Option<PlannedRequest> {
        self.ready.pop_front()
    }

    /// Marks the end of the input: the open batch, then the open subscription groups in SE
    /// number order, become ready. Records handled afterwards start new requests.
    pub fn finish(&mut self) {
        if !self.batch.is_empty() {
            let cards = std::mem::take(&mut self.batch);
            self.release(Route::Batch, cards);
        }
        for (se, cards) in std::mem::take(&mut self.subscriptions) {
            self.release(Route::Subscription(se), cards);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(planner: &mut Planner, id: &str, card: &str, exp: &str) -> Vec<&'static str> {
        match planner.handle_record(Record::new(id, card, exp)) {
            RowVerdict::Accepted(_) => vec![],
            RowVerdict::Rejected(r) => r.reasons.iter().map(RejectReason::code).collect(),
        }
    }

    #[test]
    fn every_problem_in_a_row_is_reported() {
        let mut p = Planner::new(PlanOptions::default());
        assert_eq!(
            verdict(&mut p, "", "4457010000000008", "13/50"),
            ["missing_id", "luhn", "exp_month"]
        );
        assert_eq!(
            verdict(&mut p, "a", "342132335566772", "01/50"),
            ["amex_needs_se_number"]
        );
        assert_eq!(
            verdict(&mut p, "b", "3530111333300000", "01/50"),
            ["unsupported_brand"]
        );
    }

    #[test]
    fn a_corrected_row_is_not_a_duplicate_of_its_typo() {
        let mut p = Planner::new(PlanOptions::default());
        // The expiry mistyped, then the row again, right.
        assert_eq!(
            verdict(&mut p, "a", "4457010000000009", "13/50"),
            ["exp_month"]
        );
        assert!(verdict(&mut p, "a", "4457010000000009", "01/50").is_empty());
        // A third copy is a duplicate of the good one.
        assert_eq!(
            verdict(&mut p, "a", "4457010000000009", "01/50"),
            ["duplicate_id", "duplicate_card"]
        );
    }

    #[test]
    fn an_id_too_long_for_a_request_is_rejected() {
        let mut p = Planner::new(PlanOptions::default());
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            verdict(&mut p, &long, "4457010000000009", "01/50"),
            ["id_too_long"]
        );
        let longest = "x".repeat(MAX_ID_LEN);
        assert!(verdict(&mut p, &longest, "4457010000000009", "01/50").is_empty());
    }

    #[test]
    fn duplicates_name_the_first_row() {
        let mut p = Planner::new(PlanOptions::default());
        assert!(verdict(&mut p, "a", "4457010000000009", "01/50").is_empty());
        let RowVerdict::Rejected(r) =
            p.handle_record(Record::new("a", "4457 0100 0000 0009", "01/50"))
        else {
            panic!("duplicate accepted");
        };
        assert_eq!(
            r.reasons,
            [
                RejectReason::DuplicateId { first_row: 1 },
                RejectReason::DuplicateCard { first_row: 1 }
            ]
        );
    }

    #[test]
    fn same_amex_card_under_two_se_numbers_is_not_a_duplicate() {
        let mut p = Planner::new(PlanOptions::default());
        for (id, se) in [("a", "1111111111"), ("b", "2222222222")] {
            let r = Record::new(id, "342132335566772", "01/50").with_se_number(Some(se));
            assert!(matches!(p.handle_record(r), RowVerdict::Accepted(_)));
        }
        let r = Record::new("c", "342132335566772", "01/50").with_se_number(Some("1111111111"));
        assert!(matches!(p.handle_record(r), RowVerdict::Rejected(_)));
        p.finish();
        let requests: Vec<_> = std::iter::from_fn(|| p.poll_request()).collect();
        assert_eq!(requests.len(), 2);
    }

    #[test]
    fn no_duplicate_memory_when_turned_off() {
        let mut p = Planner::new(PlanOptions::default().with_duplicate_check(false));
        assert!(verdict(&mut p, "a", "4457010000000009", "01/50").is_empty());
        assert!(verdict(&mut p, "a", "4457010000000009", "01/50").is_empty());
        assert!(p.seen.is_none());
    }

    #[test]
    fn record_debug_masks_the_card() {
        let r = RecordBuf::new("a", "4457010000000009", "01/50");
        let text = format!("{r:?}");
        assert!(!text.contains("4457010000000009"), "{text}");
        assert!(text.contains("445701******0009"), "{text}");
    }
}
