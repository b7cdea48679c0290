//! The server side of the wire format: everything a server (the local emulator, or a test
//! double of one's own) needs to answer CardSync's clients exactly as the documents show, and
//! to read what they send.
//!
//! - Responses: [`success`] and [`failure`] envelopes, and one encoder per decoded type
//!   ([`batch_created`], [`batch_info`], [`results`], [`merchant_enrolled`],
//!   [`merchant_status`], [`ack`]).
//! - Webhooks: [`webhook`], for every trigger.
//! - Requests: [`decode_cards_body`](crate::decode_cards_body) for the card bodies,
//!   [`decode_webhooks_body`], [`decode_webhook_body`] and [`decode_merchant_enrollment`], and
//!   [`query_value`] for the query parameters.
//!
//! - The issuer side: [`crate::issuer::feed::decode_update_cards_body`] and
//!   [`crate::issuer::feed::accepted_body`], [`crate::issuer::platform::decode_card_edits`] and
//!   [`crate::issuer::platform::card_body`].
//!
//! Every encoder writes either of the documents' spellings ([`Spelling`]): the Universal
//! document's, or the American Express edition's (`msg`, `contact_closed`, `trigger_id` as a
//! string, and the repeated closed counter of the webhook examples). Keys come in the order
//! the documents print them. Whatever is encoded here decodes back to the same value through
//! the client side (`decode(encode(x)) == x`), which the tests check for every type and the
//! `roundtrip` fuzz target checks for any input the client side accepts.
//!
//! ```
//! use cardsync_core::UpdateStatus;
//! use cardsync_proto::server::{self, Spelling};
//! use cardsync_proto::{BatchState, Endpoint, GetBatchResults, ResultCard, Results, ReturnedCard};
//!
//! let mut results = Results::new(BatchState::Completed);
//! results.cards.push(ResultCard::new("sub-1", ReturnedCard::new("4457010000000009"), "01/53", UpdateStatus::Closed));
//! let body = server::results(&results, Spelling::Amex);
//! assert!(body.starts_with(br#"{"status":"success","msg":"success","data":{"status":"completed""#));
//!
//! let answer = server::respond(http::StatusCode::OK, body);
//! assert_eq!(GetBatchResults::decode(&answer)?, results);
//! # Ok::<(), cardsync_proto::DecodeError>(())
//! ```

mod requests;
mod responses;
mod webhooks;

pub use requests::{
    RequestError, decode_merchant_enrollment, decode_webhook_body, decode_webhooks_body,
    query_value,
};
pub use responses::{
    ack, batch_created, batch_info, failure, merchant_enrolled, merchant_status, respond, results,
    success,
};
pub use webhooks::webhook;

/// Which of the documents' spellings an answer uses.
///
/// ```
/// use cardsync_proto::server::Spelling;
/// assert_eq!(Spelling::Universal.message_key(), "message");
/// assert_eq!(Spelling::Amex.closed_key(), "contact_closed");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Spelling {
    /// The Universal document's: `message`, `closed`, numeric `trigger_id`.
    #[default]
    Universal,
    /// The American Express edition's: `msg`, `contact_closed`, and the quirks of the
    /// documents' webhook examples (`trigger_id` as a string, the closed counter twice).
    Amex,
}

impl Spelling {
    /// The key of the envelope's message.
    pub fn message_key(self) -> &'static str {
        match self {
            Spelling::Universal => "message",
            Spelling::Amex => "msg",
        }
    }

    /// The key of the closed-accounts counter, and the word of the closed status.
    pub fn closed_key(self) -> &'static str {
        match self {
            Spelling::Universal => "closed",
            Spelling::Amex => "contact_closed",
        }
    }
}
