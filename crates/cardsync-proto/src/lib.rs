//! Every CardSync Account Updater request, response and webhook, encoded to and decoded from
//! `http` types.
//!
//! This crate does no I/O. It opens no sockets, starts no runtime, reads no clock and sleeps
//! nowhere: it builds `http::Request<Vec<u8>>` values and reads `http::Response<Vec<u8>>`
//! values, and says whether a failed call should be retried and after how long. Any HTTP client
//! carries the bytes, through the one-method [`transport::Transport`] (or
//! [`transport::BlockingTransport`]) trait; `cardsync-hyper` is one.
//!
//! It follows the CardSync documents to the letter where they agree, and where they contradict
//! themselves it encodes exactly what is documented and decodes every documented variant:
//! `message` or `msg`, `closed` or `contact_closed`, `trigger_id` as a number or a string, `se`
//! or `se_number`, repeated keys, unknown fields and statuses (kept, not rejected), result
//! cards without a status, and returned card numbers that fail the Luhn check.
//!
//! The issuer side of the documents (an issuer's feed of card changes, an issuing platform's
//! card status change) is in [`issuer`], in the same style.
//!
//! Card numbers stay safe: requests take [`cardsync_core::Pan`]s, returned numbers are
//! [`ReturnedCard`]s (masked in `Debug`, zeroed on drop), and errors never hold a body.
//!
//! ```
//! use cardsync_core::{Expiry, Pan};
//! use cardsync_proto::{BaseUrl, BatchCard, Config, CreateBatch, Endpoint, MerchantKey};
//!
//! let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("api_key")?);
//! let batch = CreateBatch::new(vec![BatchCard::new(
//!     "sub-42",
//!     Pan::parse("4457010000000009")?,
//!     Expiry::parse("01/50")?,
//! )])?;
//!
//! // Encode: a complete request for any HTTP client.
//! let request = batch.encode(&config)?;
//! assert_eq!(request.method(), "POST");
//! assert_eq!(request.uri(), "https://sandbox.cardsync.io/v2/batch");
//! assert_eq!(
//!     request.body().as_slice(),
//!     br#"{"cards":[{"id":"sub-42","card":"4457010000000009","exp":"01/50"}]}"#
//! );
//!
//! // Decode: whatever came back.
//! let response = http::Response::builder()
//!     .header("content-type", "application/json; charset=utf-8")
//!     .body(br#"{"status":"success","msg":"success","data":{"batch_id":"b1","status":"pending"}}"#.to_vec())?;
//! let created = CreateBatch::decode(&response)?;
//! assert_eq!(created.batch_id, "b1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

mod config;
mod endpoints;
mod error;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod issuer;
mod lenient;
mod merchant;
mod model;
pub mod paths;
pub mod retry;
mod scan;
mod scope;
pub mod server;
pub mod transport;
mod webhook;
pub mod webhook_url;

pub use config::{
    BaseUrl, Config, InvalidApiKey, InvalidBaseUrl, IssuerToken, MerchantKey, PartnerKey,
};
pub use endpoints::{
    BatchCard, CreateBatch, Endpoint, EnrollMerchant, GetBatch, GetBatchResults, GetMerchant,
    GetSubscriptionResults, Idempotency, SetAmexWebhook, SetWebhooks, SetWebhooksFlat,
    SubmittedCard, Subscribe, SubscriptionCard, Unsubscribe, build, decode_cards_body,
};
pub use error::{DecodeError, EncodeError, JsonError, JsonErrorKind, MAX_MESSAGE_LEN, Violation};
pub use merchant::{CardInfo, MerchantEnrollment, MerchantUser, PrimaryContact};
pub use model::{
    Ack, BatchCreated, BatchInfo, BatchState, CardStats, MerchantEnrolled, MerchantStatus,
    ReportedStats, ResultCard, Results, ReturnedCard,
};
pub use scope::KeyScope;
pub use transport::MAX_RESPONSE_BODY;
pub use webhook::{
    AmexUpdate, BatchAvailable, BatchError, EnrollmentComplete, Trigger, UnknownEvent,
    WebhookError, WebhookEvent, decode_webhook,
};
