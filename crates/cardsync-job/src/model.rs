//! The values a job is made of: requests and their states, planned cards, webhook events,
//! result rows, checkpoints of the results sink, and the summary.

use std::collections::BTreeMap;
use std::fmt;

use cardsync_core::{Brand, Expiry, Pan, PanFragment, SeNumber, UpdateStatus};
use cardsync_proto::ReturnedCard;

/// Which endpoint a planned request goes to.
///
/// ```
/// use cardsync_job::RequestKind;
/// assert_eq!(RequestKind::parse("subscription"), Some(RequestKind::Subscription));
/// assert_eq!(RequestKind::Batch.as_str(), "batch");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RequestKind {
    /// `POST /v2/batch` (Visa, Mastercard, Discover). Not idempotent: billed per batch.
    Batch,
    /// `POST /v2/subscribe` (American Express, one SE number). Idempotent.
    Subscription,
}

impl RequestKind {
    /// `"batch"` or `"subscription"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Batch => "batch",
            RequestKind::Subscription => "subscription",
        }
    }

    /// The kind named by [`RequestKind::as_str`].
    pub fn parse(s: &str) -> Option<RequestKind> {
        match s {
            "batch" => Some(RequestKind::Batch),
            "subscription" => Some(RequestKind::Subscription),
            _ => None,
        }
    }
}

/// Where a request is in its life.
///
/// ```text
/// planned ──► sending ──► sent ──► completed ──► done
///                │          └────────────────► failed
///                └──(a decision)──► planned | sent | abandoned
/// ```
///
/// ```
/// use cardsync_job::RequestState;
/// assert!(RequestState::Done.is_final());
/// assert_eq!(RequestState::parse("sending"), Some(RequestState::Sending));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RequestState {
    /// Planned, not sent.
    Planned,
    /// Its POST may have started: the server may or may not have it.
    Sending,
    /// The server accepted it (a batch: with its batch id).
    Sent,
    /// The batch is complete; its results can be fetched.
    Completed,
    /// Its results are in the sink (batches), or it was acknowledged (subscriptions, whose
    /// updates arrive as events).
    Done,
    /// The server refused it, or the batch ended in error.
    Failed,
    /// The user chose to leave its cards out after an interrupted POST.
    Abandoned,
}

impl RequestState {
    /// The state's name, as stores keep it.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Planned => "planned",
            RequestState::Sending => "sending",
            RequestState::Sent => "sent",
            RequestState::Completed => "completed",
            RequestState::Done => "done",
            RequestState::Failed => "failed",
            RequestState::Abandoned => "abandoned",
        }
    }

    /// The state named by [`RequestState::as_str`].
    pub fn parse(s: &str) -> Option<RequestState> {
        Some(match s {
            "planned" => RequestState::Planned,
            "sending" => RequestState::Sending,
            "sent" => RequestState::Sent,
            "completed" => RequestState::Completed,
            "done" => RequestState::Done,
            "failed" => RequestState::Failed,
            "abandoned" => RequestState::Abandoned,
            _ => return None,
        })
    }

    /// Nothing more will happen to the request.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestState::Done | RequestState::Failed | RequestState::Abandoned
        )
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One planned request as a store keeps it (its cards are kept apart, see [`StoredCard`]).
///
/// ```
/// use cardsync_job::{RequestKind, RequestRecord, RequestState};
/// let r = RequestRecord::new(1, RequestKind::Batch, None, 10_000);
/// assert_eq!(r.state, RequestState::Planned);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestRecord {
    /// Its number in the plan, from 1.
    pub seq: u64,
    /// Batch or subscription.
    pub kind: RequestKind,
    /// The SE number of a subscription.
    pub se_number: Option<String>,
    /// How many cards it holds.
    pub cards: u64,
    /// Where it is.
    pub state: RequestState,
    /// The batch id CardSync gave it.
    pub batch_id: Option<String>,
    /// The batch-available event that announced its results.
    pub event_id: Option<String>,
    /// Why it failed, or what was decided.
    pub message: Option<String>,
}

impl RequestRecord {
    /// A planned request.
    pub fn new(seq: u64, kind: RequestKind, se_number: Option<String>, cards: u64) -> Self {
        RequestRecord {
            seq,
            kind,
            se_number,
            cards,
            state: RequestState::Planned,
            batch_id: None,
            event_id: None,
            message: None,
        }
    }
}

