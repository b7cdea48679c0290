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
//! (here a closure that hands each request to the in-process emulator), and applies the results
//! as they arrive; [`sync`] does the rest (plan, lease, run, resume), on tokio with `TokioEnv`
//! (the `tokio` feature):
//!
//! ```
//! # #[cfg(feature = "tokio")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cardsync_core::{Record, UpdateStatus};
//! use cardsync_job::{JobOptions, MemorySink, MemoryStore, SyncOptions, TokioEnv, sync};
//! use cardsync_proto::{BaseUrl, Config, MerchantKey};
//! # use std::sync::{Arc, Mutex};
//! # use cardsync_sandbox::{Emulator, Settings};
//! # let mut settings = Settings::default();
//! # settings.complete_after = std::time::Duration::ZERO;
//! # let emulator = Arc::new(Mutex::new(Emulator::new(settings, std::time::SystemTime::now())));
//! # let started = std::time::Instant::now();
//! # // Your HTTP client (`cardsync_hyper::HyperTransport` in production): here, the emulator.
//! # let transport = move |r: http::Request<Vec<u8>>| {
//! #     let answer = emulator.lock().unwrap().handle(&r, started.elapsed());
//! #     async move { Ok::<_, cardsync_proto::transport::TransportError>(answer) }
//! # };
//!
//! // The cards on file (from your own tables), and where CardSync is.
//! let cards = [("cus_1", "4457010000000009", "01/50"), ("cus_2", "5112010000000003", "02/50")];
//! let config = Config::new(BaseUrl::parse("http://127.0.0.1:1/")?)
//!     .with_merchant_key(MerchantKey::new("sandbox_merchant_key")?);
//!
//! // The journal and the results' destination: your database in production (a `Store` and
//! // a `Sink`); rows reach the sink as each batch's results arrive.
//! let mut journal = MemoryStore::new();
//! let mut results = MemorySink::new();
//! let summary = sync(
//!     cards.iter().map(|(id, card, exp)| Record::new(id, card, exp)),
//!     &transport,
//!     &mut journal,
//!     &mut results,
//!     &mut TokioEnv::default(),
//!     &SyncOptions::new(JobOptions::new(config)),
//!     |rejected| eprintln!("row {} rejected", rejected.row),
//! )
//! .await?;
//! assert!(summary.done);
//! for row in results.rows() {
//!     if row.status == Some(UpdateStatus::UpdatedCard) {
//!         println!("{}: a new card ending {}", row.id, &row.card.masked().as_str()[12..]);
//!     }
//! }
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```
//!
//! The pieces [`sync`] is made of stay public: [`PlanRecorder`] to plan into a store,
//! [`Store::acquire`] and [`LeaseKeeper`] for the lease, [`Job`] and [`run`] to drive the job
//! with an [`Env`] of your own (webhook events, decisions about unconfirmed requests, progress).
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
mod embed;
pub mod hooks;
mod job;
mod model;
pub mod rules;
mod sink;
mod store;

pub use driver::{Env, LeaseKeeper, RunError, run};
#[cfg(feature = "tokio")]
pub use embed::TokioEnv;
pub use embed::{SyncError, SyncOptions, sync};
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
