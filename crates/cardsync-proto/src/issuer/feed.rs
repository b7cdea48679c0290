//! An issuer's feed of card changes (`issuer-update-cards.txt`):
//! `PUT /v2/data/customers/{sourceCustomerId}/accounts/{sourceAccountId}/cards` with
//! `{"cards":[…]}`, each card a new card (every field) or a status update (the identifiers,
//! the last four digits, and what changes). Cards are named by IIN and last four digits: the
//! full number never travels. The answer is `{"requestId": …}` (200) or a failure (500).

use std::fmt;

use cardsync_core::Pan;
use http::{Method, Request, Response};
use serde_json::{Map, Value};

use super::{IssuerConfig, IssuerEndpoint, build, path_segment, text_of};
use crate::endpoints::{Idempotency, decode_plain};
use crate::lenient::write_json_str;
use crate::paths;
use crate::server::RequestError;
use crate::{DecodeError, EncodeError};

/// The last four digits of a card number.
///
/// ```
/// use cardsync_proto::issuer::feed::Last4;
/// let pan = cardsync_core::Pan::parse("4457010000000009")?;
/// assert_eq!(Last4::of(&pan).as_str(), "0009");
/// assert!(Last4::parse("12a4").is_none());
/// # Ok::<(), cardsync_core::PanError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Last4([u8; 4]);

impl Last4 {
    /// Four ASCII digits, or `None`.
    pub fn parse(s: &str) -> Option<Last4> {
        let b: [u8; 4] = s.as_bytes().try_into().ok()?;
        b.iter().all(u8::is_ascii_digit).then_some(Last4(b))
    }

