//! `cargo xtask bench [--rows N] [--baseline BIN]`: the `cardsync` command against plain Python,
//! side by side.
//!
//! 1. Generates a card file of N rows (default 1,000,000): Visa, Mastercard and Discover,
//!    about 1% with a bad check digit.
//! 2. `cardsync validate` against `xtask/bench/validate.py` (the csv module, a Luhn loop,
//!    prefix checks), each run five times alternately; medians and bests are compared.
//! 3. `cardsync sync` against `xtask/bench/sync_client.py` (requests + json, written the way
//!    the documents' Python samples are), each against a fresh local emulator
//!    (`cardsync sandbox --complete-after 0 --report-unchanged`, so that every card has a
//!    result row) of its own, on the valid rows, three times alternately; with each client's
//!    peak resident memory (VmHWM, read from /proc while it runs).
//! 4. With `--baseline BIN` (another build of `cardsync`, say of an earlier commit), each sync
//!    round also runs that binary's `sync`, against this tree's emulator, and a second table
//!    gives the median times of the two builds and their ratio.
//!
//! Prints a table. Timings are of whole commands, wall clock, on a shared machine: read the
//! ratios, not the absolute times. Both the median and the best run of each side are shown:
//! the machine's load comes and goes, and a slow spell during one short run moves a median
//! of a few runs a long way; the best runs are the least disturbed.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::project_root;

/// A small deterministic generator (SplitMix64): the same file on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Writes `rows` cards; returns how many are valid.
fn generate(path: &Path, rows: u64) -> Result<u64, String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = Rng(0x5EED);
    let mut valid = 0;
    writeln!(out, "id,card,exp").map_err(|e| e.to_string())?;
    for i in 0..rows {
        let r = rng.next();
        let prefix: &[u8] = match r % 3 {
            0 => b"4",
            1 => b"51",
            _ => b"6011",
        };
        let mut digits = [0u8; 16];
        digits[..prefix.len()].copy_from_slice(prefix);
        let mut x = rng.next();
        for d in digits.iter_mut().take(15).skip(prefix.len()) {
            *d = b'0' + (x % 10) as u8;
            x /= 10;
        }
        // The Luhn check digit.
        let mut sum = 0;
        for (k, &d) in digits[..15].iter().rev().enumerate() {
            let mut v = u32::from(d - b'0');
            if k % 2 == 0 {
                v *= 2;
                if v > 9 {
                    v -= 9;
                }
            }
            sum += v;
        }
        let mut check = ((10 - sum % 10) % 10) as u8;
        if (r >> 32).is_multiple_of(100) {
            check = (check + 1) % 10; // about 1% bad check digits
        } else {
            valid += 1;
        }
        digits[15] = b'0' + check;
        let month = 1 + (r >> 8) % 12;
        let year = 27 + (r >> 16) % 8;
        writeln!(
            out,
            "c{i:07},{},{month:02}/{year}",
            std::str::from_utf8(&digits).expect("digits")
        )
        .map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(valid)
}

/// Keeps only the valid rows, with `cardsync validate`'s verdicts, so that `sync` gets a
/// clean file (both clients then send the same cards).
fn valid_only(cardsync: &Path, input: &Path, output: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(input).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let card = line.split(',').nth(1).unwrap_or("");
        if i == 0 || luhn_ok(card) {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(output, out).map_err(|e| e.to_string())?;
    let status = Command::new(cardsync)
        .args(["-q", "validate"])
        .arg(output)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("the filtered file still has invalid rows".to_owned());
    }
    Ok(())
}

/// Builds `cardsync` with the release profile: its path.
pub(crate) fn build_release(root: &Path) -> Result<std::path::PathBuf, String> {
    eprintln!("building cardsync (release)...");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "cardsync-cli"])
        .current_dir(root)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("cargo build failed".to_owned());
    }
    Ok(root.join("target/release/cardsync"))
}

/// Writes the valid cards of the generated file of `rows` rows to `path` (kept when it is
/// there already): how many there are.
pub(crate) fn write_valid_cards(path: &Path, rows: u64) -> Result<u64, String> {
    if !path.exists() {
        let all = path.with_extension("all.csv");
        generate(&all, rows)?;
        let text = std::fs::read_to_string(&all).map_err(|e| e.to_string())?;
        let mut out = String::with_capacity(text.len());
        for (i, line) in text.lines().enumerate() {
            if i == 0 || luhn_ok(line.split(',').nth(1).unwrap_or("")) {
                out.push_str(line);
                out.push('\n');
            }
        }
        std::fs::write(path, out).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&all);
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    Ok(BufReader::new(file).lines().count() as u64 - 1)
}

