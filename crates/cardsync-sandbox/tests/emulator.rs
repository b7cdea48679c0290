//! The emulator's behaviour, driven through its sans-IO core with requests built by
//! cardsync-proto and answers read by it: the documented flows, the test-card table, every
//! error path, the clock, and the quirks.

use std::time::{Duration, SystemTime};

use cardsync_core::{Brand, Expiry, Pan, SANDBOX_TEST_CARDS, SeNumber, UpdateStatus};
use cardsync_proto::*;
use cardsync_sandbox::{Emulator, Outgoing, Settings, replacement_card, replacement_expiry};

const SECOND: Duration = Duration::from_secs(1);

struct Harness {
    emu: Emulator,
    now: Duration,
    merchant: Config,
    partner: Config,
}

impl Harness {
    fn new(quirks: bool) -> Harness {
        let mut settings = Settings::default();
        settings.quirks = quirks;
        let emu = Emulator::new(
            settings.clone(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let base = BaseUrl::parse("http://127.0.0.1:9").unwrap();
        Harness {
            emu,
            now: Duration::ZERO,
            merchant: Config::new(base.clone())
                .with_merchant_key(MerchantKey::new(&settings.merchant_key).unwrap()),
            partner: Config::new(base)
                .with_partner_key(PartnerKey::new(&settings.master_key).unwrap()),
        }
    }

    fn raw(&mut self, request: &http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
        self.emu.handle(request, self.now)
    }

    fn send<E: Endpoint>(&mut self, endpoint: &E) -> Result<E::Output, DecodeError> {
        let config = if endpoint.scope() == KeyScope::Partner {
            &self.partner
        } else {
            &self.merchant
        };
        let request = endpoint.encode(config).unwrap();
        E::decode(&self.emu.handle(&request, self.now))
    }

    fn advance(&mut self, by: Duration) -> Vec<Outgoing> {
        self.now += by;
        self.emu.tick(self.now);
        self.emu.take_outgoing()
    }
}

fn batch_of_test_cards() -> CreateBatch {
    cardsync_sandbox::fixtures::documented_batch()
}

fn register_all(h: &mut Harness) {
    let hooks = SetWebhooks::new()
        .with(Trigger::BatchAvailable, "http://127.0.0.1:9/available")
        .with(Trigger::BatchError, "http://127.0.0.1:9/error")
        .with(Trigger::AmexUpdate, "http://127.0.0.1:9/amex");
    h.send(&hooks).unwrap();
    h.send(
        &SetWebhooks::new()
            .with(Trigger::EnrollmentComplete, "http://127.0.0.1:9/enrolled")
            .signed_by(KeyScope::Partner),
    )
    .unwrap();
}

fn check_batch_flow(quirks: bool) {
    let mut h = Harness::new(quirks);
    register_all(&mut h);
    let created = h.send(&batch_of_test_cards()).unwrap();
    assert_eq!(created.status, BatchState::Pending);
    assert_eq!(created.stats.stats.number_submitted, 16);
    assert_eq!(
        h.send(&GetBatch::new(&created.batch_id)).unwrap().status,
        BatchState::Pending
    );
    let early = h
        .send(&GetBatchResults::new(&created.batch_id))
        .unwrap_err();
    assert_eq!(early.status(), Some(http::StatusCode::CONFLICT));

    assert!(
        h.advance(SECOND).is_empty(),
        "nothing fires before the delay"
    );
    let fired = h.advance(SECOND);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].url, "http://127.0.0.1:9/available");
    let event = decode_webhook(&fired[0].body).unwrap();
    let WebhookEvent::BatchAvailable(available) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(
        available.batch_id.as_deref(),
        Some(created.batch_id.as_str())
    );
    assert_eq!(
        (
            available.card_stats.visa,
            available.card_stats.mastercard,
            available.card_stats.discover
        ),
        (6, 5, 5)
    );
    let s = &available.stats.stats;
    assert_eq!(
        (
            s.number_submitted,
            s.updated_card,
            s.updated_expiry,
            s.no_match,
            s.valid,
            s.contact,
            s.closed
        ),
        (16, 3, 3, 2, 3, 2, 3)
    );
    if quirks {
        let text = String::from_utf8(fired[0].body.clone()).unwrap();
        assert!(text.contains("\"trigger_id\":\"20\""), "{text}");
        assert_eq!(text.matches("\"closed\":").count(), 2, "{text}");
    }

