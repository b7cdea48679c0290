//! A whole flow with every log line at TRACE level captured: no full card number and no key
//! appear in them. (Alone in its own test binary, since it installs the global subscriber.)

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cardsync_core::{Brand, Expiry, Pan, SANDBOX_TEST_CARDS, SeNumber};
use cardsync_hyper::{Client, HyperTransport, Options};
use cardsync_proto::retry::RetryPolicy;
use cardsync_proto::*;
use cardsync_sandbox::{Faults, Sandbox, Settings};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_card_number_or_key_in_trace_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mut settings = Settings::default();
    settings.complete_after = Duration::ZERO;
    let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config = Config::new(BaseUrl::parse(sandbox.base_url()).unwrap())
        .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap());
    let client = Client::new(HyperTransport::new(Options::loopback()).unwrap(), config)
        .with_retry_policy(
            RetryPolicy::default().with_delays(Duration::from_millis(5), Duration::from_millis(20)),
        );

    // Batch cards whose ids are card numbers too, to catch a logged id.
    let cards = SANDBOX_TEST_CARDS
        .iter()
        .filter(|c| c.brand != Brand::AmericanExpress)
        .map(|c| {
            BatchCard::new(
                c.card,
                Pan::parse(c.card).unwrap(),
                Expiry::parse(c.exp.unwrap()).unwrap(),
            )
        })
        .collect();
    let created = client
        .create_batch(&CreateBatch::new(cards).unwrap())
        .await
        .unwrap();
    sandbox.advance(Duration::from_millis(1));
    // A retried GET, for the retry log lines.
    let mut faults = Faults::default();
    faults.error_rate = 1.0;
    faults.limit = Some(1);
    sandbox.set_faults(faults);
    let results = client.batch_results(&created.batch_id, None).await.unwrap();
    assert_eq!(results.cards.len(), 16);
    let se = SeNumber::parse("1234567890").unwrap();
    let amex: Vec<SubscriptionCard> = SANDBOX_TEST_CARDS
        .iter()
        .filter(|c| c.brand == Brand::AmericanExpress)
        .map(|c| {
            SubscriptionCard::new(
                se.clone(),
                c.card,
                Pan::parse(c.card).unwrap(),
                Expiry::parse("12/28").unwrap(),
            )
        })
        .collect();
    client
        .subscribe(&Subscribe::new(amex.clone()).unwrap())
        .await
        .unwrap();
    client
        .unsubscribe(&Unsubscribe::new(amex).unwrap())
        .await
        .unwrap();
    sandbox.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("cardsync request"),
        "the flow was logged:\n{logs}"
    );
    assert!(
        logs.contains("cardsync retry"),
        "the retry was logged:\n{logs}"
    );
    for card in SANDBOX_TEST_CARDS {
        assert!(
            !logs.contains(card.card),
            "{} appears in the logs",
            card.card
        );
    }
    for row in &results.cards {
        assert!(
            !logs.contains(row.card.expose()),
            "a returned card appears in the logs"
        );
    }
    assert!(
        !logs.contains("sandbox_merchant_key"),
        "the key appears in the logs"
    );
}
