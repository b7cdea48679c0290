//! The emulator on a socket: a hyper HTTP/1.1 server, a ticker that moves the emulator clock
//! along, webhook delivery with bounded retries and a delivery log, the control endpoints under
//! `/_sandbox/`, and fault injection.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use cardsync_hyper::server::{BodyError, ServeLimits, read_body};
use cardsync_proto::paths;
use cardsync_proto::server::{Spelling, failure};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::{self, Access, Refusal};
use crate::dashboard;
use crate::overview::{Overview, display_url};
use crate::{Emulator, EndpointCounts, MAX_REQUEST_BODY, Outgoing, Settings};

/// How long a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

type ResponseBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How often the ticker moves the emulator along.
const TICK: Duration = Duration::from_millis(25);
/// Delivery attempts per webhook, the first included.
const DELIVERY_ATTEMPTS: u32 = 5;
/// Time limit of one delivery attempt.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One webhook delivery, as the delivery log reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Delivery {
    /// The delivery's id (the payload's `id`).
    pub delivery_id: String,
    /// The trigger id.
    pub trigger_id: u32,
    /// The event id, if the event has one.
    pub event_id: Option<String>,
    /// Where it was sent, masked as the dashboard shows it: scheme, host and port, the first
    /// path segment when it is short; no secret path segment, no query.
    pub url: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// `pending`, `delivered` or `failed`.
    pub state: &'static str,
    /// The status of the last attempt's response, if one came.
    pub last_status: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When the webhook fired, on the emulator clock (milliseconds since it started).
    pub created_ms: u64,
    /// Every attempt made so far, oldest first.
    pub history: Vec<DeliveryAttempt>,
    /// When the next attempt is due on the emulator clock, while one is.
    pub next_attempt_ms: Option<u64>,
}

/// One attempt of a webhook delivery.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DeliveryAttempt {
    /// Its number, from 1.
    pub attempt: u32,
    /// When it ended, on the emulator clock (milliseconds since it started).
    pub at_ms: u64,
    /// The status of its response, if one came.
    pub status: Option<u16>,
    /// Why it failed, if no response came.
    pub error: Option<String>,
}

/// One API request the emulator received, as the request log keeps it (see
/// [`Sandbox::requests`]): no body, no query string, and long digit runs of the path masked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RequestRecord {
    /// Its number, from 1, in order of arrival.
    pub number: u64,
    /// When it was answered, on the emulator clock (milliseconds since it started).
    pub at_ms: u64,
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The fault injected into it, if one was: `error status before handling`, `error status
    /// after handling (the answer was lost)` or `connection dropped mid-body`.
    pub fault: Option<&'static str>,
}

/// How many requests the request log keeps (the newest).
pub const REQUEST_LOG: usize = 500;

/// Fault injection settings, set with `POST /_sandbox/faults`.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Faults {
    /// Share of `/v2/` requests answered with an error status instead (0 to 1).
    pub error_rate: f64,
    /// The statuses to answer with, chosen in turn. Default `[503]`.
    pub statuses: Vec<u16>,
    /// `Retry-After` seconds on injected 429 and 503 answers, if any.
    pub retry_after: Option<u64>,
    /// Share of `/v2/` requests whose connection is dropped in the middle of the answer's body,
    /// after the request was handled (0 to 1).
    pub drop_rate: f64,
    /// Added latency, in milliseconds, before every `/v2/` answer.
    pub latency_ms: u64,
    /// Only these paths are affected (all `/v2/` paths when empty).
    pub paths: Vec<String>,
    /// Seed of the fault dice, for repeatable runs.
    pub seed: u64,
    /// Inject at most this many faults (error statuses and dropped connections together), then
    /// answer normally: for deterministic tests such as "two 503s, then success".
    pub limit: Option<u64>,
    /// Injected error answers are an HTML page (as from a CDN or a proxy) instead of JSON.
    pub html: bool,
    /// When error statuses are injected: `"before"` (default) answers instead of handling the
    /// request, as an overloaded server or a proxy would; `"after"` handles it, then replaces
    /// the answer, as when a server processes a request and the answer is lost: the case in
    /// which a client that resends a batch gets it processed, and billed, twice.
    pub when: FaultTiming,
}

/// When injected error statuses happen, relative to handling the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FaultTiming {
    /// Instead of handling the request.
    #[default]
    Before,
    /// After handling it.
    After,
}

