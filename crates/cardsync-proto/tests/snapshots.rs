//! Every encoded request, rendered as canonical text (method, URI, sorted headers with the key
//! redacted, pretty JSON body) and pinned with insta. A change to the wire shows up here.

use cardsync_core::{Expiry, Pan, SeNumber};
use cardsync_proto::*;

fn config() -> Config {
    Config::new(BaseUrl::sandbox())
        .with_merchant_key(MerchantKey::new("merchant-secret").unwrap())
        .with_partner_key(PartnerKey::new("partner-secret").unwrap())
}

/// Renders a request as canonical text. The key is replaced by its scope, after checking that
/// it is marked sensitive; the crate version is replaced so that releases do not churn.
fn render(request: &http::Request<Vec<u8>>) -> String {
    let mut out = format!("{} {}\n", request.method(), request.uri());
    let mut headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let v = value.to_str().unwrap().to_owned();
            let v = match name.as_str() {
                "authorization" => {
                    assert!(value.is_sensitive(), "the key must be marked sensitive");
                    match v.as_str() {
                        "merchant-secret" => "[merchant key]".to_owned(),
                        "partner-secret" => "[partner key]".to_owned(),
                        other => panic!("unexpected key {other:?}"),
                    }
                }
                "user-agent" => v.replace(env!("CARGO_PKG_VERSION"), "[version]"),
                _ => v,
            };
            (name.as_str().to_owned(), v)
        })
        .collect();
    headers.sort();
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\n"));
    }
    if !request.body().is_empty() {
        let body: serde_json::Value = serde_json::from_slice(request.body()).unwrap();
        out.push('\n');
        out.push_str(&serde_json::to_string_pretty(&body).unwrap());
        out.push('\n');
    }
    out
}

fn check(name: &str, request: Result<http::Request<Vec<u8>>, EncodeError>) {
    let request = request.unwrap_or_else(|e| panic!("{name}: {e}"));
    insta::assert_snapshot!(name, render(&request));
}

fn pan(s: &str) -> Pan {
    Pan::parse(s).unwrap()
}

fn exp(s: &str) -> Expiry {
    Expiry::parse(s).unwrap()
}

fn amex_cards() -> Vec<SubscriptionCard> {
    let se = SeNumber::parse("1234567890").unwrap();
    vec![
        SubscriptionCard::new(se.clone(), "amex-1", pan("342132335566772"), exp("12/28")),
        SubscriptionCard::new(se, "amex-2", pan("376655111122997"), exp("12/28")),
    ]
}

#[test]
fn create_batch() {
    let cards = vec![
        BatchCard::new("sub-1", pan("4457010000000009"), exp("01/50")),
        BatchCard::new("quote\"and\\slash", pan("5112010000000003"), exp("2/2050")),
        BatchCard::new("ünïcödé", pan("6011 0100 0000 0003"), exp("0350")),
    ];
    check(
        "create_batch",
        CreateBatch::new(cards).unwrap().encode(&config()),
    );
}

#[test]
fn get_batch() {
    check(
        "get_batch",
        GetBatch::new("b9ec0c17/76655&524350").encode(&config()),
    );
}

#[test]
fn get_batch_results() {
    check(
        "get_batch_results",
        GetBatchResults::new("b1").encode(&config()),
    );
    check(
        "get_batch_results_with_event",
        GetBatchResults::new("b1")
            .with_event_id("c7a8da62-473d-4153-91d6-d6fddd3d7252")
            .encode(&config()),
    );
}

#[test]
fn subscribe_and_unsubscribe() {
    check(
        "subscribe",
        Subscribe::new(amex_cards()).unwrap().encode(&config()),
    );
    check(
        "unsubscribe",
        Unsubscribe::new(amex_cards()).unwrap().encode(&config()),
    );
}

#[test]
fn get_subscription_results() {
    check(
        "get_subscription_results",
        GetSubscriptionResults::new("46d91344-cc41-4922-b00f-c40226b548a4").encode(&config()),
    );
}

#[test]
fn merchants() {
    let merchant: MerchantEnrollment = serde_json::from_slice(include_bytes!(
        "data/universal/merchant_enroll_request.json"
    ))
    .unwrap();
    check(
        "enroll_merchant",
        EnrollMerchant::new(merchant).encode(&config()),
    );
    check(
        "get_merchant",
        GetMerchant::new("bqgbm86g10l2fm2bv7n0").encode(&config()),
    );
}

#[test]
fn webhooks() {
    check(
        "set_webhooks",
        SetWebhooks::new()
            .with(
                Trigger::BatchAvailable,
                "https://billing.example/hooks/s3cr3t/batch",
            )
            .with(
                Trigger::EnrollmentComplete,
                "https://billing.example/hooks/s3cr3t/enrolled",
            )
            .with(
                Trigger::BatchError,
                "https://billing.example/hooks/s3cr3t/error",
            )
            .with(
                Trigger::AmexUpdate,
                "https://billing.example/hooks/s3cr3t/amex",
            )
            .encode(&config()),
    );
    check(
        "set_webhooks_signed_by_partner",
        SetWebhooks::new()
            .with(
                Trigger::EnrollmentComplete,
                "https://partner.example/hooks/s3cr3t/enrolled",
            )
            .signed_by(KeyScope::Partner)
            .encode(&config()),
    );
    let mut flat = SetWebhooksFlat::default();
    flat.batch_completion_webhook = Some("https://billing.example/hooks/batch".into());
    flat.amex_update_webhook = Some("https://billing.example/hooks/amex".into());
    check("set_webhooks_flat", flat.encode(&config()));
    check(
        "set_amex_webhook",
        SetAmexWebhook::new("https://billing.example/hooks/amex").encode(&config()),
    );
}

#[test]
fn base_url_with_a_path_prefix() {
    let config = Config::new(BaseUrl::parse("http://127.0.0.1:8787/cardsync/").unwrap())
        .with_merchant_key(MerchantKey::new("merchant-secret").unwrap());
    check("local_emulator_prefix", GetBatch::new("b1").encode(&config));
}
