//! What every store's runs share: the emulator behind a network that fails as told ([`World`],
//! which is also the runs' [`Transport`]), the cards, and the checks that every card reached
//! CardSync once ([`check_received`]) and every result the output once ([`check_results`]).
//! Nothing here knows how a store is driven.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cardsync_core::{
    Brand, PlanOptions, PlannedRequest, Planner, Record, SANDBOX_TEST_CARDS, SeNumber,
    luhn_check_digit,
};
use cardsync_job::{ResultRow, Summary, Wait};
use cardsync_proto::retry::Reached;
use cardsync_proto::transport::{Transport, TransportError, TransportErrorKind};
use cardsync_proto::{
    BaseUrl, Config, Endpoint, MerchantKey, SetWebhooks, Trigger, WebhookEvent, decode_webhook,
};
use cardsync_sandbox::{Emulator, Settings};

/// A fault the transport injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The connection was refused: the request never left.
    Refused,
    /// 503 from a proxy, before the server saw the request.
    UnavailableBefore,
    /// The server handled it, and the answer was lost (a timeout).
    LostAfter,
    /// The server handled it, then answered 500.
    ErrorAfter,
}

/// The emulator, and what it received.
pub(crate) struct World {
    emulator: Mutex<Emulator>,
    started: Instant,
    /// First card id of each batch the emulator created -> its batch id.
    created: Mutex<HashMap<String, String>>,
    /// Fault plan: a small generator, and the share of calls that fail (per mille).
    faults: Mutex<(u64, u64)>,
    /// Webhook events to deliver (each twice: redeliveries must be recognised).
    events: Mutex<VecDeque<WebhookEvent>>,
}

impl World {
    /// A new emulator (batches complete at once), with webhooks registered for every trigger
    /// a job listens to; `fault_permille` of the calls fail, as drawn from `fault_seed`.
    pub(crate) fn new(fault_seed: u64, fault_permille: u64) -> Arc<World> {
        let mut settings = Settings::default();
        settings.complete_after = Duration::ZERO;
        let world = Arc::new(World {
            emulator: Mutex::new(Emulator::new(settings, SystemTime::now())),
            started: Instant::now(),
            created: Mutex::new(HashMap::new()),
            faults: Mutex::new((fault_seed | 1, fault_permille)),
            events: Mutex::new(VecDeque::new()),
        });
        // Webhooks for every trigger the job listens to.
        let hooks = SetWebhooks::new()
            .with(Trigger::BatchAvailable, "http://hooks.test/w")
            .with(Trigger::BatchError, "http://hooks.test/w")
            .with(Trigger::AmexUpdate, "http://hooks.test/w");
        let request = hooks.encode(&config()).expect("encode");
        let answer = world.handle(&request);
        assert_eq!(answer.status(), 200);
        world
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn handle(&self, request: &http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
        let answer = self.emulator.lock().unwrap().handle(request, self.now());
        if request.uri().path() == "/v2/batch" && request.method() == "POST" {
            let body: serde_json::Value = serde_json::from_slice(request.body()).expect("json");
            let answer_json: serde_json::Value =
                serde_json::from_slice(answer.body()).unwrap_or_default();
            if let (Some(first), Some(batch)) = (
                body["cards"][0]["id"].as_str(),
                answer_json["data"]["batch_id"].as_str(),
            ) {
                self.created
                    .lock()
                    .unwrap()
                    .insert(first.to_owned(), batch.to_owned());
            }
        }
        answer
    }

    fn next_fault(&self) -> Option<Fault> {
        let mut f = self.faults.lock().unwrap();
        // xorshift
        f.0 ^= f.0 << 13;
        f.0 ^= f.0 >> 7;
        f.0 ^= f.0 << 17;
        if f.0 % 1000 >= f.1 {
            return None;
        }
        Some(match (f.0 >> 20) % 4 {
            0 => Fault::Refused,
            1 => Fault::UnavailableBefore,
            2 => Fault::LostAfter,
            _ => Fault::ErrorAfter,
        })
    }

    /// One call over the network: handled by the emulator, unless a fault is drawn (the
    /// request refused or answered 503 before the emulator saw it, or its answer lost or
    /// replaced by a 500 after the emulator handled it).
    pub(crate) fn call(
        &self,
        request: &http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        let status = |code: u16| {
            let mut r =
                http::Response::new(br#"{"status":"failed","message":"injected"}"#.to_vec());
            *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        };
        match self.next_fault() {
            None => Ok(self.handle(request)),
            Some(Fault::Refused) => Err(TransportError::new(
                TransportErrorKind::Connect,
                Reached::No,
            )),
            Some(Fault::UnavailableBefore) => Ok(status(503)),
            Some(Fault::LostAfter) => {
                self.handle(request);
                Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    Reached::Maybe,
                ))
            }
            Some(Fault::ErrorAfter) => {
                self.handle(request);
                Ok(status(500))
            }
        }
    }

    /// Delivers the webhooks the emulator queued (each twice).
    fn pump_webhooks(&self) {
        let outgoing = {
            let mut e = self.emulator.lock().unwrap();
            e.tick(self.now());
            e.take_outgoing()
        };
        let mut events = self.events.lock().unwrap();
        for o in outgoing {
            let event = decode_webhook(&o.body).expect("the emulator's webhook decodes");
            events.push_back(event.clone());
            events.push_back(event);
        }
    }

    /// The next webhook delivery, once the emulator has moved on to now: each event comes
    /// twice.
    pub(crate) fn next_event(&self) -> Option<WebhookEvent> {
        self.pump_webhooks();
        self.events.lock().unwrap().pop_front()
    }

