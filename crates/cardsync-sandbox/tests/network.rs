//! The card network in a box: issuer-side events (the platform's PATCH, the issuer feed) reach
//! the merchants' batch results and American Express subscriptions, as the table in the crate
//! docs says; idempotency keys, the finality of `TERMINATED`, and every refusal.

use std::time::{Duration, SystemTime};

use cardsync_core::{Expiry, Pan, SeNumber, UpdateStatus, luhn_check_digit};
use cardsync_proto::issuer::feed::{
    CardStatus, CardType, CardUpdate, FeedCard, Iin, Last4, NetworkIdentifier, NewCard, UpdateCards,
};
use cardsync_proto::issuer::platform::{
    CardEdits, IdempotencyKey, PlatformCardStatus, StatusReason, UpdateCard,
};
use cardsync_proto::issuer::{IssuerConfig, IssuerEndpoint};
use cardsync_proto::*;
use cardsync_sandbox::{Emulator, Settings, replacement_card, replacement_expiry};

const SECOND: Duration = Duration::from_secs(1);

struct Net {
    emu: Emulator,
    now: Duration,
    merchant: Config,
    issuer: IssuerConfig,
    keys: u32,
}

fn pan(prefix: &str, n: usize, len: usize) -> String {
    let body = format!("{prefix}{n:0width$}", width = len - 1 - prefix.len());
    format!("{body}{}", char::from(luhn_check_digit(&body).unwrap()))
}

impl Net {
    fn new() -> Net {
        let settings = Settings::default();
        let base = BaseUrl::parse("http://127.0.0.1:9").unwrap();
        Net {
            emu: Emulator::new(settings.clone(), SystemTime::UNIX_EPOCH),
            now: Duration::ZERO,
            merchant: Config::new(base.clone())
                .with_merchant_key(MerchantKey::new(&settings.merchant_key).unwrap()),
            issuer: IssuerConfig::new(BaseUrl::parse("http://127.0.0.1:9/v1").unwrap())
                .with_token(IssuerToken::new(&settings.issuer_token).unwrap()),
            keys: 0,
        }
    }

    fn register(&mut self, card: &str, exp: &str) -> String {
        self.emu.register_issuer_card(
            &Pan::parse(card).unwrap(),
            Expiry::parse(exp).unwrap(),
            self.now,
        )
    }

    fn patch_with(&mut self, id: &str, edits: CardEdits, key: &str) -> http::Response<Vec<u8>> {
        let request = UpdateCard::new(id, edits, IdempotencyKey::new(key).unwrap())
            .unwrap()
            .encode(&self.issuer)
            .unwrap();
        self.emu.handle(&request, self.now)
    }

    fn patch(
        &mut self,
        id: &str,
        status: PlatformCardStatus,
        reason: StatusReason,
    ) -> http::Response<Vec<u8>> {
        self.keys += 1;
        let key = format!("key-{}", self.keys);
        self.patch_with(id, CardEdits::status(status, reason), &key)
    }

    fn feed(&mut self, cards: Vec<FeedCard>) -> http::Response<Vec<u8>> {
        let request = UpdateCards::new("cust-1", "acct-1", cards)
            .unwrap()
            .encode(
                &IssuerConfig::new(BaseUrl::parse("http://127.0.0.1:9").unwrap())
                    .with_token(IssuerToken::new("sandbox_issuer_token").unwrap()),
            )
            .unwrap();
        self.emu.handle(&request, self.now)
    }

    /// Sends one batch of (id, card, exp) and returns its results once complete.
    fn batch(&mut self, cards: &[(&str, &str, &str)]) -> Results {
        let cards = cards
            .iter()
            .map(|(id, c, e)| {
                BatchCard::new(*id, Pan::parse(c).unwrap(), Expiry::parse(e).unwrap())
            })
            .collect();
        let request = CreateBatch::new(cards)
            .unwrap()
            .encode(&self.merchant)
            .unwrap();
        let created = CreateBatch::decode(&self.emu.handle(&request, self.now)).unwrap();
        self.now += 3 * SECOND;
        self.emu.tick(self.now);
        let request = GetBatchResults::new(created.batch_id)
            .encode(&self.merchant)
            .unwrap();
        GetBatchResults::decode(&self.emu.handle(&request, self.now)).unwrap()
    }
}

fn row<'a>(results: &'a Results, id: &str) -> Option<&'a ResultCard> {
    results.cards.iter().find(|c| c.id == id)
}

