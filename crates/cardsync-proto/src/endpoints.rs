//! One type per CardSync endpoint, each encoding an `http::Request` and decoding an
//! `http::Response`.

use std::fmt;

use cardsync_core::{
    Expiry, MAX_CARDS_PER_REQUEST, Pan, PlannedRequest, Route, RouteKind, SeNumber,
};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, Response, StatusCode};
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, Visitor};

use crate::error::{JsonError, Violation, safe_message};
use crate::lenient::{Key, skip, write_json_str};
use crate::model::{BatchData, Envelope, Ignored, MerchantData};
use crate::paths;
use crate::webhook::Trigger;
use crate::{
    Ack, BatchCreated, BatchInfo, BatchState, Config, DecodeError, EncodeError, KeyScope,
    MerchantEnrolled, MerchantEnrollment, MerchantKey, MerchantStatus, Results, ReturnedCard,
};

/// Whether resending a request can change what the server does: the input of the retry
/// decision ([`crate::retry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Idempotency {
    /// Sending it twice is the same as sending it once (reads, and writes that set state).
    Idempotent,
    /// Sending it twice may do it twice (batch creation: billed twice; enrollment).
    NotIdempotent,
}

/// A CardSync endpoint: how to build its request and read its response.
///
/// The call protocol is `encode`, send the request with any HTTP client, then `decode` the
/// response. Nothing here does I/O.
///
/// ```
/// use cardsync_proto::{BaseUrl, Config, Endpoint, GetBatch, MerchantKey};
///
/// let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("key")?);
/// let request = GetBatch::new("b 1").encode(&config)?;
/// assert_eq!(request.uri(), "https://sandbox.cardsync.io/v2/batch?batch_id=b%201");
/// assert_eq!(request.headers()["authorization"], "key");
///
/// let response = http::Response::new(
///     br#"{"status":"success","message":"success","data":{"batch_id":"b 1","status":"pending"}}"#
///         .to_vec(),
/// );
/// let info = GetBatch::decode(&response)?;
/// assert_eq!(info.status, cardsync_proto::BatchState::Pending);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Endpoint {
    /// What a successful response decodes to.
    type Output;
    /// The HTTP method.
    const METHOD: Method;
    /// The path, from the base URL.
    const PATH: &'static str;
    /// The key that signs the request, unless [`Endpoint::scope`] says otherwise for one
    /// request.
    const SCOPE: KeyScope;
    /// Whether the request may be resent freely.
    const IDEMPOTENCY: Idempotency;

    /// The key that signs this request: [`Endpoint::SCOPE`], except for the webhook
    /// registrations, which either key may sign.
    fn scope(&self) -> KeyScope {
        Self::SCOPE
    }

    /// Builds the request.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when the configuration lacks the key or the request is not valid.
    fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError>;

    /// Reads the response.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for a non-2xx status, a body that is not JSON, JSON that does not fit,
    /// a body saying the call failed, or a protocol violation.
    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<Self::Output, DecodeError>;
}

