//! `cargo bench -p cardsync-proto`: in one run, decoding a 10,000-card results response (about
//! 1 MB) into the typed, PAN-safe results and into `serde_json::Value`, and encoding a
//! 10,000-card batch request. Prints MB/s for each (median of alternating rounds) and the ratio
//! of typed decoding to `Value`. Set `BENCH_ROUNDS` to change the number of rounds (default 21).

use std::hint::black_box;
use std::time::Instant;

use cardsync_core::{Expiry, Pan};
use cardsync_proto::{
    BaseUrl, BatchCard, Config, CreateBatch, Endpoint, GetBatchResults, MerchantKey,
};

const CARDS: usize = 10_000;

fn luhn_complete(body: &str) -> String {
    let check = cardsync_core::luhn_check_digit(body).expect("digits");
    format!("{body}{}", char::from(check))
}

fn card(i: usize) -> String {
    let prefix = ["4457", "5112", "6011"][i % 3];
    luhn_complete(&format!("{prefix}{:011}", i * 7919 % 100_000_000_000))
}

/// A results body as CardSync returns it, with every documented status.
fn results_body() -> Vec<u8> {
    let statuses = [
        "updated_card",
        "updated_expiry",
        "no_match",
        "valid",
        "contact",
        "closed",
    ];
    let cards: Vec<String> = (0..CARDS)
        .map(|i| {
            format!(
                r#"{{"id":"subscriber-{i:08}","card":"{}","exp":"{:02}/{:02}","status":"{}"}}"#,
                card(i),
                i % 12 + 1,
                30 + i % 20,
                statuses[i % statuses.len()]
            )
        })
        .collect();
    format!(
        r#"{{"status":"success","message":"success","data":{{"batch_id":"bqgbm86g10l2fm2bv7n1","status":"completed","cards":[{}],"stats":{{"number_submitted":{CARDS},"no_change":0,"updated_card":1667,"updated_expiry":1667,"no_match":1667,"valid":1667,"contact":1666,"closed":1666}},"created_at":"2020-04-22T21:46:08.448148Z","updated_at":"2020-04-22T21:46:08.448148Z"}}}}"#,
        cards.join(",")
    )
    .into_bytes()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f` once and returns the seconds it took. What it returns is dropped afterwards, out of
/// the timing: dropping is not decoding.
fn time<T>(f: impl FnOnce() -> T) -> f64 {
    let start = Instant::now();
    let out = black_box(f());
    let secs = start.elapsed().as_secs_f64();
    drop(out);
    secs
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if smoke { 1 } else { 21 });

    let body = results_body();
    let response = http::Response::new(body.clone());
    let config =
        Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("key").unwrap());
    let batch = CreateBatch::new(
        (0..CARDS)
            .map(|i| {
                BatchCard::new(
                    format!("subscriber-{i:08}"),
                    Pan::parse(&card(i)).unwrap(),
                    Expiry::new(2030 + (i % 20) as u16, (i % 12 + 1) as u8).unwrap(),
                )
            })
            .collect(),
    )
    .unwrap();
    let encoded_len = batch.encode(&config).unwrap().body().len();
    let decoded = GetBatchResults::decode(&response).unwrap();
    assert_eq!(decoded.cards.len(), CARDS);

    let (mut typed, mut value, mut encode) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut steps: [&mut dyn FnMut(); 3] = [
            &mut || {
                typed.push(time(|| {
                    GetBatchResults::decode(black_box(&response)).unwrap()
                }))
            },
            // The same whole-body UTF-8 check the typed decoder does, so both parse from &str.
            &mut || {
                value.push(time(|| {
                    let text = std::str::from_utf8(black_box(&body)).unwrap();
                    serde_json::from_str::<serde_json::Value>(text).unwrap()
                }))
            },
            &mut || encode.push(time(|| black_box(&batch).encode(&config).unwrap())),
        ];
        // Rotate the order so that no step always runs first.
        steps.rotate_left(round % 3);
        for step in steps {
            step();
        }
    }
    let mb = |bytes: usize, secs: f64| bytes as f64 / secs / 1e6;
    let (t, v, e) = (median(typed), median(value), median(encode));
    println!("{CARDS}-card bodies, median of {rounds} rounds:");
    println!(
        "  decode results, typed and PAN-safe  {:>8.0} MB/s  ({:.2} ms for {:.2} MB)",
        mb(body.len(), t),
        t * 1e3,
        body.len() as f64 / 1e6
    );
    println!(
        "  decode results, serde_json::Value   {:>8.0} MB/s  ({:.2} ms)",
        mb(body.len(), v),
        v * 1e3
    );
    println!(
        "  encode batch request                {:>8.0} MB/s  ({:.2} ms for {:.2} MB)",
        mb(encoded_len, e),
        e * 1e3,
        encoded_len as f64 / 1e6
    );
    println!(
        "  typed decoding vs Value             {:>8.1}x faster",
        v / t
    );
}
