//! The dashboard's side of the emulator over real HTTP on loopback: the page and its token,
//! what `GET /_sandbox/overview` shows (masked), the request log with its faults, the delivery
//! attempts, the issuer steering endpoint, and the refusals that keep other sites from steering.
//! (The page itself is tested in Chromium: tests/browser/.) Every server started here is
//! stopped, and every wait is bounded.

use std::time::Duration;

use cardsync_core::SANDBOX_TEST_CARDS;
use cardsync_proto::*;
use cardsync_sandbox::{Faults, Sandbox, Settings};

mod common;

use common::{HttpClient, client, dead_url};

async fn send_raw(client: &HttpClient, request: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
    common::send_raw(client, request)
        .await
        .expect("an answer in time")
}

async fn start() -> (Sandbox, Config) {
    let mut settings = Settings::default();
    settings.complete_after = Duration::from_secs(60);
    let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::new(BaseUrl::parse(sandbox.base_url()).unwrap())
        .with_merchant_key(MerchantKey::new(&sandbox.settings().merchant_key).unwrap());
    (sandbox, config)
}

async fn call<E: Endpoint>(http: &HttpClient, config: &Config, endpoint: &E) -> E::Output {
    E::decode(&send_raw(http, endpoint.encode(config).unwrap()).await).unwrap()
}

fn get(sandbox: &Sandbox, path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(format!("{}{path}", sandbox.base_url()))
        .body(Vec::new())
        .unwrap()
}

fn post(sandbox: &Sandbox, path: &str, body: &str) -> http::Request<Vec<u8>> {
    http::Request::post(format!("{}{path}", sandbox.base_url()))
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
        .unwrap()
}

async fn overview(http: &HttpClient, sandbox: &Sandbox) -> (String, serde_json::Value) {
    let answer = send_raw(http, get(sandbox, "/_sandbox/overview")).await;
    assert_eq!(answer.status(), 200);
    let text = String::from_utf8(answer.body().clone()).unwrap();
    let value = serde_json::from_str(&text).unwrap();
    (text, value)
}