/// Percent-encodes a query value, keeping only RFC 3986's unreserved characters.
pub(crate) fn encode_query_value(out: &mut String, value: &str) {
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// Builds an endpoint's request the way every endpoint here does: its method and path on the
/// configured base URL, the query (percent-encoded), the key its scope needs in
/// `Authorization`, `Accept` and `User-Agent`, and, with a body, `Content-Type:
/// application/json`. For an endpoint of one's own, so that nobody builds a request by hand.
///
/// # Errors
///
/// [`EncodeError`] when the configuration lacks the key or the URI is not valid.
///
/// ```
/// use cardsync_proto::{BaseUrl, Config, GetBatch, MerchantKey, build};
///
/// let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("key")?);
/// let request = build(&GetBatch::new("b1"), &config, &[("batch_id", "b 1")], None)?;
/// assert_eq!(request.uri(), "https://sandbox.cardsync.io/v2/batch?batch_id=b%201");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn build<E: Endpoint>(
    endpoint: &E,
    config: &Config,
    query: &[(&'static str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Request<Vec<u8>>, EncodeError> {
    let mut q = String::new();
    for (i, (k, v)) in query.iter().enumerate() {
        if i > 0 {
            q.push('&');
        }
        q.push_str(k);
        q.push('=');
        encode_query_value(&mut q, v);
    }
    let uri = config.base_url().join(E::PATH, &q)?;
    let mut builder = Request::builder()
        .method(E::METHOD)
        .uri(uri)
        .header(AUTHORIZATION, config.authorization(endpoint.scope())?)
        .header(ACCEPT, "application/json")
        .header(USER_AGENT, config.user_agent().clone());
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    builder
        .body(body.unwrap_or_default())
        .map_err(|_| EncodeError::InvalidUri {
            path: E::PATH.to_owned(),
        })
}

/// Builds a bodyless request whose query parameters are all required to be non-empty.
fn build_query<E: Endpoint>(
    endpoint: &E,
    config: &Config,
    query: &[(&'static str, &str)],
) -> Result<Request<Vec<u8>>, EncodeError> {
    if let Some((field, _)) = query.iter().find(|(_, value)| value.is_empty()) {
        return Err(EncodeError::EmptyField { field });
    }
    build(endpoint, config, query, None)
}

fn content_type<B>(response: &Response<B>) -> Option<String> {
    response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| safe_message(&String::from_utf8_lossy(v.as_bytes())))
}

fn looks_like_json(body: &[u8]) -> bool {
    matches!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// Locates a decoding error: the JSON path, found by decoding again with path tracking (only
/// on the error path, so successful decodes pay nothing for it).
pub(crate) fn json_error<T: DeserializeOwned>(body: &[u8], first: &serde_json::Error) -> JsonError {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Err(e) => JsonError::new(e.inner(), e.path().to_string()),
        Ok(_) => JsonError::new(first, ".".to_owned()),
    }
}

/// The error for a response whose status is not a success: the status, the server's message
/// when the body is a JSON object with one (`message`, `msg`), made safe, and never the body.
pub(crate) fn status_error<B: AsRef<[u8]>>(response: &Response<B>) -> DecodeError {
    let body = response.body().as_ref();
    let parsed = looks_like_json(body)
        .then(|| serde_json::from_slice::<Envelope<Ignored>>(body).ok())
        .flatten();
    let (api_status, message) = parsed.map_or((None, None), |e| (e.status, e.message));
    DecodeError::Status {
        status: response.status(),
        api_status: api_status.map(|s| safe_message(&s)),
        message: message.map(|m| safe_message(&m)).filter(|m| !m.is_empty()),
        content_type: content_type(response),
        length: body.len(),
    }
}

/// Decodes a response that is a plain JSON object (no envelope), as the issuer-side APIs
/// answer: status check, JSON check, then `T`.
pub(crate) fn decode_plain<T: DeserializeOwned, B: AsRef<[u8]>>(
    response: &Response<B>,
) -> Result<T, DecodeError> {
    let status = response.status();
    if !status.is_success() {
        return Err(status_error(response));
    }
    let body = response.body().as_ref();
    if !looks_like_json(body) {
        return Err(DecodeError::NotJson {
            status,
            content_type: content_type(response),
            length: body.len(),
        });
    }
    serde_json::from_slice::<T>(body).map_err(|e| DecodeError::Json {
        status,
        error: json_error::<T>(body, &e),
    })
}

/// Decodes any response's envelope: status checks, JSON checks, and the `status` word.
pub(crate) fn decode_envelope<T: DeserializeOwned, B: AsRef<[u8]>>(
    response: &Response<B>,
) -> Result<(StatusCode, Envelope<T>), DecodeError> {
    decode_envelope_with(response, |_| None)
}

/// [`decode_envelope`], trying `fast` on the text first (see [`crate::scan`]); serde reads
/// whatever `fast` declines.
fn decode_envelope_with<T: DeserializeOwned, B: AsRef<[u8]>>(
    response: &Response<B>,
    fast: impl FnOnce(&str) -> Option<Envelope<T>>,
) -> Result<(StatusCode, Envelope<T>), DecodeError> {
    let status = response.status();
    let body = response.body().as_ref();
    if !status.is_success() {
        return Err(status_error(response));
    }
    if !looks_like_json(body) {
        return Err(DecodeError::NotJson {
            status,
            content_type: content_type(response),
            length: body.len(),
        });
    }
    // One UTF-8 check of the whole body is much cheaper than serde_json's check of every
    // string; bodies that are not UTF-8 take the slice path, which reports where.
    let parsed = match std::str::from_utf8(body) {
        Ok(text) => match fast(text) {
            Some(envelope) => Ok(envelope),
            None => serde_json::from_str::<Envelope<T>>(text),
        },
        Err(_) => serde_json::from_slice::<Envelope<T>>(body),
    };
    let envelope: Envelope<T> = parsed.map_err(|e| DecodeError::Json {
        status,
        error: json_error::<Envelope<T>>(body, &e),
    })?;
    if let Some(word) = &envelope.status
        && crate::error::is_failure_word(word)
    {
        return Err(DecodeError::Failed {
            status,
            api_status: safe_message(word),
            message: envelope.message.as_deref().map(safe_message),
        });
    }
    Ok((status, envelope))
}

fn ack<B: AsRef<[u8]>>(response: &Response<B>) -> Result<Ack, DecodeError> {
    let (_, e) = decode_envelope::<Ignored, _>(response)?;
    Ok(Ack {
        status: e.status,
        message: e.message.as_deref().map(safe_message),
    })
}

fn batch_info(data: BatchData) -> BatchInfo {
    BatchInfo {
        batch_id: data.batch_id,
        status: BatchState::parse(data.status.as_deref().unwrap_or("")),
        stats: data.stats,
        created_at: data.created_at,
        updated_at: data.updated_at,
    }
}

fn results<B: AsRef<[u8]>>(response: &Response<B>) -> Result<Results, DecodeError> {
    let (status, e) = decode_envelope_with::<BatchData, _>(response, crate::scan::results)?;
    let data = e.data.ok_or(DecodeError::Protocol {
        status,
        violation: Violation::MissingData,
    })?;
    Ok(Results {
        batch_id: data.batch_id,
        status: BatchState::parse(data.status.as_deref().unwrap_or("")),
        cards: data.cards,
        stats: data.stats,
        created_at: data.created_at,
        updated_at: data.updated_at,
    })
}

// ---------------------------------------------------------------------------------------------
// Cards in request bodies.

/// A card for a batch request: Visa, Mastercard or Discover. `Debug` masks the card, and
/// anything in the id that looks like a card number.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchCard {
    /// The merchant's id for the card.
    pub id: String,
    /// The card number.
    pub pan: Pan,
    /// The expiry date.
    pub exp: Expiry,
}

impl fmt::Debug for BatchCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchCard")
            .field("id", &cardsync_core::redact_digit_runs(&self.id))
            .field("pan", &self.pan)
            .field("exp", &self.exp)
            .finish()
    }
}