struct Inner {
    emulator: Emulator,
    started: Instant,
    advanced: Duration,
    faults: Faults,
    dice: u64,
    injected: u64,
    deliveries: Vec<Delivery>,
    requests: std::collections::VecDeque<RequestRecord>,
    requests_seen: u64,
}

impl Inner {
    fn now(&self) -> Duration {
        self.started.elapsed() + self.advanced
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.now().as_millis()).unwrap_or(u64::MAX)
    }

    /// Adds a request to the log, dropping the oldest past [`REQUEST_LOG`].
    fn log_request(
        &mut self,
        method: &Method,
        path: &str,
        status: StatusCode,
        fault: Option<&'static str>,
    ) {
        self.requests_seen += 1;
        if self.requests.len() == REQUEST_LOG {
            self.requests.pop_front();
        }
        let record = RequestRecord {
            number: self.requests_seen,
            at_ms: self.now_ms(),
            method: method.as_str().to_owned(),
            path: cardsync_core::redact_digit_runs(path).into_owned(),
            status: status.as_u16(),
            fault,
        };
        self.requests.push_back(record);
    }

    fn roll(&mut self) -> f64 {
        self.dice = self.dice.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.dice;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Shared {
    inner: Mutex<Inner>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Which host names it answers at, who may use the control endpoints, and where webhooks
    /// may go.
    access: Access,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug; the state is still usable for reporting.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running emulator. Dropping it stops it; [`Sandbox::shutdown`] also waits for open
/// connections to finish (up to two seconds).
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use cardsync_sandbox::{Sandbox, Settings};
///
/// let sandbox = Sandbox::start(Settings::default(), "127.0.0.1:0".parse().unwrap()).await?;
/// println!("listening at {}", sandbox.base_url());
/// sandbox.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Sandbox {
    addr: SocketAddr,
    base_url: String,
    settings: Settings,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Binds `addr` (use port 0 for any free port) and starts serving. Must be called within a
    /// Tokio runtime.
    ///
    /// It answers requests addressed to loopback host names and to
    /// [`Settings::allowed_hosts`] only, on every path. On an address other machines reach
    /// (one that is not loopback; IPv4-mapped loopback counts as loopback), or with
    /// [`Settings::exposed`], every control request and the dashboard's page need
    /// [`Sandbox::control_token`], and the public default keys are refused.
    ///
    /// # Errors
    ///
    /// The I/O error when the address cannot be bound; [`std::io::ErrorKind::InvalidInput`]
    /// when other machines could reach it and a key or the issuer token is still the public
    /// default ([`Settings::public_secrets`]).
    pub async fn start(settings: Settings, addr: SocketAddr) -> std::io::Result<Sandbox> {
        let exposed = settings.exposed || !access::loopback_ip(addr.ip());
        let public = settings.public_secrets();
        if exposed && !public.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{addr} can be reached from other machines, and the sandbox's default keys \
                     are public: give {} of your own",
                    public.join(", ")
                ),
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                emulator: Emulator::new(settings.clone(), SystemTime::now()),
                started: Instant::now(),
                advanced: Duration::ZERO,
                faults: Faults::default(),
                dice: 0,
                injected: 0,
                deliveries: Vec::new(),
                requests: std::collections::VecDeque::new(),
                requests_seen: 0,
            }),
            client: Client::builder(TokioExecutor::new()).build_http(),
            access: Access::new(
                cardsync_hyper::random_token().map_err(std::io::Error::other)?,
                exposed,
                &settings.allowed_hosts,
                &settings.webhook_hosts,
            ),
        });
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn({
                let shared = shared.clone();
                cardsync_hyper::server::serve(
                    listener,
                    ServeLimits::default(),
                    stopped.clone(),
                    move |request| handle(shared.clone(), request),
                )
            }),
            tokio::spawn(ticker(shared.clone(), stopped)),
        ];
        Ok(Sandbox {
            addr,
            base_url: format!("http://{addr}"),
            settings,
            shared,
            stop,
            tasks,
        })
    }

    /// The base URL to point a client at, such as `http://127.0.0.1:8787`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dashboard's address: the base URL with a trailing `/`, and `?token=TOKEN` when
    /// other machines can reach the emulator ([`Sandbox::exposed`]).
    pub fn dashboard_url(&self) -> String {
        if self.shared.access.exposed() {
            format!("{}/?token={}", self.base_url, self.shared.access.token())
        } else {
            format!("{}/", self.base_url)
        }
    }

    /// This run's token, for the control endpoints (`/_sandbox/…`): sent in
    /// `x-cardsync-sandbox-token` or as `Authorization: Bearer TOKEN`. Every control request
    /// needs it when the emulator can be reached from other machines; on loopback only those
    /// from a browser that change something do (the dashboard's page carries it).
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// use cardsync_sandbox::{Sandbox, Settings};
    ///
    /// let sandbox = Sandbox::start(Settings::default(), "127.0.0.1:0".parse().unwrap()).await?;
    /// let token = sandbox.control_token();
    /// println!("curl -H 'authorization: Bearer {token}' {}/_sandbox/clock", sandbox.base_url());
    /// # Ok(())
    /// # }
    /// ```
    pub fn control_token(&self) -> &str {
        self.shared.access.token()
    }

    /// Whether the emulator applies the rules of a server other machines can reach: it
    /// listens on an address that is not loopback, or [`Settings::exposed`] is set.
    pub fn exposed(&self) -> bool {
        self.shared.access.exposed()
    }

    /// The API requests received, oldest first (the newest [`REQUEST_LOG`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.iter().cloned().collect()
    }

    /// What the emulator holds, masked, as the dashboard shows it.
    pub fn overview(&self) -> Overview {
        let inner = self.shared.lock();
        inner.emulator.overview(inner.now())
    }

    /// The settings, including the keys and the pre-enrolled merchant's id.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Moves the emulator clock forward (what `POST /_sandbox/clock/advance` does).
    pub fn advance(&self, by: Duration) {
        advance_clock(&self.shared, by);
    }

    /// The webhook delivery log (URLs masked, as `GET /_sandbox/deliveries` shows them).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// The batches kept, oldest first, with their first card's id: what a merchant would
    /// look up in the CardSync dashboard.
    pub fn batches(&self) -> Vec<crate::BatchOverview> {
        self.shared.lock().emulator.batches()
    }

    /// The ids of the batches created so far, oldest first: what a merchant would look up
    /// in the CardSync dashboard.
    pub fn batch_ids(&self) -> Vec<String> {
        self.shared.lock().emulator.batch_ids()
    }

    /// What each endpoint received, by `METHOD /path` (what `GET /_sandbox/counters`
    /// answers).
    pub fn counters(&self) -> BTreeMap<String, EndpointCounts> {
        self.shared.lock().emulator.counters()
    }

    /// Registers a card with the emulator's issuing platform (what `POST
    /// /_sandbox/issuer/cards` does): its platform card id, for `PATCH /v1/cards/{card_id}`.
    pub fn register_issuer_card(
        &self,
        pan: &cardsync_core::Pan,
        exp: cardsync_core::Expiry,
    ) -> String {
        let mut inner = self.shared.lock();
        let now = inner.now();
        inner.emulator.register_issuer_card(pan, exp, now)
    }

    /// Sets fault injection (what `POST /_sandbox/faults` does).
    pub fn set_faults(&self, faults: Faults) {
        let mut inner = self.shared.lock();
        inner.dice = faults.seed;
        inner.faults = faults;
    }

    /// Stops accepting connections, lets open ones finish (up to two seconds), and stops the
    /// ticker.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn ticker(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stopped.changed() => return,
        }
        advance_clock(&shared, Duration::ZERO);
    }
}