/// A planned card, as a store keeps it: structured, never as an encoded request body.
///
/// `Debug` is masked, like [`Pan`]'s, and so is anything in the id that looks like a card
/// number.
///
/// ```
/// use cardsync_core::{Expiry, Pan};
/// use cardsync_job::StoredCard;
/// let card = StoredCard::new(7, "sub-7", Pan::parse("4457010000000009")?, Expiry::parse("01/50")?, None);
/// assert_eq!(card.last4().as_str(), "0009");
/// assert!(!format!("{card:?}").contains("4457010000000009"));
/// let card = StoredCard::new(8, "4532 0151 1283 0366", Pan::parse("4457010000000009")?, Expiry::parse("01/50")?, None);
/// assert!(format!("{card:?}").contains(r#"id: "453201******0366""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredCard {
    /// The input row it came from (from 1, header not counted).
    pub row: u64,
    /// The merchant's id for the card.
    pub id: String,
    /// The card number.
    pub pan: Pan,
    /// The expiry date.
    pub exp: Expiry,
    /// The SE number (American Express).
    pub se_number: Option<SeNumber>,
}

impl fmt::Debug for StoredCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCard")
            .field("row", &self.row)
            .field("id", &cardsync_core::redact_digit_runs(&self.id))
            .field("pan", &self.pan)
            .field("exp", &self.exp)
            .field("se_number", &self.se_number)
            .finish()
    }
}

impl StoredCard {
    /// A card.
    pub fn new(
        row: u64,
        id: impl Into<String>,
        pan: Pan,
        exp: Expiry,
        se: Option<SeNumber>,
    ) -> Self {
        StoredCard {
            row,
            id: id.into(),
            pan,
            exp,
            se_number: se,
        }
    }

    /// The last four digits, which the changes file reports as the old card's.
    pub fn last4(&self) -> PanFragment {
        self.pan.last4()
    }
}

/// What became of a webhook event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventState {
    /// Recorded; its work (fetching American Express updates) is not done yet.
    Received,
    /// Its work is done.
    Handled,
    /// Not this job's (another job's batch, another trigger), or nothing was left to do.
    Ignored,
}

impl EventState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Received => "received",
            EventState::Handled => "handled",
            EventState::Ignored => "ignored",
        }
    }

    /// The state named by [`EventState::as_str`].
    pub fn parse(s: &str) -> Option<EventState> {
        Some(match s {
            "received" => EventState::Received,
            "handled" => EventState::Handled,
            "ignored" => EventState::Ignored,
            _ => return None,
        })
    }
}

/// A webhook event as a store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventRecord {
    /// The event id (unique per event; redeliveries repeat it).
    pub event_id: String,
    /// The trigger id.
    pub trigger: Option<u32>,
    /// The batch it is about.
    pub batch_id: Option<String>,
    /// What became of it.
    pub state: EventState,
}

impl EventRecord {
    /// An event record.
    pub fn new(
        event_id: impl Into<String>,
        trigger: Option<u32>,
        batch_id: Option<String>,
        state: EventState,
    ) -> Self {
        EventRecord {
            event_id: event_id.into(),
            trigger,
            batch_id,
            state,
        }
    }
}

/// How far a results sink has durably written, in the sink's own terms (for files: the length
/// of each file). Stores keep it with the job's state, so that a resumed job rewinds the sink
/// to exactly what the journal recorded.
///
/// ```
/// use cardsync_job::Checkpoint;
/// assert_eq!(Checkpoint::default().positions(), &[] as &[u64]);
/// assert_eq!(Checkpoint::new(vec![120, 44]).to_string(), "120,44");
/// assert_eq!("120,44".parse::<Checkpoint>().unwrap(), Checkpoint::new(vec![120, 44]));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Checkpoint(Vec<u64>);

impl Checkpoint {
    /// A checkpoint at these positions.
    pub fn new(positions: Vec<u64>) -> Checkpoint {
        Checkpoint(positions)
    }

    /// The positions.
    pub fn positions(&self) -> &[u64] {
        &self.0
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Checkpoint {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Checkpoint, Self::Err> {
        if s.is_empty() {
            return Ok(Checkpoint::default());
        }
        s.split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Checkpoint)
    }
}

/// Everything a store holds about a job, but the cards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Settings and progress markers (`planned`, `done`, the job's identity, ...).
    pub meta: BTreeMap<String, String>,
    /// The requests, by number.
    pub requests: Vec<RequestRecord>,
    /// The webhook events recorded.
    pub events: Vec<EventRecord>,
    /// Results per status.
    pub tally: BTreeMap<String, i64>,
    /// How far the sink has written.
    pub checkpoint: Checkpoint,
}

