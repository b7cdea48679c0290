//! Request bodies, read the way a server reads them: the shapes the documents give, with a
//! typed error that names the field at fault and never quotes a value.

use std::fmt;

use serde_json::{Map, Value};

use crate::endpoints::json_error;
use crate::error::safe_message;
use crate::{JsonError, MerchantEnrollment, Trigger};

/// Why a request body cannot be read. Holds no value from the body; field names from the body
/// are masked and bounded like a server's message.
///
/// ```
/// use cardsync_proto::server::{RequestError, decode_webhooks_body};
///
/// let err = decode_webhooks_body(br#"{"webhooks":[{"trigger_id":99,"url":"x"}]}"#).unwrap_err();
/// assert_eq!(err.to_string(), "webhooks[0].trigger_id must be 20, 21, 22 or 23");
/// let err = decode_webhooks_body(br#"{"batch_done":"https://example.com/hook"}"#).unwrap_err();
/// assert!(matches!(err, RequestError::UnknownField { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// The body is not JSON, or not of the request's shape.
    Json(JsonError),
    /// A field is missing or holds what the request cannot have.
    Invalid {
        /// Where, such as `webhooks[0].url`.
        field: String,
        /// What it must be, such as `a non-empty URL`.
        expected: &'static str,
    },
    /// A field the request does not have: forms read strictly report a misspelt field rather
    /// than drop it.
    UnknownField {
        /// The field's name, made safe.
        field: String,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Json(e) => write!(f, "{e}"),
            RequestError::Invalid { field, expected } => write!(f, "{field} must be {expected}"),
            RequestError::UnknownField { field } => write!(f, "unknown field {field}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Json(e) => Some(e),
            _ => None,
        }
    }
}

fn invalid(field: impl Into<String>, expected: &'static str) -> RequestError {
    RequestError::Invalid {
        field: field.into(),
        expected,
    }
}

fn object(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    serde_json::from_slice(body)
        .map_err(|e| RequestError::Json(json_error::<Map<String, Value>>(body, &e)))
}

fn at(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// One `{"trigger_id":…,"url":…}`; `trigger_id` a number or a string of one.
fn registration(item: &Value, prefix: &str) -> Result<(Trigger, String), RequestError> {
    let Value::Object(fields) = item else {
        return Err(invalid(
            if prefix.is_empty() { "." } else { prefix },
            "an object with trigger_id and url",
        ));
    };
    let id = match fields.get("trigger_id") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let trigger = id
        .and_then(|id| u32::try_from(id).ok())
        .and_then(Trigger::from_id)
        .ok_or_else(|| invalid(at(prefix, "trigger_id"), "20, 21, 22 or 23"))?;
    let url = fields
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| invalid(at(prefix, "url"), "a non-empty URL"))?;
    Ok((trigger, url.to_owned()))
}

/// The flat form's keys, by trigger.
const FLAT: [(&str, Trigger); 4] = [
    ("batch_completion_webhook", Trigger::BatchAvailable),
    ("merchant_enrollment_webhook", Trigger::EnrollmentComplete),
    ("batch_error_webhook", Trigger::BatchError),
    ("amex_update_webhook", Trigger::AmexUpdate),
];

