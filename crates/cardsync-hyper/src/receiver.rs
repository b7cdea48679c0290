//! A server that receives CardSync webhooks and hands each event to the caller's handler.
//!
//! The documents give no signature scheme: nothing in a webhook proves it came from CardSync.
//! The receiver therefore listens only at `/webhooks/<token>`, where the token is a secret of at
//! least 16 URL-safe characters that only CardSync is told (in the registered URL); any other
//! path gets 404, the token compared in constant time. Treat an event as a hint: the results it
//! names are fetched over the authenticated API, so a forged event can at worst trigger a fetch.
//!
//! Delivery is at least once on CardSync's side and exactly once on the handler's: the receiver
//! answers 200 only after the handler accepted the event (a crash before that makes CardSync
//! deliver again), and it remembers the events it handled (by [`WebhookEvent::dedup_key`]) so a
//! redelivery is acknowledged without being handled twice. A redelivery that arrives while the
//! first is still being handled gets 503, so that the sender tries again later.
//!
//! A handler should accept an event only once it is recorded where a restart finds it (a
//! journal, a database), and do the work the event asks for (fetching results) afterwards from
//! that record: an answer of 200 ends CardSync's deliveries of the event, so whatever was not
//! recorded by then is lost for good. A handler whose queue is full answers with
//! [`HandlerError::busy`] (503, `Retry-After`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cardsync_proto::WebhookEvent;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use cardsync_client::inbox::{Delivery, Inbox};

use crate::server::{BodyError, read_body};
use tokio::sync::watch;
use tokio::task::JoinHandle;

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type Handler = Arc<dyn Fn(Option<String>, WebhookEvent) -> HandlerFuture + Send + Sync>;

/// A handler's refusal of an event: the receiver answers 500 (or 503 with `Retry-After` when
/// the handler is [busy](HandlerError::busy)) and CardSync delivers again.
///
/// ```
/// use cardsync_hyper::HandlerError;
///
/// let full = HandlerError::busy("1000 events wait to be handled");
/// assert!(full.is_busy());
/// assert!(!HandlerError::new("the journal is read-only").is_busy());
/// ```
#[derive(Debug)]
pub struct HandlerError {
    reason: Box<dyn std::error::Error + Send + Sync>,
    busy: bool,
}

impl HandlerError {
    /// A refusal for this reason: the event could not be recorded (500).
    pub fn new(reason: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> HandlerError {
        HandlerError {
            reason: reason.into(),
            busy: false,
        }
    }

    /// The handler takes no more events for now, such as when its queue is full (503, with
    /// `Retry-After`): the sender should come back later.
    pub fn busy(reason: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> HandlerError {
        HandlerError {
            reason: reason.into(),
            busy: true,
        }
    }

    /// Whether it is a [`HandlerError::busy`].
    pub fn is_busy(&self) -> bool {
        self.busy
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.busy {
            write!(f, "the webhook handler is busy: {}", self.reason)
        } else {
            write!(f, "the webhook handler refused the event: {}", self.reason)
        }
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.reason.as_ref())
    }
}

/// The `Retry-After` of a busy receiver's 503, in seconds.
const BUSY_RETRY_AFTER: &str = "30";

/// Settings of a [`WebhookReceiver`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiverOptions {
    /// The largest webhook body accepted; a larger one gets 413. Default 64 KiB (the documented
    /// webhooks are a few hundred bytes).
    pub max_body: usize,
    /// How long a webhook body may take to arrive; a slower one gets 408. Default 10 s.
    pub body_timeout: Duration,
    /// How many handled events are remembered for recognising redeliveries. Default 100,000.
    pub remember: usize,
    /// The connection limits: how long a request's head may take, how many connections may
    /// be open at once. See [`crate::server::ServeLimits`].
    pub limits: crate::server::ServeLimits,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            max_body: 64 * 1024,
            body_timeout: Duration::from_secs(10),
            remember: 100_000,
            limits: crate::server::ServeLimits::default().with_grace(Duration::from_secs(5)),
        }
    }
}

/// Why a receiver could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReceiverError {
    /// The token is shorter than 16 characters or holds characters other than ASCII letters,
    /// digits, `-` and `_`.
    WeakToken,
    /// The address could not be bound.
    Bind(std::io::Error),
}

impl std::fmt::Display for ReceiverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiverError::WeakToken => f.write_str(
                "the webhook token must be at least 16 characters of ASCII letters, digits, - and _",
            ),
            ReceiverError::Bind(e) => write!(f, "cannot listen for webhooks: {e}"),
        }
    }
}

impl std::error::Error for ReceiverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReceiverError::Bind(e) => Some(e),
            ReceiverError::WeakToken => None,
        }
    }
}

/// A random token of 32 hexadecimal digits (128 bits from the operating system's random
/// generator), for a webhook URL that must not be guessed.
///
/// # Errors
///
/// When the operating system gives no random bytes (never on a working system); there is no
/// weaker fallback.
///
/// ```
/// let token = cardsync_hyper::random_token()?;
/// assert_eq!(token.len(), 32);
/// assert_ne!(token, cardsync_hyper::random_token()?);
/// # Ok::<(), getrandom::Error>(())
/// ```
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

struct Shared {
    inbox: Inbox,
    options: ReceiverOptions,
    handler: Handler,
    /// Whether `/webhooks/TOKEN/SCOPE` is taken too.
    scoped: bool,
}

