//! The issuer side of the card network in the emulator: an issuing platform's cards (changed
//! by `PATCH /v1/cards/{card_id}`) and an issuer's feed of customer accounts (`PUT
//! /v2/data/customers/{sourceCustomerId}/accounts/{sourceAccountId}/cards`), and what each
//! event means for the merchants holding the card, as the networks' account updaters report
//! it:
//!
//! | issuer event | what merchants holding the old card get |
//! |---|---|
//! | PATCH `TERMINATED` with `LOS`, `STO`, `CLO`, `COM` or `FRD` | reissued: `updated_card`, the new number and expiry |
//! | PATCH `TERMINATED` with `EXP` | renewed, same number: `updated_expiry` |
//! | PATCH `TERMINATED` with any other reason (or none) | `closed` |
//! | PATCH `SUSPENDED`, or back to `ACTIVE` | nothing |
//! | feed: card set `CLOSED` | `closed`, for merchant cards with that IIN and last four digits |
//! | feed: card set `CLOSED`, and the account has an `OPEN` card | `contact` (the new number is not in the feed) |
//!
//! (Visa Account Updater's A / E / C / Q records; a suspension is temporary and sends none.)
//! The new number of a reissue keeps the first six digits and follows the emulator's
//! documented replacement rule ([`crate::replacement_card`]); the new expiry is three years
//! later ([`crate::replacement_expiry`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use cardsync_core::{Expiry, Pan, UpdateStatus, mask_card_text};
use cardsync_proto::issuer::feed::{CardStatus, FeedCard, Last4};
use cardsync_proto::issuer::platform::{
    CardDetails, CardEdits, EmbossName, IssuedCard, PlatformCardStatus, StatusReason,
};
use cardsync_proto::{ResultCard, ReturnedCard};

use crate::overview::{IssuerCardView, row_view};
use crate::replacement::{replacement_card, replacement_expiry};

/// What the network reports to merchants holding a card.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Reissued: a new number and expiry.
    NewCard { card: String, exp: Expiry },
    /// Renewed: the same number, a new expiry.
    NewExpiry(Expiry),
    /// Closed.
    Closed,
    /// A new card exists, but the network cannot pass its number on.
    Contact,
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::NewCard { card, exp } => write!(f, "NewCard({}, {exp})", mask_card_text(card)),
            Outcome::NewExpiry(exp) => write!(f, "NewExpiry({exp})"),
            Outcome::Closed => f.write_str("Closed"),
            Outcome::Contact => f.write_str("Contact"),
        }
    }
}

impl Outcome {
    /// The result row a merchant's card `card` (id `id`, expiry `exp`) gets.
    pub(crate) fn row(&self, id: &str, card: &str, exp: Expiry) -> ResultCard {
        let (status, card, exp) = match self {
            Outcome::NewCard { card, exp } => (UpdateStatus::UpdatedCard, card.clone(), *exp),
            Outcome::NewExpiry(new) => (UpdateStatus::UpdatedExpiry, card.to_owned(), *new),
            Outcome::Closed => (UpdateStatus::Closed, card.to_owned(), exp),
            Outcome::Contact => (UpdateStatus::Contact, card.to_owned(), exp),
        };
        ResultCard::new(id, ReturnedCard::new(card), exp.to_string(), status)
    }
}

/// What a termination with a reason does to a card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Termination {
    /// Lost, stolen, cloned, compromised, fraud: a new number and expiry.
    Reissue,
    /// Expired: the same number, a new expiry.
    Renew,
    /// Any other reason: closed.
    Close,
}

/// What terminating a card for `reason` does (the table of the module docs).
pub(crate) fn termination(reason: &StatusReason) -> Termination {
    match reason {
        StatusReason::Lost
        | StatusReason::Stolen
        | StatusReason::Cloned
        | StatusReason::Compromised
        | StatusReason::Fraud => Termination::Reissue,
        StatusReason::Expired => Termination::Renew,
        _ => Termination::Close,
    }
}

impl Termination {
    /// The result status merchants holding the card get.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Termination::Reissue => "updated_card",
            Termination::Renew => "updated_expiry",
            Termination::Close => "closed",
        }
    }
}

/// One card of the issuing platform.
#[derive(Clone)]
struct PlatformCard {
    card: String,
    exp: Expiry,
    status: PlatformCardStatus,
    reason: Option<StatusReason>,
    customer_id: Option<String>,
    emboss_name: Option<EmbossName>,
    memo: Option<String>,
    reissued_from: Option<String>,
    reissued_to: Option<String>,
    created_at: String,
    updated_at: String,
}

impl fmt::Debug for PlatformCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlatformCard")
            .field("card", &mask_card_text(&self.card))
            .field("exp", &self.exp)
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("reissued_from", &self.reissued_from)
            .field("reissued_to", &self.reissued_to)
            .finish_non_exhaustive()
    }
}

