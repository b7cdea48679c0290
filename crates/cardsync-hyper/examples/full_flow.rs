//! The whole batch flow, asynchronously: register a webhook, submit a batch, receive the
//! batch-available webhook, fetch the results.
//!
//! It runs against the local emulator started in-process, so it needs no credentials:
//!
//! ```sh
//! cargo run -p cardsync-hyper --example full_flow
//! ```
//!
//! Against CardSync itself, use `cardsync_hyper::https_client(config)` with `BaseUrl::sandbox()`
//! and your merchant key, and register the public HTTPS URL of the receiver.

use std::time::Duration;

use cardsync_hyper::{
    Client, HandlerError, HyperTransport, Options, ReceiverOptions, WebhookReceiver, random_token,
};
use cardsync_proto::{BaseUrl, Config, MerchantKey, SetWebhooks, Trigger, WebhookEvent};
use cardsync_sandbox::{Sandbox, Settings, fixtures};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A local CardSync emulator; batches complete after half a second.
    let mut settings = Settings::default();
    settings.complete_after = Duration::from_millis(500);
    let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse()?).await?;

    // The client: plain HTTP is allowed here only because the emulator is on loopback.
    let config = Config::new(BaseUrl::parse(sandbox.base_url())?)
        .with_merchant_key(MerchantKey::new("sandbox_merchant_key")?);
    let client = Client::new(HyperTransport::new(Options::loopback())?, config);

    // The webhook receiver hands events to this program through a channel.
    let (tx, mut events) = mpsc::unbounded_channel();
    let receiver = WebhookReceiver::start(
        "127.0.0.1:0".parse()?,
        &random_token()?,
        ReceiverOptions::default(),
        move |event: WebhookEvent| {
            let tx = tx.clone();
            async move { tx.send(event).map_err(HandlerError::new) }
        },
    )
    .await?;
    client
        .set_webhooks(&SetWebhooks::new().with(Trigger::BatchAvailable, receiver.url()))
        .await?;

    // Submit the documented test cards.
    let created = client.create_batch(&fixtures::documented_batch()).await?;
    println!("submitted batch {} ({})", created.batch_id, created.status);

    // Wait for the batch-available webhook, then fetch the results it announces.
    let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
        .await?
        .ok_or("the receiver stopped")?;
    let WebhookEvent::BatchAvailable(available) = &event else {
        return Err(format!("unexpected webhook {:?}", event.trigger()).into());
    };
    println!(
        "webhook: batch {} is available",
        available.batch_id.as_deref().unwrap_or("?")
    );
    let results = client
        .batch_results(&created.batch_id, event.event_id())
        .await?;
    for card in &results.cards {
        // Card numbers are shown masked.
        let status = card.status.as_ref().map_or("(none)", |s| s.as_str());
        println!(
            "  {:<4} {:<20} {:<6} {status}",
            card.id,
            card.card.masked(),
            card.exp.as_deref().unwrap_or("")
        );
    }
    println!(
        "{} results; {} updated numbers, {} new expiry dates",
        results.cards.len(),
        results.stats.stats.updated_card,
        results.stats.stats.updated_expiry
    );

    receiver.shutdown().await;
    sandbox.shutdown().await;
    Ok(())
}
