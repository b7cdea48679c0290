//! Typed errors for building requests and reading responses.
//!
//! A response body may hold card numbers, so no error keeps it. A decoding error keeps the HTTP
//! status, the content type and the body's length, the server's own message (at most
//! [`MAX_MESSAGE_LEN`] characters, with anything that looks like a card number masked by
//! [`redact_digit_runs`]), and for JSON that does not fit, the JSON path and position of the
//! problem.

use std::fmt;

use cardsync_core::redact_digit_runs;
use http::StatusCode;

use crate::KeyScope;

/// The most characters of a server message an error keeps.
pub const MAX_MESSAGE_LEN: usize = 200;

/// Makes server-provided text safe to keep: control characters become spaces, anything that
/// looks like a card number (a run of twelve or more digits, grouped or not) is masked, and the
/// result is cut to [`MAX_MESSAGE_LEN`] characters.
pub(crate) fn safe_message(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let masked = redact_digit_runs(cleaned.trim());
    match masked.char_indices().nth(MAX_MESSAGE_LEN) {
        Some((cut, _)) => format!("{}…", &masked[..cut]),
        None => masked.into_owned(),
    }
}

/// Whether an envelope's `status` word says the call failed (`failed`, `failure`, `fail`,
/// `error`, in any case).
pub(crate) fn is_failure_word(word: &str) -> bool {
    ["failed", "failure", "fail", "error"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
}

/// Why a request could not be built.
///
/// ```
/// use cardsync_proto::{BaseUrl, Config, Endpoint, EncodeError, GetBatch, KeyScope};
///
/// let config = Config::new(BaseUrl::sandbox()); // no keys
/// let err = GetBatch::new("b1").encode(&config).unwrap_err();
/// assert_eq!(err, EncodeError::MissingKey { scope: KeyScope::Merchant });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The endpoint needs a key of this scope and the configuration has none.
    MissingKey {
        /// The scope needed.
        scope: KeyScope,
    },
    /// A batch or subscription request with no cards.
    NoCards,
    /// More cards than CardSync takes in one request.
    TooManyCards {
        /// How many cards the request had.
        count: usize,
    },
    /// A required text field is empty.
    EmptyField {
        /// The field's name on the wire.
        field: &'static str,
    },
    /// A planned request of the other route (a subscription given to a batch, or the reverse).
    WrongRoute {
        /// The route the endpoint takes.
        expected: cardsync_core::RouteKind,
    },
    /// The base URL and path do not make a valid URI.
    InvalidUri {
        /// The endpoint path.
        path: String,
    },
    /// A field holds what the request cannot carry.
    InvalidField {
        /// The field's name on the wire.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::MissingKey { scope } => write!(f, "this request needs a {scope}"),
            EncodeError::NoCards => f.write_str("a request must hold at least one card"),
            EncodeError::TooManyCards { count } => write!(
                f,
                "{count} cards in one request; CardSync takes at most {}",
                cardsync_core::MAX_CARDS_PER_REQUEST
            ),
            EncodeError::EmptyField { field } => write!(f, "`{field}` must not be empty"),
            EncodeError::WrongRoute { expected } => {
                write!(f, "this endpoint takes {expected} requests only")
            }
            EncodeError::InvalidUri { path } => write!(f, "cannot build a URI for {path}"),
            EncodeError::InvalidField { field, expected } => {
                write!(f, "`{field}` must be {expected}")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// What kind of JSON problem a [`JsonError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JsonErrorKind {
    /// Not well-formed JSON.
    Syntax,
    /// The body ends in the middle of a value: truncated.
    Truncated,
    /// Well-formed JSON whose values do not fit what the endpoint returns.
    Data,
}

/// Where and how JSON failed to decode. Holds no values from the body.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JsonError {
    /// The kind of problem.
    pub kind: JsonErrorKind,
    /// The JSON path to the problem, such as `data.cards[3].status` (`.` for the top), with
    /// any run of twelve or more digits in a key masked.
    pub path: String,
    /// 1-based line of the problem in the body.
    pub line: usize,
    /// 1-based column of the problem in the body.
    pub column: usize,
    /// What was expected there, when the decoder could say without quoting the body (such as
    /// "missing field `batch_id`" or "expected a JSON object").
    pub detail: Option<String>,
}

impl JsonError {
    pub(crate) fn new(e: &serde_json::Error, path: String) -> JsonError {
        use serde_json::error::Category;
        let kind = match e.classify() {
            Category::Eof => JsonErrorKind::Truncated,
            Category::Syntax | Category::Io => JsonErrorKind::Syntax,
            Category::Data => JsonErrorKind::Data,
        };
        // serde_json's messages can quote values from the body ("invalid type: string
        // \"4111…\""), so only the parts that name our own schema are kept.
        let msg = e.to_string();
        let msg = msg.split(" at line ").next().unwrap_or("");
        let detail = if msg.starts_with("missing field") || msg.starts_with("duplicate field") {
            Some(msg.to_owned())
        } else if msg.starts_with("unknown field") {
            // "unknown field `x`, expected one of …": the name is a key of the body (masked
            // below, like the path); the list of expected fields is ours but long.
            Some(msg.split(", expected").next().unwrap_or(msg).to_owned())
        } else {
            msg.split_once(", expected ")
                .map(|(_, expected)| format!("expected {expected}"))
        };
        JsonError {
            kind,
            // Object keys come from the body too, so the path is masked and bounded like a
            // message.
            path: safe_message(&path),
            line: e.line(),
            column: e.column(),
            detail: detail.map(|d| safe_message(&d)),
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            JsonErrorKind::Syntax => "malformed JSON",
            JsonErrorKind::Truncated => "truncated JSON",
            JsonErrorKind::Data => "unexpected JSON",
        };
        write!(
            f,
            "{kind} at {} (line {}, column {})",
            self.path, self.line, self.column
        )?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for JsonError {}

/// A response that breaks the protocol although its JSON is fine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// Batch creation answered without `data.batch_id`, so the batch cannot be followed.
    MissingBatchId,
    /// Enrollment answered without `data.merchant_id` or `data.api_key`.
    MissingMerchantCredentials,
    /// The response has no `data` object where one is required.
    MissingData,
    /// A webhook with no `trigger_id` that is not recognisable by its fields either.
    UnrecognisedWebhook,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Violation::MissingBatchId => {
                "batch creation returned no batch_id, so the batch cannot be followed; ask \
                 CardSync support for the batch before resubmitting, or it may be billed twice"
            }
            Violation::MissingMerchantCredentials => {
                "merchant enrollment returned no merchant_id or api_key"
            }
            Violation::MissingData => "the response has no data object",
            Violation::UnrecognisedWebhook => "the webhook has no trigger_id and no known shape",
        })
    }
}