/// Moves the emulator clock forward by `by` (zero for a plain tick), runs whatever falls due,
/// and starts delivering the webhooks that fired.
fn advance_clock(shared: &Arc<Shared>, by: Duration) {
    let out = {
        let mut inner = shared.lock();
        inner.advanced += by;
        let now = inner.now();
        inner.emulator.tick(now);
        inner.emulator.take_outgoing()
    };
    deliver(shared, out);
}

/// What `GET /_sandbox/clock` answers.
#[derive(Serialize)]
struct Clock {
    now_ms: u64,
    advanced_ms: u64,
}

fn clock(shared: &Shared) -> Clock {
    let inner = shared.lock();
    Clock {
        now_ms: inner.now().as_millis() as u64,
        advanced_ms: inner.advanced.as_millis() as u64,
    }
}

/// Starts delivering webhooks, each in its own task, logging every attempt.
fn deliver(shared: &Arc<Shared>, out: Vec<Outgoing>) {
    for o in out {
        let mut inner = shared.lock();
        let now = inner.now_ms();
        inner.deliveries.push(Delivery {
            delivery_id: o.delivery_id.clone(),
            trigger_id: o.trigger.id(),
            event_id: o.event_id.clone(),
            url: display_url(&o.url),
            attempts: 0,
            state: "pending",
            last_status: None,
            last_error: None,
            created_ms: now,
            history: Vec::new(),
            next_attempt_ms: Some(now),
        });
        drop(inner);
        tokio::spawn(deliver_one(shared.clone(), o));
    }
}

