//! Planning: turning card records into the requests CardSync needs.
//!
//! American Express cards go to subscription requests, one group per SE number; Visa,
//! Mastercard and Discover cards go to batch requests; no request holds more than
//! [`MAX_CARDS_PER_REQUEST`] cards. Every row is either accepted into a request or rejected
//! with its row number, id, masked card and reasons: nothing is dropped silently.
//!
//! [`Planner`] is a state machine with no I/O: feed it records with
//! [`Planner::handle_record`], take full requests with [`Planner::poll_request`], and call
//! [`Planner::finish`] at the end of the input to release the partly filled ones. [`plan`]
//! wraps it as an iterator.
//!
//! Memory is bounded by the open requests (one batch and one subscription group per SE number,
//! each at most the request size) plus, while duplicate checking is on, about 17 bytes per
//! distinct id and card (a keyed 64-bit fingerprint and a row number, in a table at most three
//! quarters full), never the input itself.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use crate::{Brand, Expiry, ExpiryError, Pan, PanError, PanFragment, mask_card_text};

/// The most cards CardSync takes in one batch or subscription request.
pub const MAX_CARDS_PER_REQUEST: usize = 10_000;

/// An American Express service establishment (SE) number: the merchant account that Amex
/// subscriptions belong to.
///
/// American Express issues 10-digit SE numbers; since the documents also show an 11-digit one,
/// any run of 1 to 15 ASCII digits is accepted.
///
/// ```
/// use cardsync_core::SeNumber;
///
/// let se = SeNumber::parse("1234567890")?;
/// assert_eq!(se.as_str(), "1234567890");
/// assert!(SeNumber::parse("12345-678").is_err());
/// # Ok::<(), cardsync_core::SeNumberError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeNumber(String);

impl SeNumber {
    /// Parses an SE number.
    ///
    /// # Errors
    ///
    /// [`SeNumberError`] when the text is empty, longer than 15 characters, or not all digits.
    pub fn parse(s: &str) -> Result<SeNumber, SeNumberError> {
        if (1..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(SeNumber(s.to_owned()))
        } else {
            Err(SeNumberError)
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SeNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl std::str::FromStr for SeNumber {
    type Err = SeNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SeNumber::parse(s)
    }
}

/// The error for text that is not an SE number (1 to 15 ASCII digits).
///
/// ```
/// assert_eq!(
///     cardsync_core::SeNumber::parse("").unwrap_err().to_string(),
///     "SE number must be 1 to 15 digits"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SeNumberError;

impl fmt::Display for SeNumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SE number must be 1 to 15 digits")
    }
}

impl std::error::Error for SeNumberError {}

/// One input row: an id chosen by the merchant, the card number and expiry as text, and the SE
/// number for an American Express card.
///
/// ```
/// let record = cardsync_core::Record::new("c1", "342132335566772", "01/50")
///     .with_se_number(Some("1234567890"));
/// assert_eq!(record.se_number, Some("1234567890"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record<'a> {
    /// The merchant's id for the card, echoed back in results.
    pub id: &'a str,
    /// The card number as given.
    pub card: &'a str,
    /// The expiry date as given.
    pub exp: &'a str,
    /// The SE number, for American Express cards.
    pub se_number: Option<&'a str>,
}

impl<'a> Record<'a> {
    /// A record with no SE number.
    pub fn new(id: &'a str, card: &'a str, exp: &'a str) -> Self {
        Record {
            id,
            card,
            exp,
            se_number: None,
        }
    }

    /// Sets the SE number. An empty one counts as none.
    pub fn with_se_number(mut self, se_number: Option<&'a str>) -> Self {
        self.se_number = se_number.filter(|s| !s.is_empty());
        self
    }
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("card", &mask_card_text(self.card))
            .field("exp", &self.exp)
            .field("se_number", &self.se_number)
            .finish()
    }
}

/// An owned [`Record`], for iterators that cannot lend their rows.
///
/// ```
/// use cardsync_core::{AsRecord, RecordBuf};
///
/// let row = RecordBuf::new("c1", "4457010000000009", "01/50");
/// assert_eq!(row.as_record().id, "c1");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordBuf {
    /// The merchant's id for the card.
    pub id: String,
    /// The card number as given.
    pub card: String,
    /// The expiry date as given.
    pub exp: String,
    /// The SE number, for American Express cards.
    pub se_number: Option<String>,
}

impl RecordBuf {
    /// An owned record with no SE number.
    pub fn new(id: impl Into<String>, card: impl Into<String>, exp: impl Into<String>) -> Self {
        RecordBuf {
            id: id.into(),
            card: card.into(),
            exp: exp.into(),
            se_number: None,
        }
    }

    /// Sets the SE number.
    pub fn with_se_number(mut self, se_number: Option<String>) -> Self {
        self.se_number = se_number;
        self
    }
}