    /// The last four digits of a card number.
    pub fn of(pan: &Pan) -> Last4 {
        let last = pan.last4();
        Last4::parse(last.as_str()).unwrap_or(Last4(*b"0000"))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Last4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A card's issuer identification number: its first six to eight digits.
///
/// ```
/// use cardsync_proto::issuer::feed::Iin;
/// let pan = cardsync_core::Pan::parse("4457010000000009")?;
/// assert_eq!(Iin::of(&pan).as_str(), "445701");
/// assert!(Iin::parse("12345").is_none());
/// # Ok::<(), cardsync_core::PanError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Iin(String);

impl Iin {
    /// Six to eight ASCII digits, or `None`.
    pub fn parse(s: &str) -> Option<Iin> {
        ((6..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Iin(s.to_owned()))
    }

    /// The first six digits of a card number.
    pub fn of(pan: &Pan) -> Iin {
        Iin(pan.bin().as_str().to_owned())
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `networkIdentifier`: the first digit of the card number. (The document's text maps it as
/// "3-MC, 4-V, 5-D, 6-AXP", which contradicts the real first digits; the digit is what is
/// sent, and the brand comes from the IIN.) Typed a string in the document's table, sent as a
/// number in its example: encoded as the example does, read either way.
///
/// ```
/// use cardsync_proto::issuer::feed::NetworkIdentifier;
/// let pan = cardsync_core::Pan::parse("342132335566772")?;
/// assert_eq!(NetworkIdentifier::of(&pan).digit(), 3);
/// # Ok::<(), cardsync_core::PanError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetworkIdentifier(u8);

impl NetworkIdentifier {
    /// A digit 0 to 9, or `None`.
    pub fn new(digit: u8) -> Option<NetworkIdentifier> {
        (digit <= 9).then_some(NetworkIdentifier(digit))
    }

    /// The first digit of a card number.
    pub fn of(pan: &Pan) -> NetworkIdentifier {
        let first = pan
            .bin()
            .as_str()
            .as_bytes()
            .first()
            .copied()
            .unwrap_or(b'0');
        NetworkIdentifier(first.wrapping_sub(b'0').min(9))
    }

    /// The digit.
    pub fn digit(self) -> u8 {
        self.0
    }
}

macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $word:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A word the documents do not give, kept as received.
            Unknown(String),
        }

        impl $name {
            /// Every word the documents give, in their order.
            pub const WORDS: &'static [&'static str] = &[$($word,)*];

            /// Reads a word; never fails.
            pub fn parse(s: &str) -> $name {
                match s {
                    $($word => $name::$variant,)*
                    other => $name::Unknown(other.to_owned()),
                }
            }

            /// The word.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $word,)*
                    $name::Unknown(s) => s,
                }
            }

            /// Whether the word is one the documents give.
            pub fn is_known(&self) -> bool {
                !matches!(self, $name::Unknown(_))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use word_enum;

word_enum!(
    /// `cardType`.
    ///
    /// ```
    /// use cardsync_proto::issuer::feed::CardType;
    /// assert_eq!(CardType::parse("CREDIT"), CardType::Credit);
    /// assert_eq!(CardType::parse("CHARGE").as_str(), "CHARGE");
    /// ```
    CardType {
        /// `CREDIT`.
        Credit = "CREDIT",
        /// `DEBIT`.
        Debit = "DEBIT",
        /// `PREPAID`.
        Prepaid = "PREPAID",
    }
);

word_enum!(
    /// `status` of a card in the feed.
    ///
    /// ```
    /// use cardsync_proto::issuer::feed::CardStatus;
    /// assert_eq!(CardStatus::parse("CLOSED"), CardStatus::Closed);
    /// ```
    CardStatus {
        /// `OPEN`.
        Open = "OPEN",
        /// `CLOSED`: `closeDate` is required.
        Closed = "CLOSED",
    }
);

/// A new card ("Create Card Parameters"): every field. `close_date` is required when the
/// status is `CLOSED`, and written as `null` otherwise, as in the document's example.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewCard {
    /// `last4`.
    pub last4: Last4,
    /// `iin`.
    pub iin: Iin,
    /// `cardType`.
    pub card_type: CardType,
    /// `status`.
    pub status: CardStatus,
    /// `networkIdentifier`.
    pub network_identifier: NetworkIdentifier,
    /// `openDate`, such as `2017-01-01T08:00:00Z`.
    pub open_date: String,
    /// `closeDate`.
    pub close_date: Option<String>,
}

impl NewCard {
    /// An open card, named by the IIN and last four digits of `pan` (the number itself is
    /// not sent).
    ///
    /// ```
    /// use cardsync_proto::issuer::feed::{CardType, NewCard};
    /// let pan = cardsync_core::Pan::parse("4457010000000009")?;
    /// let card = NewCard::open(&pan, CardType::Credit, "2024-01-01T00:00:00Z");
    /// assert_eq!((card.iin.as_str(), card.last4.as_str()), ("445701", "0009"));
    /// # Ok::<(), cardsync_core::PanError>(())
    /// ```
    pub fn open(pan: &Pan, card_type: CardType, open_date: impl Into<String>) -> NewCard {
        NewCard {
            last4: Last4::of(pan),
            iin: Iin::of(pan),
            card_type,
            status: CardStatus::Open,
            network_identifier: NetworkIdentifier::of(pan),
            open_date: open_date.into(),
            close_date: None,
        }
    }
}

/// A status update ("Update Card Status Parameters"): the card by its last four digits, and
/// only what changes (properties left out are not updated).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CardUpdate {
    /// `last4`.
    pub last4: Last4,
    /// `cardType`.
    pub card_type: Option<CardType>,
    /// `status`.
    pub status: Option<CardStatus>,
    /// `networkIdentifier`.
    pub network_identifier: Option<NetworkIdentifier>,
    /// `openDate`.
    pub open_date: Option<String>,
    /// `closeDate`: required when the status becomes `CLOSED`.
    pub close_date: Option<String>,
}

impl CardUpdate {
    /// Closes the card with these last four digits on `close_date`.
    ///
    /// ```
    /// use cardsync_proto::issuer::feed::{CardStatus, CardUpdate, Last4};
    /// let update = CardUpdate::close(Last4::parse("6789").unwrap(), "2023-04-06T08:00:00Z");
    /// assert_eq!(update.status, Some(CardStatus::Closed));
    /// ```
    pub fn close(last4: Last4, close_date: impl Into<String>) -> CardUpdate {
        CardUpdate {
            last4,
            card_type: None,
            status: Some(CardStatus::Closed),
            network_identifier: None,
            open_date: None,
            close_date: Some(close_date.into()),
        }
    }
}

/// One card of the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedCard {
    /// A card to create.
    New(NewCard),
    /// A card whose status (or other properties) change.
    Update(CardUpdate),
}

impl FeedCard {
    /// The card's last four digits.
    pub fn last4(&self) -> Last4 {
        match self {
            FeedCard::New(c) => c.last4,
            FeedCard::Update(c) => c.last4,
        }
    }