/// A card of an issuer's feed account.
#[derive(Clone, Debug)]
struct AccountCard {
    last4: Last4,
    iin: Option<String>,
    status: Option<CardStatus>,
}

/// Why a PATCH or a feed request is refused: the status and the message.
pub(crate) struct Refused(pub(crate) u16, pub(crate) String);

/// A refusal, for `?`.
fn refuse(status: u16, message: impl Into<String>) -> Refused {
    Refused(status, message.into())
}

/// The network's state. `Debug` masks card numbers.
#[derive(Default, Debug)]
pub(crate) struct Network {
    cards: BTreeMap<String, PlatformCard>,
    /// Outcomes by full card number (platform events).
    by_card: HashMap<String, Outcome>,
    /// Outcomes by (first six digits, last four) (feed events).
    by_tail: HashMap<(String, String), Outcome>,
    /// Idempotency keys: the body they came with and the answer given.
    keys: HashMap<String, (Vec<u8>, u16, Vec<u8>)>,
    accounts: HashMap<(String, String), Vec<AccountCard>>,
}

impl Network {
    /// Registers a card with the issuing platform, as issued: its id.
    pub(crate) fn register(&mut self, id: String, pan: &Pan, exp: Expiry, at: String) -> String {
        self.cards.insert(
            id.clone(),
            PlatformCard {
                card: pan.expose().as_str().to_owned(),
                exp,
                status: PlatformCardStatus::Active,
                reason: None,
                customer_id: None,
                emboss_name: None,
                memo: None,
                reissued_from: None,
                reissued_to: None,
                created_at: at.clone(),
                updated_at: at,
            },
        );
        id
    }

    /// What merchants holding `card` get, if the network has news of it.
    pub(crate) fn outcome(&self, card: &str) -> Option<&Outcome> {
        self.by_card.get(card).or_else(|| {
            (card.len() >= 10)
                .then(|| (card[..6].to_owned(), card[card.len() - 4..].to_owned()))
                .and_then(|tail| self.by_tail.get(&tail))
        })
    }

    /// The platform's cards, masked, at most `limit`: ordered by creation time, then id.
    pub(crate) fn views(&self, limit: usize) -> Vec<IssuerCardView> {
        let mut cards: Vec<(&String, &PlatformCard)> = self.cards.iter().collect();
        cards.sort_by(|a, b| (&a.1.created_at, a.0).cmp(&(&b.1.created_at, b.0)));
        cards
            .into_iter()
            .take(limit)
            .map(|(id, c)| IssuerCardView {
                card_id: id.clone(),
                card: mask_card_text(&c.card).as_str().to_owned(),
                exp: c.exp.to_string(),
                status: c.status.as_str().to_owned(),
                reason: c.reason.as_ref().map(|r| r.as_str().to_owned()),
                reason_description: c.reason.as_ref().map(|r| r.description().to_owned()),
                reissued_from: c.reissued_from.clone(),
                reissued_to: c.reissued_to.clone(),
                merchants_get: self
                    .outcome(&c.card)
                    .map(|o| row_view(&o.row("", &c.card, c.exp))),
            })
            .collect()
    }

    /// The answer earlier given to `key`, if the same body came with it; a refusal if another
    /// body did.
    pub(crate) fn replay(&self, key: &str, body: &[u8]) -> Result<Option<(u16, Vec<u8>)>, Refused> {
        match self.keys.get(key) {
            Some((first, status, answer)) if first == body => Ok(Some((*status, answer.clone()))),
            Some(_) => Err(refuse(
                422,
                "this Idempotency-Key came with another change (another card or body); use a new key for a new change",
            )),
            None => Ok(None),
        }
    }

    /// Remembers the answer given to `key`.
    pub(crate) fn remember(&mut self, key: &str, body: &[u8], status: u16, answer: &[u8]) {
        self.keys
            .insert(key.to_owned(), (body.to_vec(), status, answer.to_vec()));
    }

