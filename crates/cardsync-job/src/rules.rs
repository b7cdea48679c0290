//! The rules of one request, written once: how each call of a request is built from what a
//! store keeps, and what each answer means. Sans-IO: no clock is read (the wall clock, for a
//! `Retry-After` date, is an argument) and nothing is sent.
//!
//! The single-machine [`crate::Job`] schedules with these rules; the PostgreSQL journal's
//! workers claim, call and record with them. Neither decides anything about what an answer
//! means by itself, so that one machine and many give the same results.
//!
//! ```
//! use cardsync_job::rules::{self, Created};
//! use cardsync_job::RequestKind;
//! use cardsync_proto::server::{Spelling, batch_created, failure, respond};
//! use cardsync_proto::{BatchCreated, BatchState};
//! use std::time::SystemTime;
//!
//! let created = respond(http::StatusCode::OK, batch_created(&BatchCreated::new("b1", BatchState::Pending), Spelling::Universal));
//! assert_eq!(rules::read_create(RequestKind::Batch, &Ok(created), SystemTime::now()), Created::Batch("b1".into()));
//!
//! // CardSync's own refusal: nothing was created.
//! let refused = respond(http::StatusCode::UNPROCESSABLE_ENTITY, failure("too many cards", Spelling::Universal));
//! assert!(matches!(rules::read_create(RequestKind::Batch, &Ok(refused), SystemTime::now()), Created::Refused(_)));
//!
//! // A proxy's page: it may have been created.
//! let page = http::Response::builder().status(404).body(b"<html>".to_vec()).unwrap();
//! assert!(matches!(rules::read_create(RequestKind::Batch, &Ok(page), SystemTime::now()), Created::Unconfirmed { .. }));
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use cardsync_core::{SeNumber, UpdateStatus};
use cardsync_proto::retry::{Outcome, Reached, parse_retry_after};
use cardsync_proto::transport::TransportError;
use cardsync_proto::{
    BatchCard, BatchState, Config, CreateBatch, EncodeError, Endpoint, GetBatch, GetBatchResults,
    GetSubscriptionResults, Idempotency, Results, Subscribe, SubscriptionCard,
};

use crate::model::{RequestKind, RequestRecord, ResultRow, StoredCard};

/// The answer to a call, as a transport gives it.
pub type Answer = Result<http::Response<Vec<u8>>, TransportError>;

/// Why a request's call could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A subscription card with no SE number, and none for the request.
    NoSeNumber {
        /// The request.
        seq: u64,
    },
    /// The endpoint refused to encode it.
    Encode(EncodeError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NoSeNumber { seq } => {
                write!(f, "request {seq} has a card with no SE number")
            }
            BuildError::Encode(e) => write!(f, "cannot build the request: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Encode(e) => Some(e),
            BuildError::NoSeNumber { .. } => None,
        }
    }
}

impl From<EncodeError> for BuildError {
    fn from(e: EncodeError) -> BuildError {
        BuildError::Encode(e)
    }
}

/// The POST that creates `request` from its stored cards: a batch, or a subscription whose
/// cards take the request's SE number when they have none of their own.
///
/// # Errors
///
/// [`BuildError`].
pub fn create_request(
    request: &RequestRecord,
    cards: Vec<StoredCard>,
    config: &Config,
) -> Result<http::Request<Vec<u8>>, BuildError> {
    match request.kind {
        RequestKind::Batch => Ok(CreateBatch::new(
            cards
                .into_iter()
                .map(|c| BatchCard::new(c.id, c.pan, c.exp))
                .collect(),
        )
        .and_then(|b| b.encode(config))?),
        RequestKind::Subscription => {
            let se = request
                .se_number
                .as_deref()
                .and_then(|s| SeNumber::parse(s).ok());
            let cards: Option<Vec<SubscriptionCard>> = cards
                .into_iter()
                .map(|c| {
                    let se = c.se_number.or_else(|| se.clone())?;
                    Some(SubscriptionCard::new(se, c.id, c.pan, c.exp))
                })
                .collect();
            let cards = cards.ok_or(BuildError::NoSeNumber { seq: request.seq })?;
            Ok(Subscribe::new(cards).and_then(|s| s.encode(config))?)
        }
    }
}

/// The status check of a sent batch.
///
/// # Errors
///
/// [`EncodeError`] (no merchant key).
pub fn status_request(
    batch_id: &str,
    config: &Config,
) -> Result<http::Request<Vec<u8>>, EncodeError> {
    GetBatch::new(batch_id).encode(config)
}