    let info = h.send(&GetBatch::new(&created.batch_id)).unwrap();
    assert_eq!(info.status, BatchState::Completed);
    let event_id = event.event_id().unwrap().to_owned();
    for request in [
        GetBatchResults::new(&created.batch_id),
        GetBatchResults::new(&created.batch_id).with_event_id(&event_id),
    ] {
        let results = h.send(&request).unwrap();
        assert_eq!(results.cards.len(), 16);
        for (row, tc) in results.cards.iter().zip(
            SANDBOX_TEST_CARDS
                .iter()
                .filter(|c| c.brand != Brand::AmericanExpress),
        ) {
            assert_eq!(row.status.as_ref(), Some(&tc.result), "{}", tc.card);
            let sent_exp = Expiry::parse(tc.exp.unwrap()).unwrap();
            match tc.result {
                UpdateStatus::UpdatedCard => {
                    let new = row.card.to_pan().expect("a valid new number");
                    assert_eq!(new.brand(), tc.brand);
                    assert_ne!(row.card.expose(), tc.card);
                    assert_eq!(row.card.expose(), replacement_card(tc.card));
                    assert_eq!(row.expiry(), Some(replacement_expiry(sent_exp)));
                }
                UpdateStatus::UpdatedExpiry => {
                    assert_eq!(row.card.expose(), tc.card);
                    assert!(row.expiry().unwrap() > sent_exp);
                }
                _ => {
                    assert_eq!(row.card.expose(), tc.card);
                    assert_eq!(row.expiry(), Some(sent_exp));
                }
            }
        }
    }
    let wrong = h
        .send(&GetBatchResults::new(&created.batch_id).with_event_id("nope"))
        .unwrap_err();
    assert_eq!(wrong.status(), Some(http::StatusCode::NOT_FOUND));
}

#[test]
fn batch_of_documented_test_cards() {
    check_batch_flow(false);
}

#[test]
fn batch_of_documented_test_cards_with_quirks() {
    check_batch_flow(true);
}

#[test]
fn other_valid_cards_have_no_result_row() {
    let mut h = Harness::new(false);
    let cards = vec![
        BatchCard::new(
            "a",
            Pan::parse("4111111111111111").unwrap(),
            Expiry::parse("01/30").unwrap(),
        ),
        BatchCard::new(
            "b",
            Pan::parse("4457010000000009").unwrap(),
            Expiry::parse("01/50").unwrap(),
        ),
    ];
    let created = h.send(&CreateBatch::new(cards).unwrap()).unwrap();
    h.advance(2 * SECOND);
    let results = h.send(&GetBatchResults::new(&created.batch_id)).unwrap();
    assert_eq!(results.cards.len(), 1);
    assert_eq!(
        (
            results.stats.stats.no_change,
            results.stats.stats.updated_card
        ),
        (1, 1)
    );
}

#[test]
fn card_problems_fail_the_batch_asynchronously() {
    let mut h = Harness::new(false);
    register_all(&mut h);
    let body = br#"{"cards":[
        {"id":"luhn","card":"4457010000000008","exp":"01/50"},
        {"id":"amex","card":"342132335566772","exp":"01/50"},
        {"id":"exp","card":"4457010000000009","exp":"13/50"},
        {"card":"5112010000000003","exp":"02/50"},
        {"id":"ok","card":"6011010000000003","exp":"03/50"}
    ]}"#;
    let request = http::Request::post("http://127.0.0.1:9/v2/batch")
        .header("authorization", "sandbox_merchant_key")
        .body(body.to_vec())
        .unwrap();
    let created = CreateBatch::decode(&h.raw(&request)).unwrap();
    assert_eq!(
        created.status,
        BatchState::Pending,
        "validation is asynchronous"
    );
    let fired = h.advance(Duration::from_millis(1));
    assert_eq!(fired.len(), 1);
    let WebhookEvent::BatchError(e) = decode_webhook(&fired[0].body).unwrap() else {
        panic!()
    };
    assert_eq!(
        (e.source.as_deref(), e.error_count),
        (Some("Validation"), 4)
    );
    assert_eq!(e.batch_id.as_deref(), Some(created.batch_id.as_str()));
    assert_eq!(
        h.send(&GetBatch::new(&created.batch_id)).unwrap().status,
        BatchState::Error
    );
    let err = h
        .send(&GetBatchResults::new(&created.batch_id))
        .unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::CONFLICT));
    assert!(
        h.advance(10 * SECOND).is_empty(),
        "a failed batch never completes"
    );
}

