//! The journal behind a job: the [`Store`] trait, the changes a job asks it to make, the lease
//! that lets one runner at a time hold a job, and [`MemoryStore`], an in-memory store for tests
//! and examples.
//!
//! A store does four things: load what it holds ([`Store::load`], [`Store::cards`]), apply a
//! set of [`Changes`] atomically ([`Store::apply`]: every request update in it is a
//! compare-and-set of the request's state), and take, renew and give back a [`Lease`] with a
//! fencing token. Every `apply` carries the lease it was made under; a store refuses the
//! changes of a lease that is no longer current ([`StoreError::Fenced`]), so that a runner that
//! was paused past its lease and woke up cannot write over the one that took the job over.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::{Checkpoint, EventRecord, RequestRecord, RequestState, Snapshot, StoredCard};

/// One change to a job's journal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Forget everything but the lease: a plan that was not finished is started again.
    DiscardPlan,
    /// Set a meta value.
    Meta {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Add a planned request and its cards.
    AddRequest {
        /// The request (state `planned`).
        request: RequestRecord,
        /// Its cards.
        cards: Vec<StoredCard>,
    },
    /// Take the cards of these input rows (duplicates found after planning) out of the plan;
    /// a request left with none is deleted.
    RemoveRows {
        /// The input rows of the cards to take out.
        rows: Vec<u64>,
    },
    /// Move a request from one state to another: a compare-and-set.
    Request(RequestUpdate),
    /// Record a webhook event, or change what became of one.
    Event(EventRecord),
    /// Add to the count of a status.
    Tally {
        /// The status.
        status: String,
        /// How many to add (negative to take away).
        delta: i64,
    },
    /// The sink's position, now durable.
    Checkpoint(Checkpoint),
    /// Erase every card (the job is done: nothing can need them again).
    EraseCards,
}

/// A compare-and-set of one request's state, with what became known of it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestUpdate {
    /// The request.
    pub seq: u64,
    /// The state it must be in; otherwise the whole set of changes is refused.
    pub from: RequestState,
    /// The state it moves to.
    pub to: RequestState,
    /// Its batch id, when one became known (kept otherwise).
    pub batch_id: Option<String>,
    /// The event that announced its results, when one became known (kept otherwise).
    pub event_id: Option<String>,
    /// Why it failed, or what was decided (replaces what was there).
    pub message: Option<String>,
}

impl RequestUpdate {
    /// A move from `from` to `to`.
    pub fn new(seq: u64, from: RequestState, to: RequestState) -> RequestUpdate {
        RequestUpdate {
            seq,
            from,
            to,
            batch_id: None,
            event_id: None,
            message: None,
        }
    }

    /// With the batch id.
    pub fn with_batch_id(mut self, batch_id: impl Into<String>) -> RequestUpdate {
        self.batch_id = Some(batch_id.into());
        self
    }

    /// With the event id.
    pub fn with_event_id(mut self, event_id: impl Into<String>) -> RequestUpdate {
        self.event_id = Some(event_id.into());
        self
    }

    /// With a message.
    pub fn with_message(mut self, message: impl Into<String>) -> RequestUpdate {
        self.message = Some(message.into());
        self
    }

    /// Applies the update to a record whose state was checked.
    pub fn apply_to(&self, record: &mut RequestRecord) {
        record.state = self.to;
        if let Some(b) = &self.batch_id {
            record.batch_id = Some(b.clone());
        }
        if let Some(e) = &self.event_id {
            record.event_id = Some(e.clone());
        }
        record.message.clone_from(&self.message);
    }
}

/// A set of changes a store applies atomically: all of them or none.
///
/// ```
/// use cardsync_job::{Change, Changes, Checkpoint};
/// let mut changes = Changes::new(vec![Change::Meta { key: "k".into(), value: "v".into() }]);
/// assert!(!changes.wants_checkpoint());
/// changes.set_checkpoint(Checkpoint::new(vec![10]));
/// assert_eq!(changes.items().len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    id: u64,
    items: Vec<Change>,
    wants_checkpoint: bool,
    before_effect: bool,
}

