//! The result statuses CardSync reports for a card.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// What the card networks said about a card.
///
/// Decoding is lossless and never fails: the documented words map to their variants (`closed`
/// and the Amex edition's `contact_closed` both to [`UpdateStatus::Closed`]), and any other text
/// is kept in [`UpdateStatus::Unknown`].
///
/// ```
/// use cardsync_core::UpdateStatus;
///
/// assert_eq!(UpdateStatus::parse("updated_card"), UpdateStatus::UpdatedCard);
/// assert_eq!(UpdateStatus::parse("contact_closed"), UpdateStatus::Closed);
/// assert_eq!(UpdateStatus::Closed.as_str(), "closed");
///
/// let new = UpdateStatus::parse("card_replaced");
/// assert_eq!(new, UpdateStatus::Unknown("card_replaced".to_owned()));
/// assert_eq!(new.as_str(), "card_replaced");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum UpdateStatus {
    /// The card was reissued with a new number (and possibly a new expiry).
    UpdatedCard,
    /// The card has a new expiry date.
    UpdatedExpiry,
    /// The issuer does not take part in the updater, or the card is not known to it.
    NoMatch,
    /// The card on file is current.
    Valid,
    /// The cardholder should be contacted: the issuer will not share the update.
    Contact,
    /// The account is closed (`closed`, or `contact_closed` in the Amex edition).
    Closed,
    /// Nothing changed (a stats counter in the documents; accepted as a status too).
    NoChange,
    /// A status the documents do not describe, kept as it was received.
    Unknown(String),
}

impl UpdateStatus {
    /// The documented statuses, each under its canonical name.
    pub const KNOWN: &'static [UpdateStatus] = &[
        UpdateStatus::UpdatedCard,
        UpdateStatus::UpdatedExpiry,
        UpdateStatus::NoMatch,
        UpdateStatus::Valid,
        UpdateStatus::Contact,
        UpdateStatus::Closed,
        UpdateStatus::NoChange,
    ];

    /// Reads a status word. Never fails: unknown words become [`UpdateStatus::Unknown`].
    pub fn parse(s: &str) -> UpdateStatus {
        match s {
            "updated_card" => UpdateStatus::UpdatedCard,
            "updated_expiry" => UpdateStatus::UpdatedExpiry,
            "no_match" => UpdateStatus::NoMatch,
            "valid" => UpdateStatus::Valid,
            "contact" => UpdateStatus::Contact,
            "closed" | "contact_closed" => UpdateStatus::Closed,
            "no_change" => UpdateStatus::NoChange,
            other => UpdateStatus::Unknown(other.to_owned()),
        }
    }

    /// The canonical word for the status, or the received text for an unknown one.
    ///
    /// ```
    /// assert_eq!(cardsync_core::UpdateStatus::NoMatch.as_str(), "no_match");
    /// ```
    pub fn as_str(&self) -> &str {
        match self {
            UpdateStatus::UpdatedCard => "updated_card",
            UpdateStatus::UpdatedExpiry => "updated_expiry",
            UpdateStatus::NoMatch => "no_match",
            UpdateStatus::Valid => "valid",
            UpdateStatus::Contact => "contact",
            UpdateStatus::Closed => "closed",
            UpdateStatus::NoChange => "no_change",
            UpdateStatus::Unknown(s) => s,
        }
    }

    /// Whether the result carries new card data (a new number or a new expiry) that the card on
    /// file should be updated with.
    ///
    /// ```
    /// use cardsync_core::UpdateStatus;
    ///
    /// assert!(UpdateStatus::UpdatedExpiry.has_update());
    /// assert!(!UpdateStatus::Closed.has_update());
    /// ```
    pub fn has_update(&self) -> bool {
        matches!(
            self,
            UpdateStatus::UpdatedCard | UpdateStatus::UpdatedExpiry
        )
    }
}

impl fmt::Display for UpdateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for UpdateStatus {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(UpdateStatus::parse(s))
    }
}

impl From<&str> for UpdateStatus {
    fn from(s: &str) -> Self {
        UpdateStatus::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_statuses_round_trip() {
        for status in UpdateStatus::KNOWN {
            assert_eq!(UpdateStatus::parse(status.as_str()), *status);
        }
    }

    #[test]
    fn unknown_text_is_kept_exactly() {
        for s in ["", "Closed", " valid", "unknown", "contact-closed"] {
            let status = UpdateStatus::parse(s);
            assert_eq!(status, UpdateStatus::Unknown(s.to_owned()));
            assert_eq!(status.as_str(), s);
        }
    }
}
