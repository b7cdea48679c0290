//! [`run`]: the loop that drives a [`Job`] over any [`Transport`], [`Store`] and [`Sink`], on
//! any async runtime. The runtime's part (the clock, sleeping, webhook events, the user's
//! decisions, progress) comes through the small [`Env`] trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use cardsync_proto::WebhookEvent;
use cardsync_proto::transport::{Transport, TransportError};

use crate::job::{CallId, Decision, Job, Output, Unconfirmed};
use crate::model::RequestState;
use crate::model::Summary;
use crate::sink::{Sink, SinkError};
use crate::store::{Change, Changes, Holder, Lease, Store, StoreError};

/// What a runtime gives the driver.
///
/// ```
/// use std::time::Instant;
/// use cardsync_job::Env;
/// use cardsync_proto::WebhookEvent;
///
/// /// Polling only, with a thread sleep: enough for a blocking program.
/// struct Sleepy;
/// impl Env for Sleepy {
///     fn now(&self) -> Instant { Instant::now() }
///     fn unix_ms(&self) -> u64 {
///         std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
///     }
///     async fn wait(&mut self, deadline: Option<Instant>) -> Option<WebhookEvent> {
///         if let Some(d) = deadline { std::thread::sleep(d.saturating_duration_since(Instant::now())) }
///         None
///     }
/// }
/// ```
pub trait Env {
    /// The monotonic clock.
    fn now(&self) -> Instant;

    /// The wall clock, in milliseconds since the Unix epoch (leases are kept in it, as other
    /// processes and machines read them).
    fn unix_ms(&self) -> u64;

    /// Waits until `deadline` (`None`: until an event) or until a webhook event arrives, and
    /// returns the event, if one came. May return early with `None`.
    fn wait(&mut self, deadline: Option<Instant>) -> impl Future<Output = Option<WebhookEvent>>;

    /// The user's decision about a request whose POST may or may not have reached CardSync,
    /// if there is one. The default is none: the job ends with the request unconfirmed.
    fn decide(&mut self, unconfirmed: &Unconfirmed) -> Option<Decision> {
        let _ = unconfirmed;
        None
    }

    /// The webhook event with this key ([`WebhookEvent::dedup_key`]), returned by
    /// [`Env::wait`], is durably recorded: acknowledge its delivery now (answer 200). Until
    /// then, a receiver must not: an event acknowledged and not recorded is lost. When the run
    /// stops before recording an event, this is never called for it; answer its delivery with
    /// an error (CardSync delivers it again).
    fn recorded(&mut self, key: &str) {
        let _ = key;
    }

    /// Called after each round of work, to show progress.
    fn progress(&mut self, job: &Job) {
        let _ = job;
    }

    /// Whether the run was asked to stop (a Ctrl-C, a SIGTERM), and why: then it starts no
    /// call any more and ends once what is under way is answered and recorded
    /// ([`Job::drain`]). Asked after every round and every wake-up; [`Env::wait`] should
    /// return early when a stop is asked. The default is never.
    fn stop_requested(&mut self) -> Option<String> {
        None
    }
}

