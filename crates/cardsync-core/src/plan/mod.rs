//! Planning: turning card records into the requests CardSync needs.
//!
//! American Express cards go to subscription requests, one group per SE number; Visa,
//! Mastercard and Discover cards go to batch requests; no request holds more than
//! [`MAX_CARDS_PER_REQUEST`] cards. Every row is either accepted into a request or rejected
//! with its row number, id, masked card and reasons: nothing is dropped silently.
//!
//! [`Planner`] is a state machine with no I/O: feed it records with
//! [`Planner::handle_record`], take full requests with [`Planner::poll_request`], and call
//! [`Planner::finish`] at the end of the input to release the partly filled ones. [`plan`]
//! wraps it as an iterator.
//!
//! Memory is bounded by the open requests (one batch and one subscription group per SE number,
//! each at most the request size) plus, while duplicate checking is on, about 17 bytes per
//! distinct id and card (a keyed 64-bit fingerprint and a row number, in a table at most three
//! quarters full), never the input itself.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use crate::{Brand, Expiry, ExpiryError, Pan, PanError, PanFragment, RouteKind, mask_card_text};

/// The most cards CardSync takes in one batch or subscription request.
pub const MAX_CARDS_PER_REQUEST: usize = 10_000;

mod checker;
mod iter;
mod options;
mod planner;
mod record;
mod request;
mod se_number;
mod seen;
mod table;
mod verdict;

pub use checker::*;
pub use iter::*;
pub use options::*;
pub use planner::*;
pub use record::*;
pub use request::*;
pub use se_number::*;
pub use seen::*;
pub use verdict::*;

use checker::accepted_row;
use seen::MemoryStore;
use table::FingerprintTable;
