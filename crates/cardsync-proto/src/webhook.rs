//! The webhooks CardSync sends: one decoding function, [`decode_webhook`], and typed events.
//!
//! The documents give no signature scheme for webhooks: nothing in a payload proves it came
//! from CardSync. Receivers should put a secret in the webhook URL path and check it, treat an
//! event as a hint, and fetch the results it names over the authenticated API.

use std::fmt;

use crate::error::{JsonError, Violation, safe_message};
use crate::lenient::{Counter, text};
use crate::{CardStats, ReportedStats};

/// What a webhook is for, by `trigger_id`.
///
/// ```
/// use cardsync_proto::Trigger;
///
/// assert_eq!(Trigger::BatchAvailable.id(), 20);
/// assert_eq!(Trigger::from_id(23), Some(Trigger::AmexUpdate));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Trigger {
    /// 20: a batch is complete; its results can be fetched.
    BatchAvailable,
    /// 21: a merchant's enrollment is complete.
    EnrollmentComplete,
    /// 22: a batch failed validation or processing.
    BatchError,
    /// 23: American Express updates are available.
    AmexUpdate,
}

impl Trigger {
    /// Every trigger.
    pub const ALL: &'static [Trigger] = &[
        Trigger::BatchAvailable,
        Trigger::EnrollmentComplete,
        Trigger::BatchError,
        Trigger::AmexUpdate,
    ];

    /// The numeric `trigger_id`.
    pub const fn id(self) -> u32 {
        match self {
            Trigger::BatchAvailable => 20,
            Trigger::EnrollmentComplete => 21,
            Trigger::BatchError => 22,
            Trigger::AmexUpdate => 23,
        }
    }

    /// The trigger with this id.
    pub fn from_id(id: u32) -> Option<Trigger> {
        Trigger::ALL.iter().copied().find(|t| t.id() == id)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::BatchAvailable => "batch available (20)",
            Trigger::EnrollmentComplete => "enrollment complete (21)",
            Trigger::BatchError => "batch error (22)",
            Trigger::AmexUpdate => "American Express update (23)",
        })
    }
}

/// Trigger 20: a batch's results are ready.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchAvailable {
    /// The batch.
    pub batch_id: Option<String>,
    /// Cards per brand.
    pub card_stats: CardStats,
    /// The counters.
    pub stats: ReportedStats,
    /// The delivery's id.
    pub id: Option<String>,
    /// When the event fired.
    pub trigger_date: Option<String>,
    /// The event id, for fetching the results.
    pub event_id: Option<String>,
    /// A message, made safe.
    pub message: Option<String>,
    /// When the results expire.
    pub expires: Option<String>,
}

/// Trigger 21: a merchant's enrollment is complete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnrollmentComplete {
    /// The `status` word.
    pub status: Option<String>,
    /// A message, made safe.
    pub message: Option<String>,
    /// The merchant.
    pub merchant_id: Option<String>,
}

/// Trigger 22: a batch failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchError {
    /// The batch.
    pub batch_id: Option<String>,
    /// The delivery's id.
    pub id: Option<String>,
    /// When the event fired.
    pub trigger_date: Option<String>,
    /// The event id.
    pub event_id: Option<String>,
    /// Where it failed, such as `Validation`.
    pub source: Option<String>,
    /// What happened, made safe.
    pub message: Option<String>,
    /// How many errors.
    pub error_count: u64,
}

/// Trigger 23: American Express updates are available.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AmexUpdate {
    /// The counters.
    pub stats: ReportedStats,
    /// The delivery's id.
    pub id: Option<String>,
    /// When the event fired.
    pub trigger_date: Option<String>,
    /// The event id, for fetching the results.
    pub event_id: Option<String>,
    /// A message, made safe.
    pub message: Option<String>,
    /// When the results expire.
    pub expires: Option<String>,
}

/// A webhook with a `trigger_id` this version does not know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownEvent {
    /// The `trigger_id` as sent.
    pub trigger_id: String,
    /// The delivery's id, if any.
    pub id: Option<String>,
    /// The event id, if any.
    pub event_id: Option<String>,
}

/// A decoded webhook.
///
/// ```
/// use cardsync_proto::{WebhookEvent, decode_webhook};
///
/// let event = decode_webhook(br#"{"trigger_id":"23","event_id":"e1","stats":{"updated_card":2}}"#)?;
/// let WebhookEvent::AmexUpdate(update) = &event else { panic!() };
/// assert_eq!(update.stats.stats.updated_card, 2);
/// assert_eq!(event.event_id(), Some("e1"));
///
/// let event = decode_webhook(br#"{"trigger_id":99,"event_id":"e2"}"#)?;
/// assert!(matches!(event, WebhookEvent::Unknown(u) if u.trigger_id == "99"));
/// # Ok::<(), cardsync_proto::WebhookError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookEvent {
    /// Trigger 20.
    BatchAvailable(BatchAvailable),
    /// Trigger 21.
    EnrollmentComplete(EnrollmentComplete),
    /// Trigger 22.
    BatchError(BatchError),
    /// Trigger 23.
    AmexUpdate(AmexUpdate),
    /// Another trigger.
    Unknown(UnknownEvent),
}

