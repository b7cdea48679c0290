//! Who the emulator answers, over real HTTP on loopback: a request addressed to another host
//! name (a DNS-rebound page) is refused on every path, the API included; an emulator other
//! machines can reach needs its token on every control request; the delivery log never shows a
//! webhook URL's secret path; webhooks go to allowed hosts only. An emulator "other machines
//! can reach" is one with `Settings::exposed` on 127.0.0.1: a test binds nothing else. Every
//! server started here is stopped, and every wait is bounded.

use std::time::Duration;

use cardsync_proto::*;
use cardsync_sandbox::{Sandbox, Settings};

mod common;

use common::{HttpClient, client};

async fn send(http: &HttpClient, request: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
    common::send_raw(http, request)
        .await
        .expect("an answer in time")
}

/// `request` addressed (`Host`) to `host`, and with a browser's headers when `browser`.
fn addressed<T>(mut request: http::Request<T>, host: &str, browser: bool) -> http::Request<T> {
    let headers = request.headers_mut();
    headers.insert("host", host.parse().unwrap());
    if browser {
        headers.insert("origin", format!("http://{host}").parse().unwrap());
        headers.insert("sec-fetch-site", "same-origin".parse().unwrap());
    }
    request
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

fn text(answer: &http::Response<Vec<u8>>) -> String {
    String::from_utf8_lossy(answer.body()).into_owned()
}

async fn start(settings: Settings) -> (Sandbox, Config) {
    let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::new(BaseUrl::parse(sandbox.base_url()).unwrap())
        .with_merchant_key(MerchantKey::new(&sandbox.settings().merchant_key).unwrap());
    (sandbox, config)
}

/// Settings of an emulator other machines can reach, with keys of its own.
fn exposed() -> Settings {
    let mut settings = Settings::default();
    settings.exposed = true;
    settings.master_key = "own_master_key".to_owned();
    settings.merchant_key = "own_merchant_key".to_owned();
    settings.issuer_token = "own_issuer_token".to_owned();
    settings.allowed_hosts = vec!["sandbox.test".to_owned()];
    settings
}

/// Waits (at most 15 s) until the first delivery is no longer pending.
async fn settled(sandbox: &Sandbox) -> cardsync_sandbox::Delivery {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let log = sandbox.deliveries();
        if let Some(d) = log.first().filter(|d| d.state != "pending") {
            return d.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rebound_host_name_gets_nothing_on_any_path_loopback_names_are_answered() {
    let mut settings = Settings::default();
    settings.complete_after = Duration::from_secs(60);
    let (sandbox, config) = start(settings).await;
    let http = client();
    let port = sandbox.addr().port();
    let created = CreateBatch::decode(
        &send(
            &http,
            cardsync_sandbox::fixtures::documented_batch()
                .encode(&config)
                .unwrap(),
        )
        .await,
    )
    .unwrap();
    sandbox.advance(Duration::from_secs(61));
    let results = || {
        GetBatchResults::new(&created.batch_id)
            .encode(&config)
            .unwrap()
    };
    let hook = || {
        SetWebhooks::new()
            .with(Trigger::BatchAvailable, "http://127.0.0.1:9/internal")
            .encode(&config)
            .unwrap()
    };

    // The page of a rebound name, with the public default key: refused before anything is
    // read or done, whether it looks like a browser or not.
    for host in [
        format!("attacker.example:{port}"),
        "attacker.example".to_owned(),
        format!("127.0.0.1.nip.example:{port}"),
        format!("localhost.example:{port}"),
    ] {
        for browser in [false, true] {
            let refused = send(&http, addressed(results(), &host, browser)).await;
            assert_eq!(refused.status(), 403, "{host} {browser}");
            assert!(
                text(&refused).contains("loopback host"),
                "{}",
                text(&refused)
            );
            assert!(!text(&refused).contains("\"cards\""), "{}", text(&refused));
            let refused = send(&http, addressed(hook(), &host, browser)).await;
            assert_eq!(refused.status(), 403, "{host} {browser}");
            for path in ["/_sandbox/deliveries", "/_sandbox/clock", "/"] {
                let refused = send(&http, addressed(get(&sandbox, path), &host, browser)).await;
                assert_eq!(refused.status(), 403, "{path} at {host} {browser}");
            }
        }
    }
    assert!(
        sandbox.overview().merchants[0].webhooks.is_empty(),
        "a refused registration registered nothing"
    );
    assert_eq!(sandbox.deliveries().len(), 0);

    // Loopback names, with any port (or none), are answered.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("app.localhost:{port}"),
        format!("[::1]:{port}"),
        "[::1]".to_owned(),
        format!("[::ffff:127.0.0.1]:{port}"),
    ] {
        let answer = send(&http, addressed(results(), &host, false)).await;
        assert_eq!(answer.status(), 200, "{host}: {}", text(&answer));
        let got = GetBatchResults::decode(&answer).unwrap();
        assert_eq!(got.batch_id.as_deref(), Some(created.batch_id.as_str()));
        assert!(!got.cards.is_empty());
        let answer = send(&http, addressed(hook(), &host, false)).await;
        assert_eq!(answer.status(), 200, "{host}: {}", text(&answer));
        let clock = send(
            &http,
            addressed(get(&sandbox, "/_sandbox/clock"), &host, true),
        )
        .await;
        assert_eq!(clock.status(), 200, "{host}");
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_ipv4_mapped_loopback_address_is_loopback() {
    let addr = "[::ffff:127.0.0.1]:0".parse().unwrap();
    match Sandbox::start(Settings::default(), addr).await {
        Ok(sandbox) => {
            assert!(!sandbox.exposed());
            assert!(!sandbox.dashboard_url().contains("token"));
            sandbox.shutdown().await;
        }
        // No IPv6 here; the rule itself is tested in the unit tests.
        Err(e) if e.kind() != std::io::ErrorKind::InvalidInput => {
            eprintln!("skipped: cannot bind {addr}: {e}");
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn an_exposed_sandbox_refuses_the_public_keys() {
    for public in ["master_key", "merchant_key", "issuer_token"] {
        let mut settings = exposed();
        match public {
            "master_key" => settings.master_key = Settings::default().master_key,
            "merchant_key" => settings.merchant_key = Settings::default().merchant_key,
            _ => settings.issuer_token = Settings::default().issuer_token,
        }
        let refused = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
        let flag = format!("--{}", public.replace('_', "-"));
        assert!(refused.to_string().contains(&flag), "{refused}");
    }
}

#[tokio::test]
async fn an_exposed_sandbox_needs_its_token_on_every_control_request_and_for_the_page() {
    let (sandbox, config) = start(exposed()).await;
    assert!(sandbox.exposed());
    let http = client();
    let token = sandbox.control_token().to_owned();
    let port = sandbox.addr().port();
    let with_header = |mut r: http::Request<Vec<u8>>| {
        r.headers_mut()
            .insert("x-cardsync-sandbox-token", token.parse().unwrap());
        r
    };
    let with_bearer = |mut r: http::Request<Vec<u8>>| {
        r.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };

    // Without the token: nothing, reads included, and a 401 that says how.
    for path in [
        "/_sandbox/clock",
        "/_sandbox/deliveries",
        "/_sandbox/overview",
        "/_sandbox/counters",
        "/_sandbox/faults",
    ] {
        let refused = send(&http, get(&sandbox, path)).await;
        assert_eq!(refused.status(), 401, "{path}");
        assert_eq!(
            refused.headers()["www-authenticate"],
            "Bearer realm=\"cardsync-sandbox\""
        );
        let mut wrong = get(&sandbox, path);
        wrong
            .headers_mut()
            .insert("authorization", "Bearer not-the-token".parse().unwrap());
        assert_eq!(send(&http, wrong).await.status(), 401, "{path}");
    }
    let advance = || post(&sandbox, "/_sandbox/clock/advance", r#"{"seconds": 3600}"#);
    assert_eq!(send(&http, advance()).await.status(), 401);
    let faults = post(&sandbox, "/_sandbox/faults", r#"{"error_rate": 1}"#);
    assert_eq!(send(&http, faults).await.status(), 401);
    let clock: serde_json::Value = serde_json::from_slice(
        send(&http, with_header(get(&sandbox, "/_sandbox/clock")))
            .await
            .body(),
    )
    .unwrap();
    assert_eq!(clock["advanced_ms"], 0, "a refused request changed nothing");

    // With it, in either header.
    assert_eq!(send(&http, with_header(advance())).await.status(), 200);
    assert_eq!(
        send(&http, with_bearer(get(&sandbox, "/_sandbox/overview")))
            .await
            .status(),
        200
    );

    // The page holds the token: only the dashboard URL (with the token) gets it.
    let page = send(&http, get(&sandbox, "/")).await;
    assert_eq!(page.status(), 401);
    assert!(!text(&page).contains(&token));
    let url = sandbox.dashboard_url();
    assert!(url.ends_with(&format!("/?token={token}")), "{url}");
    let page = send(&http, http::Request::get(url).body(Vec::new()).unwrap()).await;
    assert_eq!(page.status(), 200);
    assert!(text(&page).contains(&token));

    // The API answers at the allowed name and at loopback names, not at others.
    let batch = || GetBatch::new("nope").encode(&config).unwrap();
    for host in [format!("sandbox.test:{port}"), format!("127.0.0.1:{port}")] {
        assert_eq!(
            send(&http, addressed(batch(), &host, false)).await.status(),
            404,
            "{host}"
        );
    }
    assert_eq!(
        send(&http, addressed(batch(), "elsewhere.test", false))
            .await
            .status(),
        403
    );
    let control = with_header(addressed(
        get(&sandbox, "/_sandbox/clock"),
        "elsewhere.test",
        false,
    ));
    assert_eq!(send(&http, control).await.status(), 403);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_delivery_log_never_shows_a_secret_path() {
    let mut settings = Settings::default();
    settings.complete_after = Duration::from_secs(60);
    let (sandbox, config) = start(settings).await;
    let http = client();
    let secret = cardsync_hyper::random_token().unwrap();
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    let receiver = cardsync_hyper::WebhookReceiver::start(
        "127.0.0.1:0".parse().unwrap(),
        &secret,
        cardsync_hyper::ReceiverOptions::default(),
        move |event| {
            let _ = tx.send(event);
            async { Ok(()) }
        },
    )
    .await
    .unwrap();
    let set = SetWebhooks::new().with(Trigger::BatchAvailable, receiver.url());
    assert_eq!(
        send(&http, set.encode(&config).unwrap()).await.status(),
        200
    );
    send(
        &http,
        cardsync_sandbox::fixtures::documented_batch()
            .encode(&config)
            .unwrap(),
    )
    .await;
    sandbox.advance(Duration::from_secs(61));
    // Delivered at the secret URL itself.
    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the webhook in time")
        .unwrap();
    let delivery = settled(&sandbox).await;
    assert_eq!(
        (delivery.state, delivery.last_status),
        ("delivered", Some(200))
    );

    let masked = format!("http://{}/webhooks/…", receiver.local_addr());
    assert_eq!(delivery.url, masked);
    for path in ["/_sandbox/deliveries", "/_sandbox/overview"] {
        let answer = send(&http, get(&sandbox, path)).await;
        assert_eq!(answer.status(), 200);
        let body = text(&answer);
        assert!(!body.contains(&secret), "{path} shows the secret path");
        assert!(body.contains(&masked), "{path}: {body}");
    }
    assert!(!format!("{:?}", sandbox.deliveries()).contains(&secret));
    receiver.shutdown().await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn webhooks_to_a_host_not_allowed_are_not_sent() {
    let mut settings = Settings::default();
    settings.complete_after = Duration::from_secs(60);
    let (sandbox, config) = start(settings).await;
    let http = client();
    // A name that never resolves (RFC 2606), as a rebound page might register an internal one.
    let set = SetWebhooks::new().with(Trigger::BatchAvailable, "http://metadata.invalid/latest");
    assert_eq!(
        send(&http, set.encode(&config).unwrap()).await.status(),
        200
    );
    send(
        &http,
        cardsync_sandbox::fixtures::documented_batch()
            .encode(&config)
            .unwrap(),
    )
    .await;
    sandbox.advance(Duration::from_secs(61));
    let delivery = settled(&sandbox).await;
    assert_eq!(delivery.state, "failed");
    assert_eq!(delivery.last_status, None);
    assert_eq!(delivery.history.len(), 1, "no attempt is retried");
    let why = delivery.last_error.unwrap_or_default();
    assert!(
        why.starts_with("not delivered")
            && why.contains("metadata.invalid")
            && why.contains("--webhook-host"),
        "{why}"
    );
    sandbox.shutdown().await;
}