impl Snapshot {
    /// A meta value.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta.get(key).map(String::as_str)
    }

    /// A meta value read as a number (0 when absent).
    pub fn meta_u64(&self, key: &str) -> u64 {
        self.meta(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// Whether the plan was completely stored.
    pub fn is_planned(&self) -> bool {
        self.meta(META_PLANNED) == Some("1")
    }

    /// Whether the job finished, results file and all.
    pub fn is_done(&self) -> bool {
        self.meta(META_PHASE) == Some(PHASE_DONE)
    }
}

pub(crate) const META_PLANNED: &str = "planned";
pub(crate) const META_PHASE: &str = "phase";
pub(crate) const META_ROWS: &str = "rows";
pub(crate) const META_INVALID: &str = "invalid";
pub(crate) const META_AMEX_RESULTS: &str = "amex_results";
pub(crate) const PHASE_FINISHING: &str = "finishing";
pub(crate) const PHASE_DONE: &str = "done";

/// One result, as it goes to the sink.
///
/// `Debug` is masked: the card is a [`ReturnedCard`], and anything in the id or the expiry
/// text that looks like a card number is masked.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResultRow {
    /// The merchant's id for the card.
    pub id: String,
    /// The result (`None` when CardSync sent none).
    pub status: Option<UpdateStatus>,
    /// The card number CardSync returned: the new one for `updated_card`.
    pub card: ReturnedCard,
    /// The expiry CardSync returned.
    pub exp: Option<String>,
    /// The SE number (American Express).
    pub se_number: Option<String>,
    /// The batch the result came from.
    pub batch_id: Option<String>,
    /// The webhook event that announced it.
    pub event_id: Option<String>,
    /// The last four digits of the card as it was sent, for `updated_card` and
    /// `updated_expiry` results of batches.
    pub old_last4: Option<String>,
}

impl From<cardsync_proto::ResultCard> for ResultRow {
    /// The row of a result as CardSync returned it (no batch, event or old last 4 yet).
    fn from(card: cardsync_proto::ResultCard) -> ResultRow {
        let mut row = ResultRow::new(card.id, card.status, card.card);
        row.exp = card.exp;
        row.se_number = card.se_number;
        row
    }
}

impl fmt::Debug for ResultRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = cardsync_core::redact_digit_runs;
        f.debug_struct("ResultRow")
            .field("id", &redact(&self.id))
            .field("status", &self.status)
            .field("card", &self.card)
            .field("exp", &self.exp.as_deref().map(redact))
            .field("se_number", &self.se_number.as_deref().map(redact))
            .field("batch_id", &self.batch_id)
            .field("event_id", &self.event_id)
            .field("old_last4", &self.old_last4)
            .finish()
    }
}

impl ResultRow {
    /// A row.
    pub fn new(id: impl Into<String>, status: Option<UpdateStatus>, card: ReturnedCard) -> Self {
        ResultRow {
            id: id.into(),
            status,
            card,
            exp: None,
            se_number: None,
            batch_id: None,
            event_id: None,
            old_last4: None,
        }
    }

    /// Whether a billing system has a stored card to change: `updated_card` or
    /// `updated_expiry`.
    pub fn is_change(&self) -> bool {
        matches!(
            self.status,
            Some(UpdateStatus::UpdatedCard | UpdateStatus::UpdatedExpiry)
        )
    }

    /// What a billing system must do about this result, in words, if anything: the rows of
    /// the changes file (`updated_card`, `updated_expiry`, `closed`, `contact`).
    ///
    /// ```
    /// use cardsync_core::UpdateStatus;
    /// use cardsync_job::ResultRow;
    /// use cardsync_proto::ReturnedCard;
    /// let mut row = ResultRow::new("c1", Some(UpdateStatus::Closed), ReturnedCard::new("4457000900000001"));
    /// assert!(row.action().unwrap().contains("stop charging"));
    /// row.status = Some(UpdateStatus::Valid);
    /// assert_eq!(row.action(), None);
    /// ```
    pub fn action(&self) -> Option<&'static str> {
        Some(match self.status.as_ref()? {
            UpdateStatus::UpdatedCard => "replace the card number and expiry on file",
            UpdateStatus::UpdatedExpiry => "replace the expiry on file",
            UpdateStatus::Closed => {
                "stop charging this card: the account is closed; ask the customer for another"
            }
            UpdateStatus::Contact => {
                "ask the customer for their new card: the issuer does not pass the update on"
            }
            _ => return None,
        })
    }

    /// The returned card's brand, when it parses.
    pub fn brand(&self) -> Brand {
        self.card
            .to_pan()
            .map(|p| p.brand())
            .unwrap_or(Brand::Unknown)
    }

    /// The returned expiry in the wire form, when it parses.
    pub fn expiry(&self) -> Option<Expiry> {
        self.exp.as_deref().and_then(|e| Expiry::parse(e).ok())
    }
}

