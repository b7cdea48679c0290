//! An issuing platform's card status change (`synctera-update-card.txt`):
//! `PATCH /v1/cards/{card_id}` (the base URL carries the `/v1`), signed with a bearer token and
//! carrying an `Idempotency-Key`, which makes it safe to retry: a retry with the same key is
//! answered with the first answer and changes nothing. The answer is the card.

use std::fmt;

use http::{HeaderValue, Method, Request, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::feed::{CardType, word_enum};
use super::{IssuerConfig, IssuerEndpoint, build, path_segment, text_of};
use crate::endpoints::{Idempotency, decode_plain};
use crate::paths;
use crate::server::RequestError;
use crate::{DecodeError, EncodeError};

word_enum!(
    /// `card_status`: the card's lifecycle state.
    ///
    /// ```
    /// use cardsync_proto::issuer::platform::PlatformCardStatus;
    /// assert_eq!(PlatformCardStatus::parse("TERMINATED"), PlatformCardStatus::Terminated);
    /// ```
    PlatformCardStatus {
        /// `ACTIVE`.
        Active = "ACTIVE",
        /// `SUSPENDED`: temporary.
        Suspended = "SUSPENDED",
        /// `TERMINATED`: final.
        Terminated = "TERMINATED",
    }
);

word_enum!(
    /// `reason` (and the answer's `status_reason`): why the status changed, by the document's
    /// codes.
    ///
    /// ```
    /// use cardsync_proto::issuer::platform::StatusReason;
    /// assert_eq!(StatusReason::parse("LOS"), StatusReason::Lost);
    /// assert_eq!(StatusReason::Lost.description(), "Card reported lost");
    /// assert!(StatusReason::WORDS.contains(&"LOS"));
    /// ```
    StatusReason {
        /// `NEW`.
        New = "NEW",
        /// `REQ`.
        Requested = "REQ",
        /// `INA`.
        Dormant = "INA",
        /// `UNK`.
        InvalidShippingAddress = "UNK",
        /// `NEG`.
        NegativeBalance = "NEG",
        /// `REV`.
        UnderReview = "REV",
        /// `SUS`.
        SuspiciousActivity = "SUS",
        /// `OUT`.
        OutsideProgram = "OUT",
        /// `FRD`.
        Fraud = "FRD",
        /// `MAT`.
        OfacMatch = "MAT",
        /// `LOS`.
        Lost = "LOS",
        /// `CLO`.
        Cloned = "CLO",
        /// `COM`.
        Compromised = "COM",
        /// `TMP`.
        AwaitingConfirmation = "TMP",
        /// `PRC`.
        Processor = "PRC",
        /// `ISS`.
        Issuer = "ISS",
        /// `EXP`.
        Expired = "EXP",
        /// `KYC`.
        FailedKyc = "KYC",
        /// `INF`.
        InformationValidated = "INF",
        /// `ACT`.
        ActivityValidated = "ACT",
        /// `AUX`.
        ThirdParty = "AUX",
        /// `PIN`.
        PinTryLimit = "PIN",
        /// `STO`.
        Stolen = "STO",
        /// `ADD`.
        AddressIssue = "ADD",
        /// `NAM`.
        NameIssue = "NAM",
        /// `SSN`.
        SsnIssue = "SSN",
        /// `DOB`.
        DobIssue = "DOB",
        /// `EML`.
        EmailIssue = "EML",
        /// `PHO`.
        PhoneIssue = "PHO",
        /// `FUL`.
        FulfillmentMismatch = "FUL",
        /// `OTH`.
        Other = "OTH",
    }
);

impl StatusReason {
    /// The document's description of the code.
    pub fn description(&self) -> &'static str {
        match self.as_str() {
            "NEW" => "Card activated",
            "REQ" => "Requested by you",
            "INA" => "Dormant",
            "UNK" => "Invalid shipping address",
            "NEG" => "Negative account balance",
            "REV" => "Account under review",
            "SUS" => "Suspicious activity",
            "OUT" => "Activity outside program parameters",
            "FRD" => "Confirmed fraud",
            "MAT" => "Matched with an OFAC list",
            "LOS" => "Card reported lost",
            "CLO" => "Card was cloned",
            "COM" => "Account or card was compromised",
            "TMP" => "Awaiting customer confirmation",
            "PRC" => "Initiated by Processor",
            "ISS" => "Initiated by Issuer",
            "EXP" => "Card expired",
            "KYC" => "Failed KYC",
            "INF" => "Information was validated",
            "ACT" => "Account activity was validated",
            "AUX" => "Initiated by a third party",
            "PIN" => "PIN try limit reached",
            "STO" => "Card reported stolen",
            "ADD" => "Address issue",
            "NAM" => "Name issue",
            "SSN" => "SSN issue",
            "DOB" => "DOB issue",
            "EML" => "Email issue",
            "PHO" => "Phone issue",
            "FUL" => "Account/fulfillment mismatch",
            "OTH" => "Other",
            _ => "a reason the documents do not give",
        }
    }
}