impl Changes {
    /// A set of changes.
    pub fn new(items: Vec<Change>) -> Changes {
        Changes {
            id: 0,
            items,
            wants_checkpoint: false,
            before_effect: true,
        }
    }

    pub(crate) fn numbered(
        id: u64,
        items: Vec<Change>,
        wants_checkpoint: bool,
        before_effect: bool,
    ) -> Changes {
        Changes {
            id,
            items,
            wants_checkpoint,
            before_effect,
        }
    }

    /// Whether something that cannot be taken back (a POST CardSync bills) follows these
    /// changes: they must survive a power cut, not only a crash of the process, before
    /// [`Store::apply`] returns. Other changes may be made durable later, with the next ones
    /// that are (a journal that loses them on a power cut goes back to a state the job
    /// resumes from, doing again only what is safe to do again). Stores that make every change
    /// durable at once may ignore this. `true` for changes made with [`Changes::new`].
    pub fn before_effect(&self) -> bool {
        self.before_effect
    }

    /// The number to acknowledge with [`crate::Job::handle_persisted`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The changes, in order.
    pub fn items(&self) -> &[Change] {
        &self.items
    }

    /// Whether result rows were written to the sink before these changes: the sink must be
    /// made durable ([`crate::Sink::checkpoint`]) and its checkpoint added with
    /// [`Changes::set_checkpoint`] before they are applied.
    pub fn wants_checkpoint(&self) -> bool {
        self.wants_checkpoint
    }

    /// Adds the sink's checkpoint.
    pub fn set_checkpoint(&mut self, checkpoint: Checkpoint) {
        self.items.push(Change::Checkpoint(checkpoint));
        self.wants_checkpoint = false;
    }
}

/// Who holds a job: enough for a person to find the process, and for a later run on the same
/// host to tell whether it is still alive.
///
/// ```
/// use cardsync_job::Holder;
/// let h = Holder::new("billing-1", 4242, 1_700_000_000_000);
/// assert_eq!(h.to_string(), "process 4242 on billing-1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Holder {
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When the process took the lease (milliseconds since the Unix epoch).
    pub since_ms: u64,
    /// When the process started, in the host's own terms (on Linux, the start time from
    /// `/proc/PID/stat`), so that a process id reused by another program is not taken for the
    /// holder.
    pub process_start: Option<u64>,
}

impl Holder {
    /// A holder.
    pub fn new(host: impl Into<String>, pid: u32, since_ms: u64) -> Holder {
        Holder {
            host: host.into(),
            pid,
            since_ms,
            process_start: None,
        }
    }

    /// With the process's start time.
    pub fn with_process_start(mut self, start: Option<u64>) -> Holder {
        self.process_start = start;
        self
    }

    /// Whether this is the same process as `other`.
    pub fn same_process(&self, other: &Holder) -> bool {
        self.host == other.host
            && self.pid == other.pid
            && self.process_start == other.process_start
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} on {}", self.pid, self.host)
    }
}

/// The right to change a job's journal, until `expires_ms`, renewed while the runner works.
///
/// Each time a lease changes hands its `token` grows; a store refuses changes made under any
/// token but the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The fencing token.
    pub token: u64,
    /// Who holds it.
    pub holder: Holder,
    /// When it runs out (milliseconds since the Unix epoch; 0: given back).
    pub expires_ms: u64,
}

impl Lease {
    /// A lease.
    pub fn new(token: u64, holder: Holder, expires_ms: u64) -> Lease {
        Lease {
            token,
            holder,
            expires_ms,
        }
    }

