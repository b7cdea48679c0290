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
    Brand, Expiry, Pan, RouteKind, SeNumber, Stats, UpdateStatus, luhn_check_digit, mask_card_text,
    redact_digit_runs, test_card,
};
use cardsync_proto::server::{self, Spelling, StatsBody};
use cardsync_proto::{MerchantEnrollment, SubmittedCard, Trigger, decode_cards_body};
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde::ser::Serializer;
use serde_json::{Value, json};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BatchState {
    Pending,
    Completed,
    Error,
}

impl BatchState {
    fn as_str(self) -> &'static str {
        match self {
            BatchState::Pending => "pending",
            BatchState::Completed => "completed",
            BatchState::Error => "error",
        }
    }
}

/// One result row. Only cards with a result have one: the documented test cards.
#[derive(Clone)]
struct Row {
    id: String,
    card: String,
    exp: String,
    status: UpdateStatus,
    se_number: Option<String>,
}

#[derive(Debug)]
struct Batch {
    /// 1-based order of creation.
    number: u64,
    merchant_id: String,
    created_at: Duration,
    completes_at: Duration,
    state: BatchState,
    validated: bool,
    errors: usize,
    rows: Vec<Row>,
    stats: Stats,
    card_stats: [u64; 4],
    event_id: String,
    completed_at: Option<Duration>,
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
    rows: Vec<Row>,
    stats: Stats,
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
    subscriptions: HashSet<(String, String, String)>,
    pending_amex: Vec<PendingAmex>,
    batches_created: u64,
    amex_events: HashMap<String, AmexEvent>,
    counters: BTreeMap<&'static str, Counter>,
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
            .finish()
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row")
            .field("id", &redact_digit_runs(&self.id))
            .field("card", &mask_card_text(&self.card))
            .field("exp", &self.exp)
            .field("status", &self.status)
            .field("se_number", &self.se_number)
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

fn status_word(status: &UpdateStatus, quirks: bool) -> &str {
    match status {
        UpdateStatus::Closed if quirks => "contact_closed",
        other => other.as_str(),
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

/// The new card number an `updated_card` result carries: the same first six digits (so the
/// same brand), every digit between them and the check digit moved up by one (9 becomes 0), and
/// a new check digit.
pub fn replacement_card(card: &str) -> String {
    let body = &card[..card.len() - 1];
    let mut out: String = body
        .char_indices()
        .map(|(i, c)| {
            if i < 6 {
                c
            } else {
                char::from(b'0' + (c as u8 - b'0' + 1) % 10)
            }
        })
        .collect();
    out.push(char::from(luhn_check_digit(&out).expect("digits")));
    out
}

/// The new expiry an `updated_card` or `updated_expiry` result carries: three years later,
/// same month, at most December 2099.
pub fn replacement_expiry(exp: Expiry) -> Expiry {
    Expiry::new((exp.year() + 3).min(2099), exp.month()).expect("a valid month")
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
            subscriptions: HashSet::new(),
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

    fn message_key(&self) -> &'static str {
        self.spelling().message_key()
    }

    fn respond(&self, status: StatusCode, body: Vec<u8>) -> Answer {
        Response::builder()
            .status(status)
            .header("content-type", "application/json; charset=utf-8")
            .body(body)
            .expect("a valid response")
    }

    /// A success answer, in the proto's own envelope ([`cardsync_proto::server::success`]).
    fn ok_with(&self, data: Option<&impl Serialize>) -> Answer {
        self.respond(StatusCode::OK, server::success(data, self.spelling()))
    }

    fn ok(&self, data: Option<Value>) -> Answer {
        self.ok_with(data.as_ref())
    }

    /// An error answer, in the proto's own envelope ([`cardsync_proto::server::failure`]).
    fn error(&self, status: StatusCode, message: impl Into<String>) -> Answer {
        self.respond(status, server::failure(&message.into(), self.spelling()))
    }

    /// The stats object, written by the proto ([`cardsync_proto::server::StatsBody`]).
    fn stats_json(&self, s: &Stats) -> Value {
        serde_json::to_value(StatsBody::new(s, self.spelling())).unwrap_or_default()
    }

    fn rows_json<'a>(&self, rows: &'a [Row]) -> RowsJson<'a> {
        RowsJson {
            rows,
            quirks: self.settings.quirks,
        }
    }