/// Reads a `POST /v2/webhooks` body, in either of the documents' forms: the array form
/// `{"webhooks":[{"trigger_id":20,"url":"…"}]}` (what [`SetWebhooks`](crate::SetWebhooks)
/// sends), or the flat form `{"batch_completion_webhook":"…",…}` (what
/// [`SetWebhooksFlat`](crate::SetWebhooksFlat) sends), where an unknown key is an error. The
/// pairs come in the order given (the flat form's by trigger).
///
/// # Errors
///
/// [`RequestError::Json`] for a body that is not a JSON object; [`RequestError::Invalid`] for
/// an empty list, a trigger that is not 20 to 23, or a URL that is not a non-empty string;
/// [`RequestError::UnknownField`] for a flat key the documents do not name.
///
/// ```
/// use cardsync_proto::Trigger;
/// use cardsync_proto::server::decode_webhooks_body;
///
/// let pairs = decode_webhooks_body(br#"{"amex_update_webhook":"https://a/23","batch_completion_webhook":"https://a/20"}"#)?;
/// assert_eq!(pairs, [(Trigger::BatchAvailable, "https://a/20".to_owned()), (Trigger::AmexUpdate, "https://a/23".to_owned())]);
/// # Ok::<(), cardsync_proto::server::RequestError>(())
/// ```
pub fn decode_webhooks_body(body: &[u8]) -> Result<Vec<(Trigger, String)>, RequestError> {
    let map = object(body)?;
    if let Some(list) = map.get("webhooks") {
        let list = list
            .as_array()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| invalid("webhooks", "a non-empty list"))?;
        return list
            .iter()
            .enumerate()
            .map(|(i, item)| registration(item, &format!("webhooks[{i}]")))
            .collect();
    }
    let mut pairs = Vec::new();
    for (key, value) in &map {
        let Some((_, trigger)) = FLAT.iter().find(|(k, _)| k == key) else {
            return Err(RequestError::UnknownField {
                field: safe_message(key),
            });
        };
        match value {
            Value::String(url) if !url.is_empty() => pairs.push((*trigger, url.clone())),
            _ => return Err(invalid(key.clone(), "a non-empty URL")),
        }
    }
    if pairs.is_empty() {
        return Err(invalid(
            "the body",
            "an object with at least one webhook URL",
        ));
    }
    pairs.sort_by_key(|(t, _)| *t);
    Ok(pairs)
}

/// Reads a `POST /v2/webhook` body of the American Express edition: one
/// `{"trigger_id":23,"url":"…"}` (what [`SetAmexWebhook`](crate::SetAmexWebhook) sends).
///
/// # Errors
///
/// As [`decode_webhooks_body`].
///
/// ```
/// use cardsync_proto::Trigger;
/// use cardsync_proto::server::decode_webhook_body;
///
/// let pair = decode_webhook_body(br#"{"trigger_id":"23","url":"https://a/23"}"#)?;
/// assert_eq!(pair, (Trigger::AmexUpdate, "https://a/23".to_owned()));
/// assert_eq!(decode_webhook_body(br#"{"trigger_id":23}"#).unwrap_err().to_string(), "url must be a non-empty URL");
/// # Ok::<(), cardsync_proto::server::RequestError>(())
/// ```
pub fn decode_webhook_body(body: &[u8]) -> Result<(Trigger, String), RequestError> {
    registration(&Value::Object(object(body)?), "")
}

/// Reads a `POST /v2/merchant` body (what [`EnrollMerchant`](crate::EnrollMerchant) sends):
/// every documented field, and no other.
///
/// # Errors
///
/// [`RequestError::Json`], naming the field: a missing or unknown field, or a value of the
/// wrong type.
///
/// ```
/// let body = include_bytes!("../../tests/data/universal/merchant_enroll_request.json");
/// let merchant = cardsync_proto::server::decode_merchant_enrollment(body)?;
/// assert_eq!(merchant.user.username, "somerandomuser20210219c");
///
/// let err = cardsync_proto::server::decode_merchant_enrollment(br#"{"name":"x","nmae":"y"}"#).unwrap_err();
/// assert!(err.to_string().contains("unknown field `nmae`"), "{err}");
/// # Ok::<(), cardsync_proto::server::RequestError>(())
/// ```
pub fn decode_merchant_enrollment(body: &[u8]) -> Result<MerchantEnrollment, RequestError> {
    serde_json::from_slice(body)
        .map_err(|e| RequestError::Json(json_error::<MerchantEnrollment>(body, &e)))
}

/// The value of query parameter `name` in `uri`, percent-decoded (and `+` read as a space), as
/// the endpoints' `batch_id`, `event_id` and `merchant_id` arrive. The first occurrence wins;
/// bytes that do not decode to UTF-8 are replaced.
///
/// ```
/// use cardsync_proto::server::query_value;
///
/// let uri: http::Uri = "/v2/batch/results?batch_id=b%201&event_id=e+2".parse()?;
/// assert_eq!(query_value(&uri, "batch_id").as_deref(), Some("b 1"));
/// assert_eq!(query_value(&uri, "event_id").as_deref(), Some("e 2"));
/// assert_eq!(query_value(&uri, "merchant_id"), None);
/// # Ok::<(), http::uri::InvalidUri>(())
/// ```
pub fn query_value(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
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