    fn closes_without_date(&self) -> bool {
        match self {
            FeedCard::New(c) => c.status == CardStatus::Closed && c.close_date.is_none(),
            FeedCard::Update(c) => c.status == Some(CardStatus::Closed) && c.close_date.is_none(),
        }
    }
}

/// `PUT /v2/data/customers/{sourceCustomerId}/accounts/{sourceAccountId}/cards`: creates and
/// updates the cards of one customer account. Every card carries the account's identifiers,
/// as the document requires. Idempotent: it sets the cards' state.
///
/// ```
/// use cardsync_proto::BaseUrl;
/// use cardsync_proto::issuer::{IssuerConfig, IssuerEndpoint};
/// use cardsync_proto::issuer::feed::{CardUpdate, FeedCard, Last4, UpdateCards};
///
/// let config = IssuerConfig::new(BaseUrl::parse("https://issuer.example")?);
/// let update = CardUpdate::close(Last4::parse("6789").unwrap(), "2023-04-06T08:00:00Z");
/// let request = UpdateCards::new("cust 1", "acct-1", vec![FeedCard::Update(update)])?.encode(&config)?;
/// assert_eq!(request.uri(), "https://issuer.example/v2/data/customers/cust%201/accounts/acct-1/cards");
/// assert_eq!(request.method(), "PUT");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateCards {
    customer_id: String,
    account_id: String,
    cards: Vec<FeedCard>,
}

impl UpdateCards {
    /// The cards of one account.
    ///
    /// # Errors
    ///
    /// [`EncodeError::NoCards`], [`EncodeError::EmptyField`] for an empty identifier, and
    /// [`EncodeError::InvalidField`] for a card set `CLOSED` without `closeDate`.
    pub fn new(
        customer_id: impl Into<String>,
        account_id: impl Into<String>,
        cards: Vec<FeedCard>,
    ) -> Result<UpdateCards, EncodeError> {
        let (customer_id, account_id) = (customer_id.into(), account_id.into());
        if customer_id.is_empty() {
            return Err(EncodeError::EmptyField {
                field: "sourceCustomerId",
            });
        }
        if account_id.is_empty() {
            return Err(EncodeError::EmptyField {
                field: "sourceAccountId",
            });
        }
        if cards.is_empty() {
            return Err(EncodeError::NoCards);
        }
        if cards.iter().any(FeedCard::closes_without_date) {
            return Err(EncodeError::InvalidField {
                field: "closeDate",
                expected: "set when the status is CLOSED",
            });
        }
        Ok(UpdateCards {
            customer_id,
            account_id,
            cards,
        })
    }

    /// The cards.
    pub fn cards(&self) -> &[FeedCard] {
        &self.cards
    }

