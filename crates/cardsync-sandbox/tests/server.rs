//! The emulator over real HTTP on loopback: a batch flow with its webhook received by a test
//! listener, delivery retries, the control endpoints, and fault injection. Every server started
//! here is stopped, and every wait is bounded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cardsync_core::{Brand, SANDBOX_TEST_CARDS};
use cardsync_proto::*;
use cardsync_sandbox::{Faults, Sandbox, Settings};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

mod common;

use common::{HttpClient, client, dead_url, send_raw};

async fn send<E: Endpoint>(
    client: &HttpClient,
    config: &Config,
    endpoint: &E,
) -> Result<E::Output, DecodeError> {
    let response = send_raw(client, endpoint.encode(config).unwrap())
        .await
        .expect("a response");
    E::decode(&response)
}

/// A webhook receiver on loopback that answers 500 to the first delivery it gets and 200 to
/// the rest, and hands every body it gets to the test.
struct Listener {
    url: String,
    bodies: mpsc::UnboundedReceiver<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

async fn listener() -> Listener {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", socket.local_addr().unwrap());
    let (tx, bodies) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(0u32));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = socket.accept().await else {
                return;
            };
            let (tx, seen) = (tx.clone(), seen.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (tx, seen) = (tx.clone(), seen.clone());
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|c| c.to_bytes().to_vec())
                            .unwrap_or_default();
                        let first = {
                            let mut n = seen.lock().unwrap();
                            *n += 1;
                            *n == 1
                        };
                        let status = if first { 500 } else { 200 };
                        if !first {
                            let _ = tx.send(body);
                        }
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Listener { url, bodies, task }
}

async fn start() -> (Sandbox, Config) {
    let mut settings = Settings::default();
    settings.complete_after = Duration::from_millis(200);
    let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::new(BaseUrl::parse(sandbox.base_url()).unwrap())
        .with_merchant_key(MerchantKey::new(&sandbox.settings().merchant_key).unwrap());
    (sandbox, config)
}

fn test_batch() -> CreateBatch {
    cardsync_sandbox::fixtures::documented_batch()
}