impl WebhookEvent {
    /// The trigger, when known.
    pub fn trigger(&self) -> Option<Trigger> {
        Some(match self {
            WebhookEvent::BatchAvailable(_) => Trigger::BatchAvailable,
            WebhookEvent::EnrollmentComplete(_) => Trigger::EnrollmentComplete,
            WebhookEvent::BatchError(_) => Trigger::BatchError,
            WebhookEvent::AmexUpdate(_) => Trigger::AmexUpdate,
            WebhookEvent::Unknown(_) => return None,
        })
    }

    /// The event id, which identifies the event across redeliveries. Enrollment events carry
    /// none; use [`WebhookEvent::dedup_key`] to recognise replays of any event.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            WebhookEvent::BatchAvailable(e) => e.event_id.as_deref(),
            WebhookEvent::BatchError(e) => e.event_id.as_deref(),
            WebhookEvent::AmexUpdate(e) => e.event_id.as_deref(),
            WebhookEvent::Unknown(e) => e.event_id.as_deref(),
            WebhookEvent::EnrollmentComplete(_) => None,
        }
    }

    /// The batch the event is about (batch available, batch error).
    pub fn batch_id(&self) -> Option<&str> {
        match self {
            WebhookEvent::BatchAvailable(e) => e.batch_id.as_deref(),
            WebhookEvent::BatchError(e) => e.batch_id.as_deref(),
            _ => None,
        }
    }

    /// The delivery's own `id` (the documents call it a unique identifier), if any.
    pub fn delivery_id(&self) -> Option<&str> {
        match self {
            WebhookEvent::BatchAvailable(e) => e.id.as_deref(),
            WebhookEvent::BatchError(e) => e.id.as_deref(),
            WebhookEvent::AmexUpdate(e) => e.id.as_deref(),
            WebhookEvent::Unknown(e) => e.id.as_deref(),
            WebhookEvent::EnrollmentComplete(_) => None,
        }
    }

    /// A key that is the same for every delivery of one event, so that a receiver records it
    /// once: `event:ID` from the event id; for an event without one, what it is about:
    /// `batch:TRIGGER:BATCH_ID` for a batch's events (a batch completes, or fails, once),
    /// `enrollment:MERCHANT_ID`, else `delivery:ID` from the delivery's id. `None` when the
    /// event carries none of these: nothing tells its redeliveries apart from new events.
    ///
    /// ```
    /// use cardsync_proto::decode_webhook;
    ///
    /// let e = decode_webhook(br#"{"trigger_id":20,"batch_id":"b1","event_id":"e1"}"#)?;
    /// assert_eq!(e.dedup_key().as_deref(), Some("event:e1"));
    /// let e = decode_webhook(br#"{"trigger_id":20,"batch_id":"b1"}"#)?;
    /// assert_eq!(e.dedup_key().as_deref(), Some("batch:20:b1"));
    /// let e = decode_webhook(br#"{"trigger_id":23,"stats":{}}"#)?;
    /// assert_eq!(e.dedup_key(), None);
    /// # Ok::<(), cardsync_proto::WebhookError>(())
    /// ```
    pub fn dedup_key(&self) -> Option<String> {
        let present = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
        if let Some(id) = present(self.event_id()) {
            return Some(format!("event:{id}"));
        }
        if let (Some(trigger), Some(batch)) = (self.trigger(), present(self.batch_id())) {
            return Some(format!("batch:{}:{batch}", trigger.id()));
        }
        if let WebhookEvent::EnrollmentComplete(e) = self
            && let Some(m) = present(e.merchant_id.as_deref())
        {
            return Some(format!("enrollment:{m}"));
        }
        present(self.delivery_id()).map(|i| format!("delivery:{i}"))
    }
}

/// Why a webhook body could not be decoded. Never holds the body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookError {
    /// The body is not a JSON object.
    NotJson {
        /// The body's length in bytes.
        length: usize,
    },
    /// The JSON does not fit a webhook.
    Json(JsonError),
    /// The payload has no `trigger_id` and no recognisable shape.
    Protocol(Violation),
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookError::NotJson { length } => {
                write!(f, "the webhook body ({length} bytes) is not a JSON object")
            }
            WebhookError::Json(e) => write!(f, "webhook: {e}"),
            WebhookError::Protocol(v) => write!(f, "webhook: {v}"),
        }
    }
}