    /// Whether `candidate` may take the job over from this lease at `now_ms`: the lease ran
    /// out or was given back, its holder is `candidate` itself, or `gone` says its holder is
    /// provably no longer running.
    ///
    /// ```
    /// use cardsync_job::{Holder, Lease};
    /// let a = Holder::new("h", 1, 0);
    /// let b = Holder::new("h", 2, 0);
    /// let lease = Lease::new(1, a, 10_000);
    /// assert!(!lease.can_be_taken(&b, 5_000, &|_| false));
    /// assert!(lease.can_be_taken(&b, 10_000, &|_| false));
    /// assert!(lease.can_be_taken(&b, 5_000, &|h| h.pid == 1));
    /// ```
    pub fn can_be_taken(
        &self,
        candidate: &Holder,
        now_ms: u64,
        gone: &dyn Fn(&Holder) -> bool,
    ) -> bool {
        self.expires_ms <= now_ms || self.holder.same_process(candidate) || gone(&self.holder)
    }
}

/// What [`Store::acquire`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_enums)] // taken or held: there is no third answer
pub enum Acquired {
    /// The lease is ours.
    Taken(Lease),
    /// Someone else holds it.
    Held(Lease),
}

/// Errors of a store.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The lease these changes were made under is no longer current: another runner took the
    /// job over. Nothing was written.
    Fenced {
        /// Who holds the job now, if anyone.
        holder: Option<Holder>,
    },
    /// A request was not in the state a change expected. Nothing was written.
    Conflict {
        /// The request.
        seq: u64,
        /// The state the change expected.
        expected: RequestState,
        /// The state it was in (`None`: no such request).
        found: Option<RequestState>,
    },
    /// The journal holds something this version cannot read.
    Corrupt(String),
    /// The store's own failure (a database error, a full disk).
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Fenced { holder: Some(h) } => {
                write!(f, "the job was taken over by {h}: this run lost its lease")
            }
            StoreError::Fenced { holder: None } => f.write_str("this run lost its lease"),
            StoreError::Conflict {
                seq,
                expected,
                found: Some(found),
            } => write!(f, "request {seq} is {found}, not {expected} as expected"),
            StoreError::Conflict { seq, .. } => write!(f, "request {seq} does not exist"),
            StoreError::Corrupt(what) => write!(f, "the journal is damaged: {what}"),
            StoreError::Backend(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Backend(e) => Some(&**e),
            _ => None,
        }
    }
}

/// The journal of one job.
///
/// Implementations apply each [`Changes`] atomically, check the lease of every `apply` against
/// the current one, and check the `from` state of every [`Change::Request`].
pub trait Store {
    /// Takes the lease for `holder`, unless another holds it ([`Lease::can_be_taken`] says
    /// when it may be taken over).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    fn acquire(
        &mut self,
        holder: &Holder,
        now_ms: u64,
        ttl_ms: u64,
        gone: &dyn Fn(&Holder) -> bool,
    ) -> Result<Acquired, StoreError>;

    /// Extends the lease to `now_ms + ttl_ms`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Fenced`] when the lease is no longer current.
    fn renew(&mut self, lease: &Lease, now_ms: u64, ttl_ms: u64) -> Result<Lease, StoreError>;

    /// Gives the lease back, so that the next runner need not wait for it to run out.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails; a lease no longer current is left alone.
    fn release(&mut self, lease: &Lease) -> Result<(), StoreError>;

    /// Everything the store holds, but the cards.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    fn load(&mut self) -> Result<Snapshot, StoreError>;

    /// The cards of one request, in row order.
    ///
    /// # Errors
    ///
    /// [`StoreError`].
    fn cards(&mut self, seq: u64) -> Result<Vec<StoredCard>, StoreError>;

    /// Applies the changes atomically, under `lease`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Fenced`], [`StoreError::Conflict`]: nothing was written.
    fn apply(&mut self, lease: &Lease, changes: &Changes) -> Result<(), StoreError>;

    /// Moves one request from `from` to `to`, or fails with [`StoreError::Conflict`].
    ///
    /// # Errors
    ///
    /// As [`Store::apply`].
    fn compare_and_set(
        &mut self,
        lease: &Lease,
        seq: u64,
        from: RequestState,
        to: RequestState,
    ) -> Result<(), StoreError> {
        self.apply(
            lease,
            &Changes::new(vec![Change::Request(RequestUpdate::new(seq, from, to))]),
        )
    }
}

