//! The emulator's state and behaviour, with no I/O: [`Emulator::handle`] answers one request,
//! [`Emulator::tick`] moves time-driven work along (batch validation and completion, enrollment,
//! American Express updates, purging) and queues the webhooks it fires.
//!
//! Time is an argument: `now` is the emulator clock, the time since the emulator started plus
//! whatever the test clock has been advanced by. The server layer supplies it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, SystemTime};

use cardsync_core::{
    Brand, Expiry, Pan, RouteKind, SeNumber, Stats, UpdateStatus, mask_card_text,
    redact_digit_runs, test_card,
};
use cardsync_proto::issuer::feed::{accepted_body, decode_update_cards_body};
use cardsync_proto::issuer::platform::{CardEdits, IssuedCard, card_body, decode_card_edits};
use cardsync_proto::server::{self, Spelling};
use cardsync_proto::{
    Ack, AmexUpdate, BatchAvailable, BatchCreated, BatchError, BatchInfo, BatchState,
    EnrollmentComplete, MerchantEnrolled, MerchantKey, MerchantStatus, ReportedStats, ResultCard,
    Results, ReturnedCard, SubmittedCard, Trigger, WebhookEvent, decode_cards_body, paths,
};
use http::{Method, Request, Response, StatusCode};

use crate::network::{Network, Refused};
use crate::overview::{
    AmexEventView, AmexPendingView, BatchView, EndpointCounts, MerchantView, OVERVIEW_BATCHES,
    OVERVIEW_ITEMS, OVERVIEW_ROWS, Overview, ResultView, SubscriptionView, WebhookView, row_view,
};
use crate::replacement::{replacement_card, replacement_expiry};

/// How long results stay available after completion (or after the webhook).
pub const RESULTS_KEPT_FOR: Duration = Duration::from_secs(10 * 24 * 3600);

/// The largest request body the emulator reads.
pub const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// The emulator's settings. `Debug` shows no key.
#[derive(Clone)]
#[non_exhaustive]
pub struct Settings {
    /// The partner master key. Default `sandbox_master_key`.
    pub master_key: String,
    /// The key of the pre-enrolled merchant. Default `sandbox_merchant_key`.
    pub merchant_key: String,
    /// The id of the pre-enrolled merchant. Default `sandbox_merchant`.
    pub merchant_id: String,
    /// How long batches, enrollments and American Express updates take. Default 2 s.
    pub complete_after: Duration,
    /// Answer with the documents' other spellings (`msg`, `contact_closed`, string
    /// `trigger_id`, repeated keys in webhook stats).
    pub quirks: bool,
    /// Seed of the id generator, so that ids repeat from run to run.
    pub seed: u64,
    /// Return a `no_change` result row for every batch card that is not a documented test
    /// card (by default such cards are only counted in `stats.no_change`, as CardSync returns
    /// only cards with news). For load tests that need full result bodies.
    pub report_unchanged: bool,
    /// The bearer token of the issuer side (the platform's PATCH, the issuer feed). Default
    /// `sandbox_issuer_token`.
    pub issuer_token: String,
    /// Host names (or addresses) the server may be reached at besides the loopback ones
    /// (`127.0.0.1`, `[::1]`, `localhost`, `*.localhost`): a request addressed (`Host`) to any
    /// other name is refused with 403, on every path, so that a page of another site whose
    /// name is made to resolve to the emulator's address (DNS rebinding) gets nothing. Needed
    /// when it listens where other machines reach it. Default none.
    pub allowed_hosts: Vec<String>,
    /// Hosts the server may deliver webhooks to besides loopback addresses and `localhost`; a
    /// webhook for any other host is not sent, and its delivery fails saying why. Default none.
    pub webhook_hosts: Vec<String>,
    /// Apply the rules of a server other machines can reach even on a loopback address (they
    /// apply anyway on any other address): every control request, reads included, and the
    /// dashboard's page need the run's token ([`Sandbox::control_token`](crate::Sandbox::control_token)),
    /// and [`Sandbox::start`](crate::Sandbox::start) refuses the public default keys and issuer
    /// token. For tests of those rules. Default false.
    pub exposed: bool,
}

impl Settings {
    /// The settings that still hold their public default values, of those that let a client
    /// in: the master key, the merchant key, the issuer token (as their command-line flags
    /// name them).
    ///
    /// ```
    /// let mut settings = cardsync_sandbox::Settings::default();
    /// settings.merchant_key = "a key of my own".to_owned();
    /// assert_eq!(settings.public_secrets(), ["--master-key", "--issuer-token"]);
    /// ```
    pub fn public_secrets(&self) -> Vec<&'static str> {
        let defaults = Settings::default();
        [
            ("--master-key", self.master_key == defaults.master_key),
            ("--merchant-key", self.merchant_key == defaults.merchant_key),
            ("--issuer-token", self.issuer_token == defaults.issuer_token),
        ]
        .into_iter()
        .filter_map(|(flag, public)| public.then_some(flag))
        .collect()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            master_key: "sandbox_master_key".to_owned(),
            merchant_key: "sandbox_merchant_key".to_owned(),
            merchant_id: "sandbox_merchant".to_owned(),
            complete_after: Duration::from_secs(2),
            quirks: false,
            seed: 0x5eed,
            report_unchanged: false,
            issuer_token: "sandbox_issuer_token".to_owned(),
            allowed_hosts: Vec::new(),
            webhook_hosts: Vec::new(),
            exposed: false,
        }
    }
}

/// A webhook the emulator wants delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outgoing {
    /// The delivery's id (also the payload's `id`).
    pub delivery_id: String,
    /// Where to POST it.
    pub url: String,
    /// The trigger.
    pub trigger: Trigger,
    /// The event id, when the event has one.
    pub event_id: Option<String>,
    /// The JSON payload.
    pub body: Vec<u8>,
}

/// Who a request is from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Caller {
    Partner,
    Merchant(String),
}

#[derive(Debug)]
struct Batch {
    /// 1-based order of creation.
    number: u64,
    merchant_id: String,
    created_at: Duration,
    completes_at: Duration,
    validated: bool,
    errors: usize,
    /// What `GET /v2/batch/results` answers once the batch is complete: the batch's id, state,
    /// result rows (only cards with a result: the documented test cards), stats and times.
    results: Results,
    card_stats: [u64; 4],
    event_id: String,
    completed_at: Option<Duration>,
    /// The merchant's id of the first card submitted, to look the batch up by.
    first_card_id: Option<String>,
}

