//! A worker: claims requests of the open jobs in its scope, sends them, waits for and fetches
//! their results, and writes what it learned under each claim, until nothing is left that it
//! can do (or forever, following new jobs). Run as many as you like, anywhere.
//!
//! What a worker does with an answer is decided by the job's rules of one request
//! ([`cardsync_job::rules`]), the same as the single-machine job's: the worker claims, calls
//! and records, and decides nothing about what an answer means.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use cardsync_job::RequestKind;
use cardsync_job::RequestRecord;
use cardsync_job::hooks;
use cardsync_job::rules::{self, Answer, Created, Status};
use cardsync_proto::Idempotency;
use cardsync_proto::retry::{Decision as RetryDecision, RetryPolicy};
use cardsync_proto::transport::{Transport, TransportError};
use cardsync_proto::{BaseUrl, Config, MerchantKey};

use crate::PgError;
use crate::journal::{Claim, OpenJob, PgJournal, Scope, Work};

/// How a worker runs.
///
/// ```
/// use cardsync_job_postgres::{Scope, WorkerOptions};
/// let options = WorkerOptions::new("worker-1").with_concurrency(4).with_scope(Scope::Jobs(vec!["nightly".into()]));
/// assert_eq!(options.concurrency, 4);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// Its name in leases (host and process id, say).
    pub name: String,
    /// Which jobs.
    pub scope: Scope,
    /// Requests it works on at once.
    pub concurrency: usize,
    /// How long a claim lasts; renewed while a call takes long.
    pub lease: Duration,
    /// The first pause between status checks of a batch; doubled each time.
    pub poll_first: Duration,
    /// The longest pause between status checks (with webhooks, a fallback).
    pub poll_max: Duration,
    /// How long to wait when there is nothing to claim.
    pub idle: Duration,
    /// Keep going when every job is done, for jobs created later.
    pub follow: bool,
    /// Merchant keys given directly, by the name of the environment variable they stand for
    /// (the environment is read for the others).
    pub keys: HashMap<String, MerchantKey>,
    /// The CardSync base URL this worker sends to, and the only one: a job created for another
    /// is left alone (the journal's record of a job's base URL never decides where cards go).
    pub base_url: BaseUrl,
}

impl WorkerOptions {
    /// Defaults: every open job, one request at a time, 30 s leases, status checks from 50 ms
    /// to 60 s apart, 200 ms between looks for work, stop when nothing is left, the CardSync
    /// sandbox as the base URL.
    pub fn new(name: impl Into<String>) -> WorkerOptions {
        WorkerOptions {
            name: name.into(),
            scope: Scope::All,
            concurrency: 1,
            lease: Duration::from_secs(30),
            poll_first: Duration::from_millis(50),
            poll_max: Duration::from_secs(60),
            idle: Duration::from_millis(200),
            follow: false,
            keys: HashMap::new(),
            base_url: BaseUrl::sandbox(),
        }
    }

    /// Sending to this CardSync base URL (and working only on jobs created for it).
    pub fn with_base_url(mut self, base_url: BaseUrl) -> WorkerOptions {
        self.base_url = base_url;
        self
    }

    /// With the merchant key that jobs naming `env` use, instead of reading `env`.
    pub fn with_key(mut self, env: impl Into<String>, key: MerchantKey) -> WorkerOptions {
        self.keys.insert(env.into(), key);
        self
    }

    /// With a scope.
    pub fn with_scope(mut self, scope: Scope) -> WorkerOptions {
        self.scope = scope;
        self
    }

    /// With another concurrency (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> WorkerOptions {
        self.concurrency = n.max(1);
        self
    }

    /// With another lease length.
    pub fn with_lease(mut self, lease: Duration) -> WorkerOptions {
        self.lease = lease;
        self
    }

    /// With other bounds of the pause between status checks.
    pub fn with_polling(mut self, first: Duration, max: Duration) -> WorkerOptions {
        self.poll_first = first;
        self.poll_max = max.max(first);
        self
    }

    /// Following new jobs forever.
    pub fn with_follow(mut self, follow: bool) -> WorkerOptions {
        self.follow = follow;
        self
    }
}

