//! The planner's settings.

use super::*;

/// Settings for a [`Planner`].
///
/// ```
/// use cardsync_core::{PlanOptions, SeNumber};
///
/// let options = PlanOptions::default()
///     .with_max_per_request(500)?
///     .with_default_se_number(Some(SeNumber::parse("1234567890")?));
/// assert_eq!(options.max_per_request(), 500);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PlanOptions {
    pub(super) max_per_request: usize,
    pub(super) default_se_number: Option<SeNumber>,
    pub(super) check_duplicates: bool,
    pub(super) build_requests: bool,
    pub(super) fingerprint_key: u64,
}

impl Default for PlanOptions {
    /// Requests of at most 10,000 cards, the duplicate check on, and a random fingerprint key
    /// (from the standard library's randomly seeded hasher: no clock is read).
    fn default() -> Self {
        use std::hash::BuildHasher;
        PlanOptions {
            max_per_request: MAX_CARDS_PER_REQUEST,
            default_se_number: None,
            check_duplicates: true,
            build_requests: true,
            fingerprint_key: std::collections::hash_map::RandomState::new().hash_one(0u8),
        }
    }
}

impl fmt::Debug for PlanOptions {
    /// The fingerprint key is not shown: with it, fingerprints kept on disk could be matched
    /// against guessed card numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlanOptions")
            .field("max_per_request", &self.max_per_request)
            .field("default_se_number", &self.default_se_number)
            .field("check_duplicates", &self.check_duplicates)
            .field("build_requests", &self.build_requests)
            .finish_non_exhaustive()
    }
}

impl PlanOptions {
    /// Caps the cards per request below CardSync's 10,000.
    ///
    /// # Errors
    ///
    /// [`MaxPerRequestError`] for 0 or more than [`MAX_CARDS_PER_REQUEST`].
    pub fn with_max_per_request(mut self, max: usize) -> Result<Self, MaxPerRequestError> {
        if (1..=MAX_CARDS_PER_REQUEST).contains(&max) {
            self.max_per_request = max;
            Ok(self)
        } else {
            Err(MaxPerRequestError { requested: max })
        }
    }

    /// The SE number for American Express rows that have none.
    pub fn with_default_se_number(mut self, se: Option<SeNumber>) -> Self {
        self.default_se_number = se;
        self
    }

    /// Turns duplicate detection off, for callers that deduplicate elsewhere; the planner then
    /// keeps no memory per row.
    pub fn with_duplicate_check(mut self, on: bool) -> Self {
        self.check_duplicates = on;
        self
    }

    /// Turns the building of requests off, for callers that only want the verdicts (a
    /// `validate` command): rows are checked and routed as usual, but no card is kept and
    /// [`Planner::poll_request`] never returns a request.
    ///
    /// ```
    /// use cardsync_core::{Planner, PlanOptions, Record, RowVerdict};
    ///
    /// let mut planner = Planner::new(PlanOptions::default().with_requests(false));
    /// let verdict = planner.handle_record(Record::new("a", "4457010000000009", "01/50"));
    /// assert!(matches!(verdict, RowVerdict::Accepted(_)));
    /// planner.finish();
    /// assert!(planner.poll_request().is_none());
    /// ```
    pub fn with_requests(mut self, on: bool) -> Self {
        self.build_requests = on;
        self
    }

    /// Whether requests are built.
    pub fn requests(&self) -> bool {
        self.build_requests
    }

    /// The key of the duplicate check's fingerprints (keyed 64-bit hashes of ids and cards).
    /// Random by default; a fixed key makes plans reproducible, for tests. Keep a real key
    /// secret: fingerprints kept on disk could be matched against guessed card numbers.
    ///
    /// ```
    /// use cardsync_core::{PlanOptions, Planner, Record, RowVerdict};
    ///
    /// let options = PlanOptions::default().with_fingerprint_key(7);
    /// let mut planner = Planner::new(options);
    /// planner.handle_record(Record::new("a", "4457010000000009", "01/50"));
    /// let again = planner.handle_record(Record::new("b", "4457 0100 0000 0009", "01/50"));
    /// assert!(matches!(again, RowVerdict::Rejected(_)));
    /// ```
    pub fn with_fingerprint_key(mut self, key: u64) -> Self {
        self.fingerprint_key = key;
        self
    }

    /// The most cards per request.
    pub fn max_per_request(&self) -> usize {
        self.max_per_request
    }

    /// The SE number for American Express rows that have none.
    pub fn default_se_number(&self) -> Option<&SeNumber> {
        self.default_se_number.as_ref()
    }

    /// Whether duplicate ids and cards are reported.
    pub fn duplicate_check(&self) -> bool {
        self.check_duplicates
    }
}

/// The error for a request size that is 0 or above [`MAX_CARDS_PER_REQUEST`].
///
/// ```
/// let err = cardsync_core::PlanOptions::default().with_max_per_request(0).unwrap_err();
/// assert_eq!(err.to_string(), "cards per request must be 1 to 10000, not 0");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MaxPerRequestError {
    /// The size asked for.
    pub requested: usize,
}

impl fmt::Display for MaxPerRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cards per request must be 1 to {MAX_CARDS_PER_REQUEST}, not {}",
            self.requested
        )
    }
}

impl std::error::Error for MaxPerRequestError {}