fn batch_request(body: &[u8]) -> http::Request<Vec<u8>> {
    http::Request::post("http://127.0.0.1:9/v2/batch")
        .header("authorization", "sandbox_merchant_key")
        .body(body.to_vec())
        .unwrap()
}

#[test]
fn malformed_empty_and_oversized_batches_are_refused() {
    let mut h = Harness::new(false);
    let card = r#"{"id":"a","card":"4457010000000009","exp":"01/50"}"#;
    let too_many = format!("{{\"cards\":[{}]}}", vec![card; 10_001].join(","));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not a card list"),
        (b"[]".to_vec(), "not a card list"),
        (br#"{"cards":[]}"#.to_vec(), "must not be empty"),
        (br#"{"cards":"x"}"#.to_vec(), "not a card list"),
        (too_many.into_bytes(), "at most 10000"),
    ];
    for (body, message) in cases {
        let err = CreateBatch::decode(&h.raw(&batch_request(&body))).unwrap_err();
        let DecodeError::Status {
            status,
            message: Some(m),
            api_status,
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*status, http::StatusCode::BAD_REQUEST);
        assert_eq!(api_status.as_deref(), Some("failed"));
        assert!(m.contains(message), "{m}");
    }
}

#[test]
fn authentication() {
    let mut h = Harness::new(false);
    for key in [None, Some("wrong"), Some("")] {
        let mut b = http::Request::get("http://127.0.0.1:9/v2/batch?batch_id=x");
        if let Some(k) = key {
            b = b.header("authorization", k);
        }
        let r = h.raw(&b.body(Vec::new()).unwrap());
        assert_eq!(r.status(), 401);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status": "failed", "message": "unauthorized"})
        );
    }
    let r = h.raw(
        &http::Request::get("http://127.0.0.1:9/v2/batch?batch_id=x")
            .header("authorization", "sandbox_master_key")
            .body(Vec::new())
            .unwrap(),
    );
    assert_eq!(r.status(), 403);
    let r = h.raw(
        &http::Request::get("http://127.0.0.1:9/v3/nothing")
            .body(Vec::new())
            .unwrap(),
    );
    assert_eq!(r.status(), 404);
    let r = h.raw(
        &http::Request::put("http://127.0.0.1:9/v2/batch")
            .header("authorization", "sandbox_merchant_key")
            .body(Vec::new())
            .unwrap(),
    );
    assert_eq!(r.status(), 405);
}

fn merchant() -> MerchantEnrollment {
    serde_json::from_slice(include_bytes!(
        "../../cardsync-proto/tests/data/universal/merchant_enroll_request.json"
    ))
    .unwrap()
}

