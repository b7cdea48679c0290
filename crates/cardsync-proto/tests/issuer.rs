//! The issuer side: the documents' examples reproduced byte for byte and read back, request
//! bodies round-tripping through the server-side decoders on generated values, the errors
//! that name the field, and the retry rule that the PATCH's idempotency key allows.

use cardsync_core::Pan;
use cardsync_proto::issuer::feed::*;
use cardsync_proto::issuer::platform::*;
use cardsync_proto::issuer::{IssuerConfig, IssuerEndpoint};
use cardsync_proto::{BaseUrl, IssuerToken};
use proptest::prelude::*;

mod common;
use common::minified;

fn data(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/data/issuer/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn config() -> IssuerConfig {
    IssuerConfig::new(BaseUrl::parse("https://issuer.example/v1").unwrap())
        .with_token(IssuerToken::new("issuer-secret").unwrap())
}

fn ok(body: Vec<u8>) -> http::Response<Vec<u8>> {
    let mut r = http::Response::new(body);
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

const ACCOUNT: &str = "42c57311-25f9-4501-b9db-e78afa73c0e3";
const CUSTOMER: &str = "afa2r21-25f9-4501-b9db-e78afa73c0e3";

/// The two cards of the feed document's example.
fn example_cards() -> Vec<FeedCard> {
    let mut open = NewCard::open(
        &Pan::parse("4457010000000009").unwrap(),
        CardType::Credit,
        "2017-01-01T08:00:00Z",
    );
    open.iin = Iin::parse("123456").unwrap();
    open.last4 = Last4::parse("2345").unwrap();
    open.network_identifier = NetworkIdentifier::new(3).unwrap();
    let mut closed = open.clone();
    closed.iin = Iin::parse("873452").unwrap();
    closed.last4 = Last4::parse("6789").unwrap();
    closed.status = CardStatus::Closed;
    closed.close_date = Some("2023-04-06T08:00:00Z".into());
    vec![FeedCard::New(open), FeedCard::New(closed)]
}

#[test]
fn the_feed_example_is_encoded_byte_for_byte_and_read_back() {
    let request = UpdateCards::new(CUSTOMER, ACCOUNT, example_cards())
        .unwrap()
        .encode(&config())
        .unwrap();
    assert_eq!(request.method(), "PUT");
    assert_eq!(
        request.uri(),
        "https://issuer.example/v1/v2/data/customers/afa2r21-25f9-4501-b9db-e78afa73c0e3/accounts/42c57311-25f9-4501-b9db-e78afa73c0e3/cards"
    );
    assert_eq!(request.headers()["authorization"], "Bearer issuer-secret");
    assert!(request.headers()["authorization"].is_sensitive());
    assert_eq!(
        String::from_utf8(request.body().clone()).unwrap(),
        minified(&data("update_cards_request.json"))
    );
    // Server side: the document's example reads to the same cards.
    let received = decode_update_cards_body(&data("update_cards_request.json")).unwrap();
    let cards: Vec<FeedCard> = received.iter().map(|r| r.card.clone()).collect();
    assert_eq!(cards, example_cards());
    assert!(
        received
            .iter()
            .all(|r| r.account_id == ACCOUNT && r.customer_id == CUSTOMER)
    );
    // The answer.
    let accepted = UpdateCards::decode(&ok(data("update_cards_response.json"))).unwrap();
    assert_eq!(
        accepted.request_id.as_deref(),
        Some("380052b4-3a64-4952-b640-ba696eb9f44b")
    );
    assert_eq!(
        UpdateCards::decode(&ok(accepted_body("r 1")))
            .unwrap()
            .request_id
            .as_deref(),
        Some("r 1")
    );
    let more = UpdateCards::decode(&ok(br#"{"requestId":7,"trace":{"a":[1]}}"#.to_vec())).unwrap();
    assert_eq!(more.request_id.as_deref(), Some("7"));
    assert_eq!(more.other["trace"]["a"][0], 1);
}

#[test]
fn the_platform_examples_are_encoded_byte_for_byte_and_read_back() {
    // The request: read server side, encoded again exactly.
    let edits = decode_card_edits(&data("update_card_request.json")).unwrap();
    assert_eq!(edits.card_status, Some(PlatformCardStatus::Active));
    assert_eq!(edits.reason, Some(StatusReason::ActivityValidated));
    assert_eq!(
        edits.emboss_name.as_ref().and_then(|e| e.line_2.as_deref()),
        Some("Acme Inc.")
    );
    let key = IdempotencyKey::new("7d943c51-e4ff-4e57-9558-08cab6b963c7").unwrap();
    let request = UpdateCard::new("7d943c51-e4ff-4e57-9558-08cab6b963c7", edits, key)
        .unwrap()
        .encode(&config())
        .unwrap();
    assert_eq!(request.method(), "PATCH");
    assert_eq!(
        request.uri(),
        "https://issuer.example/v1/cards/7d943c51-e4ff-4e57-9558-08cab6b963c7"
    );
    assert_eq!(
        request.headers()["idempotency-key"],
        "7d943c51-e4ff-4e57-9558-08cab6b963c7"
    );
    assert_eq!(
        String::from_utf8(request.body().clone()).unwrap(),
        minified(&data("update_card_request.json"))
    );
    // The answer: typed where the network needs it, everything else kept.
    let card = UpdateCard::decode(&ok(data("update_card_response.json"))).unwrap();
    let d = &card.card_details;
    assert_eq!(d.last_four.as_deref(), Some("1234"));
    assert_eq!(d.card_status, Some(PlatformCardStatus::Active));
    assert_eq!(d.status_reason, Some(StatusReason::ActivityValidated));
    assert_eq!(d.card_brand.as_deref(), Some("MASTERCARD"));
    assert_eq!(d.expiry().map(|e| (e.month(), e.year())), Some((6, 2025)));
    assert!(d.reissued_to_id.is_some() && d.reissued_from_id.is_some());
    assert!(d.other.contains_key("shipping") && d.other.contains_key("pending_reasons"));
    assert_eq!(card.tenant.as_deref(), Some("abcdef_ghijkl"));
    assert_eq!(card.program, Some(CardType::Credit));
    // Written back by the server side, it reads the same.
    assert_eq!(UpdateCard::decode(&ok(card_body(&card))).unwrap(), card);
}

#[test]
fn feed_errors_name_the_card_and_the_field() {
    let card = |extra: &str| {
        format!(
            r#"{{"cards":[{{"sourceAccountId":"a","sourceCustomerId":"c","last4":"6789"}},{{"sourceAccountId":"a","sourceCustomerId":"c",{extra}}}]}}"#
        )
    };
    for (extra, message) in [
        (r#""last4":"12a4""#, "cards[1].last4 must be four digits"),
        (
            r#""last4":"1234","status":"LOST""#,
            "cards[1].status must be OPEN or CLOSED",
        ),
        (
            r#""last4":"1234","status":"CLOSED""#,
            "cards[1].closeDate must be set when the status is CLOSED",
        ),
        (
            r#""last4":"1234","networkIdentifier":12"#,
            "cards[1].networkIdentifier must be a digit",
        ),
        (
            r#""last4":"1234","iin":"1234""#,
            "cards[1].iin must be six to eight digits",
        ),
        (
            r#""last4":"1234","iin":"123456","status":"OPEN""#,
            "cards[1].cardType must be CREDIT, DEBIT or PREPAID",
        ),
        (
            r#""last4":"1234","cardType":"GOLD""#,
            "cards[1].cardType must be CREDIT, DEBIT or PREPAID",
        ),
    ] {
        let err = decode_update_cards_body(card(extra).as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), message, "{extra}");
    }
    // A string digit is read as the document's table types it.
    let body = card(r#""last4":"1234","networkIdentifier":"4""#);
    let cards = decode_update_cards_body(body.as_bytes()).unwrap();
    let FeedCard::Update(u) = &cards[1].card else {
        panic!()
    };
    assert_eq!(u.network_identifier.map(NetworkIdentifier::digit), Some(4));
    assert!(decode_update_cards_body(br#"{"cards":[]}"#).is_err());
    assert!(decode_update_cards_body(b"[]").is_err());
}

#[test]
fn platform_errors_name_the_field() {
    let long = "x".repeat(256);
    for (body, message) in [
        (
            r#"{"card_status":"DEAD"}"#.to_owned(),
            "card_status must be ACTIVE, SUSPENDED or TERMINATED",
        ),
        (
            format!(r#"{{"memo":"{long}"}}"#),
            "memo must be at most 255 characters",
        ),
        (
            r#"{"emboss_name":{"line_1":"Jane Smith the Twenty-Second"}}"#.to_owned(),
            "emboss_name.line_1 must be at most 21 characters of A-Z, a-z, 0-9, space and . , / - & '",
        ),
        (
            r#"{"emboss_name":{"line_2":"Jane_Smith"}}"#.to_owned(),
            "emboss_name.line_2 must be at most 21 characters of A-Z, a-z, 0-9, space and . , / - & '",
        ),
        (
            r#"{"metadata":[1]}"#.to_owned(),
            "metadata must be an object",
        ),
        (
            r#"{"customer_id":7}"#.to_owned(),
            "customer_id must be a string",
        ),
    ] {
        let err = decode_card_edits(body.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), message);
    }
    // The client refuses to send what the server would refuse.
    let mut edits = CardEdits::status(PlatformCardStatus::Terminated, StatusReason::Lost);
    edits.memo = Some(long);
    let key = IdempotencyKey::new("k").unwrap();
    assert!(UpdateCard::new("c", edits, key).is_err());
}

#[test]
fn the_patch_is_retried_and_the_feed_too() {
    use cardsync_proto::Idempotency;
    use cardsync_proto::retry::{Decision, Outcome, Reached, RetryPolicy};
    assert_eq!(UpdateCard::IDEMPOTENCY, Idempotency::Idempotent);
    assert_eq!(UpdateCards::IDEMPOTENCY, Idempotency::Idempotent);
    let decision = RetryPolicy::default().decide(
        UpdateCard::IDEMPOTENCY,
        1,
        std::time::Duration::ZERO,
        Outcome::Transport {
            reached: Reached::Maybe,
        },
        0.5,
    );
    assert!(matches!(decision, Decision::Retry { .. }), "{decision:?}");
}

#[test]
fn no_full_card_number_in_a_feed_card() {
    let pan = Pan::parse("4457010000000009").unwrap();
    let card = FeedCard::New(NewCard::open(&pan, CardType::Debit, "2024-01-01T00:00:00Z"));
    let request = UpdateCards::new("c", "a", vec![card.clone()])
        .unwrap()
        .encode(&config())
        .unwrap();
    let body = String::from_utf8(request.body().clone()).unwrap();
    assert!(!body.contains("4457010000000009"), "{body}");
    assert!(body.contains(r#""iin":"445701""#) && body.contains(r#""last4":"0009""#));
    assert!(!format!("{card:?} {request:?}").contains("4457010000000009"));
    assert!(!format!("{:?}", config()).contains("issuer-secret"));
}

fn last4() -> impl Strategy<Value = Last4> {
    "[0-9]{4}".prop_map(|s| Last4::parse(&s).unwrap())
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{1,12}|[\"\\\\a-z0-9:-]{1,20}"
}

fn feed_card() -> impl Strategy<Value = FeedCard> {
    let card_type = prop_oneof![
        Just(CardType::Credit),
        Just(CardType::Debit),
        Just(CardType::Prepaid)
    ];
    let status = prop_oneof![Just(CardStatus::Open), Just(CardStatus::Closed)];
    prop_oneof![
        (
            last4(),
            "[0-9]{6,8}",
            card_type.clone(),
            status.clone(),
            0u8..10,
            text(),
            text()
        )
            .prop_map(|(last4, iin, t, s, n, open, close)| {
                let mut c = NewCard::open(&Pan::parse("4457010000000009").unwrap(), t, open);
                c.last4 = last4;
                c.iin = Iin::parse(&iin).unwrap();
                c.status = s;
                c.network_identifier = NetworkIdentifier::new(n).unwrap();
                c.close_date = (c.status == CardStatus::Closed).then_some(close);
                FeedCard::New(c)
            }),
        (
            last4(),
            proptest::option::of(card_type),
            proptest::option::of(status),
            proptest::option::of(0u8..10),
            proptest::option::of(text()),
            text()
        )
            .prop_map(|(last4, t, s, n, open, close)| {
                let mut u = CardUpdate::close(last4, close);
                u.card_type = t;
                u.status = s;
                u.network_identifier = n.and_then(NetworkIdentifier::new);
                u.open_date = open;
                FeedCard::Update(u)
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn feed_bodies_round_trip(customer in text(), account in text(), cards in prop::collection::vec(feed_card(), 1..6)) {
        let request = UpdateCards::new(customer.clone(), account.clone(), cards.clone()).unwrap().encode(&config()).unwrap();
        let received = decode_update_cards_body(request.body()).unwrap();
        prop_assert_eq!(received.len(), cards.len());
        for (r, c) in received.iter().zip(&cards) {
            prop_assert_eq!(&r.card, c);
            prop_assert_eq!(&r.customer_id, &customer);
            prop_assert_eq!(&r.account_id, &account);
        }
    }

    #[test]
    fn patch_bodies_round_trip(
        status in proptest::option::of(prop_oneof![Just(PlatformCardStatus::Active), Just(PlatformCardStatus::Suspended), Just(PlatformCardStatus::Terminated)]),
        reason in proptest::option::of("LOS|STO|EXP|CLO|OTH|ACT"),
        customer in proptest::option::of(text()),
        memo in proptest::option::of("\\PC{0,255}"),
        line in proptest::option::of("[A-Za-z0-9 .,/&'-]{0,21}"),
    ) {
        let mut edits = CardEdits::default();
        edits.card_status = status;
        edits.reason = reason.map(|r| StatusReason::parse(&r));
        edits.customer_id = customer;
        edits.memo = memo;
        let mut emboss = EmbossName::default();
        emboss.line_1 = line;
        edits.emboss_name = Some(emboss);
        let key = IdempotencyKey::new("k").unwrap();
        let request = UpdateCard::new("card 1", edits.clone(), key).unwrap().encode(&config()).unwrap();
        prop_assert_eq!(decode_card_edits(request.body()).unwrap(), edits);
    }
}

/// Renders a request as canonical text for a snapshot: method, URI, sorted headers (the
/// token replaced, after checking it is marked sensitive; the version replaced), pretty body.
fn render(request: &http::Request<Vec<u8>>) -> String {
    let mut out = format!("{} {}\n", request.method(), request.uri());
    let mut headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let v = match name.as_str() {
                "authorization" => {
                    assert!(value.is_sensitive());
                    "Bearer [token]".to_owned()
                }
                _ => value
                    .to_str()
                    .unwrap()
                    .replace(env!("CARGO_PKG_VERSION"), "[version]"),
            };
            (name.as_str().to_owned(), v)
        })
        .collect();
    headers.sort();
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\n"));
    }
    let body: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
    out.push('\n');
    out.push_str(&serde_json::to_string_pretty(&body).unwrap());
    out.push('\n');
    out
}

#[test]
fn snapshots_of_both_requests() {
    let feed = UpdateCards::new(CUSTOMER, ACCOUNT, example_cards())
        .unwrap()
        .encode(&config())
        .unwrap();
    insta::assert_snapshot!("issuer_update_cards", render(&feed));
    let mut edits = CardEdits::status(PlatformCardStatus::Terminated, StatusReason::Stolen);
    edits.memo = Some("reported stolen by phone".into());
    let patch = UpdateCard::new(
        "7d943c51-e4ff-4e57-9558-08cab6b963c7",
        edits,
        IdempotencyKey::new("0f5e8c9a4b3d2e1f").unwrap(),
    )
    .unwrap()
    .encode(&config())
    .unwrap();
    insta::assert_snapshot!("platform_update_card", render(&patch));
}

#[test]
fn unknown_fields_are_kept_exactly_numbers_included() {
    let body = br#"{"card_details":{"id":"c1","is_pin_set":true,"x":[1,{"y":null}]},"req":8.88881111111111111111111111111111e38,"n":-3}"#;
    let card = UpdateCard::decode(&ok(body.to_vec())).unwrap();
    assert_eq!(card.card_details.id.as_deref(), Some("c1"));
    assert_eq!(card.card_details.other["is_pin_set"], true);
    let again = UpdateCard::decode(&ok(card_body(&card))).unwrap();
    assert_eq!(again, card);
}
