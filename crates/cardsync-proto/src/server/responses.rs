//! Response bodies: the envelope, and the `data` of every endpoint.

use cardsync_core::UpdateStatus;
use http::{Response, StatusCode};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::Spelling;
use crate::{
    Ack, BatchCreated, BatchInfo, BatchState, MerchantEnrolled, MerchantStatus, ReportedStats,
    ResultCard, Results,
};

/// A response with a JSON body: `Content-Type: application/json; charset=utf-8`, as
/// CardSync's v1.1 description shows.
///
/// ```
/// use cardsync_proto::server::{Spelling, failure, respond};
/// let answer = respond(http::StatusCode::NOT_FOUND, failure("no batch b1", Spelling::Universal));
/// assert_eq!(answer.headers()["content-type"], "application/json; charset=utf-8");
/// ```
pub fn respond(status: StatusCode, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut answer = Response::new(body);
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    answer
}

/// The envelope: `status`, the message (in the spelling's key), and `data`, in the documents'
/// order; absent parts are left out.
struct Envelope<'a, T: ?Sized> {
    status: Option<&'a str>,
    message: Option<&'a str>,
    data: Option<&'a T>,
    spelling: Spelling,
}

impl<T: Serialize + ?Sized> Serialize for Envelope<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(status) = self.status {
            map.serialize_entry("status", status)?;
        }
        if let Some(message) = self.message {
            map.serialize_entry(self.spelling.message_key(), message)?;
        }
        if let Some(data) = self.data {
            map.serialize_entry("data", data)?;
        }
        map.end()
    }
}

fn envelope<T: Serialize + ?Sized>(envelope: &Envelope<'_, T>) -> Vec<u8> {
    // Every `data` written here serializes infallibly (string keys, strings and integers);
    // only a caller's own `data` given to `success` can fail, and is answered as a failure.
    serde_json::to_vec(envelope)
        .unwrap_or_else(|_| failure("cannot encode the answer", envelope.spelling))
}

/// A success answer's body: `{"status":"success","message":"success","data":…}` (`msg` in the
/// Amex spelling; no `data` when there is none). `data` is serialized straight into the body.
///
/// ```
/// use cardsync_proto::server::{Spelling, success};
/// let body = success(Some(&serde_json::json!({"batch_id": "b1"})), Spelling::Amex);
/// assert_eq!(body, br#"{"status":"success","msg":"success","data":{"batch_id":"b1"}}"#);
/// ```
pub fn success<T: Serialize + ?Sized>(data: Option<&T>, spelling: Spelling) -> Vec<u8> {
    envelope(&Envelope {
        status: Some("success"),
        message: Some("success"),
        data,
        spelling,
    })
}

/// An error answer's body: `{"status":"failed","message":…}` (`msg` in the Amex spelling), as
/// CardSync's v1.1 description shows.
///
/// ```
/// use cardsync_proto::server::{Spelling, failure};
/// assert_eq!(failure("no batch b1", Spelling::Universal), br#"{"status":"failed","message":"no batch b1"}"#);
/// ```
pub fn failure(message: &str, spelling: Spelling) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 40);
    out.extend_from_slice(b"{\"status\":\"failed\",\"");
    out.extend_from_slice(spelling.message_key().as_bytes());
    out.extend_from_slice(b"\":");
    crate::lenient::write_json_str(&mut out, message);
    out.push(b'}');
    out
}

/// The answer of the endpoints that return only a status and a message (webhook
/// registration, subscribe, unsubscribe): what [`Ack`] decodes.
///
/// ```
/// use cardsync_proto::{Ack, Endpoint, Subscribe};
/// use cardsync_proto::server::{Spelling, ack, respond};
///
/// let mut answer = Ack::default();
/// answer.status = Some("success".into());
/// answer.message = Some("success".into());
/// let body = ack(&answer, Spelling::Universal);
/// assert_eq!(body, br#"{"status":"success","message":"success"}"#);
/// assert_eq!(Subscribe::decode(&respond(http::StatusCode::OK, body))?, answer);
/// # Ok::<(), cardsync_proto::DecodeError>(())
/// ```
pub fn ack(ack: &Ack, spelling: Spelling) -> Vec<u8> {
    envelope::<()>(&Envelope {
        status: ack.status.as_deref(),
        message: ack.message.as_deref(),
        data: None,
        spelling,
    })
}