/// The results fetch of a complete batch, with the event that announced them when one did.
///
/// # Errors
///
/// [`EncodeError`] (no merchant key).
pub fn results_request(
    batch_id: &str,
    event_id: Option<&str>,
    config: &Config,
) -> Result<http::Request<Vec<u8>>, EncodeError> {
    let mut get = GetBatchResults::new(batch_id);
    if let Some(event) = event_id {
        get = get.with_event_id(event);
    }
    get.encode(config)
}

/// The results fetch of an American Express update event.
///
/// # Errors
///
/// [`EncodeError`] (no merchant key).
pub fn update_results_request(
    event_id: &str,
    config: &Config,
) -> Result<http::Request<Vec<u8>>, EncodeError> {
    GetSubscriptionResults::new(event_id).encode(config)
}

/// What an answer was, for the retry policy ([`cardsync_proto::retry::RetryPolicy::decide`]):
/// `None` for a 2xx (nothing to retry).
pub fn outcome(answer: &Answer, wall: SystemTime) -> Option<Outcome> {
    match answer {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => Some(Outcome::Response {
            status: response.status(),
            retry_after: response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, wall)),
        }),
        Err(e) => Some(Outcome::Transport {
            reached: e.reached(),
        }),
    }
}

/// Whether a request's POST may be repeated: a subscription may (subscribing twice is
/// subscribing once), a batch may not (CardSync would create and bill it twice).
pub fn create_idempotency(kind: RequestKind) -> Idempotency {
    match kind {
        RequestKind::Batch => Idempotency::NotIdempotent,
        RequestKind::Subscription => Idempotency::Idempotent,
    }
}

/// A copy of a request, to send it again.
pub fn clone_request(r: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut out = http::Request::new(r.body().clone());
    *out.method_mut() = r.method().clone();
    *out.uri_mut() = r.uri().clone();
    *out.headers_mut() = r.headers().clone();
    *out.version_mut() = r.version();
    out
}

/// What the answer to a request's POST means.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Created {
    /// A batch was created.
    Batch(String),
    /// The subscription was accepted.
    Subscribed,
    /// CardSync read the request and refused it in its own words: nothing was created.
    Refused(String),
    /// CardSync refused the API key (401 or 403, in its own words): nothing was created, and
    /// no other request will fare better. The request stays planned, and the run stops, so that
    /// the same command with the right key goes on.
    KeyRefused(String),
    /// The request certainly never left: it may be sent again.
    NotSent(String),
    /// It may have reached CardSync: a batch waits for a decision (a subscription, idempotent,
    /// is sent again). With the `Retry-After`, if the answer had one.
    Unconfirmed {
        /// What happened.
        message: String,
        /// How long CardSync asked to be left alone.
        retry_after: Option<Duration>,
    },
}

/// The `Retry-After` of a 429 or 503 answer (`wall` is the time now, for a date).
pub fn retry_after(response: &http::Response<Vec<u8>>, wall: SystemTime) -> Option<Duration> {
    if !matches!(response.status().as_u16(), 429 | 503) {
        return None;
    }
    response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, wall))
}

/// What the answer to a request's POST means (after the transport's and the policy's retries:
/// a POST that creates a batch is retried only when it certainly never left).
pub fn read_create(kind: RequestKind, answer: &Answer, wall: SystemTime) -> Created {
    match answer {
        Ok(response) => {
            let decoded = match kind {
                RequestKind::Subscription => Subscribe::decode(response).map(|_| None),
                RequestKind::Batch => CreateBatch::decode(response).map(|c| Some(c.batch_id)),
            };
            match decoded {
                Ok(Some(batch_id)) => Created::Batch(batch_id),
                Ok(None) => Created::Subscribed,
                // Only CardSync's own refusal proves that nothing was created; a proxy's 4xx
                // page proves nothing.
                Err(e) if e.is_refusal() && is_key_status(e.status()) => {
                    Created::KeyRefused(key_refused_message(&e))
                }
                Err(e) if e.is_refusal() => Created::Refused(format!("refused: {e}")),
                Err(e) => Created::Unconfirmed {
                    message: format!("CardSync may or may not have received it: {e}"),
                    retry_after: retry_after(response, wall),
                },
            }
        }
        Err(e) if e.reached() == Reached::No => {
            Created::NotSent(format!("no answer from CardSync: {e}"))
        }
        Err(e) => Created::Unconfirmed {
            message: format!("CardSync may or may not have received it: no answer: {e}"),
            retry_after: None,
        },
    }
}

