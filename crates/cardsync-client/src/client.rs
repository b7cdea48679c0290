//! A typed client over any [`Transport`], retrying exactly as `cardsync-proto`'s retry decision
//! says: this module only sleeps (with the runtime's [`Sleep`]) and resends.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime};

use cardsync_proto::retry::{Decision, Outcome, RetryPolicy, parse_retry_after};
use cardsync_proto::transport::{Transport, TransportError};
use cardsync_proto::{
    Ack, BatchCreated, BatchInfo, Config, CreateBatch, DecodeError, EncodeError, Endpoint,
    EnrollMerchant, GetBatch, GetBatchResults, GetMerchant, GetSubscriptionResults,
    MerchantEnrolled, MerchantStatus, Results, SetWebhooks, Subscribe, Trigger, Unsubscribe,
};
use http::StatusCode;

/// Why a call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError {
    /// The request could not be built.
    Encode(EncodeError),
    /// The answer was an error, or could not be read.
    Decode(DecodeError),
    /// No answer came.
    Transport(TransportError),
}

impl CallError {
    /// The HTTP status of the answer, if one came.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            CallError::Decode(e) => e.status(),
            _ => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Encode(e) => write!(f, "cannot build the request: {e}"),
            CallError::Decode(e) => e.fmt(f),
            CallError::Transport(e) => write!(f, "no answer from CardSync: {e}"),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Encode(e) => Some(e),
            CallError::Decode(e) => Some(e),
            CallError::Transport(e) => Some(e),
        }
    }
}

/// A random number in `[0, 1)` for backoff jitter.
fn jitter() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// How the runtime waits: the one thing a client needs from it. Closures returning a future
/// are one, so any runtime's sleep will do.
///
/// ```
/// use std::time::Duration;
/// use cardsync_client::Sleep;
/// let sleep = |d: Duration| async move { tokio::time::sleep(d).await };
/// # fn assert_sleep<S: Sleep>(_: &S) {}
/// assert_sleep(&sleep);
/// ```
pub trait Sleep {
    /// Waits `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

impl<F, Fut> Sleep for F
where
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        self(duration)
    }
}

/// The CardSync API over a transport, with retries, on any runtime (whose [`Sleep`] it takes).
///
/// ```
/// use std::time::Duration;
/// use cardsync_client::Client;
/// use cardsync_proto::transport::TransportError;
/// use cardsync_proto::{BaseUrl, Config, MerchantKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Any HTTP client: here, a closure that answers every call.
/// let transport = |_: http::Request<Vec<u8>>| async {
///     Ok::<_, TransportError>(http::Response::new(
///         br#"{"status":"success","data":{"batch_id":"b1","status":"completed"}}"#.to_vec(),
///     ))
/// };
/// let sleep = |d: Duration| async move { tokio::time::sleep(d).await };
/// let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("api_key")?);
/// let client = Client::with_sleep(transport, config, sleep);
/// let batch = client.batch("b1").await?;
/// assert_eq!(batch.status.as_str(), "completed");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client<T, S> {
    transport: T,
    config: Config,
    policy: RetryPolicy,
    sleep: S,
}

impl<T: Transport + Sync, S: Sleep + Default + Sync> Client<T, S> {
    /// A client over any transport, with the default retry policy and the runtime's sleep
    /// `S::default()`.
    pub fn new(transport: T, config: Config) -> Client<T, S> {
        Client::with_sleep(transport, config, S::default())
    }
}

impl<T: Transport + Sync, S: Sleep + Sync> Client<T, S> {
    /// A client over any transport, sleeping between retries with `sleep`.
    pub fn with_sleep(transport: T, config: Config, sleep: S) -> Client<T, S> {
        Client {
            transport,
            config,
            policy: RetryPolicy::default(),
            sleep,
        }
    }