impl BatchCard {
    /// A batch card.
    pub fn new(id: impl Into<String>, pan: Pan, exp: Expiry) -> BatchCard {
        BatchCard {
            id: id.into(),
            pan,
            exp,
        }
    }
}

/// A card for a subscription request: American Express, with its SE number. `Debug` masks
/// the card, and anything in the id that looks like a card number.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionCard {
    /// The SE number the subscription belongs to.
    pub se_number: SeNumber,
    /// The merchant's id for the card.
    pub id: String,
    /// The card number.
    pub pan: Pan,
    /// The expiry date.
    pub exp: Expiry,
}

impl fmt::Debug for SubscriptionCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionCard")
            .field("se_number", &self.se_number)
            .field("id", &cardsync_core::redact_digit_runs(&self.id))
            .field("pan", &self.pan)
            .field("exp", &self.exp)
            .finish()
    }
}

impl SubscriptionCard {
    /// A subscription card.
    pub fn new(se_number: SeNumber, id: impl Into<String>, pan: Pan, exp: Expiry) -> Self {
        SubscriptionCard {
            se_number,
            id: id.into(),
            pan,
            exp,
        }
    }
}

fn check_count(n: usize) -> Result<(), EncodeError> {
    match n {
        0 => Err(EncodeError::NoCards),
        n if n > MAX_CARDS_PER_REQUEST => Err(EncodeError::TooManyCards { count: n }),
        _ => Ok(()),
    }
}