/// `emboss_name`: up to two lines, each at most 21 characters of A-Z, a-z, 0-9, space and
/// `. , / - & '`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmbossName {
    /// `line_1`.
    pub line_1: Option<String>,
    /// `line_2`.
    pub line_2: Option<String>,
}

/// Whether a line can be embossed.
///
/// ```
/// use cardsync_proto::issuer::platform::embossable;
/// assert!(embossable("Jane Smith"));
/// assert!(!embossable("Jane Smith the Twenty-Second"));
/// assert!(!embossable("Jane_Smith"));
/// ```
pub fn embossable(line: &str) -> bool {
    line.chars().count() <= 21
        && line
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " .,/-&'".contains(c))
}

/// The largest `memo`, in characters.
pub const MAX_MEMO: usize = 255;

/// What a PATCH changes (every field optional, as the document's body).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct CardEdits {
    /// `card_status`.
    pub card_status: Option<PlatformCardStatus>,
    /// `customer_id`.
    pub customer_id: Option<String>,
    /// `emboss_name`.
    pub emboss_name: Option<EmbossName>,
    /// `memo`, at most 255 characters.
    pub memo: Option<String>,
    /// `metadata`: key-value pairs, kept as given.
    pub metadata: Option<Map<String, Value>>,
    /// `reason`.
    pub reason: Option<StatusReason>,
}

impl CardEdits {
    /// A status change with its reason.
    ///
    /// ```
    /// use cardsync_proto::issuer::platform::{CardEdits, PlatformCardStatus, StatusReason};
    /// let edits = CardEdits::status(PlatformCardStatus::Terminated, StatusReason::Lost);
    /// assert_eq!(edits.reason, Some(StatusReason::Lost));
    /// ```
    pub fn status(status: PlatformCardStatus, reason: StatusReason) -> CardEdits {
        CardEdits {
            card_status: Some(status),
            reason: Some(reason),
            ..CardEdits::default()
        }
    }

    /// The first rule of the document the edits break, as (field, what it must be).
    fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self
            .memo
            .as_ref()
            .is_some_and(|m| m.chars().count() > MAX_MEMO)
        {
            return Some(("memo", "at most 255 characters"));
        }
        if let Some(e) = &self.emboss_name {
            for (field, line) in [
                ("emboss_name.line_1", &e.line_1),
                ("emboss_name.line_2", &e.line_2),
            ] {
                if line.as_deref().is_some_and(|l| !embossable(l)) {
                    return Some((
                        field,
                        "at most 21 characters of A-Z, a-z, 0-9, space and . , / - & '",
                    ));
                }
            }
        }
        None
    }
}

impl Serialize for CardEdits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(v) = &self.card_status {
            map.serialize_entry("card_status", v.as_str())?;
        }
        if let Some(v) = &self.customer_id {
            map.serialize_entry("customer_id", v)?;
        }
        if let Some(e) = &self.emboss_name {
            map.serialize_entry("emboss_name", &EmbossOut(e))?;
        }
        if let Some(v) = &self.memo {
            map.serialize_entry("memo", v)?;
        }
        if let Some(v) = &self.metadata {
            map.serialize_entry("metadata", v)?;
        }
        if let Some(v) = &self.reason {
            map.serialize_entry("reason", v.as_str())?;
        }
        map.end()
    }
}

struct EmbossOut<'a>(&'a EmbossName);

impl Serialize for EmbossOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(l) = &self.0.line_1 {
            map.serialize_entry("line_1", l)?;
        }
        if let Some(l) = &self.0.line_2 {
            map.serialize_entry("line_2", l)?;
        }
        map.end()
    }
}

