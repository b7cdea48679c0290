//! The typed client against the emulator with fault injection: what is retried, what is never
//! resent, and another HTTP stack plugged in through a closure.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use cardsync_core::{Brand, SANDBOX_TEST_CARDS};
use cardsync_hyper::{CallError, Client, HyperTransport, Options};
use cardsync_proto::retry::{Reached, RetryPolicy};
use cardsync_proto::transport::{TransportError, TransportErrorKind};
use cardsync_proto::*;
use cardsync_sandbox::{FaultTiming, Faults, Sandbox, Settings};

async fn setup() -> (Sandbox, Client<HyperTransport>) {
    let mut settings = Settings::default();
    settings.complete_after = Duration::ZERO;
    let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::new(BaseUrl::parse(sandbox.base_url()).unwrap())
        .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap());
    let client = Client::new(HyperTransport::new(Options::loopback()).unwrap(), config)
        .with_retry_policy(
            RetryPolicy::default()
                .with_delays(Duration::from_millis(10), Duration::from_millis(50)),
        );
    (sandbox, client)
}

fn batch() -> CreateBatch {
    cardsync_sandbox::fixtures::documented_batch()
}

fn faults(f: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults::default();
    f(&mut faults);
    faults
}

#[tokio::test]
async fn busy_answers_are_retried_and_the_call_succeeds() {
    let (sandbox, client) = setup().await;
    let created = client.create_batch(&batch()).await.unwrap();
    sandbox.advance(Duration::from_millis(1));
    sandbox.set_faults(faults(|f| {
        f.error_rate = 1.0;
        f.statuses = vec![503, 429];
        f.retry_after = Some(1);
        f.limit = Some(2);
    }));
    let started = std::time::Instant::now();
    let results = client.batch_results(&created.batch_id, None).await.unwrap();
    assert_eq!(results.cards.len(), 16);
    // Retry-After: 1 was honoured on both retries.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_500_on_batch_creation_is_not_resubmitted() {
    let (sandbox, client) = setup().await;
    // The emulator processes the batch, then the answer is lost to a 500.
    sandbox.set_faults(faults(|f| {
        f.error_rate = 1.0;
        f.statuses = vec![500];
        f.paths = vec!["/v2/batch".into()];
        f.when = FaultTiming::After;
        f.limit = Some(1);
    }));
    let err = client.create_batch(&batch()).await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::INTERNAL_SERVER_ERROR));
    let counters = sandbox.counters();
    assert_eq!(counters["POST /v2/batch"].cards, 16, "sent once");
    assert_eq!(counters["POST /v2/batch"].repeats, 0, "never resubmitted");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_503_on_batch_creation_is_not_resubmitted_either() {
    let (sandbox, client) = setup().await;
    sandbox.set_faults(faults(|f| {
        f.error_rate = 1.0;
        f.statuses = vec![503];
        f.retry_after = Some(1);
        f.paths = vec!["/v2/batch".into()];
        f.limit = Some(1);
    }));
    let err = client.create_batch(&batch()).await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(
        sandbox.counters(),
        std::collections::BTreeMap::new(),
        "a second attempt would have gone through"
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn an_html_error_page_becomes_a_typed_error() {
    let (sandbox, client) = setup().await;
    sandbox.set_faults(faults(|f| {
        f.error_rate = 1.0;
        f.statuses = vec![502];
        f.html = true;
    }));
    let err = client.batch("b1").await.unwrap_err();
    let CallError::Decode(DecodeError::Status {
        status,
        content_type,
        message,
        length,
        ..
    }) = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, http::StatusCode::BAD_GATEWAY);
    assert!(content_type.as_deref().unwrap().starts_with("text/html"));
    assert_eq!(*message, None);
    assert!(*length > 0);
    assert!(!err.to_string().contains("<html>"));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_get_dropped_mid_body_is_retried() {
    let (sandbox, client) = setup().await;
    let created = client.create_batch(&batch()).await.unwrap();
    sandbox.set_faults(faults(|f| {
        f.drop_rate = 1.0;
        f.limit = Some(1);
    }));
    let info = client.batch(&created.batch_id).await.unwrap();
    assert_eq!(info.batch_id.as_deref(), Some(created.batch_id.as_str()));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn retries_are_bounded() {
    let (sandbox, client) = setup().await;
    sandbox.set_faults(faults(|f| {
        f.error_rate = 1.0;
        f.statuses = vec![503];
    }));
    let client = client.with_retry_policy(
        RetryPolicy::default()
            .with_max_attempts(3)
            .with_delays(Duration::from_millis(1), Duration::from_millis(5)),
    );
    let err = client.batch("b1").await.unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    sandbox.shutdown().await;
}

/// A blocking HTTP/1.1 exchange over std's TcpStream: a different HTTP stack entirely.
fn blocking_exchange(
    request: http::Request<Vec<u8>>,
) -> Result<http::Response<Vec<u8>>, TransportError> {
    let io = |e: std::io::Error| {
        TransportError::new(TransportErrorKind::Io, Reached::Maybe).with_source(e)
    };
    let authority = request
        .uri()
        .authority()
        .expect("an absolute URI")
        .to_string();
    let mut stream = std::net::TcpStream::connect(&authority).map_err(|e| {
        TransportError::new(TransportErrorKind::Connect, Reached::No).with_source(e)
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = format!(
        "{} {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method(),
        request.body().len()
    );
    for (name, value) in request.headers() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(request.body()).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(io)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io(std::io::Error::other("bad status line")))?;
    let mut response = http::Response::builder().status(status);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            response = response.header(name.trim(), value.trim());
        }
    }
    let mut body = Vec::new();
    reader.read_to_end(&mut body).map_err(io)?;
    Ok(response.body(body).unwrap())
}

#[tokio::test]
async fn another_http_stack_plugs_in_as_a_closure() {
    let (sandbox, hyper_client) = setup().await;
    let transport = |request: http::Request<Vec<u8>>| async move {
        tokio::task::spawn_blocking(move || blocking_exchange(request))
            .await
            .expect("the blocking task ran")
    };
    let client = Client::new(transport, hyper_client.config().clone());
    let created = client.create_batch(&batch()).await.unwrap();
    sandbox.advance(Duration::from_millis(1));
    assert_eq!(
        client.batch(&created.batch_id).await.unwrap().status,
        BatchState::Completed
    );
    let results = client.batch_results(&created.batch_id, None).await.unwrap();
    let got: Vec<_> = results.cards.iter().map(|c| c.status.clone()).collect();
    let expected: Vec<_> = SANDBOX_TEST_CARDS
        .iter()
        .filter(|c| c.brand != Brand::AmericanExpress)
        .map(|c| Some(c.result.clone()))
        .collect();
    assert_eq!(got, expected);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn every_typed_call_against_the_emulator() {
    let (sandbox, merchant_client) = setup().await;
    // One configuration can hold both keys; each call signs with the scope it needs.
    let config = merchant_client
        .config()
        .clone()
        .with_partner_key(PartnerKey::new("sandbox_master_key").unwrap());
    let client = Client::new(HyperTransport::new(Options::loopback()).unwrap(), config);

    client
        .set_webhooks(
            &SetWebhooks::new()
                .with(Trigger::EnrollmentComplete, "http://127.0.0.1:9/x")
                .signed_by(KeyScope::Partner),
        )
        .await
        .unwrap();
    let merchant: MerchantEnrollment = serde_json::from_slice(include_bytes!(
        "../../cardsync-proto/tests/data/universal/merchant_enroll_request.json"
    ))
    .unwrap();
    let enrolled = client
        .enroll_merchant(&EnrollMerchant::new(merchant))
        .await
        .unwrap();
    assert_eq!(
        client
            .merchant(&enrolled.merchant_id)
            .await
            .unwrap()
            .enrollment
            .as_deref(),
        Some("completed")
    );

    let created = client.create_batch(&batch()).await.unwrap();
    sandbox.advance(Duration::from_millis(1));
    assert_eq!(
        client.batch(&created.batch_id).await.unwrap().status,
        BatchState::Completed
    );
    assert_eq!(
        client
            .batch_results(&created.batch_id, None)
            .await
            .unwrap()
            .cards
            .len(),
        16
    );

    // The update's event id comes in the webhook; here it is read from the emulator's delivery
    // log (nothing listens at the registered address, which does not matter for the log).
    client
        .set_webhooks(&SetWebhooks::new().with(Trigger::AmexUpdate, "http://127.0.0.1:9/amex"))
        .await
        .unwrap();
    let se = cardsync_core::SeNumber::parse("1234567890").unwrap();
    let cards = cardsync_sandbox::fixtures::documented_subscription(&se);
    client
        .subscribe(&Subscribe::new(cards.clone()).unwrap())
        .await
        .unwrap();
    sandbox.advance(Duration::from_millis(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let event_id = loop {
        if let Some(d) = sandbox
            .deliveries()
            .into_iter()
            .find(|d| d.trigger_id == 23)
        {
            break d.event_id.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Amex update fired"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        client
            .subscription_results(&event_id)
            .await
            .unwrap()
            .cards
            .len(),
        3
    );
    client
        .unsubscribe(&Unsubscribe::new(cards).unwrap())
        .await
        .unwrap();
    sandbox.shutdown().await;
}
