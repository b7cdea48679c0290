//! Sans-IO domain types for the CardSync Account Updater API.
//!
//! This crate parses and validates what a merchant holds (card numbers, expiry dates, SE
//! numbers), names what the card networks answer ([`UpdateStatus`], [`Stats`]), and plans the
//! requests CardSync needs ([`Planner`]). It does no I/O: it reads no files, opens no sockets,
//! starts no threads and never reads the clock (the caller passes "today" where it matters).
//! The wire format lives in `cardsync-proto`, the transport in `cardsync-hyper`.
//!
//! Card numbers are [`Pan`]s, which cannot leak: `Debug` shows at most the first six and last
//! four digits, there is no `Display`, the full number comes only from [`Pan::expose`], and the
//! memory is zeroed on drop.
//!
//! ```
//! use cardsync_core::{Brand, Expiry, Pan, RouteKind, PlanOptions, Planner, Record, RowVerdict};
//!
//! let pan = Pan::parse("5112 0100 0000 0003")?;
//! assert_eq!(pan.brand(), Brand::Mastercard);
//! assert_eq!(format!("{pan:?}"), "Pan(511201******0003)");
//!
//! let mut planner = Planner::new(PlanOptions::default());
//! let verdict = planner.handle_record(Record::new("sub-42", "5112010000000003", "02/50"));
//! assert!(matches!(verdict, RowVerdict::Accepted(a) if a.route == RouteKind::Batch));
//! planner.finish();
//! let request = planner.poll_request().expect("one batch");
//! assert_eq!(request.cards[0].exp, Expiry::parse("02/2050")?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

mod brand;
mod expiry;
#[cfg(fuzzing)]
pub mod fuzzing;
mod generated;
mod iin;
mod pan;
mod plan;
mod redact;
mod stats;
mod status;
mod test_cards;

pub use brand::{Brand, RouteKind, UnknownBrandName};
pub use expiry::{Expiry, ExpiryError, YearMonth};
pub use pan::{
    ExposedPan, MAX_PAN_LEN, MIN_PAN_LEN, Pan, PanError, PanFragment, luhn_check_digit,
    mask_card_text,
};
pub use plan::{
    AcceptedRow, AsRecord, CheckedRecord, Checker, MAX_CARDS_PER_REQUEST, MAX_ID_LEN,
    MaxPerRequestError, Plan, PlanEvent, PlanOptions, PlannedCard, PlannedRequest, Planner, Record,
    RecordBuf, RejectReason, RejectedRow, Route, RowVerdict, RowWarning, RowWarnings, SeNumber,
    SeNumberError, SeenKind, SeenStore, plan,
};
pub use redact::redact_digit_runs;
pub use stats::Stats;
pub use status::UpdateStatus;
pub use test_cards::{SANDBOX_TEST_CARDS, TestCard, test_card};