/// An `Idempotency-Key`: a value unique to one change, sent again with every retry of it, so
/// that the platform applies the change once. Make it random (a UUID, or
/// `cardsync_hyper::random_token()`): a different key must be used for each request.
///
/// ```
/// use cardsync_proto::issuer::platform::IdempotencyKey;
/// assert!(IdempotencyKey::new("7d943c51-e4ff-4e57-9558-08cab6b963c7").is_some());
/// assert!(IdempotencyKey::new("").is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// 1 to 255 visible ASCII characters, or `None`.
    pub fn new(key: &str) -> Option<IdempotencyKey> {
        (!key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| IdempotencyKey(key.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `PATCH /v1/cards/{card_id}`: changes one card. Idempotent thanks to its key, which is part
/// of the request and so sent again with every retry.
///
/// ```
/// use cardsync_proto::{BaseUrl, IssuerToken};
/// use cardsync_proto::issuer::{IssuerConfig, IssuerEndpoint};
/// use cardsync_proto::issuer::platform::*;
///
/// let config = IssuerConfig::new(BaseUrl::parse("https://api.synctera.com/v1")?)
///     .with_token(IssuerToken::new("tok")?);
/// let edits = CardEdits::status(PlatformCardStatus::Terminated, StatusReason::Lost);
/// let key = IdempotencyKey::new("k-1").unwrap();
/// let request = UpdateCard::new("card-1", edits, key)?.encode(&config)?;
/// assert_eq!(request.uri(), "https://api.synctera.com/v1/cards/card-1");
/// assert_eq!(request.headers()["idempotency-key"], "k-1");
/// assert_eq!(request.body().as_slice(), br#"{"card_status":"TERMINATED","reason":"LOS"}"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateCard {
    card_id: String,
    edits: CardEdits,
    key: IdempotencyKey,
}

impl UpdateCard {
    /// A change of one card.
    ///
    /// # Errors
    ///
    /// [`EncodeError::EmptyField`] for an empty card id, [`EncodeError::InvalidField`] for a
    /// memo over 255 characters or an emboss line that cannot be embossed.
    pub fn new(
        card_id: impl Into<String>,
        edits: CardEdits,
        key: IdempotencyKey,
    ) -> Result<UpdateCard, EncodeError> {
        let card_id = card_id.into();
        if card_id.is_empty() {
            return Err(EncodeError::EmptyField { field: "card_id" });
        }
        if let Some((field, expected)) = edits.problem() {
            return Err(EncodeError::InvalidField { field, expected });
        }
        Ok(UpdateCard {
            card_id,
            edits,
            key,
        })
    }

    /// The edits.
    pub fn edits(&self) -> &CardEdits {
        &self.edits
    }
}

impl IssuerEndpoint for UpdateCard {
    type Output = IssuedCard;
    const METHOD: Method = Method::PATCH;
    const IDEMPOTENCY: Idempotency = Idempotency::Idempotent;

    fn encode(&self, config: &IssuerConfig) -> Result<Request<Vec<u8>>, EncodeError> {
        let body = serde_json::to_vec(&self.edits).map_err(|_| EncodeError::InvalidField {
            field: "metadata",
            expected: "JSON",
        })?;
        let key =
            HeaderValue::from_str(self.key.as_str()).map_err(|_| EncodeError::InvalidField {
                field: "Idempotency-Key",
                expected: "visible ASCII",
            })?;
        let path = format!("{}{}", paths::PLATFORM_CARD, path_segment(&self.card_id));
        build(
            Self::METHOD,
            config,
            &path,
            body,
            Some(("idempotency-key", key)),
        )
    }

    fn decode<B: AsRef<[u8]>>(response: &Response<B>) -> Result<IssuedCard, DecodeError> {
        decode_plain(response)
    }
}

/// `card_details` of the answer: the fields the network needs typed, every other field kept
/// as received in `other`.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct CardDetails {
    /// `id`.
    pub id: Option<String>,
    /// `account_id`.
    pub account_id: Option<String>,
    /// `customer_id`.
    pub customer_id: Option<String>,
    /// `card_status`.
    pub card_status: Option<PlatformCardStatus>,
    /// `status_reason`.
    pub status_reason: Option<StatusReason>,
    /// `last_four`.
    pub last_four: Option<String>,
    /// `bin`.
    pub bin: Option<String>,
    /// `expiration_month`, such as `06`.
    pub expiration_month: Option<String>,
    /// `expiration_year`, such as `25`.
    pub expiration_year: Option<String>,
    /// `card_brand`, such as `MASTERCARD`.
    pub card_brand: Option<String>,
    /// `reissued_from_id`: the card this one replaces.
    pub reissued_from_id: Option<String>,
    /// `reissued_to_id`: the card that replaces this one.
    pub reissued_to_id: Option<String>,
    /// `reissue_reason`.
    pub reissue_reason: Option<String>,
    /// `creation_time`.
    pub creation_time: Option<String>,
    /// `last_updated_time`.
    pub last_updated_time: Option<String>,
    /// `memo`.
    pub memo: Option<String>,
    /// `emboss_name`, when it is the documented object of text lines (anything else is kept
    /// in `other`).
    pub emboss_name: Option<EmbossName>,
    /// Every other field, as received.
    pub other: Map<String, Value>,
}

/// The fields of [`CardDetails`] read as text, in the order they are written.
const DETAIL_TEXT: [&str; 13] = [
    "id",
    "account_id",
    "customer_id",
    "last_four",
    "bin",
    "expiration_month",
    "expiration_year",
    "card_brand",
    "reissued_from_id",
    "reissued_to_id",
    "reissue_reason",
    "creation_time",
    "last_updated_time",
];

impl CardDetails {
    fn text_slots(&mut self) -> [&mut Option<String>; 13] {
        [
            &mut self.id,
            &mut self.account_id,
            &mut self.customer_id,
            &mut self.last_four,
            &mut self.bin,
            &mut self.expiration_month,
            &mut self.expiration_year,
            &mut self.card_brand,
            &mut self.reissued_from_id,
            &mut self.reissued_to_id,
            &mut self.reissue_reason,
            &mut self.creation_time,
            &mut self.last_updated_time,
        ]
    }

    fn text_values(&self) -> [&Option<String>; 13] {
        [
            &self.id,
            &self.account_id,
            &self.customer_id,
            &self.last_four,
            &self.bin,
            &self.expiration_month,
            &self.expiration_year,
            &self.card_brand,
            &self.reissued_from_id,
            &self.reissued_to_id,
            &self.reissue_reason,
            &self.creation_time,
            &self.last_updated_time,
        ]
    }

    /// The expiry, from `expiration_month` and `expiration_year`.
    pub fn expiry(&self) -> Option<cardsync_core::Expiry> {
        let (m, y) = (
            self.expiration_month.as_deref()?,
            self.expiration_year.as_deref()?,
        );
        cardsync_core::Expiry::parse(&format!("{m}/{y}")).ok()
    }

    fn from_map(mut map: Map<String, Value>) -> CardDetails {
        let mut d = CardDetails::default();
        for (name, slot) in DETAIL_TEXT.iter().zip(d.text_slots()) {
            if let Some(v) = map.remove(*name) {
                *slot = text_of(&v);
            }
        }
        if let Some(v) = map.remove("card_status") {
            d.card_status = text_of(&v).map(|s| PlatformCardStatus::parse(&s));
        }
        if let Some(v) = map.remove("status_reason") {
            d.status_reason = text_of(&v).map(|s| StatusReason::parse(&s));
        }
        if let Some(v) = map.remove("memo") {
            d.memo = text_of(&v);
        }
        match map.remove("emboss_name") {
            Some(Value::Object(lines))
                if lines.iter().all(|(k, v)| {
                    (k == "line_1" || k == "line_2") && (v.is_string() || v.is_null())
                }) =>
            {
                d.emboss_name = Some(EmbossName {
                    line_1: lines.get("line_1").and_then(text_of),
                    line_2: lines.get("line_2").and_then(text_of),
                });
            }
            Some(other) => {
                map.insert("emboss_name".to_owned(), other);
            }
            None => {}
        }
        d.other = map;
        d
    }
}

impl Serialize for CardDetails {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (name, value) in DETAIL_TEXT.iter().zip(self.text_values()) {
            if let Some(v) = value {
                map.serialize_entry(name, v)?;
            }
        }
        if let Some(v) = &self.card_status {
            map.serialize_entry("card_status", v.as_str())?;
        }
        if let Some(v) = &self.status_reason {
            map.serialize_entry("status_reason", v.as_str())?;
        }
        if let Some(v) = &self.memo {
            map.serialize_entry("memo", v)?;
        }
        if let Some(e) = &self.emboss_name {
            map.serialize_entry("emboss_name", &EmbossOut(e))?;
        }
        for (k, v) in &self.other {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The answer to a PATCH: the card.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct IssuedCard {
    /// `card_details`.
    pub card_details: CardDetails,
    /// `tenant`.
    pub tenant: Option<String>,
    /// `type`: the card program (`CREDIT`, `DEBIT`, `PREPAID`).
    pub program: Option<CardType>,
    /// Every other field, as received.
    pub other: Map<String, Value>,
}

impl<'de> serde::Deserialize<'de> for IssuedCard {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = Map::<String, Value>::deserialize(d)?;
        let card_details = match map.remove("card_details") {
            Some(Value::Object(m)) => CardDetails::from_map(m),
            Some(Value::Null) | None => CardDetails::default(),
            Some(_) => {
                return Err(serde::de::Error::custom("card_details: expected an object"));
            }
        };
        Ok(IssuedCard {
            card_details,
            tenant: map.remove("tenant").as_ref().and_then(text_of),
            program: map
                .remove("type")
                .as_ref()
                .and_then(text_of)
                .map(|t| CardType::parse(&t)),
            other: map,
        })
    }
}

impl Serialize for IssuedCard {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("card_details", &self.card_details)?;
        if let Some(t) = &self.tenant {
            map.serialize_entry("tenant", t)?;
        }
        if let Some(t) = &self.program {
            map.serialize_entry("type", t.as_str())?;
        }
        for (k, v) in &self.other {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The answer body of a PATCH, server side: the card, in the document's layout.
///
/// ```
/// use cardsync_proto::issuer::platform::{IssuedCard, card_body};
/// let mut card = IssuedCard::default();
/// card.tenant = Some("t".into());
/// assert_eq!(card_body(&card), br#"{"card_details":{},"tenant":"t"}"#);
/// ```
pub fn card_body(card: &IssuedCard) -> Vec<u8> {
    // Strings and JSON values: serializing to memory cannot fail.
    serde_json::to_vec(card).unwrap_or_default()
}

/// Reads a PATCH body, server side: every field checked against the document (known
/// `card_status` and `reason` words, a memo of at most 255 characters, embossable lines,
/// `customer_id` a string, `metadata` an object). Errors name the field.
///
/// # Errors
///
/// [`RequestError`] for a body that is not a JSON object, or the first field that breaks a
/// rule.
///
/// ```
/// use cardsync_proto::issuer::platform::decode_card_edits;
/// let err = decode_card_edits(br#"{"card_status":"TERMINATED","reason":"XYZ"}"#).unwrap_err();
/// assert_eq!(err.to_string(), "reason must be one of the document's 31 reason codes");
/// ```
pub fn decode_card_edits(body: &[u8]) -> Result<CardEdits, RequestError> {
    let map: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        RequestError::Json(crate::endpoints::json_error::<Map<String, Value>>(body, &e))
    })?;
    let invalid = |field: &str, expected: &'static str| RequestError::Invalid {
        field: field.to_owned(),
        expected,
    };
    let text = |k: &str| -> Result<Option<String>, RequestError> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(k, "a string")),
        }
    };
    let mut edits = CardEdits {
        card_status: text("card_status")?.map(|s| PlatformCardStatus::parse(&s)),
        customer_id: text("customer_id")?,
        emboss_name: None,
        memo: text("memo")?,
        metadata: None,
        reason: text("reason")?.map(|s| StatusReason::parse(&s)),
    };
    if edits.card_status.as_ref().is_some_and(|s| !s.is_known()) {
        return Err(invalid("card_status", "ACTIVE, SUSPENDED or TERMINATED"));
    }
    if edits.reason.as_ref().is_some_and(|r| !r.is_known()) {
        return Err(invalid("reason", "one of the document's 31 reason codes"));
    }
    match map.get("emboss_name") {
        None | Some(Value::Null) => {}
        Some(Value::Object(e)) => {
            let line = |k: &str| match e.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(invalid(&format!("emboss_name.{k}"), "a string")),
            };
            edits.emboss_name = Some(EmbossName {
                line_1: line("line_1")?,
                line_2: line("line_2")?,
            });
        }
        Some(_) => return Err(invalid("emboss_name", "an object")),
    }
    match map.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => edits.metadata = Some(m.clone()),
        Some(_) => return Err(invalid("metadata", "an object")),
    }
    if let Some((field, expected)) = edits.problem() {
        return Err(invalid(field, expected));
    }
    Ok(edits)
}

impl fmt::Display for EmbossName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.line_1, &self.line_2) {
            (Some(a), Some(b)) => write!(f, "{a} / {b}"),
            (Some(a), None) | (None, Some(a)) => f.write_str(a),
            (None, None) => Ok(()),
        }
    }
}