    /// The body, keys in the order of the document's example.
    fn body(&self) -> Vec<u8> {
        let mut out = b"{\"cards\":[".to_vec();
        for (i, card) in self.cards.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let field = |out: &mut Vec<u8>, key: &str| {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":");
            };
            out.extend_from_slice(b"{\"sourceAccountId\":");
            write_json_str(&mut out, &self.account_id);
            field(&mut out, "sourceCustomerId");
            write_json_str(&mut out, &self.customer_id);
            field(&mut out, "last4");
            write_json_str(&mut out, card.last4().as_str());
            match card {
                FeedCard::New(c) => {
                    field(&mut out, "iin");
                    write_json_str(&mut out, c.iin.as_str());
                    field(&mut out, "cardType");
                    write_json_str(&mut out, c.card_type.as_str());
                    field(&mut out, "status");
                    write_json_str(&mut out, c.status.as_str());
                    field(&mut out, "networkIdentifier");
                    out.push(b'0' + c.network_identifier.digit());
                    field(&mut out, "openDate");
                    write_json_str(&mut out, &c.open_date);
                    field(&mut out, "closeDate");
                    match &c.close_date {
                        Some(d) => write_json_str(&mut out, d),
                        None => out.extend_from_slice(b"null"),
                    }
                }
                FeedCard::Update(c) => {
                    if let Some(t) = &c.card_type {
                        field(&mut out, "cardType");
                        write_json_str(&mut out, t.as_str());
                    }
                    if let Some(s) = &c.status {
                        field(&mut out, "status");
                        write_json_str(&mut out, s.as_str());
                    }
                    if let Some(n) = c.network_identifier {
                        field(&mut out, "networkIdentifier");
                        out.push(b'0' + n.digit());
                    }
                    if let Some(d) = &c.open_date {
                        field(&mut out, "openDate");
                        write_json_str(&mut out, d);
                    }
                    if let Some(d) = &c.close_date {
                        field(&mut out, "closeDate");
                        write_json_str(&mut out, d);
                    }
                }
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// The feed's answer: the id of the request, for the issuer's records.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct FeedAccepted {
    /// `requestId`.
    pub request_id: Option<String>,
    /// Every other field, as received.
    pub other: Map<String, Value>,
}

impl<'de> serde::Deserialize<'de> for FeedAccepted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        Ok(FeedAccepted {
            request_id: map.remove("requestId").as_ref().and_then(text_of),
            other: map,
        })
    }
}

impl IssuerEndpoint for UpdateCards {
    type Output = FeedAccepted;
    const METHOD: Method = Method::PUT;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn encode(&self, config: &IssuerConfig) -> Result<Request<Vec<u8>>, EncodeError> {
        let path = format!(
            "{}{}{}{}{}",
            paths::FEED_CUSTOMERS,
            path_segment(&self.customer_id),
            paths::FEED_ACCOUNTS,
            path_segment(&self.account_id),
            paths::FEED_CARDS
        );
        build(Self::METHOD, config, &path, self.body(), None)
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<FeedAccepted, DecodeError> {
        decode_plain(response)
    }
}

/// A card of a feed request as a server reads it, with the identifiers it carried.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedCard {
    /// `sourceCustomerId`.
    pub customer_id: String,
    /// `sourceAccountId`.
    pub account_id: String,
    /// The card.
    pub card: FeedCard,
}

/// Reads a feed request body, server side: every card checked against the document (the
/// identifiers and `last4` always; a card with an `iin` is a new card and needs every field;
/// known `cardType` and `status` words; a digit for `networkIdentifier`, number or string;
/// `closeDate` when the status is `CLOSED`). Errors name the card and the field.
///
/// # Errors
///
/// [`RequestError`] for a body that is not an object with a non-empty `cards` list, or the
/// first card that breaks a rule.
///
/// ```
/// use cardsync_proto::issuer::feed::{FeedCard, decode_update_cards_body};
/// let body = br#"{"cards":[{"sourceAccountId":"a","sourceCustomerId":"c","last4":"6789","status":"CLOSED"}]}"#;
/// let err = decode_update_cards_body(body).unwrap_err();
/// assert_eq!(err.to_string(), "cards[0].closeDate must be set when the status is CLOSED");
/// # Ok::<(), cardsync_proto::server::RequestError>(())
/// ```
pub fn decode_update_cards_body(body: &[u8]) -> Result<Vec<ReceivedCard>, RequestError> {
    let map: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        RequestError::Json(crate::endpoints::json_error::<Map<String, Value>>(body, &e))
    })?;
    let cards = map
        .get("cards")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("cards".to_owned(), "a non-empty list"))?;
    cards
        .iter()
        .enumerate()
        .map(|(i, card)| received(card, &format!("cards[{i}]")))
        .collect()
}