impl fmt::Debug for RecordBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_record(), f)
    }
}

impl Drop for RecordBuf {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.card);
    }
}

/// Anything that can be viewed as a [`Record`]: the item type [`plan`] takes.
pub trait AsRecord {
    /// The record view.
    fn as_record(&self) -> Record<'_>;
}

impl AsRecord for Record<'_> {
    fn as_record(&self) -> Record<'_> {
        *self
    }
}

impl AsRecord for RecordBuf {
    fn as_record(&self) -> Record<'_> {
        Record::new(&self.id, &self.card, &self.exp).with_se_number(self.se_number.as_deref())
    }
}

/// Where an accepted card goes.
///
/// ```
/// use cardsync_core::RouteKind;
///
/// assert_eq!(RouteKind::Subscription.as_str(), "subscription");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RouteKind {
    /// A batch request (`POST /v2/batch`): Visa, Mastercard and Discover.
    Batch,
    /// A subscription request (`POST /v2/subscribe`): American Express, with an SE number.
    Subscription,
}

impl RouteKind {
    /// `"batch"` or `"subscription"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Batch => "batch",
            RouteKind::Subscription => "subscription",
        }
    }
}

impl fmt::Display for RouteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The request a group of cards goes in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Route {
    /// A batch request.
    Batch,
    /// A subscription request for one SE number.
    Subscription(SeNumber),
}

impl Route {
    /// The kind of request, without the SE number.
    pub fn kind(&self) -> RouteKind {
        match self {
            Route::Batch => RouteKind::Batch,
            Route::Subscription(_) => RouteKind::Subscription,
        }
    }

    /// The SE number of a subscription request.
    pub fn se_number(&self) -> Option<&SeNumber> {
        match self {
            Route::Batch => None,
            Route::Subscription(se) => Some(se),
        }
    }
}

/// A card accepted into a request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedCard {
    /// 1-based number of the input record (header not counted).
    pub row: u64,
    /// The merchant's id.
    pub id: String,
    /// The card number.
    pub pan: Pan,
    /// The expiry date.
    pub exp: Expiry,
}

/// A request ready to be sent: up to the request size of cards for one route.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedRequest {
    /// 1-based number of the request, in the order the planner released them.
    pub seq: u64,
    /// Batch or subscription (with its SE number).
    pub route: Route,
    /// The cards, in input order.
    pub cards: Vec<PlannedCard>,
}

impl PlannedRequest {
    /// How many cards of each brand the request holds, in [`Brand::ALL`] order, leaving out
    /// brands with none.
    ///
    /// ```
    /// use cardsync_core::{plan, Brand, PlanEvent, PlanOptions, Record};
    ///
    /// let rows = [
    ///     Record::new("a", "4457010000000009", "01/50"),
    ///     Record::new("b", "5112010000000003", "02/50"),
    ///     Record::new("c", "4100200300011001", "05/50"),
    /// ];
    /// let mut events = plan(rows, PlanOptions::default());
    /// let Some(PlanEvent::Request(request)) = events.next() else { panic!() };
    /// assert_eq!(request.brand_counts(), vec![(Brand::Visa, 2), (Brand::Mastercard, 1)]);
    /// ```
    pub fn brand_counts(&self) -> Vec<(Brand, usize)> {
        Brand::ALL
            .iter()
            .map(|&b| (b, self.cards.iter().filter(|c| c.pan.brand() == b).count()))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

/// Why a row was rejected. A row may have several reasons.
///
/// ```
/// use cardsync_core::{PanError, RejectReason};
///
/// assert_eq!(RejectReason::Card(PanError::Luhn).code(), "luhn");
/// assert_eq!(RejectReason::DuplicateId { first_row: 3 }.code(), "duplicate_id");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The card number is not valid.
    Card(PanError),
    /// The expiry date is not valid.
    Exp(ExpiryError),
    /// The id is empty.
    MissingId,
    /// An earlier row has the same id.
    DuplicateId {
        /// The row that had the id first.
        first_row: u64,
    },
    /// An earlier row has the same card (and, for American Express, the same SE number).
    DuplicateCard {
        /// The row that had the card first.
        first_row: u64,
    },
    /// CardSync does not update cards of this brand.
    UnsupportedBrand(Brand),
    /// An American Express card with no SE number, in the row or as a default.
    AmexNeedsSeNumber,
    /// The SE number is not 1 to 15 digits.
    SeNumber(SeNumberError),
}

impl RejectReason {
    /// A stable snake_case code: the [`PanError::code`] and [`ExpiryError::code`] codes, and
    /// `missing_id`, `duplicate_id`, `duplicate_card`, `unsupported_brand`,
    /// `amex_needs_se_number` and `se_number_format`.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Card(e) => e.code(),
            RejectReason::Exp(e) => e.code(),
            RejectReason::MissingId => "missing_id",
            RejectReason::DuplicateId { .. } => "duplicate_id",
            RejectReason::DuplicateCard { .. } => "duplicate_card",
            RejectReason::UnsupportedBrand(_) => "unsupported_brand",
            RejectReason::AmexNeedsSeNumber => "amex_needs_se_number",
            RejectReason::SeNumber(_) => "se_number_format",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Card(e) => fmt::Display::fmt(e, f),
            RejectReason::Exp(e) => fmt::Display::fmt(e, f),
            RejectReason::MissingId => f.write_str("id is empty"),
            RejectReason::DuplicateId { first_row } => {
                write!(f, "id already used in row {first_row}")
            }
            RejectReason::DuplicateCard { first_row } => {
                write!(f, "card already listed in row {first_row}")
            }
            RejectReason::UnsupportedBrand(brand) => {
                write!(f, "CardSync does not update {brand} cards")
            }
            RejectReason::AmexNeedsSeNumber => {
                f.write_str("American Express cards need an SE number (column se_number)")
            }
            RejectReason::SeNumber(e) => fmt::Display::fmt(e, f),
        }
    }
}

