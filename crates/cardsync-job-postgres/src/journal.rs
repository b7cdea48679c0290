//! [`PgJournal`]: jobs, their requests and cards, claims with leases and fencing tokens,
//! webhook events, status, decisions, export and erasure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cardsync_job::rules::Rows;
use cardsync_job::{
    Change, Changes, Checkpoint, RequestKind, RequestRecord, RequestState, Sink, SinkError,
    StoredCard,
};
use cardsync_job::{Decision, Unconfirmed};
use deadpool_postgres::{Object, Pool};
use ring::hmac;
use tokio_postgres::types::ToSql;

use crate::crypto::{JournalKey, KeyError, hex};
use crate::{PgError, codec, connect, schema};

/// How many cards or results go in one statement.
const CHUNK: usize = 2_000;

/// A job's number in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

/// What a new job is: its name, where workers find the merchant key, where to send.
///
/// ```
/// use cardsync_job_postgres::JobSpec;
/// let spec = JobSpec::new("nightly", "CARDSYNC_API_KEY", "https://sandbox.cardsync.io/").with_max_in_flight(8);
/// assert_eq!(spec.max_in_flight, 8);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobSpec {
    /// The job's name, unique in the journal.
    pub name: String,
    /// The environment variable every worker reads the merchant key from.
    pub key_env: String,
    /// The CardSync base URL.
    pub base_url: String,
    /// At most this many requests of the merchant under way at once, over all workers.
    pub max_in_flight: u32,
}

impl JobSpec {
    /// A job named `name`, whose workers read the merchant key from `key_env` and send to
    /// `base_url`; at most 4 requests of its merchant under way at once.
    pub fn new(
        name: impl Into<String>,
        key_env: impl Into<String>,
        base_url: impl Into<String>,
    ) -> JobSpec {
        JobSpec {
            name: name.into(),
            key_env: key_env.into(),
            base_url: base_url.into(),
            max_in_flight: 4,
        }
    }

    /// With another per-merchant limit (at least 1).
    pub fn with_max_in_flight(mut self, n: u32) -> JobSpec {
        self.max_in_flight = n.max(1);
        self
    }
}

/// Which jobs a worker works on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Every open job.
    #[default]
    All,
    /// The open jobs of these names.
    Jobs(Vec<String>),
}

impl Scope {
    /// The job names it is limited to (`None`: every job), as the queries take them.
    fn names(&self) -> Option<Vec<String>> {
        match self {
            Scope::All => None,
            Scope::Jobs(names) => Some(names.clone()),
        }
    }
}

/// What a claimed request needs.
#[derive(Debug)]
#[non_exhaustive]
pub enum Work {
    /// Its POST: it is now `sending`.
    Send {
        /// Its cards, in row order.
        cards: Vec<StoredCard>,
    },
    /// The results of an American Express update event for the job's subscriptions (the
    /// claim's `seq` is 0 and its `kind` a subscription).
    Update {
        /// The event.
        event_id: String,
    },
    /// Its batch's status, then its results once complete.
    Check {
        /// The batch.
        batch_id: String,
        /// The webhook event that said its results are ready, if one did.
        event_id: Option<String>,
        /// Whether a webhook said so.
        ready: bool,
    },
}

/// A request claimed by a worker: the right to write what became of it, while `epoch` is its
/// fencing token. `Debug` shows no card.
#[derive(Debug)]
#[non_exhaustive]
pub struct Claim {
    /// The job.
    pub job: JobId,
    /// The job's name.
    pub job_name: String,
    /// The request.
    pub seq: u64,
    /// Batch or subscription.
    pub kind: RequestKind,
    /// The SE number of a subscription.
    pub se_number: Option<String>,
    /// The fencing token.
    pub epoch: i64,
    /// How many status checks found its batch pending so far.
    pub checks: u32,
    /// Who claimed it.
    pub worker: String,
    /// Where to read the merchant key.
    pub key_env: String,
    /// The merchant's fingerprint.
    pub merchant: String,
    /// The CardSync base URL the job was created for (a worker sends only to its own, and
    /// leaves jobs made for another alone).
    pub base_url: String,
    /// How many cards the request holds.
    pub cards: u64,
    /// The version of its sealed cards and results.
    pub version: i64,
    /// What it needs.
    pub work: Work,
}

/// An open job, as a worker chooses its work: checked against its authentication when the
/// journal holds its key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenJob {
    /// The job's name.
    pub name: String,
    /// The environment variable its merchant key is read from.
    pub key_env: String,
    /// Its merchant's fingerprint.
    pub merchant: String,
    /// The CardSync base URL it was created for.
    pub base_url: String,
    /// The id of the journal key it is sealed under.
    pub key_id: String,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Being planned: no worker takes its requests yet.
    #[default]
    Planning,
    /// Planned: workers work on it.
    Open,
    /// Its results were exported, and its cards and results erased.
    Exported,
    /// Abandoned, its cards and results erased.
    Abandoned,
}

impl JobState {
    /// The state's word, as the journal keeps it.
    ///
    /// ```
    /// use cardsync_job_postgres::JobState;
    /// assert_eq!(JobState::parse("open"), Some(JobState::Open));
    /// assert_eq!(JobState::Open.as_str(), "open");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Planning => "planning",
            JobState::Open => "open",
            JobState::Exported => "exported",
            JobState::Abandoned => "abandoned",
        }
    }

    /// The state named by [`JobState::as_str`].
    pub fn parse(word: &str) -> Option<JobState> {
        [
            JobState::Planning,
            JobState::Open,
            JobState::Exported,
            JobState::Abandoned,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStatus {
    /// The job's name.
    pub name: String,
    /// Where it is in its life.
    pub state: JobState,
    /// Input rows read.
    pub rows: u64,
    /// Rows rejected.
    pub invalid: u64,
    /// Duplicate rows left out.
    pub duplicates: u64,
    /// Requests per state.
    pub requests: BTreeMap<String, u64>,
    /// Cards per request state.
    pub cards: BTreeMap<String, u64>,
    /// Result rows per status.
    pub results: BTreeMap<String, u64>,
    /// Requests under way now (claimed by a live worker).
    pub in_flight: u64,
    /// Requests that wait for a decision.
    pub unconfirmed: Vec<Unconfirmed>,
    /// American Express update events whose results are still to fetch.
    pub updates_pending: u64,
    /// American Express update events whose results were fetched.
    pub updates_done: u64,
    /// Batch requests.
    pub batches: u64,
    /// Subscription requests.
    pub subscriptions: u64,
    /// Requests that failed, with why.
    pub failed: Vec<(u64, String)>,
}

impl JobStatus {
    /// The job's summary, in the words and shape of the single-machine job's
    /// ([`cardsync_job::Summary`]): one machine or many, the same summary.
    pub fn summary(&self) -> cardsync_job::Summary {
        let tally: BTreeMap<String, i64> = self
            .results
            .iter()
            .map(|(s, n)| (s.clone(), i64::try_from(*n).unwrap_or(i64::MAX)))
            .collect();
        let mut summary = cardsync_job::Summary::of_tally(&tally);
        summary.done = self.state == JobState::Exported;
        summary.rows = self.rows;
        summary.invalid_rows = self.invalid;
        summary.requests = usize::try_from(self.batches + self.subscriptions).unwrap_or(usize::MAX);
        summary.batches = usize::try_from(self.batches).unwrap_or(usize::MAX);
        summary.subscriptions = usize::try_from(self.subscriptions).unwrap_or(usize::MAX);
        summary.unconfirmed = self.unconfirmed.iter().map(|u| u.seq).collect();
        summary.failed.clone_from(&self.failed);
        summary
    }
}

impl JobStatus {
    /// Whether every request is final (done, failed or abandoned), and every American
    /// Express update recorded for the job fetched.
    pub fn finished(&self) -> bool {
        self.updates_pending == 0
            && self.requests.iter().all(|(state, n)| {
                *n == 0 || RequestState::parse(state).is_some_and(|s| s.is_final())
            })
    }
}

/// The journal's keys: the current one, and while a rotation runs, the previous one.
struct Keys {
    current: JournalKey,
    old: Option<JournalKey>,
}

impl Keys {
    fn all(&self) -> impl Iterator<Item = &JournalKey> {
        std::iter::once(&self.current).chain(&self.old)
    }

    /// The key whose id is `id`.
    fn by_id(&self, id: &str) -> Option<&JournalKey> {
        self.all().find(|k| k.id() == id)
    }

    /// The key that sealed `sealed` (the current one when neither did: opening then fails
    /// with the sealing key's id).
    fn for_sealed(&self, sealed: &[u8]) -> &JournalKey {
        self.all()
            .find(|k| k.sealed_by(sealed))
            .unwrap_or(&self.current)
    }
}

/// The journal: a pool of connections, the keys that seal card numbers and authenticate rows,
/// and the merchant identity key.
#[derive(Clone)]
pub struct PgJournal {
    pool: Pool,
    keys: Arc<Keys>,
    /// Makes merchant fingerprints: kept sealed in the journal, so that it outlives rotations.
    identity: Arc<hmac::Key>,
    /// How many dropped connections this journal's pool has been purged for.
    purged: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal")
            .field("key", &self.keys.current)
            .field("old_key", &self.keys.old)
            .finish_non_exhaustive()
    }
}

/// `None` and `Some` told apart in an authenticated field.
fn opt(value: Option<&str>) -> Vec<u8> {
    match value {
        None => vec![0],
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(1);
            out.extend_from_slice(v.as_bytes());
            out
        }
    }
}

/// What authenticates a job's row: what decides whose key its requests go with, and where.
struct JobFacts<'a> {
    job: JobId,
    name: &'a str,
    merchant: &'a str,
    key_env: &'a str,
    base_url: &'a str,
    max_in_flight: i32,
    state: &'a str,
}

impl JobFacts<'_> {
    fn fields(&self) -> [Vec<u8>; 8] {
        [
            b"job v1".to_vec(),
            self.job.0.to_be_bytes().to_vec(),
            self.name.as_bytes().to_vec(),
            self.merchant.as_bytes().to_vec(),
            self.key_env.as_bytes().to_vec(),
            self.base_url.as_bytes().to_vec(),
            self.max_in_flight.to_be_bytes().to_vec(),
            self.state.as_bytes().to_vec(),
        ]
    }

    fn mac(&self, key: &JournalKey) -> Vec<u8> {
        let fields = self.fields();
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        key.authenticate(&refs)
    }

    /// Checks the row's tag.
    fn verify(&self, key: &JournalKey, tag: Option<&[u8]>) -> Result<(), PgError> {
        let fields = self.fields();
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        match tag {
            Some(tag) if key.verify(&refs, tag) => Ok(()),
            Some(_) => Err(PgError::Tampered {
                job: self.name.to_owned(),
                what: "its row (merchant, key variable, base URL, limit or state) does not match \
                       its authentication"
                    .into(),
            }),
            None => Err(PgError::Tampered {
                job: self.name.to_owned(),
                what: "its row carries no authentication".into(),
            }),
        }
    }
}

/// What authenticates a request's row: what decides what is sent, and whether it may be.
#[derive(Clone, Debug)]
struct RequestFacts {
    job: JobId,
    seq: u64,
    kind: RequestKind,
    se_number: Option<String>,
    cards: i32,
    state: String,
    batch_id: Option<String>,
    version: i64,
}