/// Why a response could not be decoded. Never holds the body.
///
/// ```
/// use cardsync_proto::{DecodeError, Endpoint, GetBatch};
///
/// let page = http::Response::builder()
///     .status(502)
///     .header("content-type", "text/html")
///     .body(b"<html>Bad gateway</html>".to_vec())?;
/// match GetBatch::decode(&page).unwrap_err() {
///     DecodeError::Status { status, message, content_type, length, .. } => {
///         assert_eq!(status, 502);
///         assert_eq!(message, None);
///         assert_eq!(content_type.as_deref(), Some("text/html"));
///         assert_eq!(length, 24);
///     }
///     other => panic!("{other}"),
/// }
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A status other than 2xx. The server's `status` word and message are kept when the body
    /// is a JSON error object.
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The `status` field of a JSON error body (such as `"failed"`).
        api_status: Option<String>,
        /// The `message` or `msg` field of a JSON error body, made safe.
        message: Option<String>,
        /// The `Content-Type` header.
        content_type: Option<String>,
        /// The body's length in bytes.
        length: usize,
    },
    /// A 2xx response whose body is not JSON (an HTML page, an empty body).
    NotJson {
        /// The HTTP status.
        status: StatusCode,
        /// The `Content-Type` header.
        content_type: Option<String>,
        /// The body's length in bytes.
        length: usize,
    },
    /// A 2xx response whose JSON does not fit the endpoint's response.
    Json {
        /// The HTTP status.
        status: StatusCode,
        /// Where and how.
        error: JsonError,
    },
    /// A 2xx response whose body says the call failed (`"status": "failed"`).
    Failed {
        /// The HTTP status.
        status: StatusCode,
        /// The `status` word.
        api_status: String,
        /// The message, made safe.
        message: Option<String>,
    },
    /// A 2xx response that breaks the protocol.
    Protocol {
        /// The HTTP status.
        status: StatusCode,
        /// What is wrong.
        violation: Violation,
    },
}

