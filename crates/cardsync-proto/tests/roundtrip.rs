//! The server side of the wire format reads back through the client side: for every response,
//! every webhook and every request body, `decode(encode(x)) == x`, in both spellings, for
//! generated values (strings with quotes, backslashes, control characters and non-ASCII;
//! counters up to `u64::MAX`; unknown statuses, states, counters and triggers). The exact bytes
//! are pinned in `server_snapshots.rs`.

use cardsync_core::{Expiry, Pan, SeNumber, Stats, UpdateStatus};
use cardsync_proto::server::{self, Spelling};
use cardsync_proto::*;
use proptest::prelude::*;

const SPELLINGS: [Spelling; 2] = [Spelling::Universal, Spelling::Amex];

fn ok(body: Vec<u8>) -> http::Response<Vec<u8>> {
    server::respond(http::StatusCode::OK, body)
}

/// Any text, including what JSON must escape.
fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}|[\"\\\\\u{0}-\u{1f}\u{7f}]{1,4}|[a-z0-9 -]{0,20}"
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

/// A message as a client keeps it: trimmed, no control characters, no card-length digit runs.
fn message() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("|[a-zA-Z][a-zA-Z0-9 ,.'\"\\\\é]{0,40}[a-z.]")
}

/// A name the documents do not use for a counter or a brand.
fn unknown_name() -> impl Strategy<Value = String> {
    "x_[a-z_]{0,10}"
}

fn stats() -> impl Strategy<Value = ReportedStats> {
    (
        prop::array::uniform8(prop_oneof![any::<u64>(), 0u64..100]),
        prop::collection::btree_map(unknown_name(), any::<u64>(), 0..3),
    )
        .prop_map(|(c, other)| {
            let mut s = Stats::default();
            s.number_submitted = c[0];
            s.no_change = c[1];
            s.updated_card = c[2];
            s.updated_expiry = c[3];
            s.no_match = c[4];
            s.valid = c[5];
            s.contact = c[6];
            s.closed = c[7];
            s.other = other.values().fold(0u64, |a, &b| a.saturating_add(b));
            let mut r = ReportedStats::from(s);
            r.other_counters = other;
            r
        })
}

fn state() -> impl Strategy<Value = BatchState> {
    prop_oneof![
        Just(BatchState::Pending),
        Just(BatchState::Completed),
        Just(BatchState::Error),
        "queued|x[a-z]{0,6}|".prop_map(|s| BatchState::parse(&s)),
    ]
}

fn status() -> impl Strategy<Value = Option<UpdateStatus>> {
    proptest::option::of(prop_oneof![
        Just(UpdateStatus::UpdatedCard),
        Just(UpdateStatus::UpdatedExpiry),
        Just(UpdateStatus::NoMatch),
        Just(UpdateStatus::Valid),
        Just(UpdateStatus::Contact),
        Just(UpdateStatus::Closed),
        Just(UpdateStatus::NoChange),
        "card_replaced|x[a-z]{0,6}|".prop_map(|s| UpdateStatus::parse(&s)),
    ])
}

fn result_card() -> impl Strategy<Value = ResultCard> {
    (text(), text(), opt_text(), status(), opt_text()).prop_map(|(id, card, exp, status, se)| {
        let mut c = ResultCard::default();
        c.id = id;
        c.card = ReturnedCard::new(card);
        c.exp = exp;
        c.status = status;
        c.se_number = se;
        c
    })
}

fn results() -> impl Strategy<Value = Results> {
    (
        opt_text(),
        state(),
        prop::collection::vec(result_card(), 0..8),
        stats(),
        opt_text(),
        opt_text(),
    )
        .prop_map(|(batch_id, state, cards, stats, created, updated)| {
            let mut r = Results::new(state);
            r.batch_id = batch_id;
            r.cards = cards;
            r.stats = stats;
            r.created_at = created;
            r.updated_at = updated;
            r
        })
}

fn card_stats() -> impl Strategy<Value = CardStats> {
    (
        prop::array::uniform4(any::<u64>()),
        prop::collection::btree_map(unknown_name(), any::<u64>(), 0..2),
    )
        .prop_map(|([v, m, d, a], other)| {
            let mut c = CardStats::default();
            c.visa = v;
            c.mastercard = m;
            c.discover = d;
            c.american_express = a;
            c.other = other;
            c
        })
}