#[test]
fn platform_events_reach_batch_results() {
    let mut net = Net::new();
    let lost = pan("4111", 1, 16);
    let renewed = pan("5112", 2, 16);
    let closed = pan("6011", 3, 16);
    let suspended = pan("4111", 4, 16);
    let untouched = pan("4111", 5, 16);
    let ids: Vec<String> = [&lost, &renewed, &closed, &suspended]
        .iter()
        .map(|c| net.register(c, "05/27"))
        .collect();
    // Before any event: no news.
    let before = net.batch(&[("a", &lost, "05/27")]);
    assert!(before.cards.is_empty(), "{before:?}");

    let answer = net.patch(&ids[0], PlatformCardStatus::Terminated, StatusReason::Lost);
    assert_eq!(answer.status(), 200);
    let card = UpdateCard::decode(&answer).unwrap();
    assert_eq!(
        card.card_details.card_status,
        Some(PlatformCardStatus::Terminated)
    );
    let new_id = card.card_details.reissued_to_id.clone().expect("reissued");
    assert_eq!(
        net.patch(
            &ids[1],
            PlatformCardStatus::Terminated,
            StatusReason::Expired
        )
        .status(),
        200
    );
    assert_eq!(
        net.patch(
            &ids[2],
            PlatformCardStatus::Terminated,
            StatusReason::NegativeBalance
        )
        .status(),
        200
    );
    assert_eq!(
        net.patch(
            &ids[3],
            PlatformCardStatus::Suspended,
            StatusReason::SuspiciousActivity
        )
        .status(),
        200
    );

    let results = net.batch(&[
        ("lost", &lost, "05/27"),
        ("renewed", &renewed, "05/27"),
        ("closed", &closed, "05/27"),
        ("suspended", &suspended, "05/27"),
        ("untouched", &untouched, "05/27"),
    ]);
    let exp = replacement_expiry(Expiry::parse("05/27").unwrap()).to_string();
    let lost_row = row(&results, "lost").unwrap();
    assert_eq!(lost_row.status, Some(UpdateStatus::UpdatedCard));
    assert_eq!(lost_row.card.expose(), replacement_card(&lost));
    assert_eq!(&lost_row.card.expose()[..6], &lost[..6], "same BIN");
    assert_eq!(lost_row.exp.as_deref(), Some(exp.as_str()));
    let renewed_row = row(&results, "renewed").unwrap();
    assert_eq!(renewed_row.status, Some(UpdateStatus::UpdatedExpiry));
    assert_eq!(renewed_row.card.expose(), renewed);
    assert_eq!(renewed_row.exp.as_deref(), Some(exp.as_str()));
    assert_eq!(
        row(&results, "closed").unwrap().status,
        Some(UpdateStatus::Closed)
    );
    assert!(
        row(&results, "suspended").is_none(),
        "a suspension sends nothing"
    );
    assert!(row(&results, "untouched").is_none());
    assert_eq!(results.stats.stats.updated_card, 1);
    assert_eq!(results.stats.stats.no_change, 2);

    // The replacement card is linked back, and can itself be changed.
    let back = net.patch(
        &new_id,
        PlatformCardStatus::Suspended,
        StatusReason::Requested,
    );
    let back = UpdateCard::decode(&back).unwrap();
    assert_eq!(
        back.card_details.reissued_from_id.as_deref(),
        Some(ids[0].as_str())
    );
    assert_eq!(
        back.card_details.last_four.as_deref(),
        Some(&replacement_card(&lost)[12..])
    );
    // A suspended card comes back: still nothing for merchants.
    assert_eq!(
        net.patch(
            &ids[3],
            PlatformCardStatus::Active,
            StatusReason::ActivityValidated
        )
        .status(),
        200
    );
    // The documented test cards keep their documented results.
    let test = net.batch(&[("t", "4457010000000009", "01/50")]);
    assert_eq!(
        row(&test, "t").unwrap().status,
        Some(UpdateStatus::UpdatedCard)
    );
}

