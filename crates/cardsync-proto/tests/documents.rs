//! The documents' own example payloads, copied verbatim into `tests/data/`, decoded (responses
//! and webhooks) or reproduced by the encoder (requests).

use cardsync_core::{Expiry, Pan, SeNumber, UpdateStatus};
use cardsync_proto::*;
use serde_json::Value;

mod common;
use common::minified;

fn data(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn ok_response(path: &str) -> http::Response<Vec<u8>> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json; charset=utf-8")
        .body(data(path))
        .unwrap()
}

fn config() -> Config {
    Config::new(BaseUrl::sandbox())
        .with_merchant_key(MerchantKey::new("API_KEY").unwrap())
        .with_partner_key(PartnerKey::new("MASTER_KEY").unwrap())
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Removes the `/* … */` comments the documents put in one JSON example.
fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("*/").expect("closed comment") + start + 2;
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

// ----- requests: the encoder reproduces every documented body --------------------------------

#[test]
fn batch_request_body_matches_the_document() {
    let doc = json(&data("universal/batch_create_request.json"));
    let cards = doc["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            BatchCard::new(
                c["id"].as_str().unwrap(),
                Pan::parse(c["card"].as_str().unwrap()).unwrap(),
                Expiry::parse(c["exp"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    let request = CreateBatch::new(cards).unwrap().encode(&config()).unwrap();
    assert_eq!(json(request.body()), doc);
}

#[test]
fn subscribe_request_bodies_match_both_documents() {
    for path in [
        "universal/subscribe_request.json",
        "amex/subscribe_request.json",
    ] {
        let doc = json(&data(path));
        let cards: Vec<SubscriptionCard> = doc["cards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                SubscriptionCard::new(
                    SeNumber::parse(c["se_number"].as_str().unwrap()).unwrap(),
                    c["id"].as_str().unwrap(),
                    Pan::parse(c["card"].as_str().unwrap()).unwrap(),
                    Expiry::parse(c["exp"].as_str().unwrap()).unwrap(),
                )
            })
            .collect();
        let sub = Subscribe::new(cards.clone())
            .unwrap()
            .encode(&config())
            .unwrap();
        assert_eq!(json(sub.body()), doc, "{path}");
        let unsub = Unsubscribe::new(cards).unwrap().encode(&config()).unwrap();
        assert_eq!(unsub.method(), "DELETE");
        assert_eq!(
            json(unsub.body()),
            doc,
            "{path}: DELETE carries the same body"
        );
    }
}

#[test]
fn webhook_registration_bodies_match_all_three_forms() {
    let doc: Value = serde_json::from_str(&strip_comments(
        &String::from_utf8(data("universal/webhooks_request.jsonc")).unwrap(),
    ))
    .unwrap();
    let array = SetWebhooks::new()
        .with(Trigger::BatchAvailable, "batch_available_url")
        .with(Trigger::EnrollmentComplete, "enrollment_complete_url")
        .with(Trigger::BatchError, "batch_error_url")
        .with(Trigger::AmexUpdate, "amex_update_url");
    assert_eq!(json(array.encode(&config()).unwrap().body()), doc);

    let doc = json(&data("universal/webhooks_flat_request.json"));
    let mut flat = SetWebhooksFlat::default();
    flat.merchant_enrollment_webhook = doc["merchant_enrollment_webhook"].as_str().map(Into::into);
    flat.batch_completion_webhook = doc["batch_completion_webhook"].as_str().map(Into::into);
    flat.batch_error_webhook = doc["batch_error_webhook"].as_str().map(Into::into);
    flat.amex_update_webhook = doc["amex_update_webhook"].as_str().map(Into::into);
    let request = flat.encode(&config()).unwrap();
    assert_eq!(request.uri().path(), "/v2/webhooks");
    assert_eq!(json(request.body()), doc);

    let doc = json(&data("amex/webhook_request.json"));
    let request = SetAmexWebhook::new("amex_update_url")
        .encode(&config())
        .unwrap();
    assert_eq!(request.uri().path(), "/v2/webhook");
    assert_eq!(json(request.body()), doc);
}

#[test]
fn merchant_enrollment_body_round_trips_both_examples() {
    for path in [
        "universal/merchant_enroll_request.json",
        "universal/merchant_schema_request.json",
    ] {
        let doc = data(path);
        let merchant: MerchantEnrollment = serde_json::from_slice(&doc).unwrap();
        let request = EnrollMerchant::new(merchant).encode(&config()).unwrap();
        assert_eq!(
            request.headers()["authorization"],
            "MASTER_KEY",
            "partner scope"
        );
        assert_eq!(json(request.body()), json(&doc), "{path}");
    }
}

#[test]
fn documented_card_shapes_decode_server_side() {
    let cards = decode_cards_body(&data("universal/card_batch_schema_request.json")).unwrap();
    assert_eq!(cards.len(), 16);
    // The schema example spells the SE number `se`.
    assert_eq!(
        cards[0].se_number.as_deref(),
        Some("1234567890 <American Express subscriptions only>")
    );
    assert_eq!(cards[1].se_number, None);
    for path in ["universal/card_schema.json", "amex/card_schema.json"] {
        let card: SubmittedCard = serde_json::from_slice(&data(path)).unwrap();
        assert!(
            card.se_number.as_deref().unwrap().starts_with("1234567890"),
            "{path}"
        );
        assert!(!format!("{card:?}").contains(card.card.as_ref().unwrap().expose()));
    }
}

// ----- responses ------------------------------------------------------------------------------

#[test]
fn generic_responses_with_message_or_msg() {
    let ack = SetWebhooks::decode(&ok_response("universal/generic_response.json")).unwrap();
    assert_eq!(
        (ack.status.as_deref(), ack.message.as_deref()),
        (Some("success"), Some("success"))
    );
    let ack = SetAmexWebhook::decode(&ok_response("amex/generic_response.json")).unwrap();
    assert_eq!(
        (ack.status.as_deref(), ack.message.as_deref()),
        (Some("success"), Some("success"))
    );
    for path in [
        "universal/generic_response.json",
        "amex/generic_response.json",
    ] {
        let r = ok_response(path);
        for ack in [
            Subscribe::decode(&r).unwrap(),
            Unsubscribe::decode(&r).unwrap(),
            SetWebhooksFlat::decode(&r).unwrap(),
        ] {
            assert_eq!(ack.message.as_deref(), Some("success"), "{path}");
        }
    }
    let status = GetMerchant::decode(&ok_response("universal/generic_response.json")).unwrap();
    assert_eq!(status.status.as_deref(), Some("success"));
    assert_eq!(status.enrollment, None);
}

#[test]
fn merchant_enrollment_response() {
    let enrolled =
        EnrollMerchant::decode(&ok_response("universal/merchant_enroll_response.json")).unwrap();
    assert_eq!(enrolled.merchant_id, "bqgbm86g10l2fm2bv7n0");
    assert_eq!(
        enrolled.api_key.expose_secret(),
        "api_1auidmDFdMslUz2R5PSwVFSEfmP"
    );
    assert!(
        !format!("{enrolled:?}").contains("api_1auid"),
        "the key is redacted in Debug"
    );
}

#[test]
fn batch_creation_without_batch_id_is_a_protocol_error() {
    // The documents' example response has no batch_id, though the text says to save it.
    let err =
        CreateBatch::decode(&ok_response("universal/batch_create_response.json")).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Protocol {
            status: http::StatusCode::OK,
            violation: Violation::MissingBatchId
        }
    );
    assert!(err.to_string().contains("billed twice"), "{err}");
}

#[test]
fn batch_status_responses() {
    let info = GetBatch::decode(&ok_response("universal/batch_status_response.json")).unwrap();
    assert_eq!(info.status, BatchState::Completed);
    assert_eq!(info.batch_id, None);
    assert_eq!(
        (
            info.stats.stats.number_submitted,
            info.stats.stats.updated_card
        ),
        (1, 1)
    );
    assert_eq!(
        info.created_at.as_deref(),
        Some("2020-04-22T21:46:08.448148Z")
    );
    let info =
        GetBatch::decode(&ok_response("universal/batch_status_schema_response.json")).unwrap();
    assert_eq!(info.batch_id.as_deref(), Some("bqgbm86g10l2fm2bv7n1"));
}

#[test]
fn results_responses_of_both_documents() {
    let cases = [
        (
            "universal/batch_results_response.json",
            "4111111111111111",
            None,
        ),
        (
            "universal/subscription_results_response.json",
            "4111111111111111",
            None,
        ),
        (
            "universal/batch_results_data_schema_response.json",
            "4111111111111111",
            None,
        ),
        (
            "universal/results_schema_response.json",
            "378282246310005",
            Some("12334567890 <present only for American Express>"),
        ),
        (
            "amex/subscription_results_response.json",
            "4111111111111111",
            None,
        ),
        // Fails the Luhn check and has no Amex prefix: kept as returned.
        (
            "amex/subscription_results_schema_response.json",
            "311111111111111",
            Some("12334567890"),
        ),
    ];
    for (path, card, se) in cases {
        for results in [
            GetBatchResults::decode(&ok_response(path)).unwrap(),
            GetSubscriptionResults::decode(&ok_response(path)).unwrap(),
        ] {
            assert_eq!(results.status, BatchState::Completed, "{path}");
            assert_eq!(results.cards.len(), 1, "{path}");
            let c = &results.cards[0];
            assert_eq!(c.card.expose(), card, "{path}");
            assert_eq!(c.status, Some(UpdateStatus::UpdatedCard), "{path}");
            assert_eq!(c.se_number.as_deref(), se, "{path}");
            assert!(c.expiry().is_some(), "{path}");
            assert_eq!(results.stats.stats.updated_card, 1, "{path}");
            assert!(
                !format!("{results:?}").contains(card),
                "{path}: Debug leaks the card"
            );
        }
    }
    let results = GetSubscriptionResults::decode(&ok_response(
        "amex/subscription_results_schema_response.json",
    ))
    .unwrap();
    assert!(results.cards[0].card.to_pan().is_err());
}

#[test]
fn amex_data_schema_without_cards() {
    let results =
        GetSubscriptionResults::decode(&ok_response("amex/data_schema_response.json")).unwrap();
    assert!(results.cards.is_empty());
    assert_eq!(results.stats.stats.number_submitted, 1);
}

#[test]
fn stats_schemas_of_both_spellings() {
    let s: ReportedStats = serde_json::from_slice(&data("universal/stats_schema.json")).unwrap();
    assert_eq!(s, ReportedStats::default());
    let s: ReportedStats = serde_json::from_slice(&data("amex/stats_schema.json")).unwrap();
    assert_eq!(s, ReportedStats::default());
}

// ----- webhooks -------------------------------------------------------------------------------

#[test]
fn enrollment_webhook_without_trigger_id() {
    let event = decode_webhook(&data("universal/webhook_enrollment_complete.json")).unwrap();
    let WebhookEvent::EnrollmentComplete(e) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(e.merchant_id.as_deref(), Some("bqgbm86g10l2fm2bv7n0"));
    assert_eq!(
        event.dedup_key().as_deref(),
        Some("enrollment:bqgbm86g10l2fm2bv7n0")
    );
}

#[test]
fn batch_available_webhook_with_a_repeated_key() {
    let event = decode_webhook(&data("universal/webhook_batch_available.json")).unwrap();
    let WebhookEvent::BatchAvailable(e) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(e.batch_id.as_deref(), Some("b9ec0c1776655524350"));
    assert_eq!(e.card_stats.mastercard, 8);
    let s = &e.stats.stats;
    // "closed": 0 then "closed": 1 — the counts add up to number_submitted only with 1.
    assert_eq!(s.closed, 1);
    assert_eq!(
        s.updated_expiry + s.updated_card + s.no_change + s.no_match + s.closed,
        s.number_submitted
    );
    assert_eq!(
        event.event_id(),
        Some("c7a8da62-473d-4153-91d6-d6fddd3d7252")
    );
    assert_eq!(e.message.as_deref(), Some(""));
}

#[test]
fn amex_update_webhooks_with_both_spellings() {
    for path in [
        "universal/webhook_amex_update.json",
        "amex/webhook_amex_update.json",
    ] {
        let event = decode_webhook(&data(path)).unwrap();
        let WebhookEvent::AmexUpdate(e) = &event else {
            panic!("{event:?}")
        };
        assert_eq!(e.stats.stats.closed, 1, "{path}");
        assert_eq!(e.stats.stats.number_submitted, 8, "{path}");
        assert_eq!(
            event.event_id(),
            Some("46d91344-cc41-4922-b00f-c40226b548a4")
        );
    }
}

#[test]
fn batch_error_webhook() {
    let event = decode_webhook(&data("universal/webhook_batch_error.json")).unwrap();
    let WebhookEvent::BatchError(e) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(
        (e.source.as_deref(), e.error_count),
        (Some("Validation"), 3)
    );
    assert_eq!(
        e.message.as_deref(),
        Some("3 errors occurred in during the batch validation process")
    );
}

// ----- the OpenAPI description ----------------------------------------------------------------

/// Every endpoint this crate implements is in `docs/openapi.yaml`, under its path and method.
#[test]
fn openapi_describes_every_endpoint() {
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.yaml"
    ))
    .unwrap();
    let endpoints = [
        (CreateBatch::METHOD, CreateBatch::PATH),
        (GetBatch::METHOD, GetBatch::PATH),
        (GetBatchResults::METHOD, GetBatchResults::PATH),
        (Subscribe::METHOD, Subscribe::PATH),
        (Unsubscribe::METHOD, Unsubscribe::PATH),
        (GetSubscriptionResults::METHOD, GetSubscriptionResults::PATH),
        (EnrollMerchant::METHOD, EnrollMerchant::PATH),
        (GetMerchant::METHOD, GetMerchant::PATH),
        (SetWebhooks::METHOD, SetWebhooks::PATH),
        (SetWebhooksFlat::METHOD, SetWebhooksFlat::PATH),
        (SetAmexWebhook::METHOD, SetAmexWebhook::PATH),
    ];
    for (method, path) in endpoints {
        let start = spec
            .find(&format!("\n  {path}:\n"))
            .unwrap_or_else(|| panic!("{path} is not in docs/openapi.yaml"));
        let block = &spec[start + 1..];
        let end = block[1..]
            .find("\n  /")
            .or_else(|| block.find("\nwebhooks:"))
            .unwrap_or(block.len());
        let method = method.as_str().to_ascii_lowercase();
        assert!(
            block[..end].contains(&format!("\n    {method}:\n")),
            "{method} {path} is not in docs/openapi.yaml"
        );
    }
    for name in [
        "batchAvailable",
        "enrollmentComplete",
        "batchError",
        "amexUpdate",
    ] {
        assert!(spec.contains(&format!("\n  {name}:\n")), "webhook {name}");
    }
}