/// Writes `"card":"<digits>","exp":"MM/YY"}` for one card.
fn write_card_tail(out: &mut Vec<u8>, pan: &Pan, exp: Expiry) {
    out.extend_from_slice(b",\"card\":\"");
    pan.expose_into(out);
    let (m, y) = (exp.month(), exp.year() % 100);
    out.extend_from_slice(&[
        b'"',
        b',',
        b'"',
        b'e',
        b'x',
        b'p',
        b'"',
        b':',
        b'"',
        b'0' + m / 10,
        b'0' + m % 10,
        b'/',
        b'0' + (y / 10) as u8,
        b'0' + (y % 10) as u8,
        b'"',
        b'}',
    ]);
}

fn batch_body(cards: &[BatchCard]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + cards.iter().map(|c| c.id.len() + 56).sum::<usize>());
    out.extend_from_slice(b"{\"cards\":[");
    for (i, c) in cards.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        write_json_str(&mut out, &c.id);
        write_card_tail(&mut out, &c.pan, c.exp);
    }
    out.extend_from_slice(b"]}");
    out
}

fn subscription_body(cards: &[SubscriptionCard]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + cards.iter().map(|c| c.id.len() + 80).sum::<usize>());
    out.extend_from_slice(b"{\"cards\":[");
    for (i, c) in cards.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"se_number\":");
        write_json_str(&mut out, c.se_number.as_str());
        out.extend_from_slice(b",\"id\":");
        write_json_str(&mut out, &c.id);
        write_card_tail(&mut out, &c.pan, c.exp);
    }
    out.extend_from_slice(b"]}");
    out
}

/// A card as it arrived in a request body, before any validation: what a server (such as the
/// local emulator) reads from `POST /v2/batch`, `POST /v2/subscribe` and
/// `DELETE /v2/subscribe`. Missing fields are `None`; the card number is masked in `Debug`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubmittedCard {
    /// `id`.
    pub id: Option<String>,
    /// `card`, unvalidated.
    pub card: Option<ReturnedCard>,
    /// `exp`, unvalidated.
    pub exp: Option<String>,
    /// `se_number` (or `se`).
    pub se_number: Option<String>,
}

// A server reads what clients send strictly: the card fields are strings (a number or a
// `null` is refused, naming the card and the field), so that a client finds out from the
// emulator rather than from production. Unknown fields are skipped.
crate::lenient::lenient_object!(SubmittedCard, "a card object", |map, c| {
    "id" => c.id = Some(map.next_value()?),
    "card" => c.card = Some(ReturnedCard::new(map.next_value::<String>()?)),
    "exp" => c.exp = Some(map.next_value()?),
    "se_number" | "se" => c.se_number = Some(map.next_value()?),
});

struct CardsBody(Vec<SubmittedCard>);

impl<'de> Deserialize<'de> for CardsBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CardsBody;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with a cards list")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CardsBody, A::Error> {
                let mut cards = None;
                while let Some(Key(k)) = map.next_key()? {
                    match k.as_ref() {
                        "cards" => cards = Some(map.next_value::<Vec<SubmittedCard>>()?),
                        _ => skip(&mut map)?,
                    }
                }
                cards
                    .map(CardsBody)
                    .ok_or_else(|| de::Error::missing_field("cards"))
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads the cards of a `POST /v2/batch`, `POST /v2/subscribe` or `DELETE /v2/subscribe`
/// request body, server side (see [`crate::server`]). Only the shape is checked: an object
/// with a `cards` list of objects whose `id`, `card`, `exp` and `se_number` (or `se`), when
/// present, are strings. Card-level validation is the server's business.
///
/// # Errors
///
/// A [`JsonError`] when the body is not JSON, has no `cards` list of objects, or a card field
/// is not a string; its path names the card and the field (`cards[3].id`).
///
/// ```
/// let err = cardsync_proto::decode_cards_body(br#"{"cards":[{"id":7}]}"#).unwrap_err();
/// assert_eq!(err.path, "cards[0].id");
/// ```
///
/// ```
/// let cards = cardsync_proto::decode_cards_body(
///     br#"{"cards":[{"id":"a","card":"4457010000000009","exp":"01/50"}]}"#,
/// )?;
/// assert_eq!(cards[0].id.as_deref(), Some("a"));
/// assert_eq!(cards[0].card.as_ref().map(|c| c.expose()), Some("4457010000000009"));
/// # Ok::<(), cardsync_proto::JsonError>(())
/// ```
pub fn decode_cards_body(body: &[u8]) -> Result<Vec<SubmittedCard>, JsonError> {
    serde_json::from_slice::<CardsBody>(body)
        .map(|b| b.0)
        .map_err(|e| json_error::<CardsBody>(body, &e))
}