/// Why a run stopped before the job did.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// The store failed. What it committed stands; run again to resume.
    Store(StoreError),
    /// The sink failed. What the store recorded stands; run again to resume.
    Sink(SinkError),
    /// Another runner took the job over (this one was paused or cut off past its lease).
    /// Nothing more was written or sent.
    LostLease {
        /// Who holds the job now, if known.
        holder: Option<Holder>,
        /// Batches this run created that it could no longer record (request, batch id): the
        /// runner that holds the job now finds those requests unconfirmed, and should adopt
        /// them.
        created: Vec<(u64, String)>,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Store(e) => write!(f, "journal: {e}"),
            RunError::Sink(e) => write!(f, "results: {e}"),
            RunError::LostLease { holder, created } => {
                match holder {
                    Some(h) => write!(f, "this run lost its hold on the job to {h}")?,
                    None => f.write_str("this run lost its hold on the job")?,
                }
                f.write_str(
                    " (it was paused or cut off for longer than its lease); it stopped without \
                     sending or writing anything more",
                )?;
                for (seq, batch) in created {
                    write!(
                        f,
                        "; request {seq} had reached CardSync as batch {batch}: adopt it \
                         (--adopt {seq}={batch})"
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Store(e) => Some(e),
            RunError::Sink(e) => Some(e),
            RunError::LostLease { .. } => None,
        }
    }
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> RunError {
        match e {
            StoreError::Fenced { holder } => RunError::LostLease {
                holder,
                created: Vec::new(),
            },
            e => RunError::Store(e),
        }
    }
}

impl From<SinkError> for RunError {
    fn from(e: SinkError) -> RunError {
        RunError::Sink(e)
    }
}

/// A lease being kept: renewed every third of its length while the run goes on.
#[derive(Debug)]
pub struct LeaseKeeper {
    lease: Lease,
    ttl: Duration,
    /// Until when (on the monotonic clock) a creating request may still leave: while the
    /// lease has half its length left. Shared with the requests under way ([`guarded`]).
    sendable_until: Arc<Mutex<Instant>>,
}

impl LeaseKeeper {
    /// Keeps `lease`, taken for `ttl`.
    pub fn new(lease: Lease, ttl: Duration) -> LeaseKeeper {
        LeaseKeeper {
            lease,
            ttl,
            sendable_until: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Records how long creating requests may still leave under the lease as it stands.
    fn refresh(&self, now_ms: u64) {
        let left = self
            .lease
            .expires_ms
            .saturating_sub(now_ms + self.ttl_ms() / 2);
        if let Ok(mut until) = self.sendable_until.lock() {
            *until = Instant::now() + Duration::from_millis(left);
        }
    }

    /// The lease as it stands.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// When the lease should next be renewed.
    fn renew_at_ms(&self) -> u64 {
        self.lease.expires_ms.saturating_sub(self.ttl_ms() * 2 / 3)
    }

    /// Renews the lease when a third of it has passed ([`run`] calls this as it goes; a
    /// program that holds a journal without running a job, such as a webhook listener, calls
    /// it from time to time).
    ///
    /// # Errors
    ///
    /// [`StoreError::Fenced`] when another runner took the lease over.
    pub fn keep(&mut self, store: &mut impl Store, now_ms: u64) -> Result<(), StoreError> {
        if now_ms >= self.renew_at_ms() {
            self.lease = store.renew(&self.lease, now_ms, self.ttl_ms())?;
        }
        self.refresh(now_ms);
        Ok(())
    }

    /// Before a request CardSync bills is sent: the lease must be current with half its
    /// length to spare (renewed now if need be), so that a runner paused past its lease never
    /// sends one after waking up.
    ///
    /// The request is then held to the same rule until it leaves ([`guarded`]): a POST is sent
    /// by whatever polls its future, and a run paused between this check and the first bytes
    /// (with several calls under way, that can be more than an instant) must not send it on
    /// waking, unless it renewed its lease first.
    fn before_create(&mut self, store: &mut impl Store, now_ms: u64) -> Result<(), RunError> {
        if self.lease.expires_ms < now_ms + self.ttl_ms() / 2 {
            self.lease = store.renew(&self.lease, now_ms, self.ttl_ms())?;
        }
        self.refresh(now_ms);
        Ok(())
    }

    /// Gives the lease back.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    pub fn release(self, store: &mut impl Store) -> Result<(), StoreError> {
        store.release(&self.lease)
    }
}

/// The error of a failed `apply`; when the lease was lost, with the batches the changes would
/// have recorded as created.
fn lost(e: StoreError, changes: &Changes) -> RunError {
    let mut error = RunError::from(e);
    if let RunError::LostLease { created, .. } = &mut error {
        created.extend(created_in(changes));
    }
    error
}

/// The batches a set of changes records as created: (request, batch id).
fn created_in(changes: &Changes) -> impl Iterator<Item = (u64, String)> + '_ {
    changes.items().iter().filter_map(|change| match change {
        Change::Request(u) if u.from == RequestState::Sending => {
            u.batch_id.as_ref().map(|b| (u.seq, b.clone()))
        }
        _ => None,
    })
}

/// After the lease was lost: the answers that have come in but were not handled yet (with
/// several calls under way, the run may be fenced while handling another) are handed to the
/// job, and the batches they created are added to `created`, so that the error names every
/// batch this run knows it created and could not record.
fn salvage(
    job: &mut Job,
    in_flight: &mut Vec<(CallId, InFlight<'_>)>,
    answered: &mut Answered,
    now: Instant,
    created: &mut Vec<(u64, String)>,
) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for (id, mut call) in in_flight.drain(..) {
        if let Poll::Ready(answer) = call.as_mut().poll(&mut cx) {
            answered.push((id, answer));
        }
    }
    for (id, answer) in answered.drain(..) {
        job.handle_response(id, answer, now);
    }
    while let Some(output) = job.poll_output() {
        if let Output::Persist(changes) = output {
            for c in created_in(&changes) {
                if !created.contains(&c) {
                    created.push(c);
                }
            }
        }
    }
}

type InFlight<'a> =
    Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, TransportError>> + Send + 'a>>;

/// A creating request that goes only while the lease allows it (`sendable_until`, moved on
/// at every renewal): checked each time the request is driven, before its transport is, so
/// that a run that was paused (or starved) past its lease drops the POST rather than send it
/// late. The monotonic clock runs on while a process is stopped. When the lease runs short
/// after the bytes may have left, the request is reported as perhaps received, and decided
/// like any interrupted POST.
fn guarded<'t>(
    send: impl Future<Output = Result<http::Response<Vec<u8>>, TransportError>> + Send + 't,
    sendable_until: Arc<Mutex<Instant>>,
) -> InFlight<'t> {
    let mut send = Box::pin(send);
    Box::pin(std::future::poll_fn(move |cx| {
        let deadline = sendable_until
            .lock()
            .map_or_else(|_| Instant::now(), |d| *d);
        if Instant::now() >= deadline {
            return Poll::Ready(Err(TransportError::new(
                cardsync_proto::transport::TransportErrorKind::Other,
                cardsync_proto::retry::Reached::Maybe,
            )
            .with_source(
                "not sent: the job's lease ran short before the request could leave",
            )));
        }
        send.as_mut().poll(cx)
    }))
}

