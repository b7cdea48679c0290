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
//!   sent over plain HTTP, five attempts at most, 100 ms apart doubling to 2 s, and only to
//!   loopback addresses, `localhost` and the hosts of [`Settings::webhook_hosts`] (a webhook
//!   for another host fails at once, saying why).
//!
//! # Who it answers
//!
//! The server answers only requests addressed (`Host`) to a loopback name (`127.0.0.1` and
//! the rest of `127.0.0.0/8`, `[::1]`, `[::ffff:127.0.0.1]`, `localhost`, `*.localhost`, any
//! port) or to a name of [`Settings::allowed_hosts`], on every path, the API included; any
//! other gets 403 before anything is read. A page of another site whose name is made to
//! resolve to 127.0.0.1 (DNS rebinding) thus cannot use the public default keys to read card
//! numbers or register webhooks.
//!
//! On an address that is not loopback (where other machines reach it), or with
//! [`Settings::exposed`], every control request, reads included, and the dashboard's page need
//! the run's token ([`Sandbox::control_token`], in `x-cardsync-sandbox-token` or as
//! `Authorization: Bearer TOKEN`; 401 without it), and [`Sandbox::start`] refuses the public
//! default keys and issuer token.
//!
//! # Control endpoints
//!
//! Under `/_sandbox/`, with no API key (with the run's token where the emulator can be reached
//! from other machines, see above):
//!
//! | request | what it does |
//! |---|---|
//! | `GET /_sandbox/clock` | the emulator time and how far it was advanced, in milliseconds |
//! | `POST /_sandbox/clock/advance` `{"seconds": N}` | moves the emulator clock forward, firing whatever falls due |
//! | `GET /_sandbox/deliveries` | the webhook delivery log: id, trigger, event, URL (masked: no secret path), attempts, state, last status or error |
//! | `GET /_sandbox/counters` | per endpoint: requests, cards received, distinct cards, repeats |
//! | `POST /_sandbox/issuer/cards` `{"card": …, "exp": "MM/YY"}` | registers a card with the issuing platform; answers its `card_id`, `bin`, `last_four` |
//! | `GET`, `POST`, `DELETE /_sandbox/faults` | read, set or clear fault injection ([`Faults`]): a share of answers replaced by error statuses (with `Retry-After`), before or after the request is handled; added latency; connections dropped mid-body |
//! | `POST /_sandbox/issuer/cards/{card_id}/status` `{"card_status": …, "reason": …}` | changes a platform card's status as `PATCH /v1/cards/{card_id}` does, without the issuer token; answers the card as the overview shows it |
//! | `GET /_sandbox/overview` | everything the dashboard shows, masked ([`overview::Overview`], the clock, the deliveries with every attempt, the request log, the faults) |
//!
//! # The dashboard
//!
//! `GET /` serves a page (HTML, CSS and a small script compiled into the crate) that polls
//! `GET /_sandbox/overview` and steers through the endpoints above: batches and their masked
//! results, webhook deliveries with each attempt, the request log ([`Sandbox::requests`]) with
//! its injected faults, the counters, merchants and webhook registrations, American Express
//! subscriptions and events, the issuer cards; clock, faults and issuer events from forms.
//! A control request that comes from a browser (with an `Origin` or `Sec-Fetch-Site` header)
//! must carry the page's per-run token in `x-cardsync-sandbox-token` to change anything: another
//! site open in the same browser can neither steer the emulator nor read the page. On loopback,
//! other clients are not asked for the token; where other machines reach the emulator, every
//! client is, and the page is at [`Sandbox::dashboard_url`] (`/?token=TOKEN`).
//!
//! # The issuer side: the card network in a box
//!
//! The emulator also plays the issuers: an issuing platform (`PATCH /v1/cards/{card_id}`,
//! base URL `<sandbox>/v1`, `Authorization: Bearer sandbox_issuer_token`, an
//! `Idempotency-Key` honoured: the same key and body answer the first answer again, the same
//! key with another body is refused with 422) and an issuer feed (`PUT
//! /v2/data/customers/{sourceCustomerId}/accounts/{sourceAccountId}/cards`, same token).
//! Cards are registered with the platform by `POST /_sandbox/issuer/cards` `{"card": …,
//! "exp": "MM/YY"}` (answering the platform's card id) or [`Sandbox::register_issuer_card`].
//! What an issuer event means for merchants holding the card, in batch results created after
//! it and as an American Express update (trigger 23) for subscribed cards:
//!
//! | issuer event | what merchants holding the old card get |
//! |---|---|
//! | PATCH `TERMINATED` with `LOS`, `STO`, `CLO`, `COM` or `FRD` | reissued (new number, same first six digits, new expiry; `reissued_to_id` / `reissued_from_id` linked): `updated_card` |
//! | PATCH `TERMINATED` with `EXP` | renewed, same number: `updated_expiry` |
//! | PATCH `TERMINATED` with any other reason | `closed` |
//! | PATCH `SUSPENDED`, or back to `ACTIVE` | nothing (temporary) |
//! | feed: card set `CLOSED` | `closed`, for merchant cards with that IIN and last four digits |
//! | feed: card set `CLOSED` and an `OPEN` card on the same account | `contact` (the feed never carries the new number) |
//!
//! These are the networks' own outcomes (Visa Account Updater's new number, new expiry,
//! closed account and contact-the-cardholder records). `TERMINATED` is final (422 after).
//! Errors: 401 without the token, 404 for an unknown card id, 400 naming the field for bad
//! values (enum words, a memo over 255 characters, an emboss line over 21 characters or with
//! other characters, `CLOSED` without `closeDate`, a `last4` that is not four digits); the
//! feed's documented 500 by fault injection (`paths` naming the feed's path). The documented
//! sandbox test cards keep their documented results.
//!
//! # Quirks
//!
//! With [`Settings::quirks`], answers use the documents' other spellings: `msg` for `message`,
//! `contact_closed` for `closed` (in statuses and stats), `trigger_id` as a string, and webhook
//! stats with a repeated `closed` key (zero first), so that clients can be tested against them.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod access;
mod dashboard;
mod emulator;
pub mod fixtures;
mod network;
pub mod overview;
mod replacement;
mod server;

pub use emulator::{
    BatchOverview, Emulator, MAX_REQUEST_BODY, Outgoing, RESULTS_KEPT_FOR, Settings,
};
pub use overview::EndpointCounts;
pub use replacement::{replacement_card, replacement_expiry};
pub use server::{
    Delivery, DeliveryAttempt, FaultTiming, Faults, REQUEST_LOG, RequestRecord, Sandbox,
};