/// An in-memory [`Store`], for tests and examples. Clones share the same journal, as two
/// processes share one file; [`MemoryStore::fail_at`] makes an `apply` fail, for crash tests.
///
/// ```
/// use cardsync_job::{Acquired, Holder, MemoryStore, Store};
///
/// let mut store = MemoryStore::new();
/// let mut other = store.clone();
/// let Acquired::Taken(lease) = store.acquire(&Holder::new("h", 1, 0), 0, 1_000, &|_| false)? else { panic!() };
/// // A second runner finds it held, until the lease runs out.
/// assert!(matches!(other.acquire(&Holder::new("h", 2, 0), 500, 1_000, &|_| false)?, Acquired::Held(_)));
/// let Acquired::Taken(next) = other.acquire(&Holder::new("h", 2, 0), 1_000, 1_000, &|_| false)? else { panic!() };
/// assert!(next.token > lease.token);
/// // The first runner's changes are now refused.
/// assert!(store.apply(&lease, &Default::default()).is_err());
/// # Ok::<(), cardsync_job::StoreError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Memory>>,
}

#[derive(Debug, Default)]
struct Memory {
    lease: Option<Lease>,
    snapshot: Snapshot,
    cards: BTreeMap<u64, Vec<StoredCard>>,
    applied: u64,
    fail_at: Option<(u64, bool)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the `n`-th call of [`Store::apply`] from now (counting from 1) fail without
    /// writing anything, as a process killed before its commit would; later calls succeed.
    pub fn fail_at(&self, n: u64) {
        let mut m = self.lock();
        m.fail_at = Some((m.applied + n, false));
    }

    /// Makes the `n`-th call of [`Store::apply`] from now write its changes and then fail,
    /// as a process killed right after its commit would.
    pub fn fail_after(&self, n: u64) {
        let mut m = self.lock();
        m.fail_at = Some((m.applied + n, true));
    }

    /// How many sets of changes were applied.
    pub fn applied(&self) -> u64 {
        self.lock().applied
    }

    /// The lease as it stands.
    pub fn lease(&self) -> Option<Lease> {
        self.lock().lease.clone()
    }
}

impl Store for MemoryStore {
    fn acquire(
        &mut self,
        holder: &Holder,
        now_ms: u64,
        ttl_ms: u64,
        gone: &dyn Fn(&Holder) -> bool,
    ) -> Result<Acquired, StoreError> {
        let mut m = self.lock();
        match &m.lease {
            Some(l) if !l.can_be_taken(holder, now_ms, gone) => Ok(Acquired::Held(l.clone())),
            current => {
                let token = current.as_ref().map_or(0, |l| l.token) + 1;
                let lease = Lease::new(token, holder.clone(), now_ms + ttl_ms);
                m.lease = Some(lease.clone());
                Ok(Acquired::Taken(lease))
            }
        }
    }

    fn renew(&mut self, lease: &Lease, now_ms: u64, ttl_ms: u64) -> Result<Lease, StoreError> {
        let mut m = self.lock();
        match &mut m.lease {
            Some(l) if l.token == lease.token => {
                l.expires_ms = now_ms + ttl_ms;
                Ok(l.clone())
            }
            other => Err(StoreError::Fenced {
                holder: other.as_ref().map(|l| l.holder.clone()),
            }),
        }
    }

    fn release(&mut self, lease: &Lease) -> Result<(), StoreError> {
        let mut m = self.lock();
        if let Some(l) = &mut m.lease
            && l.token == lease.token
        {
            l.expires_ms = 0;
        }
        Ok(())
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(self.lock().snapshot.clone())
    }

