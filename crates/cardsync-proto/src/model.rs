//! The data CardSync returns: batch states, stats, result cards, results, acknowledgements.

use std::collections::BTreeMap;
use std::fmt;

use cardsync_core::{Expiry, Pan, PanError, PanFragment, Stats, UpdateStatus, mask_card_text};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use zeroize::Zeroize;

use crate::lenient::{Counter, Key, Word, lenient_object, opt, skip, text};

/// A card number exactly as CardSync returned it. It is not validated (the documents return one
/// that fails the Luhn check), its `Debug` is masked, and it is zeroed when dropped.
///
/// ```
/// use cardsync_proto::ReturnedCard;
///
/// let card = ReturnedCard::new("311111111111111");
/// assert_eq!(format!("{card:?}"), "ReturnedCard(311111*****1111)");
/// assert_eq!(card.expose(), "311111111111111");
/// assert!(card.to_pan().is_err()); // fails Luhn, kept anyway
/// ```
#[derive(Clone, Default)]
pub struct ReturnedCard(CardText);

/// A returned card's text: in place when it is as short as card numbers are (no allocation
/// per card when a large results body is decoded), on the heap otherwise.
#[derive(Clone)]
enum CardText {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(String),
}

/// The longest text kept in place: every card number (19 digits at most) and then some.
const INLINE: usize = 22;

impl Default for CardText {
    fn default() -> CardText {
        CardText::Inline {
            len: 0,
            bytes: [0; INLINE],
        }
    }
}

impl ReturnedCard {
    /// Wraps a returned card number.
    pub fn new(card: impl Into<String>) -> ReturnedCard {
        let mut card = card.into();
        if card.len() <= INLINE {
            let copy = ReturnedCard::copied(&card);
            card.zeroize();
            copy
        } else {
            ReturnedCard(CardText::Heap(card))
        }
    }

    /// A copy of `card`, made without an allocation when it is short.
    pub(crate) fn copied(card: &str) -> ReturnedCard {
        if card.len() > INLINE {
            return ReturnedCard(CardText::Heap(card.to_owned()));
        }
        let mut bytes = [0; INLINE];
        bytes[..card.len()].copy_from_slice(card.as_bytes());
        ReturnedCard(CardText::Inline {
            len: card.len() as u8,
            bytes,
        })
    }

    /// The number as returned, for writing to the vault or a results file.
    pub fn expose(&self) -> &str {
        match &self.0 {
            // The bytes were copied whole from a `str`, so they are UTF-8.
            CardText::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            CardText::Heap(s) => s,
        }
    }

    /// The number masked (first six and last four digits at most).
    pub fn masked(&self) -> PanFragment {
        mask_card_text(self.expose())
    }

    /// The number as a validated [`Pan`].
    ///
    /// # Errors
    ///
    /// The [`PanError`] when the number is not a valid card number.
    pub fn to_pan(&self) -> Result<Pan, PanError> {
        Pan::parse(self.expose())
    }

    /// Whether the server returned an empty card number (or none).
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl PartialEq for ReturnedCard {
    fn eq(&self, other: &ReturnedCard) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for ReturnedCard {}

impl std::hash::Hash for ReturnedCard {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.expose().hash(state);
    }
}

impl fmt::Debug for ReturnedCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReturnedCard({})", self.masked())
    }
}

impl Drop for ReturnedCard {
    fn drop(&mut self) {
        match &mut self.0 {
            CardText::Inline { len, bytes } => {
                bytes.zeroize();
                len.zeroize();
            }
            CardText::Heap(s) => s.zeroize(),
        }
    }
}

/// The state of a batch or results set.
///
/// ```
/// use cardsync_proto::BatchState;
///
/// assert_eq!(BatchState::parse("completed"), BatchState::Completed);
/// assert_eq!(BatchState::parse("queued").as_str(), "queued");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BatchState {
    /// Submitted, not complete.
    Pending,
    /// Complete: results can be fetched.
    Completed,
    /// Validation or processing failed.
    Error,
    /// A state the documents do not describe, kept as received.
    Unknown(String),
}

