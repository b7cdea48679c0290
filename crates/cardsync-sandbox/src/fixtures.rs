//! Requests made of the documented sandbox test cards, for tests and demonstrations.

use cardsync_core::{Brand, Expiry, Pan, SANDBOX_TEST_CARDS, SeNumber};
use cardsync_proto::{BatchCard, CreateBatch, SubscriptionCard};

/// A batch of the 16 documented Visa, Mastercard and Discover test cards, in the documents'
/// order, with their documented expiry dates and the ids `c0` to `c15`.
///
/// ```
/// let batch = cardsync_sandbox::fixtures::documented_batch();
/// assert_eq!(batch.cards().len(), 16);
/// assert_eq!(batch.cards()[0].id, "c0");
/// ```
pub fn documented_batch() -> CreateBatch {
    let cards = SANDBOX_TEST_CARDS
        .iter()
        .filter(|c| c.brand != Brand::AmericanExpress)
        .enumerate()
        .map(|(i, c)| {
            let exp = c
                .exp
                .expect("the documents give every batch test card an expiry");
            BatchCard::new(
                format!("c{i}"),
                Pan::parse(c.card).expect("a documented test card"),
                Expiry::parse(exp).expect("a documented expiry"),
            )
        })
        .collect();
    CreateBatch::new(cards).expect("16 cards with ids")
}

/// The 3 documented American Express test cards, for a subscription under `se_number`, with the
/// ids `a0` to `a2` and the expiry the documents' example uses (12/28).
///
/// ```
/// let se = cardsync_core::SeNumber::parse("1234567890")?;
/// assert_eq!(cardsync_sandbox::fixtures::documented_subscription(&se).len(), 3);
/// # Ok::<(), cardsync_core::SeNumberError>(())
/// ```
pub fn documented_subscription(se_number: &SeNumber) -> Vec<SubscriptionCard> {
    SANDBOX_TEST_CARDS
        .iter()
        .filter(|c| c.brand == Brand::AmericanExpress)
        .enumerate()
        .map(|(i, c)| {
            SubscriptionCard::new(
                se_number.clone(),
                format!("a{i}"),
                Pan::parse(c.card).expect("a documented test card"),
                Expiry::new(2028, 12).expect("a valid expiry"),
            )
        })
        .collect()
}
