//! The webhook receiver on loopback: a real delivery from the emulator, and every refusal.
//! Every server started here is stopped, and every wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cardsync_hyper::{
    Client, HandlerError, HyperTransport, Options, ReceiverError, ReceiverOptions, WebhookReceiver,
    random_token,
};
use cardsync_proto::transport::Transport;
use cardsync_proto::*;
use cardsync_sandbox::{Sandbox, Settings};
use tokio::sync::mpsc;

fn transport() -> HyperTransport {
    HyperTransport::new(Options::loopback()).unwrap()
}

async fn post(url: &str, body: &[u8]) -> u16 {
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .unwrap();
    transport().send(request).await.unwrap().status().as_u16()
}

async fn receiver_into_channel() -> (WebhookReceiver, mpsc::UnboundedReceiver<WebhookEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let receiver = WebhookReceiver::start(
        "127.0.0.1:0".parse().unwrap(),
        &random_token().expect("random bytes"),
        ReceiverOptions::default(),
        move |event| {
            let tx = tx.clone();
            async move {
                tx.send(event).map_err(HandlerError::new)?;
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    (receiver, rx)
}

#[tokio::test]
async fn receives_the_emulators_webhook_and_fetches_the_results() {
    let mut settings = Settings::default();
    settings.complete_after = Duration::from_millis(100);
    let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::new(BaseUrl::parse(sandbox.base_url()).unwrap())
        .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap());
    let client = Client::new(transport(), config);
    let (receiver, mut events) = receiver_into_channel().await;

    client
        .set_webhooks(&SetWebhooks::new().with(Trigger::BatchAvailable, receiver.url()))
        .await
        .unwrap();
    let created = client
        .create_batch(&cardsync_sandbox::fixtures::documented_batch())
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a webhook in time")
        .unwrap();
    let WebhookEvent::BatchAvailable(available) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(
        available.batch_id.as_deref(),
        Some(created.batch_id.as_str())
    );
    let results = client
        .batch_results(&created.batch_id, event.event_id())
        .await
        .unwrap();
    assert_eq!(results.cards.len(), 16);

    // The emulator saw a 200 on the first attempt.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sandbox
        .deliveries()
        .first()
        .is_none_or(|d| d.state == "pending")
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = sandbox.deliveries();
    assert_eq!(
        (log[0].state, log[0].attempts, log[0].last_status),
        ("delivered", 1, Some(200))
    );
    receiver.shutdown().await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn refusals() {
    let (receiver, mut events) = receiver_into_channel().await;
    let url = receiver.url();
    let base = url.rsplit_once('/').unwrap().0.to_owned();
    let event = br#"{"trigger_id":23,"event_id":"e1","stats":{"updated_card":1}}"#;

    assert_eq!(
        post(&format!("{base}/not-the-token-at-all"), event).await,
        404,
        "wrong token"
    );
    assert_eq!(
        post(&format!("{}/x", receiver.url()), event).await,
        404,
        "longer path"
    );
    let get = http::Request::get(&url).body(Vec::new()).unwrap();
    let answer = transport().send(get).await.unwrap();
    assert_eq!(answer.status(), 405);
    assert_eq!(answer.headers()["allow"], "POST");
    assert_eq!(post(&url, b"<html>not json</html>").await, 400);
    assert_eq!(
        post(&url, b"{}").await,
        400,
        "no trigger and no known shape"
    );
    let huge = format!(
        r#"{{"trigger_id":23,"event_id":"e2","message":"{}"}}"#,
        "x".repeat(70_000)
    );
    assert_eq!(post(&url, huge.as_bytes()).await, 413);
    assert!(
        events.try_recv().is_err(),
        "nothing refused reached the handler"
    );

    // A redelivery is acknowledged without being handled twice.
    assert_eq!(post(&url, event).await, 200);
    assert_eq!(post(&url, event).await, 200);
    assert_eq!(events.recv().await.unwrap().event_id(), Some("e1"));
    assert!(events.try_recv().is_err(), "handled once");
    receiver.shutdown().await;
}

#[tokio::test]
async fn a_failing_handler_gets_the_event_again() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let receiver = WebhookReceiver::start(
        "127.0.0.1:0".parse().unwrap(),
        &random_token().expect("random bytes"),
        ReceiverOptions::default(),
        move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(HandlerError::new("the database is down"))
                } else {
                    Ok(())
                }
            }
        },
    )
    .await
    .unwrap();
    let event = br#"{"trigger_id":20,"batch_id":"b1","event_id":"e7"}"#;
    assert_eq!(
        post(&receiver.url(), event).await,
        500,
        "not acknowledged: CardSync delivers again"
    );
    assert_eq!(post(&receiver.url(), event).await, 200);
    assert_eq!(post(&receiver.url(), event).await, 200);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "handled until accepted, then never again"
    );
    receiver.shutdown().await;
}

