//! `cargo bench -p cardsync-core --bench redact_ids`: `redact_digit_runs` over a million ids,
//! as `validate` and `sync` run it on every id of a file.
//!
//! The ids are a merchant's mix: references like `sub-0004217` and `CUST/2024/000042`, e-mail
//! addresses, UUIDs (a fifth of them), and one in a hundred holding a card number (grouped by
//! spaces, hyphens or dots, or not at all), back to back in one string as a file reader's
//! buffer holds them. Prints nanoseconds per id for the mix and for each kind alone, each the
//! median of `BENCH_ROUNDS` rounds (default 11), and how many ids were masked.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Instant;

use cardsync_core::redact_digit_runs;

const IDS: usize = 1_000_000;

/// A small deterministic generator, so every run measures the same ids.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const KINDS: [&str; 5] = ["card number", "reference", "path-like", "UUID", "e-mail"];

/// One id of kind `kind` (an index into [`KINDS`]).
fn id(kind: usize, n: u64, i: usize) -> String {
    match kind {
        0 => {
            let card = format!("4532{:012}", n % 1_000_000_000_000);
            let sep = ["", " ", "-", "."][(n >> 40) as usize % 4];
            let groups: Vec<&str> = (0..4).map(|g| &card[g * 4..g * 4 + 4]).collect();
            groups.join(sep)
        }
        1 => format!("sub-{:07}", n % 10_000_000),
        2 => format!("CUST/2024/{:06}", n % 1_000_000),
        3 => format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            n as u32,
            (n >> 32) as u16,
            i % 4096,
            (n >> 20) % 4096,
            n >> 16
        ),
        _ => format!("customer.{}@example.com", n % 100_000),
    }
}

/// A million ids: of one kind, or (`None`) the mix.
fn ids(kind: Option<usize>) -> Vec<String> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    (0..IDS)
        .map(|i| {
            let n = rng.next();
            let kind = kind.unwrap_or(match n % 100 {
                0 => 0,
                1..=40 => 1,
                41..=60 => 2,
                61..=80 => 3,
                _ => 4,
            });
            id(kind, n, i)
        })
        .collect()
}

/// Median nanoseconds per id over `rounds`, and how many ids were masked.
fn measure(owned: &[String], rounds: usize) -> (f64, usize, f64) {
    let joined: String = owned.concat();
    let mut at = 0;
    let ids: Vec<&str> = owned
        .iter()
        .map(|id| {
            at += id.len();
            &joined[at - id.len()..at]
        })
        .collect();
    let mut times = Vec::new();
    let mut masked = 0;
    for _ in 0..rounds {
        let ids = black_box(&ids[..]);
        let start = Instant::now();
        masked = 0;
        for &id in ids {
            masked += usize::from(matches!(redact_digit_runs(id), Cow::Owned(_)));
        }
        times.push(start.elapsed().as_nanos() as f64 / ids.len() as f64);
        black_box(masked);
    }
    times.sort_by(f64::total_cmp);
    let bytes = joined.len() as f64 / ids.len() as f64;
    (times[times.len() / 2], masked, bytes)
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; a smoke run is enough then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if smoke { 1 } else { 11 });
    let take = |mut v: Vec<String>| {
        if smoke {
            v.truncate(10_000);
        }
        v
    };
    println!("redact_digit_runs, median of {rounds} rounds:");
    let (ns, masked, bytes) = measure(&take(ids(None)), rounds);
    println!("  the mix        {ns:>8.2} ns/id  ({bytes:>4.1} bytes/id, {masked:>7} masked)");
    for (kind, name) in KINDS.iter().enumerate() {
        let (ns, masked, bytes) = measure(&take(ids(Some(kind))), rounds);
        println!("  {name:<14} {ns:>8.2} ns/id  ({bytes:>4.1} bytes/id, {masked:>7} masked)");
    }
}
