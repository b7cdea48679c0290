//! A webhook inbox with no I/O: the rules for receiving CardSync's webhooks, for any HTTP
//! server to apply (`cardsync-hyper`'s receiver is one).
//!
//! The documents give no signature scheme, so the URL is the secret: a path with a random
//! token, compared in constant time. The rules: anything but that path is 404; anything but
//! POST is 405 (with `Allow: POST`); a body that is not a webhook, or with an id longer than
//! [`MAX_ID_LEN`], is 400; an event that carries nothing to tell its redeliveries apart (no
//! event id, batch id, merchant id or delivery id: see [`WebhookEvent::dedup_key`]) is 422,
//! never silently taken; an event already handled is acknowledged again with 200 and not
//! handed on; an event being handled right now answers 503, so that CardSync delivers it again
//! later rather than twice at once; a handled event answers 200 only once the handler accepted
//! it (a receiver's handler accepts an event once it is durably recorded), and 500 when it did
//! not (CardSync then delivers it again).

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use cardsync_proto::{WebhookEvent, decode_webhook};
use http::{Method, StatusCode};

/// What to do with a delivery's body.
#[derive(Debug)]
#[non_exhaustive]
// One per delivery, taken apart at once: boxing the event would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Delivery {
    /// Answer with this status; there is nothing to hand on.
    Answer(StatusCode),
    /// Hand the event to the application, then give the ticket back to
    /// [`Inbox::finish`] with how it went, and answer with the status it returns.
    Handle(Ticket, WebhookEvent),
}

/// An event being handled. Give it back to [`Inbox::finish`], whatever happens: until then,
/// redeliveries of the event answer 503.
#[derive(Debug)]
#[must_use = "give the ticket back to Inbox::finish"]
pub struct Ticket {
    key: String,
}

impl Ticket {
    /// The event's key ([`WebhookEvent::dedup_key`]): what a receiver records it under.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The longest event id, batch id or delivery id an inbox takes; a webhook with a longer one is
/// answered 400 (ids are kept, and a forged event must not be able to grow a record without
/// bound). The documents' ids are UUIDs, 36 characters.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Default)]
struct Seen {
    done: HashSet<String>,
    order: VecDeque<String>,
    in_flight: HashSet<String>,
}

/// The webhook inbox at one secret path.
///
/// ```
/// use cardsync_client::inbox::{Delivery, Inbox};
///
/// let inbox = Inbox::new("/webhooks/0123456789abcdef0123", 1000);
/// assert_eq!(inbox.check(&http::Method::GET, "/webhooks/0123456789abcdef0123"), Some(http::StatusCode::METHOD_NOT_ALLOWED));
/// assert_eq!(inbox.check(&http::Method::POST, "/webhooks/guess"), Some(http::StatusCode::NOT_FOUND));
///
/// let body = br#"{"trigger_id":20,"batch_id":"b1","event_id":"e1"}"#;
/// let Delivery::Handle(ticket, event) = inbox.accept(body) else { panic!() };
/// assert_eq!(event.event_id(), Some("e1"));
/// assert_eq!(inbox.finish(ticket, true), http::StatusCode::OK);
/// // A redelivery is acknowledged and not handed on.
/// assert!(matches!(inbox.accept(body), Delivery::Answer(http::StatusCode::OK)));
/// ```
#[derive(Debug)]
pub struct Inbox {
    path: String,
    remember: usize,
    seen: Mutex<Seen>,
}

impl Inbox {
    /// An inbox at `path` that remembers the last `remember` events it handled.
    pub fn new(path: impl Into<String>, remember: usize) -> Inbox {
        Inbox {
            path: path.into(),
            remember: remember.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// The secret path.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a request's method and path before its body is read: `Some(status)` to refuse
    /// it with (404 for another path, 405 for another method: answer it with `Allow: POST`).
    pub fn check(&self, method: &Method, path: &str) -> Option<StatusCode> {
        if !constant_time_eq(path.as_bytes(), self.path.as_bytes()) {
            Some(StatusCode::NOT_FOUND)
        } else if method != Method::POST {
            Some(StatusCode::METHOD_NOT_ALLOWED)
        } else {
            None
        }
    }

    /// [`Inbox::check`] for an inbox that takes a scope after its secret path, as
    /// `/webhooks/TOKEN/SCOPE` (1 to 64 ASCII letters, digits, `-` and `_`): a receiver that
    /// serves several merchants registers one URL per merchant, and learns from the path
    /// whose event it is (events such as American Express updates do not say). The secret
    /// part is compared in constant time; the scope, `None` without one, is returned.
    ///
    /// ```
    /// use cardsync_client::inbox::Inbox;
    /// let inbox = Inbox::new("/webhooks/0123456789abcdef0123", 10);
    /// let post = http::Method::POST;
    /// assert_eq!(inbox.check_scoped(&post, "/webhooks/0123456789abcdef0123/m1"), Ok(Some("m1")));
    /// assert_eq!(inbox.check_scoped(&post, "/webhooks/0123456789abcdef0123"), Ok(None));
    /// assert!(inbox.check_scoped(&post, "/webhooks/0123456789abcdef0123/a/b").is_err());
    /// assert!(inbox.check_scoped(&post, "/webhooks/guess/m1").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// The status to refuse the request with, as [`Inbox::check`].
    pub fn check_scoped<'p>(
        &self,
        method: &Method,
        path: &'p str,
    ) -> Result<Option<&'p str>, StatusCode> {
        let (secret, scope) = match path.get(self.path.len()..) {
            Some(rest) if rest.starts_with('/') => (&path[..self.path.len()], Some(&rest[1..])),
            _ => (path, None),
        };
        if let Some(scope) = scope
            && (scope.is_empty()
                || scope.len() > 64
                || !scope
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(StatusCode::NOT_FOUND);
        }
        match self.check(method, secret) {
            Some(status) => Err(status),
            None => Ok(scope),
        }
    }

