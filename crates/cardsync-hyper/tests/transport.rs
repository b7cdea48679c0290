//! The transport against the emulator and small stand-in servers on loopback: what it sends,
//! what it refuses, and how each failure is classified. Every server started here is stopped,
//! and every wait is bounded.

use std::time::Duration;

use cardsync_core::SeNumber;
use cardsync_hyper::{HyperTransport, Options};
use cardsync_proto::retry::Reached;
use cardsync_proto::transport::{Transport, TransportErrorKind};
use cardsync_proto::*;
use cardsync_sandbox::{Faults, Sandbox, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn loopback_options() -> Options {
    let mut options = Options::loopback();
    options.request_timeout = Duration::from_secs(10);
    options
}

async fn sandbox() -> (Sandbox, Config) {
    let mut settings = Settings::default();
    settings.complete_after = Duration::ZERO;
    let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::new(BaseUrl::parse(sandbox.base_url()).unwrap())
        .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap());
    (sandbox, config)
}

fn batch() -> CreateBatch {
    cardsync_sandbox::fixtures::documented_batch()
}

#[tokio::test]
async fn sends_and_receives_through_the_emulator() {
    let (sandbox, config) = sandbox().await;
    let transport = HyperTransport::new(loopback_options()).unwrap();
    let created = CreateBatch::decode(
        &transport
            .send(batch().encode(&config).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    sandbox.advance(Duration::from_millis(1));
    let results = GetBatchResults::decode(
        &transport
            .send(
                GetBatchResults::new(&created.batch_id)
                    .encode(&config)
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(results.cards.len(), 16);
    let missing = GetBatch::decode(
        &transport
            .send(GetBatch::new("nope").encode(&config).unwrap())
            .await
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(missing.status(), Some(http::StatusCode::NOT_FOUND));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn delete_carries_its_body() {
    let (sandbox, config) = sandbox().await;
    let transport = HyperTransport::new(loopback_options()).unwrap();
    let se = SeNumber::parse("1234567890").unwrap();
    let cards = cardsync_sandbox::fixtures::documented_subscription(&se);
    let answer = transport
        .send(Unsubscribe::new(cards).unwrap().encode(&config).unwrap())
        .await
        .unwrap();
    Unsubscribe::decode(&answer).unwrap();
    assert_eq!(sandbox.counters()["DELETE /v2/subscribe"].cards, 3);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn plain_http_is_refused_unless_loopback_and_allowed() {
    let (sandbox, config) = sandbox().await;
    let strict = HyperTransport::new(Options::default()).unwrap();
    let err = strict
        .send(GetBatch::new("b").encode(&config).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.reached()),
        (TransportErrorKind::Refused, Reached::No)
    );
    assert_eq!(
        sandbox.counters(),
        std::collections::BTreeMap::new(),
        "nothing reached the emulator"
    );

    // Allowed for loopback only: any other host is refused before a name is even looked up.
    let loose = HyperTransport::new(loopback_options()).unwrap();
    let elsewhere = Config::new(BaseUrl::parse("http://cardsync.invalid:8787").unwrap())
        .with_merchant_key(MerchantKey::new("k").unwrap());
    let err = loose
        .send(GetBatch::new("b").encode(&elsewhere).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.reached()),
        (TransportErrorKind::Refused, Reached::No)
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn https_to_a_plain_server_fails_to_connect() {
    let (sandbox, _) = sandbox().await;
    let https =
        Config::new(BaseUrl::parse(&sandbox.base_url().replace("http://", "https://")).unwrap())
            .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap());
    let transport = HyperTransport::new(Options::default()).unwrap();
    let err = transport
        .send(GetBatch::new("b").encode(&https).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.reached()),
        (TransportErrorKind::Connect, Reached::No),
        "{err:?}"
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_never_reached_the_server() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let config = Config::new(BaseUrl::parse(&url).unwrap())
        .with_merchant_key(MerchantKey::new("k").unwrap());
    let transport = HyperTransport::new(loopback_options()).unwrap();
    let err = transport
        .send(GetBatch::new("b").encode(&config).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.reached()),
        (TransportErrorKind::Connect, Reached::No),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let (sandbox, config) = sandbox().await;
    let mut options = loopback_options();
    options.max_response_body = 1024;
    let transport = HyperTransport::new(options).unwrap();
    let created = CreateBatch::decode(
        &transport
            .send(batch().encode(&config).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    sandbox.advance(Duration::from_millis(1));
    let err = transport
        .send(
            GetBatchResults::new(&created.batch_id)
                .encode(&config)
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.reached()),
        (TransportErrorKind::BodyTooLarge, Reached::Maybe)
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_connection_dropped_mid_body_may_have_reached_the_server() {
    let (sandbox, config) = sandbox().await;
    let mut faults = Faults::default();
    faults.drop_rate = 1.0;
    sandbox.set_faults(faults);
    let transport = HyperTransport::new(loopback_options()).unwrap();
    let err = transport
        .send(GetBatch::new("b").encode(&config).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.reached()),
        (TransportErrorKind::Io, Reached::Maybe),
        "{err:?}"
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_server_that_stalls_hits_the_timeout() {
    // Accepts connections and reads, but never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stall = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            held.push(socket);
        }
    });
    let mut options = loopback_options();
    options.request_timeout = Duration::from_millis(300);
    let transport = HyperTransport::new(options).unwrap();
    let config = Config::new(BaseUrl::parse(&url).unwrap())
        .with_merchant_key(MerchantKey::new("k").unwrap());
    let err = transport
        .send(GetBatch::new("b").encode(&config).unwrap())
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.reached(), Reached::Maybe);
    stall.abort();
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        if let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let transport = HyperTransport::new(loopback_options()).unwrap();
    let config = Config::new(BaseUrl::parse(&url).unwrap())
        .with_merchant_key(MerchantKey::new("k").unwrap());
    let answer = transport
        .send(GetBatch::new("b").encode(&config).unwrap())
        .await
        .unwrap();
    assert_eq!(answer.status(), 302);
    let err = GetBatch::decode(&answer).unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::FOUND));
    server.abort();
}