/// What a worker did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkSummary {
    /// POSTs that created a batch or were accepted.
    pub sent: u64,
    /// Requests whose results it wrote.
    pub completed: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests whose POST may have reached CardSync and that now wait for a decision.
    pub unconfirmed: u64,
    /// Claims it lost to another worker or a decision (it wrote nothing for them).
    pub fenced: u64,
    /// Requests left waiting for a decision when it stopped.
    pub waiting_for_decision: u64,
    /// Claims it made.
    pub claims: u64,
    /// Time spent waiting for CardSync's answers (summed over its lanes).
    pub http: Duration,
    /// Time spent waiting for the journal (claims and writes, summed over its lanes).
    pub journal: Duration,
    /// Time spent with nothing to claim (summed over its lanes).
    pub idle: Duration,
    /// Time its lanes ran (summed): what is neither `http` nor `idle` is the worker's and the
    /// journal's own work.
    pub busy: Duration,
    /// Open jobs in its scope that it left alone, with why: it does not hold their merchant's
    /// key (by the environment variable the job names), they were created for another base
    /// URL, or they are sealed under a journal key it does not hold.
    pub skipped: std::collections::BTreeSet<String>,
    /// CardSync refused the worker's API key (401 or 403, in its own words), and why: the
    /// worker stopped claiming (its lanes finished what they held), and the request it was
    /// sending went back to the others, unsent.
    pub key_refused: Option<String>,
}

/// The jobs a worker can work on, and the merchant keys it holds for them (by environment
/// variable): a job must be for the worker's own base URL, under a journal key it holds, and
/// its merchant's fingerprint must match the key (so that a wrong key is never used). The
/// others are returned with why they are left alone.
fn usable_jobs(
    journal: &PgJournal,
    options: &WorkerOptions,
    jobs: &[OpenJob],
) -> (Vec<String>, HashMap<String, MerchantKey>, Vec<String>) {
    let mut usable = Vec::new();
    let mut keys = HashMap::new();
    let mut left = Vec::new();
    for job in jobs {
        let same_base = BaseUrl::parse(&job.base_url).is_ok_and(|b| b == options.base_url);
        if !same_base {
            left.push(format!(
                "{} (created for {}; this worker sends only to {})",
                job.name,
                job.base_url,
                options.base_url.as_str()
            ));
            continue;
        }
        if !journal.holds_key(&job.key_id) {
            left.push(format!(
                "{} (sealed under journal key {}, which this worker does not hold)",
                job.name, job.key_id
            ));
            continue;
        }
        let key = match options.keys.get(&job.key_env) {
            Some(key) => Some(key.clone()),
            None => std::env::var(&job.key_env)
                .ok()
                .and_then(|k| MerchantKey::new(&k).ok()),
        };
        match key {
            Some(key) if journal.merchant_fingerprint(key.expose_secret()) == job.merchant => {
                usable.push(job.name.clone());
                keys.insert(job.key_env.clone(), key);
            }
            _ => left.push(format!("{} ({})", job.name, job.key_env)),
        }
    }
    (usable, keys, left)
}

/// Runs a worker until nothing is left that it can do (or forever with
/// [`WorkerOptions::follow`]). Jobs whose merchant key is not in this worker's environment (or
/// is not the key the job was created with) are left to other workers.
///
/// # Errors
///
/// [`PgError`] when the journal fails; a claim lost to another worker is not an error (it is
/// counted in [`WorkSummary::fenced`]).
pub async fn work<T>(
    journal: &PgJournal,
    transport: Arc<T>,
    options: &WorkerOptions,
) -> Result<WorkSummary, PgError>
where
    T: Transport + Send + Sync + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    // Set by a lane whose key CardSync refused: the others stop claiming.
    let stop = Arc::new(AtomicBool::new(false));
    for lane in 0..options.concurrency {
        let journal = journal.clone();
        let transport = transport.clone();
        let mut options = options.clone();
        let stop = stop.clone();
        options.name = format!("{}/{lane}", options.name);
        tasks.spawn(async move { lane_loop(&journal, &*transport, &options, &stop).await });
    }
    let mut summary = WorkSummary::default();
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(s)) => {
                summary.sent += s.sent;
                summary.completed += s.completed;
                summary.failed += s.failed;
                summary.unconfirmed += s.unconfirmed;
                summary.fenced += s.fenced;
                summary.claims += s.claims;
                summary.http += s.http;
                summary.journal += s.journal;
                summary.idle += s.idle;
                summary.busy += s.busy;
                summary.skipped.extend(s.skipped);
                if summary.key_refused.is_none() {
                    summary.key_refused = s.key_refused;
                }
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
                tasks.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_error.get_or_insert(PgError::State(format!("a worker task failed: {e}")));
                tasks.abort_all();
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    summary.waiting_for_decision = journal.outstanding(&options.scope).await?.1;
    Ok(summary)
}