#[test]
fn merchant_enrollment() {
    let mut h = Harness::new(false);
    register_all(&mut h);
    let enrolled = h.send(&EnrollMerchant::new(merchant())).unwrap();
    let status = h.send(&GetMerchant::new(&enrolled.merchant_id)).unwrap();
    assert_eq!(status.enrollment.as_deref(), Some("pending"));
    let dup = h.send(&EnrollMerchant::new(merchant())).unwrap_err();
    assert_eq!(dup.status(), Some(http::StatusCode::CONFLICT));
    let fired = h.advance(2 * SECOND);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].url, "http://127.0.0.1:9/enrolled");
    let WebhookEvent::EnrollmentComplete(e) = decode_webhook(&fired[0].body).unwrap() else {
        panic!()
    };
    assert_eq!(
        e.merchant_id.as_deref(),
        Some(enrolled.merchant_id.as_str())
    );
    assert_eq!(
        h.send(&GetMerchant::new(&enrolled.merchant_id))
            .unwrap()
            .enrollment
            .as_deref(),
        Some("completed")
    );
    // The new merchant's key works.
    let config = Config::new(BaseUrl::parse("http://127.0.0.1:9").unwrap())
        .with_merchant_key(enrolled.api_key.clone());
    let request = batch_of_test_cards().encode(&config).unwrap();
    assert!(CreateBatch::decode(&h.raw(&request)).is_ok());
    // A missing field is reported by name.
    let mut body: serde_json::Value = serde_json::to_value(merchant()).unwrap();
    body.as_object_mut().unwrap().remove("timezone");
    let request = http::Request::post("http://127.0.0.1:9/v2/merchant")
        .header("authorization", "sandbox_master_key")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let err = EnrollMerchant::decode(&h.raw(&request)).unwrap_err();
    let DecodeError::Status {
        message: Some(m), ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(m.contains("timezone"), "{m}");
    assert_eq!(
        h.send(&GetMerchant::new("nobody")).unwrap_err().status(),
        Some(http::StatusCode::NOT_FOUND)
    );
}

fn amex_cards() -> Vec<SubscriptionCard> {
    let se = SeNumber::parse("1234567890").unwrap();
    let mut cards = cardsync_sandbox::fixtures::documented_subscription(&se);
    cards.push(SubscriptionCard::new(
        se,
        "plain",
        Pan::parse("378282246310005").unwrap(),
        Expiry::parse("12/28").unwrap(),
    ));
    cards
}

#[test]
fn amex_subscription_flow() {
    let mut h = Harness::new(false);
    register_all(&mut h);
    h.send(&Subscribe::new(amex_cards()).unwrap()).unwrap();
    let fired = h.advance(2 * SECOND);
    assert_eq!(fired.len(), 1);
    let event = decode_webhook(&fired[0].body).unwrap();
    let WebhookEvent::AmexUpdate(update) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(update.stats.stats.number_submitted, 3);
    let results = h
        .send(&GetSubscriptionResults::new(event.event_id().unwrap()))
        .unwrap();
    let got: Vec<_> = results
        .cards
        .iter()
        .map(|c| (c.status.clone().unwrap(), c.se_number.clone().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (UpdateStatus::UpdatedCard, "1234567890".to_owned()),
            (UpdateStatus::UpdatedExpiry, "1234567890".to_owned()),
            (UpdateStatus::Closed, "1234567890".to_owned()),
        ]
    );
    assert_eq!(
        results.cards[0].card.to_pan().unwrap().brand(),
        Brand::AmericanExpress
    );
}

#[test]
fn an_unsubscribed_pair_produces_no_event() {
    let mut h = Harness::new(false);
    register_all(&mut h);
    let cards = amex_cards();
    h.send(&Subscribe::new(cards.clone()).unwrap()).unwrap();
    h.send(&Unsubscribe::new(cards[..1].to_vec()).unwrap())
        .unwrap();
    let fired = h.advance(2 * SECOND);
    let event = decode_webhook(&fired[0].body).unwrap();
    let results = h
        .send(&GetSubscriptionResults::new(event.event_id().unwrap()))
        .unwrap();
    assert_eq!(results.cards.len(), 2);
    h.send(&Unsubscribe::new(cards).unwrap()).unwrap();
    h.send(&Subscribe::new(amex_cards()[3..].to_vec()).unwrap())
        .unwrap();
    assert!(
        h.advance(5 * SECOND).is_empty(),
        "a plain card produces no update"
    );
}

