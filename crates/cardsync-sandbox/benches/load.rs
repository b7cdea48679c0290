//! `cargo bench -p cardsync-sandbox`: 100 batches of 10,000 cards through the emulator over
//! loopback HTTP, in one process: create every batch, let them complete, fetch every result set.
//! Prints the time of each phase, cards per second, and the process's peak and current memory
//! (client and emulator together) after 10 batches and after all 100, to show that memory does
//! not grow with the cards submitted. Set `BENCH_BATCHES` to change the number of batches.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cardsync_core::{Expiry, Pan, luhn_check_digit};
use cardsync_proto::{
    BaseUrl, BatchCard, BatchState, Config, CreateBatch, Endpoint, GetBatch, GetBatchResults,
    MerchantKey,
};
use cardsync_sandbox::{Sandbox, Settings};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const CARDS: usize = 10_000;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn send<E: Endpoint>(client: &HttpClient, config: &Config, endpoint: &E) -> E::Output {
    let (parts, body) = endpoint.encode(config).unwrap().into_parts();
    let response = client
        .request(http::Request::from_parts(
            parts,
            Full::new(Bytes::from(body)),
        ))
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    E::decode(&http::Response::from_parts(parts, body)).unwrap()
}

/// `(VmHWM, VmRSS)` in MB, from /proc/self/status (0 where unavailable).
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn batch(n: usize) -> CreateBatch {
    let prefixes = ["4", "51", "6011"];
    let cards = (0..CARDS)
        .map(|i| {
            let k = n * CARDS + i;
            let prefix = prefixes[k % 3];
            let body = format!("{prefix}{:0width$}", k, width = 15 - prefix.len());
            let card = format!("{body}{}", char::from(luhn_check_digit(&body).unwrap()));
            BatchCard::new(
                format!("b{n}-c{i}"),
                Pan::parse(&card).unwrap(),
                Expiry::new(2030, (i % 12 + 1) as u8).unwrap(),
            )
        })
        .collect();
    CreateBatch::new(cards).unwrap()
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let batches: usize = std::env::var("BENCH_BATCHES")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(if smoke { 2 } else { 100 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut settings = Settings::default();
        settings.complete_after = Duration::ZERO;
        let sandbox = Sandbox::start(settings, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let config = Config::new(BaseUrl::parse(sandbox.base_url()).unwrap())
            .with_merchant_key(MerchantKey::new("sandbox_merchant_key").unwrap());
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

        let start = Instant::now();
        let mut ids = Vec::with_capacity(batches);
        let mut after_ten = (0.0, 0.0);
        for n in 0..batches {
            // Requests are built one at a time, as a client streaming a file would.
            ids.push(send(&client, &config, &batch(n)).await.batch_id);
            if n + 1 == 10.min(batches) {
                after_ten = memory_mb();
            }
        }
        let created = start.elapsed();

        let wait = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(60);
        for id in &ids {
            while send(&client, &config, &GetBatch::new(id)).await.status != BatchState::Completed {
                assert!(Instant::now() < deadline, "batch {id} did not complete");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let completed = wait.elapsed();

        let fetch = Instant::now();
        let mut no_change = 0;
        for id in &ids {
            no_change += send(&client, &config, &GetBatchResults::new(id))
                .await
                .stats
                .stats
                .no_change;
        }
        let fetched = fetch.elapsed();
        assert_eq!(no_change, (batches * CARDS) as u64);
        let total = start.elapsed();
        let (peak, now) = memory_mb();
        println!("{batches} batches of {CARDS} cards through the emulator over loopback HTTP:");
        println!("  create   {:>8.2} s", created.as_secs_f64());
        println!("  complete {:>8.2} s", completed.as_secs_f64());
        println!("  results  {:>8.2} s", fetched.as_secs_f64());
        println!(
            "  total    {:>8.2} s  ({:.0} cards/s)",
            total.as_secs_f64(),
            (batches * CARDS) as f64 / total.as_secs_f64()
        );
        println!(
            "  memory after {:>3} batches: peak {:.0} MB, now {:.0} MB",
            10.min(batches),
            after_ten.0,
            after_ten.1
        );
        println!("  memory after {batches:>3} batches: peak {peak:.0} MB, now {now:.0} MB");
        sandbox.shutdown().await;
    });
}