/// The page's token, read from the page as the browser does.
async fn page_token(http: &HttpClient, sandbox: &Sandbox) -> String {
    let page = send_raw(http, get(sandbox, "/")).await;
    assert_eq!(page.status(), 200);
    let page = String::from_utf8(page.body().clone()).unwrap();
    let at = page
        .find("name=\"cardsync-sandbox-token\" content=\"")
        .unwrap();
    let rest = &page[at + "name=\"cardsync-sandbox-token\" content=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn the_overview_shows_batches_subscriptions_and_issuer_cards_masked() {
    let (sandbox, config) = start().await;
    let http = client();
    let secret = "0123456789abcdefSECRET";
    call(
        &http,
        &config,
        &SetWebhooks::new().with(
            Trigger::BatchAvailable,
            format!("http://127.0.0.1:9/hooks/{secret}"),
        ),
    )
    .await;
    let created = call(
        &http,
        &config,
        &cardsync_sandbox::fixtures::documented_batch(),
    )
    .await;
    let se = cardsync_core::SeNumber::parse("1234567890").unwrap();
    let subscription =
        Subscribe::new(cardsync_sandbox::fixtures::documented_subscription(&se)).unwrap();
    call(&http, &config, &subscription).await;

    let (_, pending) = overview(&http, &sandbox).await;
    assert_eq!(pending["batches"][0]["batch_id"], created.batch_id.as_str());
    assert_eq!(pending["batches"][0]["state"], "pending");
    assert_eq!(pending["batches"][0]["brands"]["visa"], 6);
    assert_eq!(pending["batches"][0]["results"], serde_json::json!([]));
    assert_eq!(pending["subscriptions_total"], 3);
    assert_eq!(pending["amex_pending"][0]["cards"], 3);
    assert_eq!(
        pending["merchants"][0]["webhooks"][0]["url"],
        "http://127.0.0.1:9/hooks/…"
    );

    // An issuer card, terminated as lost from the dashboard's endpoint.
    let issuer_card = "4111111111111111";
    let registered = send_raw(
        &http,
        post(
            &sandbox,
            "/_sandbox/issuer/cards",
            &format!(r#"{{"card":"{issuer_card}","exp":"05/27"}}"#),
        ),
    )
    .await;
    let registered: serde_json::Value = serde_json::from_slice(registered.body()).unwrap();
    let card_id = registered["card_id"].as_str().unwrap().to_owned();
    let path = format!("/_sandbox/issuer/cards/{card_id}/status");
    let changed = send_raw(
        &http,
        post(
            &sandbox,
            &path,
            r#"{"card_status":"TERMINATED","reason":"LOS"}"#,
        ),
    )
    .await;
    assert_eq!(changed.status(), 200);
    let changed: serde_json::Value = serde_json::from_slice(changed.body()).unwrap();
    assert_eq!(changed["status"], "TERMINATED");
    assert_eq!(changed["reason_description"], "Card reported lost");
    assert_eq!(changed["merchants_get"]["status"], "updated_card");
    assert_eq!(changed["card"], "411111******1111");

    sandbox.advance(Duration::from_secs(61));
    let (text, done) = overview(&http, &sandbox).await;
    let batch = &done["batches"][0];
    assert_eq!(batch["state"], "completed");
    assert_eq!(batch["results_total"], 16);
    assert_eq!(batch["stats"]["updated_card"], 3);
    assert_eq!(batch["results"][0]["card"], "445701******1115");
    assert_eq!(done["amex_events"][0]["results_total"], 3);
    let cards = done["issuer_cards"].as_array().unwrap();
    assert_eq!(cards.len(), 2, "the card and its reissue");
    assert_eq!(cards[1]["reissued_from"], card_id.as_str());
    let reasons = done["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 31, "every documented reason code");
    let los = reasons.iter().find(|r| r["code"] == "LOS").unwrap();
    assert_eq!(los["merchants_get"], "updated_card");
    assert_eq!(done["counters"]["POST /v2/batch"]["cards"], 16);

    // No card number, replacement number or webhook secret anywhere in it.
    let mut numbers: Vec<String> = SANDBOX_TEST_CARDS
        .iter()
        .map(|c| c.card.to_owned())
        .collect();
    numbers.push(issuer_card.to_owned());
    let replacements: Vec<String> = numbers
        .iter()
        .map(|c| cardsync_sandbox::replacement_card(c))
        .collect();
    for number in numbers.iter().chain(&replacements) {
        assert!(
            !text.contains(number.as_str()),
            "a full card number in the overview"
        );
    }
    assert!(!text.contains(secret));
    assert!(!text.contains(&sandbox.settings().merchant_key));
    assert!(!text.contains(&sandbox.settings().issuer_token));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_request_log_shows_injected_faults_and_the_retries_after_them() {
    let (sandbox, config) = start().await;
    let http = client();
    let created = call(
        &http,
        &config,
        &cardsync_sandbox::fixtures::documented_batch(),
    )
    .await;
    let mut faults = Faults::default();
    faults.error_rate = 1.0;
    faults.limit = Some(1);
    faults.paths = vec!["/v2/batch".to_owned()];
    sandbox.set_faults(faults);
    let status = GetBatch::new(&created.batch_id);
    let first = send_raw(&http, status.encode(&config).unwrap()).await;
    assert_eq!(first.status(), 503);
    let second = send_raw(&http, status.encode(&config).unwrap()).await;
    assert_eq!(second.status(), 200);
    let log = sandbox.requests();
    let summary: Vec<_> = log
        .iter()
        .map(|r| {
            (
                r.number,
                r.method.as_str(),
                r.path.as_str(),
                r.status,
                r.fault,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "POST", "/v2/batch", 200, None),
            (
                2,
                "GET",
                "/v2/batch",
                503,
                Some("error status before handling")
            ),
            (3, "GET", "/v2/batch", 200, None),
        ]
    );
    // The overview lists them newest first.
    let (_, o) = overview(&http, &sandbox).await;
    assert_eq!(o["requests"][0]["number"], 3);
    assert_eq!(o["requests_total"], 3);
    assert_eq!(o["faults_injected"], 1);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn delivery_attempts_are_kept_with_their_answers() {
    let (sandbox, config) = start().await;
    let http = client();
    // Nothing listens here: every attempt fails, five in all, with a retry time between.
    let url = dead_url().await;
    call(
        &http,
        &config,
        &SetWebhooks::new().with(Trigger::BatchAvailable, &url),
    )
    .await;
    call(
        &http,
        &config,
        &cardsync_sandbox::fixtures::documented_batch(),
    )
    .await;
    sandbox.advance(Duration::from_secs(61));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut saw_a_retry_time = false;
    let delivery = loop {
        let log = sandbox.deliveries();
        if let Some(d) = log.first() {
            saw_a_retry_time |=
                d.state == "pending" && d.next_attempt_ms.is_some() && !d.history.is_empty();
            if d.state == "failed" {
                break d.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        saw_a_retry_time,
        "a failed attempt shows when the next one is due"
    );
    assert_eq!(delivery.history.len(), 5);
    assert_eq!(delivery.next_attempt_ms, None);
    for (i, attempt) in delivery.history.iter().enumerate() {
        assert_eq!(attempt.attempt, i as u32 + 1);
        assert_eq!(attempt.status, None);
        assert!(
            attempt
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("request failed"))
        );
    }
    assert!(
        delivery
            .history
            .windows(2)
            .all(|w| w[0].at_ms <= w[1].at_ms)
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn browsers_need_the_page_token_to_steer_and_a_loopback_host_name() {
    let (sandbox, _) = start().await;
    let http = client();
    let clock = |v: &serde_json::Value| v["advanced_ms"].as_u64().unwrap();

    // A cross-site request, as another page in the browser would send it.
    let mut cross_site = post(&sandbox, "/_sandbox/clock/advance", r#"{"seconds": 3600}"#);
    cross_site
        .headers_mut()
        .insert("origin", "https://elsewhere.example".parse().unwrap());
    let refused = send_raw(&http, cross_site).await;
    assert_eq!(refused.status(), 403);
    let mut faults = post(&sandbox, "/_sandbox/faults", r#"{"error_rate": 1}"#);
    faults
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    assert_eq!(send_raw(&http, faults).await.status(), 403);
    let (_, o) = overview(&http, &sandbox).await;
    assert_eq!(clock(&o), 0);
    assert_eq!(o["faults"]["error_rate"], 0.0);

    // The page's own request, with its token.
    let token = page_token(&http, &sandbox).await;
    assert_eq!(token.len(), 32);
    let mut own = post(&sandbox, "/_sandbox/clock/advance", r#"{"seconds": 60}"#);
    own.headers_mut()
        .insert("origin", sandbox.base_url().parse().unwrap());
    own.headers_mut()
        .insert("x-cardsync-sandbox-token", token.parse().unwrap());
    assert_eq!(send_raw(&http, own).await.status(), 200);
    let (_, o) = overview(&http, &sandbox).await;
    assert_eq!(clock(&o), 60_000);

    // Clients that are not browsers steer as before.
    let plain = post(&sandbox, "/_sandbox/clock/advance", r#"{"seconds": 1}"#);
    assert_eq!(send_raw(&http, plain).await.status(), 200);

    // A host name that is not loopback (DNS rebinding) gets neither the page nor the overview.
    let mut rebound = get(&sandbox, "/");
    rebound
        .headers_mut()
        .insert("host", "attacker.example".parse().unwrap());
    assert_eq!(send_raw(&http, rebound).await.status(), 403);
    let mut rebound = get(&sandbox, "/_sandbox/overview");
    rebound
        .headers_mut()
        .insert("host", "attacker.example".parse().unwrap());
    rebound
        .headers_mut()
        .insert("sec-fetch-site", "same-origin".parse().unwrap());
    assert_eq!(send_raw(&http, rebound).await.status(), 403);

    // The page forbids framing and loading from elsewhere; a new run has a new token.
    let page = send_raw(&http, get(&sandbox, "/")).await;
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let script = send_raw(&http, get(&sandbox, "/dashboard.js")).await;
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let (other, _) = start().await;
    assert_ne!(page_token(&http, &other).await, token);
    other.shutdown().await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_issuer_steering_endpoint_refuses_what_the_platform_refuses() {
    let (sandbox, _) = start().await;
    let http = client();
    let unknown = post(
        &sandbox,
        "/_sandbox/issuer/cards/nope/status",
        r#"{"card_status":"SUSPENDED"}"#,
    );
    assert_eq!(send_raw(&http, unknown).await.status(), 404);
    let registered = send_raw(
        &http,
        post(
            &sandbox,
            "/_sandbox/issuer/cards",
            r#"{"card":"4111111111111111","exp":"05/27"}"#,
        ),
    )
    .await;
    let registered: serde_json::Value = serde_json::from_slice(registered.body()).unwrap();
    let path = format!(
        "/_sandbox/issuer/cards/{}/status",
        registered["card_id"].as_str().unwrap()
    );
    for bad in [
        r#"{"card_status":"LOST"}"#,
        r#"{"card_status":"TERMINATED","reason":"XYZ"}"#,
        r#"{"card_status":"TERMINATED","extra":1}"#,
        "not json",
    ] {
        assert_eq!(
            send_raw(&http, post(&sandbox, &path, bad)).await.status(),
            400,
            "{bad}"
        );
    }
    let suspend = send_raw(
        &http,
        post(
            &sandbox,
            &path,
            r#"{"card_status":"SUSPENDED","reason":"SUS"}"#,
        ),
    )
    .await;
    let suspended: serde_json::Value = serde_json::from_slice(suspend.body()).unwrap();
    assert_eq!(suspended["status"], "SUSPENDED");
    assert_eq!(
        suspended["merchants_get"],
        serde_json::Value::Null,
        "a suspension sends no news"
    );
    let close = send_raw(
        &http,
        post(
            &sandbox,
            &path,
            r#"{"card_status":"TERMINATED","reason":"REQ"}"#,
        ),
    )
    .await;
    let closed: serde_json::Value = serde_json::from_slice(close.body()).unwrap();
    assert_eq!(closed["merchants_get"]["status"], "closed");
    let again = send_raw(&http, post(&sandbox, &path, r#"{"card_status":"ACTIVE"}"#)).await;
    assert_eq!(again.status(), 422, "TERMINATED is final");
    sandbox.shutdown().await;
}