/// Records one delivery attempt in the log; `retry_in` is the wait before the next one, if
/// one follows.
fn record(
    shared: &Shared,
    delivery_id: &str,
    attempt: u32,
    outcome: &Result<StatusCode, String>,
    state: &'static str,
    retry_in: Option<Duration>,
) {
    let mut inner = shared.lock();
    let now = inner.now_ms();
    if let Some(d) = inner
        .deliveries
        .iter_mut()
        .rev()
        .find(|d| d.delivery_id == delivery_id)
    {
        d.attempts = attempt;
        let (status, error) = match outcome {
            Ok(s) => {
                d.last_status = Some(s.as_u16());
                d.last_error = None;
                (Some(s.as_u16()), None)
            }
            Err(e) => {
                d.last_error = Some(e.clone());
                (None, Some(e.clone()))
            }
        };
        d.history.push(DeliveryAttempt {
            attempt,
            at_ms: now,
            status,
            error,
        });
        d.state = state;
        d.next_attempt_ms =
            retry_in.map(|wait| now.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(0)));
    }
}

async fn deliver_one(shared: Arc<Shared>, o: Outgoing) {
    // A URL that cannot be used fails at once: retrying would not change it.
    let uri = match http::Uri::try_from(o.url.as_str()) {
        Ok(uri) if uri.scheme_str() == Some("http") => uri,
        Ok(_) => {
            let why = Err("the emulator delivers webhooks over plain HTTP only".to_owned());
            return record(&shared, &o.delivery_id, 1, &why, "failed", None);
        }
        Err(_) => {
            return record(
                &shared,
                &o.delivery_id,
                1,
                &Err("not a valid URL".to_owned()),
                "failed",
                None,
            );
        }
    };
    if let Err(why) = shared.access.may_deliver_to(&uri) {
        return record(&shared, &o.delivery_id, 1, &Err(why), "failed", None);
    }
    let body = Bytes::from(o.body);
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=DELIVERY_ATTEMPTS {
        let request = Request::post(uri.clone())
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("cardsync-sandbox/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()))
            .expect("a valid request");
        let outcome =
            match tokio::time::timeout(DELIVERY_TIMEOUT, shared.client.request(request)).await {
                Ok(Ok(response)) => Ok(response.status()),
                Ok(Err(e)) => Err(format!("request failed: {e}")),
                Err(_) => Err("timed out".to_owned()),
            };
        let delivered = matches!(outcome, Ok(s) if s.is_success());
        let state = if delivered {
            "delivered"
        } else if attempt == DELIVERY_ATTEMPTS {
            "failed"
        } else {
            "pending"
        };
        let retry_in = (state == "pending").then_some(backoff);
        record(&shared, &o.delivery_id, attempt, &outcome, state, retry_in);
        if delivered || retry_in.is_none() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn full(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("a valid response")
}

fn boxed(answer: Response<Bytes>) -> Response<ResponseBody> {
    answer.map(|body| Full::new(body).map_err(|never| match never {}).boxed())
}

fn json_answer<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(body) => full(status, body),
        Err(_) => failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answer",
            Spelling::Universal,
        ),
    }
}

/// An error answer in the API's envelope ([`cardsync_proto::server::failure`]).
fn failed(status: StatusCode, message: &str, spelling: Spelling) -> Response<ResponseBody> {
    full(status, failure(message, spelling))
}

/// The spelling the emulator answers in, for answers the server layer writes itself.
fn spelling(shared: &Shared) -> Spelling {
    if shared.lock().emulator.settings().quirks {
        Spelling::Amex
    } else {
        Spelling::Universal
    }
}

/// A body that sends its first half, then fails, so the connection drops mid-body.
struct HalfThenFail {
    first: Option<Bytes>,
}

impl Body for HalfThenFail {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(Some(match self.first.take() {
            Some(data) => Ok(Frame::data(data)),
            None => Err("connection dropped by fault injection".into()),
        }))
    }
}

