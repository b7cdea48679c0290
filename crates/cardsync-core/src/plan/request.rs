//! Where accepted cards go: routes, and the requests the planner releases.

use super::*;

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

/// A card accepted into a request. `Debug` masks the card, and anything in the id that looks
/// like a card number.
#[derive(Clone, PartialEq, Eq)]
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

impl fmt::Debug for PlannedCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlannedCard")
            .field("row", &self.row)
            .field("id", &crate::redact_digit_runs(&self.id))
            .field("pan", &self.pan)
            .field("exp", &self.exp)
            .finish()
    }
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