    fn cards(&mut self, seq: u64) -> Result<Vec<StoredCard>, StoreError> {
        Ok(self.lock().cards.get(&seq).cloned().unwrap_or_default())
    }

    fn apply(&mut self, lease: &Lease, changes: &Changes) -> Result<(), StoreError> {
        let mut m = self.lock();
        match &m.lease {
            Some(l) if l.token == lease.token => {}
            other => {
                return Err(StoreError::Fenced {
                    holder: other.as_ref().map(|l| l.holder.clone()),
                });
            }
        }
        let attempt = m.applied + 1;
        let fail = match m.fail_at {
            Some((n, after)) if n == attempt => {
                m.fail_at = None;
                if !after {
                    return Err(StoreError::Backend("injected failure".into()));
                }
                true
            }
            _ => false,
        };
        // Work on copies, so that a refused set leaves nothing behind.
        let mut snapshot = m.snapshot.clone();
        let mut cards = m.cards.clone();
        for change in changes.items() {
            apply_change(&mut snapshot, &mut cards, change)?;
        }
        m.snapshot = snapshot;
        m.cards = cards;
        m.applied = attempt;
        if fail {
            return Err(StoreError::Backend(
                "injected failure after the commit".into(),
            ));
        }
        Ok(())
    }
}

/// Applies one change to an in-memory journal.
fn apply_change(
    s: &mut Snapshot,
    cards: &mut BTreeMap<u64, Vec<StoredCard>>,
    change: &Change,
) -> Result<(), StoreError> {
    match change {
        Change::DiscardPlan => cards.clear(),
        Change::AddRequest { request, cards: c } => {
            cards.insert(request.seq, c.clone());
        }
        Change::RemoveRows { rows } => {
            let rows: std::collections::HashSet<u64> = rows.iter().copied().collect();
            for (seq, list) in cards.iter_mut() {
                let before = list.len();
                list.retain(|c| !rows.contains(&c.row));
                if list.len() != before
                    && let Some(r) = s.requests.iter_mut().find(|r| r.seq == *seq)
                {
                    r.cards = list.len() as u64;
                }
            }
            cards.retain(|_, list| !list.is_empty());
            s.requests.retain(|r| cards.contains_key(&r.seq));
        }
        Change::Request(u) => {
            let found = s.requests.iter().find(|r| r.seq == u.seq).map(|r| r.state);
            if found != Some(u.from) {
                return Err(StoreError::Conflict {
                    seq: u.seq,
                    expected: u.from,
                    found,
                });
            }
        }
        Change::EraseCards => cards.clear(),
        _ => {}
    }
    apply_to_snapshot(s, change);
    Ok(())
}

/// Applies one change to a snapshot (the cards aside), its `from` states already checked.
pub(crate) fn apply_to_snapshot(s: &mut Snapshot, change: &Change) {
    match change {
        Change::DiscardPlan => *s = Snapshot::default(),
        Change::Meta { key, value } => {
            s.meta.insert(key.clone(), value.clone());
        }
        Change::AddRequest { request, .. } => {
            s.requests.retain(|r| r.seq != request.seq);
            s.requests.push(request.clone());
            s.requests.sort_by_key(|r| r.seq);
        }
        Change::Request(u) => {
            if let Some(r) = s.requests.iter_mut().find(|r| r.seq == u.seq) {
                u.apply_to(r);
            }
        }
        Change::Event(e) => match s.events.iter_mut().find(|x| x.event_id == e.event_id) {
            Some(x) => *x = e.clone(),
            None => s.events.push(e.clone()),
        },
        Change::Tally { status, delta } => {
            *s.tally.entry(status.clone()).or_default() += delta;
        }
        Change::Checkpoint(c) => s.checkpoint = c.clone(),
        Change::RemoveRows { .. } | Change::EraseCards => {}
    }
}