/// A row that was accepted into a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcceptedRow {
    /// 1-based record number.
    pub row: u64,
    /// The card's brand.
    pub brand: Brand,
    /// The card number, masked.
    pub card: PanFragment,
    /// The expiry date.
    pub exp: Expiry,
    /// Batch or subscription.
    pub route: RouteKind,
}

/// A row that was rejected, with every reason found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectedRow {
    /// 1-based record number.
    pub row: u64,
    /// The id as given (possibly empty).
    pub id: String,
    /// Whatever digits the card field held, masked.
    pub card: PanFragment,
    /// The card's brand, when the number is valid.
    pub brand: Option<Brand>,
    /// The reasons, at least one.
    pub reasons: Vec<RejectReason>,
}

/// What became of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RowVerdict {
    /// The card is in a request (or will be when the request fills up or the input ends).
    Accepted(AcceptedRow),
    /// The row was rejected.
    Rejected(RejectedRow),
}

impl RowVerdict {
    /// The 1-based record number.
    pub fn row(&self) -> u64 {
        match self {
            RowVerdict::Accepted(a) => a.row,
            RowVerdict::Rejected(r) => r.row,
        }
    }
}

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
    max_per_request: usize,
    default_se_number: Option<SeNumber>,
    check_duplicates: bool,
    build_requests: bool,
    fingerprint_key: u64,
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
struct FingerprintTable {
    buckets: Vec<Bucket>,
    len: usize,
    /// Rows past `u32::MAX` (whose slot holds `u32::MAX`), which only files of more than
    /// four billion rows have.
    big_rows: std::collections::HashMap<u64, u64>,
}

impl FingerprintTable {
    const SLOTS: usize = 5;
    const MIN_BUCKETS: usize = 256;

    fn capacity(&self) -> usize {
        self.buckets.len() * Self::SLOTS * 3 / 4
    }

    fn home(fingerprint: u64, buckets: usize) -> usize {
        ((u128::from(fingerprint) * buckets as u128) >> 64) as usize
    }

    fn claim(&mut self, fingerprint: u64, row: u64) -> Option<u64> {
        if self.len >= self.capacity() {
            self.grow((self.buckets.len() * 2).max(Self::MIN_BUCKETS));
        }
        let fingerprint = fingerprint.max(1);
        let mut b = Self::home(fingerprint, self.buckets.len());
        loop {
            let bucket = &mut self.buckets[b];
            for k in 0..Self::SLOTS {
                if bucket.fingerprints[k] == fingerprint {
                    let first = bucket.rows[k];
                    return Some(if first == u32::MAX {
                        self.big_rows[&fingerprint]
                    } else {
                        u64::from(first)
                    });
                }
                if bucket.fingerprints[k] == 0 {
                    bucket.fingerprints[k] = fingerprint;
                    bucket.rows[k] = u32::try_from(row).unwrap_or(u32::MAX);
                    if bucket.rows[k] == u32::MAX {
                        self.big_rows.insert(fingerprint, row);
                    }
                    self.len += 1;
                    return None;
                }
            }
            b = (b + 1) % self.buckets.len();
        }
    }

    /// Reads the bucket `fingerprint` starts at, so that the claim that follows finds it in
    /// the cache. Reads of a block's buckets do not depend on each other, so the processor
    /// fetches them in parallel.
    fn warm(&self, fingerprint: u64) {
        if !self.buckets.is_empty() {
            let b = Self::home(fingerprint.max(1), self.buckets.len());
            std::hint::black_box(self.buckets[b].fingerprints[0]);
        }
    }