/// A batch the emulator holds, as a merchant would see it in the CardSync dashboard. `Debug`
/// masks digit runs in the card id.
///
/// ```
/// use cardsync_sandbox::{Emulator, Settings};
/// let emulator = Emulator::new(Settings::default(), std::time::SystemTime::now());
/// assert!(emulator.batches().is_empty());
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOverview {
    /// The batch's id.
    pub batch_id: String,
    /// Whose batch it is.
    pub merchant_id: String,
    /// Its state.
    pub state: BatchState,
    /// How many cards were submitted.
    pub cards: u64,
    /// The merchant's id of its first card.
    pub first_card_id: Option<String>,
    /// The event id its batch-available (or batch-error) webhook carries.
    pub event_id: String,
}

impl fmt::Debug for BatchOverview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchOverview")
            .field("batch_id", &self.batch_id)
            .field("merchant_id", &self.merchant_id)
            .field("state", &self.state)
            .field("cards", &self.cards)
            .field(
                "first_card_id",
                &self.first_card_id.as_deref().map(redact_digit_runs),
            )
            .field("event_id", &self.event_id)
            .finish()
    }
}

struct Merchant {
    key: String,
    legal_business_name: String,
    username: String,
    completes_at: Duration,
    completed: bool,
    webhooks: HashMap<Trigger, String>,
}

#[derive(Debug)]
struct AmexEvent {
    merchant_id: String,
    /// What `GET /v2/subscription/results` answers.
    results: Results,
    fired_at: Duration,
}

struct PendingAmex {
    merchant_id: String,
    due: Duration,
    /// (card, se_number, id, exp) as subscribed.
    pairs: Vec<(String, String, String, String)>,
}

/// Counts of what one endpoint received.
#[derive(Debug, Default)]
struct Counter {
    requests: u64,
    cards: u64,
    /// Keyed fingerprints of every distinct card (and SE number) received.
    distinct: HashSet<u64>,
}

/// The emulator. See the module docs for the call protocol. `Debug` shows how much it
/// holds, never a card number or a key.
pub struct Emulator {
    settings: Settings,
    started: SystemTime,
    rng: u64,
    keys: std::collections::hash_map::RandomState,
    merchants: BTreeMap<String, Merchant>,
    partner_webhooks: HashMap<Trigger, String>,
    batches: HashMap<String, Batch>,
    /// (merchant, card, SE number) → (the merchant's id for the card, its expiry).
    subscriptions: HashMap<(String, String, String), (String, String)>,
    network: Network,
    pending_amex: Vec<PendingAmex>,
    batches_created: u64,
    amex_events: HashMap<String, AmexEvent>,
    /// By method and path.
    counters: BTreeMap<(&'static str, &'static str), Counter>,
    outbox: VecDeque<Outgoing>,
}

/// A key, as `Debug` shows it.
const REDACTED: &str = "<redacted>";

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("master_key", &REDACTED)
            .field("merchant_key", &REDACTED)
            .field("merchant_id", &self.merchant_id)
            .field("complete_after", &self.complete_after)
            .field("quirks", &self.quirks)
            .field("seed", &self.seed)
            .field("report_unchanged", &self.report_unchanged)
            .field("issuer_token", &REDACTED)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("webhook_hosts", &self.webhook_hosts)
            .field("exposed", &self.exposed)
            .finish()
    }
}

impl fmt::Debug for Merchant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Merchant")
            .field("key", &REDACTED)
            .field("legal_business_name", &self.legal_business_name)
            .field("username", &self.username)
            .field("completes_at", &self.completes_at)
            .field("completed", &self.completed)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