fn invalid(field: String, expected: &'static str) -> RequestError {
    RequestError::Invalid { field, expected }
}

fn received(card: &Value, at: &str) -> Result<ReceivedCard, RequestError> {
    let Value::Object(f) = card else {
        return Err(invalid(at.to_owned(), "an object"));
    };
    let key = |k: &str| format!("{at}.{k}");
    let text = |k: &str| -> Result<Option<String>, RequestError> {
        match f.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(key(k), "a string")),
        }
    };
    let required = |k: &str| -> Result<String, RequestError> {
        text(k)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(key(k), "a non-empty string"))
    };
    let account_id = required("sourceAccountId")?;
    let customer_id = required("sourceCustomerId")?;
    let last4 =
        Last4::parse(&required("last4")?).ok_or_else(|| invalid(key("last4"), "four digits"))?;
    let card_type = text("cardType")?
        .map(|t| CardType::parse(&t))
        .map(|t| {
            t.is_known()
                .then_some(t)
                .ok_or_else(|| invalid(key("cardType"), "CREDIT, DEBIT or PREPAID"))
        })
        .transpose()?;
    let status = text("status")?
        .map(|s| CardStatus::parse(&s))
        .map(|s| {
            s.is_known()
                .then_some(s)
                .ok_or_else(|| invalid(key("status"), "OPEN or CLOSED"))
        })
        .transpose()?;
    let network_identifier = match f.get("networkIdentifier") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            text_of(v)
                .and_then(|t| t.parse::<u8>().ok())
                .and_then(NetworkIdentifier::new)
                .ok_or_else(|| invalid(key("networkIdentifier"), "a digit"))?,
        ),
    };
    let open_date = text("openDate")?;
    let close_date = text("closeDate")?;
    let card = match text("iin")? {
        Some(iin) => {
            let iin = Iin::parse(&iin).ok_or_else(|| invalid(key("iin"), "six to eight digits"))?;
            FeedCard::New(NewCard {
                last4,
                iin,
                card_type: card_type
                    .ok_or_else(|| invalid(key("cardType"), "CREDIT, DEBIT or PREPAID"))?,
                status: status.ok_or_else(|| invalid(key("status"), "OPEN or CLOSED"))?,
                network_identifier: network_identifier
                    .ok_or_else(|| invalid(key("networkIdentifier"), "a digit"))?,
                open_date: open_date
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| invalid(key("openDate"), "a non-empty string"))?,
                close_date,
            })
        }
        None => FeedCard::Update(CardUpdate {
            last4,
            card_type,
            status,
            network_identifier,
            open_date,
            close_date,
        }),
    };
    if card.closes_without_date() {
        return Err(invalid(key("closeDate"), "set when the status is CLOSED"));
    }
    Ok(ReceivedCard {
        customer_id,
        account_id,
        card,
    })
}

/// The feed's answer body, server side: `{"requestId":…}`.
///
/// ```
/// assert_eq!(cardsync_proto::issuer::feed::accepted_body("r1"), br#"{"requestId":"r1"}"#);
/// ```
pub fn accepted_body(request_id: &str) -> Vec<u8> {
    let mut out = b"{\"requestId\":".to_vec();
    write_json_str(&mut out, request_id);
    out.push(b'}');
    out
}