    /// Makes room for `more` fingerprints without growing again.
    fn reserve(&mut self, more: usize) {
        let needed = (self.len + more)
            .saturating_mul(4)
            .div_ceil(3 * Self::SLOTS);
        if needed > self.buckets.len() {
            self.grow(needed.max(Self::MIN_BUCKETS));
        }
    }

    fn grow(&mut self, buckets: usize) {
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
struct MemoryStore {
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
    default_se_number: Option<SeNumber>,
    /// Fingerprint keys, when the duplicate check is on.
    keys: Option<foldhash::quality::FixedState>,
    /// Which planner this checker belongs to.
    planner: u64,
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
    planner: u64,
    /// Reasons found so far (the duplicate check adds to them).
    reasons: Vec<RejectReason>,
    pan: Option<Pan>,
    /// The card number masked, worked out once.
    masked: Option<PanFragment>,
    exp: Option<Expiry>,
    se: Option<SeNumber>,
    /// Fingerprints for the duplicate check, when it is on and the value is there.
    id_fingerprint: Option<u64>,
    card_fingerprint: Option<u64>,
}

/// The verdict of a good card.
fn accepted_row(
    row: u64,
    pan: &Pan,
    masked: PanFragment,
    exp: Expiry,
    se: Option<&SeNumber>,
) -> AcceptedRow {
    AcceptedRow {
        row,
        brand: pan.brand(),
        card: masked,
        exp,
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
            (Some(pan), Some(masked), Some(exp)) if self.reasons.is_empty() => {
                Some(accepted_row(row, pan, masked, exp, self.se.as_ref()))
            }
            _ => None,
        }
    }
}

impl Checker {
    /// Everything that can be told of a record on its own.
    pub fn check(&self, record: &Record<'_>) -> CheckedRecord {
        let mut reasons = Vec::new();
        let mut id_fingerprint = None;
        if record.id.is_empty() {
            reasons.push(RejectReason::MissingId);
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
            masked: pan.as_ref().map(Pan::masked),
            pan,
            exp,
            se,
            id_fingerprint,
            card_fingerprint,
        }
    }
}

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
            pan,
            masked,
            exp,
            se,
            id_fingerprint,
            card_fingerprint,
        } = checked;
        if let Some(store) = &mut self.seen {
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
                let accepted = accepted_row(row, &pan, masked, exp, se.as_ref());
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

/// One output of [`plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanEvent {
    /// A row was rejected.
    Rejected(RejectedRow),
    /// A request is ready.
    Request(PlannedRequest),
}

/// Plans an iterator of records lazily: rejected rows as they are found, requests as they fill
/// up, and the partly filled requests once the input ends.
///
/// ```
/// use cardsync_core::{plan, PlanEvent, PlanOptions, RecordBuf, Route};
///
/// let rows = vec![
///     RecordBuf::new("a", "342132335566772", "01/50").with_se_number(Some("1234567890".into())),
///     RecordBuf::new("b", "4457010000000009", "01/50"),
///     RecordBuf::new("c", "3530111333300000", "01/50"), // JCB
/// ];
/// let events: Vec<PlanEvent> = plan(rows, PlanOptions::default()).collect();
/// assert!(matches!(&events[0], PlanEvent::Rejected(r) if r.reasons[0].code() == "unsupported_brand"));
/// assert!(matches!(&events[1], PlanEvent::Request(r) if r.route == Route::Batch));
/// assert!(matches!(&events[2], PlanEvent::Request(r) if r.route.se_number().is_some()));
/// ```
pub fn plan<I>(records: I, options: PlanOptions) -> Plan<I::IntoIter>
where
    I: IntoIterator,
    I::Item: AsRecord,
{
    Plan {
        records: records.into_iter(),
        planner: Planner::new(options),
        finished: false,
    }
}

/// The iterator returned by [`plan`].
pub struct Plan<I> {
    records: I,
    planner: Planner,
    finished: bool,
}

impl<I> fmt::Debug for Plan<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("planner", &self.planner)
            .finish_non_exhaustive()
    }
}

impl<I> Plan<I> {
    /// The planner inside, to read its row count or options.
    pub fn planner(&self) -> &Planner {
        &self.planner
    }
}

impl<I> Iterator for Plan<I>
where
    I: Iterator,
    I::Item: AsRecord,
{
    type Item = PlanEvent;

    fn next(&mut self) -> Option<PlanEvent> {
        loop {
            if let Some(request) = self.planner.poll_request() {
                return Some(PlanEvent::Request(request));
            }
            if self.finished {
                return None;
            }
            match self.records.next() {
                Some(item) => {
                    if let RowVerdict::Rejected(r) = self.planner.handle_record(item.as_record()) {
                        return Some(PlanEvent::Rejected(r));
                    }
                }
                None => {
                    self.finished = true;
                    self.planner.finish();
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
