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
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod emulator;

pub use emulator::{
    Emulator, MAX_REQUEST_BODY, Outgoing, RESULTS_KEPT_FOR, Settings, replacement_card,
    replacement_expiry,
};