#[tokio::test]
async fn a_busy_handler_asks_for_the_event_later_and_keyless_events_are_refused() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let receiver = WebhookReceiver::start(
        "127.0.0.1:0".parse().unwrap(),
        &random_token().expect("random bytes"),
        ReceiverOptions::default(),
        move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(HandlerError::busy("the queue is full"))
                } else {
                    Ok(())
                }
            }
        },
    )
    .await
    .unwrap();
    let url = receiver.url();
    let event = br#"{"trigger_id":20,"batch_id":"b1","event_id":"e8"}"#;
    let request = http::Request::post(&url).body(event.to_vec()).unwrap();
    let busy = transport().send(request).await.unwrap();
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "30");
    assert_eq!(post(&url, event).await, 200, "taken when delivered again");
    // Nothing to record it by: refused, and the handler never sees it.
    assert_eq!(post(&url, br#"{"trigger_id":23,"stats":{}}"#).await, 422);
    let long = format!(
        r#"{{"trigger_id":20,"batch_id":"b1","event_id":"{}"}}"#,
        "e".repeat(129)
    );
    assert_eq!(post(&url, long.as_bytes()).await, 400);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    receiver.shutdown().await;
}

#[tokio::test]
async fn weak_tokens_are_refused() {
    for token in [
        "short",
        "with/slash-and-enough-length",
        "spaces are not allowed here",
    ] {
        let err = WebhookReceiver::start(
            "127.0.0.1:0".parse().unwrap(),
            token,
            ReceiverOptions::default(),
            |_| async { Ok(()) },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ReceiverError::WeakToken), "{token}");
    }
}

#[tokio::test]
async fn a_redelivery_during_handling_is_asked_to_come_back() {
    let receiver = WebhookReceiver::start(
        "127.0.0.1:0".parse().unwrap(),
        &random_token().expect("random bytes"),
        ReceiverOptions::default(),
        |_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(())
        },
    )
    .await
    .unwrap();
    let url = receiver.url();
    let event = br#"{"trigger_id":23,"event_id":"slow"}"#;
    let first = tokio::spawn({
        let url = url.clone();
        async move { post(&url, event).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post(&url, event).await, 503, "still being handled");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(post(&url, event).await, 200, "handled by now");
    receiver.shutdown().await;
}

/// Reads until the server closes the connection or answers; returns what was read, or `None`
/// when nothing came before `limit`.
async fn read_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(Err(_)) => Some(String::new()),
        Err(_) => None,
    }
}

/// A receiver whose handler accepts every event.
async fn accept_all(token: &str, options: ReceiverOptions) -> WebhookReceiver {
    WebhookReceiver::start(
        "127.0.0.1:0".parse().unwrap(),
        token,
        options,
        |_event| async { Ok(()) },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn slow_heads_and_bodies_time_out_and_open_connections_are_capped() {
    use tokio::io::AsyncWriteExt;
    let token = random_token().unwrap();
    let mut options = ReceiverOptions::default();
    options.body_timeout = Duration::from_millis(300);
    options.limits = cardsync_hyper::server::ServeLimits::default()
        .with_header_read_timeout(Duration::from_millis(300))
        .with_max_connections(4);
    let receiver = accept_all(&token, options).await;
    let addr = receiver.local_addr();
    let path = format!("/webhooks/{token}");
    let event = br#"{"trigger_id":21,"merchant_id":"m1","status":"complete"}"#;

    // Half a request line: each connection is closed once its head is late.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /webhooks/").await.unwrap();
        slow.push(s);
    }
    for s in &mut slow {
        let got = read_within(s, Duration::from_secs(10)).await;
        assert!(
            got.is_some(),
            "a connection sending half a request line was kept open"
        );
    }

    // A body that stops arriving gets 408.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"trig"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let got = read_within(&mut s, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");

    receiver.shutdown().await;

    // At most four connections at once: four silent ones hold every place, and a fifth is
    // served only once one of them closes.
    let mut options = ReceiverOptions::default();
    options.limits = cardsync_hyper::server::ServeLimits::default().with_max_connections(4);
    let receiver = accept_all(&token, options).await;
    let addr = receiver.local_addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut fifth = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        event.len()
    );
    fifth.write_all(request.as_bytes()).await.unwrap();
    fifth.write_all(event).await.unwrap();
    assert_eq!(
        read_within(&mut fifth, Duration::from_millis(500)).await,
        None,
        "a fifth connection was served while four were open"
    );
    drop(held.pop());
    let got = read_within(&mut fifth, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    drop(held);
    receiver.shutdown().await;
}