/// A running webhook receiver. Dropping it stops it; [`WebhookReceiver::shutdown`] also lets
/// requests in progress finish (up to five seconds).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use cardsync_hyper::{ReceiverOptions, WebhookReceiver, random_token};
/// use cardsync_proto::WebhookEvent;
///
/// let receiver = WebhookReceiver::start(
///     "127.0.0.1:0".parse()?,
///     &random_token()?,
///     ReceiverOptions::default(),
///     |event: WebhookEvent| async move {
///         println!("event {:?}", event.event_id());
///         Ok(())
///     },
/// )
/// .await?;
/// println!("register {}", receiver.url());
/// # Ok(())
/// # }
/// ```
pub struct WebhookReceiver {
    addr: SocketAddr,
    path: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The path holds the secret token.
        f.debug_struct("WebhookReceiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl WebhookReceiver {
    /// Listens on `addr` for webhooks at `/webhooks/<token>` and hands each new event to
    /// `handler`. Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`ReceiverError::WeakToken`] or [`ReceiverError::Bind`].
    pub async fn start<H, Fut>(
        addr: SocketAddr,
        token: &str,
        options: ReceiverOptions,
        handler: H,
    ) -> Result<WebhookReceiver, ReceiverError>
    where
        H: Fn(WebhookEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |_, event| Box::pin(handler(event)) as HandlerFuture);
        WebhookReceiver::start_with(addr, token, options, handler, false).await
    }

    /// [`WebhookReceiver::start`], also taking events at `/webhooks/<token>/<scope>` (see
    /// [`cardsync_client::inbox::Inbox::check_scoped`]): the handler gets the scope (`None`
    /// at the bare path). A receiver for several merchants registers one such URL per
    /// merchant, and so learns whose each event is.
    ///
    /// # Errors
    ///
    /// [`ReceiverError::WeakToken`] or [`ReceiverError::Bind`].
    pub async fn start_scoped<H, Fut>(
        addr: SocketAddr,
        token: &str,
        options: ReceiverOptions,
        handler: H,
    ) -> Result<WebhookReceiver, ReceiverError>
    where
        H: Fn(Option<String>, WebhookEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler: Handler =
            Arc::new(move |scope, event| Box::pin(handler(scope, event)) as HandlerFuture);
        WebhookReceiver::start_with(addr, token, options, handler, true).await
    }

    async fn start_with(
        addr: SocketAddr,
        token: &str,
        options: ReceiverOptions,
        handler: Handler,
        scoped: bool,
    ) -> Result<WebhookReceiver, ReceiverError> {
        if token.len() < 16
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ReceiverError::WeakToken);
        }
        let listener = TcpListener::bind(addr).await.map_err(ReceiverError::Bind)?;
        let addr = listener.local_addr().map_err(ReceiverError::Bind)?;
        let path = format!("/webhooks/{token}");
        let shared = Arc::new(Shared {
            inbox: Inbox::new(path.clone(), options.remember),
            options,
            handler,
            scoped,
        });
        let (stop, stopped) = watch::channel(false);
        let limits = shared.options.limits;
        let task = tokio::spawn(crate::server::serve(
            listener,
            limits,
            stopped,
            move |request| receive(shared.clone(), request),
        ));
        Ok(WebhookReceiver {
            addr,
            path,
            stop,
            task: Some(task),
        })
    }

    /// The URL to register with CardSync, such as `http://127.0.0.1:9000/webhooks/<token>`
    /// (behind a TLS-terminating proxy, register the public `https` URL with the same path).
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and lets requests in progress finish (up to five seconds).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// The receiver is the inbox on hyper: the inbox says what to answer, this reads the body and
/// calls the handler.
async fn receive(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let checked = if shared.scoped {
        shared
            .inbox
            .check_scoped(request.method(), request.uri().path())
            .map(|scope| scope.map(str::to_owned))
    } else {
        match shared.inbox.check(request.method(), request.uri().path()) {
            Some(status) => Err(status),
            None => Ok(None),
        }
    };
    let scope = match checked {
        Ok(scope) => scope,
        Err(status) => {
            let mut r = answer(status);
            if status == StatusCode::METHOD_NOT_ALLOWED {
                r.headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
            }
            return Ok(r);
        }
    };
    let options = &shared.options;
    let body = match read_body(request.into_body(), options.max_body, options.body_timeout).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return Ok(answer(StatusCode::PAYLOAD_TOO_LARGE)),
        Err(BodyError::TooSlow) => return Ok(answer(StatusCode::REQUEST_TIMEOUT)),
        Err(_) => return Ok(answer(StatusCode::BAD_REQUEST)),
    };
    let (ticket, event) = match shared.inbox.accept(&body) {
        Delivery::Handle(ticket, event) => (ticket, event),
        Delivery::Answer(status) => return Ok(answer(status)),
        _ => return Ok(answer(StatusCode::INTERNAL_SERVER_ERROR)),
    };
    let trigger = event.trigger();
    let result = (shared.handler)(scope, event).await;
    match &result {
        Ok(()) => tracing::debug!(?trigger, "webhook handled"),
        Err(e) => {
            tracing::warn!(?trigger, error = %e, "webhook not taken; CardSync will deliver again")
        }
    }
    let busy = result.as_ref().is_err_and(HandlerError::is_busy);
    let status = shared.inbox.finish(ticket, result.is_ok());
    if busy {
        let mut r = answer(StatusCode::SERVICE_UNAVAILABLE);
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static(BUSY_RETRY_AFTER),
        );
        return Ok(r);
    }
    Ok(answer(status))
}
