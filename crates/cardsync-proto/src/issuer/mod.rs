//! The issuer side of the documents: where account-updater data starts. An issuer reissues a
//! lost card (a new number), renews an expiring one (a new expiry) or closes an account, and
//! tells the network; the network tells the merchants through the account updater.
//!
//! - [`feed`]: an issuer's feed of card changes, `PUT
//!   /v2/data/customers/{sourceCustomerId}/accounts/{sourceAccountId}/cards`, whose cards are
//!   named by IIN and last four digits, never by the full number.
//! - [`platform`]: an issuing platform's card status change, `PATCH /v1/cards/{card_id}`, with
//!   an `Idempotency-Key` that makes it safe to retry.
//!
//! Like the CardSync endpoints, each is a type that encodes an `http::Request` and decodes an
//! `http::Response` ([`IssuerEndpoint`]), with no I/O: requests are written exactly as the
//! documents show them, answers are read leniently (unknown fields and values kept). The server
//! side (for the local emulator) is in [`crate::server`].

pub mod feed;
pub mod platform;

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, Response};

use crate::endpoints::Idempotency;
use crate::{BaseUrl, Config, DecodeError, EncodeError, IssuerToken};

/// Where issuer-side requests go, and the token that signs them.
///
/// ```
/// use cardsync_proto::{BaseUrl, IssuerToken};
/// use cardsync_proto::issuer::IssuerConfig;
///
/// let config = IssuerConfig::new(BaseUrl::parse("https://api.synctera.com/v1")?)
///     .with_token(IssuerToken::new("tok")?);
/// assert!(!format!("{config:?}").contains("tok\""));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    base_url: BaseUrl,
    token: Option<IssuerToken>,
    user_agent: HeaderValue,
}

impl IssuerConfig {
    /// A configuration with no token.
    pub fn new(base_url: BaseUrl) -> IssuerConfig {
        IssuerConfig {
            base_url,
            token: None,
            user_agent: HeaderValue::from_static(Config::USER_AGENT),
        }
    }

    /// Sets the bearer token.
    pub fn with_token(mut self, token: IssuerToken) -> IssuerConfig {
        self.token = Some(token);
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &BaseUrl {
        &self.base_url
    }

    /// The token, if set.
    pub fn token(&self) -> Option<&IssuerToken> {
        self.token.as_ref()
    }
}

/// An issuer-side endpoint: how to build its request and read its answer. The call protocol
/// is the one of [`crate::Endpoint`]: `encode`, send with any HTTP client, `decode`.
pub trait IssuerEndpoint {
    /// What a successful answer decodes to.
    type Output;
    /// The HTTP method.
    const METHOD: Method;
    /// Whether the request may be resent freely (see [`crate::retry`]).
    const IDEMPOTENCY: Idempotency;

    /// Builds the request.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when a field cannot be sent as it is, or the URI is not valid.
    fn encode(&self, config: &IssuerConfig) -> Result<Request<Vec<u8>>, EncodeError>;

    /// Reads the answer.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] for a non-2xx status, a body that is not JSON, or JSON that does not
    /// fit.
    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<Self::Output, DecodeError>;
}

/// Percent-encodes one path segment (RFC 3986's unreserved characters kept).
pub(crate) fn path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    crate::endpoints::encode_query_value(&mut out, value);
    out
}

/// Builds an issuer-side request: method, path on the base URL, the bearer token when set,
/// `Accept`, `User-Agent`, and `Content-Type: application/json` with the body.
pub(crate) fn build(
    method: Method,
    config: &IssuerConfig,
    path: &str,
    body: Vec<u8>,
    extra: Option<(&'static str, HeaderValue)>,
) -> Result<Request<Vec<u8>>, EncodeError> {
    let uri = config.base_url().join(path, "")?;
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, config.user_agent.clone());
    if let Some(token) = &config.token {
        builder = builder.header(AUTHORIZATION, token.header_value());
    }
    if let Some((name, value)) = extra {
        builder = builder.header(name, value);
    }
    builder.body(body).map_err(|_| EncodeError::InvalidUri {
        path: path.to_owned(),
    })
}

/// A value written as a JSON string or number, as text (`null` is `None`).
pub(crate) fn text_of(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