    /// Replaces the retry policy.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Client<T, S> {
        self.policy = policy;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sends one endpoint's request, retrying as the policy decides, and decodes the answer.
    ///
    /// # Errors
    ///
    /// [`CallError`]: the last answer's error, or the last transport failure.
    pub async fn call<E: Endpoint + Sync>(&self, endpoint: &E) -> Result<E::Output, CallError> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let request = endpoint.encode(&self.config).map_err(CallError::Encode)?;
            // Only the method and path are logged: never the body, the query (its values), or
            // the key.
            let (method, path) = (request.method().clone(), request.uri().path().to_owned());
            let sent = Instant::now();
            let outcome = match self.transport.send(request).await {
                Ok(response) => {
                    let status = response.status();
                    tracing::debug!(%method, %path, status = status.as_u16(), duration_ms = sent.elapsed().as_millis() as u64, attempt, "cardsync request");
                    if status.is_success() {
                        return E::decode(&response).map_err(CallError::Decode);
                    }
                    let retry_after = response
                        .headers()
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    (
                        Outcome::Response {
                            status,
                            retry_after,
                        },
                        Err(response),
                    )
                }
                Err(e) => {
                    tracing::debug!(%method, %path, error = %e, duration_ms = sent.elapsed().as_millis() as u64, attempt, "cardsync request failed");
                    (
                        Outcome::Transport {
                            reached: e.reached(),
                        },
                        Ok(e),
                    )
                }
            };
            let (what, last) = outcome;
            match self
                .policy
                .decide(E::IDEMPOTENCY, attempt, started.elapsed(), what, jitter())
            {
                Decision::Retry { after } => {
                    tracing::debug!(%method, %path, attempt, wait_ms = after.as_millis() as u64, "cardsync retry");
                    self.sleep.sleep(after).await;
                    attempt += 1;
                }
                _ => {
                    return match last {
                        Err(response) => E::decode(&response).map_err(CallError::Decode),
                        Ok(e) => Err(CallError::Transport(e)),
                    };
                }
            }
        }
    }

    /// `POST /v2/batch`. Never resent after an answer (a batch sent twice is billed twice).
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub async fn create_batch(&self, batch: &CreateBatch) -> Result<BatchCreated, CallError> {
        self.call(batch).await
    }

    /// `GET /v2/batch`.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub async fn batch(&self, batch_id: &str) -> Result<BatchInfo, CallError> {
        self.call(&GetBatch::new(batch_id)).await
    }

    /// `GET /v2/batch/results`, for the event of a batch-available webhook or, polling, none.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub async fn batch_results(
        &self,
        batch_id: &str,
        event_id: Option<&str>,
    ) -> Result<Results, CallError> {
        let request = match event_id {
            Some(ev) => GetBatchResults::new(batch_id).with_event_id(ev),
            None => GetBatchResults::new(batch_id),
        };
        self.call(&request).await
    }

    /// `POST /v2/subscribe`.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub async fn subscribe(&self, request: &Subscribe) -> Result<Ack, CallError> {
        self.call(request).await
    }

    /// `DELETE /v2/subscribe`.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub async fn unsubscribe(&self, request: &Unsubscribe) -> Result<Ack, CallError> {
        self.call(request).await
    }

    /// `GET /v2/subscription/results`.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub async fn subscription_results(&self, event_id: &str) -> Result<Results, CallError> {
        self.call(&GetSubscriptionResults::new(event_id)).await
    }

    /// `POST /v2/webhooks`.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub async fn set_webhooks(&self, request: &SetWebhooks) -> Result<Ack, CallError> {
        self.call(request).await
    }

    /// Registers one URL, a webhook receiver's, for the three events a job waits for: batch
    /// available (trigger 20), batch error (22) and American Express update (23), in one
    /// `POST /v2/webhooks` signed with the merchant key. This replaces the merchant's
    /// registrations for those triggers, which CardSync cannot show.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cardsync_client::Client;
    /// use cardsync_proto::transport::TransportError;
    /// use cardsync_proto::{BaseUrl, Config, MerchantKey, paths};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let transport = |request: http::Request<Vec<u8>>| async move {
    ///     assert_eq!(request.uri().path(), paths::WEBHOOKS);
    ///     assert_eq!(
    ///         request.body().as_slice(),
    ///         br#"{"webhooks":[{"trigger_id":20,"url":"https://hooks.example/w/t"},{"trigger_id":22,"url":"https://hooks.example/w/t"},{"trigger_id":23,"url":"https://hooks.example/w/t"}]}"#
    ///     );
    ///     Ok::<_, TransportError>(http::Response::new(br#"{"status":"success"}"#.to_vec()))
    /// };
    /// let sleep = |d: Duration| async move { tokio::time::sleep(d).await };
    /// let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("api_key")?);
    /// let client = Client::with_sleep(transport, config, sleep);
    /// client.register_receiver("https://hooks.example/w/t").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`CallError`]; [`EncodeError::EmptyField`] (as [`CallError::Encode`]) for an empty URL.
    pub async fn register_receiver(&self, url: &str) -> Result<Ack, CallError> {
        let hooks = SetWebhooks::new()
            .with(Trigger::BatchAvailable, url)
            .with(Trigger::BatchError, url)
            .with(Trigger::AmexUpdate, url);
        self.call(&hooks).await
    }

    /// `POST /v2/merchant`, with the partner master key. Never resent after an answer.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub async fn enroll_merchant(
        &self,
        request: &EnrollMerchant,
    ) -> Result<MerchantEnrolled, CallError> {
        self.call(request).await
    }

    /// `GET /v2/merchant`, with the partner master key.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub async fn merchant(&self, merchant_id: &str) -> Result<MerchantStatus, CallError> {
        self.call(&GetMerchant::new(merchant_id)).await
    }
}