impl BatchState {
    /// Reads a state word; never fails.
    pub fn parse(s: &str) -> BatchState {
        match s {
            "pending" => BatchState::Pending,
            "completed" => BatchState::Completed,
            "error" => BatchState::Error,
            other => BatchState::Unknown(other.to_owned()),
        }
    }

    /// The word.
    pub fn as_str(&self) -> &str {
        match self {
            BatchState::Pending => "pending",
            BatchState::Completed => "completed",
            BatchState::Error => "error",
            BatchState::Unknown(s) => s,
        }
    }

    /// Whether the batch is finished, successfully or not.
    pub fn is_final(&self) -> bool {
        matches!(self, BatchState::Completed | BatchState::Error)
    }
}

impl fmt::Display for BatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Stats as CardSync reported them: the documented counters, plus any counter the documents do
/// not name, kept by name.
///
/// Decoding rules: `closed` and `contact_closed` are one counter. When a counter appears more
/// than once in one object (the documents' webhook examples repeat `closed`, and some carry
/// both spellings) the largest value is kept: the examples give the real count once and zero
/// for the other spelling, so neither "later wins" (order-dependent) nor "add" (doubles a count
/// a server repeats) is safe. `stats.other` is the sum of the unnamed counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportedStats {
    /// The documented counters.
    pub stats: Stats,
    /// Counters the documents do not name, by name.
    pub other_counters: BTreeMap<String, u64>,
}

impl From<Stats> for ReportedStats {
    /// The documented counters, with no others.
    fn from(stats: Stats) -> ReportedStats {
        ReportedStats {
            stats,
            other_counters: BTreeMap::new(),
        }
    }
}

impl<'de> Deserialize<'de> for ReportedStats {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ReportedStats;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a stats object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<ReportedStats, E> {
                Ok(ReportedStats::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReportedStats, A::Error> {
                let mut r = ReportedStats::default();
                while let Some(Key(k)) = map.next_key()? {
                    let s = &mut r.stats;
                    let slot = match k.as_ref() {
                        "number_submitted" => &mut s.number_submitted,
                        "no_change" => &mut s.no_change,
                        "updated_card" => &mut s.updated_card,
                        "updated_expiry" => &mut s.updated_expiry,
                        "no_match" => &mut s.no_match,
                        "valid" => &mut s.valid,
                        "contact" => &mut s.contact,
                        "closed" | "contact_closed" => &mut s.closed,
                        _ => {
                            // Unknown keys holding a count are kept; anything else is skipped.
                            match map.next_value::<serde_json::Value>()? {
                                serde_json::Value::Number(n) => {
                                    let v = n.as_u64().unwrap_or(0);
                                    let e = r.other_counters.entry(k.into_owned()).or_default();
                                    *e = (*e).max(v);
                                }
                                _ => continue,
                            }
                            continue;
                        }
                    };
                    let Counter(v) = map.next_value()?;
                    *slot = (*slot).max(v);
                }
                r.stats.other = r
                    .other_counters
                    .values()
                    .fold(0, |a, &b| a.saturating_add(b));
                Ok(r)
            }
        }
        d.deserialize_any(V)
    }
}

/// Per-brand card counts of a batch-available webhook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CardStats {
    /// Visa cards.
    pub visa: u64,
    /// Mastercard cards.
    pub mastercard: u64,
    /// Discover cards.
    pub discover: u64,
    /// American Express cards.
    pub american_express: u64,
    /// Brands the documents do not name.
    pub other: BTreeMap<String, u64>,
}

