//! The one-method traits an HTTP client implements to carry CardSync requests, and the error
//! such a client reports.
//!
//! A transport sends an `http::Request<Vec<u8>>` exactly as given (including a JSON body on
//! `DELETE`), follows no redirects, caps the response body, and reports failures as a
//! [`TransportError`] that says whether the request may have reached the server. Closures
//! implement the traits, so a test or a quick integration needs no type of its own.

use std::fmt;
use std::future::Future;

use http::{Request, Response};

use crate::retry::Reached;

/// A response body limit that fits the largest documented response (a 10,000-card results
/// set is about 1 MB) with room to spare.
pub const MAX_RESPONSE_BODY: usize = 8 * 1024 * 1024;

/// What kind of transport failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// The connection could not be made (refused, unreachable, name not resolved, TLS handshake
    /// failed).
    Connect,
    /// A time limit ran out.
    Timeout,
    /// The connection failed while sending or receiving.
    Io,
    /// The response body is larger than the limit.
    BodyTooLarge,
    /// The transport refused the request itself (such as plain HTTP to a host that is not
    /// loopback).
    Refused,
    /// Anything else.
    Other,
}

/// A transport failure. Holds no request or response body.
///
/// ```
/// use cardsync_proto::transport::{TransportError, TransportErrorKind};
/// use cardsync_proto::retry::Reached;
///
/// let e = TransportError::new(TransportErrorKind::Connect, Reached::No);
/// assert!(!e.is_timeout());
/// assert_eq!(e.to_string(), "could not connect");
/// ```
#[derive(Debug)]
pub struct TransportError {
    kind: TransportErrorKind,
    reached: Reached,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TransportError {
    /// A failure of this kind.
    pub fn new(kind: TransportErrorKind, reached: Reached) -> TransportError {
        TransportError {
            kind,
            reached,
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> TransportError {
        self.source = Some(source.into());
        self
    }

    /// The kind.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }

    /// Whether the request may have reached the server.
    pub fn reached(&self) -> Reached {
        self.reached
    }

    /// Whether a time limit ran out.
    pub fn is_timeout(&self) -> bool {
        self.kind == TransportErrorKind::Timeout
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            TransportErrorKind::Connect => "could not connect",
            TransportErrorKind::Timeout => "timed out",
            TransportErrorKind::Io => "the connection failed",
            TransportErrorKind::BodyTooLarge => "the response body is too large",
            TransportErrorKind::Refused => "the transport refused the request",
            TransportErrorKind::Other => "the transport failed",
        })
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An asynchronous HTTP client that can carry CardSync requests.
///
/// ```
/// use cardsync_proto::transport::{Transport, TransportError};
///
/// // Any `Fn(Request) -> impl Future<Output = Result<Response, TransportError>>` is one.
/// let transport = |request: http::Request<Vec<u8>>| async move {
///     assert_eq!(request.uri().path(), "/v2/batch");
///     Ok::<_, TransportError>(http::Response::new(b"{}".to_vec()))
/// };
/// # fn assert_transport<T: Transport>(_: &T) {}
/// assert_transport(&transport);
/// ```
pub trait Transport {
    /// Sends the request and returns the whole response.
    fn send(
        &self,
        request: Request<Vec<u8>>,
    ) -> impl Future<Output = Result<Response<Vec<u8>>, TransportError>> + Send;
}

impl<F, Fut> Transport for F
where
    F: Fn(Request<Vec<u8>>) -> Fut,
    Fut: Future<Output = Result<Response<Vec<u8>>, TransportError>> + Send,
{
    fn send(
        &self,
        request: Request<Vec<u8>>,
    ) -> impl Future<Output = Result<Response<Vec<u8>>, TransportError>> + Send {
        self(request)
    }
}

/// A blocking HTTP client that can carry CardSync requests.
///
/// ```
/// use cardsync_proto::transport::{BlockingTransport, TransportError};
///
/// let transport = |_: http::Request<Vec<u8>>| -> Result<http::Response<Vec<u8>>, TransportError> {
///     Ok(http::Response::new(br#"{"status":"success"}"#.to_vec()))
/// };
/// let response = transport.send(http::Request::new(Vec::new()))?;
/// assert_eq!(response.status(), 200);
/// # Ok::<(), TransportError>(())
/// ```
pub trait BlockingTransport {
    /// Sends the request and returns the whole response.
    ///
    /// # Errors
    ///
    /// A [`TransportError`] when no response arrived.
    fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError>;
}

impl<F> BlockingTransport for F
where
    F: Fn(Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError>,
{
    fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError> {
        self(request)
    }
}