    /// Applies a PATCH to card `id`; returns the card's answer and the card numbers whose
    /// merchants have news. `new_id` names a reissued card.
    pub(crate) fn patch(
        &mut self,
        id: &str,
        edits: CardEdits,
        new_id: impl FnOnce() -> String,
        at: String,
    ) -> Result<(IssuedCard, Vec<String>), Refused> {
        let card = self
            .cards
            .get_mut(id)
            .ok_or_else(|| refuse(404, format!("no card {id}")))?;
        if card.status == PlatformCardStatus::Terminated {
            return Err(refuse(
                422,
                format!("card {id} is TERMINATED, which is final"),
            ));
        }
        if let Some(c) = edits.customer_id {
            card.customer_id = Some(c);
        }
        if let Some(e) = edits.emboss_name {
            card.emboss_name = Some(e);
        }
        if let Some(m) = edits.memo {
            card.memo = Some(m);
        }
        card.updated_at = at.clone();
        let mut news = Vec::new();
        if let Some(status) = edits.card_status {
            card.reason = edits.reason.clone();
            card.status = status.clone();
            if status == PlatformCardStatus::Terminated {
                let old = card.card.clone();
                let exp = card.exp;
                let reason = edits.reason.unwrap_or(StatusReason::Other);
                let (outcome, replacement) = match termination(&reason) {
                    Termination::Reissue => {
                        let (card, exp) = (replacement_card(&old), replacement_expiry(exp));
                        (
                            Outcome::NewCard {
                                card: card.clone(),
                                exp,
                            },
                            Some((card, exp)),
                        )
                    }
                    Termination::Renew => {
                        let exp = replacement_expiry(exp);
                        (Outcome::NewExpiry(exp), Some((old.clone(), exp)))
                    }
                    Termination::Close => (Outcome::Closed, None),
                };
                if let Some((number, exp)) = replacement {
                    let new = new_id();
                    let mut next = card.clone();
                    next.card = number;
                    next.exp = exp;
                    next.status = PlatformCardStatus::Active;
                    next.reason = None;
                    next.reissued_from = Some(id.to_owned());
                    next.reissued_to = None;
                    next.created_at = at.clone();
                    card.reissued_to = Some(new.clone());
                    self.cards.insert(new, next);
                }
                self.by_card.insert(old.clone(), outcome);
                news.push(old);
            }
        }
        let answer = self.answer(id);
        Ok((answer, news))
    }

    /// The platform's answer for card `id`.
    fn answer(&self, id: &str) -> IssuedCard {
        let mut out = IssuedCard::default();
        let Some(c) = self.cards.get(id) else {
            return out;
        };
        let mut d = CardDetails::default();
        d.id = Some(id.to_owned());
        d.customer_id.clone_from(&c.customer_id);
        d.card_status = Some(c.status.clone());
        d.status_reason.clone_from(&c.reason);
        d.last_four = Some(c.card[c.card.len() - 4..].to_owned());
        d.bin = Some(c.card[..6].to_owned());
        d.expiration_month = Some(format!("{:02}", c.exp.month()));
        d.expiration_year = Some(format!("{:02}", c.exp.year() % 100));
        d.card_brand = Pan::parse(&c.card)
            .ok()
            .map(|p| p.brand().as_str().to_ascii_uppercase());
        d.reissued_from_id.clone_from(&c.reissued_from);
        d.reissued_to_id.clone_from(&c.reissued_to);
        d.memo.clone_from(&c.memo);
        d.emboss_name.clone_from(&c.emboss_name);
        d.creation_time = Some(c.created_at.clone());
        d.last_updated_time = Some(c.updated_at.clone());
        out.card_details = d;
        out.tenant = Some("sandbox_tenant".to_owned());
        out.program = Some(cardsync_proto::issuer::feed::CardType::Credit);
        out
    }

    /// Applies a feed request to one account; returns the (first six, last four) of the cards
    /// whose merchants have news.
    pub(crate) fn feed(
        &mut self,
        account: (String, String),
        cards: Vec<FeedCard>,
    ) -> Result<Vec<(String, String)>, Refused> {
        let list = self.accounts.entry(account).or_default();
        let mut closed = Vec::new();
        for (i, card) in cards.into_iter().enumerate() {
            let last4 = card.last4();
            let at = list.iter().position(|c| c.last4 == last4);
            match card {
                FeedCard::New(c) => {
                    let entry = AccountCard {
                        last4,
                        iin: Some(c.iin.as_str().to_owned()),
                        status: Some(c.status.clone()),
                    };
                    match at {
                        Some(k) => list[k] = entry,
                        None => list.push(entry),
                    }
                    if c.status == CardStatus::Closed {
                        closed.push(last4);
                    }
                }
                FeedCard::Update(u) => {
                    let Some(k) = at else {
                        return Err(refuse(
                            400,
                            format!("cards[{i}].last4 must name a card of the account"),
                        ));
                    };
                    if let Some(s) = &u.status {
                        list[k].status = Some(s.clone());
                        if *s == CardStatus::Closed {
                            closed.push(last4);
                        }
                    }
                }
                _ => {}
            }
        }
        let open_other = |last4: Last4| {
            list.iter()
                .any(|c| c.last4 != last4 && c.status == Some(CardStatus::Open))
        };
        let mut news = Vec::new();
        for last4 in closed {
            let Some(iin) = list
                .iter()
                .find(|c| c.last4 == last4)
                .and_then(|c| c.iin.clone())
            else {
                continue;
            };
            let outcome = if open_other(last4) {
                Outcome::Contact
            } else {
                Outcome::Closed
            };
            let tail = (
                iin.chars().take(6).collect::<String>(),
                last4.as_str().to_owned(),
            );
            self.by_tail.insert(tail.clone(), outcome);
            news.push(tail);
        }
        Ok(news)
    }
}