#[test]
fn idempotency_keys_and_the_finality_of_terminated() {
    let mut net = Net::new();
    let card = pan("4111", 7, 16);
    let id = net.register(&card, "05/27");
    let edits = CardEdits::status(
        PlatformCardStatus::Suspended,
        StatusReason::SuspiciousActivity,
    );
    let first = net.patch_with(&id, edits.clone(), "same-key");
    assert_eq!(first.status(), 200);
    // The same key with the same body: the first answer again, and nothing changes.
    let again = net.patch_with(&id, edits, "same-key");
    assert_eq!(
        (again.status(), again.body()),
        (first.status(), first.body())
    );
    // The same key for another card: refused too (a key stands for one change of one card).
    let other_card = net.register(&pan("4111", 9, 16), "05/27");
    let edits = CardEdits::status(
        PlatformCardStatus::Suspended,
        StatusReason::SuspiciousActivity,
    );
    assert_eq!(net.patch_with(&other_card, edits, "same-key").status(), 422);
    // The same key with another body: refused.
    let other = CardEdits::status(PlatformCardStatus::Terminated, StatusReason::Lost);
    let refused = net.patch_with(&id, other.clone(), "same-key");
    assert_eq!(refused.status(), 422);
    assert!(String::from_utf8_lossy(refused.body()).contains("Idempotency-Key"));
    // Terminated is final.
    assert_eq!(net.patch_with(&id, other, "k2").status(), 200);
    let again = net.patch(
        &id,
        PlatformCardStatus::Active,
        StatusReason::ActivityValidated,
    );
    assert_eq!(again.status(), 422);
    assert!(String::from_utf8_lossy(again.body()).contains("final"));
}

