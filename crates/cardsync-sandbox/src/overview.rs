//! What the emulator holds, as the dashboard shows it: merchants and their webhook
//! registrations, batches with their results, American Express subscriptions and update events,
//! the issuing platform's cards and what merchants get for each, and the counters.
//!
//! Every card number is masked (first six, last four digits at most), every id and name that
//! could carry digits of one has its long digit runs masked, and no key appears: an overview
//! can be shown, logged or sent to a browser as it is.

use std::collections::BTreeMap;

use cardsync_core::redact_digit_runs;
use cardsync_proto::ResultCard;
use serde::Serialize;

/// How many of the newest batches an overview lists.
pub const OVERVIEW_BATCHES: usize = 100;
/// How many result rows an overview lists per batch or update event.
pub const OVERVIEW_ROWS: usize = 100;
/// How many subscriptions, update events and issuer cards an overview lists.
pub const OVERVIEW_ITEMS: usize = 200;

/// The emulator's state, masked. Times are on the emulator clock: `*_ms` fields count
/// milliseconds since the emulator started (the clock that `POST /_sandbox/clock/advance`
/// moves), `*_at` fields are the same instants as timestamps.
///
/// ```
/// use cardsync_sandbox::{Emulator, Settings};
/// use std::time::{Duration, SystemTime};
///
/// let emulator = Emulator::new(Settings::default(), SystemTime::now());
/// let overview = emulator.overview(Duration::from_secs(5));
/// assert_eq!(overview.now_ms, 5_000);
/// assert_eq!(overview.merchants[0].merchant_id, "sandbox_merchant");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Overview {
    /// The emulator clock, in milliseconds since it started.
    pub now_ms: u64,
    /// The emulator clock as a timestamp.
    pub now_at: String,
    /// Merchants, by id.
    pub merchants: Vec<MerchantView>,
    /// The partner's webhook registrations (used for merchants without their own).
    pub partner_webhooks: Vec<WebhookView>,
    /// The newest batches, newest first (at most [`OVERVIEW_BATCHES`]).
    pub batches: Vec<BatchView>,
    /// How many batches the emulator holds.
    pub batches_total: usize,
    /// American Express subscriptions (at most [`OVERVIEW_ITEMS`] of them, by merchant and id).
    pub subscriptions: Vec<SubscriptionView>,
    /// How many subscriptions the emulator holds.
    pub subscriptions_total: usize,
    /// American Express update events, newest first (at most [`OVERVIEW_ITEMS`]).
    pub amex_events: Vec<AmexEventView>,
    /// American Express updates waiting for their time: (merchant, due, cards).
    pub amex_pending: Vec<AmexPendingView>,
    /// The issuing platform's cards, in the order they were registered or reissued (at most
    /// [`OVERVIEW_ITEMS`]).
    pub issuer_cards: Vec<IssuerCardView>,
    /// What each endpoint received, by `METHOD /path`.
    pub counters: BTreeMap<String, EndpointCounts>,
}

/// A merchant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MerchantView {
    /// Its id.
    pub merchant_id: String,
    /// Its legal business name.
    pub legal_business_name: String,
    /// Its username.
    pub username: String,
    /// `complete`, or `pending` while the enrollment runs.
    pub enrollment: &'static str,
    /// Its webhook registrations.
    pub webhooks: Vec<WebhookView>,
}

/// One webhook registration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WebhookView {
    /// The trigger id (20 to 23).
    pub trigger_id: u32,
    /// What the trigger means.
    pub trigger: &'static str,
    /// Where its events go.
    pub url: String,
}