/// A refusal of [`Access`], in the API's envelope (a 401 says how to authenticate).
fn refused(refusal: Refusal, spelling: Spelling) -> Response<ResponseBody> {
    let mut answer = failed(refusal.status, refusal.message, spelling);
    if refusal.status == StatusCode::UNAUTHORIZED {
        answer.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"cardsync-sandbox\""),
        );
    }
    answer
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (parts, body) = request.into_parts();
    // Before anything is read or done: a request addressed to another name (DNS rebinding)
    // gets nothing, on any path.
    if let Err(refusal) = shared.access.check_host(&parts.headers, &parts.uri) {
        let spelling = if parts.uri.path().starts_with(paths::API_PREFIX) {
            spelling(&shared)
        } else {
            Spelling::Universal
        };
        return Ok(refused(refusal, spelling));
    }
    if parts.uri.path().starts_with("/_sandbox/")
        && let Err(refusal) = shared.access.check_control(&parts.method, &parts.headers)
    {
        return Ok(refused(refusal, Spelling::Universal));
    }
    let body = match read_body(body, MAX_REQUEST_BODY, BODY_TIMEOUT).await {
        Ok(body) => body.to_vec(),
        Err(BodyError::TooSlow) => {
            return Ok(failed(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
                spelling(&shared),
            ));
        }
        Err(_) => {
            return Ok(failed(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large or was cut off",
                spelling(&shared),
            ));
        }
    };
    let request = Request::from_parts(parts, body);
    if request.uri().path().starts_with("/_sandbox/") {
        return Ok(control(&shared, &request));
    }
    if let Some(answer) = dashboard::asset(&shared.access, &request) {
        return Ok(boxed(answer));
    }

    // Fault injection, decided before handling (errors) and after (dropped bodies).
    let (latency, injected_status, retry_after, drop_it, timing, html) = {
        let mut inner = shared.lock();
        let f = inner.faults.clone();
        let applies = (f.paths.is_empty() || f.paths.iter().any(|p| p == request.uri().path()))
            && f.limit.is_none_or(|limit| inner.injected < limit);
        if applies {
            let status = (inner.roll() < f.error_rate).then(|| {
                let statuses = if f.statuses.is_empty() {
                    vec![503]
                } else {
                    f.statuses.clone()
                };
                let s = statuses[(inner.injected as usize) % statuses.len()];
                inner.injected += 1;
                s
            });
            let drop_it = status.is_none() && inner.roll() < f.drop_rate;
            if drop_it {
                inner.injected += 1;
            }
            (
                Duration::from_millis(f.latency_ms),
                status,
                f.retry_after,
                drop_it,
                f.when,
                f.html,
            )
        } else {
            (
                Duration::ZERO,
                None,
                None,
                false,
                FaultTiming::Before,
                false,
            )
        }
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = injected_status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut answer = if html {
            let page = format!(
                "<!DOCTYPE html><html><head><title>{status}</title></head><body><h1>{status}</h1><p>cardsync-sandbox injected fault</p></body></html>"
            );
            let mut r = full(status, page.into_bytes());
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("text/html; charset=UTF-8"),
            );
            r
        } else {
            failed(status, "injected fault", spelling(&shared))
        };
        if let Some(secs) = retry_after.filter(|_| matches!(status.as_u16(), 429 | 503)) {
            answer.headers_mut().insert("retry-after", secs.into());
        }
        let fault = if timing == FaultTiming::After {
            // The request is handled as usual; only its answer is lost.
            let out = {
                let mut inner = shared.lock();
                let now = inner.now();
                let _handled = inner.emulator.handle(&request, now);
                inner.emulator.take_outgoing()
            };
            deliver(&shared, out);
            "error status after handling (the answer was lost)"
        } else {
            "error status before handling"
        };
        shared
            .lock()
            .log_request(request.method(), request.uri().path(), status, Some(fault));
        return Ok(answer);
    }

    let (answer, out) = {
        let mut inner = shared.lock();
        let now = inner.now();
        let answer = inner.emulator.handle(&request, now);
        let fault = (drop_it && answer.body().len() > 1).then_some("connection dropped mid-body");
        inner.log_request(
            request.method(),
            request.uri().path(),
            answer.status(),
            fault,
        );
        (answer, inner.emulator.take_outgoing())
    };
    deliver(&shared, out);
    let (parts, body) = answer.into_parts();
    if drop_it && body.len() > 1 {
        let half = Bytes::from(body[..body.len() / 2].to_vec());
        let mut parts = parts;
        parts.headers.insert("content-length", body.len().into());
        return Ok(Response::from_parts(
            parts,
            HalfThenFail { first: Some(half) }.boxed(),
        ));
    }
    Ok(Response::from_parts(
        parts,
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    ))
}