    /// Reads a delivery's body.
    pub fn accept(&self, body: &[u8]) -> Delivery {
        let Ok(event) = decode_webhook(body) else {
            return Delivery::Answer(StatusCode::BAD_REQUEST);
        };
        let ids = [event.event_id(), event.batch_id(), event.delivery_id()];
        if ids.into_iter().flatten().any(|id| id.len() > MAX_ID_LEN) {
            tracing::warn!(trigger = ?event.trigger(), "webhook refused: an id is too long");
            return Delivery::Answer(StatusCode::BAD_REQUEST);
        }
        let Some(key) = event.dedup_key() else {
            tracing::warn!(
                trigger = ?event.trigger(),
                "webhook refused (422): no event id, batch id or delivery id to record it by"
            );
            return Delivery::Answer(StatusCode::UNPROCESSABLE_ENTITY);
        };
        let mut seen = self.seen();
        if seen.done.contains(&key) {
            tracing::debug!(trigger = ?event.trigger(), "webhook redelivered; already handled");
            return Delivery::Answer(StatusCode::OK);
        }
        if !seen.in_flight.insert(key.clone()) {
            return Delivery::Answer(StatusCode::SERVICE_UNAVAILABLE);
        }
        drop(seen);
        Delivery::Handle(Ticket { key }, event)
    }

    /// Records how handling went, and says what to answer: 200 when `handled`, else 500 (and
    /// CardSync delivers the event again).
    pub fn finish(&self, ticket: Ticket, handled: bool) -> StatusCode {
        let key = ticket.key;
        let mut seen = self.seen();
        seen.in_flight.remove(&key);
        if handled {
            seen.done.insert(key.clone());
            seen.order.push_back(key);
            while seen.order.len() > self.remember {
                if let Some(old) = seen.order.pop_front() {
                    seen.done.remove(&old);
                }
            }
        }
        if handled {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn an_event_in_flight_answers_503_and_a_failed_one_is_taken_again() {
        let inbox = Inbox::new("/w", 2);
        let body = br#"{"trigger_id":23,"event_id":"e1"}"#;
        let Delivery::Handle(ticket, _) = inbox.accept(body) else {
            panic!()
        };
        assert!(matches!(
            inbox.accept(body),
            Delivery::Answer(StatusCode::SERVICE_UNAVAILABLE)
        ));
        assert_eq!(
            inbox.finish(ticket, false),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let Delivery::Handle(ticket, _) = inbox.accept(body) else {
            panic!("a failed event is handled again")
        };
        assert_eq!(inbox.finish(ticket, true), StatusCode::OK);
        assert!(matches!(
            inbox.accept(b"not json"),
            Delivery::Answer(StatusCode::BAD_REQUEST)
        ));
        // Only the last two are remembered.
        for id in ["e2", "e3"] {
            let body = format!(r#"{{"trigger_id":23,"event_id":"{id}"}}"#);
            let Delivery::Handle(t, _) = inbox.accept(body.as_bytes()) else {
                panic!()
            };
            let _ = inbox.finish(t, true);
        }
        assert!(matches!(inbox.accept(body), Delivery::Handle(..)));
    }

    #[test]
    fn events_without_a_key_and_overlong_ids_are_refused() {
        let inbox = Inbox::new("/w", 10);
        // Nothing to record it by: 422, not a silent 200.
        assert!(matches!(
            inbox.accept(br#"{"trigger_id":23,"stats":{}}"#),
            Delivery::Answer(StatusCode::UNPROCESSABLE_ENTITY)
        ));
        // A batch event without an event id is recorded by its batch.
        let Delivery::Handle(ticket, _) = inbox.accept(br#"{"trigger_id":20,"batch_id":"b7"}"#)
        else {
            panic!()
        };
        assert_eq!(ticket.key(), "batch:20:b7");
        let _ = inbox.finish(ticket, true);
        let long = "x".repeat(MAX_ID_LEN + 1);
        for body in [
            format!(r#"{{"trigger_id":20,"batch_id":"b1","event_id":"{long}"}}"#),
            format!(r#"{{"trigger_id":20,"batch_id":"{long}","event_id":"e"}}"#),
            format!(r#"{{"trigger_id":23,"id":"{long}","event_id":"e"}}"#),
        ] {
            assert!(matches!(
                inbox.accept(body.as_bytes()),
                Delivery::Answer(StatusCode::BAD_REQUEST)
            ));
        }
        let fits = "x".repeat(MAX_ID_LEN);
        let body = format!(r#"{{"trigger_id":20,"batch_id":"b1","event_id":"{fits}"}}"#);
        assert!(matches!(
            inbox.accept(body.as_bytes()),
            Delivery::Handle(..)
        ));
    }
}