/// A batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BatchView {
    /// Its id.
    pub batch_id: String,
    /// Whose batch it is.
    pub merchant_id: String,
    /// `pending`, `completed` or `error` (or the state's own word).
    pub state: String,
    /// Cards submitted.
    pub cards: u64,
    /// Cards per brand (`visa`, `mastercard`, `discover`, `american_express`).
    pub brands: BTreeMap<&'static str, u64>,
    /// Cards that failed validation.
    pub errors: u64,
    /// When it was created.
    pub created_ms: u64,
    /// When it was created, as a timestamp.
    pub created_at: String,
    /// When it completes (or completed) on the emulator clock.
    pub completes_ms: u64,
    /// When it completed or failed, if it has.
    pub completed_ms: Option<u64>,
    /// Result counts by status, once complete.
    pub stats: BTreeMap<String, u64>,
    /// Its result rows, once complete (at most [`OVERVIEW_ROWS`]).
    pub results: Vec<ResultView>,
    /// How many result rows it has.
    pub results_total: usize,
}

/// One result row, masked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ResultView {
    /// The merchant's id for the card (long digit runs masked).
    pub id: String,
    /// The card number returned, masked.
    pub card: String,
    /// The expiry returned.
    pub exp: Option<String>,
    /// The status.
    pub status: Option<String>,
    /// The SE number, for American Express rows.
    pub se_number: Option<String>,
}

/// One American Express subscription.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SubscriptionView {
    /// Whose subscription it is.
    pub merchant_id: String,
    /// The card, masked.
    pub card: String,
    /// The SE number.
    pub se_number: String,
    /// The merchant's id for the card (long digit runs masked).
    pub id: String,
    /// The expiry subscribed.
    pub exp: String,
}

/// One American Express update event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AmexEventView {
    /// The event id (what `GET /v2/subscription/results` takes).
    pub event_id: String,
    /// Whose event it is.
    pub merchant_id: String,
    /// When it fired.
    pub fired_ms: u64,
    /// Its result rows (at most [`OVERVIEW_ROWS`]).
    pub results: Vec<ResultView>,
    /// How many result rows it has.
    pub results_total: usize,
}

/// American Express updates waiting for their time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AmexPendingView {
    /// For whom.
    pub merchant_id: String,
    /// When they fire.
    pub due_ms: u64,
    /// How many cards they concern.
    pub cards: usize,
}

/// One card of the issuing platform.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct IssuerCardView {
    /// The platform's card id (what `PATCH /v1/cards/{card_id}` takes).
    pub card_id: String,
    /// The card, masked.
    pub card: String,
    /// Its expiry.
    pub exp: String,
    /// `ACTIVE`, `SUSPENDED` or `TERMINATED`.
    pub status: String,
    /// Why its status last changed, if it did: the code.
    pub reason: Option<String>,
    /// What the code means.
    pub reason_description: Option<String>,
    /// The card it replaced, if it is a reissue.
    pub reissued_from: Option<String>,
    /// The card that replaced it, if it was reissued.
    pub reissued_to: Option<String>,
    /// What merchants holding this card get from now on, if anything (a result row with the
    /// merchant's id left empty).
    pub merchants_get: Option<ResultView>,
}

/// A webhook URL as the dashboard and the delivery log show it: without its secret path
/// ([`cardsync_proto::webhook_url::display`]).
pub(crate) fn display_url(url: &str) -> String {
    cardsync_proto::webhook_url::display(url)
}

/// What one endpoint received, as `GET /_sandbox/counters` reports it.
///
/// ```
/// let counts = cardsync_sandbox::EndpointCounts::default();
/// assert_eq!(counts.repeats, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub struct EndpointCounts {
    /// Requests.
    pub requests: u64,
    /// Cards in them.
    pub cards: u64,
    /// Distinct cards (with their SE numbers) among them.
    pub distinct_cards: u64,
    /// Cards received again: `cards - distinct_cards`.
    pub repeats: u64,
}

/// One result row, masked.
pub(crate) fn row_view(row: &ResultCard) -> ResultView {
    ResultView {
        id: redact_digit_runs(&row.id).into_owned(),
        card: row.card.masked().as_str().to_owned(),
        exp: row.exp.clone(),
        status: row.status.as_ref().map(|s| s.as_str().to_owned()),
        se_number: row.se_number.clone(),
    }
}
