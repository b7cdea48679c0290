//! The HTTPS transport for `cardsync-proto`, over hyper 1, hyper-rustls and tokio.
//!
//! [`HyperTransport`] implements [`cardsync_proto::transport::Transport`]: it sends a request
//! exactly as given (a JSON body on `DELETE` included) and returns the whole response. It holds
//! no protocol knowledge: building requests, reading responses and deciding about retries are
//! `cardsync-proto`'s.
//!
//! What it guarantees:
//!
//! - HTTPS only, with rustls (TLS 1.2 and 1.3, the `ring` provider, Mozilla's roots). Plain HTTP
//!   is sent only to a loopback host (a local emulator), and only when
//!   [`Options::allow_plain_http_to_loopback`] is set. There is no option to accept invalid
//!   certificates.
//! - Connections are reused (HTTP/1.1 keep-alive); connecting and the whole exchange are each
//!   bounded in time; the response body is read up to [`Options::max_response_body`] and no
//!   further; redirects are never followed (a 3xx is returned as it is).
//! - Request bodies, which hold full card numbers, are zeroed once sent.
//! - Failures say whether the request may have reached the server
//!   ([`cardsync_proto::retry::Reached`]): only a failure to connect is certainly before.
//!
//! [`Client`] is `cardsync-client`'s typed client with retries on tokio, and [`WebhookReceiver`]
//! puts `cardsync-client`'s webhook inbox on a hyper server at a secret URL (the documents give
//! no signature scheme; see its docs). Neither holds protocol rules of its own. `examples/full_flow.rs`
//! runs the whole flow (submit, receive the webhook, fetch the results) against the local
//! emulator: `cargo run -p cardsync-hyper --example full_flow`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cardsync_hyper::{HyperTransport, Options};
//! use cardsync_proto::transport::Transport;
//! use cardsync_proto::{BaseUrl, Config, Endpoint, GetBatch, MerchantKey};
//!
//! let transport = HyperTransport::new(Options::default())?;
//! let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("api_key")?);
//! let response = transport.send(GetBatch::new("b1").encode(&config)?).await?;
//! let batch = GetBatch::decode(&response)?;
//! println!("batch b1 is {}", batch.status);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod receiver;
mod resolve;
pub mod server;

pub use cardsync_client::CallError;

/// [`cardsync_client::Client`] on tokio: the typed calls with retries, over
/// [`HyperTransport`] unless another transport is given.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use cardsync_proto::{BaseUrl, Config, MerchantKey};
///
/// let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("api_key")?);
/// let client = cardsync_hyper::https_client(config)?;
/// let batch = client.batch("b1").await?;
/// println!("{}", batch.status);
/// # Ok(())
/// # }
/// ```
pub type Client<T = HyperTransport> = cardsync_client::Client<T, TokioSleep>;

/// A client over [`HyperTransport`] with default options (HTTPS only).
///
/// # Errors
///
/// [`BuildError`] when rustls refuses the configuration.
pub fn https_client(config: cardsync_proto::Config) -> Result<Client, BuildError> {
    Ok(Client::new(
        HyperTransport::new(Options::default())?,
        config,
    ))
}

/// Tokio's sleep, for [`cardsync_client::Client`].
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct TokioSleep;

impl cardsync_client::Sleep for TokioSleep {
    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}
pub use receiver::{HandlerError, ReceiverError, ReceiverOptions, WebhookReceiver, random_token};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cardsync_proto::MAX_RESPONSE_BODY;
use cardsync_proto::retry::Reached;
use cardsync_proto::transport::{Transport, TransportError, TransportErrorKind};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as PoolClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use zeroize::Zeroize;

/// Settings of a [`HyperTransport`].
///
/// ```
/// use std::time::Duration;
///
/// let mut options = cardsync_hyper::Options::default();
/// options.request_timeout = Duration::from_secs(30);
/// assert_eq!(options.connect_timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Limit for establishing a connection (TCP and TLS). Default 10 s.
    pub connect_timeout: Duration,
    /// Limit for the whole exchange, from sending to the last byte of the body. Default 60 s.
    pub request_timeout: Duration,
    /// The largest response body read; a larger one is refused without being read whole.
    /// Default [`MAX_RESPONSE_BODY`] (8 MiB; a 10,000-card results body is about 1 MB).
    pub max_response_body: usize,
    /// Send plain HTTP to loopback hosts (`127.0.0.0/8`, `::1`, `localhost`), for a local
    /// emulator. Never to any other host. Default off.
    pub allow_plain_http_to_loopback: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_response_body: MAX_RESPONSE_BODY,
            allow_plain_http_to_loopback: false,
        }
    }
}