/// The stats object in the order of the response examples (`number_submitted` first), with
/// the closed counter in the spelling's key, then any counter the documents do not name.
pub(super) struct StatsOut<'a> {
    pub(super) stats: &'a ReportedStats,
    pub(super) spelling: Spelling,
}

impl Serialize for StatsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = &self.stats.stats;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("number_submitted", &st.number_submitted)?;
        map.serialize_entry("no_change", &st.no_change)?;
        map.serialize_entry("updated_card", &st.updated_card)?;
        map.serialize_entry("updated_expiry", &st.updated_expiry)?;
        map.serialize_entry("no_match", &st.no_match)?;
        map.serialize_entry("valid", &st.valid)?;
        map.serialize_entry("contact", &st.contact)?;
        map.serialize_entry(self.spelling.closed_key(), &st.closed)?;
        for (name, count) in &self.stats.other_counters {
            map.serialize_entry(name, count)?;
        }
        map.end()
    }
}

/// The `data` of the batch and results answers, in the documents' order: `batch_id`,
/// `status`, `cards`, `stats`, `created_at`, `updated_at`.
struct BatchOut<'a> {
    batch_id: Option<&'a str>,
    status: &'a BatchState,
    cards: Option<&'a [ResultCard]>,
    stats: &'a ReportedStats,
    created_at: Option<&'a str>,
    updated_at: Option<&'a str>,
    spelling: Spelling,
}

impl Serialize for BatchOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(id) = self.batch_id {
            map.serialize_entry("batch_id", id)?;
        }
        map.serialize_entry("status", self.status.as_str())?;
        if let Some(cards) = self.cards {
            map.serialize_entry(
                "cards",
                &CardsOut {
                    cards,
                    spelling: self.spelling,
                },
            )?;
        }
        map.serialize_entry(
            "stats",
            &StatsOut {
                stats: self.stats,
                spelling: self.spelling,
            },
        )?;
        if let Some(at) = self.created_at {
            map.serialize_entry("created_at", at)?;
        }
        if let Some(at) = self.updated_at {
            map.serialize_entry("updated_at", at)?;
        }
        map.end()
    }
}

/// Result cards, serialized straight from the slice: `se_number` (when there is one), `id`,
/// `card`, `exp`, `status`, as the documents' card objects.
struct CardsOut<'a> {
    cards: &'a [ResultCard],
    spelling: Spelling,
}

impl Serialize for CardsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct CardOut<'a>(&'a ResultCard, Spelling);
        impl Serialize for CardOut<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let CardOut(c, spelling) = self;
                let mut map = s.serialize_map(None)?;
                if let Some(se) = &c.se_number {
                    map.serialize_entry("se_number", se)?;
                }
                map.serialize_entry("id", &c.id)?;
                map.serialize_entry("card", c.card.expose())?;
                if let Some(exp) = &c.exp {
                    map.serialize_entry("exp", exp)?;
                }
                if let Some(status) = &c.status {
                    let word = match status {
                        UpdateStatus::Closed => spelling.closed_key(),
                        other => other.as_str(),
                    };
                    map.serialize_entry("status", word)?;
                }
                map.end()
            }
        }
        s.collect_seq(self.cards.iter().map(|c| CardOut(c, self.spelling)))
    }
}

/// The answer to `POST /v2/batch`: what [`BatchCreated`] decodes.
///
/// ```
/// use cardsync_proto::server::{Spelling, batch_created};
/// use cardsync_proto::{BatchCreated, BatchState};
///
/// let body = batch_created(&BatchCreated::new("b1", BatchState::Pending), Spelling::Universal);
/// assert!(body.ends_with(br#""data":{"batch_id":"b1","status":"pending","stats":{"number_submitted":0,"no_change":0,"updated_card":0,"updated_expiry":0,"no_match":0,"valid":0,"contact":0,"closed":0}}}"#));
/// ```
pub fn batch_created(created: &BatchCreated, spelling: Spelling) -> Vec<u8> {
    success(
        Some(&BatchOut {
            batch_id: Some(&created.batch_id),
            status: &created.status,
            cards: None,
            stats: &created.stats,
            created_at: created.created_at.as_deref(),
            updated_at: created.updated_at.as_deref(),
            spelling,
        }),
        spelling,
    )
}

