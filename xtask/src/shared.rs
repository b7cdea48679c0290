//! `cargo xtask bench shared [--rows N] [--latency D] [--rounds R]`: the shared PostgreSQL
//! journal with 1, 2 and 4 `cardsync worker` processes (one lane each) on one job of N cards
//! (default 1,000,000, 10,000 a request) against an emulator that answers every API request
//! after D (default 100ms). Each configuration gets a fresh emulator and a fresh schema; the
//! rounds alternate between configurations. Reported: the time from the workers' start to the
//! last one's exit, the speed-up over one worker, and per request, with one worker, the time
//! spent waiting for PostgreSQL (every claim and write, as the worker measures it) and the
//! worker's own work besides (encoding requests, decoding results, sealing).
//!
//! PostgreSQL: the server `CARDSYNC_TEST_POSTGRES` names, else a throwaway one that
//! `.ci/postgres.sh` starts and this stops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";

/// The database for the run, stopped on drop when this run started it.
struct Database {
    url: String,
    started: Option<PathBuf>,
    root: PathBuf,
}

impl Database {
    fn get(root: &Path) -> Result<Database, String> {
        if let Ok(url) = std::env::var("CARDSYNC_TEST_POSTGRES") {
            return Ok(Database {
                url,
                started: None,
                root: root.to_owned(),
            });
        }
        let out = Command::new("bash")
            .arg(root.join(".ci/postgres.sh"))
            .arg("start")
            .output()
            .map_err(|e| format!("starting PostgreSQL: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "starting PostgreSQL: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(str::to_owned)
        };
        Ok(Database {
            url: value("CARDSYNC_TEST_POSTGRES").ok_or("no URL from postgres.sh")?,
            started: value("CARDSYNC_TEST_POSTGRES_DIR").map(PathBuf::from),
            root: root.to_owned(),
        })
    }

    /// A fresh schema: its URL.
    fn schema(&self, name: &str) -> Result<String, String> {
        let status = Command::new("psql")
            .args([&self.url, "-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .status()
            .map_err(|e| format!("psql: {e}"))?;
        if !status.success() {
            return Err("psql failed".into());
        }
        let sep = if self.url.contains('?') { '&' } else { '?' };
        Ok(format!(
            "{}{sep}options=-c%20search_path%3D{name}",
            self.url
        ))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(dir) = &self.started {
            let _ = Command::new("bash")
                .arg(self.root.join(".ci/postgres.sh"))
                .arg("stop")
                .arg(dir)
                .status();
        }
    }
}

fn cardsync(bin: &Path, base: &str, journal: &str) -> Command {
    let mut c = Command::new(bin);
    c.env("CARDSYNC_BASE_URL", base)
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key")
        .env("CARDSYNC_JOURNAL", journal)
        .env("CARDSYNC_JOURNAL_KEY", KEY)
        .stdin(Stdio::null());
    c
}

/// A worker's summary line (JSON): (journal ms, http ms, idle ms, busy ms).
fn summary(child: Child) -> Result<(u64, u64, u64, u64), String> {
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "a worker failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.split(&format!("\"{name}\":"))
            .nth(1)
            .and_then(|s| s.split([',', '}']).next())
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((
        field("claims"),
        field("http_ms"),
        field("idle_ms"),
        field("busy_ms"),
    ))
}

struct Round {
    workers: usize,
    plan: Duration,
    work: Duration,
    export: Duration,
    /// Per request, with one worker: the time spent waiting for the journal (ms), and the
    /// worker's own time besides (ms).
    overhead_ms: Option<(f64, f64)>,
}

fn one_round(
    bin: &Path,
    db: &Database,
    cards: &Path,
    rows: u64,
    latency: &str,
    workers: usize,
    out_dir: &Path,
) -> Result<Round, String> {
    let emulator = super::bench::Emulator::start(bin, latency)?;
    let journal = db.schema(&format!("bench_{workers}"))?;
    let started = Instant::now();
    let status = cardsync(bin, &emulator.base_url, &journal)
        .args(["-q", "job", "create", "bench"])
        .arg(cards)
        .args(["--max-in-flight", "8"])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("job create failed".into());
    }
    let plan = started.elapsed();
    let started = Instant::now();
    let children: Vec<Child> = (0..workers)
        .map(|_| {
            cardsync(bin, &emulator.base_url, &journal)
                .args([
                    "--output",
                    "json",
                    "worker",
                    "--concurrency",
                    "1",
                    "--poll-max",
                    "1s",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut summaries = Vec::new();
    for child in children {
        summaries.push(summary(child)?);
    }
    let work = started.elapsed();
    let out = out_dir.join("shared-results.csv");
    let started = Instant::now();
    let status = cardsync(bin, &emulator.base_url, &journal)
        .args(["-q", "job", "export", "bench", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("job export failed".into());
    }
    let export = started.elapsed();
    let got = BufReader::new(std::fs::File::open(&out).map_err(|e| e.to_string())?)
        .lines()
        .count() as u64
        - 1;
    if got != rows {
        return Err(format!(
            "{workers} workers exported {got} results for {rows} cards"
        ));
    }
    let requests = rows.div_ceil(10_000) as f64;
    let overhead_ms = (workers == 1).then(|| {
        let (journal, http, idle, busy) = summaries[0];
        (
            journal as f64 / requests,
            busy.saturating_sub(http + idle + journal) as f64 / requests,
        )
    });
    Ok(Round {
        workers,
        plan,
        work,
        export,
        overhead_ms,
    })
}

/// Runs the benchmark.
pub(crate) fn run(args: &[&str]) -> Result<(), String> {
    let mut rows: u64 = 1_000_000;
    let mut latency = "100ms".to_owned();
    let mut rounds = 2usize;
    let mut rest = args;
    while let [flag, value, tail @ ..] = rest {
        match *flag {
            "--rows" => rows = value.parse().map_err(|_| format!("--rows {value:?}"))?,
            "--latency" => latency = (*value).to_owned(),
            "--rounds" => rounds = value.parse().map_err(|_| format!("--rounds {value:?}"))?,
            _ => return Err(format!("unknown option {flag}")),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err("usage: cargo xtask bench shared [--rows N] [--latency D] [--rounds R]".into());
    }
    let root = crate::project_root();
    let bin = super::bench::build_release(&root)?;
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cards = dir.join(format!("shared-cards-{rows}.csv"));
    let rows = super::bench::write_valid_cards(&cards, rows)?;
    let db = Database::get(&root)?;
    let mut all: Vec<Round> = Vec::new();
    for round in 1..=rounds {
        for workers in [1, 2, 4] {
            eprintln!(
                "round {round} of {rounds}: {workers} workers, {rows} cards, latency {latency}..."
            );
            all.push(one_round(&bin, &db, &cards, rows, &latency, workers, &dir)?);
        }
    }
    let median = |w: usize, f: &dyn Fn(&Round) -> Duration| {
        let mut v: Vec<Duration> = all.iter().filter(|r| r.workers == w).map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    let one = median(1, &|r| r.work);
    let mut journal: Vec<f64> = all
        .iter()
        .filter_map(|r| r.overhead_ms.map(|o| o.0))
        .collect();
    journal.sort_by(f64::total_cmp);
    let mut own: Vec<f64> = all
        .iter()
        .filter_map(|r| r.overhead_ms.map(|o| o.1))
        .collect();
    own.sort_by(f64::total_cmp);
    let (journal, own) = (journal[journal.len() / 2], own[own.len() / 2]);
    let mut table = format!(
        "| workers | work (median of {rounds}) | cards/s | vs 1 worker | plan | export |\n|---|---|---|---|---|---|\n"
    );
    for w in [1, 2, 4] {
        let work = median(w, &|r| r.work);
        table.push_str(&format!(
            "| {w} | {:.2} s | {:.0} | {:.2}× | {:.2} s | {:.2} s |\n",
            work.as_secs_f64(),
            rows as f64 / work.as_secs_f64(),
            one.as_secs_f64() / work.as_secs_f64(),
            median(w, &|r| r.plan).as_secs_f64(),
            median(w, &|r| r.export).as_secs_f64(),
        ));
    }
    table.push_str(&format!(
        "\nper request of {per} cards, one worker (median): waiting for PostgreSQL {journal:.1} ms \
         (goal ≤ 5 ms); the worker's own work besides (encoding, decoding, sealing) {own:.1} ms; \
         the 4-worker goal: ≥ 3.50× one worker\n",
        per = 10_000
    ));
    println!("{table}");
    Ok(())
}