/// 401 or 403: the key is not accepted.
fn is_key_status(status: Option<http::StatusCode>) -> bool {
    matches!(
        status,
        Some(http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN)
    )
}

fn key_refused_message(e: &cardsync_proto::DecodeError) -> String {
    format!("CardSync refused the API key: {e}; check the API key (nothing was created)")
}

/// What a status check's answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Complete: fetch the results.
    Complete,
    /// The batch failed (CardSync reported it in error, or said in its own words that it
    /// does not know it).
    Failed(String),
    /// Not complete yet.
    Pending,
    /// CardSync refused the API key (401 or 403, in its own words): the batch stays as it
    /// is, and the run stops.
    KeyRefused(String),
    /// The check failed in a way worth trying again later (a 5xx, a proxy's page, no answer):
    /// with what happened and the `Retry-After`, if any.
    TryLater {
        /// What happened.
        message: String,
        /// How long CardSync asked to be left alone.
        retry_after: Option<Duration>,
    },
}

/// What a status check's answer means.
pub fn read_status(batch_id: &str, answer: &Answer, wall: SystemTime) -> Status {
    match answer {
        Ok(response) => match GetBatch::decode(response) {
            Ok(info) => match info.status {
                BatchState::Completed => Status::Complete,
                BatchState::Error => {
                    Status::Failed("CardSync reported the batch in error".to_owned())
                }
                _ => Status::Pending,
            },
            Err(e) if e.is_refusal() && is_key_status(e.status()) => {
                Status::KeyRefused(key_refused_message(&e))
            }
            // CardSync's own "not found" (a proxy's 404 page proves nothing).
            Err(e) if e.status() == Some(http::StatusCode::NOT_FOUND) && e.is_refusal() => {
                Status::Failed(format!("CardSync does not know batch {batch_id}: {e}"))
            }
            Err(e) => Status::TryLater {
                message: format!("batch {batch_id}: {e}"),
                retry_after: retry_after(response, wall),
            },
        },
        Err(e) => Status::TryLater {
            message: format!("batch {batch_id}: no answer: {e}"),
            retry_after: None,
        },
    }
}

/// Whether batch `info` (CardSync's answer about `batch_id`) can be the batch of a request of
/// `cards` cards whose POST went unanswered: CardSync must know it, and, where it says how
/// many cards the batch holds, hold as many. Adopting another job's batch would report its
/// real results as missing.
///
/// ```
/// use cardsync_job::rules::check_adoption;
/// use cardsync_proto::{BatchInfo, BatchState};
/// let mut info = BatchInfo::new(BatchState::Pending);
/// info.stats.stats.number_submitted = 1000;
/// assert!(check_adoption("b1", &info, 3).is_err());
/// assert!(check_adoption("b1", &info, 1000).is_ok());
/// ```
///
/// # Errors
///
/// Why not, in words for the person deciding.
pub fn check_adoption(
    batch_id: &str,
    info: &cardsync_proto::BatchInfo,
    cards: u64,
) -> Result<(), String> {
    let submitted = info.stats.stats.number_submitted;
    if submitted > 0 && submitted != cards {
        return Err(format!(
            "batch {batch_id} holds {submitted} cards, and the request {cards}: it is not this \
             request's batch"
        ));
    }
    Ok(())
}

/// What the answer to an adoption's check (`GET /v2/batch`) says: see [`check_adoption`].
///
/// # Errors
///
/// Why the batch cannot be adopted.
pub fn read_adoption(batch_id: &str, answer: &Answer, cards: u64) -> Result<(), String> {
    match answer {
        Ok(response) => match GetBatch::decode(response) {
            Ok(info) => check_adoption(batch_id, &info, cards),
            Err(e) => Err(format!("CardSync does not confirm batch {batch_id}: {e}")),
        },
        Err(e) => Err(format!("batch {batch_id}: no answer: {e}")),
    }
}

/// A results fetch that failed: the results exist (the batch is complete, or an update was
/// announced), so it is tried again later; it never fails the request, whose results would be
/// lost.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TryLater {
    /// What happened.
    pub message: String,
    /// How long CardSync asked to be left alone.
    pub retry_after: Option<Duration>,
    /// CardSync refused the API key (401 or 403, in its own words): trying again with the
    /// same key is pointless; the run stops.
    pub key_refused: bool,
}

