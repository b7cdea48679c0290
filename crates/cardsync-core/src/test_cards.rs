//! The sandbox test cards that the CardSync documents list, with the result each one gives.
//!
//! The table is generated from `data/sandbox-test-cards.csv` by `cargo xtask codegen`.

pub use crate::generated::sandbox_cards::SANDBOX_TEST_CARDS;
use crate::{Brand, UpdateStatus};

/// A documented sandbox test card. These numbers are public test data, so they are plain
/// strings.
///
/// ```
/// use cardsync_core::{Brand, SANDBOX_TEST_CARDS, UpdateStatus};
///
/// let first = &SANDBOX_TEST_CARDS[0];
/// assert_eq!((first.brand, first.card, first.exp), (Brand::Visa, "4457010000000009", Some("01/50")));
/// assert_eq!(first.result, UpdateStatus::UpdatedCard);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TestCard {
    /// The brand the documents give.
    pub brand: Brand,
    /// The card number.
    pub card: &'static str,
    /// The expiry date the documents give; `None` where they say any date will do (Amex).
    pub exp: Option<&'static str>,
    /// The result the sandbox returns for it.
    pub result: UpdateStatus,
}

/// The documented test card with this number, if there is one.
///
/// ```
/// use cardsync_core::{test_card, UpdateStatus};
///
/// assert_eq!(test_card("349900006577234").map(|c| &c.result), Some(&UpdateStatus::Closed));
/// assert!(test_card("4111111111111111").is_none());
/// ```
pub fn test_card(card: &str) -> Option<&'static TestCard> {
    SANDBOX_TEST_CARDS.iter().find(|c| c.card == card)
}