impl<'de> Deserialize<'de> for CardStats {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CardStats;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a card_stats object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<CardStats, E> {
                Ok(CardStats::default())
            }
            // The documents' schema says `card_stats` is a string; the examples say object.
            fn visit_str<E: de::Error>(self, _: &str) -> Result<CardStats, E> {
                Ok(CardStats::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CardStats, A::Error> {
                let mut c = CardStats::default();
                while let Some(Key(k)) = map.next_key()? {
                    let Counter(v) = map.next_value()?;
                    let slot = match k.as_ref() {
                        "visa" => &mut c.visa,
                        "mastercard" => &mut c.mastercard,
                        "discover" => &mut c.discover,
                        "american_express" | "amex" => &mut c.american_express,
                        _ => c.other.entry(k.into_owned()).or_default(),
                    };
                    *slot = (*slot).max(v);
                }
                Ok(c)
            }
        }
        d.deserialize_any(V)
    }
}

/// One card of a results set. `Debug` masks the card, and anything in the id and the expiry
/// text that looks like a card number.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResultCard {
    /// The merchant's id, as submitted.
    pub id: String,
    /// The card number CardSync returned (the new one for `updated_card`).
    pub card: ReturnedCard,
    /// The expiry date as returned (`MM/YY`), if any.
    pub exp: Option<String>,
    /// The result. `None` when the server sent none, which the documents say "generally means
    /// the card is valid".
    pub status: Option<UpdateStatus>,
    /// The SE number, for American Express results (`se_number`, or `se`).
    pub se_number: Option<String>,
}

impl fmt::Debug for ResultCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = cardsync_core::redact_digit_runs;
        f.debug_struct("ResultCard")
            .field("id", &redact(&self.id))
            .field("card", &self.card)
            .field("exp", &self.exp.as_deref().map(redact))
            .field("status", &self.status)
            .field("se_number", &self.se_number.as_deref().map(redact))
            .finish()
    }
}

impl ResultCard {
    /// A result row: the merchant's id for the card, the number returned, the expiry returned
    /// (`MM/YY`) and the status; no SE number.
    ///
    /// ```
    /// use cardsync_core::UpdateStatus;
    /// use cardsync_proto::{ResultCard, ReturnedCard};
    ///
    /// let row = ResultCard::new("sub-1", ReturnedCard::new("4457010000000009"), "01/53", UpdateStatus::UpdatedExpiry);
    /// assert_eq!(row.expiry().map(|e| e.year()), Some(2053));
    /// ```
    pub fn new(
        id: impl Into<String>,
        card: ReturnedCard,
        exp: impl Into<String>,
        status: UpdateStatus,
    ) -> ResultCard {
        ResultCard {
            id: id.into(),
            card,
            exp: Some(exp.into()),
            status: Some(status),
            se_number: None,
        }
    }

    /// The same row with an SE number (American Express results).
    pub fn with_se_number(mut self, se_number: impl Into<String>) -> ResultCard {
        self.se_number = Some(se_number.into());
        self
    }

    /// The returned expiry, parsed.
    pub fn expiry(&self) -> Option<Expiry> {
        self.exp.as_deref().and_then(|e| Expiry::parse(e).ok())
    }
}

lenient_object!(ResultCard, "a result card object", |map, c| {
    "id" => c.id = text(&mut map)?.unwrap_or_default(),
    "card" => c.card = ReturnedCard::new(text(&mut map)?.unwrap_or_default()),
    "exp" => c.exp = text(&mut map)?,
    "status" => c.status = map.next_value::<Word<'_>>()?.0.map(|s| UpdateStatus::parse(&s)),
    "se_number" | "se" => c.se_number = text(&mut map)?,
});

/// A list that may be `null` (an empty list).
struct List<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_unit<E: de::Error>(self) -> Result<List<T>, E> {
                Ok(List(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16_384));
                while let Some(item) = seq.next_element()? {
                    v.push(item);
                }
                Ok(List(v))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The `data` of batch creation and batch status, and of results: all optional on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BatchData {
    pub(crate) batch_id: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) cards: Vec<ResultCard>,
    pub(crate) stats: ReportedStats,
    pub(crate) created_at: Option<String>,
    pub(crate) updated_at: Option<String>,
}

