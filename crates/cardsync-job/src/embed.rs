//! [`sync`]: the job end to end in one call, for embedders (plan the cards, take the lease,
//! run, give the lease back), with [`TokioEnv`] (behind the `tokio` feature) for the runtime's
//! part. The pieces it is made of ([`crate::Job`], [`crate::PlanRecorder`],
//! [`crate::LeaseKeeper`], [`crate::run`]) stay public for those who need them.

use std::fmt;
use std::time::Duration;

use cardsync_core::{PlanOptions, Planner, Record, RejectedRow, RowVerdict};
use cardsync_proto::transport::Transport;

use crate::driver::{Env, LeaseKeeper, RunError, run};
use crate::job::{Job, JobOptions, PlanRecorder};
use crate::model::Summary;
use crate::sink::Sink;
use crate::store::{Acquired, Holder, Store, StoreError};

/// How [`sync`] runs: the job's options, how cards are planned, who holds the journal and for
/// how long at a time.
///
/// ```
/// use cardsync_job::{JobOptions, SyncOptions};
/// use cardsync_proto::{BaseUrl, Config, MerchantKey};
///
/// let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("key")?);
/// let options = SyncOptions::new(JobOptions::new(config)).with_holder("billing-7");
/// assert_eq!(options.holder, "billing-7");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SyncOptions {
    /// The job's options (configuration, waiting, concurrency, retries).
    pub job: JobOptions,
    /// How cards are validated and grouped into requests.
    pub plan: PlanOptions,
    /// Who holds the journal while the job runs (a name of this process's).
    pub holder: String,
    /// How long the journal's lease lasts without renewal (renewed every third of it).
    pub lease: Duration,
}

impl SyncOptions {
    /// The default planning, the holder `cardsync` with this process's id, a 30 s lease.
    pub fn new(job: JobOptions) -> SyncOptions {
        SyncOptions {
            job,
            plan: PlanOptions::default(),
            holder: "cardsync".to_owned(),
            lease: Duration::from_secs(30),
        }
    }

    /// With another name in the lease.
    pub fn with_holder(mut self, holder: impl Into<String>) -> SyncOptions {
        self.holder = holder.into();
        self
    }

    /// With other planning options (an SE number for American Express rows without one,
    /// smaller requests).
    pub fn with_plan(mut self, plan: PlanOptions) -> SyncOptions {
        self.plan = plan;
        self
    }
}

/// Why [`sync`] stopped before the job did.
#[derive(Debug)]
#[non_exhaustive]
pub enum SyncError {
    /// Another runner holds the journal (with who and until when).
    Held(Box<crate::store::Lease>),
    /// The journal failed while the cards were planned; nothing was sent.
    Store(StoreError),
    /// The run stopped: what the journal committed stands, and the same call resumes it.
    Run(RunError),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Held(held) => write!(f, "another runner holds the job: {}", held.holder),
            SyncError::Store(e) => write!(f, "journal: {e}"),
            SyncError::Run(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SyncError::Held(_) => None,
            SyncError::Store(e) => Some(e),
            SyncError::Run(e) => Some(e),
        }
    }
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> SyncError {
        SyncError::Store(e)
    }
}

/// Runs the account-updater job on `cards` end to end, exactly once across crashes and
/// overlapping runs: plans them into `store` (a journal holding a complete plan already is
/// resumed instead, and `cards` is not read), takes the journal's lease, sends every request
/// over `transport`, writes every result to `sink` as it arrives, and gives the lease back. The
/// cards a plan rejects are handed to `rejected` (with why).
///
/// # Errors
///
/// [`SyncError`]: what the journal committed stands, and the same call resumes the job.
pub async fn sync<'r, T, S, K, E>(
    cards: impl IntoIterator<Item = Record<'r>>,
    transport: &T,
    store: &mut S,
    sink: &mut K,
    env: &mut E,
    options: &SyncOptions,
    mut rejected: impl FnMut(RejectedRow),
) -> Result<Summary, SyncError>
where
    T: Transport + Sync,
    S: Store,
    K: Sink,
    E: Env,
{
    let holder = Holder::new(&options.holder, std::process::id(), env.unix_ms());
    let ttl = u64::try_from(options.lease.as_millis()).unwrap_or(u64::MAX);
    let lease = match store.acquire(&holder, env.unix_ms(), ttl, &|_| false)? {
        Acquired::Taken(lease) => lease,
        Acquired::Held(held) => return Err(SyncError::Held(Box::new(held))),
    };
    let outcome = async {
        let snapshot = store.load()?;
        if !snapshot.is_planned() {
            let mut planner = Planner::new(options.plan.clone());
            let mut recorder = PlanRecorder::new(&snapshot);
            let mut invalid = 0;
            for card in cards {
                if let RowVerdict::Rejected(row) = planner.handle_record(card) {
                    invalid += 1;
                    rejected(row);
                }
                while let Some(request) = planner.poll_request() {
                    store.apply(&lease, &recorder.request(request))?;
                }
            }
            planner.finish();
            while let Some(request) = planner.poll_request() {
                store.apply(&lease, &recorder.request(request))?;
            }
            store.apply(
                &lease,
                &recorder.finish(planner.rows(), invalid, Vec::new()),
            )?;
        }
        let snapshot = store.load()?;
        sink.rewind(&snapshot.checkpoint).map_err(RunError::Sink)?;
        let mut job = Job::new(snapshot, options.job.clone(), env.now());
        let mut keeper = LeaseKeeper::new(lease.clone(), options.lease);
        let summary = run(&mut job, transport, store, sink, &mut keeper, env).await?;
        Ok::<_, SyncError>((summary, keeper))
    }
    .await;
    match outcome {
        Ok((summary, keeper)) => {
            let _ = keeper.release(store);
            Ok(summary)
        }
        Err(e) => {
            // Given back when this run still holds it (refused quietly otherwise).
            let _ = store.release(&lease);
            Err(e)
        }
    }
}

impl From<RunError> for SyncError {
    fn from(e: RunError) -> SyncError {
        SyncError::Run(e)
    }
}

/// The runtime's part of a job on tokio: its clock, the wall clock, no webhooks and no
/// decisions (a request left unconfirmed ends the run; see [`Env`] to decide, or to feed
/// webhook events).
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # {
/// use cardsync_job::{Env, TokioEnv};
/// let env = TokioEnv::default();
/// assert!(env.unix_ms() > 0);
/// # }
/// ```
#[cfg(feature = "tokio")]
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct TokioEnv;

#[cfg(feature = "tokio")]
impl Env for TokioEnv {
    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    async fn wait(
        &mut self,
        deadline: Option<std::time::Instant>,
    ) -> Option<cardsync_proto::WebhookEvent> {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            // Nothing to wait for but a deadline the job does not have: a short nap.
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        None
    }
}
