//! What becomes of a row: accepted, or rejected with every reason (stable codes), and what is
//! worth telling about it either way (warnings, stable codes too).

use super::*;

/// The longest id a row may have, in bytes (UTF-8): 10,000 cards with ids this long still make
/// a request of a few megabytes, well within what CardSync takes.
pub const MAX_ID_LEN: usize = 256;

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
    /// The id is longer than [`MAX_ID_LEN`] bytes: its request could grow too large for
    /// CardSync to take.
    IdTooLong {
        /// Its length, in bytes.
        len: usize,
    },
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
    /// `missing_id`, `id_too_long`, `duplicate_id`, `duplicate_card`, `unsupported_brand`,
    /// `amex_needs_se_number` and `se_number_format`.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::Card(e) => e.code(),
            RejectReason::Exp(e) => e.code(),
            RejectReason::MissingId => "missing_id",
            RejectReason::IdTooLong { .. } => "id_too_long",
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
            RejectReason::IdTooLong { len } => {
                write!(f, "id is {len} bytes long; at most {MAX_ID_LEN}")
            }
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

/// Something worth telling about a row that does not stop it from being planned. A row may
/// have several; [`RowWarnings`] holds them.
///
/// ```
/// use cardsync_core::RowWarning;
///
/// assert_eq!(RowWarning::IdCardNumber.code(), "id_card_number");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RowWarning {
    /// The id is, or holds, what looks like a card number: a run of twelve or more digits,
    /// grouped or not, as [`redact_digit_runs`](crate::redact_digit_runs) finds them. The row
    /// is still planned (the id is the merchant's own reference, and the card may need its
    /// update), but the id is masked wherever it is shown or written except the results file.
    IdCardNumber,
}

impl RowWarning {
    /// Every warning, in the order [`RowWarnings::iter`] gives them.
    pub const ALL: [RowWarning; 1] = [RowWarning::IdCardNumber];

    /// A stable snake_case code: `id_card_number`.
    pub fn code(self) -> &'static str {
        match self {
            RowWarning::IdCardNumber => "id_card_number",
        }
    }

    fn bit(self) -> u8 {
        match self {
            RowWarning::IdCardNumber => 1,
        }
    }
}

impl fmt::Display for RowWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowWarning::IdCardNumber => {
                f.write_str("the id looks like a card number; it is shown masked")
            }
        }
    }
}

/// The warnings of one row: a small set of [`RowWarning`]s (usually empty).
///
/// ```
/// use cardsync_core::{Planner, PlanOptions, Record, RowVerdict, RowWarning};
///
/// let mut planner = Planner::new(PlanOptions::default());
/// let verdict = planner.handle_record(Record::new("4532 0151 1283 0366", "4457010000000009", "01/50"));
/// let RowVerdict::Accepted(row) = verdict else { panic!("planned all the same") };
/// assert!(row.warnings.contains(RowWarning::IdCardNumber));
/// assert_eq!(row.warnings.iter().map(RowWarning::code).collect::<Vec<_>>(), ["id_card_number"]);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RowWarnings(u8);

impl RowWarnings {
    /// No warnings.
    pub const NONE: RowWarnings = RowWarnings(0);

    /// Whether there are none.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `warning` is one of them.
    pub fn contains(self, warning: RowWarning) -> bool {
        self.0 & warning.bit() != 0
    }

    /// Adds `warning`.
    pub fn insert(&mut self, warning: RowWarning) {
        self.0 |= warning.bit();
    }

    /// The warnings, in the order of [`RowWarning::ALL`].
    pub fn iter(self) -> impl Iterator<Item = RowWarning> {
        RowWarning::ALL
            .into_iter()
            .filter(move |w| self.contains(*w))
    }

    /// The warnings `id` alone calls for (see [`RowWarning::IdCardNumber`]).
    ///
    /// ```
    /// use cardsync_core::{RowWarning, RowWarnings};
    ///
    /// assert!(RowWarnings::of_id("cust-4532-0151-1283-0366").contains(RowWarning::IdCardNumber));
    /// assert!(RowWarnings::of_id("order 2024-0042").is_empty());
    /// ```
    pub fn of_id(id: &str) -> RowWarnings {
        let mut warnings = RowWarnings::NONE;
        if matches!(crate::redact_digit_runs(id), std::borrow::Cow::Owned(_)) {
            warnings.insert(RowWarning::IdCardNumber);
        }
        warnings
    }
}

impl fmt::Debug for RowWarnings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
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
    /// What is worth telling about the row (it was planned all the same).
    pub warnings: RowWarnings,
}

/// A row that was rejected, with every reason found. `Debug` masks anything in the id that
/// looks like a card number.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectedRow {
    /// 1-based record number.
    pub row: u64,
    /// The id as given (possibly empty). Show it through
    /// [`redact_digit_runs`](crate::redact_digit_runs): it may hold a card number.
    pub id: String,
    /// Whatever digits the card field held, masked.
    pub card: PanFragment,
    /// The card's brand, when the number is valid.
    pub brand: Option<Brand>,
    /// The reasons, at least one.
    pub reasons: Vec<RejectReason>,
    /// What else is worth telling about the row.
    pub warnings: RowWarnings,
}

impl fmt::Debug for RejectedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectedRow")
            .field("row", &self.row)
            .field("id", &crate::redact_digit_runs(&self.id))
            .field("card", &self.card)
            .field("brand", &self.brand)
            .field("reasons", &self.reasons)
            .field("warnings", &self.warnings)
            .finish()
    }
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
