//! The CardSync account-updater job as a library: every planned request sent once, waited for,
//! and its results delivered once, across crashes, restarts and overlapping runs.
//!
//! CardSync has no idempotency key for batches: a batch sent twice is processed and billed
//! twice. This crate makes the job exactly-once with three pieces, each replaceable:
//!
//! - [`Job`], a sans-IO state machine in the style of [`cardsync_core::Planner`]: fed the plan,
//!   the answers to its calls, webhook events, decisions and the time; it says what to persist,
//!   what to send, which result rows to write, and when it wants to be woken.
//! - A [`Store`] (the journal): applies changes atomically, compare-and-sets request states,
//!   and holds the job's [`Lease`], whose fencing token makes a runner that was paused past its
//!   lease unable to write. [`MemoryStore`] is here; `cardsync-job-sqlite` is the SQLite one.
//! - A [`Sink`] for the results: [`FileSink`] writes the CSV or JSON Lines results file and
//!   the changes file; an embedder can write straight into its own database.
//!
//! [`run`] drives a job over any [`cardsync_proto::transport::Transport`] on any async runtime
//! (the runtime's part is the small [`Env`] trait). This crate depends on `cardsync-core` and
//! `cardsync-proto` only: no runtime, no HTTP client, no database.
//!
//! # Embedding
//!
//! A billing system feeds cards from its own tables, drives the job with its own HTTP client
//! (here a closure that hands each request to the in-process emulator), and applies the
//! results as they arrive:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, Instant, SystemTime};
//!
//! use cardsync_core::{PlanOptions, Planner, Record, UpdateStatus};
//! use cardsync_job::{
//!     Acquired, Checkpoint, Env, Holder, Job, JobOptions, LeaseKeeper, MemoryStore, PlanRecorder,
//!     ResultRow, Sink, SinkError, Store, run,
//! };
//! use cardsync_proto::transport::TransportError;
//! use cardsync_proto::{BaseUrl, Config, MerchantKey, WebhookEvent};
//! use cardsync_sandbox::{Emulator, Settings};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The billing system's own cards (two documented sandbox test cards).
//! let stored = [("cus_1", "4457010000000009", "01/50"), ("cus_2", "5112010000000003", "02/50")];
//!
//! // Its own HTTP client: here, the emulator in-process.
//! let mut settings = Settings::default();
//! settings.complete_after = Duration::ZERO;
//! let emulator = Arc::new(Mutex::new(Emulator::new(settings, SystemTime::now())));
//! let started = Instant::now();
//! let transport = move |request: http::Request<Vec<u8>>| {
//!     let answer = emulator.lock().unwrap().handle(&request, started.elapsed());
//!     async move { Ok::<_, TransportError>(answer) }
//! };
//!
//! // The journal (use cardsync-job-sqlite or your own database in production).
//! let mut store = MemoryStore::new();
//! let holder = Holder::new("billing-1", std::process::id(), 0);
//! let Acquired::Taken(lease) = store.acquire(&holder, 0, 30_000, &|_| false)? else {
//!     panic!("another runner holds the job");
//! };
//!
//! // Plan: validate, route and group the cards, and record the plan.
//! let mut planner = Planner::new(PlanOptions::default());
//! let mut recorder = PlanRecorder::new(&store.load()?);
//! for (id, card, exp) in stored {
//!     planner.handle_record(Record::new(id, card, exp));
//! }
//! planner.finish();
//! while let Some(request) = planner.poll_request() {
//!     store.apply(&lease, &recorder.request(request))?;
//! }
//! store.apply(&lease, &recorder.finish(planner.rows(), 0, vec![]))?;
//!
//! // The results go straight into the billing system's own tables, as they arrive. (A real
//! // sink writes them in a transaction of its own; `checkpoint` says how far it has
//! // committed, and `rewind` rolls back to that after a crash.)
//! #[derive(Default)]
//! struct Billing { cards: Vec<String>, durable: usize }
//! impl Sink for Billing {
//!     fn rewind(&mut self, to: &Checkpoint) -> Result<(), SinkError> {
//!         self.cards.truncate(to.positions().first().copied().unwrap_or(0) as usize);
//!         Ok(())
//!     }
//!     fn append(&mut self, rows: &[ResultRow]) -> Result<(), SinkError> {
//!         for row in rows {
//!             let change = match row.status {
//!                 Some(UpdateStatus::UpdatedCard) => format!("{}: new card ending {}", row.id, row.card.masked().as_str().split_at(12).1),
//!                 Some(UpdateStatus::UpdatedExpiry) => format!("{}: new expiry {}", row.id, row.exp.as_deref().unwrap_or("")),
//!                 Some(UpdateStatus::Closed) => format!("{}: closed, stop billing", row.id),
//!                 _ => continue,
//!             };
//!             self.cards.push(change);
//!         }
//!         Ok(())
//!     }
//!     fn checkpoint(&mut self) -> Result<Checkpoint, SinkError> {
//!         self.durable = self.cards.len();
//!         Ok(Checkpoint::new(vec![self.durable as u64]))
//!     }
//!     fn finish(&mut self) -> Result<(), SinkError> { Ok(()) }
//! }
//!
//! // Run.
//! struct Tokio;
//! impl Env for Tokio {
//!     fn now(&self) -> Instant { Instant::now() }
//!     fn unix_ms(&self) -> u64 { 0 }
//!     async fn wait(&mut self, deadline: Option<Instant>) -> Option<WebhookEvent> {
//!         if let Some(d) = deadline { tokio::time::sleep_until(d.into()).await; }
//!         None
//!     }
//! }
//! let config = Config::new(BaseUrl::parse("http://127.0.0.1:1/")?)
//!     .with_merchant_key(MerchantKey::new("sandbox_merchant_key")?);
//! let mut job = Job::new(store.load()?, JobOptions::new(config), Instant::now());
//! let mut billing = Billing::default();
//! let mut keeper = LeaseKeeper::new(lease, Duration::from_secs(30));
//! let summary = run(&mut job, &transport, &mut store, &mut billing, &mut keeper, &mut Tokio).await?;
//! assert!(summary.done);
//! assert_eq!(billing.cards, ["cus_1: new card ending 1115", "cus_2: new expiry 02/53"]);
//! # Ok(())
//! # }
//! ```
//!
//! # Overlapping runs
//!
//! A journal is held by one runner at a time: [`Store::acquire`] takes the lease or says who
//! holds it. A holder that died leaves a lease that a later run takes over once it has run out,
//! or at once when the holder is provably gone (the `gone` callback: same host, process no
//! longer alive). [`run`] renews the lease every third of its length, and checks that it has
//! half of it left before each batch it sends. Every change carries the lease's fencing token:
//! a runner paused past its lease (SIGSTOP, a VM migration) that wakes up finds its changes
//! refused ([`RunError::LostLease`]) and stops without sending anything more.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

mod driver;
pub mod hooks;
mod job;
mod model;
pub mod rules;
mod sink;
mod store;

pub use driver::{Env, LeaseKeeper, RunError, run};
pub use job::{Call, CallId, Decision, Job, JobOptions, Output, PlanRecorder, Unconfirmed, Wait};
pub use model::{
    Checkpoint, EventRecord, EventState, RequestKind, RequestRecord, RequestState, ResultRow,
    Snapshot, StatusCount, StoredCard, Summary,
};
pub use rules::status_counts;
pub use sink::{
    CHANGE_COLUMNS, FileSink, Format, MemorySink, RESULT_COLUMNS, RowFile, Sink, SinkError,
    create_private, open_private,
};
pub use store::{
    Acquired, Change, Changes, Holder, Lease, MemoryStore, RequestUpdate, Store, StoreError,
};
