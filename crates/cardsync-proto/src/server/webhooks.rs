//! Webhook payloads, as the documents' examples print them.

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::Spelling;
use crate::{CardStats, ReportedStats, Trigger, WebhookEvent};

/// A webhook's payload: what [`decode_webhook`](crate::decode_webhook) reads back.
///
/// Keys come in the order of the documents' examples. In the Universal spelling `trigger_id`
/// is a number and each counter is written once; in the Amex spelling `trigger_id` is a
/// string, the message key is `msg`, and the stats carry the closed counter twice, as the
/// documents' examples do: `"closed":0` in its place and the real count last (as `closed` for
/// a batch, `contact_closed` for an American Express update). An enrollment event has no
/// `trigger_id`, as in the documents' example, unless it has no `merchant_id` either (then
/// nothing else would say what it is). Absent fields are left out.
///
/// ```
/// use cardsync_proto::server::{Spelling, webhook};
/// use cardsync_proto::{AmexUpdate, WebhookEvent, decode_webhook};
///
/// let mut update = AmexUpdate::default();
/// update.event_id = Some("e1".into());
/// update.stats.stats.closed = 1;
/// let event = WebhookEvent::AmexUpdate(update);
/// let body = webhook(&event, Spelling::Amex);
/// assert_eq!(
///     String::from_utf8(body.clone()).unwrap(),
///     r#"{"stats":{"updated_expiry":0,"updated_card":0,"no_change":0,"no_match":0,"valid":0,"contact":0,"closed":0,"number_submitted":0,"contact_closed":1},"trigger_id":"23","event_id":"e1"}"#
/// );
/// assert_eq!(decode_webhook(&body)?, event);
/// # Ok::<(), cardsync_proto::WebhookError>(())
/// ```
pub fn webhook(event: &WebhookEvent, spelling: Spelling) -> Vec<u8> {
    // Keys are strings and values strings or integers: serializing to memory cannot fail.
    serde_json::to_vec(&EventOut { event, spelling }).expect("a webhook always serializes")
}

struct EventOut<'a> {
    event: &'a WebhookEvent,
    spelling: Spelling,
}

/// `trigger_id`: a number in the Universal spelling, a string in the Amex one. An unknown
/// trigger is written as it was received: as a number only when it is one.
enum TriggerOut<'a> {
    Known(Trigger),
    Unknown(&'a str),
}

impl TriggerOut<'_> {
    fn write<M: SerializeMap>(&self, map: &mut M, spelling: Spelling) -> Result<(), M::Error> {
        let (number, text) = match self {
            TriggerOut::Known(t) => (Some(u64::from(t.id())), Cow::Owned(t.id().to_string())),
            // Canonical digits only ("07" is not a JSON number), and only what reads back as
            // the same text.
            TriggerOut::Unknown(t) => (
                t.parse::<u64>().ok().filter(|n| n.to_string() == *t),
                Cow::Borrowed(*t),
            ),
        };
        match (number, spelling) {
            (Some(n), Spelling::Universal) => map.serialize_entry("trigger_id", &n),
            _ => map.serialize_entry("trigger_id", text.as_ref()),
        }
    }
}

fn opt<M: SerializeMap>(map: &mut M, key: &str, value: Option<&String>) -> Result<(), M::Error> {
    match value {
        Some(v) => map.serialize_entry(key, v),
        None => Ok(()),
    }
}