#[test]
fn platform_refusals() {
    let mut net = Net::new();
    let id = net.register(&pan("4111", 8, 16), "05/27");
    // Unknown card.
    assert_eq!(
        net.patch("nope", PlatformCardStatus::Active, StatusReason::New)
            .status(),
        404
    );
    // Wrong or missing token.
    for auth in [None, Some("Bearer wrong"), Some("sandbox_issuer_token")] {
        let mut request = http::Request::patch(format!("http://127.0.0.1:9/v1/cards/{id}"));
        if let Some(a) = auth {
            request = request.header("authorization", a);
        }
        let answer = net
            .emu
            .handle(&request.body(b"{}".to_vec()).unwrap(), net.now);
        assert_eq!(answer.status(), 401, "{auth:?}");
    }
    // Bad values: 400 naming the field.
    for (body, field) in [
        (r#"{"card_status":"LOST"}"#.to_owned(), "card_status"),
        (r#"{"reason":"ZZZ"}"#.to_owned(), "reason"),
        (format!(r#"{{"memo":"{}"}}"#, "m".repeat(256)), "memo"),
        (
            r#"{"emboss_name":{"line_1":"Twenty-two characters!"}}"#.to_owned(),
            "emboss_name.line_1",
        ),
    ] {
        let request = http::Request::patch(format!("http://127.0.0.1:9/v1/cards/{id}"))
            .header("authorization", "Bearer sandbox_issuer_token")
            .body(body.clone().into_bytes())
            .unwrap();
        let answer = net.emu.handle(&request, net.now);
        assert_eq!(answer.status(), 400, "{body}");
        assert!(
            String::from_utf8_lossy(answer.body()).contains(field),
            "{body}"
        );
    }
    // Another method.
    let request = http::Request::get(format!("http://127.0.0.1:9/v1/cards/{id}"))
        .header("authorization", "Bearer sandbox_issuer_token")
        .body(Vec::new())
        .unwrap();
    let answer = net.emu.handle(&request, net.now);
    assert_eq!(answer.status(), 405);
    assert_eq!(answer.headers()["allow"], "PATCH");
}

fn new_card(card: &str, status: CardStatus) -> NewCard {
    let mut c = NewCard::open(
        &Pan::parse(card).unwrap(),
        CardType::Credit,
        "2020-01-01T00:00:00Z",
    );
    c.status = status;
    if c.status == CardStatus::Closed {
        c.close_date = Some("2024-06-01T00:00:00Z".into());
    }
    c
}

#[test]
fn feed_events_reach_batch_results_by_iin_and_last_four() {
    let mut net = Net::new();
    let closed = pan("5112", 11, 16);
    let replaced = pan("5112", 12, 16);
    let newer = pan("5112", 13, 16);
    // Account one: a card opened, then closed with nothing else open: `closed`.
    assert_eq!(
        net.feed(vec![FeedCard::New(new_card(&closed, CardStatus::Open))])
            .status(),
        200
    );
    let update = CardUpdate::close(Last4::parse(&closed[12..]).unwrap(), "2024-06-01T00:00:00Z");
    let answer = net.feed(vec![FeedCard::Update(update)]);
    assert_eq!(answer.status(), 200);
    assert!(UpdateCards::decode(&answer).unwrap().request_id.is_some());
    let results = net.batch(&[("closed", &closed, "05/27")]);
    assert_eq!(
        row(&results, "closed").unwrap().status,
        Some(UpdateStatus::Closed)
    );

    // Another account: a card closed while a new one is open: `contact`.
    let mut second = Net::new();
    let answer = second.feed(vec![
        FeedCard::New(new_card(&replaced, CardStatus::Closed)),
        FeedCard::New(new_card(&newer, CardStatus::Open)),
    ]);
    assert_eq!(answer.status(), 200);
    let results = second.batch(&[("replaced", &replaced, "05/27"), ("newer", &newer, "05/27")]);
    assert_eq!(
        row(&results, "replaced").unwrap().status,
        Some(UpdateStatus::Contact)
    );
    assert!(row(&results, "newer").is_none());
}

#[test]
fn feed_refusals() {
    let mut net = Net::new();
    // An update of a card the account does not have.
    let update = CardUpdate::close(Last4::parse("1234").unwrap(), "2024-06-01T00:00:00Z");
    let answer = net.feed(vec![FeedCard::Update(update)]);
    assert_eq!(answer.status(), 400);
    assert!(String::from_utf8_lossy(answer.body()).contains("cards[0].last4"));
    // Bad bodies: 400 naming the field.
    let path = "http://127.0.0.1:9/v2/data/customers/c/accounts/a/cards";
    for (body, field) in [
        (
            r#"{"cards":[{"sourceAccountId":"a","sourceCustomerId":"c","last4":"12"}]}"#,
            "cards[0].last4",
        ),
        (
            r#"{"cards":[{"sourceAccountId":"a","sourceCustomerId":"c","last4":"1234","status":"CLOSED"}]}"#,
            "cards[0].closeDate",
        ),
        (
            r#"{"cards":[{"sourceAccountId":"other","sourceCustomerId":"c","last4":"1234"}]}"#,
            "cards[0].sourceCustomerId",
        ),
    ] {
        let request = http::Request::put(path)
            .header("authorization", "Bearer sandbox_issuer_token")
            .body(body.as_bytes().to_vec())
            .unwrap();
        let answer = net.emu.handle(&request, net.now);
        assert_eq!(answer.status(), 400, "{body}");
        assert!(
            String::from_utf8_lossy(answer.body()).contains(field),
            "{body}"
        );
    }
    let request = http::Request::put(path).body(b"{}".to_vec()).unwrap();
    assert_eq!(net.emu.handle(&request, net.now).status(), 401);
    let _ = (Iin::parse("123456"), NetworkIdentifier::new(4));
}

#[test]
fn subscribed_american_express_cards_get_an_update_webhook() {
    let mut net = Net::new();
    let hooks = SetWebhooks::new().with(Trigger::AmexUpdate, "http://127.0.0.1:9/amex");
    let request = hooks.encode(&net.merchant).unwrap();
    assert_eq!(net.emu.handle(&request, net.now).status(), 200);
    let amex = pan("3712", 21, 15);
    let id = net.register(&amex, "09/28");
    let se = SeNumber::parse("1234567890").unwrap();
    let sub = Subscribe::new(vec![SubscriptionCard::new(
        se,
        "amex-1",
        Pan::parse(&amex).unwrap(),
        Expiry::parse("09/28").unwrap(),
    )])
    .unwrap()
    .encode(&net.merchant)
    .unwrap();
    assert_eq!(net.emu.handle(&sub, net.now).status(), 200);
    // Nothing yet: the card has no news.
    net.now += 3 * SECOND;
    net.emu.tick(net.now);
    assert!(net.emu.take_outgoing().is_empty());
    // Closed by its issuer: the merchant gets trigger 23 and the subscription results.
    assert_eq!(
        net.patch(&id, PlatformCardStatus::Terminated, StatusReason::Other)
            .status(),
        200
    );
    net.now += 3 * SECOND;
    net.emu.tick(net.now);
    let out = net.emu.take_outgoing();
    assert_eq!(out.len(), 1, "{out:?}");
    let WebhookEvent::AmexUpdate(update) = decode_webhook(&out[0].body).unwrap() else {
        panic!()
    };
    assert_eq!(update.stats.stats.closed, 1);
    let request = GetSubscriptionResults::new(update.event_id.unwrap())
        .encode(&net.merchant)
        .unwrap();
    let results = GetSubscriptionResults::decode(&net.emu.handle(&request, net.now)).unwrap();
    let r = row(&results, "amex-1").unwrap();
    assert_eq!(r.status, Some(UpdateStatus::Closed));
    assert_eq!(r.se_number.as_deref(), Some("1234567890"));
    // The emulator's Debug shows no card number.
    assert!(!format!("{:?}", net.emu).contains(&amex));
}
