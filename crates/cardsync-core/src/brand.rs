//! Card brands, the ranges of issuer identification numbers (IINs) they issue, and where
//! CardSync takes each brand's cards ([`RouteKind`], [`Brand::route`]).
//!
//! The ranges themselves are data (`data/iin-ranges.txt`, generated into
//! `generated/iin_table.rs`); finding the brand of a number is `iin.rs`'s.

use std::fmt;
use std::str::FromStr;

/// The card network that issued a card, found from the card number's leading digits.
///
/// CardSync updates Visa, Mastercard and Discover cards in batches and American Express cards
/// through subscriptions; the other brands are recognised so that they can be reported, not
/// sent.
///
/// ```
/// use cardsync_core::{Brand, Pan};
///
/// let pan = Pan::parse("4457010000000009")?;
/// assert_eq!(pan.brand(), Brand::Visa);
/// assert_eq!(Brand::Visa.as_str(), "visa");
/// assert_eq!("american_express".parse::<Brand>(), Ok(Brand::AmericanExpress));
/// # Ok::<(), cardsync_core::PanError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Brand {
    /// Visa: prefix 4.
    Visa,
    /// Mastercard: 51–55 and 2221–2720.
    Mastercard,
    /// American Express: 34 and 37, 15 digits.
    AmericanExpress,
    /// Discover: 6011, 644–649, 65 and 622126–622925.
    Discover,
    /// JCB: 3528–3589.
    Jcb,
    /// Diners Club: 300–305, 36, 38 and 39.
    DinersClub,
    /// UnionPay: 62 outside Discover's range.
    UnionPay,
    /// Mir: 2200–2204.
    Mir,
    /// No known brand issues numbers with this prefix.
    Unknown,
}

impl Brand {
    /// Every brand, `Unknown` last.
    pub const ALL: &'static [Brand] = &[
        Brand::Visa,
        Brand::Mastercard,
        Brand::AmericanExpress,
        Brand::Discover,
        Brand::Jcb,
        Brand::DinersClub,
        Brand::UnionPay,
        Brand::Mir,
        Brand::Unknown,
    ];

    /// The brand's stable lower-case snake_case name, as used in CardSync's `card_stats` and in
    /// cardsync's own output.
    ///
    /// ```
    /// assert_eq!(cardsync_core::Brand::DinersClub.as_str(), "diners_club");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::AmericanExpress => "american_express",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::DinersClub => "diners_club",
            Brand::UnionPay => "unionpay",
            Brand::Mir => "mir",
            Brand::Unknown => "unknown",
        }
    }

    /// Whether CardSync can update cards of this brand (Visa, Mastercard and Discover in batches,
    /// American Express through subscriptions).
    ///
    /// ```
    /// use cardsync_core::Brand;
    ///
    /// assert!(Brand::Discover.is_supported());
    /// assert!(!Brand::Jcb.is_supported());
    /// ```
    pub const fn is_supported(self) -> bool {
        self.route().is_some()
    }

    /// Where CardSync takes cards of this brand: Visa, Mastercard and Discover in batches,
    /// American Express in subscriptions; `None` for the brands it does not update. The one
    /// place this rule is written.
    ///
    /// ```
    /// use cardsync_core::{Brand, RouteKind};
    ///
    /// assert_eq!(Brand::Mastercard.route(), Some(RouteKind::Batch));
    /// assert_eq!(Brand::AmericanExpress.route(), Some(RouteKind::Subscription));
    /// assert_eq!(Brand::UnionPay.route(), None);
    /// ```
    pub const fn route(self) -> Option<RouteKind> {
        match self {
            Brand::Visa | Brand::Mastercard | Brand::Discover => Some(RouteKind::Batch),
            Brand::AmericanExpress => Some(RouteKind::Subscription),
            _ => None,
        }
    }
}

impl fmt::Display for Brand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The error returned when a brand name is not one of [`Brand::as_str`]'s names.
///
/// ```
/// assert!("visa-electron".parse::<cardsync_core::Brand>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownBrandName;

impl fmt::Display for UnknownBrandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown brand name")
    }
}

impl std::error::Error for UnknownBrandName {}

impl FromStr for Brand {
    type Err = UnknownBrandName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Brand::ALL
            .iter()
            .copied()
            .find(|b| b.as_str() == s)
            .ok_or(UnknownBrandName)
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

/// One range of six-digit IINs that a brand issues, with the card lengths it issues there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IinRange {
    /// First six-digit prefix of the range.
    pub(crate) first: u32,
    /// Last six-digit prefix of the range, inclusive.
    pub(crate) last: u32,
    /// The brand issuing it.
    pub(crate) brand: Brand,
    /// Bit `n` is set when the brand issues `n`-digit card numbers in this range.
    pub(crate) lengths: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in Brand::ALL {
            assert_eq!(b.as_str().parse::<Brand>(), Ok(*b));
            assert_eq!(b.to_string(), b.as_str());
        }
    }
}