impl fmt::Display for TryLater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The results of a results fetch (a batch's, or an American Express update's).
///
/// # Errors
///
/// [`TryLater`].
pub fn read_results(what: &str, answer: Answer, wall: SystemTime) -> Result<Results, TryLater> {
    match answer {
        Ok(response) => {
            // One decoder for both: a batch's results and an update's are one shape.
            GetBatchResults::decode(&response).map_err(|e| {
                let key_refused = e.is_refusal() && is_key_status(e.status());
                TryLater {
                    message: if key_refused {
                        format!("results of {what}: {}", key_refused_message(&e))
                    } else {
                        format!("results of {what}: {e}")
                    },
                    retry_after: retry_after(&response, wall),
                    key_refused,
                }
            })
        }
        Err(e) => Err(TryLater {
            message: format!("results of {what}: no answer: {e}"),
            retry_after: None,
            key_refused: false,
        }),
    }
}

/// Whether writing `results` needs the cards as sent: the old last four digits of changed
/// cards come from them.
pub fn needs_cards(results: &Results) -> bool {
    results.cards.iter().any(|c| {
        matches!(
            c.status,
            Some(UpdateStatus::UpdatedCard | UpdateStatus::UpdatedExpiry)
        )
    })
}

/// The name a result's status is counted under: its word, `(none)` when CardSync gave no
/// status.
pub const NO_STATUS: &str = "(none)";
/// The name under which the cards of a batch that got no result at all are counted.
pub const NO_RESULT: &str = "no_result";

/// A request's (or an update's) result rows, and how many cards got each status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rows {
    /// The rows, as the results file writes them.
    pub rows: Vec<ResultRow>,
    /// Cards per status name ([`NO_STATUS`], [`NO_RESULT`] included); for an update, a
    /// negative count of `subscribed` (those cards now have a result).
    pub tallies: BTreeMap<String, i64>,
}

impl Rows {
    /// Rows counted by their statuses (for rows that come from elsewhere than an answer, such
    /// as a store's tests).
    ///
    /// ```
    /// use cardsync_core::UpdateStatus;
    /// use cardsync_job::ResultRow;
    /// use cardsync_proto::ReturnedCard;
    /// let row = ResultRow::new("a", Some(UpdateStatus::Valid), ReturnedCard::new("4457010000000009".to_owned()));
    /// let rows = cardsync_job::rules::Rows::counted(vec![row]);
    /// assert_eq!(rows.tallies["valid"], 1);
    /// ```
    pub fn counted(rows: Vec<ResultRow>) -> Rows {
        let mut tallies = BTreeMap::new();
        for row in &rows {
            let status = row.status.as_ref().map_or(NO_STATUS, UpdateStatus::as_str);
            *tallies.entry(status.to_owned()).or_default() += 1;
        }
        Rows { rows, tallies }
    }
}

/// The rows of a batch's results, each with the batch and event it came from and, for changed
/// cards, the old last four digits from `sent` (the cards as sent, when [`needs_cards`]); and
/// the tallies, with the request's cards that got no row counted as [`NO_RESULT`].
pub fn batch_rows(request: &RequestRecord, results: Results, sent: Option<&[StoredCard]>) -> Rows {
    let last4: HashMap<&str, String> = sent
        .unwrap_or_default()
        .iter()
        .map(|c| (c.id.as_str(), c.last4().as_str().to_owned()))
        .collect();
    let mut tallies = count(&results);
    let distinct = results
        .cards
        .iter()
        .map(|c| c.id.as_str())
        .collect::<HashSet<&str>>()
        .len();
    // Ids are unique in a request (the plan took duplicates out), so the cards that got no
    // result are the ones left over.
    let missing = request.cards.saturating_sub(distinct as u64);
    if missing > 0 {
        *tallies.entry(NO_RESULT.to_owned()).or_default() += missing as i64;
    }
    let rows = results
        .cards
        .into_iter()
        .map(|card| {
            let mut row = ResultRow::from(card);
            row.batch_id.clone_from(&request.batch_id);
            row.event_id.clone_from(&request.event_id);
            if row.is_change() {
                row.old_last4 = last4.get(row.id.as_str()).cloned();
            }
            row
        })
        .collect();
    Rows { rows, tallies }
}

/// The rows of an American Express update's results, each with its event; the tallies count
/// them per status and take them off `subscribed`.
pub fn update_rows(event_id: &str, results: Results) -> Rows {
    let mut tallies = count(&results);
    let got = results.cards.len() as i64;
    *tallies.entry("subscribed".to_owned()).or_default() -= got;
    let rows = results
        .cards
        .into_iter()
        .map(|card| {
            let mut row = ResultRow::from(card);
            row.event_id = Some(event_id.to_owned());
            row
        })
        .collect();
    Rows { rows, tallies }
}

