//! Every path of the CardSync API and of the issuer side, written once: the endpoints build
//! their requests with them, and a server (the emulator, anyone's test double) routes by them.
//! No other crate writes a path of its own.
//!
//! The constants are `&str`s, so they can be `match` patterns:
//!
//! ```
//! use cardsync_proto::{Endpoint, GetBatchResults, paths};
//!
//! assert_eq!(GetBatchResults::PATH, paths::BATCH_RESULTS);
//! let handler = |path: &str| match path {
//!     paths::BATCH => "batch",
//!     paths::BATCH_RESULTS => "results",
//!     _ => "not found",
//! };
//! assert_eq!(handler("/v2/batch/results"), "results");
//! ```

/// The start of every CardSync API path (version 2).
pub const API_PREFIX: &str = "/v2/";

/// `POST /v2/batch` creates a batch ([`crate::CreateBatch`]); `GET /v2/batch?batch_id=` reads
/// its status ([`crate::GetBatch`]).
pub const BATCH: &str = "/v2/batch";

/// `GET /v2/batch/results?batch_id=`: a batch's results ([`crate::GetBatchResults`]).
pub const BATCH_RESULTS: &str = "/v2/batch/results";

/// `POST /v2/subscribe` and `DELETE /v2/subscribe`: American Express subscriptions
/// ([`crate::Subscribe`], [`crate::Unsubscribe`]).
pub const SUBSCRIBE: &str = "/v2/subscribe";

/// `GET /v2/subscription/results?event_id=`: the updates of an American Express update event
/// ([`crate::GetSubscriptionResults`]).
pub const SUBSCRIPTION_RESULTS: &str = "/v2/subscription/results";

/// `POST /v2/merchant` enrolls a merchant ([`crate::EnrollMerchant`]); `GET
/// /v2/merchant?merchant_id=` reads its enrollment ([`crate::GetMerchant`]).
pub const MERCHANT: &str = "/v2/merchant";

/// `POST /v2/webhooks`: registers webhook URLs by trigger ([`crate::SetWebhooks`],
/// [`crate::SetWebhooksFlat`]).
pub const WEBHOOKS: &str = "/v2/webhooks";

/// `POST /v2/webhook`: the American Express edition's registration of the update webhook
/// ([`crate::SetAmexWebhook`]).
pub const WEBHOOK: &str = "/v2/webhook";

/// An issuing platform's base path where the emulator serves it: the platform's base URL is
/// the emulator's followed by it (`http://127.0.0.1:PORT/v1`), as a real platform's ends with
/// it (`https://api.synctera.com/v1`).
pub const PLATFORM_BASE: &str = "/v1";

/// `PATCH …/cards/{card_id}`, an issuing platform's card status change
/// ([`crate::issuer::platform::UpdateCard`]), from the platform's base URL: the path before
/// the card id.
pub const PLATFORM_CARD: &str = "/cards/";

/// The same path from the root of a server that serves the platform at [`PLATFORM_BASE`] (the
/// emulator): `PATCH /v1/cards/{card_id}`, before the card id.
pub const PLATFORM_CARD_AT_ROOT: &str = "/v1/cards/";

/// `PUT /v2/data/customers/{sourceCustomerId}/accounts/{sourceAccountId}/cards`, an issuer's
/// feed ([`crate::issuer::feed::UpdateCards`]): the path before the customer id.
pub const FEED_CUSTOMERS: &str = "/v2/data/customers/";

/// The issuer feed's path between the customer id and the account id.
pub const FEED_ACCOUNTS: &str = "/accounts/";

/// The issuer feed's path after the account id.
pub const FEED_CARDS: &str = "/cards";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_path_from_the_root_is_its_base_then_its_path() {
        assert_eq!(
            PLATFORM_CARD_AT_ROOT,
            format!("{PLATFORM_BASE}{PLATFORM_CARD}")
        );
    }

    #[test]
    fn every_api_path_starts_with_the_prefix() {
        for path in [
            BATCH,
            BATCH_RESULTS,
            SUBSCRIBE,
            SUBSCRIPTION_RESULTS,
            MERCHANT,
            WEBHOOKS,
            WEBHOOK,
            FEED_CUSTOMERS,
        ] {
            assert!(path.starts_with(API_PREFIX), "{path}");
        }
    }
}