impl Serialize for EventOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sp = self.spelling;
        let msg = sp.message_key();
        let mut map = s.serialize_map(None)?;
        match self.event {
            WebhookEvent::BatchAvailable(e) => {
                opt(&mut map, "batch_id", e.batch_id.as_ref())?;
                map.serialize_entry("card_stats", &CardStatsOut(&e.card_stats))?;
                let stats = WebhookStats {
                    stats: &e.stats,
                    spelling: sp,
                    trigger: Trigger::BatchAvailable,
                };
                map.serialize_entry("stats", &stats)?;
                opt(&mut map, "id", e.id.as_ref())?;
                TriggerOut::Known(Trigger::BatchAvailable).write(&mut map, sp)?;
                opt(&mut map, "trigger_date", e.trigger_date.as_ref())?;
                opt(&mut map, "event_id", e.event_id.as_ref())?;
                opt(&mut map, msg, e.message.as_ref())?;
                opt(&mut map, "expires", e.expires.as_ref())?;
            }
            WebhookEvent::EnrollmentComplete(e) => {
                if e.merchant_id.is_none() {
                    TriggerOut::Known(Trigger::EnrollmentComplete).write(&mut map, sp)?;
                }
                opt(&mut map, "status", e.status.as_ref())?;
                opt(&mut map, msg, e.message.as_ref())?;
                opt(&mut map, "merchant_id", e.merchant_id.as_ref())?;
            }
            WebhookEvent::BatchError(e) => {
                opt(&mut map, "batch_id", e.batch_id.as_ref())?;
                opt(&mut map, "id", e.id.as_ref())?;
                TriggerOut::Known(Trigger::BatchError).write(&mut map, sp)?;
                opt(&mut map, "trigger_date", e.trigger_date.as_ref())?;
                opt(&mut map, "event_id", e.event_id.as_ref())?;
                opt(&mut map, "source", e.source.as_ref())?;
                opt(&mut map, msg, e.message.as_ref())?;
                map.serialize_entry("error_count", &e.error_count)?;
            }
            WebhookEvent::AmexUpdate(e) => {
                let stats = WebhookStats {
                    stats: &e.stats,
                    spelling: sp,
                    trigger: Trigger::AmexUpdate,
                };
                map.serialize_entry("stats", &stats)?;
                opt(&mut map, "id", e.id.as_ref())?;
                TriggerOut::Known(Trigger::AmexUpdate).write(&mut map, sp)?;
                opt(&mut map, "trigger_date", e.trigger_date.as_ref())?;
                opt(&mut map, "event_id", e.event_id.as_ref())?;
                opt(&mut map, msg, e.message.as_ref())?;
                opt(&mut map, "expires", e.expires.as_ref())?;
            }
            WebhookEvent::Unknown(e) => {
                opt(&mut map, "id", e.id.as_ref())?;
                TriggerOut::Unknown(&e.trigger_id).write(&mut map, sp)?;
                opt(&mut map, "event_id", e.event_id.as_ref())?;
            }
        }
        map.end()
    }
}

/// `card_stats`: the four documented brands, then any other.
struct CardStatsOut<'a>(&'a CardStats);

impl Serialize for CardStatsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("visa", &c.visa)?;
        map.serialize_entry("mastercard", &c.mastercard)?;
        map.serialize_entry("discover", &c.discover)?;
        map.serialize_entry("american_express", &c.american_express)?;
        for (brand, count) in &c.other {
            map.serialize_entry(brand, count)?;
        }
        map.end()
    }
}

/// Webhook stats, in the order of the webhook examples (`number_submitted` after the closed
/// counter), with the Amex spelling's repeated closed counter.
struct WebhookStats<'a> {
    stats: &'a ReportedStats,
    spelling: Spelling,
    trigger: Trigger,
}

impl Serialize for WebhookStats<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = &self.stats.stats;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("updated_expiry", &st.updated_expiry)?;
        map.serialize_entry("updated_card", &st.updated_card)?;
        map.serialize_entry("no_change", &st.no_change)?;
        map.serialize_entry("no_match", &st.no_match)?;
        map.serialize_entry("valid", &st.valid)?;
        map.serialize_entry("contact", &st.contact)?;
        match self.spelling {
            Spelling::Universal => {
                map.serialize_entry("closed", &st.closed)?;
                map.serialize_entry("number_submitted", &st.number_submitted)?;
            }
            Spelling::Amex => {
                // The documents' examples: `"closed": 0` first, the real count last.
                map.serialize_entry("closed", &0u64)?;
                map.serialize_entry("number_submitted", &st.number_submitted)?;
                let last = match self.trigger {
                    Trigger::AmexUpdate => self.spelling.closed_key(),
                    _ => "closed",
                };
                map.serialize_entry(last, &st.closed)?;
            }
        }
        for (name, count) in &self.stats.other_counters {
            map.serialize_entry(name, count)?;
        }
        map.end()
    }
}