/// Counts of one status.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusCount {
    /// The status (`updated_card`, ..., `no_result`, `subscribed`, `batch_error`).
    pub status: String,
    /// How many cards.
    pub cards: u64,
}

/// Where a job stands: what a run prints at its end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// The job is complete and its results are in place.
    pub done: bool,
    /// Data rows read.
    pub rows: u64,
    /// Rows that were rejected.
    pub invalid_rows: u64,
    /// Requests planned.
    pub requests: usize,
    /// Of which batches.
    pub batches: usize,
    /// Of which subscriptions.
    pub subscriptions: usize,
    /// Results received (not counting `no_result`, `subscribed` and `batch_error`).
    pub results: u64,
    /// Cards per status, most common first.
    pub statuses: Vec<StatusCount>,
    /// Requests whose POST may or may not have reached CardSync, waiting for a decision.
    pub unconfirmed: Vec<u64>,
    /// Requests that failed, with why.
    pub failed: Vec<(u64, String)>,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
    /// The run stopped because CardSync refused the API key: the requests it refused stay
    /// planned, and a run with the right key goes on.
    pub key_refused: bool,
}

impl Summary {
    /// The summary of what a store holds.
    pub fn of(snapshot: &Snapshot) -> Summary {
        let requests = &snapshot.requests;
        let mut summary = Summary::of_tally(&snapshot.tally);
        summary.done = snapshot.is_done();
        summary.rows = snapshot.meta_u64(META_ROWS);
        summary.invalid_rows = snapshot.meta_u64(META_INVALID);
        summary.requests = requests.len();
        summary.batches = requests
            .iter()
            .filter(|r| r.kind == RequestKind::Batch)
            .count();
        summary.subscriptions = requests
            .iter()
            .filter(|r| r.kind == RequestKind::Subscription)
            .count();
        summary.unconfirmed = requests
            .iter()
            .filter(|r| r.state == RequestState::Sending)
            .map(|r| r.seq)
            .collect();
        summary.failed = requests
            .iter()
            .filter(|r| r.state == RequestState::Failed)
            .map(|r| (r.seq, r.message.clone().unwrap_or_default()))
            .collect();
        summary
    }

    /// A summary of the cards per status (any store's tallies, such as the shared journal's):
    /// the statuses most common first, and the results among them; everything else empty, for
    /// the caller to fill in.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// let tally = BTreeMap::from([("valid".to_owned(), 3), ("no_result".to_owned(), 2)]);
    /// let summary = cardsync_job::Summary::of_tally(&tally);
    /// assert_eq!(summary.results, 3);
    /// assert_eq!(summary.statuses[0].status, "valid");
    /// ```
    pub fn of_tally(tally: &BTreeMap<String, i64>) -> Summary {
        let mut statuses: Vec<StatusCount> = tally
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| StatusCount {
                status: s.clone(),
                cards: *n as u64,
            })
            .collect();
        statuses.sort_by(|a, b| b.cards.cmp(&a.cards).then_with(|| a.status.cmp(&b.status)));
        Summary {
            done: false,
            rows: 0,
            invalid_rows: 0,
            requests: 0,
            batches: 0,
            subscriptions: 0,
            results: statuses
                .iter()
                .filter(|s| {
                    !matches!(
                        s.status.as_str(),
                        "subscribed" | "no_result" | "batch_error"
                    )
                })
                .map(|s| s.cards)
                .sum(),
            statuses,
            unconfirmed: Vec::new(),
            failed: Vec::new(),
            error: None,
            key_refused: false,
        }
    }

    /// The count of one status.
    pub fn count(&self, status: &str) -> u64 {
        self.statuses
            .iter()
            .find(|s| s.status == status)
            .map_or(0, |s| s.cards)
    }
}