fn event() -> impl Strategy<Value = WebhookEvent> {
    prop_oneof![
        (
            (opt_text(), card_stats(), stats(), opt_text()),
            (opt_text(), opt_text(), message(), opt_text())
        )
            .prop_map(
                |((batch_id, cs, stats, id), (date, event_id, message, expires))| {
                    let mut e = BatchAvailable::default();
                    e.batch_id = batch_id;
                    e.card_stats = cs;
                    e.stats = stats;
                    e.id = id;
                    e.trigger_date = date;
                    e.event_id = event_id;
                    e.message = message;
                    e.expires = expires;
                    WebhookEvent::BatchAvailable(e)
                }
            ),
        (opt_text(), message(), opt_text()).prop_map(|(status, message, merchant)| {
            let mut e = EnrollmentComplete::default();
            e.status = status;
            e.message = message;
            e.merchant_id = merchant;
            WebhookEvent::EnrollmentComplete(e)
        }),
        (
            (opt_text(), opt_text(), opt_text(), opt_text()),
            (opt_text(), message(), any::<u64>())
        )
            .prop_map(
                |((batch_id, id, date, event_id), (source, message, count))| {
                    let mut e = BatchError::default();
                    e.batch_id = batch_id;
                    e.id = id;
                    e.trigger_date = date;
                    e.event_id = event_id;
                    e.source = source;
                    e.message = message;
                    e.error_count = count;
                    WebhookEvent::BatchError(e)
                }
            ),
        (
            stats(),
            (opt_text(), opt_text(), opt_text(), message(), opt_text())
        )
            .prop_map(|(stats, (id, date, event_id, message, expires))| {
                let mut e = AmexUpdate::default();
                e.stats = stats;
                e.id = id;
                e.trigger_date = date;
                e.event_id = event_id;
                e.message = message;
                e.expires = expires;
                WebhookEvent::AmexUpdate(e)
            }),
        (
            "[0-9]{1,6}|0[0-9]{1,3}|x[a-z]{0,4}|",
            opt_text(),
            opt_text()
        )
            .prop_filter("a known trigger", |(t, ..)| {
                t.parse::<u32>().ok().and_then(Trigger::from_id).is_none()
            })
            .prop_map(|(trigger, id, event_id)| {
                let mut e = UnknownEvent::default();
                e.trigger_id = trigger;
                e.id = id;
                e.event_id = event_id;
                WebhookEvent::Unknown(e)
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn results_round_trip(r in results()) {
        for sp in SPELLINGS {
            let body = server::results(&r, sp);
            prop_assert_eq!(&GetBatchResults::decode(&ok(body.clone())).unwrap(), &r);
            prop_assert_eq!(&GetSubscriptionResults::decode(&ok(body)).unwrap(), &r);
        }
    }

    #[test]
    fn batch_answers_round_trip(r in results(), batch_id in "[a-z0-9]{1,20}") {
        let mut info = BatchInfo::new(r.status.clone());
        info.batch_id = r.batch_id;
        info.stats = r.stats;
        info.created_at = r.created_at;
        info.updated_at = r.updated_at;
        let mut created = BatchCreated::new(batch_id, info.status.clone());
        created.stats = info.stats.clone();
        created.created_at = info.created_at.clone();
        created.updated_at = info.updated_at.clone();
        for sp in SPELLINGS {
            prop_assert_eq!(&GetBatch::decode(&ok(server::batch_info(&info, sp))).unwrap(), &info);
            prop_assert_eq!(&CreateBatch::decode(&ok(server::batch_created(&created, sp))).unwrap(), &created);
        }
    }

    #[test]
    fn webhooks_round_trip(event in event()) {
        for sp in SPELLINGS {
            let body = server::webhook(&event, sp);
            prop_assert_eq!(&decode_webhook(&body).unwrap(), &event, "{}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn merchant_answers_round_trip(
        id in "[a-z0-9]{1,20}",
        key in "[!-~]{1,40}",
        created in opt_text(),
        status in opt_text().prop_filter("a failure word", |s| !matches!(s.as_deref(), Some("failed" | "failure" | "fail" | "error"))),
        message in message(),
        enrollment in opt_text(),
        known in any::<bool>(),
    ) {
        let mut enrolled = MerchantEnrolled::new(id.clone(), MerchantKey::new(&key).unwrap());
        enrolled.created_at = created;
        let mut merchant = MerchantStatus::default();
        merchant.status = status.clone();
        merchant.message = message.clone();
        merchant.merchant_id = known.then_some(id);
        merchant.enrollment = enrollment;
        let mut ack = Ack::default();
        ack.status = status;
        ack.message = message;
        for sp in SPELLINGS {
            prop_assert_eq!(&EnrollMerchant::decode(&ok(server::merchant_enrolled(&enrolled, sp))).unwrap(), &enrolled);
            prop_assert_eq!(&GetMerchant::decode(&ok(server::merchant_status(&merchant, sp))).unwrap(), &merchant);
            prop_assert_eq!(&Subscribe::decode(&ok(server::ack(&ack, sp))).unwrap(), &ack);
        }
    }

    #[test]
    fn failures_round_trip(message in "[a-zA-Z][a-zA-Z0-9 ,.'\"\\\\é]{0,40}[a-z.]", status in 400u16..600) {
        for sp in SPELLINGS {
            let answer = server::respond(http::StatusCode::from_u16(status).unwrap(), server::failure(&message, sp));
            match GetBatch::decode(&answer).unwrap_err() {
                DecodeError::Status { status: s, api_status, message: m, .. } => {
                    prop_assert_eq!(s.as_u16(), status);
                    prop_assert_eq!(api_status.as_deref(), Some("failed"));
                    prop_assert_eq!(m.as_deref(), Some(message.as_str()));
                }
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }

    #[test]
    fn webhook_registrations_round_trip(
        pairs in prop::collection::vec((0usize..4, "[!-~]{1,30}|\\PC{1,10}"), 1..6),
        flat in prop::array::uniform4(proptest::option::of("[!-~]{1,30}")),
    ) {
        let mut set = SetWebhooks::new();
        for (i, url) in &pairs {
            set = set.with(Trigger::ALL[*i], url.clone());
        }
        let request = set.encode(&config()).unwrap();
        prop_assert_eq!(server::decode_webhooks_body(request.body()).unwrap(), set.webhooks());

        let [a, b, c, d] = flat;
        let mut form = SetWebhooksFlat::default();
        form.batch_completion_webhook = a;
        form.merchant_enrollment_webhook = b;
        form.batch_error_webhook = c;
        form.amex_update_webhook = d;
        let expected: Vec<(Trigger, String)> = [
            (Trigger::BatchAvailable, &form.batch_completion_webhook),
            (Trigger::EnrollmentComplete, &form.merchant_enrollment_webhook),
            (Trigger::BatchError, &form.batch_error_webhook),
            (Trigger::AmexUpdate, &form.amex_update_webhook),
        ]
        .into_iter()
        .filter_map(|(t, u)| u.clone().map(|u| (t, u)))
        .collect();
        let request = form.encode(&config()).unwrap();
        match server::decode_webhooks_body(request.body()) {
            Ok(pairs) => prop_assert_eq!(pairs, expected),
            Err(e) => prop_assert!(expected.is_empty(), "{e}"),
        }

        let url = &pairs[0].1;
        let request = SetAmexWebhook::new(url.clone()).encode(&config()).unwrap();
        prop_assert_eq!(server::decode_webhook_body(request.body()).unwrap(), (Trigger::AmexUpdate, url.clone()));
    }

    #[test]
    fn query_values_round_trip(id in "\\PC{1,20}") {
        let uri = GetBatchResults::new(id.clone()).with_event_id(format!("{id}+&=")).encode(&config()).unwrap();
        prop_assert_eq!(server::query_value(uri.uri(), "batch_id"), Some(id.clone()));
        prop_assert_eq!(server::query_value(uri.uri(), "event_id"), Some(format!("{id}+&=")));
        let uri = GetMerchant::new(id.clone()).encode(&partner()).unwrap();
        prop_assert_eq!(server::query_value(uri.uri(), "merchant_id"), Some(id));
    }
}

fn config() -> Config {
    Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("k").unwrap())
}

fn partner() -> Config {
    Config::new(BaseUrl::sandbox()).with_partner_key(PartnerKey::new("p").unwrap())
}

#[test]
fn merchant_enrollment_round_trips() {
    let json = include_str!("data/universal/merchant_enroll_request.json");
    let merchant: MerchantEnrollment = serde_json::from_str(json).unwrap();
    let request = EnrollMerchant::new(merchant.clone())
        .encode(&partner())
        .unwrap();
    assert_eq!(
        server::decode_merchant_enrollment(request.body()).unwrap(),
        merchant
    );
    // A misspelt field is named; the value is not quoted.
    let mut wrong: serde_json::Value = serde_json::from_str(json).unwrap();
    wrong["phone_extension"] = "4111111111111111".into();
    let body = serde_json::to_vec(&wrong).unwrap();
    let err = server::decode_merchant_enrollment(&body).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `phone_extension`"),
        "{err}"
    );
    assert!(!err.to_string().contains("4111111111111111"), "{err}");
}

#[test]
fn card_bodies_round_trip_and_refuse_what_is_not_text() {
    let pan = Pan::parse("4457010000000009").unwrap();
    let exp = Expiry::parse("01/50").unwrap();
    let se = SeNumber::parse("1234567890").unwrap();
    let sub = Subscribe::new(vec![SubscriptionCard::new(se, "a\"b", pan.clone(), exp)])
        .unwrap()
        .encode(&config())
        .unwrap();
    let cards = decode_cards_body(sub.body()).unwrap();
    assert_eq!(cards[0].id.as_deref(), Some("a\"b"));
    assert_eq!(cards[0].se_number.as_deref(), Some("1234567890"));
    assert_eq!(cards[0].exp.as_deref(), Some("01/50"));
    for (body, path) in [
        (&br#"{"cards":[{"id":"a"},{"id":7}]}"#[..], "cards[1].id"),
        (br#"{"cards":[{"card":4457010000000009}]}"#, "cards[0].card"),
        (br#"{"cards":[{"exp":null}]}"#, "cards[0].exp"),
        (br#"{"cards":[{"se":["1"]}]}"#, "cards[0].se"),
        (br#"{"cards":[1]}"#, "cards[0]"),
    ] {
        let err = decode_cards_body(body).unwrap_err();
        assert_eq!(err.path, path, "{err}");
        assert!(!err.to_string().contains("4457010000000009"), "{err}");
    }
}

#[test]
fn registration_errors_name_the_field() {
    for (body, message) in [
        (
            &br#"{"webhooks":[]}"#[..],
            "webhooks must be a non-empty list",
        ),
        (
            br#"{"webhooks":[{"trigger_id":"21","url":""}]}"#,
            "webhooks[0].url must be a non-empty URL",
        ),
        (
            br#"{"webhooks":[{"trigger_id":20,"url":"u"},7]}"#,
            "webhooks[1] must be an object with trigger_id and url",
        ),
        (
            br#"{"batch_error_webhook":5}"#,
            "batch_error_webhook must be a non-empty URL",
        ),
        (
            br#"{"batch_error_webhook":null}"#,
            "batch_error_webhook must be a non-empty URL",
        ),
        (
            b"{}",
            "the body must be an object with at least one webhook URL",
        ),
        (
            br#"{"batch_done_4111111111111111":"u"}"#,
            "unknown field batch_done_411111******1111",
        ),
    ] {
        let err = server::decode_webhooks_body(body).unwrap_err();
        assert_eq!(err.to_string(), message);
    }
    let err = server::decode_webhooks_body(b"[1]").unwrap_err();
    assert!(matches!(err, server::RequestError::Json(_)), "{err:?}");
    let err = server::decode_webhook_body(br#"{"trigger_id":19,"url":"u"}"#).unwrap_err();
    assert_eq!(err.to_string(), "trigger_id must be 20, 21, 22 or 23");
}