// ---------------------------------------------------------------------------------------------
// The endpoints.

/// `POST /v2/batch`: submits up to 10,000 Visa, Mastercard and Discover cards for updates.
///
/// Not idempotent: CardSync has no idempotency key, so a batch sent twice is processed, and
/// billed, twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateBatch {
    cards: Vec<BatchCard>,
}

impl CreateBatch {
    /// A batch of 1 to 10,000 cards.
    ///
    /// # Errors
    ///
    /// [`EncodeError::NoCards`], [`EncodeError::TooManyCards`], or
    /// [`EncodeError::EmptyField`] for a card with an empty id.
    pub fn new(cards: Vec<BatchCard>) -> Result<CreateBatch, EncodeError> {
        check_count(cards.len())?;
        if cards.iter().any(|c| c.id.is_empty()) {
            return Err(EncodeError::EmptyField { field: "id" });
        }
        Ok(CreateBatch { cards })
    }

    /// A batch from a planned batch request.
    ///
    /// # Errors
    ///
    /// As [`CreateBatch::new`], and [`EncodeError::WrongRoute`] for a subscription request.
    pub fn from_planned(request: PlannedRequest) -> Result<CreateBatch, EncodeError> {
        if request.route != Route::Batch {
            return Err(EncodeError::WrongRoute {
                expected: RouteKind::Batch,
            });
        }
        CreateBatch::new(
            request
                .cards
                .into_iter()
                .map(|c| BatchCard::new(c.id, c.pan, c.exp))
                .collect(),
        )
    }

    /// The cards.
    pub fn cards(&self) -> &[BatchCard] {
        &self.cards
    }
}

impl Endpoint for CreateBatch {
    type Output = BatchCreated;
    const METHOD: Method = Method::POST;
    const PATH: &'static str = paths::BATCH;
    const SCOPE: KeyScope = KeyScope::Merchant;
    const IDEMPOTENCY: Idempotency = Idempotency::NotIdempotent;

    fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError> {
        build(self, config, &[], Some(batch_body(&self.cards)))
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<BatchCreated, DecodeError> {
        let (status, e) = decode_envelope::<BatchData, _>(response)?;
        let data = e.data.unwrap_or_default();
        let info = batch_info(data);
        let batch_id = info
            .batch_id
            .filter(|id| !id.is_empty())
            .ok_or(DecodeError::Protocol {
                status,
                violation: Violation::MissingBatchId,
            })?;
        Ok(BatchCreated {
            batch_id,
            status: info.status,
            stats: info.stats,
            created_at: info.created_at,
            updated_at: info.updated_at,
        })
    }
}

/// `GET /v2/batch?batch_id=`: a batch's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetBatch {
    batch_id: String,
}

impl GetBatch {
    /// The status of this batch.
    pub fn new(batch_id: impl Into<String>) -> GetBatch {
        GetBatch {
            batch_id: batch_id.into(),
        }
    }
}