    /// The batch the emulator created for a request whose first card has this id, as a person
    /// finds it in the CardSync dashboard.
    pub(crate) fn created(&self, first_card_id: &str) -> Option<String> {
        self.created.lock().unwrap().get(first_card_id).cloned()
    }

    /// What the emulator received at `endpoint` ("POST /v2/batch").
    pub(crate) fn counts(&self, endpoint: &str) -> cardsync_sandbox::EndpointCounts {
        let counters = self.emulator.lock().unwrap().counters();
        counters.get(endpoint).copied().unwrap_or_default()
    }
}

/// The world as a network: the server sees a request only once the caller waits, as over a
/// network, so that with several calls under way several POSTs are in flight at once.
impl Transport for World {
    async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        tokio::task::yield_now().await;
        self.call(&request)
    }
}

/// The merchant key every run uses.
pub(crate) const MERCHANT_KEY: &str = "sandbox_merchant_key";

/// Where the runs send (the world answers whatever the address), with the merchant key.
pub(crate) fn config() -> Config {
    Config::new(BaseUrl::parse("http://127.0.0.1:1/").unwrap())
        .with_merchant_key(MerchantKey::new(MERCHANT_KEY).unwrap())
}

/// A card number with a valid check digit.
fn pan(prefix: &str, n: usize) -> String {
    let body = format!("{prefix}{n:0width$}", width = 15 - prefix.len());
    let check = luhn_check_digit(&body).expect("digits");
    format!("{body}{}", char::from(check))
}

/// The cards: the documented test cards (every status), 40 more, and the American Express
/// test cards; (id, card, exp, se).
pub(crate) fn cards() -> Vec<(String, String, String, Option<String>)> {
    let mut out = Vec::new();
    for (i, c) in SANDBOX_TEST_CARDS.iter().enumerate() {
        let amex = c.brand == Brand::AmericanExpress;
        out.push((
            format!("t{i}"),
            c.card.to_owned(),
            c.exp.unwrap_or("12/28").to_owned(),
            amex.then(|| "1234567890".to_owned()),
        ));
    }
    for i in 0..40 {
        out.push((
            format!("g{i}"),
            pan(["4", "51", "6011"][i % 3], 5000 + i),
            "07/31".into(),
            None,
        ));
    }
    out
}

/// Cards per request.
pub(crate) const PER_REQUEST: usize = 7;

/// The cards that go in batches.
pub(crate) fn batch_cards() -> u64 {
    cards().iter().filter(|c| c.3.is_none()).count() as u64
}

/// The American Express cards, subscribed.
pub(crate) fn amex_cards() -> u64 {
    cards().iter().filter(|c| c.3.is_some()).count() as u64
}

/// The cards planned into requests, [`PER_REQUEST`] a request: the requests in order, and the
/// rows read.
pub(crate) fn planned() -> (Vec<PlannedRequest>, u64) {
    let options = PlanOptions::default()
        .with_max_per_request(PER_REQUEST)
        .unwrap()
        .with_default_se_number(Some(SeNumber::parse("1234567890").unwrap()));
    let mut planner = Planner::new(options);
    let mut requests = Vec::new();
    for (id, card, exp, se) in &cards() {
        planner.handle_record(Record::new(id, card, exp).with_se_number(se.as_deref()));
        requests.extend(std::iter::from_fn(|| planner.poll_request()));
    }
    planner.finish();
    requests.extend(std::iter::from_fn(|| planner.poll_request()));
    (requests, planner.rows())
}

/// Every batch card reached CardSync exactly once, and every American Express card was
/// subscribed.
pub(crate) fn check_received(world: &World, summary: &Summary) {
    assert_eq!(
        world.counts("POST /v2/batch").cards,
        batch_cards(),
        "{summary:?}"
    );
    assert_eq!(world.counts("POST /v2/batch").repeats, 0);
    assert_eq!(
        world.counts("POST /v2/subscribe").distinct_cards,
        amex_cards()
    );
}

/// Every result once in `rows` (what the sink or the export received), and the counts of
/// `summary` right. `wait`: whether webhooks were awaited (then every American Express update
/// is among the rows).
pub(crate) fn check_results(rows: &[ResultRow], summary: &Summary, wait: Wait) {
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows {
        *per_id.entry(r.id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "results written twice: {twice:?}");
    // Every documented batch test card has its result.
    let batch_test_cards = SANDBOX_TEST_CARDS
        .iter()
        .filter(|c| c.brand != Brand::AmericanExpress)
        .count();
    let test_rows = rows
        .iter()
        .filter(|r| r.id.starts_with('t') && r.batch_id.is_some())
        .count();
    assert_eq!(test_rows, batch_test_cards, "{summary:?}");
    // American Express updates arrive by webhook (a run that waits for webhooks gets them all;
    // the others, those that came while they ran).
    let amex_rows = rows.iter().filter(|r| r.batch_id.is_none()).count() as u64;
    if wait == Wait::Webhook {
        assert_eq!(amex_rows, amex_cards(), "{summary:?}");
    }
    assert_eq!(summary.count("subscribed"), amex_cards() - amex_rows);
    // Counts: every batch card has a status or `no_result`.
    let counted: u64 = summary
        .statuses
        .iter()
        .filter(|s| s.status != "subscribed")
        .map(|s| s.cards)
        .sum::<u64>()
        - amex_rows;
    assert_eq!(counted, batch_cards(), "{summary:?}");
}
