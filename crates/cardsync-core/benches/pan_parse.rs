//! `cargo bench -p cardsync-core`: `Pan::parse` (validation and brand) against `luhn::valid`
//! (validation only) on the same million 16-digit inputs, in one run.
//!
//! The two run in alternating rounds so that machine noise falls on both; each figure is the
//! median round. The inputs are a card-on-file mix (half Visa, a third Mastercard, the rest
//! Discover, including 1% from the co-branded range that needs six digits to tell), one in ten
//! with a wrong check digit. Set `BENCH_ROUNDS` to change the number of rounds (default 11).

use std::hint::black_box;
use std::time::Instant;

use cardsync_core::Pan;

const INPUTS: usize = 1_000_000;

/// A small deterministic generator, so every run measures the same inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The inputs, back to back in one string as a file reader's buffer holds them.
fn inputs() -> String {
    // (prefix, share in percent)
    let mix = [
        ("4", 50),
        ("51", 8),
        ("52", 8),
        ("53", 7),
        ("54", 6),
        ("55", 3),
        ("2221", 2),
        ("2720", 1),
        ("6011", 9),
        ("65", 3),
        ("644", 2),
        ("622126", 1),
    ];
    let prefixes: Vec<&str> = mix
        .iter()
        .flat_map(|&(p, share)| std::iter::repeat_n(p, share))
        .collect();
    assert_eq!(prefixes.len(), 100);
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    (0..INPUTS)
        .map(|_| {
            let prefix = prefixes[(rng.next() % 100) as usize];
            let mut s = prefix.as_bytes().to_vec();
            while s.len() < 15 {
                s.push(b'0' + (rng.next() % 10) as u8);
            }
            let mut check =
                cardsync_core::luhn_check_digit(std::str::from_utf8(&s).expect("ASCII"))
                    .expect("digits");
            if rng.next().is_multiple_of(10) {
                check = b'0' + (check - b'0' + 1) % 10;
            }
            s.push(check);
            String::from_utf8(s).expect("ASCII")
        })
        .collect()
}

/// The 16-byte inputs of `all`.
fn split(all: &str) -> Vec<&str> {
    (0..all.len() / 16)
        .map(|i| &all[i * 16..i * 16 + 16])
        .collect()
}

/// Runs `f` over every input and returns nanoseconds per input and how many were valid.
fn pass(inputs: &[&str], f: impl Fn(&str) -> bool) -> (f64, usize) {
    // The slice is opaque to the optimiser, and every result is counted, so no call can be
    // skipped or hoisted; a `black_box` per input would add a store and a load to both sides.
    let inputs = black_box(inputs);
    let start = Instant::now();
    let mut valid = 0;
    for &s in inputs {
        valid += usize::from(f(s));
    }
    let ns = start.elapsed().as_nanos() as f64 / inputs.len() as f64;
    (ns, black_box(valid))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; a smoke run is enough then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if smoke { 1 } else { 11 });
    let all = inputs();
    let inputs = split(&all);
    let inputs = if smoke {
        &inputs[..10_000]
    } else {
        &inputs[..]
    };

    let ours = |s: &str| Pan::parse(s).is_ok();
    let theirs = |s: &str| luhn::valid(s);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut valid_ours, mut valid_theirs) = (0, 0);
    for round in 0..rounds {
        // Alternate which goes first so that neither always runs on a warmer machine.
        if round % 2 == 0 {
            let r = pass(inputs, ours);
            a.push(r.0);
            valid_ours = r.1;
            let r = pass(inputs, theirs);
            b.push(r.0);
            valid_theirs = r.1;
        } else {
            let r = pass(inputs, theirs);
            b.push(r.0);
            valid_theirs = r.1;
            let r = pass(inputs, ours);
            a.push(r.0);
            valid_ours = r.1;
        }
    }
    assert_eq!(
        valid_ours, valid_theirs,
        "the two disagree on which inputs are valid"
    );
    let (ours_ns, theirs_ns) = (median(a), median(b));
    println!(
        "{} 16-digit PANs ({} valid), median of {rounds} alternating rounds:",
        inputs.len(),
        valid_ours
    );
    println!("  Pan::parse (validation + brand)  {ours_ns:>8.2} ns/PAN");
    println!("  luhn::valid (validation only)    {theirs_ns:>8.2} ns/PAN");
    println!(
        "  ratio                            {:>8.1}x",
        theirs_ns / ours_ns
    );
}