/// The server side writes the documents' examples back byte for byte: same keys, same order,
/// same values, in the spelling of the document they come from.
#[test]
fn the_server_side_reproduces_the_documents_examples() {
    use cardsync_proto::server::{self, Spelling};
    let u = Spelling::Universal;
    let a = Spelling::Amex;
    let answers: [(&str, Vec<u8>); 7] = [
        (
            "universal/batch_results_response.json",
            server::results(
                &GetBatchResults::decode(&ok_response("universal/batch_results_response.json"))
                    .unwrap(),
                u,
            ),
        ),
        (
            "universal/batch_status_response.json",
            server::batch_info(
                &GetBatch::decode(&ok_response("universal/batch_status_response.json")).unwrap(),
                u,
            ),
        ),
        (
            "universal/merchant_enroll_response.json",
            server::merchant_enrolled(
                &EnrollMerchant::decode(&ok_response("universal/merchant_enroll_response.json"))
                    .unwrap(),
                u,
            ),
        ),
        (
            "universal/generic_response.json",
            server::ack(
                &Subscribe::decode(&ok_response("universal/generic_response.json")).unwrap(),
                u,
            ),
        ),
        (
            "amex/subscription_results_response.json",
            server::results(
                &GetSubscriptionResults::decode(&ok_response(
                    "amex/subscription_results_response.json",
                ))
                .unwrap(),
                a,
            ),
        ),
        (
            "amex/generic_response.json",
            server::ack(
                &Subscribe::decode(&ok_response("amex/generic_response.json")).unwrap(),
                a,
            ),
        ),
        (
            "universal/webhook_batch_error.json",
            server::webhook(
                &decode_webhook(&data("universal/webhook_batch_error.json")).unwrap(),
                u,
            ),
        ),
    ];
    for (path, encoded) in answers {
        assert_eq!(
            String::from_utf8(encoded).unwrap(),
            minified(&data(path)),
            "{path}"
        );
    }
    let enrollment = decode_webhook(&data("universal/webhook_enrollment_complete.json")).unwrap();
    assert_eq!(
        String::from_utf8(server::webhook(&enrollment, u)).unwrap(),
        minified(&data("universal/webhook_enrollment_complete.json"))
    );
    // The examples that repeat the closed counter are the Amex spelling's layout, with the
    // Universal document's numeric `trigger_id` and `message`.
    for path in [
        "universal/webhook_batch_available.json",
        "amex/webhook_amex_update.json",
    ] {
        let event = decode_webhook(&data(path)).unwrap();
        let trigger = event.trigger().unwrap().id();
        let written = String::from_utf8(server::webhook(&event, a))
            .unwrap()
            .replace(
                &format!("\"trigger_id\":\"{trigger}\""),
                &format!("\"trigger_id\":{trigger}"),
            )
            .replace("\"msg\":", "\"message\":");
        assert_eq!(written, minified(&data(path)), "{path}");
    }
}
