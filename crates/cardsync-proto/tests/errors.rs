//! Decoding what real servers, CDNs and proxies send besides the documented examples: error
//! bodies, HTML pages, empty and truncated bodies, and lenient variants of the documented JSON.

use cardsync_core::UpdateStatus;
use cardsync_proto::*;
use http::StatusCode;

fn response(status: u16, content_type: Option<&str>, body: &[u8]) -> http::Response<Vec<u8>> {
    let mut b = http::Response::builder().status(status);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(body.to_vec()).unwrap()
}

const JSON: Option<&str> = Some("application/json; charset=utf-8");

#[test]
fn documented_401_error_body() {
    // From the v1.1 description CardSync published, captured from the real sandbox.
    let body = br#"{"status": "failed", "msg": "unauthorized"}"#;
    let r = response(401, JSON, body);
    let err = GetBatch::decode(&r).unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    let DecodeError::Status {
        api_status,
        message,
        length,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(api_status.as_deref(), Some("failed"));
    assert_eq!(message.as_deref(), Some("unauthorized"));
    assert_eq!(*length, body.len());
    assert_eq!(
        err.to_string(),
        "CardSync answered 401 Unauthorized: unauthorized"
    );
}

#[test]
fn html_error_page_from_a_cdn() {
    let page =
        b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1>cf-ray 4457010000000009</body></html>";
    for status in [502, 200] {
        let err =
            GetBatchResults::decode(&response(status, Some("text/html; charset=UTF-8"), page))
                .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("4457010000000009"), "{text}");
        assert!(!text.contains("<html>"), "the body is never kept: {text}");
        match err {
            DecodeError::Status {
                content_type,
                length,
                message,
                ..
            } => {
                assert_eq!(status, 502);
                assert_eq!(content_type.as_deref(), Some("text/html; charset=UTF-8"));
                assert_eq!((length, message), (page.len(), None));
            }
            DecodeError::NotJson {
                content_type,
                length,
                ..
            } => {
                assert_eq!(status, 200);
                assert_eq!(content_type.as_deref(), Some("text/html; charset=UTF-8"));
                assert_eq!(length, page.len());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn empty_and_whitespace_bodies() {
    for body in [&b""[..], b"  \r\n"] {
        let err = GetBatch::decode(&response(200, None, body)).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::NotJson {
                    content_type: None,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = GetBatch::decode(&response(503, None, body)).unwrap_err();
        assert!(
            matches!(err, DecodeError::Status { message: None, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn truncated_json_names_where_it_stopped() {
    let full = br#"{"status":"success","data":{"status":"completed","cards":[{"id":"a","card":"4457010000000009","exp":"01/50","status":"valid"},{"id":"b""#;
    let err = GetBatchResults::decode(&response(200, JSON, full)).unwrap_err();
    let DecodeError::Json { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(error.kind, JsonErrorKind::Truncated);
    assert!(error.path.starts_with("data.cards[1]"), "{}", error.path);
    assert!(!format!("{err} {err:?}").contains("4457010000000009"));
}

#[test]
fn json_that_does_not_fit_keeps_the_path_not_the_value() {
    let body = br#"{"status":"success","data":{"status":"completed","cards":[{"id":"a","status":"valid"},{"id":"b","card":{"pan":"4457010000000009"}}]}}"#;
    let err = GetBatchResults::decode(&response(200, JSON, body)).unwrap_err();
    let DecodeError::Json { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(error.kind, JsonErrorKind::Data);
    assert_eq!(error.path, "data.cards[1].card");
    assert_eq!(
        error.detail.as_deref(),
        Some("expected a string or a number")
    );
    assert!(!format!("{err} {err:?}").contains("4457010000000009"));

    let err =
        GetBatch::decode(&response(200, JSON, br#"{"status":"success","data":[]}"#)).unwrap_err();
    let DecodeError::Json { error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (error.path.as_str(), error.detail.as_deref()),
        ("data", Some("expected a data object"))
    );
}

#[test]
fn a_200_that_says_failed() {
    let body = br#"{"status":"failed","message":"card 4457010000000009 rejected"}"#;
    let err = Subscribe::decode(&response(200, JSON, body)).unwrap_err();
    let DecodeError::Failed {
        api_status,
        message,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(api_status, "failed");
    assert_eq!(message.as_deref(), Some("card 445701******0009 rejected"));
}

#[test]
fn server_messages_are_bounded_and_masked() {
    let long = format!(
        r#"{{"status":"failed","message":"{} 5112010000000003 {}"}}"#,
        "x".repeat(100),
        "y".repeat(400)
    );
    let err = GetBatch::decode(&response(400, JSON, long.as_bytes())).unwrap_err();
    let DecodeError::Status {
        message: Some(m), ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert!(m.chars().count() <= MAX_MESSAGE_LEN + 1, "{}", m.len());
    assert!(m.contains("511201******0003"));
    assert!(!m.contains("5112010000000003"));
}

#[test]
fn lenient_results() {
    let body = br#"{
        "status": "success", "msg": "ok", "extra": {"nested": [1, 2]},
        "data": {
            "batch_id": 12345, "status": "completed", "unknown_field": true,
            "cards": [
                {"id": "no-status", "card": "4457010000000009", "exp": "01/50"},
                {"id": "null-status", "card": "4457010000000009", "exp": "01/50", "status": null},
                {"id": "new-status", "card": "4457010000000009", "exp": "01/50", "status": "card_replaced"},
                {"id": "amex", "card": "342132335566772", "exp": "01/50", "status": "contact_closed", "se": "1234567890"},
                {"id": 42, "card": 4457010000000009, "exp": "01/50", "status": "valid", "status": "closed"}
            ],
            "stats": {"number_submitted": "5", "closed": 1, "contact_closed": 0, "brand_new_counter": 7, "note": "x"}
        }
    }"#;
    let r = GetBatchResults::decode(&response(200, JSON, body)).unwrap();
    assert_eq!(r.batch_id.as_deref(), Some("12345"));
    let statuses: Vec<_> = r.cards.iter().map(|c| c.status.clone()).collect();
    assert_eq!(
        statuses,
        [
            None,
            None,
            Some(UpdateStatus::Unknown("card_replaced".into())),
            Some(UpdateStatus::Closed),
            Some(UpdateStatus::Closed), // a repeated key: the later value wins
        ]
    );
    assert_eq!(r.cards[3].se_number.as_deref(), Some("1234567890"));
    assert_eq!(r.cards[4].id, "42");
    assert_eq!(r.cards[4].card.expose(), "4457010000000009");
    assert_eq!(r.stats.stats.number_submitted, 5);
    assert_eq!(r.stats.stats.closed, 1);
    assert_eq!(r.stats.other_counters.get("brand_new_counter"), Some(&7));
    assert_eq!(r.stats.stats.other, 7);
}

#[test]
fn cards_may_be_null_and_data_may_be_missing() {
    let r = GetBatchResults::decode(&response(
        200,
        JSON,
        br#"{"data":{"status":"completed","cards":null,"stats":null}}"#,
    ))
    .unwrap();
    assert!(r.cards.is_empty());
    let err =
        GetBatchResults::decode(&response(200, JSON, br#"{"status":"success"}"#)).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Protocol {
            violation: Violation::MissingData,
            ..
        }
    ));
}

#[test]
fn unknown_batch_states_are_kept() {
    let r = GetBatch::decode(&response(200, JSON, br#"{"data":{"status":"queued"}}"#)).unwrap();
    assert_eq!(r.status, BatchState::Unknown("queued".into()));
    assert!(!r.status.is_final());
}

#[test]
fn webhook_variants() {
    let e = decode_webhook(
        br#"{"trigger_id":"20","batch_id":"b1","event_id":"e1","card_stats":"n/a","msg":"done"}"#,
    )
    .unwrap();
    let WebhookEvent::BatchAvailable(b) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        (b.batch_id.as_deref(), b.message.as_deref()),
        (Some("b1"), Some("done"))
    );
    let e = decode_webhook(br#"{"trigger_id":" 22 ","error_count":"4"}"#).unwrap();
    assert!(matches!(e, WebhookEvent::BatchError(b) if b.error_count == 4));
    let e = decode_webhook(br#"{"trigger_id":"x4457010000000009","event_id":"e9"}"#).unwrap();
    let WebhookEvent::Unknown(u) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(u.trigger_id, "x445701******0009");
    assert_eq!(e.dedup_key().as_deref(), Some("event:e9"));
}

#[test]
fn encode_errors() {
    let config = Config::new(BaseUrl::sandbox());
    assert_eq!(
        GetBatch::new("b").encode(&config).unwrap_err(),
        EncodeError::MissingKey {
            scope: KeyScope::Merchant
        }
    );
    let config = config.with_merchant_key(MerchantKey::new("k").unwrap());
    assert_eq!(
        GetBatch::new("").encode(&config).unwrap_err(),
        EncodeError::EmptyField { field: "batch_id" }
    );
    assert_eq!(CreateBatch::new(vec![]).unwrap_err(), EncodeError::NoCards);
    assert_eq!(
        EnrollMerchant::new(
            serde_json::from_slice(include_bytes!(
                "data/universal/merchant_enroll_request.json"
            ))
            .unwrap()
        )
        .encode(&config)
        .unwrap_err(),
        EncodeError::MissingKey {
            scope: KeyScope::Partner
        }
    );
    let card = BatchCard::new(
        "a",
        cardsync_core::Pan::parse("4457010000000009").unwrap(),
        cardsync_core::Expiry::parse("01/50").unwrap(),
    );
    assert_eq!(
        CreateBatch::new(vec![card.clone(); 10_001]).unwrap_err(),
        EncodeError::TooManyCards { count: 10_001 }
    );
    assert!(CreateBatch::new(vec![card; 10_000]).is_ok());
}

#[test]
fn keys_in_the_json_path_are_masked() {
    // Found by fuzzing: the path names object keys, which come from the body.
    let body = br#"{"data":{"4457010000000009":[}}"#;
    let err = GetBatch::decode(&response(200, JSON, body)).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("4457010000000009"), "{text}");
    assert!(text.contains("445701******0009"), "{text}");
}