#[tokio::test]
async fn batch_flow_with_a_webhook_over_loopback() {
    let (sandbox, config) = start().await;
    let mut hooks = listener().await;
    let http = client();
    send(
        &http,
        &config,
        &SetWebhooks::new().with(Trigger::BatchAvailable, &hooks.url),
    )
    .await
    .unwrap();
    let created = send(&http, &config, &test_batch()).await.unwrap();

    // The listener refuses the first delivery; the emulator retries.
    let body = tokio::time::timeout(Duration::from_secs(10), hooks.bodies.recv())
        .await
        .expect("a webhook in time")
        .unwrap();
    let event = decode_webhook(&body).unwrap();
    let WebhookEvent::BatchAvailable(available) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(
        available.batch_id.as_deref(),
        Some(created.batch_id.as_str())
    );
    // The listener hands the body over before its answer reaches the emulator: wait for the log.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = sandbox.deliveries();
        if log.first().is_some_and(|d| d.state != "pending")
            || tokio::time::Instant::now() > deadline
        {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].state, log[0].attempts, log[0].last_status),
        ("delivered", 2, Some(200))
    );
    let answers: Vec<_> = log[0]
        .history
        .iter()
        .map(|a| (a.attempt, a.status))
        .collect();
    assert_eq!(answers, [(1, Some(500)), (2, Some(200))]);
    assert_eq!(log[0].next_attempt_ms, None);

    let results = send(
        &http,
        &config,
        &GetBatchResults::new(&created.batch_id).with_event_id(event.event_id().unwrap()),
    )
    .await
    .unwrap();
    let expected: Vec<_> = SANDBOX_TEST_CARDS
        .iter()
        .filter(|c| c.brand != Brand::AmericanExpress)
        .map(|c| Some(c.result.clone()))
        .collect();
    let got: Vec<_> = results.cards.iter().map(|c| c.status.clone()).collect();
    assert_eq!(got, expected);

    // Control endpoints over HTTP.
    let counters = send_raw(
        &http,
        http::Request::get(format!("{}/_sandbox/counters", sandbox.base_url()))
            .body(Vec::new())
            .unwrap(),
    )
    .await
    .unwrap();
    let counters: serde_json::Value = serde_json::from_slice(counters.body()).unwrap();
    assert_eq!(counters["endpoints"]["POST /v2/batch"]["cards"], 16);
    assert_eq!(counters["endpoints"]["POST /v2/batch"]["repeats"], 0);
    let deliveries = send_raw(
        &http,
        http::Request::get(format!("{}/_sandbox/deliveries", sandbox.base_url()))
            .body(Vec::new())
            .unwrap(),
    )
    .await
    .unwrap();
    let deliveries: serde_json::Value = serde_json::from_slice(deliveries.body()).unwrap();
    assert_eq!(deliveries["deliveries"][0]["state"], "delivered");

    hooks.task.abort();
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_test_clock_completes_batches_and_purges_results() {
    let mut settings = Settings::default();
    settings.complete_after = Duration::from_secs(3600);
    let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::new(BaseUrl::parse(sandbox.base_url()).unwrap())
        .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap());
    let http = client();
    let created = send(&http, &config, &test_batch()).await.unwrap();
    assert_eq!(
        send(&http, &config, &GetBatch::new(&created.batch_id))
            .await
            .unwrap()
            .status,
        BatchState::Pending
    );
    let advance = |secs: u64| {
        http::Request::post(format!("{}/_sandbox/clock/advance", sandbox.base_url()))
            .body(format!("{{\"seconds\":{secs}}}").into_bytes())
            .unwrap()
    };
    assert_eq!(send_raw(&http, advance(3600)).await.unwrap().status(), 200);
    assert_eq!(
        send(&http, &config, &GetBatch::new(&created.batch_id))
            .await
            .unwrap()
            .status,
        BatchState::Completed
    );
    send_raw(&http, advance(10 * 24 * 3600)).await.unwrap();
    let gone = send(&http, &config, &GetBatch::new(&created.batch_id))
        .await
        .unwrap_err();
    assert_eq!(gone.status(), Some(http::StatusCode::NOT_FOUND));
    let bad = http::Request::post(format!("{}/_sandbox/clock/advance", sandbox.base_url()))
        .body(b"{}".to_vec())
        .unwrap();
    assert_eq!(send_raw(&http, bad).await.unwrap().status(), 400);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn fault_injection() {
    let (sandbox, config) = start().await;
    let http = client();
    let mut faults = Faults::default();
    faults.error_rate = 1.0;
    faults.statuses = vec![503, 429];
    faults.retry_after = Some(1);
    sandbox.set_faults(faults);
    for expected in [503, 429] {
        let response = send_raw(&http, GetBatch::new("b").encode(&config).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
        assert_eq!(response.headers()["retry-after"], "1");
    }
    // A dropped connection mid-body: the client sees an error, not a short body.
    let mut faults = Faults::default();
    faults.drop_rate = 1.0;
    sandbox.set_faults(faults);
    let dropped = send_raw(&http, GetBatch::new("b").encode(&config).unwrap()).await;
    assert!(dropped.is_err(), "{dropped:?}");
    // Set and cleared over HTTP too.
    let set = http::Request::post(format!("{}/_sandbox/faults", sandbox.base_url()))
        .body(br#"{"error_rate":1.0,"statuses":[500],"paths":["/v2/batch"]}"#.to_vec())
        .unwrap();
    assert_eq!(send_raw(&http, set).await.unwrap().status(), 200);
    assert_eq!(
        send_raw(&http, test_batch().encode(&config).unwrap())
            .await
            .unwrap()
            .status(),
        500
    );
    let clear = http::Request::delete(format!("{}/_sandbox/faults", sandbox.base_url()))
        .body(Vec::new())
        .unwrap();
    assert_eq!(send_raw(&http, clear).await.unwrap().status(), 200);
    assert!(send(&http, &config, &test_batch()).await.is_ok());
    // An injected 500 on batch creation never reached the emulator: nothing was counted twice.
    assert_eq!(sandbox.counters()["POST /v2/batch"].cards, 16);
    // After handling: the batch is processed and the answer replaced. A client resending it
    // would show in the counters as repeats; here it is sent once more on purpose.
    let set = http::Request::post(format!("{}/_sandbox/faults", sandbox.base_url()))
        .body(
            br#"{"error_rate":1.0,"statuses":[500],"paths":["/v2/batch"],"when":"after"}"#.to_vec(),
        )
        .unwrap();
    assert_eq!(send_raw(&http, set).await.unwrap().status(), 200);
    assert_eq!(
        send_raw(&http, test_batch().encode(&config).unwrap())
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(sandbox.counters()["POST /v2/batch"].cards, 32);
    assert_eq!(sandbox.counters()["POST /v2/batch"].repeats, 16);
    sandbox.set_faults(Faults::default());
    let invalid = http::Request::post(format!("{}/_sandbox/faults", sandbox.base_url()))
        .body(br#"{"error_rate":2}"#.to_vec())
        .unwrap();
    assert_eq!(send_raw(&http, invalid).await.unwrap().status(), 400);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn deliveries_to_a_dead_listener_fail_after_bounded_retries() {
    let (sandbox, config) = start().await;
    let http = client();
    // A port that was free a moment ago: nothing listens there.
    let url = dead_url().await;
    send(
        &http,
        &config,
        &SetWebhooks::new().with(Trigger::BatchAvailable, &url),
    )
    .await
    .unwrap();
    send(&http, &config, &test_batch()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let log = sandbox.deliveries();
        if log.first().is_some_and(|d| d.state == "failed") {
            assert_eq!(log[0].attempts, 5);
            assert!(log[0].last_error.is_some());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sandbox.shutdown().await;
}

/// A webhook receiver that answers 200 to everything and hands every body to the test.
async fn plain_listener() -> Listener {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", socket.local_addr().unwrap());
    let (tx, bodies) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = socket.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|c| c.to_bytes().to_vec())
                            .unwrap_or_default();
                        let _ = tx.send(body);
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Listener { url, bodies, task }
}

async fn next_event(hooks: &mut Listener) -> WebhookEvent {
    let body = tokio::time::timeout(Duration::from_secs(10), hooks.bodies.recv())
        .await
        .expect("a webhook in time")
        .unwrap();
    decode_webhook(&body).unwrap()
}

#[tokio::test]
async fn enrollment_then_a_batch_for_the_new_merchant_over_loopback() {
    let (sandbox, _) = start().await;
    let mut hooks = plain_listener().await;
    let http = client();
    let base = BaseUrl::parse(sandbox.base_url()).unwrap();
    let partner =
        Config::new(base.clone()).with_partner_key(PartnerKey::new("sandbox_master_key").unwrap());
    // The documents' order: webhooks first (partner key), then enrollment.
    send(
        &http,
        &partner,
        &SetWebhooks::new()
            .with(Trigger::EnrollmentComplete, &hooks.url)
            .with(Trigger::BatchAvailable, &hooks.url)
            .signed_by(KeyScope::Partner),
    )
    .await
    .unwrap();
    let merchant: MerchantEnrollment = serde_json::from_slice(include_bytes!(
        "../../cardsync-proto/tests/data/universal/merchant_enroll_request.json"
    ))
    .unwrap();
    let enrolled = send(&http, &partner, &EnrollMerchant::new(merchant.clone()))
        .await
        .unwrap();
    let WebhookEvent::EnrollmentComplete(done) = next_event(&mut hooks).await else {
        panic!()
    };
    assert_eq!(
        done.merchant_id.as_deref(),
        Some(enrolled.merchant_id.as_str())
    );
    assert_eq!(
        send(&http, &partner, &GetMerchant::new(&enrolled.merchant_id))
            .await
            .unwrap()
            .enrollment
            .as_deref(),
        Some("completed")
    );
    let dup = send(&http, &partner, &EnrollMerchant::new(merchant))
        .await
        .unwrap_err();
    assert_eq!(dup.status(), Some(http::StatusCode::CONFLICT));

    // The new merchant's batch reaches the partner's webhook, having none of its own.
    let config = Config::new(base).with_merchant_key(enrolled.api_key);
    let created = send(&http, &config, &test_batch()).await.unwrap();
    let WebhookEvent::BatchAvailable(available) = next_event(&mut hooks).await else {
        panic!()
    };
    assert_eq!(
        available.batch_id.as_deref(),
        Some(created.batch_id.as_str())
    );
    hooks.task.abort();
    sandbox.shutdown().await;
}

#[tokio::test]
async fn amex_subscription_flow_over_loopback() {
    let (sandbox, config) = start().await;
    let mut hooks = plain_listener().await;
    let http = client();
    send(&http, &config, &SetAmexWebhook::new(&hooks.url))
        .await
        .unwrap();
    let se = cardsync_core::SeNumber::parse("1234567890").unwrap();
    let cards = cardsync_sandbox::fixtures::documented_subscription(&se);
    send(&http, &config, &Subscribe::new(cards.clone()).unwrap())
        .await
        .unwrap();
    let event = next_event(&mut hooks).await;
    assert_eq!(event.trigger(), Some(Trigger::AmexUpdate));
    let results = send(
        &http,
        &config,
        &GetSubscriptionResults::new(event.event_id().unwrap()),
    )
    .await
    .unwrap();
    let statuses: Vec<_> = results
        .cards
        .iter()
        .map(|c| c.status.clone().unwrap())
        .collect();
    let expected: Vec<_> = SANDBOX_TEST_CARDS
        .iter()
        .filter(|c| c.brand == Brand::AmericanExpress)
        .map(|c| c.result.clone())
        .collect();
    assert_eq!(statuses, expected);
    assert!(
        results
            .cards
            .iter()
            .all(|c| c.se_number.as_deref() == Some("1234567890"))
    );

    // Unsubscribed pairs produce nothing more; a new subscription does.
    send(&http, &config, &Unsubscribe::new(cards.clone()).unwrap())
        .await
        .unwrap();
    send(
        &http,
        &config,
        &Subscribe::new(cards[..1].to_vec()).unwrap(),
    )
    .await
    .unwrap();
    send(
        &http,
        &config,
        &Unsubscribe::new(cards[..1].to_vec()).unwrap(),
    )
    .await
    .unwrap();
    sandbox.advance(Duration::from_secs(5));
    let extra = tokio::time::timeout(Duration::from_millis(500), hooks.bodies.recv()).await;
    assert!(extra.is_err(), "no event for unsubscribed pairs: {extra:?}");
    let missing = send(
        &http,
        &config,
        &GetSubscriptionResults::new("no-such-event"),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.status(), Some(http::StatusCode::NOT_FOUND));
    hooks.task.abort();
    sandbox.shutdown().await;
}

#[tokio::test]
async fn injected_latency_delays_answers() {
    let (sandbox, config) = start().await;
    let http = client();
    let mut faults = Faults::default();
    faults.latency_ms = 300;
    sandbox.set_faults(faults);
    let started = std::time::Instant::now();
    let answer = send_raw(&http, GetBatch::new("b").encode(&config).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn every_error_path_over_loopback() {
    let mut settings = Settings::default();
    settings.complete_after = Duration::from_secs(3600);
    let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = sandbox.base_url().to_owned();
    let config = Config::new(BaseUrl::parse(&base).unwrap())
        .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap());
    let http = client();
    let pending = send(&http, &config, &test_batch()).await.unwrap().batch_id;

    let card = r#"{"id":"a","card":"4457010000000009","exp":"01/50"}"#;
    let too_many = format!("{{\"cards\":[{}]}}", vec![card; 10_001].join(","));
    let huge = vec![b' '; 16 * 1024 * 1024 + 1];
    let merchant_key = Some("sandbox_merchant_key");
    let master_key = Some("sandbox_master_key");
    // (method, path and query, key, body, expected status, part of the expected message)
    type Case<'a> = (http::Method, String, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            http::Method::POST,
            "/v2/batch".into(),
            merchant_key,
            b"{not json".to_vec(),
            400,
            "not a card list",
        ),
        (
            http::Method::POST,
            "/v2/batch".into(),
            merchant_key,
            br#"{"cards":[]}"#.to_vec(),
            400,
            "must not be empty",
        ),
        (
            http::Method::POST,
            "/v2/batch".into(),
            merchant_key,
            too_many.into_bytes(),
            400,
            "at most 10000",
        ),
        (
            http::Method::POST,
            "/v2/batch".into(),
            merchant_key,
            br#"{"cards":[{"id":7,"card":"4457010000000009","exp":"01/50"}]}"#.to_vec(),
            400,
            "cards[0].id (line 1, column 17): expected a string",
        ),
        (
            http::Method::POST,
            "/v2/batch".into(),
            merchant_key,
            huge,
            413,
            "too large",
        ),
        (
            http::Method::GET,
            "/v2/batch?batch_id=x".into(),
            None,
            vec![],
            401,
            "unauthorized",
        ),
        (
            http::Method::GET,
            "/v2/batch?batch_id=x".into(),
            Some("wrong"),
            vec![],
            401,
            "unauthorized",
        ),
        (
            http::Method::GET,
            "/v2/batch?batch_id=x".into(),
            master_key,
            vec![],
            403,
            "merchant's key",
        ),
        (
            http::Method::POST,
            "/v2/merchant".into(),
            merchant_key,
            b"{}".to_vec(),
            403,
            "partner master key",
        ),
        (
            http::Method::GET,
            "/v2/batch".into(),
            merchant_key,
            vec![],
            400,
            "batch_id is required",
        ),
        (
            http::Method::GET,
            "/v2/batch?batch_id=nope".into(),
            merchant_key,
            vec![],
            404,
            "no batch nope",
        ),
        (
            http::Method::GET,
            format!("/v2/batch/results?batch_id={pending}"),
            merchant_key,
            vec![],
            409,
            "not complete yet",
        ),
        (
            http::Method::GET,
            format!("/v2/batch/results?batch_id={pending}&event_id=e"),
            merchant_key,
            vec![],
            404,
            "has no event",
        ),
        (
            http::Method::GET,
            "/v2/subscription/results".into(),
            merchant_key,
            vec![],
            400,
            "event_id is required",
        ),
        (
            http::Method::GET,
            "/v2/subscription/results?event_id=e".into(),
            merchant_key,
            vec![],
            404,
            "no event e",
        ),
        (
            http::Method::POST,
            "/v2/subscribe".into(),
            merchant_key,
            format!("{{\"cards\":[{card}]}}").into_bytes(),
            400,
            "not American Express",
        ),
        (
            http::Method::POST,
            "/v2/webhooks".into(),
            merchant_key,
            br#"{"webhooks":[{"trigger_id":99,"url":"x"}]}"#.to_vec(),
            400,
            "trigger_id",
        ),
        (
            http::Method::POST,
            "/v2/webhooks".into(),
            merchant_key,
            br#"{"batch_done":"x"}"#.to_vec(),
            400,
            "unknown field",
        ),
        (
            http::Method::POST,
            "/v2/webhook".into(),
            merchant_key,
            br#"{"trigger_id":23}"#.to_vec(),
            400,
            "url",
        ),
        (
            http::Method::GET,
            "/v2/merchant?merchant_id=nobody".into(),
            master_key,
            vec![],
            404,
            "no merchant",
        ),
        (
            http::Method::PUT,
            "/v2/batch".into(),
            merchant_key,
            vec![],
            405,
            "not allowed",
        ),
        (
            http::Method::GET,
            "/v3/batch".into(),
            merchant_key,
            vec![],
            404,
            "no endpoint",
        ),
        (
            http::Method::GET,
            "/_sandbox/nothing".into(),
            None,
            vec![],
            404,
            "no control endpoint",
        ),
    ];
    for (method, path, key, body, status, message) in cases {
        let mut b = http::Request::builder()
            .method(method.clone())
            .uri(format!("{base}{path}"));
        if let Some(k) = key {
            b = b.header("authorization", k);
        }
        let answer = send_raw(&http, b.body(body).unwrap()).await.unwrap();
        let text = String::from_utf8_lossy(answer.body()).into_owned();
        assert_eq!(answer.status(), status, "{method} {path}: {text}");
        assert!(
            answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{method} {path}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        assert_eq!(json["status"], "failed", "{method} {path}");
        assert!(
            json["message"].as_str().unwrap().contains(message),
            "{method} {path}: {text}"
        );
        if status == 405 {
            assert_eq!(answer.headers()["allow"], "GET, POST");
        }
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn limited_and_html_faults() {
    let (sandbox, config) = start().await;
    let http = client();
    let mut faults = Faults::default();
    faults.error_rate = 1.0;
    faults.statuses = vec![502];
    faults.limit = Some(2);
    faults.html = true;
    sandbox.set_faults(faults);
    for _ in 0..2 {
        let answer = send_raw(&http, GetBatch::new("b").encode(&config).unwrap())
            .await
            .unwrap();
        assert_eq!(answer.status(), 502);
        assert!(
            answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(String::from_utf8_lossy(answer.body()).starts_with("<!DOCTYPE html>"));
    }
    // The limit is reached: answers are normal again.
    let answer = send_raw(&http, GetBatch::new("b").encode(&config).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    sandbox.shutdown().await;
}

/// The issuer side over loopback: a card registered through the control endpoint, reported
/// lost through the platform's PATCH, comes back reissued in the next batch's results.
#[tokio::test]
async fn an_issuer_event_over_loopback_reaches_the_next_batch() {
    use cardsync_proto::issuer::platform::{
        CardEdits, IdempotencyKey, PlatformCardStatus, StatusReason, UpdateCard,
    };
    use cardsync_proto::issuer::{IssuerConfig, IssuerEndpoint};
    let (sandbox, config) = start().await;
    let http = client();
    let card = "4111111111111111";
    let register = http::Request::post(format!("{}/_sandbox/issuer/cards", sandbox.base_url()))
        .body(format!(r#"{{"card":"{card}","exp":"05/27"}}"#).into_bytes())
        .unwrap();
    let answer = send_raw(&http, register).await.unwrap();
    assert_eq!(answer.status(), 200);
    let registered: serde_json::Value = serde_json::from_slice(answer.body()).unwrap();
    assert_eq!(registered["last_four"], "1111");
    assert!(!String::from_utf8_lossy(answer.body()).contains(card));
    let card_id = registered["card_id"].as_str().unwrap().to_owned();
    // A bad registration is refused.
    let bad = http::Request::post(format!("{}/_sandbox/issuer/cards", sandbox.base_url()))
        .body(br#"{"card":"4111111111111112","exp":"05/27"}"#.to_vec())
        .unwrap();
    assert_eq!(send_raw(&http, bad).await.unwrap().status(), 400);

    let issuer = IssuerConfig::new(BaseUrl::parse(&format!("{}/v1", sandbox.base_url())).unwrap())
        .with_token(IssuerToken::new(&sandbox.settings().issuer_token).unwrap());
    let patch = UpdateCard::new(
        card_id,
        CardEdits::status(PlatformCardStatus::Terminated, StatusReason::Stolen),
        IdempotencyKey::new("loopback-1").unwrap(),
    )
    .unwrap();
    let answer = send_raw(&http, patch.encode(&issuer).unwrap())
        .await
        .unwrap();
    let issued = UpdateCard::decode(&answer).unwrap();
    assert!(issued.card_details.reissued_to_id.is_some());

    let batch = CreateBatch::new(vec![BatchCard::new(
        "sub-1",
        cardsync_core::Pan::parse(card).unwrap(),
        cardsync_core::Expiry::parse("05/27").unwrap(),
    )])
    .unwrap();
    let created = send(&http, &config, &batch).await.unwrap();
    let start = std::time::Instant::now();
    let results = loop {
        match send(
            &http,
            &config,
            &GetBatchResults::new(created.batch_id.clone()),
        )
        .await
        {
            Ok(r) => break r,
            Err(_) => {
                assert!(start.elapsed() < Duration::from_secs(10), "never completed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let row = &results.cards[0];
    assert_eq!(row.status, Some(cardsync_core::UpdateStatus::UpdatedCard));
    assert_eq!(row.card.expose(), cardsync_sandbox::replacement_card(card));
    sandbox.shutdown().await;
}
