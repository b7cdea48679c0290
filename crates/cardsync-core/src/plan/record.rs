//! Input records: borrowed (`Record`) and owned (`RecordBuf`).

use super::*;

/// One input row: an id chosen by the merchant, the card number and expiry as text, and the SE
/// number for an American Express card. `Debug` masks the card, and anything that looks like a
/// card number in the other fields.
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
        // Every field but the card is free text, and may hold a card number typed in the
        // wrong column.
        let redact = crate::redact_digit_runs;
        f.debug_struct("Record")
            .field("id", &redact(self.id))
            .field("card", &mask_card_text(self.card))
            .field("exp", &redact(self.exp))
            .field("se_number", &self.se_number.map(redact))
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