lenient_object!(BatchData, "a data object", |map, b| {
    "batch_id" => b.batch_id = text(&mut map)?,
    "status" => b.status = text(&mut map)?,
    "cards" => b.cards = map.next_value::<List<ResultCard>>()?.0,
    "stats" => b.stats = map.next_value()?,
    "created_at" => b.created_at = text(&mut map)?,
    "updated_at" => b.updated_at = text(&mut map)?,
});

/// The `data` of merchant enrollment and merchant status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MerchantData {
    pub(crate) merchant_id: Option<String>,
    pub(crate) api_key: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) created_at: Option<String>,
}

impl Drop for MerchantData {
    fn drop(&mut self) {
        if let Some(k) = &mut self.api_key {
            k.zeroize();
        }
    }
}

lenient_object!(MerchantData, "a data object", |map, m| {
    "merchant_id" => m.merchant_id = text(&mut map)?,
    "api_key" => m.api_key = text(&mut map)?,
    "status" => m.status = text(&mut map)?,
    "created_at" => m.created_at = text(&mut map)?,
});

/// The envelope every response has: `status`, `message` (or `msg`), and `data`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope<T> {
    pub(crate) status: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) data: Option<T>,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Envelope<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Envelope<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<T>, A::Error> {
                let mut e = Envelope {
                    status: None,
                    message: None,
                    data: None,
                };
                while let Some(Key(k)) = map.next_key()? {
                    match k.as_ref() {
                        "status" => e.status = text(&mut map)?,
                        "message" | "msg" => e.message = text(&mut map)?,
                        "data" => e.data = opt(&mut map)?,
                        _ => skip(&mut map)?,
                    }
                }
                Ok(e)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Data that is ignored: for endpoints whose `data` the documents do not describe.
pub(crate) struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(d).map(|_| Ignored)
    }
}

/// The answer of endpoints that return only a status and a message: webhook registration,
/// subscribe and unsubscribe.
///
/// ```
/// use cardsync_proto::{Endpoint, SetAmexWebhook};
///
/// let resp = http::Response::new(br#"{"status":"success","msg":"success"}"#.to_vec());
/// let ack = SetAmexWebhook::decode(&resp)?;
/// assert_eq!(ack.message.as_deref(), Some("success"));
/// # Ok::<(), cardsync_proto::DecodeError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ack {
    /// The `status` word, usually `success`.
    pub status: Option<String>,
    /// The `message` (or `msg`), made safe.
    pub message: Option<String>,
}

/// A created batch. `batch_id` is what every later call about it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchCreated {
    /// The batch's id.
    pub batch_id: String,
    /// Its state, normally `pending`.
    pub status: BatchState,
    /// Its stats so far.
    pub stats: ReportedStats,
    /// When it was created, as the server wrote it.
    pub created_at: Option<String>,
    /// When it last changed, as the server wrote it.
    pub updated_at: Option<String>,
}

impl BatchCreated {
    /// A created batch, with no stats or timestamps yet: for a server or a test double to
    /// answer with (see [`crate::server::batch_created`]).
    ///
    /// ```
    /// use cardsync_proto::{BatchCreated, BatchState};
    /// let created = BatchCreated::new("b1", BatchState::Pending);
    /// assert_eq!(created.batch_id, "b1");
    /// ```
    pub fn new(batch_id: impl Into<String>, status: BatchState) -> BatchCreated {
        BatchCreated {
            batch_id: batch_id.into(),
            status,
            stats: ReportedStats::default(),
            created_at: None,
            updated_at: None,
        }
    }
}

/// A batch's status.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchInfo {
    /// The batch's id, when the server repeats it.
    pub batch_id: Option<String>,
    /// Its state.
    pub status: BatchState,
    /// Its stats.
    pub stats: ReportedStats,
    /// When it was created.
    pub created_at: Option<String>,
    /// When it last changed.
    pub updated_at: Option<String>,
}

