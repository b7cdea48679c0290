//! The server side of the wire format, as far as it is written so far: the response envelope
//! (success and error) and the stats object, in either spelling of the documents, for a
//! server (the emulator) or a test double to answer with. Everything here reads back through
//! the client side's decoders unchanged (see the tests).

use cardsync_core::Stats;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Which of the documents' spellings an answer uses.
///
/// ```
/// use cardsync_proto::server::Spelling;
/// assert_eq!(Spelling::Universal.message_key(), "message");
/// assert_eq!(Spelling::Amex.closed_key(), "contact_closed");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Spelling {
    /// The Universal document's: `message`, `closed`.
    #[default]
    Universal,
    /// The American Express edition's: `msg`, `contact_closed`.
    Amex,
}

impl Spelling {
    /// The key of the envelope's message.
    pub fn message_key(self) -> &'static str {
        match self {
            Spelling::Universal => "message",
            Spelling::Amex => "msg",
        }
    }

    /// The key of the closed-accounts counter.
    pub fn closed_key(self) -> &'static str {
        match self {
            Spelling::Universal => "closed",
            Spelling::Amex => "contact_closed",
        }
    }
}

/// A success answer's body: `{"data":…,"message":"success","status":"success"}` (`msg` in the
/// Amex spelling; no `data` when there is none), keys in sorted order. `data` is serialized
/// straight, so that a large results set needs no JSON tree.
///
/// ```
/// use cardsync_proto::server::{Spelling, success};
/// let body = success(Some(&serde_json::json!({"batch_id": "b1"})), Spelling::Amex);
/// assert_eq!(body, br#"{"data":{"batch_id":"b1"},"msg":"success","status":"success"}"#);
/// ```
pub fn success<T: Serialize + ?Sized>(data: Option<&T>, spelling: Spelling) -> Vec<u8> {
    struct Envelope<'a, T: ?Sized> {
        data: Option<&'a T>,
        message_key: &'static str,
    }
    impl<T: Serialize + ?Sized> Serialize for Envelope<'_, T> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(None)?;
            if let Some(data) = self.data {
                map.serialize_entry("data", data)?;
            }
            map.serialize_entry(self.message_key, "success")?;
            map.serialize_entry("status", "success")?;
            map.end()
        }
    }
    let envelope = Envelope {
        data,
        message_key: spelling.message_key(),
    };
    // Serializing to memory fails only for a `data` whose own `Serialize` fails.
    serde_json::to_vec(&envelope).unwrap_or_else(|_| failure("cannot encode the answer", spelling))
}

/// An error answer's body: `{"message":…,"status":"failed"}` (`msg` in the Amex spelling), as
/// CardSync's v1.1 description shows.
///
/// ```
/// use cardsync_proto::server::{Spelling, failure};
/// assert_eq!(failure("no batch b1", Spelling::Universal), br#"{"message":"no batch b1","status":"failed"}"#);
/// ```
pub fn failure(message: &str, spelling: Spelling) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 40);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(spelling.message_key().as_bytes());
    out.extend_from_slice(b"\":");
    crate::lenient::write_json_str(&mut out, message);
    out.extend_from_slice(b",\"status\":\"failed\"}");
    out
}

/// The stats object, with every documented counter (the closed-accounts one in `spelling`),
/// for `serde` to write inside an answer.
///
/// ```
/// use cardsync_core::Stats;
/// use cardsync_proto::server::{Spelling, StatsBody};
/// let mut stats = Stats::default();
/// stats.closed = 2;
/// let json = serde_json::to_string(&StatsBody::new(&stats, Spelling::Amex))?;
/// assert!(json.contains(r#""contact_closed":2"#));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct StatsBody<'a> {
    stats: &'a Stats,
    spelling: Spelling,
}

impl<'a> StatsBody<'a> {
    /// The stats, in a spelling.
    pub fn new(stats: &'a Stats, spelling: Spelling) -> StatsBody<'a> {
        StatsBody { stats, spelling }
    }
}

impl Serialize for StatsBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.stats;
        // Keys in sorted order, as a JSON object prints them.
        let mut entries = [
            (self.spelling.closed_key(), st.closed),
            ("contact", st.contact),
            ("no_change", st.no_change),
            ("no_match", st.no_match),
            ("number_submitted", st.number_submitted),
            ("updated_card", st.updated_card),
            ("updated_expiry", st.updated_expiry),
            ("valid", st.valid),
        ];
        entries.sort_by_key(|(k, _)| *k);
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(k, &v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ack, Endpoint, GetBatch, ReportedStats, Subscribe};

    fn response(status: u16, body: Vec<u8>) -> http::Response<Vec<u8>> {
        let mut r = http::Response::new(body);
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    }

    #[test]
    fn envelopes_read_back_in_both_spellings() {
        for spelling in [Spelling::Universal, Spelling::Amex] {
            let ack: Ack =
                Subscribe::decode(&response(200, success::<()>(None, spelling))).unwrap();
            assert_eq!(ack.status.as_deref(), Some("success"));
            assert_eq!(ack.message.as_deref(), Some("success"));
            let data = serde_json::json!({"batch_id": "b 1", "status": "pending"});
            let info = GetBatch::decode(&response(200, success(Some(&data), spelling))).unwrap();
            assert_eq!(info.batch_id.as_deref(), Some("b 1"));
            for message in ["no batch b1", "quote \" and \\ and\nnewline", ""] {
                let err = GetBatch::decode(&response(404, failure(message, spelling))).unwrap_err();
                match err {
                    // What a client keeps of a server's message is made safe (bounded, no
                    // control characters, digit runs masked).
                    crate::DecodeError::Status {
                        message: Some(m), ..
                    } => assert_eq!(m, crate::error::safe_message(message)),
                    crate::DecodeError::Status { message: None, .. } => assert!(message.is_empty()),
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn stats_read_back_in_both_spellings() {
        let mut stats = Stats::default();
        stats.number_submitted = 9;
        stats.no_change = 1;
        stats.updated_card = 2;
        stats.updated_expiry = 3;
        stats.no_match = 4;
        stats.valid = 5;
        stats.contact = 6;
        stats.closed = 7;
        for spelling in [Spelling::Universal, Spelling::Amex] {
            let json = serde_json::to_vec(&StatsBody::new(&stats, spelling)).unwrap();
            let back: ReportedStats = serde_json::from_slice(&json).unwrap();
            assert_eq!(back.stats, stats, "{}", String::from_utf8_lossy(&json));
            assert!(back.other_counters.is_empty());
        }
    }
}