fn luhn_ok(card: &str) -> bool {
    let mut sum = 0;
    for (k, b) in card.bytes().rev().enumerate() {
        let mut v = u32::from(b.wrapping_sub(b'0'));
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

/// Runs a command to its end; returns its wall time and its peak RSS in KiB.
fn measure(command: &mut Command) -> Result<(Duration, u64), String> {
    let start = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{command:?}: {e}"))?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    if !status.success() && status.code() != Some(1) {
        return Err(format!("{command:?} failed: {status}"));
    }
    Ok((elapsed, peak))
}

/// A local emulator in its own process, stopped on drop.
pub(crate) struct Emulator {
    child: Child,
    pub(crate) base_url: String,
}

impl Emulator {
    /// An emulator that answers after `latency` (such as `100ms`; `0` for at once).
    pub(crate) fn start(cardsync: &Path, latency: &str) -> Result<Emulator, String> {
        let mut child = Command::new(cardsync)
            .args([
                "--output",
                "json",
                "sandbox",
                "--addr",
                "127.0.0.1:0",
                "--complete-after",
                "0",
                "--report-unchanged",
                "--latency",
                latency,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the emulator: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let base_url = line
            .split("\"base_url\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or_else(|| format!("the emulator said {line:?}"))?
            .to_owned();
        Ok(Emulator { child, base_url })
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn best(v: &[Duration]) -> Duration {
    v.iter().copied().min().unwrap_or_default()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Runs the benchmark.
pub(crate) fn run(args: &[&str]) -> Result<(), String> {
    const USAGE: &str = "usage: cargo xtask bench [--rows N] [--baseline BIN]";
    let mut rows: u64 = 1_000_000;
    let mut baseline: Option<std::path::PathBuf> = None;
    let mut rest = args;
    while let [flag, value, tail @ ..] = rest {
        match *flag {
            "--rows" => rows = value.parse().map_err(|_| format!("--rows {value:?}"))?,
            "--baseline" => baseline = Some(value.into()),
            _ => return Err(USAGE.to_owned()),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(USAGE.to_owned());
    }
    if let Some(b) = baseline.as_ref().filter(|b| !b.is_file()) {
        return Err(format!("--baseline {}: no such file", b.display()));
    }
    let root = project_root();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let scripts = root.join("xtask/bench");

    let cardsync = build_release(&root)?;
    let ok = Command::new(&python)
        .args(["-c", "import requests"])
        .status()
        .map_err(|e| format!("{python}: {e}"))?;
    if !ok.success() {
        return Err(format!(
            "the Python client needs requests: {python} -m pip install requests"
        ));
    }

    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cards = dir.join(format!("cards-{rows}.csv"));
    eprintln!("generating {rows} rows in {}...", cards.display());
    let valid = generate(&cards, rows)?;
    let clean = dir.join(format!("cards-{rows}-valid.csv"));
    valid_only(&cardsync, &cards, &clean)?;

    // validate: alternating runs.
    const VALIDATE_ROUNDS: usize = 5;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 1..=VALIDATE_ROUNDS {
        eprintln!("validate, round {round} of {VALIDATE_ROUNDS}...");
        ours.push(
            measure(
                Command::new(&cardsync)
                    .args(["--output", "json", "validate"])
                    .arg(&cards),
            )?
            .0,
        );
        theirs.push(
            measure(
                Command::new(&python)
                    .arg(scripts.join("validate.py"))
                    .arg(&cards),
            )?
            .0,
        );
    }

    // sync: each client against a fresh emulator, alternately; at once, then 100 ms away.
    const SYNC_ROUNDS: usize = 3;
    let mut baseline_runs: Vec<(String, Duration, Duration)> = Vec::new();
    let mut rounds = |latency: &str| -> Result<[Vec<(Duration, u64)>; 2], String> {
        let (mut ours, mut theirs, mut base) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=SYNC_ROUNDS {
            eprintln!("sync, server latency {latency}, round {round} of {SYNC_ROUNDS}...");
            let out = dir.join("results.csv");
            for stale in ["results.csv", "results.csv.journal", "results.csv.partial"] {
                let _ = std::fs::remove_file(dir.join(stale));
            }
            ours.push(sync_run(
                (&cardsync, latency),
                "cardsync sync",
                Command::new(&cardsync)
                    .args(["-q", "sync", "--poll-max", "1s", "--out"])
                    .arg(&out)
                    .arg(&clean),
                &out,
                valid,
            )?);
            let py_out = dir.join("results-python.csv");
            theirs.push(sync_run(
                (&cardsync, latency),
                "the Python client",
                Command::new(&python)
                    .arg(scripts.join("sync_client.py"))
                    .arg(&clean)
                    .arg(&py_out),
                &py_out,
                valid,
            )?);
            if let Some(baseline) = &baseline {
                let base_out = dir.join("results-baseline.csv");
                for stale in ["", ".journal", ".partial"] {
                    let _ = std::fs::remove_file(dir.join(format!("results-baseline.csv{stale}")));
                }
                base.push(
                    sync_run(
                        (&cardsync, latency),
                        "the baseline",
                        Command::new(baseline)
                            .args(["-q", "sync", "--poll-max", "1s", "--out"])
                            .arg(&base_out)
                            .arg(&clean),
                        &base_out,
                        valid,
                    )?
                    .0,
                );
            }
        }
        if !base.is_empty() {
            let this: Vec<Duration> = ours.iter().map(|r: &(Duration, u64)| r.0).collect();
            baseline_runs.push((latency.to_owned(), median(this), median(base)));
        }
        Ok([ours, theirs])
    };
    let [sync_ours, sync_theirs] = rounds("0")?;
    let [slow_ours, slow_theirs] = rounds("100ms")?;
    let peak = |v: &[(Duration, u64)]| v.iter().map(|r| r.1).max().unwrap_or_default();
    let (m_ours, m_theirs) = (peak(&sync_ours), peak(&sync_theirs));
    let (slow_m_ours, slow_m_theirs) = (peak(&slow_ours), peak(&slow_theirs));
    let times = |v: &[(Duration, u64)]| v.iter().map(|r| r.0).collect::<Vec<Duration>>();
    let (sync_ours, sync_theirs) = (times(&sync_ours), times(&sync_theirs));
    let (slow_ours, slow_theirs) = (times(&slow_ours), times(&slow_theirs));

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| {rows} rows ({valid} valid) | cardsync | Python | ratio | target |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|");
    fn line(table: &mut String, what: String, ours: Duration, theirs: Duration, target: &str) {
        let _ = writeln!(
            table,
            "| {what} | {} | {} | {:.1}x | {target} |",
            secs(ours),
            secs(theirs),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
    line(
        &mut table,
        format!("validate, median of {VALIDATE_ROUNDS}"),
        median(ours.clone()),
        median(theirs.clone()),
        "<= 0.15 s, >= 40x",
    );
    line(
        &mut table,
        format!("validate, best of {VALIDATE_ROUNDS}"),
        best(&ours),
        best(&theirs),
        "<= 0.15 s, >= 40x",
    );
    line(
        &mut table,
        format!("sync, local emulator, median of {SYNC_ROUNDS}"),
        median(sync_ours.clone()),
        median(sync_theirs.clone()),
        "<= 5 s, >= 3x",
    );
    line(
        &mut table,
        format!("sync, local emulator, best of {SYNC_ROUNDS}"),
        best(&sync_ours),
        best(&sync_theirs),
        "<= 5 s, >= 3x",
    );
    let _ = writeln!(
        table,
        "| sync client peak RSS (largest) | {} MB | {} MB | | <= 64 MB |",
        m_ours / 1024,
        m_theirs / 1024
    );
    line(
        &mut table,
        format!("sync, emulator 100 ms away, median of {SYNC_ROUNDS}"),
        median(slow_ours.clone()),
        median(slow_theirs.clone()),
        "<= 4 s, >= 5x",
    );
    line(
        &mut table,
        format!("sync, emulator 100 ms away, best of {SYNC_ROUNDS}"),
        best(&slow_ours),
        best(&slow_theirs),
        "<= 4 s, >= 5x",
    );
    let _ = writeln!(
        table,
        "| sync client peak RSS, 100 ms away (largest) | {} MB | {} MB | | <= 64 MB |",
        slow_m_ours / 1024,
        slow_m_theirs / 1024
    );
    if !baseline_runs.is_empty() {
        let _ = writeln!(
            table,
            "\n| sync, median of {SYNC_ROUNDS}, server latency | this tree | baseline | this ÷ baseline |\n|---|---|---|---|"
        );
        for (latency, this, base) in &baseline_runs {
            let _ = writeln!(
                table,
                "| {latency} | {} | {} | {:.2}x |",
                secs(*this),
                secs(*base),
                this.as_secs_f64() / base.as_secs_f64()
            );
        }
    }
    println!("{table}");
    Ok(())
}

/// Runs one sync client against a fresh emulator of its own; checks that it wrote a result
/// row per card to `out`.
fn sync_run(
    (cardsync, latency): (&Path, &str),
    who: &str,
    client: &mut Command,
    out: &Path,
    valid: u64,
) -> Result<(Duration, u64), String> {
    let emulator = Emulator::start(cardsync, latency)?;
    let measured = measure(
        client
            .env("CARDSYNC_BASE_URL", &emulator.base_url)
            .env("CARDSYNC_API_KEY", "sandbox_merchant_key"),
    )?;
    drop(emulator);
    let got = count_lines(out)?.saturating_sub(1);
    if got != valid {
        return Err(format!("{who} wrote {got} results for {valid} cards"));
    }
    Ok(measured)
}

fn count_lines(path: &Path) -> Result<u64, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0;
    for line in BufReader::new(file).split(b'\n') {
        line.map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}