impl Endpoint for GetBatch {
    type Output = BatchInfo;
    const METHOD: Method = Method::GET;
    const PATH: &'static str = paths::BATCH;
    const SCOPE: KeyScope = KeyScope::Merchant;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError> {
        build_query(self, config, &[("batch_id", &self.batch_id)])
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<BatchInfo, DecodeError> {
        let (status, e) = decode_envelope::<BatchData, _>(response)?;
        let data = e.data.ok_or(DecodeError::Protocol {
            status,
            violation: Violation::MissingData,
        })?;
        Ok(batch_info(data))
    }
}

/// `GET /v2/batch/results?batch_id=&event_id=`: a completed batch's results. The event id (from
/// the batch-available webhook) may be left out when polling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetBatchResults {
    batch_id: String,
    event_id: Option<String>,
}

impl GetBatchResults {
    /// The results of this batch.
    pub fn new(batch_id: impl Into<String>) -> GetBatchResults {
        GetBatchResults {
            batch_id: batch_id.into(),
            event_id: None,
        }
    }

    /// Names the webhook event the results are for.
    pub fn with_event_id(mut self, event_id: impl Into<String>) -> GetBatchResults {
        self.event_id = Some(event_id.into());
        self
    }
}

impl Endpoint for GetBatchResults {
    type Output = Results;
    const METHOD: Method = Method::GET;
    const PATH: &'static str = paths::BATCH_RESULTS;
    const SCOPE: KeyScope = KeyScope::Merchant;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError> {
        match &self.event_id {
            Some(ev) => build_query(
                self,
                config,
                &[("batch_id", &self.batch_id), ("event_id", ev)],
            ),
            None => build_query(self, config, &[("batch_id", &self.batch_id)]),
        }
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<Results, DecodeError> {
        results(response)
    }
}

/// `POST /v2/subscribe`: subscribes up to 10,000 American Express card / SE pairs to updates.
///
/// Treated as idempotent: a subscription is a set of card / SE pairs and CardSync charges per
/// update delivered, not per subscribe call, so resending a pair changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    cards: Vec<SubscriptionCard>,
}

/// `DELETE /v2/subscribe`: removes card / SE pairs, with the same JSON body as [`Subscribe`]
/// (a body on DELETE, which the transport must send). Idempotent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    cards: Vec<SubscriptionCard>,
}

macro_rules! subscription_endpoint {
    ($name:ident, $method:expr) => {
        impl $name {
            /// A request for 1 to 10,000 card / SE pairs.
            ///
            /// # Errors
            ///
            /// [`EncodeError::NoCards`], [`EncodeError::TooManyCards`], or
            /// [`EncodeError::EmptyField`] for a card with an empty id.
            pub fn new(cards: Vec<SubscriptionCard>) -> Result<$name, EncodeError> {
                check_count(cards.len())?;
                if cards.iter().any(|c| c.id.is_empty()) {
                    return Err(EncodeError::EmptyField { field: "id" });
                }
                Ok($name { cards })
            }

            /// A request from a planned subscription request.
            ///
            /// # Errors
            ///
            /// As `new`, and [`EncodeError::WrongRoute`] for a batch request.
            pub fn from_planned(request: PlannedRequest) -> Result<$name, EncodeError> {
                let Route::Subscription(se) = request.route else {
                    return Err(EncodeError::WrongRoute {
                        expected: RouteKind::Subscription,
                    });
                };
                $name::new(
                    request
                        .cards
                        .into_iter()
                        .map(|c| SubscriptionCard::new(se.clone(), c.id, c.pan, c.exp))
                        .collect(),
                )
            }

            /// The cards.
            pub fn cards(&self) -> &[SubscriptionCard] {
                &self.cards
            }
        }

        impl Endpoint for $name {
            type Output = Ack;
            const METHOD: Method = $method;
            const PATH: &'static str = paths::SUBSCRIBE;
            const SCOPE: KeyScope = KeyScope::Merchant;
            const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

            fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError> {
                build(self, config, &[], Some(subscription_body(&self.cards)))
            }

            fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<Ack, DecodeError> {
                ack(response)
            }
        }
    };
}

subscription_endpoint!(Subscribe, Method::POST);
subscription_endpoint!(Unsubscribe, Method::DELETE);

/// `GET /v2/subscription/results?event_id=`: the American Express updates of one webhook event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetSubscriptionResults {
    event_id: String,
}