fn count(results: &Results) -> BTreeMap<String, i64> {
    status_counts(results)
        .into_iter()
        .map(|(s, n)| (s, n as i64))
        .collect()
}

/// Results per status, by status name ([`NO_STATUS`] for cards CardSync gave no status).
///
/// ```
/// use cardsync_proto::{Endpoint, GetBatchResults};
/// let response = http::Response::new(br#"{"status":"success","data":{"status":"completed","cards":[
///     {"id":"a","card":"4457010000000009","exp":"01/50","status":"valid"},
///     {"id":"b","card":"4457010000000009","exp":"01/50"}]}}"#.to_vec());
/// let results = GetBatchResults::decode(&response)?;
/// let counts = cardsync_job::status_counts(&results);
/// assert_eq!(counts.get("valid"), Some(&1));
/// assert_eq!(counts.get("(none)"), Some(&1));
/// # Ok::<(), cardsync_proto::DecodeError>(())
/// ```
pub fn status_counts(results: &Results) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for card in &results.cards {
        *counts
            .entry(card.status.as_ref().map_or(NO_STATUS, UpdateStatus::as_str))
            .or_default() += 1;
    }
    counts.into_iter().map(|(s, n)| (s.to_owned(), n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_proto::server::{Spelling, failure, respond};

    fn html(status: u16) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .status(status)
            .header("content-type", "text/html")
            .body(b"<html><body>Not here</body></html>".to_vec())
            .unwrap()
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH
    }

    #[test]
    fn a_refused_key_stops_every_kind_of_call_and_fails_nothing() {
        for status in [401u16, 403] {
            let refused = || {
                respond(
                    http::StatusCode::from_u16(status).unwrap(),
                    failure("unauthorized", Spelling::Universal),
                )
            };
            let Created::KeyRefused(message) =
                read_create(RequestKind::Subscription, &Ok(refused()), now())
            else {
                panic!("{status}");
            };
            assert!(message.contains("check the API key"), "{message}");
            assert!(matches!(
                read_status("b1", &Ok(refused()), now()),
                Status::KeyRefused(_)
            ));
            let e = read_results("batch b1", Ok(refused()), now()).unwrap_err();
            assert!(e.key_refused, "{status}");
            // A proxy's page with the same status proves nothing about the key.
            assert!(matches!(
                read_status("b1", &Ok(html(status)), now()),
                Status::TryLater { .. }
            ));
            assert!(
                !read_results("batch b1", Ok(html(status)), now())
                    .unwrap_err()
                    .key_refused
            );
        }
    }

    #[test]
    fn only_cardsyncs_own_refusal_of_a_post_is_a_refusal() {
        for status in [400, 401, 403, 404, 409, 422] {
            assert!(
                matches!(
                    read_create(RequestKind::Batch, &Ok(html(status)), now()),
                    Created::Unconfirmed { .. }
                ),
                "{status}"
            );
            let refused = respond(
                http::StatusCode::from_u16(status).unwrap(),
                failure("no", Spelling::Universal),
            );
            let read = read_create(RequestKind::Batch, &Ok(refused), now());
            if matches!(status, 401 | 403) {
                assert!(matches!(read, Created::KeyRefused(_)), "{status}");
            } else {
                assert!(matches!(read, Created::Refused(_)), "{status}");
            }
        }
        for status in [408, 429] {
            let busy = respond(
                http::StatusCode::from_u16(status).unwrap(),
                failure("later", Spelling::Universal),
            );
            assert!(matches!(
                read_create(RequestKind::Batch, &Ok(busy), now()),
                Created::Unconfirmed { .. }
            ));
        }
    }

    #[test]
    fn a_status_check_fails_a_batch_only_in_cardsyncs_words() {
        assert!(matches!(
            read_status("b1", &Ok(html(404)), now()),
            Status::TryLater { .. }
        ));
        let unknown = respond(
            http::StatusCode::NOT_FOUND,
            failure("no such batch", Spelling::Universal),
        );
        assert!(matches!(
            read_status("b1", &Ok(unknown), now()),
            Status::Failed(_)
        ));
    }

    #[test]
    fn a_failed_results_fetch_is_tried_later_whatever_it_was() {
        let refused = respond(
            http::StatusCode::NOT_FOUND,
            failure("purged", Spelling::Universal),
        );
        for answer in [html(404), html(500), refused] {
            assert!(read_results("batch b1", Ok(answer), now()).is_err());
        }
    }
}