impl BatchInfo {
    /// A batch's status, with no id, stats or timestamps yet: for a server or a test double
    /// to answer with (see [`crate::server::batch_info`]).
    ///
    /// ```
    /// use cardsync_proto::{BatchInfo, BatchState};
    /// let mut info = BatchInfo::new(BatchState::Completed);
    /// info.batch_id = Some("b1".into());
    /// assert!(info.status.is_final());
    /// ```
    pub fn new(status: BatchState) -> BatchInfo {
        BatchInfo {
            batch_id: None,
            status,
            stats: ReportedStats::default(),
            created_at: None,
            updated_at: None,
        }
    }
}

/// The results of a batch or of a subscription event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Results {
    /// The batch's id (batch results only, when the server repeats it).
    pub batch_id: Option<String>,
    /// The state, normally `completed`.
    pub status: BatchState,
    /// The cards with a result. Fewer than were submitted is normal: cards with no change may
    /// have no row.
    pub cards: Vec<ResultCard>,
    /// The counters.
    pub stats: ReportedStats,
    /// When the set was created.
    pub created_at: Option<String>,
    /// When it last changed.
    pub updated_at: Option<String>,
}

impl Results {
    /// Results with no cards, stats or timestamps yet: for a server or a test double to
    /// answer with (see [`crate::server::results`]).
    ///
    /// ```
    /// use cardsync_proto::{BatchState, Results};
    /// let results = Results::new(BatchState::Completed);
    /// assert!(results.cards.is_empty());
    /// ```
    pub fn new(status: BatchState) -> Results {
        Results {
            batch_id: None,
            status,
            cards: Vec::new(),
            stats: ReportedStats::default(),
            created_at: None,
            updated_at: None,
        }
    }
}

/// An enrolled merchant: its id and its own API key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MerchantEnrolled {
    /// The merchant's id.
    pub merchant_id: String,
    /// The merchant's key, for every later call on its behalf.
    pub api_key: crate::MerchantKey,
    /// When it was created.
    pub created_at: Option<String>,
}

impl MerchantEnrolled {
    /// An enrolled merchant, with no creation time: for a server or a test double to answer
    /// with (see [`crate::server::merchant_enrolled`]).
    ///
    /// ```
    /// use cardsync_proto::{MerchantEnrolled, MerchantKey};
    /// let enrolled = MerchantEnrolled::new("m1", MerchantKey::new("api_1")?);
    /// assert_eq!(format!("{enrolled:?}").contains("api_1"), false);
    /// # Ok::<(), cardsync_proto::InvalidApiKey>(())
    /// ```
    pub fn new(merchant_id: impl Into<String>, api_key: crate::MerchantKey) -> MerchantEnrolled {
        MerchantEnrolled {
            merchant_id: merchant_id.into(),
            api_key,
            created_at: None,
        }
    }
}

/// A merchant's enrollment status. `Default` is a status with nothing in it, to fill in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MerchantStatus {
    /// The `status` word of the response.
    pub status: Option<String>,
    /// The message, made safe.
    pub message: Option<String>,
    /// The merchant's id, when the server includes it in `data`.
    pub merchant_id: Option<String>,
    /// The enrollment state in `data.status` (such as `pending` or `completed`), when given.
    pub enrollment: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_cards_short_and_long_read_back_and_compare_by_text() {
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        for text in [
            "",
            "4457010000000009",
            "4457010000000009123",
            "1234567890123456789012",
            "12345678901234567890123",
            "not a card number, and longer than any card",
            "éé",
        ] {
            let (made, copied) = (ReturnedCard::new(text), ReturnedCard::copied(text));
            assert_eq!(made.expose(), text);
            assert_eq!(copied.expose(), text);
            assert_eq!(made, copied);
            assert_eq!(hasher.hash_one(&made), hasher.hash_one(text));
            assert_eq!(made.is_empty(), text.is_empty());
            assert_eq!(made.clone().expose(), text);
            assert!(!format!("{made:?}").contains("4457010000000009"));
        }
        assert_ne!(
            ReturnedCard::new("4457010000000009"),
            ReturnedCard::new("445701000000000")
        );
        assert_eq!(ReturnedCard::default().expose(), "");
    }
}