impl GetSubscriptionResults {
    /// The results of this event.
    pub fn new(event_id: impl Into<String>) -> GetSubscriptionResults {
        GetSubscriptionResults {
            event_id: event_id.into(),
        }
    }
}

impl Endpoint for GetSubscriptionResults {
    type Output = Results;
    const METHOD: Method = Method::GET;
    const PATH: &'static str = paths::SUBSCRIPTION_RESULTS;
    const SCOPE: KeyScope = KeyScope::Merchant;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError> {
        build_query(self, config, &[("event_id", &self.event_id)])
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<Results, DecodeError> {
        results(response)
    }
}

/// `POST /v2/merchant`: enrolls a merchant, with the partner master key. Not idempotent (a
/// second call with the same `legal_business_name` or `username` is refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrollMerchant {
    merchant: MerchantEnrollment,
}

impl EnrollMerchant {
    /// Enrolls this merchant.
    pub fn new(merchant: MerchantEnrollment) -> EnrollMerchant {
        EnrollMerchant { merchant }
    }
}

impl Endpoint for EnrollMerchant {
    type Output = MerchantEnrolled;
    const METHOD: Method = Method::POST;
    const PATH: &'static str = paths::MERCHANT;
    const SCOPE: KeyScope = KeyScope::Partner;
    const IDEMPOTENCY: Idempotency = Idempotency::NotIdempotent;

    fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError> {
        let body = serde_json::to_vec(&self.merchant).expect("a merchant always serializes");
        build(self, config, &[], Some(body))
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<MerchantEnrolled, DecodeError> {
        let (status, e) = decode_envelope::<MerchantData, _>(response)?;
        let missing = DecodeError::Protocol {
            status,
            violation: Violation::MissingMerchantCredentials,
        };
        let mut data = e.data.ok_or_else(|| missing.clone())?;
        let merchant_id = data.merchant_id.take().filter(|m| !m.is_empty());
        let api_key = data
            .api_key
            .as_deref()
            .and_then(|k| MerchantKey::new(k).ok());
        match (merchant_id, api_key) {
            (Some(merchant_id), Some(api_key)) => Ok(MerchantEnrolled {
                merchant_id,
                api_key,
                created_at: data.created_at.take(),
            }),
            _ => Err(missing),
        }
    }
}

/// `GET /v2/merchant?merchant_id=`: a merchant's enrollment status, with the partner master
/// key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetMerchant {
    merchant_id: String,
}

impl GetMerchant {
    /// The status of this merchant.
    pub fn new(merchant_id: impl Into<String>) -> GetMerchant {
        GetMerchant {
            merchant_id: merchant_id.into(),
        }
    }
}

impl Endpoint for GetMerchant {
    type Output = MerchantStatus;
    const METHOD: Method = Method::GET;
    const PATH: &'static str = paths::MERCHANT;
    const SCOPE: KeyScope = KeyScope::Partner;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError> {
        build_query(self, config, &[("merchant_id", &self.merchant_id)])
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<MerchantStatus, DecodeError> {
        let (_, mut e) = decode_envelope::<MerchantData, _>(response)?;
        let data = e.data.take().unwrap_or_default();
        Ok(MerchantStatus {
            status: e.status,
            message: e.message.as_deref().map(safe_message),
            merchant_id: data.merchant_id.clone(),
            enrollment: data.status.clone(),
        })
    }
}

/// `POST /v2/webhooks` in the documented array form,
/// `{"webhooks":[{"trigger_id":20,"url":"…"}]}`. Idempotent: it sets the URLs.
///
/// Signed with the merchant key by default. The documents set webhooks up before enrolling any
/// merchant, which only the partner master key can do: [`SetWebhooks::signed_by`] chooses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetWebhooks {
    webhooks: Vec<(Trigger, String)>,
    scope: KeyScope,
}

impl Default for SetWebhooks {
    fn default() -> Self {
        SetWebhooks {
            webhooks: Vec::new(),
            scope: KeyScope::Merchant,
        }
    }
}