/// The answer to `GET /v2/batch`: what [`BatchInfo`] decodes.
///
/// ```
/// use cardsync_proto::server::{Spelling, batch_info, respond};
/// use cardsync_proto::{BatchInfo, BatchState, Endpoint, GetBatch};
///
/// let mut info = BatchInfo::new(BatchState::Completed);
/// info.batch_id = Some("b1".into());
/// let answer = respond(http::StatusCode::OK, batch_info(&info, Spelling::Universal));
/// assert_eq!(GetBatch::decode(&answer)?, info);
/// # Ok::<(), cardsync_proto::DecodeError>(())
/// ```
pub fn batch_info(info: &BatchInfo, spelling: Spelling) -> Vec<u8> {
    success(
        Some(&BatchOut {
            batch_id: info.batch_id.as_deref(),
            status: &info.status,
            cards: None,
            stats: &info.stats,
            created_at: info.created_at.as_deref(),
            updated_at: info.updated_at.as_deref(),
            spelling,
        }),
        spelling,
    )
}

/// The answer to `GET /v2/batch/results` and `GET /v2/subscription/results`: what
/// [`Results`] decodes. The cards are written straight from the slice, with no JSON tree in
/// between. See the [module example](crate::server).
pub fn results(results: &Results, spelling: Spelling) -> Vec<u8> {
    success(
        Some(&BatchOut {
            batch_id: results.batch_id.as_deref(),
            status: &results.status,
            cards: Some(&results.cards),
            stats: &results.stats,
            created_at: results.created_at.as_deref(),
            updated_at: results.updated_at.as_deref(),
            spelling,
        }),
        spelling,
    )
}

/// The answer to `POST /v2/merchant`: what [`MerchantEnrolled`] decodes. The body holds the
/// merchant's new API key, as the documents' does.
///
/// ```
/// use cardsync_proto::server::{Spelling, merchant_enrolled};
/// use cardsync_proto::{MerchantEnrolled, MerchantKey};
///
/// let mut enrolled = MerchantEnrolled::new("m1", MerchantKey::new("api_1")?);
/// enrolled.created_at = Some("2020-04-22T21:46:08.448148Z".into());
/// let body = merchant_enrolled(&enrolled, Spelling::Universal);
/// assert!(body.ends_with(br#""data":{"merchant_id":"m1","api_key":"api_1","created_at":"2020-04-22T21:46:08.448148Z"}}"#));
/// # Ok::<(), cardsync_proto::InvalidApiKey>(())
/// ```
pub fn merchant_enrolled(enrolled: &MerchantEnrolled, spelling: Spelling) -> Vec<u8> {
    struct Data<'a>(&'a MerchantEnrolled);
    impl Serialize for Data<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(None)?;
            map.serialize_entry("merchant_id", &self.0.merchant_id)?;
            map.serialize_entry("api_key", self.0.api_key.expose_secret())?;
            if let Some(at) = &self.0.created_at {
                map.serialize_entry("created_at", at)?;
            }
            map.end()
        }
    }
    success(Some(&Data(enrolled)), spelling)
}

/// The answer to `GET /v2/merchant`: what [`MerchantStatus`] decodes (the envelope's status
/// and message as given, and `data` with the merchant id and the enrollment state when either
/// is known).
///
/// ```
/// use cardsync_proto::server::{Spelling, merchant_status};
/// use cardsync_proto::MerchantStatus;
///
/// let mut status = MerchantStatus::default();
/// status.status = Some("success".into());
/// status.merchant_id = Some("m1".into());
/// status.enrollment = Some("pending".into());
/// let body = merchant_status(&status, Spelling::Universal);
/// assert_eq!(body, br#"{"status":"success","data":{"merchant_id":"m1","status":"pending"}}"#);
/// ```
pub fn merchant_status(status: &MerchantStatus, spelling: Spelling) -> Vec<u8> {
    struct Data<'a>(&'a MerchantStatus);
    impl Serialize for Data<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(None)?;
            if let Some(id) = &self.0.merchant_id {
                map.serialize_entry("merchant_id", id)?;
            }
            if let Some(state) = &self.0.enrollment {
                map.serialize_entry("status", state)?;
            }
            map.end()
        }
    }
    let has_data = status.merchant_id.is_some() || status.enrollment.is_some();
    envelope(&Envelope {
        status: status.status.as_deref(),
        message: status.message.as_deref(),
        data: has_data.then_some(&Data(status)),
        spelling,
    })
}