/// How long a lane keeps trying while the database is unreachable.
const DATABASE_PATIENCE: Duration = Duration::from_secs(120);

/// Whether a journal error may pass by itself: the connection was lost or refused, the server
/// is restarting or failing over, or a transaction lost a deadlock.
fn transient(e: &PgError) -> bool {
    match e {
        PgError::Pool(_) => true,
        PgError::Database(e) => match e.code() {
            None => true,
            Some(code) => crate::connect::is_lost(e) || matches!(code.code(), "40001" | "40P01"),
        },
        _ => false,
    }
}

/// Retries a journal write that records what a call did (a POST made, results fetched) while
/// the database is unreachable, for up to [`DATABASE_PATIENCE`]: losing it would leave a
/// request waiting for a decision that the worker could have recorded. Safe to repeat: every
/// write is fenced by the claim.
async fn persist<F, Fut>(mut write: F) -> Result<(), PgError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), PgError>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match write().await {
            Err(e) if transient(&e) && started.elapsed() < DATABASE_PATIENCE => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            done => return done,
        }
    }
}

/// A lane: works until nothing is left, riding out a database that goes away for a while
/// (what it had claimed then is taken over by others once its lease runs out).
async fn lane_loop<T: Transport + Sync>(
    journal: &PgJournal,
    transport: &T,
    options: &WorkerOptions,
    stop: &AtomicBool,
) -> Result<WorkSummary, PgError> {
    let started = tokio::time::Instant::now();
    let mut summary = WorkSummary::default();
    let mut pause = Duration::from_millis(200);
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        let claims = summary.claims;
        match lane_run(journal, transport, options, stop, &mut summary).await {
            Ok(()) => {
                summary.busy = started.elapsed();
                return Ok(summary);
            }
            Err(e) if transient(&e) => {
                tracing::warn!(error = %e, "the journal database failed; trying again");
                if summary.claims > claims {
                    // It got somewhere since the last failure: a new spell.
                    failing_since = None;
                    pause = Duration::from_millis(200);
                }
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > DATABASE_PATIENCE {
                    return Err(e);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn lane_run<T: Transport + Sync>(
    journal: &PgJournal,
    transport: &T,
    options: &WorkerOptions,
    stop: &AtomicBool,
    summary: &mut WorkSummary,
) -> Result<(), PgError> {
    let mut keys = HashMap::new();
    let mut scope = Scope::Jobs(Vec::new());
    let mut refreshed: Option<tokio::time::Instant> = None;
    loop {
        // CardSync refused the key (here or in another lane): no more claims.
        if summary.key_refused.is_some() {
            stop.store(true, Ordering::SeqCst);
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Which jobs this worker can work on (refreshed every few seconds, and when idle).
        if refreshed.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) {
            let jobs = timed(&mut summary.journal, journal.open_jobs(&options.scope)).await?;
            let (names, found, left) = usable_jobs(journal, options, &jobs);
            for why in &left {
                if !summary.skipped.contains(why) {
                    tracing::warn!(job = %why, "left alone");
                }
            }
            summary.skipped.extend(left);
            scope = Scope::Jobs(names);
            keys = found;
            refreshed = Some(tokio::time::Instant::now());
        }
        let claim = match &scope {
            Scope::Jobs(names) if names.is_empty() => None,
            _ => {
                let request = timed(
                    &mut summary.journal,
                    journal.claim(&options.name, &scope, options.lease),
                )
                .await?;
                match request {
                    Some(claim) => Some(claim),
                    // Then American Express updates to fetch.
                    None => {
                        timed(
                            &mut summary.journal,
                            journal.claim_update(&options.name, &scope, options.lease),
                        )
                        .await?
                    }
                }
            }
        };
        let Some(claim) = claim else {
            // Done when nothing is left that this worker can do (jobs it holds no key for are
            // other workers' business).
            let (active, _) = timed(&mut summary.journal, journal.outstanding(&scope)).await?;
            if active == 0 && !options.follow {
                return Ok(());
            }
            refreshed = None;
            let resting = tokio::time::Instant::now();
            tokio::time::sleep(options.idle).await;
            summary.idle += resting.elapsed();
            continue;
        };
        summary.claims += 1;
        tracing::debug!(
            job = %claim.job_name,
            request = claim.seq,
            epoch = claim.epoch,
            send = matches!(claim.work, Work::Send { .. }),
            "claimed"
        );
        hooks::reached_by(&options.name, "claimed");
        let Some(key) = keys.get(&claim.key_env).cloned() else {
            // Its job's key went away since the scope was read: hand the claim back at once.
            let handed_back = hand_back(journal, &claim).await;
            match handed_back {
                Ok(()) | Err(PgError::Fenced { .. }) => {}
                Err(e) => return Err(e),
            }
            refreshed = None;
            continue;
        };
        // Cards go only to this worker's own base URL (the job's, as recorded and checked
        // against its authentication, must be the same).
        if BaseUrl::parse(&claim.base_url).ok().as_ref() != Some(&options.base_url) {
            let handed_back = hand_back(journal, &claim).await;
            match handed_back {
                Ok(()) | Err(PgError::Fenced { .. }) => {}
                Err(e) => return Err(e),
            }
            refreshed = None;
            continue;
        }
        let config = Config::new(options.base_url.clone()).with_merchant_key(key);
        let step = match &claim.work {
            Work::Send { .. } => send(journal, transport, options, &config, &claim, summary).await,
            Work::Check { .. } => {
                check(journal, transport, options, &config, &claim, summary).await
            }
            Work::Update { .. } => {
                update(journal, transport, options, &config, &claim, summary).await
            }
        };
        match step {
            Ok(()) => {}
            Err(e @ PgError::Fenced { .. }) => {
                tracing::warn!(error = %e, "claim lost; nothing written");
                summary.fenced += 1;
            }
            Err(e @ PgError::KeyRotated { .. }) => {
                // The job was rotated to a key this worker lacks: it is left to workers that
                // hold it (the claim runs out, and what it sent waits for a decision).
                tracing::warn!(error = %e, "job left alone");
                refreshed = None;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends a transport call while renewing the claim's lease every third of its length.
///
/// The call is driven to its answer whatever happens to the renewals: a call under way may
/// already have reached CardSync, and its answer is what lets the worker record it (a batch
/// created needs no decision then). When a renewal fails (the database is unreachable, or the
/// claim was taken over), renewing stops and the call goes on; the write that records its
/// answer is fenced by the claim, and a batch that can no longer be recorded under it is kept
/// as a late answer.
async fn call<T: Transport + Sync>(
    journal: &PgJournal,
    transport: &T,
    options: &WorkerOptions,
    claim: &Claim,
    request: http::Request<Vec<u8>>,
    summary: &mut WorkSummary,
) -> Result<http::Response<Vec<u8>>, TransportError> {
    let started = tokio::time::Instant::now();
    let sending = transport.send(request);
    tokio::pin!(sending);
    let mut renewing = true;
    loop {
        tokio::select! {
            answer = &mut sending => {
                summary.http += started.elapsed();
                return answer;
            }
            _ = tokio::time::sleep(options.lease / 3), if renewing => {
                let renewal = tokio::select! {
                    renewal = timed(&mut summary.journal, journal.renew(claim, options.lease)) => renewal,
                    // A renewal must not hold up the answer: if the database hangs, the call's
                    // answer wins and is recorded as soon as the database is back.
                    answer = &mut sending => {
                        summary.http += started.elapsed();
                        return answer;
                    }
                };
                if let Err(e) = renewal {
                    tracing::warn!(
                        job = %claim.job_name,
                        request = claim.seq,
                        error = %e,
                        "cannot renew the claim; the call under way goes on and its answer is \
                         recorded when the journal allows"
                    );
                    renewing = false;
                }
            }
        }
    }
}

/// Gives a claim back at once, untouched: another worker may take it now.
async fn hand_back(journal: &PgJournal, claim: &Claim) -> Result<(), PgError> {
    match claim.work {
        Work::Send { .. } => journal.not_sent(claim, Duration::ZERO).await,
        Work::Check { .. } => journal.pending(claim, Duration::ZERO, None).await,
        Work::Update { .. } => journal.update_pending(claim, Duration::ZERO, None).await,
    }
}

/// Fetches the results of an American Express update event for the job's subscriptions.
async fn update<T: Transport + Sync>(
    journal: &PgJournal,
    transport: &T,
    options: &WorkerOptions,
    config: &Config,
    claim: &Claim,
    summary: &mut WorkSummary,
) -> Result<(), PgError> {
    let Work::Update { event_id } = &claim.work else {
        return Ok(());
    };
    let later = options
        .poll_first
        .saturating_mul(1u32 << claim.checks.min(20))
        .min(options.poll_max);
    let request = match rules::update_results_request(event_id, config) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(job = %claim.job_name, event = %event_id, error = %e,
                "cannot build the update's results fetch");
            timed(
                &mut summary.journal,
                journal.update_pending(claim, later, None),
            )
            .await?;
            return Ok(());
        }
    };
    let answer = call_retried(
        journal,
        transport,
        options,
        claim,
        request,
        Idempotency::Idempotent,
        summary,
    )
    .await?;
    let what = format!("American Express update {event_id}");
    match rules::read_results(&what, answer, SystemTime::now()) {
        Ok(results) => {
            let rows = rules::update_rows(event_id, results);
            hooks::reached_by(&options.name, "before-results");
            timed(
                &mut summary.journal,
                persist(|| journal.update_completed(claim, &rows)),
            )
            .await?;
            summary.completed += 1;
            hooks::reached_by(&options.name, "recorded");
        }
        // The event stays to fetch: tried again later.
        Err(e) => {
            tracing::warn!(job = %claim.job_name, event = %event_id, error = %e,
                "update results not fetched; trying again later");
            let next = if e.key_refused {
                Duration::ZERO
            } else {
                e.retry_after.unwrap_or(later)
            };
            timed(
                &mut summary.journal,
                journal.update_pending(claim, next, e.retry_after),
            )
            .await?;
            if e.key_refused {
                summary.key_refused = Some(e.message);
            }
        }
    }
    Ok(())
}

/// The request a claim stands for, as the rules take it.
fn record_of(claim: &Claim) -> RequestRecord {
    let mut record =
        RequestRecord::new(claim.seq, claim.kind, claim.se_number.clone(), claim.cards);
    if let Work::Check {
        batch_id, event_id, ..
    } = &claim.work
    {
        record.batch_id = Some(batch_id.clone());
        record.event_id.clone_from(event_id);
    }
    record
}

/// A call, tried again as the retry policy says (a batch POST only when it certainly never
/// left; then only with half the lease left, checked again before each try).
async fn call_retried<T: Transport + Sync>(
    journal: &PgJournal,
    transport: &T,
    options: &WorkerOptions,
    claim: &Claim,
    request: http::Request<Vec<u8>>,
    idempotency: Idempotency,
    summary: &mut WorkSummary,
) -> Result<Answer, PgError> {
    let policy = RetryPolicy::default();
    let started = tokio::time::Instant::now();
    let mut attempt = 1;
    loop {
        let answer = call(
            journal,
            transport,
            options,
            claim,
            rules::clone_request(&request),
            summary,
        )
        .await;
        let Some(outcome) = rules::outcome(&answer, SystemTime::now()) else {
            return Ok(answer);
        };
        let jitter = f64::from(started.elapsed().subsec_nanos() % 1000) / 1000.0;
        match policy.decide(idempotency, attempt, started.elapsed(), outcome, jitter) {
            RetryDecision::Retry { after } => {
                tokio::time::sleep(after).await;
                attempt += 1;
                if idempotency == Idempotency::NotIdempotent {
                    timed(
                        &mut summary.journal,
                        journal.check_lease(claim, options.lease / 2),
                    )
                    .await?;
                }
            }
            _ => return Ok(answer),
        }
    }
}

async fn send<T: Transport + Sync>(
    journal: &PgJournal,
    transport: &T,
    options: &WorkerOptions,
    config: &Config,
    claim: &Claim,
    summary: &mut WorkSummary,
) -> Result<(), PgError> {
    let Work::Send { cards } = &claim.work else {
        return Ok(());
    };
    let built = rules::create_request(&record_of(claim), cards.clone(), config);
    let request = match built {
        Ok(request) => request,
        Err(e) => {
            timed(&mut summary.journal, journal.failed(claim, &e.to_string())).await?;
            summary.failed += 1;
            return Ok(());
        }
    };
    // Never start a POST with less than half the lease left: a worker paused here finds its
    // claim gone and sends nothing.
    if let Err(e) = timed(
        &mut summary.journal,
        journal.check_lease(claim, options.lease / 2),
    )
    .await
    {
        // Nothing was sent: hand the request back (unless it was taken over).
        let _ = timed(
            &mut summary.journal,
            persist(|| journal.not_sent(claim, Duration::ZERO)),
        )
        .await;
        return Err(e);
    }
    hooks::reached_by(&options.name, "before-post");
    let idempotency = rules::create_idempotency(claim.kind);
    let answer = match call_retried(
        journal,
        transport,
        options,
        claim,
        request,
        idempotency,
        summary,
    )
    .await
    {
        Ok(answer) => answer,
        // The lease ran short between tries of a POST that never left: nothing was sent.
        Err(e) => {
            let _ = timed(
                &mut summary.journal,
                persist(|| journal.not_sent(claim, Duration::ZERO)),
            )
            .await;
            return Err(e);
        }
    };
    hooks::reached_by(&options.name, "after-post");
    let created = rules::read_create(claim.kind, &answer, SystemTime::now());
    tracing::debug!(job = %claim.job_name, request = claim.seq, answer = ?created, "posted");
    match created {
        Created::Batch(batch_id) => {
            timed(
                &mut summary.journal,
                persist(|| journal.sent(claim, &batch_id, options.poll_first)),
            )
            .await?;
            summary.sent += 1;
        }
        Created::Subscribed => {
            timed(&mut summary.journal, persist(|| journal.subscribed(claim))).await?;
            summary.sent += 1;
        }
        Created::Refused(message) => {
            timed(
                &mut summary.journal,
                persist(|| journal.failed(claim, &message)),
            )
            .await?;
            summary.failed += 1;
        }
        Created::KeyRefused(message) => {
            // Nothing was created: the request goes back, unsent, and this worker stops.
            tracing::error!(job = %claim.job_name, request = claim.seq, error = %message,
                "the API key was refused; stopping");
            timed(
                &mut summary.journal,
                persist(|| journal.not_sent(claim, Duration::ZERO)),
            )
            .await?;
            summary.key_refused = Some(message);
        }
        Created::NotSent(_) => {
            timed(
                &mut summary.journal,
                persist(|| {
                    journal.not_sent(claim, options.poll_first.max(Duration::from_millis(500)))
                }),
            )
            .await?;
        }
        Created::Unconfirmed {
            message,
            retry_after,
        } => {
            timed(
                &mut summary.journal,
                persist(|| journal.unconfirmed(claim, &message, retry_after)),
            )
            .await?;
            if claim.kind == RequestKind::Batch {
                summary.unconfirmed += 1;
            }
        }
        // Future outcomes: treated as the one that may have created something.
        _ => {
            timed(
                &mut summary.journal,
                persist(|| journal.unconfirmed(claim, "an answer this worker cannot read", None)),
            )
            .await?;
            summary.unconfirmed += 1;
        }
    }
    hooks::reached_by(&options.name, "recorded");
    Ok(())
}

async fn check<T: Transport + Sync>(
    journal: &PgJournal,
    transport: &T,
    options: &WorkerOptions,
    config: &Config,
    claim: &Claim,
    summary: &mut WorkSummary,
) -> Result<(), PgError> {
    let Work::Check {
        batch_id,
        event_id,
        ready,
    } = &claim.work
    else {
        return Ok(());
    };
    let later = |checks: u32| {
        options
            .poll_first
            .saturating_mul(1u32 << checks.min(20))
            .min(options.poll_max)
    };
    if !ready {
        let Some(request) = encoded_or_failed(
            journal,
            claim,
            summary,
            rules::status_request(batch_id, config),
        )
        .await?
        else {
            return Ok(());
        };
        let answer = call_retried(
            journal,
            transport,
            options,
            claim,
            request,
            Idempotency::Idempotent,
            summary,
        )
        .await?;
        match rules::read_status(batch_id, &answer, SystemTime::now()) {
            Status::Complete => {}
            Status::Failed(message) => {
                timed(&mut summary.journal, journal.batch_failed(claim, &message)).await?;
                summary.failed += 1;
                return Ok(());
            }
            Status::KeyRefused(message) => {
                tracing::error!(job = %claim.job_name, request = claim.seq, error = %message,
                    "the API key was refused; stopping");
                timed(
                    &mut summary.journal,
                    journal.pending(claim, Duration::ZERO, None),
                )
                .await?;
                summary.key_refused = Some(message);
                return Ok(());
            }
            Status::TryLater {
                retry_after: Some(hold_off),
                ..
            } => {
                timed(
                    &mut summary.journal,
                    journal.pending(claim, hold_off, Some(hold_off)),
                )
                .await?;
                return Ok(());
            }
            _ => {
                timed(
                    &mut summary.journal,
                    journal.pending(claim, later(claim.checks), None),
                )
                .await?;
                return Ok(());
            }
        }
    }
    let Some(request) = encoded_or_failed(
        journal,
        claim,
        summary,
        rules::results_request(batch_id, event_id.as_deref(), config),
    )
    .await?
    else {
        return Ok(());
    };
    let answer = call_retried(
        journal,
        transport,
        options,
        claim,
        request,
        Idempotency::Idempotent,
        summary,
    )
    .await?;
    let results = match rules::read_results(&format!("batch {batch_id}"), answer, SystemTime::now())
    {
        Ok(results) => results,
        // The results exist (the batch is complete): tried again later, with the status
        // check first; never a failed request, whose results would be lost.
        Err(e) => {
            tracing::warn!(job = %claim.job_name, request = claim.seq, error = %e,
                "results not fetched; trying again later");
            let hold_off = e.retry_after;
            let next = if e.key_refused {
                Duration::ZERO
            } else {
                hold_off.unwrap_or(later(claim.checks))
            };
            timed(&mut summary.journal, journal.pending(claim, next, hold_off)).await?;
            if e.key_refused {
                summary.key_refused = Some(e.message);
            }
            return Ok(());
        }
    };
    // The old last four digits of changed cards come from the cards as sent.
    let sent = if rules::needs_cards(&results) {
        Some(timed(&mut summary.journal, journal.cards(claim)).await?)
    } else {
        None
    };
    let rows = rules::batch_rows(&record_of(claim), results, sent.as_deref());
    hooks::reached_by(&options.name, "before-results");
    timed(
        &mut summary.journal,
        persist(|| journal.completed(claim, &rows)),
    )
    .await?;
    summary.completed += 1;
    hooks::reached_by(&options.name, "recorded");
    Ok(())
}

/// Awaits `f`, adding the time it took to `spent`.
async fn timed<F: Future>(spent: &mut Duration, f: F) -> F::Output {
    let started = tokio::time::Instant::now();
    let out = f.await;
    *spent += started.elapsed();
    out
}

/// The encoded request; or, when it could not be built, the request failed (recorded, and
/// counted) and `None`.
async fn encoded_or_failed(
    journal: &PgJournal,
    claim: &Claim,
    summary: &mut WorkSummary,
    encoded: Result<http::Request<Vec<u8>>, cardsync_proto::EncodeError>,
) -> Result<Option<http::Request<Vec<u8>>>, PgError> {
    match encoded {
        Ok(request) => Ok(Some(request)),
        Err(e) => {
            let message = format!("cannot build the request: {e}");
            timed(&mut summary.journal, journal.failed(claim, &message)).await?;
            summary.failed += 1;
            Ok(None)
        }
    }
}