impl SetWebhooks {
    /// No webhooks yet; add them with [`SetWebhooks::with`].
    pub fn new() -> SetWebhooks {
        SetWebhooks::default()
    }

    /// Signs the registration with this key: the partner's webhooks receive enrollment events
    /// and the events of merchants that registered none of their own.
    pub fn signed_by(mut self, scope: KeyScope) -> SetWebhooks {
        self.scope = scope;
        self
    }

    /// Adds the URL for a trigger.
    pub fn with(mut self, trigger: Trigger, url: impl Into<String>) -> SetWebhooks {
        self.webhooks.push((trigger, url.into()));
        self
    }

    /// The trigger / URL pairs.
    pub fn webhooks(&self) -> &[(Trigger, String)] {
        &self.webhooks
    }
}

fn webhook_body(pairs: &[(Trigger, String)]) -> Vec<u8> {
    let mut out = b"{\"webhooks\":[".to_vec();
    for (i, (t, url)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("{{\"trigger_id\":{},\"url\":", t.id()).as_bytes());
        write_json_str(&mut out, url);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

impl Endpoint for SetWebhooks {
    type Output = Ack;
    const METHOD: Method = Method::POST;
    const PATH: &'static str = paths::WEBHOOKS;
    const SCOPE: KeyScope = KeyScope::Merchant;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn scope(&self) -> KeyScope {
        self.scope
    }

    fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError> {
        if self.webhooks.iter().any(|(_, url)| url.is_empty()) {
            return Err(EncodeError::EmptyField { field: "url" });
        }
        build(self, config, &[], Some(webhook_body(&self.webhooks)))
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<Ack, DecodeError> {
        ack(response)
    }
}

/// `POST /v2/webhooks` in the flat form of the documents' JavaScript sample and schema table:
/// `{"batch_completion_webhook":"…","merchant_enrollment_webhook":"…",…}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SetWebhooksFlat {
    /// Trigger 20: batch available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_completion_webhook: Option<String>,
    /// Trigger 21: merchant enrollment complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_enrollment_webhook: Option<String>,
    /// Trigger 22: batch error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_error_webhook: Option<String>,
    /// Trigger 23: American Express update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amex_update_webhook: Option<String>,
}

impl Endpoint for SetWebhooksFlat {
    type Output = Ack;
    const METHOD: Method = Method::POST;
    const PATH: &'static str = paths::WEBHOOKS;
    const SCOPE: KeyScope = KeyScope::Merchant;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError> {
        let body = serde_json::to_vec(self).expect("strings always serialize");
        build(self, config, &[], Some(body))
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<Ack, DecodeError> {
        ack(response)
    }
}

/// `POST /v2/webhook` of the American Express edition: one `{"trigger_id":23,"url":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAmexWebhook {
    url: String,
}

impl SetAmexWebhook {
    /// Registers the American Express update webhook (trigger 23).
    pub fn new(url: impl Into<String>) -> SetAmexWebhook {
        SetAmexWebhook { url: url.into() }
    }
}

impl Endpoint for SetAmexWebhook {
    type Output = Ack;
    const METHOD: Method = Method::POST;
    const PATH: &'static str = paths::WEBHOOK;
    const SCOPE: KeyScope = KeyScope::Merchant;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn encode(&self, config: &Config) -> Result<Request<Vec<u8>>, EncodeError> {
        if self.url.is_empty() {
            return Err(EncodeError::EmptyField { field: "url" });
        }
        let mut body = b"{\"trigger_id\":23,\"url\":".to_vec();
        write_json_str(&mut body, &self.url);
        body.push(b'}');
        build(self, config, &[], Some(body))
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<Ack, DecodeError> {
        ack(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        let mut s = String::new();
        encode_query_value(&mut s, "a b&c=d/é~_.-");
        assert_eq!(s, "a%20b%26c%3Dd%2F%C3%A9~_.-");
    }

    #[test]
    fn json_detection() {
        assert!(looks_like_json(b" \n{"));
        assert!(looks_like_json(b"[1]"));
        assert!(!looks_like_json(b""));
        assert!(!looks_like_json(b"<html>"));
        assert!(!looks_like_json(b"null"));
    }
}