    fn count(&mut self, endpoint: &'static str, cards: &[SubmittedCard]) {
        let keys = self.keys.clone();
        let counter = self.counters.entry(endpoint).or_default();
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
        request.uri().query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    /// Answers one request at emulator time `now`.
    pub fn handle(&mut self, request: &Request<Vec<u8>>, now: Duration) -> Answer {
        self.tick(now);
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let known = [
            "/v2/webhooks",
            "/v2/webhook",
            "/v2/merchant",
            "/v2/batch",
            "/v2/batch/results",
            "/v2/subscribe",
            "/v2/subscription/results",
        ];
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
            (_, "/v2/webhooks" | "/v2/webhook", _) | (Caller::Partner, "/v2/merchant", _) => None,
            (Caller::Merchant(m), _, _) => Some(m.clone()),
            (Caller::Partner, _, _) => {
                return self.error(
                    StatusCode::FORBIDDEN,
                    "the partner master key only enrolls merchants and sets webhooks; use the merchant's key",
                );
            }
        };
        match (method, path.as_str(), merchant) {
            (Method::POST, "/v2/webhooks", _) => self.set_webhooks(&caller, request.body()),
            (Method::POST, "/v2/webhook", _) => self.set_amex_webhook(&caller, request.body()),
            (Method::POST, "/v2/merchant", None) => self.enroll(request.body(), now),
            (Method::GET, "/v2/merchant", None) => self.merchant_status(request),
            (Method::POST, "/v2/batch", Some(m)) => self.create_batch(&m, request.body(), now),
            (Method::GET, "/v2/batch", Some(m)) => self.batch_status(&m, request),
            (Method::GET, "/v2/batch/results", Some(m)) => self.batch_results(&m, request),
            (Method::POST, "/v2/subscribe", Some(m)) => self.subscribe(&m, request.body(), now),
            (Method::DELETE, "/v2/subscribe", Some(m)) => self.unsubscribe(&m, request.body()),
            (Method::GET, "/v2/subscription/results", Some(m)) => {
                self.subscription_results(&m, request)
            }
            (Method::POST | Method::GET, "/v2/merchant", Some(_)) => self.error(
                StatusCode::FORBIDDEN,
                "merchant enrollment needs the partner master key",
            ),
            (method, path, _) => {
                let allow = match path {
                    "/v2/merchant" | "/v2/batch" => "GET, POST",
                    "/v2/subscribe" => "POST, DELETE",
                    "/v2/webhooks" | "/v2/webhook" => "POST",
                    _ => "GET",
                };
                let mut answer = self.error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed on {path}"),
                );
                answer
                    .headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
                answer
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
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return self.error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
        };
        let mut pairs = Vec::new();
        if let Some(list) = map.get("webhooks") {
            let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
                return self.error(StatusCode::BAD_REQUEST, "webhooks must be a non-empty list");
            };
            for item in list {
                match parse_registration(item) {
                    Ok(pair) => pairs.push(pair),
                    Err(e) => return self.error(StatusCode::BAD_REQUEST, e),
                }
            }
        } else {
            let flat = [
                ("batch_completion_webhook", Trigger::BatchAvailable),
                ("merchant_enrollment_webhook", Trigger::EnrollmentComplete),
                ("batch_error_webhook", Trigger::BatchError),
                ("amex_update_webhook", Trigger::AmexUpdate),
            ];
            for (key, value) in &map {
                let Some((_, trigger)) = flat.iter().find(|(k, _)| k == key) else {
                    return self.error(StatusCode::BAD_REQUEST, format!("unknown field {key}"));
                };
                match value.as_str().filter(|u| !u.is_empty()) {
                    Some(url) => pairs.push((*trigger, url.to_owned())),
                    None => {
                        return self.error(StatusCode::BAD_REQUEST, format!("{key} must be a URL"));
                    }
                }
            }
            if pairs.is_empty() {
                return self.error(StatusCode::BAD_REQUEST, "no webhooks given");
            }
        }
        let table = self.webhook_table(caller);
        for (trigger, url) in pairs {
            table.insert(trigger, url);
        }
        self.ok(None)
    }

    fn set_amex_webhook(&mut self, caller: &Caller, body: &[u8]) -> Answer {
        let item = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
        match parse_registration(&item) {
            Ok((trigger, url)) => {
                self.webhook_table(caller).insert(trigger, url);
                self.ok(None)
            }
            Err(e) => self.error(StatusCode::BAD_REQUEST, e),
        }
    }

    fn enroll(&mut self, body: &[u8], now: Duration) -> Answer {
        let merchant: MerchantEnrollment = match serde_json::from_slice(body) {
            Ok(m) => m,
            Err(e) => {
                let msg = e.to_string();
                let msg = msg.split(" at line").next().unwrap_or("");
                return self.error(StatusCode::BAD_REQUEST, format!("invalid merchant: {msg}"));
            }
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
        self.merchants.insert(
            id.clone(),
            Merchant {
                key: key.clone(),
                legal_business_name: merchant.legal_business_name,
                username: merchant.user.username,
                completes_at: now + self.settings.complete_after,
                completed: false,
                webhooks: HashMap::new(),
            },
        );
        let created = self.timestamp(now);
        self.ok(Some(
            json!({"merchant_id": id, "api_key": key, "created_at": created}),
        ))
    }

    fn merchant_status(&mut self, request: &Request<Vec<u8>>) -> Answer {
        let Some(id) = Self::query(request, "merchant_id").filter(|s| !s.is_empty()) else {
            return self.error(StatusCode::BAD_REQUEST, "merchant_id is required");
        };
        match self.merchants.get(&id) {
            Some(m) => {
                let state = if m.completed { "completed" } else { "pending" };
                self.ok(Some(json!({"merchant_id": id, "status": state})))
            }
            None => self.error(StatusCode::NOT_FOUND, format!("no merchant {id}")),
        }
    }

    fn cards_body(body: &[u8]) -> Result<Vec<SubmittedCard>, Refusal> {
        // The client library reads leniently; the emulator, like a strict server, refuses card
        // fields that are not strings, so that clients find out before production does.
        // The common case, a well-formed body, is checked without building a JSON tree; only a
        // body that fails the quick check is walked again to say which card is wrong.
        if !strict::fields_are_strings(body)
            && let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body)
            && let Some(Value::Array(cards)) = map.get("cards")
        {
            for (i, card) in cards.iter().enumerate() {
                let Value::Object(fields) = card else {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!("cards[{i}] is not an object"),
                    ));
                };
                for name in ["id", "card", "exp", "se_number", "se"] {
                    if fields.get(name).is_some_and(|v| !v.is_string()) {
                        return Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            format!("cards[{i}].{name} must be a string"),
                        ));
                    }
                }
            }
        }
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
        self.count("POST /v2/batch", &cards);
        let mut batch = Batch {
            merchant_id: merchant.to_owned(),
            created_at: now,
            completes_at: now + self.settings.complete_after,
            state: BatchState::Pending,
            validated: false,
            errors: 0,
            number: {
                self.batches_created += 1;
                self.batches_created
            },
            rows: Vec::new(),
            stats: Stats::default(),
            card_stats: [0; 4],
            event_id: self.new_uuid(),
            completed_at: None,
        };
        batch.stats.number_submitted = cards.len() as u64;
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
            match test_card(digits.as_str()) {
                Some(tc) => {
                    batch.stats.record(&tc.result);
                    batch
                        .rows
                        .push(result_row(id, digits.as_str(), exp, &tc.result, None));
                }
                None => {
                    batch.stats.no_change += 1;
                    if self.settings.report_unchanged {
                        batch.rows.push(result_row(
                            id,
                            digits.as_str(),
                            exp,
                            &UpdateStatus::NoChange,
                            None,
                        ));
                    }
                }
            }
        }
        let id = self.new_id("b");
        let data = json!({
            "batch_id": id,
            "status": "pending",
            "stats": self.stats_json(&submitted_only(batch.stats.number_submitted)),
            "created_at": self.timestamp(now),
            "updated_at": self.timestamp(now),
        });
        self.batches.insert(id, batch);
        self.ok(Some(data))
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
        let stats = if b.state == BatchState::Completed {
            b.stats
        } else {
            submitted_only(b.stats.number_submitted)
        };
        let updated = b.completed_at.unwrap_or(b.created_at);
        let data = json!({
            "batch_id": id,
            "status": b.state.as_str(),
            "stats": self.stats_json(&stats),
            "created_at": self.timestamp(b.created_at),
            "updated_at": self.timestamp(updated),
        });
        self.ok(Some(data))
    }

    fn batch_results(&mut self, merchant: &str, request: &Request<Vec<u8>>) -> Answer {
        let (id, b) = match self.find_batch(merchant, request) {
            Ok(found) => found,
            Err(Refusal(status, message)) => return self.error(status, message),
        };
        if let Some(event) = Self::query(request, "event_id")
            && (event != b.event_id || b.state != BatchState::Completed)
        {
            return self.error(
                StatusCode::NOT_FOUND,
                format!("batch {id} has no event {event}"),
            );
        }
        match b.state {
            BatchState::Completed => {}
            BatchState::Pending => {
                return self.error(StatusCode::CONFLICT, format!("batch {id} is not complete yet; wait for the batch-available webhook or poll GET /v2/batch"));
            }
            BatchState::Error => {
                return self.error(
                    StatusCode::CONFLICT,
                    format!(
                        "batch {id} failed validation with {} errors and has no results",
                        b.errors
                    ),
                );
            }
        }
        let data = ResultsData {
            batch_id: Some(&id),
            cards: self.rows_json(&b.rows),
            created_at: self.timestamp(b.created_at),
            stats: self.stats_json(&b.stats),
            status: "completed",
            updated_at: self.timestamp(b.completed_at.unwrap_or(b.created_at)),
        };
        self.ok_with(Some(&data))
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
            self.count("POST /v2/subscribe", &cards);
        }
        let pairs = match self.subscription_cards(body) {
            Ok(p) => p,
            Err(Refusal(status, message)) => return self.error(status, message),
        };
        let mut updates = Vec::new();
        for (card, se, id, exp) in pairs {
            let is_test = test_card(&card).is_some();
            // A subscription is a set of pairs: subscribing a pair again changes nothing, and
            // fires no second update.
            let new = self
                .subscriptions
                .insert((merchant.to_owned(), card.clone(), se.clone()));
            if is_test && new {
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
        self.ok(None)
    }

    fn unsubscribe(&mut self, merchant: &str, body: &[u8]) -> Answer {
        if let Ok(cards) = decode_cards_body(body) {
            self.count("DELETE /v2/subscribe", &cards);
        }
        let pairs = match self.subscription_cards(body) {
            Ok(p) => p,
            Err(Refusal(status, message)) => return self.error(status, message),
        };
        for (card, se, _, _) in pairs {
            self.subscriptions.remove(&(merchant.to_owned(), card, se));
        }
        self.ok(None)
    }

    fn subscription_results(&mut self, merchant: &str, request: &Request<Vec<u8>>) -> Answer {
        let Some(event_id) = Self::query(request, "event_id").filter(|s| !s.is_empty()) else {
            return self.error(StatusCode::BAD_REQUEST, "event_id is required");
        };
        match self.amex_events.get(&event_id) {
            Some(e) if e.merchant_id == merchant => {
                let data = ResultsData {
                    batch_id: None,
                    cards: self.rows_json(&e.rows),
                    created_at: self.timestamp(e.fired_at),
                    stats: self.stats_json(&e.stats),
                    status: "completed",
                    updated_at: self.timestamp(e.fired_at),
                };
                self.ok_with(Some(&data))
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

    fn trigger_json(&self, trigger: Trigger) -> String {
        if self.settings.quirks {
            format!("\"{}\"", trigger.id())
        } else {
            trigger.id().to_string()
        }
    }

    /// Webhook stats. With quirks, the `closed` counter is written twice, zero first, as the
    /// documents' examples do (with `contact_closed` for American Express updates).
    fn webhook_stats(&self, s: &Stats, trigger: Trigger) -> String {
        let mut out = format!(
            "{{\"updated_expiry\":{},\"updated_card\":{},\"no_change\":{},\"no_match\":{},\"valid\":{},\"contact\":{},",
            s.updated_expiry, s.updated_card, s.no_change, s.no_match, s.valid, s.contact
        );
        if self.settings.quirks {
            let second = if trigger == Trigger::AmexUpdate {
                "contact_closed"
            } else {
                "closed"
            };
            out.push_str(&format!(
                "\"closed\":0,\"number_submitted\":{},\"{second}\":{}}}",
                s.number_submitted, s.closed
            ));
        } else {
            out.push_str(&format!(
                "\"closed\":{},\"number_submitted\":{}}}",
                s.closed, s.number_submitted
            ));
        }
        out
    }

    fn queue(
        &mut self,
        merchant: Option<&str>,
        trigger: Trigger,
        event_id: Option<String>,
        body: impl FnOnce(&Self, &str) -> String,
    ) {
        let Some(url) = self.webhook_url(merchant, trigger) else {
            return;
        };
        let delivery_id = self.new_uuid();
        let body = body(self, &delivery_id).into_bytes();
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
        let msg = self.message_key();
        // Enrollments.
        let done: Vec<String> = self
            .merchants
            .iter()
            .filter(|(_, m)| !m.completed && m.completes_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            self.merchants.get_mut(&id).expect("listed").completed = true;
            self.queue(None, Trigger::EnrollmentComplete, None, |_, _| {
                json!({"status": "success", msg: "success", "merchant_id": id}).to_string()
            });
        }
        // Batches: validation happens on the first tick after creation, completion after the
        // configured delay.
        let mut ids: Vec<String> = self
            .batches
            .iter()
            .filter(|(_, b)| {
                b.state == BatchState::Pending && (!b.validated || b.completes_at <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        for id in ids {
            let b = self.batches.get_mut(&id).expect("listed");
            b.validated = true;
            let (merchant, event_id, at) = (b.merchant_id.clone(), b.event_id.clone(), now);
            if b.errors > 0 {
                b.state = BatchState::Error;
                b.completed_at = Some(now);
                let errors = b.errors;
                let trigger = self.trigger_json(Trigger::BatchError);
                let date = self.timestamp(at);
                self.queue(Some(&merchant), Trigger::BatchError, Some(event_id.clone()), |_, delivery| {
                    format!(
                        "{{\"batch_id\":{},\"id\":{},\"trigger_id\":{trigger},\"trigger_date\":{},\"event_id\":{},\"source\":\"Validation\",\"{msg}\":{},\"error_count\":{errors}}}",
                        json!(id), json!(delivery), json!(date), json!(event_id),
                        json!(format!("{errors} errors occurred during the batch validation process"))
                    )
                });
            } else if b.completes_at <= now {
                b.state = BatchState::Completed;
                b.completed_at = Some(now);
                let (stats, cs) = (b.stats, b.card_stats);
                let trigger = self.trigger_json(Trigger::BatchAvailable);
                let (date, expires) = (self.timestamp(at), self.timestamp(at + RESULTS_KEPT_FOR));
                let stats = self.webhook_stats(&stats, Trigger::BatchAvailable);
                self.queue(Some(&merchant), Trigger::BatchAvailable, Some(event_id.clone()), |_, delivery| {
                    format!(
                        "{{\"batch_id\":{},\"card_stats\":{{\"visa\":{},\"mastercard\":{},\"discover\":{},\"american_express\":{}}},\"stats\":{stats},\"id\":{},\"trigger_id\":{trigger},\"trigger_date\":{},\"event_id\":{},\"{msg}\":\"\",\"expires\":{}}}",
                        json!(id), cs[0], cs[1], cs[2], cs[3], json!(delivery), json!(date), json!(event_id), json!(expires)
                    )
                });
            }
        }
        // American Express updates for pairs still subscribed.
        let (due, later): (Vec<PendingAmex>, Vec<PendingAmex>) =
            std::mem::take(&mut self.pending_amex)
                .into_iter()
                .partition(|p| p.due <= now);
        self.pending_amex = later;
        for p in due {
            let mut rows = Vec::new();
            let mut stats = Stats::default();
            for (card, se, id, exp) in &p.pairs {
                if !self
                    .subscriptions
                    .contains(&(p.merchant_id.clone(), card.clone(), se.clone()))
                {
                    continue;
                }
                let Some(tc) = test_card(card) else { continue };
                let exp = Expiry::parse(exp).expect("validated on subscribe");
                stats.number_submitted += 1;
                stats.record(&tc.result);
                rows.push(result_row(id, card, exp, &tc.result, Some(se.clone())));
            }
            if rows.is_empty() {
                continue;
            }
            let event_id = self.new_uuid();
            let trigger = self.trigger_json(Trigger::AmexUpdate);
            let (date, expires) = (self.timestamp(now), self.timestamp(now + RESULTS_KEPT_FOR));
            let stats_json = self.webhook_stats(&stats, Trigger::AmexUpdate);
            self.amex_events.insert(
                event_id.clone(),
                AmexEvent {
                    merchant_id: p.merchant_id.clone(),
                    rows,
                    stats,
                    fired_at: now,
                },
            );
            let ev = event_id.clone();
            self.queue(Some(&p.merchant_id), Trigger::AmexUpdate, Some(event_id), |_, delivery| {
                format!(
                    "{{\"stats\":{stats_json},\"id\":{},\"trigger_id\":{trigger},\"trigger_date\":{},\"event_id\":{},\"{msg}\":\"\",\"expires\":{}}}",
                    json!(delivery), json!(date), json!(ev), json!(expires)
                )
            });
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

    /// The ids of the batches kept, oldest first.
    pub fn batch_ids(&self) -> Vec<String> {
        let mut ids: Vec<(u64, &String)> =
            self.batches.iter().map(|(id, b)| (b.number, id)).collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// The counters of cards received, per endpoint, as JSON: requests, cards, distinct cards,
    /// repeats.
    pub fn counters_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (endpoint, c) in &self.counters {
            out.insert(
                (*endpoint).to_owned(),
                json!({
                    "requests": c.requests,
                    "cards": c.cards,
                    "distinct_cards": c.distinct.len(),
                    "repeats": c.cards - c.distinct.len() as u64,
                }),
            );
        }
        Value::Object(out)
    }
}

/// Stats of a batch that has no results yet: only the number submitted.
fn submitted_only(n: u64) -> Stats {
    let mut s = Stats::default();
    s.number_submitted = n;
    s
}

/// The `data` of a results answer (batch or American Express event). Fields in sorted order,
/// as a `serde_json::Value` object would print them.
#[derive(Serialize)]
struct ResultsData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_id: Option<&'a str>,
    cards: RowsJson<'a>,
    created_at: String,
    stats: Value,
    status: &'static str,
    updated_at: String,
}

/// Result rows as a JSON array, serialized straight from the stored rows.
struct RowsJson<'a> {
    rows: &'a [Row],
    quirks: bool,
}

impl Serialize for RowsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct RowJson<'a> {
            card: &'a str,
            exp: &'a str,
            id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            se_number: Option<&'a str>,
            status: &'a str,
        }
        s.collect_seq(self.rows.iter().map(|r| RowJson {
            card: &r.card,
            exp: &r.exp,
            id: &r.id,
            se_number: r.se_number.as_deref(),
            status: status_word(&r.status, self.quirks),
        }))
    }
}

fn result_row(id: &str, card: &str, exp: Expiry, status: &UpdateStatus, se: Option<String>) -> Row {
    let (card, exp) = match status {
        UpdateStatus::UpdatedCard => (replacement_card(card), replacement_expiry(exp)),
        UpdateStatus::UpdatedExpiry => (card.to_owned(), replacement_expiry(exp)),
        _ => (card.to_owned(), exp),
    };
    Row {
        id: id.to_owned(),
        card,
        exp: exp.to_string(),
        status: status.clone(),
        se_number: se,
    }
}

fn parse_registration(item: &Value) -> Result<(Trigger, String), String> {
    let id = match item.get("trigger_id") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let trigger = id
        .and_then(|id| u32::try_from(id).ok())
        .and_then(Trigger::from_id)
        .ok_or_else(|| "trigger_id must be 20, 21, 22 or 23".to_owned())?;
    let url = item
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| "url must be a non-empty string".to_owned())?;
    Ok((trigger, url.to_owned()))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The emulator's strict reading of card bodies, without building anything.
mod strict {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

    /// The card fields that must be JSON strings when present.
    const STRING_FIELDS: [&str; 5] = ["id", "card", "exp", "se_number", "se"];

    /// True when `body` is an object whose `cards` is a list of objects in which every field of
    /// [`STRING_FIELDS`] that is present is a string. False for anything else, including bodies
    /// that are not JSON (the caller then looks closer).
    pub(super) fn fields_are_strings(body: &[u8]) -> bool {
        let mut de = serde_json::Deserializer::from_slice(body);
        de.deserialize_map(Body).is_ok() && de.end().is_ok()
    }

    /// A map key, classified without allocating.
    enum Key {
        Cards,
        StringField,
        Other,
    }

    impl<'de> de::Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Key;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
                    Ok(if k == "cards" {
                        Key::Cards
                    } else if STRING_FIELDS.contains(&k) {
                        Key::StringField
                    } else {
                        Key::Other
                    })
                }
            }
            d.deserialize_str(V)
        }
    }

    /// Accepts a JSON string and nothing else.
    struct Text;

    impl<'de> de::Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Text;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<Text, E> {
                    Ok(Text)
                }
            }
            d.deserialize_str(V)
        }
    }

    struct Body;

    impl<'de> Visitor<'de> for Body {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object with a cards list")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut cards = false;
            while let Some(key) = map.next_key::<Key>()? {
                match key {
                    Key::Cards => {
                        map.next_value_seed(Cards)?;
                        cards = true;
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            if cards {
                Ok(())
            } else {
                Err(de::Error::missing_field("cards"))
            }
        }
    }

    struct Cards;

    impl<'de> DeserializeSeed<'de> for Cards {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Cards {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of cards")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Card)?.is_some() {}
            Ok(())
        }
    }

    struct Card;

    impl<'de> DeserializeSeed<'de> for Card {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Card {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a card object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<Key>()? {
                match key {
                    Key::StringField => {
                        map.next_value::<Text>()?;
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::fields_are_strings;

        #[test]
        fn only_string_card_fields_pass() {
            assert!(fields_are_strings(
                br#"{"cards":[{"id":"a","card":"4","exp":"01/50","x":1}],"y":[1]}"#
            ));
            assert!(fields_are_strings(br#"{"cards":[]}"#));
            for bad in [
                &br#"{"cards":[{"id":1}]}"#[..],
                br#"{"cards":[{"card":null}]}"#,
                br#"{"cards":[{"se":["1"]}]}"#,
                br#"{"cards":[1]}"#,
                br#"{"cards":{}}"#,
                br#"{"other":[]}"#,
                br#"{"cards":[]} x"#,
                br#"[]"#,
                b"",
            ] {
                assert!(!fields_are_strings(bad), "{}", String::from_utf8_lossy(bad));
            }
        }
    }
}
