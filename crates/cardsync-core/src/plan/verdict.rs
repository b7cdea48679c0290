//! What becomes of a row: accepted, or rejected with every reason (stable codes).

use super::*;

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