impl std::error::Error for WebhookError {}

/// Every field any webhook has; the trigger decides which are used.
#[derive(Default)]
struct Raw {
    trigger_id: Option<String>,
    batch_id: Option<String>,
    card_stats: Option<CardStats>,
    stats: Option<ReportedStats>,
    id: Option<String>,
    trigger_date: Option<String>,
    event_id: Option<String>,
    message: Option<String>,
    expires: Option<String>,
    status: Option<String>,
    merchant_id: Option<String>,
    source: Option<String>,
    error_count: Option<u64>,
}

crate::lenient::lenient_object!(Raw, "a webhook object", |map, r| {
    "trigger_id" => r.trigger_id = text(&mut map)?,
    "batch_id" => r.batch_id = text(&mut map)?,
    "card_stats" => r.card_stats = map.next_value()?,
    "stats" => r.stats = map.next_value()?,
    "id" => r.id = text(&mut map)?,
    "trigger_date" => r.trigger_date = text(&mut map)?,
    "event_id" => r.event_id = text(&mut map)?,
    "message" | "msg" => r.message = text(&mut map)?,
    "expires" => r.expires = text(&mut map)?,
    "status" => r.status = text(&mut map)?,
    "merchant_id" => r.merchant_id = text(&mut map)?,
    "source" => r.source = text(&mut map)?,
    "error_count" => r.error_count = Some(map.next_value::<Counter>()?.0),
});

/// Decodes a webhook body.
///
/// `trigger_id` may be a number or a string. A payload without one is taken for an enrollment
/// event (21) when it has a `merchant_id`, as in the documents' example of that webhook.
///
/// # Errors
///
/// [`WebhookError`] when the body is not a JSON object, its fields have the wrong types, or it
/// has neither a `trigger_id` nor a `merchant_id`.
pub fn decode_webhook(body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(WebhookError::NotJson { length: body.len() });
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| {
        let mut de = serde_json::Deserializer::from_slice(body);
        WebhookError::Json(match serde_path_to_error::deserialize::<_, Raw>(&mut de) {
            Err(p) => JsonError::new(p.inner(), p.path().to_string()),
            Ok(_) => JsonError::new(&e, ".".to_owned()),
        })
    })?;
    let message = raw.message.as_deref().map(safe_message);
    let trigger = match raw.trigger_id.as_deref().map(str::trim) {
        Some(t) => match t.parse::<u32>().ok().and_then(Trigger::from_id) {
            Some(trigger) => trigger,
            None => {
                return Ok(WebhookEvent::Unknown(UnknownEvent {
                    trigger_id: safe_message(t),
                    id: raw.id,
                    event_id: raw.event_id,
                }));
            }
        },
        None if raw.merchant_id.is_some() => Trigger::EnrollmentComplete,
        None => return Err(WebhookError::Protocol(Violation::UnrecognisedWebhook)),
    };
    Ok(match trigger {
        Trigger::BatchAvailable => WebhookEvent::BatchAvailable(BatchAvailable {
            batch_id: raw.batch_id,
            card_stats: raw.card_stats.unwrap_or_default(),
            stats: raw.stats.unwrap_or_default(),
            id: raw.id,
            trigger_date: raw.trigger_date,
            event_id: raw.event_id,
            message,
            expires: raw.expires,
        }),
        Trigger::EnrollmentComplete => WebhookEvent::EnrollmentComplete(EnrollmentComplete {
            status: raw.status,
            message,
            merchant_id: raw.merchant_id,
        }),
        Trigger::BatchError => WebhookEvent::BatchError(BatchError {
            batch_id: raw.batch_id,
            id: raw.id,
            trigger_date: raw.trigger_date,
            event_id: raw.event_id,
            source: raw.source,
            message,
            error_count: raw.error_count.unwrap_or(0),
        }),
        Trigger::AmexUpdate => WebhookEvent::AmexUpdate(AmexUpdate {
            stats: raw.stats.unwrap_or_default(),
            id: raw.id,
            trigger_date: raw.trigger_date,
            event_id: raw.event_id,
            message,
            expires: raw.expires,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_json_and_shapeless() {
        assert_eq!(
            decode_webhook(b""),
            Err(WebhookError::NotJson { length: 0 })
        );
        assert_eq!(
            decode_webhook(b"[1]"),
            Err(WebhookError::NotJson { length: 3 })
        );
        assert_eq!(
            decode_webhook(b"{}"),
            Err(WebhookError::Protocol(Violation::UnrecognisedWebhook))
        );
        let Err(WebhookError::Json(e)) = decode_webhook(br#"{"stats":[1]}"#) else {
            panic!()
        };
        assert_eq!(e.path, "stats");
    }
}