impl RequestFacts {
    fn fields(&self) -> [Vec<u8>; 9] {
        [
            b"request v1".to_vec(),
            self.job.0.to_be_bytes().to_vec(),
            self.seq.to_be_bytes().to_vec(),
            self.kind.as_str().as_bytes().to_vec(),
            opt(self.se_number.as_deref()),
            self.cards.to_be_bytes().to_vec(),
            self.state.as_bytes().to_vec(),
            opt(self.batch_id.as_deref()),
            self.version.to_be_bytes().to_vec(),
        ]
    }

    fn mac(&self, key: &JournalKey) -> Vec<u8> {
        let fields = self.fields();
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        key.authenticate(&refs)
    }

    fn verify(&self, key: &JournalKey, job: &str, tag: Option<&[u8]>) -> Result<(), PgError> {
        let fields = self.fields();
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        match tag {
            Some(tag) if key.verify(&refs, tag) => Ok(()),
            _ => Err(PgError::Tampered {
                job: job.to_owned(),
                what: format!(
                    "request {} ({}, batch {}) does not match its authentication",
                    self.seq,
                    self.state,
                    self.batch_id.as_deref().unwrap_or("none")
                ),
            }),
        }
    }

    /// The same request in another state (and with a batch id, when it has one).
    fn moved(&self, state: &str, batch_id: Option<&str>) -> RequestFacts {
        RequestFacts {
            state: state.to_owned(),
            batch_id: batch_id.map(str::to_owned),
            ..self.clone()
        }
    }

    /// Reads the facts from a row with the columns `seq, kind, se_number, cards, state,
    /// batch_id, version` at `at`, `at + 1`, ….
    fn from_row(job: JobId, row: &tokio_postgres::Row, at: usize) -> Result<RequestFacts, PgError> {
        Ok(RequestFacts {
            job,
            seq: u64::try_from(row.get::<_, i32>(at)).unwrap_or(0),
            kind: RequestKind::parse(row.get::<_, &str>(at + 1))
                .ok_or_else(|| PgError::Corrupt("a request of an unknown kind".into()))?,
            se_number: row.get(at + 2),
            cards: row.get(at + 3),
            state: row.get(at + 4),
            batch_id: row.get(at + 5),
            version: row.get(at + 6),
        })
    }
}

/// The columns [`RequestFacts::from_row`] reads.
const FACTS: &str = "seq, kind, se_number, cards, state, batch_id, version";

/// What authenticates an update's row.
fn update_fields(job: JobId, event_id: &str, state: &str) -> [Vec<u8>; 4] {
    [
        b"update v1".to_vec(),
        job.0.to_be_bytes().to_vec(),
        event_id.as_bytes().to_vec(),
        state.as_bytes().to_vec(),
    ]
}

fn update_mac(key: &JournalKey, job: JobId, event_id: &str, state: &str) -> Vec<u8> {
    let fields = update_fields(job, event_id, state);
    let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
    key.authenticate(&refs)
}

/// The associated data of an update's sealed results.
fn update_aad(job: JobId, event_id: &str) -> Vec<u8> {
    format!("update/{}/{event_id}", job.0).into_bytes()
}

/// The associated data of a request's sealed values: its job, its number and its version.
fn sealed_aad(what: &str, job: JobId, seq: u64, version: i64) -> Vec<u8> {
    format!("{what}/{}/{seq}/v{version}", job.0).into_bytes()
}

fn seq_i32(seq: u64) -> i32 {
    i32::try_from(seq).unwrap_or(i32::MAX)
}

fn cards_aad(job: JobId, seq: u64, version: i64) -> Vec<u8> {
    sealed_aad("cards", job, seq, version)
}

