//! A stateful local emulator of the CardSync Account Updater API.
//!
//! It keeps batches, subscriptions, merchants and webhook registrations in memory, completes
//! batches after a configurable delay, answers the documented sandbox test cards with their
//! documented results, and sends webhooks. [`Emulator`] is the behaviour with no I/O; the
//! server around it listens on a socket and delivers webhooks.
//!
//! Results for the documented test cards follow the table of the documents. `updated_card`
//! results carry [`replacement_card`] (same first six digits, so the same brand; every digit
//! between them and the check digit moved up by one; a new check digit) and an expiry three
//! years later ([`replacement_expiry`]); `updated_expiry` results carry the same number and that
//! later expiry. Any other valid card gets no result row and counts as `no_change`, as the
//! documents say happens.
//!
//! # Defaults
//!
//! The partner master key is `sandbox_master_key`; one merchant, `sandbox_merchant`, is enrolled
//! from the start with the key `sandbox_merchant_key`. Batches, enrollments and American Express
//! updates take two seconds ([`Settings::complete_after`]). Results are purged ten days after
//! completion on the emulator clock.
//!
//! # Behaviour the documents leave open
//!
//! - Errors answer `{"status":"failed","message":"…"}` (`msg` with quirks): 400 for malformed
//!   requests, 401 for a missing or unknown key, 403 for the wrong key scope, 404 for unknown
//!   paths and ids (and purged ones), 405 for a wrong method, 409 for duplicate enrollments and
//!   for results asked for before a batch completed (or of a batch that failed), 413 for bodies
//!   over 16 MiB.
//! - Card problems in a batch (Luhn, a brand other than Visa, Mastercard or Discover, a bad
//!   expiry, a missing id) are found on the first tick after creation: the batch goes to
//!   `error` and webhook 22 fires. Subscription requests are checked at once (the documents
//!   describe no asynchronous validation for them).
//! - Webhooks go to the merchant's registration for the trigger, else the partner's. They are
//!   sent over plain HTTP, five attempts at most, 100 ms apart doubling to 2 s.
//!
//! # Control endpoints
//!
//! Under `/_sandbox/`, with no key:
//!
//! | request | what it does |
//! |---|---|
//! | `GET /_sandbox/clock` | the emulator time and how far it was advanced, in milliseconds |
//! | `POST /_sandbox/clock/advance` `{"seconds": N}` | moves the emulator clock forward, firing whatever falls due |
//! | `GET /_sandbox/deliveries` | the webhook delivery log: id, trigger, event, URL, attempts, state, last status or error |
//! | `GET /_sandbox/counters` | per endpoint: requests, cards received, distinct cards, repeats |
//! | `GET`, `POST`, `DELETE /_sandbox/faults` | read, set or clear fault injection ([`Faults`]): a share of answers replaced by error statuses (with `Retry-After`), before or after the request is handled; added latency; connections dropped mid-body |
//!
//! # Quirks
//!
//! With [`Settings::quirks`], answers use the documents' other spellings: `msg` for `message`,
//! `contact_closed` for `closed` (in statuses and stats), `trigger_id` as a string, and webhook
//! stats with a repeated `closed` key (zero first), so that clients can be tested against them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod emulator;
pub mod fixtures;
mod server;

pub use emulator::{
    BatchOverview, Emulator, EndpointCounts, MAX_REQUEST_BODY, Outgoing, RESULTS_KEPT_FOR,
    Settings, replacement_card, replacement_expiry,
};
pub use server::{Delivery, FaultTiming, Faults, Sandbox};