impl fmt::Debug for PendingAmex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cards: Vec<_> = self.pairs.iter().map(|(c, ..)| mask_card_text(c)).collect();
        f.debug_struct("PendingAmex")
            .field("merchant_id", &self.merchant_id)
            .field("due", &self.due)
            .field("cards", &cards)
            .finish()
    }
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("settings", &self.settings)
            .field("merchants", &self.merchants)
            .field("batches", &self.batches.len())
            .field("subscriptions", &self.subscriptions.len())
            .field("pending_amex", &self.pending_amex)
            .field("amex_events", &self.amex_events.len())
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ssssssZ` for a system time.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

fn brand_index(brand: Brand) -> Option<usize> {
    match brand {
        Brand::Visa => Some(0),
        Brand::Mastercard => Some(1),
        Brand::Discover => Some(2),
        Brand::AmericanExpress => Some(3),
        _ => None,
    }
}

type Answer = Response<Vec<u8>>;

/// A request the emulator refuses: the status and the message of the error answer.
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal(status, message.into())
    }
}

impl Emulator {
    /// A new emulator, started at `started` on the wall clock (used only to write timestamps).
    pub fn new(settings: Settings, started: SystemTime) -> Emulator {
        let mut merchants = BTreeMap::new();
        merchants.insert(
            settings.merchant_id.clone(),
            Merchant {
                key: settings.merchant_key.clone(),
                legal_business_name: "Sandbox Merchant".to_owned(),
                username: "sandbox".to_owned(),
                completes_at: Duration::ZERO,
                completed: true,
                webhooks: HashMap::new(),
            },
        );
        Emulator {
            rng: settings.seed,
            settings,
            started,
            keys: std::collections::hash_map::RandomState::new(),
            merchants,
            partner_webhooks: HashMap::new(),
            batches: HashMap::new(),
            subscriptions: HashMap::new(),
            network: Network::default(),
            pending_amex: Vec::new(),
            batches_created: 0,
            amex_events: HashMap::new(),
            counters: BTreeMap::new(),
            outbox: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn next_u64(&mut self) -> u64 {
        // SplitMix64: deterministic for a seed, good enough for ids.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn new_id(&mut self, prefix: &str) -> String {
        format!("{prefix}{:016x}", self.next_u64())
    }

    fn new_uuid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xFFFF,
            a & 0xFFF,
            (b >> 48) & 0x3FFF | 0x8000,
            b & 0xFFFF_FFFF_FFFF
        )
    }

    fn timestamp(&self, at: Duration) -> String {
        rfc3339(self.started + at)
    }

    /// The documents' spelling the answers use: the Amex edition's with quirks.
    fn spelling(&self) -> Spelling {
        if self.settings.quirks {
            Spelling::Amex
        } else {
            Spelling::Universal
        }
    }

    /// A success answer with a body from [`cardsync_proto::server`].
    fn answer(&self, body: Vec<u8>) -> Answer {
        server::respond(StatusCode::OK, body)
    }

    /// `{"status":"success","message":"success"}`: what [`Ack`] reads.
    fn ok(&self) -> Answer {
        let mut ack = Ack::default();
        ack.status = Some("success".to_owned());
        ack.message = Some("success".to_owned());
        self.answer(server::ack(&ack, self.spelling()))
    }

    /// An error answer, in the proto's envelope ([`cardsync_proto::server::failure`]).
    fn error(&self, status: StatusCode, message: impl Into<String>) -> Answer {
        server::respond(status, server::failure(&message.into(), self.spelling()))
    }

    fn count(&mut self, method: &'static str, path: &'static str, cards: &[SubmittedCard]) {
        let keys = self.keys.clone();
        let counter = self.counters.entry((method, path)).or_default();
        counter.requests += 1;
        for c in cards {
            counter.cards += 1;
            let mut h = keys.build_hasher();
            c.card.as_ref().map(|c| c.expose()).hash(&mut h);
            c.se_number.hash(&mut h);
            counter.distinct.insert(h.finish());
        }
    }

    fn caller(&self, request: &Request<Vec<u8>>) -> Option<Caller> {
        let key = request
            .headers()
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        if key == self.settings.master_key {
            return Some(Caller::Partner);
        }
        self.merchants
            .iter()
            .find(|(_, m)| m.key == key)
            .map(|(id, _)| Caller::Merchant(id.clone()))
    }

    fn query(request: &Request<Vec<u8>>, name: &str) -> Option<String> {
        server::query_value(request.uri(), name)
    }

    /// Answers one request at emulator time `now`.
    pub fn handle(&mut self, request: &Request<Vec<u8>>, now: Duration) -> Answer {
        self.tick(now);
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let known = [
            paths::WEBHOOKS,
            paths::WEBHOOK,
            paths::MERCHANT,
            paths::BATCH,
            paths::BATCH_RESULTS,
            paths::SUBSCRIBE,
            paths::SUBSCRIPTION_RESULTS,
        ];
        if let Some(id) = path
            .strip_prefix(paths::PLATFORM_CARD_AT_ROOT)
            .filter(|id| !id.contains('/'))
        {
            let id = server::query_value(&format!("/?id={id}").parse().unwrap_or_default(), "id")
                .unwrap_or_default();
            return self.platform_patch(request, &id, now);
        }
        if let Some(account) = feed_account(&path) {
            return self.feed_put(request, account, now);
        }
        if !known.contains(&path.as_str()) {
            return self.error(StatusCode::NOT_FOUND, format!("no endpoint at {path}"));
        }
        let Some(caller) = self.caller(request) else {
            return self.error(StatusCode::UNAUTHORIZED, "unauthorized");
        };
        if request.body().len() > MAX_REQUEST_BODY {
            return self.error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            );
        }
        let merchant = match (&caller, path.as_str(), &method) {
            (_, paths::WEBHOOKS | paths::WEBHOOK, _) | (Caller::Partner, paths::MERCHANT, _) => {
                None
            }
            (Caller::Merchant(m), _, _) => Some(m.clone()),
            (Caller::Partner, _, _) => {
                return self.error(
                    StatusCode::FORBIDDEN,
                    "the partner master key only enrolls merchants and sets webhooks; use the merchant's key",
                );
            }
        };
        match (method, path.as_str(), merchant) {
            (Method::POST, paths::WEBHOOKS, _) => self.set_webhooks(&caller, request.body()),
            (Method::POST, paths::WEBHOOK, _) => self.set_amex_webhook(&caller, request.body()),
            (Method::POST, paths::MERCHANT, None) => self.enroll(request.body(), now),
            (Method::GET, paths::MERCHANT, None) => self.merchant_status(request),
            (Method::POST, paths::BATCH, Some(m)) => self.create_batch(&m, request.body(), now),
            (Method::GET, paths::BATCH, Some(m)) => self.batch_status(&m, request),
            (Method::GET, paths::BATCH_RESULTS, Some(m)) => self.batch_results(&m, request),
            (Method::POST, paths::SUBSCRIBE, Some(m)) => self.subscribe(&m, request.body(), now),
            (Method::DELETE, paths::SUBSCRIBE, Some(m)) => self.unsubscribe(&m, request.body()),
            (Method::GET, paths::SUBSCRIPTION_RESULTS, Some(m)) => {
                self.subscription_results(&m, request)
            }
            (Method::POST | Method::GET, paths::MERCHANT, Some(_)) => self.error(
                StatusCode::FORBIDDEN,
                "merchant enrollment needs the partner master key",
            ),
            (method, path, _) => {
                let allow = match path {
                    paths::MERCHANT | paths::BATCH => "GET, POST",
                    paths::SUBSCRIBE => "POST, DELETE",
                    paths::WEBHOOKS | paths::WEBHOOK => "POST",
                    _ => "GET",
                };
                self.not_allowed(&method, path, allow)
            }
        }
    }

    fn webhook_table(&mut self, caller: &Caller) -> &mut HashMap<Trigger, String> {
        match caller {
            Caller::Partner => &mut self.partner_webhooks,
            Caller::Merchant(id) => {
                &mut self
                    .merchants
                    .get_mut(id)
                    .expect("a known merchant")
                    .webhooks
            }
        }
    }

    fn set_webhooks(&mut self, caller: &Caller, body: &[u8]) -> Answer {
        match server::decode_webhooks_body(body) {
            Ok(pairs) => {
                self.webhook_table(caller).extend(pairs);
                self.ok()
            }
            Err(e) => self.error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }

    fn set_amex_webhook(&mut self, caller: &Caller, body: &[u8]) -> Answer {
        match server::decode_webhook_body(body) {
            Ok((trigger, url)) => {
                self.webhook_table(caller).insert(trigger, url);
                self.ok()
            }
            Err(e) => self.error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }

    fn enroll(&mut self, body: &[u8], now: Duration) -> Answer {
        let merchant = match server::decode_merchant_enrollment(body) {
            Ok(m) => m,
            Err(e) => return self.error(StatusCode::BAD_REQUEST, format!("invalid merchant: {e}")),
        };
        if merchant.legal_business_name.is_empty()
            || merchant.name.is_empty()
            || merchant.user.username.is_empty()
        {
            return self.error(
                StatusCode::BAD_REQUEST,
                "legal_business_name, name and user.username must not be empty",
            );
        }
        if !["daily", "weekly", "monthly"].contains(&merchant.card_info.delivery_frequency.as_str())
        {
            return self.error(
                StatusCode::BAD_REQUEST,
                "card_info.delivery_frequency must be daily, weekly or monthly",
            );
        }
        if self
            .merchants
            .values()
            .any(|m| m.legal_business_name == merchant.legal_business_name)
        {
            return self.error(
                StatusCode::CONFLICT,
                "a merchant with this legal_business_name exists",
            );
        }
        if self
            .merchants
            .values()
            .any(|m| m.username == merchant.user.username)
        {
            return self.error(StatusCode::CONFLICT, "a user with this username exists");
        }
        let id = self.new_id("m");
        let key = format!("api_{}", self.new_id(""));
        let Ok(api_key) = MerchantKey::new(&key) else {
            unreachable!("api_ and hexadecimal digits are visible ASCII");
        };
        self.merchants.insert(
            id.clone(),
            Merchant {
                key,
                legal_business_name: merchant.legal_business_name,
                username: merchant.user.username,
                completes_at: now + self.settings.complete_after,
                completed: false,
                webhooks: HashMap::new(),
            },
        );
        let mut enrolled = MerchantEnrolled::new(id, api_key);
        enrolled.created_at = Some(self.timestamp(now));
        self.answer(server::merchant_enrolled(&enrolled, self.spelling()))
    }

    fn merchant_status(&mut self, request: &Request<Vec<u8>>) -> Answer {
        let Some(id) = Self::query(request, "merchant_id").filter(|s| !s.is_empty()) else {
            return self.error(StatusCode::BAD_REQUEST, "merchant_id is required");
        };
        match self.merchants.get(&id) {
            Some(m) => {
                let mut status = MerchantStatus::default();
                status.status = Some("success".to_owned());
                status.message = Some("success".to_owned());
                status.enrollment =
                    Some(if m.completed { "completed" } else { "pending" }.to_owned());
                status.merchant_id = Some(id);
                self.answer(server::merchant_status(&status, self.spelling()))
            }
            None => self.error(StatusCode::NOT_FOUND, format!("no merchant {id}")),
        }
    }

    fn cards_body(body: &[u8]) -> Result<Vec<SubmittedCard>, Refusal> {
        let cards = decode_cards_body(body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not a card list: {e}"),
            )
        })?;
        if cards.is_empty() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "cards must not be empty",
            ));
        }
        if cards.len() > cardsync_core::MAX_CARDS_PER_REQUEST {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("{} cards; at most 10000 per request", cards.len()),
            ));
        }
        Ok(cards)
    }

    fn create_batch(&mut self, merchant: &str, body: &[u8], now: Duration) -> Answer {
        let cards = match Self::cards_body(body) {
            Ok(c) => c,
            Err(Refusal(status, message)) => return self.error(status, message),
        };
        self.count("POST", paths::BATCH, &cards);
        let id = self.new_id("b");
        let mut results = Results::new(BatchState::Pending);
        results.batch_id = Some(id.clone());
        results.created_at = Some(self.timestamp(now));
        results.stats.stats.number_submitted = cards.len() as u64;
        let mut batch = Batch {
            merchant_id: merchant.to_owned(),
            created_at: now,
            completes_at: now + self.settings.complete_after,
            validated: false,
            errors: 0,
            number: {
                self.batches_created += 1;
                self.batches_created
            },
            results,
            card_stats: [0; 4],
            event_id: self.new_uuid(),
            completed_at: None,
            first_card_id: cards.first().and_then(|c| c.id.clone()),
        };
        let (rows, stats) = (&mut batch.results.cards, &mut batch.results.stats.stats);
        for c in &cards {
            let id = c.id.as_deref().unwrap_or("");
            let pan = c.card.as_ref().and_then(|c| Pan::parse(c.expose()).ok());
            let exp = c.exp.as_deref().and_then(|e| Expiry::parse(e).ok());
            let route = pan.as_ref().and_then(|p| p.brand().route());
            let (Some(pan), Some(exp), Some(RouteKind::Batch)) = (pan, exp, route) else {
                batch.errors += 1;
                continue;
            };
            if id.is_empty() {
                batch.errors += 1;
                continue;
            }
            if let Some(i) = brand_index(pan.brand()) {
                batch.card_stats[i] += 1;
            }
            let digits = pan.expose();
            match news(&self.network, id, digits.as_str(), exp) {
                Some(row) => {
                    if let Some(status) = &row.status {
                        stats.record(status);
                    }
                    rows.push(row);
                }
                None => {
                    stats.no_change += 1;
                    if self.settings.report_unchanged {
                        rows.push(result_row(id, digits.as_str(), exp, UpdateStatus::NoChange));
                    }
                }
            }
        }
        let mut created = BatchCreated::new(id.clone(), BatchState::Pending);
        created.stats = submitted_only(batch.results.stats.stats.number_submitted);
        created.created_at = batch.results.created_at.clone();
        created.updated_at = batch.results.created_at.clone();
        self.batches.insert(id, batch);
        self.answer(server::batch_created(&created, self.spelling()))
    }

    fn find_batch(
        &self,
        merchant: &str,
        request: &Request<Vec<u8>>,
    ) -> Result<(String, &Batch), Refusal> {
        let Some(id) = Self::query(request, "batch_id").filter(|s| !s.is_empty()) else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "batch_id is required",
            ));
        };
        match self.batches.get(&id) {
            Some(b) if b.merchant_id == merchant => Ok((id, b)),
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no batch {id} (unknown, or purged 10 days after completion)"),
            )),
        }
    }

    fn batch_status(&mut self, merchant: &str, request: &Request<Vec<u8>>) -> Answer {
        let (id, b) = match self.find_batch(merchant, request) {
            Ok(found) => found,
            Err(Refusal(status, message)) => return self.error(status, message),
        };
        let r = &b.results;
        let mut info = BatchInfo::new(r.status.clone());
        info.batch_id = Some(id);
        info.stats = if r.status == BatchState::Completed {
            r.stats.clone()
        } else {
            submitted_only(r.stats.stats.number_submitted)
        };
        info.created_at = r.created_at.clone();
        info.updated_at = Some(self.timestamp(b.completed_at.unwrap_or(b.created_at)));
        self.answer(server::batch_info(&info, self.spelling()))
    }

    fn batch_results(&mut self, merchant: &str, request: &Request<Vec<u8>>) -> Answer {
        let (id, b) = match self.find_batch(merchant, request) {
            Ok(found) => found,
            Err(Refusal(status, message)) => return self.error(status, message),
        };
        if let Some(event) = Self::query(request, "event_id")
            && (event != b.event_id || b.results.status != BatchState::Completed)
        {
            return self.error(
                StatusCode::NOT_FOUND,
                format!("batch {id} has no event {event}"),
            );
        }
        match b.results.status {
            BatchState::Completed => {}
            BatchState::Error => {
                return self.error(
                    StatusCode::CONFLICT,
                    format!(
                        "batch {id} failed validation with {} errors and has no results",
                        b.errors
                    ),
                );
            }
            _ => {
                return self.error(StatusCode::CONFLICT, format!("batch {id} is not complete yet; wait for the batch-available webhook or poll GET {}", paths::BATCH));
            }
        }
        self.answer(server::results(&b.results, self.spelling()))
    }

    /// Validates a subscription body: every card an American Express number with an SE number,
    /// an id and an expiry. Subscriptions have no asynchronous validation in the documents, so
    /// problems are answered at once, with the index of each bad card.
    fn subscription_cards(
        &self,
        body: &[u8],
    ) -> Result<Vec<(String, String, String, String)>, Refusal> {
        let cards = Self::cards_body(body)?;
        let mut good = Vec::with_capacity(cards.len());
        let mut bad = Vec::new();
        for (i, c) in cards.iter().enumerate() {
            let pan = c.card.as_ref().and_then(|c| Pan::parse(c.expose()).ok());
            let se = c.se_number.as_deref().and_then(|s| SeNumber::parse(s).ok());
            let exp = c.exp.as_deref().and_then(|e| Expiry::parse(e).ok());
            match (pan, se, exp, c.id.as_deref().filter(|s| !s.is_empty())) {
                (Some(pan), Some(se), Some(exp), Some(id))
                    if pan.brand().route() == Some(RouteKind::Subscription) =>
                {
                    good.push((
                        pan.expose().as_str().to_owned(),
                        se.as_str().to_owned(),
                        id.to_owned(),
                        exp.to_string(),
                    ));
                }
                _ => bad.push(i),
            }
        }
        if bad.is_empty() {
            Ok(good)
        } else {
            let shown: Vec<String> = bad.iter().take(10).map(|i| i.to_string()).collect();
            Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} cards are not American Express cards with an id, a valid expiry and an SE number (indexes {}{})",
                    bad.len(),
                    shown.join(", "),
                    if bad.len() > 10 { ", …" } else { "" }
                ),
            ))
        }
    }

    fn subscribe(&mut self, merchant: &str, body: &[u8], now: Duration) -> Answer {
        if let Ok(cards) = decode_cards_body(body) {
            self.count("POST", paths::SUBSCRIBE, &cards);
        }
        let pairs = match self.subscription_cards(body) {
            Ok(p) => p,
            Err(Refusal(status, message)) => return self.error(status, message),
        };
        let mut updates = Vec::new();
        for (card, se, id, exp) in pairs {
            let has_news = test_card(&card).is_some() || self.network.outcome(&card).is_some();
            // A subscription is a set of pairs: subscribing a pair again changes nothing, and
            // fires no second update.
            let new = self
                .subscriptions
                .insert(
                    (merchant.to_owned(), card.clone(), se.clone()),
                    (id.clone(), exp.clone()),
                )
                .is_none();
            if has_news && new {
                updates.push((card, se, id, exp));
            }
        }
        if !updates.is_empty() {
            self.pending_amex.push(PendingAmex {
                merchant_id: merchant.to_owned(),
                due: now + self.settings.complete_after,
                pairs: updates,
            });
        }
        self.ok()
    }

    fn unsubscribe(&mut self, merchant: &str, body: &[u8]) -> Answer {
        if let Ok(cards) = decode_cards_body(body) {
            self.count("DELETE", paths::SUBSCRIBE, &cards);
        }
        let pairs = match self.subscription_cards(body) {
            Ok(p) => p,
            Err(Refusal(status, message)) => return self.error(status, message),
        };
        for (card, se, _, _) in pairs {
            self.subscriptions.remove(&(merchant.to_owned(), card, se));
        }
        self.ok()
    }

    fn subscription_results(&mut self, merchant: &str, request: &Request<Vec<u8>>) -> Answer {
        let Some(event_id) = Self::query(request, "event_id").filter(|s| !s.is_empty()) else {
            return self.error(StatusCode::BAD_REQUEST, "event_id is required");
        };
        match self.amex_events.get(&event_id) {
            Some(e) if e.merchant_id == merchant => {
                self.answer(server::results(&e.results, self.spelling()))
            }
            _ => self.error(
                StatusCode::NOT_FOUND,
                format!("no event {event_id} (unknown, or purged 10 days after the webhook)"),
            ),
        }
    }

    /// The URL for a merchant's event: the merchant's own registration, or the partner's.
    fn webhook_url(&self, merchant: Option<&str>, trigger: Trigger) -> Option<String> {
        merchant
            .and_then(|m| self.merchants.get(m))
            .and_then(|m| m.webhooks.get(&trigger))
            .or_else(|| self.partner_webhooks.get(&trigger))
            .cloned()
    }

    fn queue(
        &mut self,
        merchant: Option<&str>,
        trigger: Trigger,
        event_id: Option<String>,
        event: impl FnOnce(String) -> WebhookEvent,
    ) {
        let Some(url) = self.webhook_url(merchant, trigger) else {
            return;
        };
        let delivery_id = self.new_uuid();
        let body = server::webhook(&event(delivery_id.clone()), self.spelling());
        self.outbox.push_back(Outgoing {
            delivery_id,
            url,
            trigger,
            event_id,
            body,
        });
    }

    /// Moves time-driven work along to `now`: validates and completes batches, completes
    /// enrollments, fires American Express updates, purges results older than ten days, and
    /// queues the webhooks all that fires.
    pub fn tick(&mut self, now: Duration) {
        // Enrollments.
        let done: Vec<String> = self
            .merchants
            .iter()
            .filter(|(_, m)| !m.completed && m.completes_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            if let Some(m) = self.merchants.get_mut(&id) {
                m.completed = true;
            }
            self.queue(None, Trigger::EnrollmentComplete, None, |_| {
                let mut event = EnrollmentComplete::default();
                event.status = Some("success".to_owned());
                event.message = Some("success".to_owned());
                event.merchant_id = Some(id);
                WebhookEvent::EnrollmentComplete(event)
            });
        }
        // Batches: validation happens on the first tick after creation, completion after the
        // configured delay.
        let mut ids: Vec<String> = self
            .batches
            .iter()
            .filter(|(_, b)| {
                b.results.status == BatchState::Pending && (!b.validated || b.completes_at <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        let (date, expires) = (self.timestamp(now), self.timestamp(now + RESULTS_KEPT_FOR));
        for id in ids {
            let Some(b) = self.batches.get_mut(&id) else {
                continue;
            };
            b.validated = true;
            let (merchant, event_id) = (b.merchant_id.clone(), b.event_id.clone());
            if b.errors > 0 {
                b.results.status = BatchState::Error;
                b.completed_at = Some(now);
                let mut event = BatchError::default();
                event.batch_id = Some(id);
                event.trigger_date = Some(date.clone());
                event.event_id = Some(event_id.clone());
                event.source = Some("Validation".to_owned());
                event.message = Some(format!(
                    "{} errors occurred during the batch validation process",
                    b.errors
                ));
                event.error_count = b.errors as u64;
                self.queue(
                    Some(&merchant),
                    Trigger::BatchError,
                    Some(event_id),
                    |delivery| {
                        event.id = Some(delivery);
                        WebhookEvent::BatchError(event)
                    },
                );
            } else if b.completes_at <= now {
                b.results.status = BatchState::Completed;
                b.results.updated_at = Some(date.clone());
                b.completed_at = Some(now);
                let mut event = BatchAvailable::default();
                event.batch_id = Some(id);
                let [visa, mastercard, discover, amex] = b.card_stats;
                event.card_stats.visa = visa;
                event.card_stats.mastercard = mastercard;
                event.card_stats.discover = discover;
                event.card_stats.american_express = amex;
                event.stats = b.results.stats.clone();
                event.trigger_date = Some(date.clone());
                event.event_id = Some(event_id.clone());
                event.message = Some(String::new());
                event.expires = Some(expires.clone());
                self.queue(
                    Some(&merchant),
                    Trigger::BatchAvailable,
                    Some(event_id),
                    |delivery| {
                        event.id = Some(delivery);
                        WebhookEvent::BatchAvailable(event)
                    },
                );
            }
        }
        // American Express updates for pairs still subscribed.
        let (due, later): (Vec<PendingAmex>, Vec<PendingAmex>) =
            std::mem::take(&mut self.pending_amex)
                .into_iter()
                .partition(|p| p.due <= now);
        self.pending_amex = later;
        for p in due {
            let mut results = Results::new(BatchState::Completed);
            let stats = &mut results.stats.stats;
            for (card, se, id, exp) in &p.pairs {
                if !self.subscriptions.contains_key(&(
                    p.merchant_id.clone(),
                    card.clone(),
                    se.clone(),
                )) {
                    continue;
                }
                let Ok(exp) = Expiry::parse(exp) else {
                    continue;
                };
                let Some(row) = self.news(id, card, exp) else {
                    continue;
                };
                stats.number_submitted += 1;
                if let Some(status) = &row.status {
                    stats.record(status);
                }
                results.cards.push(row.with_se_number(se.clone()));
            }
            if results.cards.is_empty() {
                continue;
            }
            results.created_at = Some(date.clone());
            results.updated_at = Some(date.clone());
            let event_id = self.new_uuid();
            let mut event = AmexUpdate::default();
            event.stats = results.stats.clone();
            event.trigger_date = Some(date.clone());
            event.event_id = Some(event_id.clone());
            event.message = Some(String::new());
            event.expires = Some(expires.clone());
            self.amex_events.insert(
                event_id.clone(),
                AmexEvent {
                    merchant_id: p.merchant_id.clone(),
                    results,
                    fired_at: now,
                },
            );
            self.queue(
                Some(&p.merchant_id),
                Trigger::AmexUpdate,
                Some(event_id),
                |delivery| {
                    event.id = Some(delivery);
                    WebhookEvent::AmexUpdate(event)
                },
            );
        }
        // Purge.
        self.batches
            .retain(|_, b| b.completed_at.is_none_or(|c| c + RESULTS_KEPT_FOR > now));
        self.amex_events
            .retain(|_, e| e.fired_at + RESULTS_KEPT_FOR > now);
    }

    /// Takes the webhooks waiting to be delivered.
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        self.outbox.drain(..).collect()
    }

    fn news(&self, id: &str, card: &str, exp: Expiry) -> Option<ResultCard> {
        news(&self.network, id, card, exp)
    }

    /// Registers a card with the issuing platform, as issued and active, so that issuer-side
    /// events can be tested: its platform card id (what `PATCH /v1/cards/{card_id}` takes).
    pub fn register_issuer_card(&mut self, pan: &Pan, exp: Expiry, now: Duration) -> String {
        let id = self.new_uuid();
        let at = self.timestamp(now);
        self.network.register(id, pan, exp, at)
    }

    /// American Express subscriptions of a card with news get an update, as the documents
    /// describe: queued like the updates of subscribed test cards.
    fn notify_subscribers(&mut self, matches: impl Fn(&str) -> bool, now: Duration) {
        let mut by_merchant: BTreeMap<String, Vec<(String, String, String, String)>> =
            BTreeMap::new();
        for ((merchant, card, se), (id, exp)) in &self.subscriptions {
            if matches(card) {
                by_merchant.entry(merchant.clone()).or_default().push((
                    card.clone(),
                    se.clone(),
                    id.clone(),
                    exp.clone(),
                ));
            }
        }
        for (merchant_id, pairs) in by_merchant {
            self.pending_amex.push(PendingAmex {
                merchant_id,
                due: now + self.settings.complete_after,
                pairs,
            });
        }
    }

    /// Whether a request carries the issuer side's bearer token.
    fn issuer_caller(&self, request: &Request<Vec<u8>>) -> bool {
        request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t == self.settings.issuer_token)
    }

    /// The issuing platform's `PATCH /v1/cards/{card_id}`.
    fn platform_patch(&mut self, request: &Request<Vec<u8>>, id: &str, now: Duration) -> Answer {
        if !self.issuer_caller(request) {
            return self.error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        }
        if request.method() != Method::PATCH {
            return self.not_allowed(request.method(), request.uri().path(), "PATCH");
        }
        let key = request
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // What a key stands for: this change of this card (the card id and the body).
        let change = [id.as_bytes(), b"\n", request.body()].concat();
        if let Some(key) = &key {
            match self.network.replay(key, &change) {
                Ok(Some((status, body))) => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                    return server::respond(status, body);
                }
                Ok(None) => {}
                Err(Refused(status, message)) => return self.refused(status, message),
            }
        }
        let edits = match decode_card_edits(request.body()) {
            Ok(e) => e,
            Err(e) => return self.error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let answer = match self.apply_card_edits(id, edits, now) {
            Ok(card) => server::respond(StatusCode::OK, card_body(&card)),
            Err(Refused(status, message)) => self.refused(status, message),
        };
        // Refusals that depend on the state (an unknown or terminated card) are not replayed:
        // only answers that changed something are.
        if let Some(key) = &key
            && answer.status() == StatusCode::OK
        {
            self.network.remember(key, &change, 200, answer.body());
        }
        answer
    }

    /// Applies a platform change to card `id` and queues what it means for the merchants
    /// holding the card: what `PATCH /v1/cards/{card_id}` and the dashboard do.
    pub(crate) fn apply_card_edits(
        &mut self,
        id: &str,
        edits: CardEdits,
        now: Duration,
    ) -> Result<IssuedCard, Refused> {
        let at = self.timestamp(now);
        let new_id = self.new_uuid();
        let (card, news) = self.network.patch(id, edits, || new_id, at)?;
        self.notify_subscribers(|c| news.iter().any(|n| n == c), now);
        Ok(card)
    }

    /// The issuer feed's `PUT /v2/data/customers/{c}/accounts/{a}/cards`.
    fn feed_put(
        &mut self,
        request: &Request<Vec<u8>>,
        (customer, account): (String, String),
        now: Duration,
    ) -> Answer {
        if !self.issuer_caller(request) {
            return self.error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        }
        if request.method() != Method::PUT {
            return self.not_allowed(request.method(), request.uri().path(), "PUT");
        }
        let received = match decode_update_cards_body(request.body()) {
            Ok(r) => r,
            Err(e) => return self.error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        for (i, r) in received.iter().enumerate() {
            if r.customer_id != customer || r.account_id != account {
                return self.error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "cards[{i}].sourceCustomerId and sourceAccountId must be the customer and account of the path"
                    ),
                );
            }
        }
        let cards = received.into_iter().map(|r| r.card).collect();
        match self.network.feed((customer, account), cards) {
            Ok(news) => {
                self.notify_subscribers(
                    |c| {
                        c.len() >= 10
                            && news
                                .iter()
                                .any(|(iin, last4)| c.starts_with(iin) && c.ends_with(last4))
                    },
                    now,
                );
                let id = self.new_uuid();
                server::respond(StatusCode::OK, accepted_body(&id))
            }
            Err(Refused(status, message)) => self.refused(status, message),
        }
    }

    fn refused(&self, status: u16, message: String) -> Answer {
        self.error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            message,
        )
    }

    fn not_allowed(&self, method: &Method, path: &str, allow: &'static str) -> Answer {
        let mut answer = self.error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}"),
        );
        answer
            .headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
        answer
    }

    /// The batches kept, oldest first.
    pub fn batches(&self) -> Vec<BatchOverview> {
        let mut all: Vec<(u64, BatchOverview)> = self
            .batches
            .iter()
            .map(|(id, b)| {
                let overview = BatchOverview {
                    batch_id: id.clone(),
                    merchant_id: b.merchant_id.clone(),
                    state: b.results.status.clone(),
                    cards: b.results.stats.stats.number_submitted,
                    first_card_id: b.first_card_id.clone(),
                    event_id: b.event_id.clone(),
                };
                (b.number, overview)
            })
            .collect();
        all.sort_by_key(|(n, _)| *n);
        all.into_iter().map(|(_, b)| b).collect()
    }

    /// What the emulator holds, masked, as the dashboard shows it (see [`Overview`]): `now` is
    /// the emulator clock.
    pub fn overview(&self, now: Duration) -> Overview {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let masked = |text: &str| redact_digit_runs(text).into_owned();
        let webhooks = |hooks: &HashMap<Trigger, String>| {
            let mut list: Vec<WebhookView> = hooks
                .iter()
                .map(|(trigger, url)| WebhookView {
                    trigger_id: trigger.id(),
                    trigger: trigger_name(*trigger),
                    url: crate::overview::display_url(url),
                })
                .collect();
            list.sort_by_key(|w| w.trigger_id);
            list
        };
        let merchants = self
            .merchants
            .iter()
            .map(|(id, m)| MerchantView {
                merchant_id: masked(id),
                legal_business_name: masked(&m.legal_business_name),
                username: masked(&m.username),
                enrollment: if m.completed { "complete" } else { "pending" },
                webhooks: webhooks(&m.webhooks),
            })
            .collect();
        let mut batches: Vec<(&String, &Batch)> = self.batches.iter().collect();
        batches.sort_by_key(|(_, b)| std::cmp::Reverse(b.number));
        let batches_total = batches.len();
        let batches = batches
            .into_iter()
            .take(OVERVIEW_BATCHES)
            .map(|(id, b)| {
                let completed = b.results.status == BatchState::Completed;
                let brands = ["visa", "mastercard", "discover", "american_express"]
                    .into_iter()
                    .zip(b.card_stats)
                    .filter(|(_, n)| *n > 0)
                    .collect();
                BatchView {
                    batch_id: id.clone(),
                    merchant_id: masked(&b.merchant_id),
                    state: b.results.status.as_str().to_owned(),
                    cards: b.results.stats.stats.number_submitted,
                    brands,
                    errors: b.errors as u64,
                    created_ms: ms(b.created_at),
                    created_at: self.timestamp(b.created_at),
                    completes_ms: ms(b.completes_at),
                    completed_ms: b.completed_at.map(ms),
                    stats: if completed {
                        status_counts(&b.results.stats.stats)
                    } else {
                        BTreeMap::new()
                    },
                    results: if completed {
                        rows_view(&b.results.cards)
                    } else {
                        Vec::new()
                    },
                    results_total: if completed { b.results.cards.len() } else { 0 },
                }
            })
            .collect();
        // Any OVERVIEW_ITEMS of them, then in order: building the overview holds the
        // emulator, which may hold a million subscriptions.
        let mut subscriptions: Vec<SubscriptionView> = self
            .subscriptions
            .iter()
            .take(OVERVIEW_ITEMS)
            .map(|((merchant, card, se), (id, exp))| SubscriptionView {
                merchant_id: masked(merchant),
                card: mask_card_text(card).as_str().to_owned(),
                se_number: se.clone(),
                id: masked(id),
                exp: exp.clone(),
            })
            .collect();
        subscriptions.sort_by(|a, b| (&a.merchant_id, &a.id).cmp(&(&b.merchant_id, &b.id)));
        let subscriptions_total = self.subscriptions.len();
        let mut events: Vec<(&String, &AmexEvent)> = self.amex_events.iter().collect();
        events.sort_by_key(|(id, e)| (std::cmp::Reverse(e.fired_at), *id));
        let amex_events = events
            .into_iter()
            .take(OVERVIEW_ITEMS)
            .map(|(id, e)| AmexEventView {
                event_id: id.clone(),
                merchant_id: masked(&e.merchant_id),
                fired_ms: ms(e.fired_at),
                results: rows_view(&e.results.cards),
                results_total: e.results.cards.len(),
            })
            .collect();
        let amex_pending = self
            .pending_amex
            .iter()
            .map(|p| AmexPendingView {
                merchant_id: masked(&p.merchant_id),
                due_ms: ms(p.due),
                cards: p.pairs.len(),
            })
            .collect();
        Overview {
            now_ms: ms(now),
            now_at: self.timestamp(now),
            merchants,
            partner_webhooks: webhooks(&self.partner_webhooks),
            batches,
            batches_total,
            subscriptions,
            subscriptions_total,
            amex_events,
            amex_pending,
            issuer_cards: self.network.views(OVERVIEW_ITEMS),
            counters: self.counters(),
        }
    }

    /// The ids of the batches kept, oldest first.
    pub fn batch_ids(&self) -> Vec<String> {
        let mut ids: Vec<(u64, &String)> =
            self.batches.iter().map(|(id, b)| (b.number, id)).collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// What each endpoint received, by `METHOD /path`: requests, cards, distinct cards,
    /// repeats.
    pub fn counters(&self) -> BTreeMap<String, EndpointCounts> {
        self.counters
            .iter()
            .map(|((method, path), c)| {
                let distinct = c.distinct.len() as u64;
                let counts = EndpointCounts {
                    requests: c.requests,
                    cards: c.cards,
                    distinct_cards: distinct,
                    repeats: c.cards - distinct,
                };
                (format!("{method} {path}"), counts)
            })
            .collect()
    }
}

/// The customer and account of an issuer feed path,
/// `/v2/data/customers/{sourceCustomerId}/accounts/{sourceAccountId}/cards`, percent-decoded.
fn feed_account(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix(paths::FEED_CUSTOMERS)?;
    let (customer, rest) = rest.split_once(paths::FEED_ACCOUNTS)?;
    let account = rest.strip_suffix(paths::FEED_CARDS)?;
    if customer.is_empty() || account.is_empty() || customer.contains('/') || account.contains('/')
    {
        return None;
    }
    let decode = |s: &str| {
        let uri: http::Uri = format!("/?v={s}").parse().ok()?;
        server::query_value(&uri, "v")
    };
    Some((decode(customer)?, decode(account)?))
}

/// The result row of a card with news: a documented test card's documented result, else what
/// the issuer side made of the card (see [`crate::network`]).
fn news(network: &Network, id: &str, card: &str, exp: Expiry) -> Option<ResultCard> {
    match test_card(card) {
        Some(tc) => Some(result_row(id, card, exp, tc.result.clone())),
        None => network.outcome(card).map(|o| o.row(id, card, exp)),
    }
}

/// Stats of a batch that has no results yet: only the number submitted.
fn submitted_only(n: u64) -> ReportedStats {
    let mut s = Stats::default();
    s.number_submitted = n;
    ReportedStats::from(s)
}

/// The result row of a test card: a new number and expiry for `updated_card`, a new expiry for
/// `updated_expiry`, the card as submitted otherwise.
fn result_row(id: &str, card: &str, exp: Expiry, status: UpdateStatus) -> ResultCard {
    let (card, exp) = match status {
        UpdateStatus::UpdatedCard => (replacement_card(card), replacement_expiry(exp)),
        UpdateStatus::UpdatedExpiry => (card.to_owned(), replacement_expiry(exp)),
        _ => (card.to_owned(), exp),
    };
    ResultCard::new(id, ReturnedCard::new(card), exp.to_string(), status)
}

/// The name the dashboard gives a trigger.
fn trigger_name(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::BatchAvailable => "batch available",
        Trigger::EnrollmentComplete => "enrollment complete",
        Trigger::BatchError => "batch error",
        Trigger::AmexUpdate => "American Express update",
        _ => "other",
    }
}

/// Result counts by status word, zeros left out.
fn status_counts(stats: &Stats) -> BTreeMap<String, u64> {
    UpdateStatus::KNOWN
        .iter()
        .map(|s| (s.as_str().to_owned(), stats.get(s)))
        .chain([("other".to_owned(), stats.other)])
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Result rows, masked, at most [`OVERVIEW_ROWS`].
fn rows_view(rows: &[ResultCard]) -> Vec<ResultView> {
    rows.iter().take(OVERVIEW_ROWS).map(row_view).collect()
}