/// What woke the driver.
enum Woke {
    Answer(usize, Result<http::Response<Vec<u8>>, TransportError>),
    Event(Option<WebhookEvent>),
}

/// Drives `job` until it finishes: carries out its outputs over `transport`, `store` and
/// `sink`, under the lease `keeper` holds, and feeds back what happened.
///
/// # Errors
///
/// [`RunError`]: the run stopped; what the store committed stands, and a later run resumes
/// from it.
pub async fn run<T, S, K, E>(
    job: &mut Job,
    transport: &T,
    store: &mut S,
    sink: &mut K,
    keeper: &mut LeaseKeeper,
    env: &mut E,
) -> Result<Summary, RunError>
where
    T: Transport + Sync,
    S: Store,
    K: Sink,
    E: Env,
{
    let mut in_flight: Vec<(CallId, InFlight<'_>)> = Vec::new();
    let mut answered = Vec::new();
    let outcome = drive(
        job,
        transport,
        (store, sink, keeper),
        env,
        (&mut in_flight, &mut answered),
    )
    .await;
    match outcome {
        Err(RunError::LostLease {
            holder,
            mut created,
        }) => {
            salvage(job, &mut in_flight, &mut answered, env.now(), &mut created);
            Err(RunError::LostLease { holder, created })
        }
        other => other,
    }
}

/// Answers that came in and are not handled yet.
type Answered = Vec<(CallId, Result<http::Response<Vec<u8>>, TransportError>)>;

/// The loop of [`run`].
async fn drive<'t, T, S, K, E>(
    job: &mut Job,
    transport: &'t T,
    (store, sink, keeper): (&mut S, &mut K, &mut LeaseKeeper),
    env: &mut E,
    (in_flight, answered): (&mut Vec<(CallId, InFlight<'t>)>, &mut Answered),
) -> Result<Summary, RunError>
where
    T: Transport + Sync,
    S: Store,
    K: Sink,
    E: Env,
{
    loop {
        if let Some(why) = env.stop_requested() {
            job.drain(&why, env.now());
        }
        for (id, answer) in answered.drain(..) {
            job.handle_response(id, answer, env.now());
        }
        while let Some(output) = job.poll_output() {
            match output {
                Output::Persist(mut changes) => {
                    if changes.wants_checkpoint() {
                        changes.set_checkpoint(sink.checkpoint()?);
                    }
                    let applied = keeper
                        .keep(store, env.unix_ms())
                        .and_then(|()| store.apply(&keeper.lease, &changes));
                    if let Err(e) = applied {
                        return Err(lost(e, &changes));
                    }
                    job.handle_persisted(changes.id(), env.now());
                }
                Output::LoadCards(seq) => {
                    let cards = store.cards(seq)?;
                    job.handle_cards(seq, cards, env.now());
                }
                Output::Send(call) => {
                    let mut future: InFlight<'t> = if call.creates {
                        keeper.before_create(store, env.unix_ms())?;
                        guarded(
                            transport.send(call.request),
                            Arc::clone(&keeper.sendable_until),
                        )
                    } else {
                        Box::pin(transport.send(call.request))
                    };
                    // Start it now, before whatever else this round does: a transport begins
                    // sending when first polled. (The real waker comes with the next poll.)
                    let mut start = std::task::Context::from_waker(std::task::Waker::noop());
                    match future.as_mut().poll(&mut start) {
                        Poll::Ready(answer) => answered.push((call.id, answer)),
                        Poll::Pending => in_flight.push((call.id, future)),
                    }
                }
                Output::Write(rows) => sink.append(&rows)?,
                Output::NeedsDecision(unconfirmed) => {
                    if let Some(decision) = env.decide(&unconfirmed) {
                        job.decide(unconfirmed.seq, decision, env.now());
                    }
                }
                Output::Recorded(key) => env.recorded(&key),
                Output::Finish => {
                    sink.finish()?;
                    job.handle_finished(env.now());
                }
                Output::Finished(summary) => return Ok(summary),
            }
        }
        env.progress(job);
        keeper.keep(store, env.unix_ms())?;
        if !answered.is_empty() {
            // Answers that came at once are handled before any waiting.
            continue;
        }

        // Wait for an answer, an event, the job's next timer or the lease's renewal.
        let renew_in = Duration::from_millis(keeper.renew_at_ms().saturating_sub(env.unix_ms()));
        let renew_at = env.now() + renew_in;
        let deadline = Some(job.poll_timeout().map_or(renew_at, |t| t.min(renew_at)));
        let woke = {
            let mut wait = std::pin::pin!(env.wait(deadline));
            std::future::poll_fn(|cx| {
                for (i, (_, call)) in in_flight.iter_mut().enumerate() {
                    if let Poll::Ready(answer) = call.as_mut().poll(cx) {
                        return Poll::Ready(Woke::Answer(i, answer));
                    }
                }
                wait.as_mut().poll(cx).map(Woke::Event)
            })
            .await
        };
        match woke {
            Woke::Answer(i, answer) => {
                let (id, _) = in_flight.swap_remove(i);
                job.handle_response(id, answer, env.now());
            }
            Woke::Event(Some(event)) => job.handle_event(event, env.now()),
            Woke::Event(None) => job.handle_timeout(env.now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarded_post_does_not_leave_once_the_lease_ran_short() {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let until = Arc::new(Mutex::new(Instant::now() + Duration::from_secs(60)));
        let mut polled = 0;
        let mut live = guarded(
            std::future::poll_fn(|_| {
                polled += 1;
                Poll::Pending
            }),
            Arc::clone(&until),
        );
        assert!(live.as_mut().poll(&mut cx).is_pending());
        // The run is paused past its lease: on the next poll the request is dropped unsent.
        *until.lock().unwrap() = Instant::now();
        match live.as_mut().poll(&mut cx) {
            Poll::Ready(Err(e)) => {
                let source = std::error::Error::source(&e).map(ToString::to_string);
                assert!(source.unwrap_or_default().contains("lease"), "{e:?}");
            }
            other => panic!("{:?}", other.map(|r| r.map(|_| ()))),
        }
        drop(live);
        assert_eq!(
            polled, 1,
            "the transport was driven after the lease ran short"
        );
    }
}