fn results_aad(job: JobId, seq: u64, version: i64) -> Vec<u8> {
    sealed_aad("results", job, seq, version)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `read` (which changes nothing) a second time if the database had dropped the connection
/// it used: the loss is noted, and the pool lets go of its other old connections first.
async fn read_again_if_lost<T, F, Fut>(read: F) -> Result<T, PgError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, PgError>>,
{
    match read().await {
        Err(PgError::Database(e)) if connect::is_lost(&e) => read().await,
        other => other,
    }
}

impl PgJournal {
    /// Connects (a pool of up to 16 connections) and applies the migrations the database
    /// lacks.
    ///
    /// # Errors
    ///
    /// [`PgError::Config`] for a URL that cannot be used, [`PgError::Pool`] /
    /// [`PgError::Database`] when the database cannot be reached, [`PgError::NewerSchema`].
    pub async fn connect(url: &str, key: JournalKey) -> Result<PgJournal, PgError> {
        PgJournal::connect_with(url, key, 16).await
    }

    /// [`PgJournal::connect`] with a pool of `size` connections.
    ///
    /// # Errors
    ///
    /// As [`PgJournal::connect`].
    pub async fn connect_with(
        url: &str,
        key: JournalKey,
        size: usize,
    ) -> Result<PgJournal, PgError> {
        PgJournal::connect_with_keys(url, key, None, size).await
    }

    /// [`PgJournal::connect_with`], holding also the previous key while a rotation runs: values
    /// sealed under either open, and each job's values are sealed under the key its job is
    /// under, so that a worker keeps working through [`PgJournal::rotate_from`] run elsewhere.
    ///
    /// # Errors
    ///
    /// As [`PgJournal::connect`]; [`PgError::Key`] when the journal's merchant identity key is
    /// sealed under neither key.
    pub async fn connect_with_keys(
        url: &str,
        key: JournalKey,
        old: Option<JournalKey>,
        size: usize,
    ) -> Result<PgJournal, PgError> {
        let pool = connect::pool(url, size.max(1))?;
        let keys = Keys { current: key, old };
        let purged = Arc::default();
        let mut client = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::from(e),
            other => PgError::Pool(other.to_string()),
        })?;
        schema::migrate(&mut client).await?;
        let identity = load_identity(&client, &keys).await?;
        drop(client);
        Ok(PgJournal {
            pool,
            keys: Arc::new(keys),
            identity: Arc::new(identity),
            purged,
        })
    }

    async fn client(&self) -> Result<Object, PgError> {
        connect::purge_if_lost(&self.pool, &self.purged);
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::from(e),
            other => PgError::Pool(other.to_string()),
        })
    }

    /// The key that seals the cards of new jobs (the current one).
    pub fn key(&self) -> &JournalKey {
        &self.keys.current
    }

    /// The key job rows name by `key_id`, or [`PgError::KeyRotated`].
    fn key_for(&self, job: &str, key_id: &str) -> Result<&JournalKey, PgError> {
        self.keys.by_id(key_id).ok_or_else(|| PgError::KeyRotated {
            job: job.to_owned(),
            key_id: key_id.to_owned(),
        })
    }

    /// Opens a value sealed under any of the journal's keys.
    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, PgError> {
        Ok(self.keys.for_sealed(sealed).open(sealed, aad)?)
    }

    /// The fingerprint that stands for a merchant key in the journal (keyed with the journal's
    /// merchant identity key, which the database never sees and which outlives key rotations:
    /// the merchant key cannot be learned from it).
    pub fn merchant_fingerprint(&self, merchant_key: &str) -> String {
        let mut data = b"merchant\0".to_vec();
        data.extend_from_slice(merchant_key.as_bytes());
        hex(&hmac::sign(&self.identity, &data).as_ref()[..16])
    }

    /// The job's key, checked under a lock that [`PgJournal::rotate_from`] conflicts with
    /// (`FOR KEY SHARE` of the job's row, held until `tx` ends): what is sealed or
    /// authenticated in `tx` is under the key the job is under when it commits.
    async fn job_key_locked(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        job: JobId,
    ) -> Result<&JournalKey, PgError> {
        let row = tx
            .query_opt(
                "SELECT name, key_id FROM cardsync_jobs WHERE job_id = $1 FOR KEY SHARE",
                &[&job.0],
            )
            .await?
            .ok_or_else(|| PgError::State(format!("job {} is gone", job.0)))?;
        let (name, key_id): (String, String) = (row.get(0), row.get(1));
        self.key_for(&name, &key_id)
    }

    async fn job_id(&self, client: &Object, name: &str) -> Result<JobId, PgError> {
        client
            .query_opt("SELECT job_id FROM cardsync_jobs WHERE name = $1", &[&name])
            .await?
            .map(|r| JobId(r.get(0)))
            .ok_or_else(|| PgError::NoSuchJob(name.to_owned()))
    }

    // ---- planning ----

    /// Starts a job: state `planning` until [`PgJournal::finish_plan`]. A job of that name
    /// left planning by a creator that stopped (nothing stored for a minute) is discarded and
    /// started again: nothing of it was sent.
    ///
    /// # Errors
    ///
    /// [`PgError::JobExists`] when a job of that name was planned already, or is being
    /// planned by another process.
    pub async fn create_job(&self, spec: &JobSpec, merchant_key: &str) -> Result<JobId, PgError> {
        let merchant = self.merchant_fingerprint(merchant_key);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(row) = tx
            .query_opt(
                "SELECT job_id, state, touched_at > now() - interval '60 seconds'
                 FROM cardsync_jobs WHERE name = $1 FOR UPDATE",
                &[&spec.name],
            )
            .await?
        {
            let (id, state, live): (i64, String, bool) = (row.get(0), row.get(1), row.get(2));
            if state != "planning" || live {
                return Err(PgError::JobExists(spec.name.clone()));
            }
            tx.execute("DELETE FROM cardsync_jobs WHERE job_id = $1", &[&id])
                .await?;
        }
        let limit = i32::try_from(spec.max_in_flight).unwrap_or(i32::MAX);
        let inserted = tx
            .query_one(
                "INSERT INTO cardsync_jobs (name, merchant, key_env, base_url, key_id, max_in_flight)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING job_id",
                &[&spec.name, &merchant, &spec.key_env, &spec.base_url, &self.key().id(), &limit],
            )
            .await;
        let id = match inserted {
            Ok(row) => JobId(row.get(0)),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                return Err(PgError::JobExists(spec.name.clone()));
            }
            Err(e) => return Err(e.into()),
        };
        let facts = JobFacts {
            job: id,
            name: &spec.name,
            merchant: &merchant,
            key_env: &spec.key_env,
            base_url: &spec.base_url,
            max_in_flight: limit,
            state: "planning",
        };
        tx.execute(
            "UPDATE cardsync_jobs SET mac = $2 WHERE job_id = $1",
            &[&id.0, &facts.mac(self.key())],
        )
        .await?;
        tx.execute(
            "INSERT INTO cardsync_merchants (merchant) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&merchant],
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Adds a planned request and its cards (sealed). A card already in the job (by keyed
    /// fingerprint: the same number and SE number) is left out; the rows left out are
    /// returned. A request left with no card is not added.
    ///
    /// # Errors
    ///
    /// [`PgError::State`] when the job is not being planned.
    pub async fn add_request(
        &self,
        job: JobId,
        request: &RequestRecord,
        cards: &[StoredCard],
    ) -> Result<Vec<u64>, PgError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let planning: Option<(String, String)> = tx
            .query_opt(
                "UPDATE cardsync_jobs SET touched_at = now()
                 WHERE job_id = $1 AND state = 'planning' RETURNING merchant, key_id",
                &[&job.0],
            )
            .await?
            .map(|r| (r.get(0), r.get(1)));
        let Some((merchant, key_id)) = planning else {
            return Err(PgError::State(
                "the job is not being planned (another create replaced it, or it was planned already)".into(),
            ));
        };
        if key_id != self.key().id() {
            return Err(PgError::KeyRotated {
                job: format!("#{}", job.0),
                key_id,
            });
        }
        let seq = seq_i32(request.seq);
        tx.execute(
            "INSERT INTO cardsync_requests (job_id, seq, merchant, kind, se_number, cards, state)
             VALUES ($1, $2, $3, $4, $5, 0, 'planned')",
            &[
                &job.0,
                &seq,
                &merchant,
                &request.kind.as_str(),
                &request.se_number,
            ],
        )
        .await?;
        // The duplicate check, by keyed fingerprint (the number and the SE number).
        let mut inserted = std::collections::HashSet::new();
        for chunk in cards.chunks(CHUNK) {
            let mut rows = Vec::with_capacity(chunk.len());
            let mut prints = Vec::with_capacity(chunk.len());
            for c in chunk {
                rows.push(i64::try_from(c.row).unwrap_or(i64::MAX));
                prints.push(self.card_fingerprint(c).to_vec());
            }
            let params: [&(dyn ToSql + Sync); 4] = [&job.0, &seq, &rows, &prints];
            for r in tx
                .query(
                    "INSERT INTO cardsync_fingerprints (job_id, seq, row_no, fingerprint)
                     SELECT $1, $2, * FROM unnest($3::bigint[], $4::bytea[])
                     ON CONFLICT (job_id, fingerprint) DO NOTHING
                     RETURNING row_no",
                    &params,
                )
                .await?
            {
                inserted.insert(r.get::<_, i64>(0) as u64);
            }
        }
        let kept: Vec<StoredCard> = cards
            .iter()
            .filter(|c| inserted.contains(&c.row))
            .cloned()
            .collect();
        let count = i32::try_from(kept.len()).unwrap_or(i32::MAX);
        if kept.is_empty() {
            tx.execute(
                "DELETE FROM cardsync_requests WHERE job_id = $1 AND seq = $2",
                &[&job.0, &seq],
            )
            .await?;
        } else {
            let sealed = self
                .key()
                .seal(&codec::encode_cards(&kept), &cards_aad(job, request.seq, 0))?;
            let facts = RequestFacts {
                job,
                seq: request.seq,
                kind: request.kind,
                se_number: request.se_number.clone(),
                cards: count,
                state: "planned".to_owned(),
                batch_id: None,
                version: 0,
            };
            tx.execute(
                "UPDATE cardsync_requests SET cards = $3, mac = $4 WHERE job_id = $1 AND seq = $2",
                &[&job.0, &seq, &count, &facts.mac(self.key())],
            )
            .await?;
            tx.execute(
                "INSERT INTO cardsync_card_sets (job_id, seq, cards) VALUES ($1, $2, $3)",
                &[&job.0, &seq, &sealed],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(cards
            .iter()
            .map(|c| c.row)
            .filter(|r| !inserted.contains(r))
            .collect())
    }

    /// The keyed fingerprint of a card (its number and SE number).
    fn card_fingerprint(&self, c: &StoredCard) -> [u8; 32] {
        let mut print = zeroize::Zeroizing::new(c.pan.expose().as_str().as_bytes().to_vec());
        print.push(0);
        print.extend_from_slice(c.se_number.as_ref().map_or("", |s| s.as_str()).as_bytes());
        self.key().fingerprint(&print)
    }

    /// Applies the planning changes of a [`cardsync_job::PlanRecorder`] (requests added, rows
    /// taken out; its other changes are the single-machine journal's bookkeeping): the rows
    /// left out as duplicates by their fingerprint.
    ///
    /// # Errors
    ///
    /// [`PgError::State`] when the job is not being planned.
    pub async fn apply_plan(&self, job: JobId, changes: &Changes) -> Result<Vec<u64>, PgError> {
        let mut duplicates = Vec::new();
        for change in changes.items() {
            match change {
                Change::AddRequest { request, cards } => {
                    duplicates.extend(self.add_request(job, request, cards).await?);
                }
                Change::RemoveRows { rows } => self.remove_rows(job, rows).await?,
                _ => {}
            }
        }
        Ok(duplicates)
    }

    /// Takes the cards of these input rows out of the plan (duplicates found after
    /// planning); a request left with none is deleted.
    ///
    /// # Errors
    ///
    /// [`PgError::State`] when the job is not being planned.
    pub async fn remove_rows(&self, job: JobId, rows: &[u64]) -> Result<(), PgError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let planning: Option<String> = tx
            .query_opt(
                "SELECT key_id FROM cardsync_jobs WHERE job_id = $1 AND state = 'planning'
                 FOR UPDATE",
                &[&job.0],
            )
            .await?
            .map(|r| r.get(0));
        match planning {
            None => return Err(PgError::State("the job is not being planned".into())),
            Some(key_id) if key_id != self.key().id() => {
                return Err(PgError::KeyRotated {
                    job: format!("#{}", job.0),
                    key_id,
                });
            }
            Some(_) => {}
        }
        let rows: Vec<i64> = rows.iter().map(|r| *r as i64).collect();
        let gone: std::collections::HashSet<u64> = rows.iter().map(|r| *r as u64).collect();
        let touched: Vec<i32> = tx
            .query(
                "DELETE FROM cardsync_fingerprints WHERE job_id = $1 AND row_no = ANY($2)
                 RETURNING seq",
                &[&job.0, &rows],
            )
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect::<std::collections::BTreeSet<i32>>()
            .into_iter()
            .collect();
        for seq in touched {
            let row = tx
                .query_one(
                    "SELECT c.cards, r.mac, r.seq, r.kind, r.se_number, r.cards, r.state,
                            r.batch_id, r.version
                     FROM cardsync_card_sets c JOIN cardsync_requests r USING (job_id, seq)
                     WHERE c.job_id = $1 AND c.seq = $2 FOR UPDATE",
                    &[&job.0, &seq],
                )
                .await?;
            let sealed: Vec<u8> = row.get(0);
            let facts = RequestFacts::from_row(job, &row, 2)?;
            facts.verify(self.key(), &format!("#{}", job.0), row.get(1))?;
            let aad = cards_aad(job, seq as u64, facts.version);
            let plain = self.key().open(&sealed, &aad)?;
            let kept: Vec<StoredCard> = codec::decode_cards(&plain)
                .map_err(PgError::Corrupt)?
                .into_iter()
                .filter(|c| !gone.contains(&c.row))
                .collect();
            if kept.is_empty() {
                tx.execute(
                    "DELETE FROM cardsync_requests WHERE job_id = $1 AND seq = $2",
                    &[&job.0, &seq],
                )
                .await?;
                continue;
            }
            // A new version: the card set before this one no longer opens for the request.
            let count = i32::try_from(kept.len()).unwrap_or(i32::MAX);
            let next = RequestFacts {
                cards: count,
                version: facts.version + 1,
                ..facts
            };
            let sealed = self.key().seal(
                &codec::encode_cards(&kept),
                &cards_aad(job, seq as u64, next.version),
            )?;
            tx.execute(
                "UPDATE cardsync_card_sets SET cards = $3 WHERE job_id = $1 AND seq = $2",
                &[&job.0, &seq, &sealed],
            )
            .await?;
            tx.execute(
                "UPDATE cardsync_requests SET cards = $3, version = $4, mac = $5
                 WHERE job_id = $1 AND seq = $2",
                &[&job.0, &seq, &count, &next.version, &next.mac(self.key())],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends planning: the job is open to workers.
    ///
    /// # Errors
    ///
    /// [`PgError::State`] when the job is not being planned.
    pub async fn finish_plan(
        &self,
        job: JobId,
        rows: u64,
        invalid: u64,
        duplicates: u64,
    ) -> Result<(), PgError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        self.move_job(&tx, job, Some("planning"), "open").await?;
        tx.execute(
            "UPDATE cardsync_jobs SET rows = $2, invalid = $3, duplicates = $4, planned_at = now()
             WHERE job_id = $1",
            &[
                &job.0,
                &(rows as i64),
                &(invalid as i64),
                &(duplicates as i64),
            ],
        )
        .await?;
        tx.commit().await?;
        // The duplicate check is over: its fingerprints go.
        client
            .execute(
                "DELETE FROM cardsync_fingerprints WHERE job_id = $1",
                &[&job.0],
            )
            .await?;
        Ok(())
    }

    /// Moves job `job` from state `from` (any state when `None`) to `to`: its row's
    /// authentication is checked, and the new state authenticated under the job's key. The
    /// row stays locked until `tx` ends.
    async fn move_job(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        job: JobId,
        from: Option<&str>,
        to: &str,
    ) -> Result<(), PgError> {
        let row = tx
            .query_opt(
                "SELECT name, merchant, key_env, base_url, max_in_flight, state, key_id, mac
                 FROM cardsync_jobs WHERE job_id = $1 FOR UPDATE",
                &[&job.0],
            )
            .await?
            .ok_or_else(|| PgError::State(format!("job {} is gone", job.0)))?;
        let state: String = row.get(5);
        if let Some(from) = from
            && state != from
        {
            return Err(PgError::State(if from == "planning" {
                "the job is not being planned".to_owned()
            } else {
                format!("the job is {state}, not {from}")
            }));
        }
        let name: String = row.get(0);
        let key_id: String = row.get(6);
        let (merchant, key_env, base_url): (String, String, String) =
            (row.get(1), row.get(2), row.get(3));
        let facts = JobFacts {
            job,
            name: &name,
            merchant: &merchant,
            key_env: &key_env,
            base_url: &base_url,
            max_in_flight: row.get(4),
            state: &state,
        };
        let key = self.key_for(&name, &key_id)?;
        facts.verify(key, row.get(7))?;
        let moved = JobFacts { state: to, ..facts };
        tx.execute(
            "UPDATE cardsync_jobs SET state = $2, mac = $3 WHERE job_id = $1",
            &[&job.0, &to, &moved.mac(key)],
        )
        .await?;
        Ok(())
    }

    // ---- claims ----

    /// Claims the next request that needs work in `scope`, for `worker`, for `ttl`: a batch
    /// whose results a webhook announced or whose next status check is due first, then a
    /// planned request (moved to `sending` by this very claim). `None` when nothing can be
    /// done now (nothing to do, every candidate claimed, or its merchant at its limit or held
    /// off by a `Retry-After`).
    ///
    /// # Errors
    ///
    /// [`PgError::Database`], [`PgError::Key`] when a card does not open.
    pub async fn claim(
        &self,
        worker: &str,
        scope: &Scope,
        ttl: Duration,
    ) -> Result<Option<Claim>, PgError> {
        let names = scope.names();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The job's row is held with `FOR KEY SHARE` (a rotation of the job waits, and its
        // requests are skipped while one runs).
        let candidate = tx
            .query_opt(
                "SELECT r.job_id, r.merchant, j.max_in_flight, r.mac,
                        j.name, j.merchant, j.key_env, j.base_url, j.state, j.key_id, j.mac,
                        r.epoch, r.event_id, r.ready, r.checks,
                        r.seq, r.kind, r.se_number, r.cards, r.state, r.batch_id, r.version
                 FROM cardsync_requests r
                 JOIN cardsync_jobs j USING (job_id)
                 JOIN cardsync_merchants m ON m.merchant = r.merchant
                 WHERE j.state = 'open'
                   AND ($1::text[] IS NULL OR j.name = ANY($1))
                   AND m.not_before <= now()
                   AND (r.lease_until IS NULL OR r.lease_until < now())
                   AND ((r.state = 'sent' AND (r.ready OR r.next_check <= now()))
                        OR r.state = 'planned'
                        OR (r.state = 'sending' AND r.kind = 'subscription'))
                   AND (SELECT count(*) FROM cardsync_requests l
                        WHERE l.merchant = r.merchant AND l.lease_owner IS NOT NULL
                          AND l.lease_until > now()) < j.max_in_flight
                 ORDER BY (r.state = 'sent') DESC, r.ready DESC, r.job_id, r.seq
                 LIMIT 1
                 FOR UPDATE OF r SKIP LOCKED
                 FOR KEY SHARE OF j SKIP LOCKED",
                &[&names],
            )
            .await?;
        let Some(candidate) = candidate else {
            return Ok(None);
        };
        let job = JobId(candidate.get(0));
        let merchant: String = candidate.get(1);
        let limit: i32 = candidate.get(2);
        let name: String = candidate.get(4);
        let key_env: String = candidate.get(6);
        let base_url: String = candidate.get(7);
        let key_id: String = candidate.get(9);
        let facts = RequestFacts::from_row(job, &candidate, 15)?;
        // Nothing of the rows is used before their authentication is checked: a row changed
        // without the key (another merchant's key variable, a sent request moved back to
        // planned, another base URL) is refused.
        let key = self.key_for(&name, &key_id)?;
        JobFacts {
            job,
            name: &name,
            merchant: candidate.get(5),
            key_env: &key_env,
            base_url: &base_url,
            max_in_flight: limit,
            state: candidate.get(8),
        }
        .verify(key, candidate.get(10))?;
        if candidate.get::<_, &str>(5) != merchant {
            return Err(PgError::Tampered {
                job: name,
                what: format!("request {} names another merchant than its job", facts.seq),
            });
        }
        facts.verify(key, &name, candidate.get(3))?;
        // The per-merchant limit, checked again with the merchant's claims serialised.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('cardsync merchant ' || current_schema() || ' ' || $1, 0))",
            &[&merchant],
        )
        .await?;
        let leased: i64 = tx
            .query_one(
                "SELECT count(*) FROM cardsync_requests
                 WHERE merchant = $1 AND lease_owner IS NOT NULL AND lease_until > now()",
                &[&merchant],
            )
            .await?
            .get(0);
        if leased >= i64::from(limit) {
            return Ok(None);
        }
        let sending = facts.state == "planned";
        let claimed = if sending {
            facts.moved("sending", None)
        } else {
            facts.clone()
        };
        let seq = claimed.seq;
        let epoch: i64 = tx
            .query_one(
                "UPDATE cardsync_requests SET
                     epoch = epoch + 1,
                     lease_owner = $3,
                     lease_until = now() + $4 * interval '1 millisecond',
                     state = $5, mac = $6
                 WHERE job_id = $1 AND seq = $2
                 RETURNING epoch",
                &[
                    &job.0,
                    &seq_i32(seq),
                    &worker,
                    &millis(ttl),
                    &claimed.state,
                    &claimed.mac(key),
                ],
            )
            .await?
            .get(0);
        tx.commit().await?;
        let work = if claimed.state == "sending" {
            match self.cards_of(&client, job, seq, claimed.version).await {
                Ok(cards) => Work::Send { cards },
                Err(e) => {
                    // Nothing was sent: hand the request back at once if the database lets us
                    // (else its lease runs out).
                    let _ = self.hand_back(job, &claimed, epoch).await;
                    return Err(e);
                }
            }
        } else {
            Work::Check {
                batch_id: claimed.batch_id.clone().ok_or_else(|| {
                    PgError::Corrupt(format!("request {seq} is sent without a batch id"))
                })?,
                event_id: candidate.get(12),
                ready: candidate.get(13),
            }
        };
        Ok(Some(Claim {
            job,
            job_name: name,
            seq,
            kind: claimed.kind,
            se_number: claimed.se_number.clone(),
            epoch,
            checks: u32::try_from(candidate.get::<_, i32>(14)).unwrap_or(0),
            worker: worker.to_owned(),
            key_env,
            merchant,
            base_url,
            cards: u64::try_from(claimed.cards).unwrap_or(0),
            version: claimed.version,
            work,
        }))
    }

    /// Puts a request claimed to be sent back to `planned` (its cards could not be loaded).
    async fn hand_back(
        &self,
        job: JobId,
        claimed: &RequestFacts,
        epoch: i64,
    ) -> Result<(), PgError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let key = self.job_key_locked(&tx, job).await?;
        let back = claimed.moved("planned", None);
        tx.execute(
            "UPDATE cardsync_requests SET state = 'planned', lease_owner = NULL,
                 lease_until = NULL, mac = $4
             WHERE job_id = $1 AND seq = $2 AND epoch = $3 AND state = 'sending'",
            &[&job.0, &seq_i32(claimed.seq), &epoch, &back.mac(key)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The open jobs in `scope`, each checked against its authentication.
    ///
    /// # Errors
    ///
    /// [`PgError::Database`]; [`PgError::Tampered`] when a job's row was changed without the
    /// journal key.
    pub async fn open_jobs(&self, scope: &Scope) -> Result<Vec<OpenJob>, PgError> {
        // A read: asked again once if the database had dropped the connection it used.
        read_again_if_lost(|| self.open_jobs_once(scope)).await
    }

    async fn open_jobs_once(&self, scope: &Scope) -> Result<Vec<OpenJob>, PgError> {
        let names = scope.names();
        let client = self.client().await?;
        let mut jobs = Vec::new();
        for r in client
            .query(
                "SELECT job_id, name, merchant, key_env, base_url, max_in_flight, state, key_id, mac
                 FROM cardsync_jobs
                 WHERE state = 'open' AND ($1::text[] IS NULL OR name = ANY($1)) ORDER BY job_id",
                &[&names],
            )
            .await?
        {
            let job = OpenJob {
                name: r.get(1),
                key_env: r.get(3),
                merchant: r.get(2),
                base_url: r.get(4),
                key_id: r.get(7),
            };
            // A job under a key this process lacks is listed (a worker says why it leaves it
            // alone); its row is checked when it holds the key.
            if let Some(key) = self.keys.by_id(&job.key_id) {
                JobFacts {
                    job: JobId(r.get(0)),
                    name: &job.name,
                    merchant: &job.merchant,
                    key_env: &job.key_env,
                    base_url: &job.base_url,
                    max_in_flight: r.get(5),
                    state: r.get(6),
                }
                .verify(key, r.get(8))?;
            }
            jobs.push(job);
        }
        Ok(jobs)
    }

    /// Whether this journal holds the key a job is under.
    pub fn holds_key(&self, key_id: &str) -> bool {
        self.keys.by_id(key_id).is_some()
    }

    /// What is left to do in `scope`: (requests a worker can still move on, requests that
    /// wait for a decision). Jobs still being planned count as work to come.
    ///
    /// # Errors
    ///
    /// [`PgError::Database`].
    pub async fn outstanding(&self, scope: &Scope) -> Result<(u64, u64), PgError> {
        // A read: asked again once if the database had dropped the connection it used.
        read_again_if_lost(|| self.outstanding_once(scope)).await
    }

    async fn outstanding_once(&self, scope: &Scope) -> Result<(u64, u64), PgError> {
        let names = scope.names();
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT
                     count(*) FILTER (WHERE NOT (r.state = 'sending' AND r.kind = 'batch'
                         AND (r.lease_until IS NULL OR r.lease_until < now()))),
                     count(*) FILTER (WHERE r.state = 'sending' AND r.kind = 'batch'
                         AND (r.lease_until IS NULL OR r.lease_until < now()))
                 FROM cardsync_requests r JOIN cardsync_jobs j USING (job_id)
                 WHERE j.state = 'open' AND ($1::text[] IS NULL OR j.name = ANY($1))
                   AND r.state IN ('planned', 'sending', 'sent', 'completed')",
                &[&names],
            )
            .await?;
        let updates: i64 = client
            .query_one(
                "SELECT count(*) FROM cardsync_updates u JOIN cardsync_jobs j USING (job_id)
                 WHERE j.state = 'open' AND ($1::text[] IS NULL OR j.name = ANY($1))
                   AND u.state = 'pending'",
                &[&names],
            )
            .await?
            .get(0);
        Ok((
            row.get::<_, i64>(0) as u64 + updates as u64,
            row.get::<_, i64>(1) as u64,
        ))
    }

    /// The cards of a claimed request (opened), in row order: for the last four digits of
    /// changed cards.
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`] when the claim is no longer current (its lease ran out and another
    /// worker took the request over, and may have finished it and erased its cards);
    /// [`PgError::Database`], [`PgError::Key`].
    pub async fn cards(&self, claim: &Claim) -> Result<Vec<StoredCard>, PgError> {
        let client = self.client().await?;
        // The cards and the claim's token in one read: cards erased by whoever finished the
        // request after a takeover are the claim's loss, not damage.
        let row = client
            .query_opt(
                "SELECT c.cards FROM cardsync_requests r
                 LEFT JOIN cardsync_card_sets c USING (job_id, seq)
                 WHERE r.job_id = $1 AND r.seq = $2 AND r.epoch = $3",
                &[&claim.job.0, &seq_i32(claim.seq), &claim.epoch],
            )
            .await?
            .ok_or_else(|| PgError::Fenced {
                job: claim.job_name.clone(),
                seq: claim.seq,
            })?;
        self.open_cards(claim.job, claim.seq, claim.version, row.get(0))
    }

    /// The cards of a request at `version` (an older card set, put back, does not open).
    async fn cards_of(
        &self,
        client: &Object,
        job: JobId,
        seq: u64,
        version: i64,
    ) -> Result<Vec<StoredCard>, PgError> {
        let sealed: Option<Vec<u8>> = client
            .query_opt(
                "SELECT cards FROM cardsync_card_sets WHERE job_id = $1 AND seq = $2",
                &[&job.0, &seq_i32(seq)],
            )
            .await?
            .map(|r| r.get(0));
        self.open_cards(job, seq, version, sealed)
    }

    /// A request's sealed card set (`None`: there is none), opened at `version`.
    fn open_cards(
        &self,
        job: JobId,
        seq: u64,
        version: i64,
        sealed: Option<Vec<u8>>,
    ) -> Result<Vec<StoredCard>, PgError> {
        let Some(sealed) = sealed else {
            return Err(PgError::Corrupt(format!(
                "the cards of request {seq} are gone"
            )));
        };
        let plain = self
            .open(&sealed, &cards_aad(job, seq, version))
            .map_err(|e| match e {
                PgError::Key(KeyError::Damaged) => PgError::Tampered {
                    job: format!("#{}", job.0),
                    what: format!(
                        "the sealed cards of request {seq} are not those of its version {version}"
                    ),
                },
                e => e,
            })?;
        codec::decode_cards(&plain).map_err(PgError::Corrupt)
    }

    /// The facts of a claimed request, as its claim left it.
    fn facts_of(claim: &Claim, state: &str) -> RequestFacts {
        RequestFacts {
            job: claim.job,
            seq: claim.seq,
            kind: claim.kind,
            se_number: claim.se_number.clone(),
            cards: i32::try_from(claim.cards).unwrap_or(i32::MAX),
            state: state.to_owned(),
            batch_id: match &claim.work {
                Work::Check { batch_id, .. } => Some(batch_id.clone()),
                Work::Send { .. } | Work::Update { .. } => None,
            },
            version: claim.version,
        }
    }

    /// One fenced write that changes nothing authenticated: `sql` updates the claimed request
    /// (`$1` job, `$2` seq, `$3` epoch) and must match exactly it.
    async fn fenced(
        &self,
        claim: &Claim,
        sql: &str,
        extra: &[&(dyn ToSql + Sync)],
    ) -> Result<(), PgError> {
        let client = self.client().await?;
        let seq = seq_i32(claim.seq);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&claim.job.0, &seq, &claim.epoch];
        params.extend_from_slice(extra);
        let n = client.execute(sql, &params).await?;
        if n == 0 {
            return Err(PgError::Fenced {
                job: claim.job_name.clone(),
                seq: claim.seq,
            });
        }
        Ok(())
    }

    /// One fenced write that moves the claimed request to `moved` (its new state and batch):
    /// `sql` gets `$4`, the new row's authentication under the job's key, checked under the
    /// lock that rotation takes.
    async fn fenced_move(
        &self,
        claim: &Claim,
        moved: &RequestFacts,
        sql: &str,
        extra: &[&(dyn ToSql + Sync)],
    ) -> Result<(), PgError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let key = self.job_key_locked(&tx, claim.job).await?;
        let mac = moved.mac(key);
        let seq = seq_i32(claim.seq);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&claim.job.0, &seq, &claim.epoch, &mac];
        params.extend_from_slice(extra);
        let n = tx.execute(sql, &params).await?;
        if n == 0 {
            return Err(PgError::Fenced {
                job: claim.job_name.clone(),
                seq: claim.seq,
            });
        }
        tx.commit().await?;
        Ok(())
    }

    /// Extends the claim's lease to `ttl` from now.
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`] when the claim is no longer current.
    pub async fn renew(&self, claim: &Claim, ttl: Duration) -> Result<(), PgError> {
        if let Work::Update { event_id } = &claim.work {
            let client = self.client().await?;
            let n = client
                .execute(
                    "UPDATE cardsync_updates
                     SET lease_until = now() + $4 * interval '1 millisecond'
                     WHERE job_id = $1 AND event_id = $2 AND epoch = $3 AND lease_owner IS NOT NULL",
                    &[&claim.job.0, event_id, &claim.epoch, &millis(ttl)],
                )
                .await?;
            if n == 0 {
                return Err(PgError::Fenced {
                    job: claim.job_name.clone(),
                    seq: 0,
                });
            }
            return Ok(());
        }
        self.fenced(
            claim,
            "UPDATE cardsync_requests SET lease_until = now() + $4 * interval '1 millisecond'
             WHERE job_id = $1 AND seq = $2 AND epoch = $3 AND lease_owner IS NOT NULL",
            &[&millis(ttl)],
        )
        .await
    }

    /// The claim's lease has at least `margin` left (checked by the database's clock).
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`] when it has not, or the claim is no longer current.
    pub async fn check_lease(&self, claim: &Claim, margin: Duration) -> Result<(), PgError> {
        let client = self.client().await?;
        let ok = client
            .query_opt(
                "SELECT 1 FROM cardsync_requests
                 WHERE job_id = $1 AND seq = $2 AND epoch = $3
                   AND lease_until > now() + $4 * interval '1 millisecond'",
                &[
                    &claim.job.0,
                    &seq_i32(claim.seq),
                    &claim.epoch,
                    &millis(margin),
                ],
            )
            .await?;
        if ok.is_none() {
            return Err(PgError::Fenced {
                job: claim.job_name.clone(),
                seq: claim.seq,
            });
        }
        Ok(())
    }

    /// The batch was created: `sent`, first status check after `check_in`. A worker whose
    /// lease ran out still records it while nobody took the request over. When a decision
    /// sent the request again meanwhile and no worker has taken it yet, the batch is adopted
    /// instead (so it is not sent twice). Otherwise the batch id is kept aside for the person
    /// deciding ([`Unconfirmed::late_batch_ids`]) and [`PgError::Fenced`] returned.
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`].
    pub async fn sent(
        &self,
        claim: &Claim,
        batch_id: &str,
        check_in: Duration,
    ) -> Result<(), PgError> {
        let moved = PgJournal::facts_of(claim, "sent").moved("sent", Some(batch_id));
        let written = self
            .fenced_move(
                claim,
                &moved,
                "UPDATE cardsync_requests SET state = 'sent', batch_id = $5, message = NULL,
                     lease_owner = NULL, lease_until = NULL, mac = $4,
                     next_check = now() + $6 * interval '1 millisecond',
                     -- A receiver may have recorded the batch's event before this answer was.
                     event_id = (SELECT e.event_id FROM cardsync_events e
                                 WHERE e.batch_id = $5 AND e.trigger_id = 20 LIMIT 1),
                     ready = EXISTS (SELECT 1 FROM cardsync_events e
                                     WHERE e.batch_id = $5 AND e.trigger_id = 20)
                 WHERE job_id = $1 AND seq = $2 AND epoch = $3
                   AND (state = 'sending' OR (state = 'sent' AND batch_id = $5))",
                &[&batch_id, &millis(check_in)],
            )
            .await;
        if let Err(PgError::Fenced { .. }) = &written {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let key = self.job_key_locked(&tx, claim.job).await?;
            // Sent again by a decision made while this worker was away, and not yet taken by
            // another: the batch exists, so it is adopted rather than sent twice.
            let planned = tx
                .query_opt(
                    &format!(
                        "SELECT mac, {FACTS} FROM cardsync_requests
                         WHERE job_id = $1 AND seq = $2 AND epoch > $3 AND state = 'planned'
                           AND (lease_until IS NULL OR lease_until < now()) FOR UPDATE"
                    ),
                    &[&claim.job.0, &seq_i32(claim.seq), &claim.epoch],
                )
                .await?;
            if let Some(row) = planned {
                let facts = RequestFacts::from_row(claim.job, &row, 1)?;
                facts.verify(key, &claim.job_name, row.get(0))?;
                tx.execute(
                    "UPDATE cardsync_requests SET state = 'sent', batch_id = $3, epoch = epoch + 1,
                         message = 'adopted the batch a worker created after its claim ran out',
                         lease_owner = NULL, lease_until = NULL, next_check = now(), mac = $4
                     WHERE job_id = $1 AND seq = $2",
                    &[
                        &claim.job.0,
                        &seq_i32(claim.seq),
                        &batch_id,
                        &facts.moved("sent", Some(batch_id)).mac(key),
                    ],
                )
                .await?;
                tx.commit().await?;
                return Ok(());
            }
            drop(tx);
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO cardsync_late_answers (job_id, seq, epoch, batch_id, message)
                     VALUES ($1, $2, $3, $4, 'created after this worker''s claim ran out')
                     ON CONFLICT DO NOTHING",
                    &[&claim.job.0, &seq_i32(claim.seq), &claim.epoch, &batch_id],
                )
                .await?;
        }
        written
    }

    /// The subscription was accepted: `done` (its updates come as events).
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`].
    pub async fn subscribed(&self, claim: &Claim) -> Result<(), PgError> {
        let cards = i32::try_from(claim.cards).unwrap_or(i32::MAX);
        // Its cards are counted as `subscribed` (in the same statement): their updates, when
        // they come, take them off.
        self.fenced_move(
            claim,
            &PgJournal::facts_of(claim, "done"),
            "WITH moved AS (
                 UPDATE cardsync_requests SET state = 'done', message = NULL,
                     lease_owner = NULL, lease_until = NULL, mac = $4
                 WHERE job_id = $1 AND seq = $2 AND epoch = $3 AND state = 'sending'
                 RETURNING job_id, seq)
             INSERT INTO cardsync_result_counts (job_id, seq, status, n)
             SELECT job_id, seq, 'subscribed', $5 FROM moved
             ON CONFLICT (job_id, seq, status) DO UPDATE SET n = excluded.n",
            &[&cards],
        )
        .await?;
        self.erase_request_cards(claim).await
    }

    /// The POST certainly did not leave (the connection was refused, the lease was short):
    /// back to `planned`, claimable again after `retry_in`.
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`].
    pub async fn not_sent(&self, claim: &Claim, retry_in: Duration) -> Result<(), PgError> {
        self.fenced_move(
            claim,
            &PgJournal::facts_of(claim, "planned"),
            "UPDATE cardsync_requests SET state = 'planned', mac = $4,
                 lease_owner = NULL, lease_until = now() + $5 * interval '1 millisecond'
             WHERE job_id = $1 AND seq = $2 AND epoch = $3 AND state = 'sending'",
            &[&millis(retry_in)],
        )
        .await
    }

    /// CardSync refused the request, or its batch failed: `failed`, with why.
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`].
    pub async fn failed(&self, claim: &Claim, message: &str) -> Result<(), PgError> {
        self.fenced_move(
            claim,
            &PgJournal::facts_of(claim, "failed"),
            "UPDATE cardsync_requests SET state = 'failed', message = $5, mac = $4,
                 lease_owner = NULL, lease_until = NULL
             WHERE job_id = $1 AND seq = $2 AND epoch = $3 AND state IN ('sending', 'sent')",
            &[&message],
        )
        .await?;
        self.erase_request_cards(claim).await
    }

    /// CardSync reported the batch in error: `failed`, with why, and its cards counted as
    /// `batch_error` (as on one machine).
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`].
    pub async fn batch_failed(&self, claim: &Claim, message: &str) -> Result<(), PgError> {
        let cards = i32::try_from(claim.cards).unwrap_or(i32::MAX);
        self.fenced_move(
            claim,
            &PgJournal::facts_of(claim, "failed"),
            "WITH moved AS (
                 UPDATE cardsync_requests SET state = 'failed', message = $5, mac = $4,
                     lease_owner = NULL, lease_until = NULL
                 WHERE job_id = $1 AND seq = $2 AND epoch = $3 AND state IN ('sending', 'sent')
                 RETURNING job_id, seq)
             INSERT INTO cardsync_result_counts (job_id, seq, status, n)
             SELECT job_id, seq, 'batch_error', $6 FROM moved
             ON CONFLICT (job_id, seq, status) DO UPDATE SET n = excluded.n",
            &[&message, &cards],
        )
        .await?;
        self.erase_request_cards(claim).await
    }

    /// The POST may have reached CardSync and no answer says so: a batch waits for a decision
    /// (it stays `sending`, with no lease); a subscription, idempotent, goes back to `planned`.
    /// `hold_off` (a `Retry-After`) keeps every worker off the merchant until it passes.
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`].
    pub async fn unconfirmed(
        &self,
        claim: &Claim,
        message: &str,
        hold_off: Option<Duration>,
    ) -> Result<(), PgError> {
        let to = match claim.kind {
            RequestKind::Subscription => "planned",
            _ => "sending",
        };
        self.fenced_move(
            claim,
            &PgJournal::facts_of(claim, to),
            "UPDATE cardsync_requests SET state = $5, message = $6, mac = $4,
                 lease_owner = NULL, lease_until = now()
             WHERE job_id = $1 AND seq = $2 AND epoch = $3 AND state = 'sending'",
            &[&to, &message],
        )
        .await?;
        if let Some(wait) = hold_off {
            self.hold_off(&claim.merchant, wait).await?;
        }
        Ok(())
    }

    /// The batch is not complete yet: check again after `check_in` (and `hold_off`, a
    /// `Retry-After`, keeps every worker off the merchant until it passes). A webhook's
    /// "ready" is spent: until the next one, the request is polled.
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`].
    pub async fn pending(
        &self,
        claim: &Claim,
        check_in: Duration,
        hold_off: Option<Duration>,
    ) -> Result<(), PgError> {
        self.fenced(
            claim,
            "UPDATE cardsync_requests SET checks = checks + 1, ready = false,
                 next_check = now() + $4 * interval '1 millisecond',
                 lease_owner = NULL, lease_until = NULL
             WHERE job_id = $1 AND seq = $2 AND epoch = $3 AND state = 'sent'",
            &[&millis(check_in)],
        )
        .await?;
        if let Some(wait) = hold_off {
            self.hold_off(&claim.merchant, wait).await?;
        }
        Ok(())
    }

    /// Holds every worker off `merchant` for `wait`.
    async fn hold_off(&self, merchant: &str, wait: Duration) -> Result<(), PgError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE cardsync_merchants SET not_before =
                     greatest(not_before, now() + $2 * interval '1 millisecond')
                 WHERE merchant = $1",
                &[&merchant, &millis(wait)],
            )
            .await?;
        Ok(())
    }

    /// The batch's results: written (sealed) in the same transaction that marks the request
    /// `done`, under the claim, so that they are written once; then its cards are erased.
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`]: nothing was written.
    pub async fn completed(&self, claim: &Claim, rows: &Rows) -> Result<(), PgError> {
        let Rows { rows, tallies, .. } = rows;
        let seq = seq_i32(claim.seq);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The results are sealed under the key the job is under now, checked under the lock
        // that rotation takes: a rotation that ran meanwhile is waited for, not undone.
        let key = self.job_key_locked(&tx, claim.job).await?;
        let current = tx
            .query_opt(
                "SELECT 1 FROM cardsync_requests
                 WHERE job_id = $1 AND seq = $2 AND epoch = $3 AND state = 'sent' FOR UPDATE",
                &[&claim.job.0, &seq, &claim.epoch],
            )
            .await?;
        if current.is_none() {
            return Err(PgError::Fenced {
                job: claim.job_name.clone(),
                seq: claim.seq,
            });
        }
        let sealed = key.seal(
            &codec::encode_rows(rows),
            &results_aad(claim.job, claim.seq, claim.version),
        )?;
        let count = i32::try_from(rows.len()).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO cardsync_results (job_id, seq, rows, results) VALUES ($1, $2, $3, $4)",
            &[&claim.job.0, &seq, &count, &sealed],
        )
        .await?;
        // The tallies of the job's rules: per status, `(none)` and `no_result` included.
        let (statuses, ns): (Vec<String>, Vec<i32>) = tallies
            .iter()
            .map(|(s, n)| (s.clone(), i32::try_from(*n).unwrap_or(i32::MAX)))
            .unzip();
        tx.execute(
            "INSERT INTO cardsync_result_counts (job_id, seq, status, n)
             SELECT $1, $2, * FROM unnest($3::text[], $4::integer[])",
            &[&claim.job.0, &seq, &statuses, &ns],
        )
        .await?;
        tx.execute(
            "UPDATE cardsync_requests SET state = 'done', lease_owner = NULL, lease_until = NULL,
                 mac = $3
             WHERE job_id = $1 AND seq = $2",
            &[
                &claim.job.0,
                &seq,
                &PgJournal::facts_of(claim, "done").mac(key),
            ],
        )
        .await?;
        tx.execute(
            "DELETE FROM cardsync_card_sets WHERE job_id = $1 AND seq = $2",
            &[&claim.job.0, &seq],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The cards of a request that is final and will not be sent again.
    async fn erase_request_cards(&self, claim: &Claim) -> Result<(), PgError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM cardsync_card_sets WHERE job_id = $1 AND seq = $2",
                &[&claim.job.0, &seq_i32(claim.seq)],
            )
            .await?;
        Ok(())
    }

    // ---- events ----

    /// Records a webhook event once, whichever receiver got it, and in the same transaction
    /// marks its batch ready for fetching, or, for an American Express update event received
    /// at a merchant's URL (`merchant`, the merchant's fingerprint), makes it an update to
    /// fetch for each open job of that merchant with subscriptions: `true` when it was new.
    ///
    /// # Errors
    ///
    /// [`PgError::Database`]; [`PgError::KeyRotated`] when a job of the merchant is under a
    /// key this process lacks (the event is not recorded: it comes again).
    pub async fn record_event(
        &self,
        event_id: &str,
        trigger_id: Option<u32>,
        batch_id: Option<&str>,
        merchant: Option<&str>,
        receiver: &str,
    ) -> Result<bool, PgError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let trigger = trigger_id.map(|t| t as i32);
        let new = tx
            .execute(
                "INSERT INTO cardsync_events (event_id, trigger_id, batch_id, merchant, received_by)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
                &[&event_id, &trigger, &batch_id, &merchant, &receiver],
            )
            .await?
            == 1;
        if new && let Some(batch) = batch_id {
            tx.execute(
                "UPDATE cardsync_requests SET ready = true, event_id = $2
                 WHERE batch_id = $1 AND state = 'sent'",
                &[&batch, &event_id],
            )
            .await?;
        }
        if new
            && trigger_id == Some(cardsync_proto::Trigger::AmexUpdate.id())
            && let Some(merchant) = merchant
        {
            let jobs = tx
                .query(
                    "SELECT j.job_id, j.name, j.key_id FROM cardsync_jobs j
                     WHERE j.merchant = $1 AND j.state = 'open'
                       AND EXISTS (SELECT 1 FROM cardsync_requests r
                                   WHERE r.job_id = j.job_id AND r.kind = 'subscription')
                     ORDER BY j.job_id FOR KEY SHARE",
                    &[&merchant],
                )
                .await?;
            for j in &jobs {
                let job = JobId(j.get(0));
                let key = self.key_for(j.get(1), j.get(2))?;
                tx.execute(
                    "INSERT INTO cardsync_updates (job_id, event_id, state, mac)
                     VALUES ($1, $2, 'pending', $3) ON CONFLICT DO NOTHING",
                    &[
                        &job.0,
                        &event_id,
                        &update_mac(key, job, event_id, "pending"),
                    ],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Claims the next American Express update to fetch in `scope`, as [`PgJournal::claim`]
    /// claims a request: `None` when there is none now.
    ///
    /// # Errors
    ///
    /// [`PgError::Database`]; [`PgError::Tampered`] when its row, or its job's, was changed
    /// without the key.
    pub async fn claim_update(
        &self,
        worker: &str,
        scope: &Scope,
        ttl: Duration,
    ) -> Result<Option<Claim>, PgError> {
        let names = scope.names();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "SELECT u.job_id, u.event_id, u.state, u.mac, u.checks,
                        j.name, j.merchant, j.key_env, j.base_url, j.max_in_flight, j.state,
                        j.key_id, j.mac
                 FROM cardsync_updates u
                 JOIN cardsync_jobs j USING (job_id)
                 JOIN cardsync_merchants m ON m.merchant = j.merchant
                 WHERE j.state = 'open' AND ($1::text[] IS NULL OR j.name = ANY($1))
                   AND u.state = 'pending' AND u.next_check <= now()
                   AND (u.lease_until IS NULL OR u.lease_until < now())
                   AND m.not_before <= now()
                 ORDER BY u.next_check, u.job_id, u.event_id
                 LIMIT 1
                 FOR UPDATE OF u SKIP LOCKED
                 FOR KEY SHARE OF j SKIP LOCKED",
                &[&names],
            )
            .await?
        else {
            return Ok(None);
        };
        let job = JobId(row.get(0));
        let event_id: String = row.get(1);
        let name: String = row.get(5);
        let merchant: String = row.get(6);
        let key_env: String = row.get(7);
        let base_url: String = row.get(8);
        let key = self.key_for(&name, row.get(11))?;
        JobFacts {
            job,
            name: &name,
            merchant: &merchant,
            key_env: &key_env,
            base_url: &base_url,
            max_in_flight: row.get(9),
            state: row.get(10),
        }
        .verify(key, row.get(12))?;
        let state: &str = row.get(2);
        let fields = update_fields(job, &event_id, state);
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        if !row
            .get::<_, Option<&[u8]>>(3)
            .is_some_and(|tag| key.verify(&refs, tag))
        {
            return Err(PgError::Tampered {
                job: name,
                what: format!("the update of event {event_id} does not match its authentication"),
            });
        }
        let epoch: i64 = tx
            .query_one(
                "UPDATE cardsync_updates SET epoch = epoch + 1, lease_owner = $3,
                     lease_until = now() + $4 * interval '1 millisecond'
                 WHERE job_id = $1 AND event_id = $2 RETURNING epoch",
                &[&job.0, &event_id, &worker, &millis(ttl)],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(Some(Claim {
            job,
            job_name: name,
            seq: 0,
            kind: RequestKind::Subscription,
            se_number: None,
            epoch,
            checks: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
            worker: worker.to_owned(),
            key_env,
            merchant,
            base_url,
            cards: 0,
            version: 0,
            work: Work::Update { event_id },
        }))
    }

    /// An update's results could not be fetched: tried again after `check_in` (and
    /// `hold_off`, a `Retry-After`, keeps every worker off the merchant until it passes).
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`].
    pub async fn update_pending(
        &self,
        claim: &Claim,
        check_in: Duration,
        hold_off: Option<Duration>,
    ) -> Result<(), PgError> {
        let Work::Update { event_id } = &claim.work else {
            return Err(PgError::State("not an update claim".into()));
        };
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE cardsync_updates SET checks = checks + 1, lease_owner = NULL,
                     lease_until = NULL, next_check = now() + $4 * interval '1 millisecond'
                 WHERE job_id = $1 AND event_id = $2 AND epoch = $3 AND state = 'pending'",
                &[&claim.job.0, event_id, &claim.epoch, &millis(check_in)],
            )
            .await?;
        if n == 0 {
            return Err(PgError::Fenced {
                job: claim.job_name.clone(),
                seq: 0,
            });
        }
        if let Some(wait) = hold_off {
            self.hold_off(&claim.merchant, wait).await?;
        }
        Ok(())
    }

    /// An update's results: written (sealed, under the job's key) in the transaction that
    /// marks the update done, under the claim, so that they are written once; counted under
    /// request 0 (and taken off `subscribed`).
    ///
    /// # Errors
    ///
    /// [`PgError::Fenced`]: nothing was written.
    pub async fn update_completed(&self, claim: &Claim, rows: &Rows) -> Result<(), PgError> {
        let Work::Update { event_id } = &claim.work else {
            return Err(PgError::State("not an update claim".into()));
        };
        let Rows { rows, tallies, .. } = rows;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let key = self.job_key_locked(&tx, claim.job).await?;
        let sealed = key.seal(&codec::encode_rows(rows), &update_aad(claim.job, event_id))?;
        let count = i32::try_from(rows.len()).unwrap_or(i32::MAX);
        let n = tx
            .execute(
                "UPDATE cardsync_updates SET state = 'done', rows = $4, results = $5, mac = $6,
                     lease_owner = NULL, lease_until = NULL
                 WHERE job_id = $1 AND event_id = $2 AND epoch = $3 AND state = 'pending'",
                &[
                    &claim.job.0,
                    event_id,
                    &claim.epoch,
                    &count,
                    &sealed,
                    &update_mac(key, claim.job, event_id, "done"),
                ],
            )
            .await?;
        if n == 0 {
            return Err(PgError::Fenced {
                job: claim.job_name.clone(),
                seq: 0,
            });
        }
        let (statuses, ns): (Vec<String>, Vec<i32>) = tallies
            .iter()
            .map(|(s, n)| (s.clone(), i32::try_from(*n).unwrap_or(i32::MAX)))
            .unzip();
        tx.execute(
            "INSERT INTO cardsync_result_counts (job_id, seq, status, n)
             SELECT $1, 0, * FROM unnest($2::text[], $3::integer[])
             ON CONFLICT (job_id, seq, status) DO UPDATE SET n = cardsync_result_counts.n + excluded.n",
            &[&claim.job.0, &statuses, &ns],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- status, decisions, export ----

    /// Where job `name` is.
    ///
    /// # Errors
    ///
    /// [`PgError::NoSuchJob`].
    pub async fn status(&self, name: &str) -> Result<JobStatus, PgError> {
        // A read: asked again once if the database had dropped the connection it used.
        read_again_if_lost(|| self.status_once(name)).await
    }

    async fn status_once(&self, name: &str) -> Result<JobStatus, PgError> {
        let client = self.client().await?;
        let job = client
            .query_opt(
                "SELECT job_id, state, rows, invalid, duplicates FROM cardsync_jobs WHERE name = $1",
                &[&name],
            )
            .await?
            .ok_or_else(|| PgError::NoSuchJob(name.to_owned()))?;
        let id: i64 = job.get(0);
        let mut status = JobStatus {
            name: name.to_owned(),
            state: JobState::parse(job.get(1))
                .ok_or_else(|| PgError::Corrupt("a job in an unknown state".into()))?,
            rows: job.get::<_, i64>(2) as u64,
            invalid: job.get::<_, i64>(3) as u64,
            duplicates: job.get::<_, i64>(4) as u64,
            ..JobStatus::default()
        };
        for r in client
            .query(
                "SELECT state, count(*), coalesce(sum(cards), 0)::bigint,
                        count(*) FILTER (WHERE lease_owner IS NOT NULL AND lease_until > now())
                 FROM cardsync_requests WHERE job_id = $1 GROUP BY state",
                &[&id],
            )
            .await?
        {
            let state: String = r.get(0);
            status
                .requests
                .insert(state.clone(), r.get::<_, i64>(1) as u64);
            status.cards.insert(state, r.get::<_, i64>(2) as u64);
            status.in_flight += r.get::<_, i64>(3) as u64;
        }
        for r in client
            .query(
                "SELECT status, sum(n)::bigint FROM cardsync_result_counts WHERE job_id = $1
                 GROUP BY 1 HAVING sum(n) <> 0",
                &[&id],
            )
            .await?
        {
            status
                .results
                .insert(r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0));
        }
        let updates = client
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'pending'),
                        count(*) FILTER (WHERE state = 'done')
                 FROM cardsync_updates WHERE job_id = $1",
                &[&id],
            )
            .await?;
        status.updates_pending = updates.get::<_, i64>(0) as u64;
        status.updates_done = updates.get::<_, i64>(1) as u64;
        for r in client
            .query(
                "SELECT kind, count(*) FROM cardsync_requests WHERE job_id = $1 GROUP BY kind",
                &[&id],
            )
            .await?
        {
            let n = r.get::<_, i64>(1) as u64;
            match RequestKind::parse(r.get(0)) {
                Some(RequestKind::Batch) => status.batches = n,
                Some(RequestKind::Subscription) => status.subscriptions = n,
                _ => {}
            }
        }
        status.failed = client
            .query(
                "SELECT seq, coalesce(message, '') FROM cardsync_requests
                 WHERE job_id = $1 AND state = 'failed' ORDER BY seq",
                &[&id],
            )
            .await?
            .into_iter()
            .map(|r| (r.get::<_, i32>(0) as u64, r.get(1)))
            .collect();
        for r in client
            .query(
                "SELECT r.seq, r.cards, r.message,
                        coalesce(array_agg(l.batch_id) FILTER (WHERE l.batch_id IS NOT NULL), '{}')
                 FROM cardsync_requests r
                 LEFT JOIN cardsync_late_answers l ON l.job_id = r.job_id AND l.seq = r.seq
                 WHERE r.job_id = $1 AND r.state = 'sending' AND r.kind = 'batch'
                   AND (r.lease_until IS NULL OR r.lease_until < now())
                 GROUP BY r.seq, r.cards, r.message ORDER BY r.seq",
                &[&id],
            )
            .await?
        {
            let mut u = Unconfirmed::new(r.get::<_, i32>(0) as u64, r.get::<_, i32>(1) as u64);
            u.message = r.get(2);
            u.late_batch_ids = r.get(3);
            status.unconfirmed.push(u);
        }
        Ok(status)
    }

    /// Applies a decision about job `name`'s requests that wait for one (batches in
    /// `sending` whose claim ran out): request `seq`, or every waiting one when `None`
    /// ([`Decision::Adopt`] names one request). How many it changed. Each change bumps the
    /// fencing token, so a worker that wakes up late with an answer writes nothing.
    ///
    /// # Errors
    ///
    /// [`PgError::NoSuchJob`]; [`PgError::State`] when an adopted request does not wait for
    /// a decision.
    pub async fn decide(
        &self,
        name: &str,
        seq: Option<u64>,
        decision: &Decision,
    ) -> Result<u64, PgError> {
        if matches!(decision, Decision::Adopt(_)) && seq.is_none() {
            return Err(PgError::State(
                "a batch is adopted for one request: say which".into(),
            ));
        }
        let mut client = self.client().await?;
        let job = self.job_id(&client, name).await?;
        let tx = client.transaction().await?;
        let key = self.job_key_locked(&tx, job).await?;
        let only: Option<i32> = seq.map(seq_i32);
        let waiting = tx
            .query(
                &format!(
                    "SELECT mac, {FACTS} FROM cardsync_requests
                     WHERE job_id = $1 AND state = 'sending' AND kind = 'batch'
                       AND (lease_until IS NULL OR lease_until < now())
                       AND ($2::integer IS NULL OR seq = $2)
                     ORDER BY seq FOR UPDATE"
                ),
                &[&job.0, &only],
            )
            .await?;
        if let Some(seq) = seq
            && waiting.is_empty()
        {
            return Err(PgError::State(format!(
                "request {seq} of job {name:?} does not wait for a decision"
            )));
        }
        // Each request is checked before it is changed: a decision never launders a row
        // that was changed without the key.
        let mut facts = Vec::with_capacity(waiting.len());
        for row in &waiting {
            let f = RequestFacts::from_row(job, row, 1)?;
            f.verify(key, name, row.get(0))?;
            facts.push(f);
        }
        for f in &facts {
            let seq = seq_i32(f.seq);
            match decision {
                Decision::Adopt(batch_id) => {
                    tx.execute(
                        "UPDATE cardsync_requests SET state = 'sent', batch_id = $3,
                             epoch = epoch + 1, message = 'adopted', lease_owner = NULL,
                             lease_until = NULL, next_check = now(), mac = $4
                         WHERE job_id = $1 AND seq = $2",
                        &[
                            &job.0,
                            &seq,
                            batch_id,
                            &f.moved("sent", Some(batch_id)).mac(key),
                        ],
                    )
                    .await?;
                }
                Decision::Resend => {
                    tx.execute(
                        "UPDATE cardsync_requests SET state = 'planned', epoch = epoch + 1,
                             message = 'resent by decision', lease_owner = NULL,
                             lease_until = NULL, mac = $3
                         WHERE job_id = $1 AND seq = $2",
                        &[&job.0, &seq, &f.moved("planned", None).mac(key)],
                    )
                    .await?;
                }
                Decision::Abandon | _ => {
                    tx.execute(
                        "UPDATE cardsync_requests SET state = 'abandoned', epoch = epoch + 1,
                             message = 'abandoned by decision', lease_owner = NULL,
                             lease_until = NULL, mac = $3
                         WHERE job_id = $1 AND seq = $2",
                        &[&job.0, &seq, &f.moved("abandoned", None).mac(key)],
                    )
                    .await?;
                    tx.execute(
                        "DELETE FROM cardsync_card_sets WHERE job_id = $1 AND seq = $2",
                        &[&job.0, &seq],
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(facts.len() as u64)
    }

    /// Writes job `name`'s results to `sink` (every request must be final), then erases its
    /// cards and results: the job is `exported`. How many result rows were written.
    ///
    /// # Errors
    ///
    /// [`PgError::State`] when requests are still under way or the job was exported or
    /// abandoned; [`PgError::State`] with the sink's error when it fails (nothing is erased
    /// then: run the export again).
    pub async fn export(&self, name: &str, sink: &mut dyn Sink) -> Result<u64, PgError> {
        let status = self.status(name).await?;
        match status.state {
            JobState::Open => {}
            JobState::Exported => return Err(PgError::Exported(name.to_owned())),
            other => {
                return Err(PgError::State(format!(
                    "job {name:?} is {other}: nothing to export"
                )));
            }
        }
        if !status.finished() {
            let busy: Vec<String> = status
                .requests
                .iter()
                .filter(|(s, n)| **n > 0 && !RequestState::parse(s).is_some_and(|s| s.is_final()))
                .map(|(s, n)| format!("{n} {s}"))
                .collect();
            return Err(PgError::State(format!(
                "job {name:?} is not finished ({} requests): run a worker, or decide about unconfirmed requests",
                busy.join(", ")
            )));
        }
        let mut client = self.client().await?;
        let job = self.job_id(&client, name).await?;
        // One export of a job at a time: a session lock, let go when this connection ends
        // (however the process ends).
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('cardsync export ' || current_schema() || ' ' || ($1::bigint)::text, 0))",
                &[&job.0],
            )
            .await?
            .get(0);
        if !locked {
            return Err(PgError::ExportRunning(name.to_owned()));
        }
        let exported = self.export_locked(&mut client, name, job, sink).await;
        let _ = client
            .execute(
                "SELECT pg_advisory_unlock(hashtextextended('cardsync export ' || current_schema() || ' ' || ($1::bigint)::text, 0))",
                &[&job.0],
            )
            .await;
        exported
    }

    async fn export_locked(
        &self,
        client: &mut Object,
        name: &str,
        job: JobId,
        sink: &mut dyn Sink,
    ) -> Result<u64, PgError> {
        let sink_err = |e: SinkError| PgError::State(format!("cannot write the results: {e}"));
        let state: String = client
            .query_one(
                "SELECT state FROM cardsync_jobs WHERE job_id = $1",
                &[&job.0],
            )
            .await?
            .get(0);
        if state == JobState::Exported.as_str() {
            return Err(PgError::Exported(name.to_owned()));
        }
        if state != JobState::Open.as_str() {
            return Err(PgError::State(format!(
                "job {name:?} is {state}: nothing to export"
            )));
        }
        sink.rewind(&Checkpoint::default()).map_err(sink_err)?;
        let mut written = 0u64;
        let mut after: i32 = -1;
        loop {
            let Some(r) = client
                .query_opt(
                    "SELECT s.seq, s.results, r.version FROM cardsync_results s
                     JOIN cardsync_requests r USING (job_id, seq)
                     WHERE s.job_id = $1 AND s.seq > $2
                     ORDER BY s.seq LIMIT 1",
                    &[&job.0, &after],
                )
                .await?
            else {
                break;
            };
            after = r.get(0);
            let plain = self.open(
                r.get::<_, &[u8]>(1),
                &results_aad(job, after as u64, r.get(2)),
            )?;
            let rows = codec::decode_rows(&plain).map_err(PgError::Corrupt)?;
            sink.append(&rows).map_err(sink_err)?;
            written += rows.len() as u64;
        }
        // Then the American Express updates, in the order of their event ids.
        for r in client
            .query(
                "SELECT event_id, results FROM cardsync_updates
                 WHERE job_id = $1 AND state = 'done' ORDER BY event_id",
                &[&job.0],
            )
            .await?
        {
            let event_id: String = r.get(0);
            let plain = self.open(r.get::<_, &[u8]>(1), &update_aad(job, &event_id))?;
            let rows = codec::decode_rows(&plain).map_err(PgError::Corrupt)?;
            sink.append(&rows).map_err(sink_err)?;
            written += rows.len() as u64;
        }
        sink.checkpoint().map_err(sink_err)?;
        sink.finish().map_err(sink_err)?;
        let tx = client.transaction().await?;
        self.move_job(&tx, job, Some("open"), "exported").await?;
        erase(&tx, job).await?;
        tx.execute(
            "UPDATE cardsync_jobs SET finished_at = now() WHERE job_id = $1",
            &[&job.0],
        )
        .await?;
        tx.commit().await?;
        Ok(written)
    }

    /// Abandons job `name`: no worker takes its requests any more, and its cards and results
    /// are erased.
    ///
    /// # Errors
    ///
    /// [`PgError::NoSuchJob`].
    pub async fn abandon(&self, name: &str) -> Result<(), PgError> {
        let mut client = self.client().await?;
        let job = self.job_id(&client, name).await?;
        let tx = client.transaction().await?;
        self.move_job(&tx, job, None, "abandoned").await?;
        tx.execute(
            "UPDATE cardsync_jobs SET finished_at = now() WHERE job_id = $1",
            &[&job.0],
        )
        .await?;
        erase(&tx, job).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rotates the journal from key `old` to this journal's current key: every job under
    /// `old` is taken in turn, under a lock that every sealing write of that job waits for
    /// (its row `FOR UPDATE`), its rows' authentication checked under `old` and made again
    /// under the new key, its cards and results re-sealed, and its key id moved, in one
    /// commit per job; then the merchant identity key is re-sealed. How many card and result
    /// sets were re-sealed. Jobs still being planned under the old key are dropped (nothing of
    /// them was sent; create them again).
    ///
    /// Run it while workers run, in this order: give every worker both keys
    /// (`CARDSYNC_JOURNAL_KEY` the new one, `CARDSYNC_JOURNAL_OLD_KEY` the old one), rotate,
    /// then drop the old key. Nothing is lost: a worker writing a job's results while it is
    /// rotated waits, then seals them under the new key.
    ///
    /// # Errors
    ///
    /// [`PgError::Key`] when a value opens under neither key; [`PgError::Tampered`] when a row
    /// does not match its authentication (it is not laundered by a rotation).
    pub async fn rotate_from(&self, old: &JournalKey) -> Result<u64, PgError> {
        let new = self.key();
        let mut client = self.client().await?;
        let jobs: Vec<i64> = client
            .query(
                "SELECT job_id FROM cardsync_jobs WHERE key_id = $1 ORDER BY job_id",
                &[&old.id()],
            )
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        let mut count = 0u64;
        for job in jobs.into_iter().map(JobId) {
            let tx = client.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    "SELECT name, merchant, key_env, base_url, max_in_flight, state, key_id, mac
                     FROM cardsync_jobs WHERE job_id = $1 FOR UPDATE",
                    &[&job.0],
                )
                .await?
            else {
                continue;
            };
            let key_id: String = row.get(6);
            if key_id != old.id() {
                // Rotated meanwhile by another process.
                continue;
            }
            let (name, merchant, key_env, base_url, state): (
                String,
                String,
                String,
                String,
                String,
            ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(5));
            if state == "planning" {
                // Fingerprints live only while a job is planned; a create of that job makes
                // them again under the new key.
                tx.execute("DELETE FROM cardsync_jobs WHERE job_id = $1", &[&job.0])
                    .await?;
                tx.commit().await?;
                continue;
            }
            let facts = JobFacts {
                job,
                name: &name,
                merchant: &merchant,
                key_env: &key_env,
                base_url: &base_url,
                max_in_flight: row.get(4),
                state: &state,
            };
            facts.verify(old, row.get(7))?;
            let requests = tx
                .query(
                    &format!(
                        "SELECT mac, {FACTS} FROM cardsync_requests WHERE job_id = $1
                         ORDER BY seq FOR UPDATE"
                    ),
                    &[&job.0],
                )
                .await?;
            let mut versions = std::collections::HashMap::new();
            for r in &requests {
                let f = RequestFacts::from_row(job, r, 1)?;
                f.verify(old, &name, r.get(0))?;
                tx.execute(
                    "UPDATE cardsync_requests SET mac = $3 WHERE job_id = $1 AND seq = $2",
                    &[&job.0, &seq_i32(f.seq), &f.mac(new)],
                )
                .await?;
                versions.insert(seq_i32(f.seq), f.version);
            }
            for (table, column, what) in [
                ("cardsync_card_sets", "cards", "cards"),
                ("cardsync_results", "results", "results"),
            ] {
                let sealed = tx
                    .query(
                        &format!("SELECT seq, {column} FROM {table} WHERE job_id = $1 FOR UPDATE"),
                        &[&job.0],
                    )
                    .await?;
                for r in &sealed {
                    let seq: i32 = r.get(0);
                    let value: &[u8] = r.get(1);
                    if !old.sealed_by(value) {
                        continue;
                    }
                    let version = versions.get(&seq).copied().unwrap_or(0);
                    let aad = sealed_aad(what, job, seq as u64, version);
                    let plain = old.open(value, &aad)?;
                    tx.execute(
                        &format!("UPDATE {table} SET {column} = $3 WHERE job_id = $1 AND seq = $2"),
                        &[&job.0, &seq, &new.seal(&plain, &aad)?],
                    )
                    .await?;
                    count += 1;
                }
            }
            // Its American Express updates.
            let updates = tx
                .query(
                    "SELECT event_id, state, mac, results FROM cardsync_updates
                     WHERE job_id = $1 FOR UPDATE",
                    &[&job.0],
                )
                .await?;
            for u in &updates {
                let (event_id, state): (String, String) = (u.get(0), u.get(1));
                let fields = update_fields(job, &event_id, &state);
                let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
                if !u
                    .get::<_, Option<&[u8]>>(2)
                    .is_some_and(|tag| old.verify(&refs, tag))
                {
                    return Err(PgError::Tampered {
                        job: name.clone(),
                        what: format!(
                            "the update of event {event_id} does not match its authentication"
                        ),
                    });
                }
                let resealed = match u.get::<_, Option<&[u8]>>(3) {
                    Some(value) if old.sealed_by(value) => {
                        let aad = update_aad(job, &event_id);
                        count += 1;
                        Some(new.seal(&old.open(value, &aad)?, &aad)?)
                    }
                    Some(value) => Some(value.to_vec()),
                    None => None,
                };
                tx.execute(
                    "UPDATE cardsync_updates SET mac = $3, results = $4
                     WHERE job_id = $1 AND event_id = $2",
                    &[
                        &job.0,
                        &event_id,
                        &update_mac(new, job, &event_id, &state),
                        &resealed,
                    ],
                )
                .await?;
            }
            tx.execute(
                "UPDATE cardsync_jobs SET key_id = $2, mac = $3 WHERE job_id = $1",
                &[&job.0, &new.id(), &facts.mac(new)],
            )
            .await?;
            tx.commit().await?;
        }
        // The merchant identity key, last: workers holding both keys open it either way.
        let tx = client.transaction().await?;
        if let Some(row) = tx
            .query_opt(
                "SELECT sealed FROM cardsync_secrets WHERE name = 'identity' FOR UPDATE",
                &[],
            )
            .await?
        {
            let sealed: Vec<u8> = row.get(0);
            if old.sealed_by(&sealed) {
                let plain = old.open(&sealed, IDENTITY_AAD)?;
                tx.execute(
                    "UPDATE cardsync_secrets SET sealed = $1 WHERE name = 'identity'",
                    &[&new.seal(&plain, IDENTITY_AAD)?],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(count)
    }
}

/// The associated data of the sealed merchant identity key.
const IDENTITY_AAD: &[u8] = b"secret/identity";

/// The journal's merchant identity key: opened from the journal, or made from the current
/// key's seed (so that merchants fingerprinted before the identity key existed keep their
/// fingerprint) and kept, sealed, by the first process that needs it.
async fn load_identity(client: &Object, keys: &Keys) -> Result<hmac::Key, PgError> {
    for _ in 0..2 {
        if let Some(row) = client
            .query_opt(
                "SELECT sealed FROM cardsync_secrets WHERE name = 'identity'",
                &[],
            )
            .await?
        {
            let sealed: Vec<u8> = row.get(0);
            let plain = keys.for_sealed(&sealed).open(&sealed, IDENTITY_AAD)?;
            return Ok(hmac::Key::new(hmac::HMAC_SHA256, &plain));
        }
        let sealed = keys
            .current
            .seal(keys.current.identity_seed(), IDENTITY_AAD)?;
        client
            .execute(
                "INSERT INTO cardsync_secrets (name, sealed) VALUES ('identity', $1)
                 ON CONFLICT DO NOTHING",
                &[&sealed],
            )
            .await?;
    }
    Err(PgError::Corrupt(
        "the merchant identity key could not be kept".into(),
    ))
}

/// Erases a job's cards, fingerprints, results and late answers.
async fn erase(tx: &deadpool_postgres::Transaction<'_>, job: JobId) -> Result<(), PgError> {
    for table in [
        "cardsync_card_sets",
        "cardsync_fingerprints",
        "cardsync_results",
        "cardsync_result_counts",
        "cardsync_late_answers",
        "cardsync_updates",
    ] {
        tx.execute(&format!("DELETE FROM {table} WHERE job_id = $1"), &[&job.0])
            .await?;
    }
    Ok(())
}