/// The body of `POST /_sandbox/clock/advance`.
#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

/// `{"deliveries": […]}`.
#[derive(Serialize)]
struct DeliveriesAnswer<'a> {
    deliveries: &'a [Delivery],
}

/// `{"endpoints": {…}}`.
#[derive(Serialize)]
struct CountersAnswer {
    endpoints: BTreeMap<String, EndpointCounts>,
}

/// The body of `POST /_sandbox/issuer/cards`.
#[derive(Deserialize)]
struct IssuerCard {
    card: String,
    exp: String,
}

/// What `POST /_sandbox/issuer/cards` answers: the platform's id, and the card as the
/// platform shows it (no full number).
#[derive(Serialize)]
struct IssuerCardAnswer {
    card_id: String,
    bin: String,
    last_four: String,
    exp: String,
}

/// What `GET /_sandbox/overview` answers: the emulator's [`Overview`], the clock, the webhook
/// deliveries and the API requests (newest first), the faults, and what the dashboard needs
/// to steer. Masked: no card number, no key, no webhook URL's secret path.
#[derive(Serialize)]
struct DashboardState<'a> {
    #[serde(flatten)]
    overview: Overview,
    advanced_ms: u64,
    complete_after_ms: u64,
    quirks: bool,
    deliveries: Vec<Delivery>,
    deliveries_total: usize,
    requests: Vec<&'a RequestRecord>,
    requests_total: u64,
    faults: &'a Faults,
    faults_injected: u64,
    reasons: Vec<ReasonView>,
}

/// A reason a platform card can be terminated for, and what merchants then get.
#[derive(Serialize)]
struct ReasonView {
    code: &'static str,
    description: &'static str,
    merchants_get: &'static str,
}

/// How many deliveries and requests the overview lists (the newest).
const DASHBOARD_LOG: usize = 200;

fn dashboard_state(inner: &Inner) -> DashboardState<'_> {
    use cardsync_proto::issuer::platform::StatusReason;
    let overview = inner.emulator.overview(inner.now());
    let deliveries = inner
        .deliveries
        .iter()
        .rev()
        .take(DASHBOARD_LOG)
        .cloned()
        .collect();
    let reasons = StatusReason::WORDS
        .iter()
        .map(|code| {
            let reason = StatusReason::parse(code);
            ReasonView {
                code,
                description: reason.description(),
                merchants_get: crate::network::termination(&reason).word(),
            }
        })
        .collect();
    DashboardState {
        overview,
        advanced_ms: u64::try_from(inner.advanced.as_millis()).unwrap_or(u64::MAX),
        complete_after_ms: u64::try_from(inner.emulator.settings().complete_after.as_millis())
            .unwrap_or(u64::MAX),
        quirks: inner.emulator.settings().quirks,
        deliveries,
        deliveries_total: inner.deliveries.len(),
        requests: inner.requests.iter().rev().take(DASHBOARD_LOG).collect(),
        requests_total: inner.requests_seen,
        faults: &inner.faults,
        faults_injected: inner.injected,
        reasons,
    }
}

/// The body of `POST /_sandbox/issuer/cards/{card_id}/status`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    card_status: String,
    reason: Option<String>,
}

/// `{"faults": {…}}`.
#[derive(Serialize)]
struct FaultsAnswer<'a> {
    faults: &'a Faults,
}