#[test]
fn subscriptions_take_only_amex_cards_with_an_se_number() {
    let mut h = Harness::new(false);
    let body = br#"{"cards":[{"se_number":"1234567890","id":"a","card":"4457010000000009","exp":"01/50"},{"id":"b","card":"342132335566772","exp":"01/50"}]}"#;
    let request = http::Request::post("http://127.0.0.1:9/v2/subscribe")
        .header("authorization", "sandbox_merchant_key")
        .body(body.to_vec())
        .unwrap();
    let err = Subscribe::decode(&h.raw(&request)).unwrap_err();
    let DecodeError::Status {
        status,
        message: Some(m),
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, http::StatusCode::BAD_REQUEST);
    assert!(m.contains("indexes 0, 1"), "{m}");
}

#[test]
fn results_are_purged_after_ten_days() {
    let mut h = Harness::new(false);
    let created = h.send(&batch_of_test_cards()).unwrap();
    h.advance(2 * SECOND);
    h.advance(Duration::from_secs(10 * 24 * 3600 - 1));
    assert!(h.send(&GetBatchResults::new(&created.batch_id)).is_ok());
    h.advance(SECOND);
    let err = h
        .send(&GetBatchResults::new(&created.batch_id))
        .unwrap_err();
    let DecodeError::Status {
        status,
        message: Some(m),
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, http::StatusCode::NOT_FOUND);
    assert!(m.contains("purged"), "{m}");
}

#[test]
fn counters_show_cards_received_twice() {
    let mut h = Harness::new(false);
    h.send(&batch_of_test_cards()).unwrap();
    let once = h.emu.counters();
    assert_eq!(once["POST /v2/batch"].repeats, 0);
    h.send(&batch_of_test_cards()).unwrap();
    let twice = h.emu.counters();
    assert_eq!(twice["POST /v2/batch"].cards, 32);
    assert_eq!(twice["POST /v2/batch"].distinct_cards, 16);
    assert_eq!(twice["POST /v2/batch"].repeats, 16);
}

#[test]
fn quirks_spell_msg_and_contact_closed() {
    let mut h = Harness::new(true);
    let r = h.raw(
        &http::Request::get("http://127.0.0.1:9/v2/batch?batch_id=x")
            .body(Vec::new())
            .unwrap(),
    );
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"status": "failed", "msg": "unauthorized"})
    );
    register_all(&mut h);
    h.send(&Subscribe::new(amex_cards()).unwrap()).unwrap();
    let fired = h.advance(2 * SECOND);
    let text = String::from_utf8(fired[0].body.clone()).unwrap();
    assert!(text.contains("\"contact_closed\":1"), "{text}");
    let event = decode_webhook(&fired[0].body).unwrap();
    let request = GetSubscriptionResults::new(event.event_id().unwrap())
        .encode(&h.merchant)
        .unwrap();
    let raw = h.raw(&request);
    assert!(String::from_utf8_lossy(raw.body()).contains("\"status\":\"contact_closed\""));
    let results = GetSubscriptionResults::decode(&raw).unwrap();
    assert_eq!(results.cards[2].status, Some(UpdateStatus::Closed));
    assert_eq!(results.stats.stats.closed, 1);
}

#[test]
fn replacement_rules() {
    for tc in SANDBOX_TEST_CARDS {
        let new = replacement_card(tc.card);
        let pan = Pan::parse(&new).unwrap();
        assert_eq!(pan.brand(), tc.brand);
        assert_ne!(new, tc.card);
        assert_eq!(&new[..6], &tc.card[..6]);
    }
    assert_eq!(
        replacement_expiry(Expiry::parse("12/98").unwrap()),
        Expiry::parse("12/99").unwrap()
    );
}

#[test]
fn debug_shows_no_card_number_and_no_key() {
    let mut h = Harness::new(false);
    register_all(&mut h);
    h.send(&batch_of_test_cards()).unwrap();
    h.send(&Subscribe::new(amex_cards()).unwrap()).unwrap();
    h.advance(SECOND);
    h.advance(3 * SECOND);
    let shown = format!("{:?} {:?}", h.emu, Settings::default());
    for card in SANDBOX_TEST_CARDS {
        assert!(!shown.contains(card.card), "{} in {shown}", &card.card[..6]);
    }
    for key in ["sandbox_master_key", "sandbox_merchant_key"] {
        assert!(!shown.contains(key), "a key in {shown}");
    }
    assert!(shown.contains("<redacted>"));
}