impl DecodeError {
    /// Whether CardSync itself read the request and refused it, so that nothing was created:
    /// a 4xx status (other than 408 and 429, which say "try again") whose body is CardSync's
    /// failure envelope (`{"status": "failed", "msg": …}`).
    ///
    /// Anything else proves nothing: an HTML page or an empty body with a 4xx comes from
    /// whatever stands in front of CardSync (a CDN, a proxy, a load balancer), which may have
    /// answered after CardSync handled the request. A request that creates something (a
    /// batch) and got such an answer may or may not have been handled.
    ///
    /// ```
    /// use cardsync_proto::{CreateBatch, DecodeError, Endpoint};
    ///
    /// let refused = http::Response::builder()
    ///     .status(422)
    ///     .body(br#"{"status":"failed","msg":"too many cards"}"#.to_vec())?;
    /// assert!(CreateBatch::decode(&refused).unwrap_err().is_refusal());
    ///
    /// let proxy = http::Response::builder()
    ///     .status(404)
    ///     .header("content-type", "text/html")
    ///     .body(b"<html>Not Found</html>".to_vec())?;
    /// assert!(!CreateBatch::decode(&proxy).unwrap_err().is_refusal());
    /// # Ok::<(), http::Error>(())
    /// ```
    pub fn is_refusal(&self) -> bool {
        match self {
            DecodeError::Status {
                status,
                api_status: Some(word),
                ..
            } => {
                status.is_client_error()
                    && !matches!(status.as_u16(), 408 | 429)
                    && is_failure_word(word)
            }
            _ => false,
        }
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            DecodeError::Status { status, .. }
            | DecodeError::NotJson { status, .. }
            | DecodeError::Json { status, .. }
            | DecodeError::Failed { status, .. }
            | DecodeError::Protocol { status, .. } => Some(*status),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Status {
                status,
                api_status,
                message,
                content_type,
                length,
            } => {
                write!(f, "CardSync answered {status}")?;
                match (api_status, message) {
                    (_, Some(m)) => write!(f, ": {m}"),
                    (Some(s), None) => write!(f, ": {s}"),
                    (None, None) => write!(
                        f,
                        " with a {length}-byte {} body",
                        content_type.as_deref().unwrap_or("untyped")
                    ),
                }
            }
            DecodeError::NotJson {
                status,
                content_type,
                length,
            } => write!(
                f,
                "CardSync answered {status} with a {length}-byte {} body, not JSON",
                content_type.as_deref().unwrap_or("untyped")
            ),
            DecodeError::Json { status, error } => write!(f, "CardSync answered {status}: {error}"),
            DecodeError::Failed {
                status,
                api_status,
                message,
            } => {
                write!(f, "CardSync answered {status} but reported {api_status:?}")?;
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            DecodeError::Protocol { status, violation } => {
                write!(f, "CardSync answered {status}: {violation}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_made_safe() {
        assert_eq!(
            safe_message(" card 4457010000000009\ndeclined "),
            "card 445701******0009 declined"
        );
        // Grouped, or split by control characters (which become spaces): masked all the same.
        for grouped in [
            "4457 0100 0000 0009",
            "4457-0100-0000-0009",
            "4457\n0100\r0000\t0009",
        ] {
            assert_eq!(
                safe_message(&format!("card {grouped} declined")),
                "card 445701******0009 declined"
            );
        }
        let long = "x".repeat(500);
        assert_eq!(safe_message(&long).chars().count(), MAX_MESSAGE_LEN + 1);
    }

    #[test]
    fn json_errors_never_quote_the_body() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            n: u32,
        }
        let e = serde_json::from_str::<T>(r#"{"n":"4457010000000009"}"#).unwrap_err();
        let j = JsonError::new(&e, "n".into());
        assert_eq!(j.kind, JsonErrorKind::Data);
        assert!(!j.to_string().contains("4457"), "{j}");
        assert_eq!(j.detail.as_deref(), Some("expected u32"));
        let e = serde_json::from_str::<T>(r#"{"n":1"#).unwrap_err();
        assert_eq!(
            JsonError::new(&e, ".".into()).kind,
            JsonErrorKind::Truncated
        );
    }
}