impl Options {
    /// The defaults, plus plain HTTP to loopback hosts: for talking to a local emulator such
    /// as `cardsync sandbox`. Any other host still needs HTTPS.
    ///
    /// ```
    /// assert!(cardsync_hyper::Options::loopback().allow_plain_http_to_loopback);
    /// ```
    pub fn loopback() -> Options {
        Options {
            allow_plain_http_to_loopback: true,
            ..Options::default()
        }
    }
}

/// The error for a transport that could not be built (the TLS configuration was refused).
#[derive(Debug)]
#[non_exhaustive]
pub struct BuildError(rustls::Error);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot configure TLS: {}", self.0)
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A request body that zeroes itself once hyper has sent and dropped it.
struct ZeroOnDrop(Vec<u8>);

impl AsRef<[u8]> for ZeroOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for ZeroOnDrop {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// An HTTPS client for CardSync requests. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct HyperTransport {
    client: PoolClient<HttpsConnector<HttpConnector<resolve::LoopbackAware>>, Full<Bytes>>,
    options: Arc<Options>,
}

impl std::fmt::Debug for HyperTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperTransport")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HyperTransport {
    /// A transport with these options. Needs a Tokio runtime when sending.
    ///
    /// # Errors
    ///
    /// [`BuildError`] when rustls refuses the configuration.
    pub fn new(options: Options) -> Result<HyperTransport, BuildError> {
        // `localhost` is loopback by definition, not by what a lookup says.
        let mut http = HttpConnector::new_with_resolver(resolve::LoopbackAware::new());
        http.set_connect_timeout(Some(options.connect_timeout));
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(BuildError)?;
        // Plain HTTP is refused in `send` for any host but loopback; the connector itself only
        // allows it when the option is on.
        let connector = if options.allow_plain_http_to_loopback {
            builder.https_or_http().enable_http1().wrap_connector(http)
        } else {
            builder.https_only().enable_http1().wrap_connector(http)
        };
        let client = PoolClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            // A connection's read buffer grows up to this (hyper's default is about 400 KB):
            // bodies are copied out chunk by chunk as they arrive (`read_capped`), so a small
            // buffer costs nothing in speed and keeps memory flat with many connections.
            .http1_max_buf_size(READ_BUFFER)
            .build(connector);
        Ok(HyperTransport {
            client,
            options: Arc::new(options),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    async fn exchange(
        &self,
        request: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, TransportError> {
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("https") {
            let host = uri
                .host()
                .unwrap_or("")
                .trim_start_matches('[')
                .trim_end_matches(']');
            let loopback = resolve::is_localhost(host)
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if uri.scheme_str() != Some("http")
                || !loopback
                || !self.options.allow_plain_http_to_loopback
            {
                return Err(
                    TransportError::new(TransportErrorKind::Refused, Reached::No).with_source(
                        "plain HTTP is sent only to a loopback host, and only when allowed",
                    ),
                );
            }
        }
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(Bytes::from_owner(ZeroOnDrop(body))));
        let response = self.client.request(request).await.map_err(|e| {
            let (kind, reached) = if e.is_connect() {
                (TransportErrorKind::Connect, Reached::No)
            } else {
                (TransportErrorKind::Io, Reached::Maybe)
            };
            TransportError::new(kind, reached).with_source(e)
        })?;
        let (parts, body) = response.into_parts();
        let body = read_capped(&parts.headers, body, self.options.max_response_body).await?;
        Ok(Response::from_parts(parts, body))
    }
}

/// The largest read buffer of a connection.
const READ_BUFFER: usize = 64 * 1024;

/// Reads a response body into one `Vec`, at most `limit` bytes: sized once from
/// `Content-Length` when the server sends one (a body announced larger than the limit is
/// refused before it is read), and each chunk copied and released as it arrives, so that
/// the connection's read buffer is reused instead of held until the whole body is in (a
/// 10,000-card results body is about 1 MB; several are read at once).
async fn read_capped(
    headers: &http::HeaderMap,
    mut body: hyper::body::Incoming,
    limit: usize,
) -> Result<Vec<u8>, TransportError> {
    let too_large = || {
        TransportError::new(TransportErrorKind::BodyTooLarge, Reached::Maybe)
            .with_source(format!("the response body is larger than {limit} bytes"))
    };
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(announced.map_or(0, |n| n as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            TransportError::new(TransportErrorKind::Io, Reached::Maybe).with_source(e)
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

impl Transport for HyperTransport {
    fn send(
        &self,
        request: Request<Vec<u8>>,
    ) -> impl Future<Output = Result<Response<Vec<u8>>, TransportError>> + Send {
        let this = self.clone();
        async move {
            match tokio::time::timeout(this.options.request_timeout, this.exchange(request)).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::new(
                    TransportErrorKind::Timeout,
                    Reached::Maybe,
                )),
            }
        }
    }
}

/// The Rust examples of the workspace README, compiled and run as doctests here, where every
/// crate they use is available.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