/// The control endpoints, documented in the crate docs.
fn control(shared: &Arc<Shared>, request: &Request<Vec<u8>>) -> Response<ResponseBody> {
    let path = request.uri().path();
    let method = request.method();
    let bad = |message: &str| failed(StatusCode::BAD_REQUEST, message, Spelling::Universal);
    match (method, path) {
        (&Method::GET, "/_sandbox/clock") => json_answer(StatusCode::OK, &clock(shared)),
        (&Method::POST, "/_sandbox/clock/advance") => {
            let secs = serde_json::from_slice::<Advance>(request.body())
                .ok()
                .map(|a| a.seconds)
                .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9);
            let Some(secs) = secs else {
                return bad("the body must be {\"seconds\": N} with N >= 0");
            };
            advance_clock(shared, Duration::from_secs_f64(secs));
            json_answer(StatusCode::OK, &clock(shared))
        }
        (&Method::GET, "/_sandbox/deliveries") => {
            let inner = shared.lock();
            let answer = DeliveriesAnswer {
                deliveries: &inner.deliveries,
            };
            json_answer(StatusCode::OK, &answer)
        }
        (&Method::GET, "/_sandbox/counters") => {
            let endpoints = shared.lock().emulator.counters();
            json_answer(StatusCode::OK, &CountersAnswer { endpoints })
        }
        (&Method::POST, "/_sandbox/issuer/cards") => {
            let parsed = serde_json::from_slice::<IssuerCard>(request.body())
                .ok()
                .and_then(|c| {
                    let pan = cardsync_core::Pan::parse(&c.card).ok()?;
                    let exp = cardsync_core::Expiry::parse(&c.exp).ok()?;
                    Some((pan, exp))
                });
            let Some((pan, exp)) = parsed else {
                return bad("the body must be {\"card\": a valid card number, \"exp\": \"MM/YY\"}");
            };
            let card_id = {
                let mut inner = shared.lock();
                let now = inner.now();
                inner.emulator.register_issuer_card(&pan, exp, now)
            };
            let answer = IssuerCardAnswer {
                card_id,
                bin: pan.bin().as_str().to_owned(),
                last_four: pan.last4().as_str().to_owned(),
                exp: exp.to_string(),
            };
            json_answer(StatusCode::OK, &answer)
        }
        (&Method::GET, "/_sandbox/overview") => {
            let inner = shared.lock();
            json_answer(StatusCode::OK, &dashboard_state(&inner))
        }
        (&Method::POST, p)
            if p.starts_with("/_sandbox/issuer/cards/") && p.ends_with("/status") =>
        {
            use cardsync_proto::issuer::platform::{CardEdits, PlatformCardStatus, StatusReason};
            let id = &p["/_sandbox/issuer/cards/".len()..p.len() - "/status".len()];
            let change = serde_json::from_slice::<StatusChange>(request.body())
                .ok()
                .map(|c| {
                    (
                        PlatformCardStatus::parse(&c.card_status),
                        c.reason.as_deref().map(StatusReason::parse),
                    )
                })
                .filter(|(s, r)| s.is_known() && r.as_ref().is_none_or(StatusReason::is_known));
            let Some((status, reason)) = change else {
                return bad(
                    "the body must be {\"card_status\": \"ACTIVE\", \"SUSPENDED\" or \"TERMINATED\", \"reason\": a documented reason code}",
                );
            };
            let mut edits = CardEdits::default();
            edits.card_status = Some(status);
            edits.reason = reason;
            let mut inner = shared.lock();
            let now = inner.now();
            match inner.emulator.apply_card_edits(id, edits, now) {
                Ok(_) => {
                    let card = inner
                        .emulator
                        .overview(now)
                        .issuer_cards
                        .into_iter()
                        .find(|c| c.card_id == id);
                    json_answer(StatusCode::OK, &card)
                }
                Err(crate::network::Refused(status, message)) => failed(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                    &message,
                    Spelling::Universal,
                ),
            }
        }
        (&Method::GET, "/_sandbox/faults") => {
            let inner = shared.lock();
            let answer = FaultsAnswer {
                faults: &inner.faults,
            };
            json_answer(StatusCode::OK, &answer)
        }
        (&Method::POST, "/_sandbox/faults") => {
            match serde_json::from_slice::<Faults>(request.body()) {
                Ok(f)
                    if (0.0..=1.0).contains(&f.error_rate)
                        && (0.0..=1.0).contains(&f.drop_rate) =>
                {
                    let mut inner = shared.lock();
                    inner.dice = f.seed;
                    inner.faults = f.clone();
                    json_answer(StatusCode::OK, &FaultsAnswer { faults: &f })
                }
                Ok(_) => bad("rates must be between 0 and 1"),
                Err(e) => bad(&format!("invalid faults: {e}")),
            }
        }
        (&Method::DELETE, "/_sandbox/faults") => {
            shared.lock().faults = Faults::default();
            let faults = Faults::default();
            json_answer(StatusCode::OK, &FaultsAnswer { faults: &faults })
        }
        _ => failed(
            StatusCode::NOT_FOUND,
            &format!("no control endpoint {method} {path}"),
            Spelling::Universal,
        ),
    }
}
