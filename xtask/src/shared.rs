//! `cargo xtask bench shared [--rows N] [--latency D] [--rounds R] [--baseline BIN]`: the shared PostgreSQL
//! journal with 1, 2 and 4 `cardsync worker` processes (one lane each) on one job of N cards
//! (default 1,000,000, 10,000 a request) against an emulator that answers every API request
//! after D (default 100ms). Each configuration gets a fresh emulator and a fresh schema; the
//! rounds alternate between configurations. Reported: the time from the workers' start to the
//! last one's exit, the speed-up over one worker, and per request, with one worker, the time
//! spent waiting for PostgreSQL (every claim and write, as the worker measures it) and the
//! worker's own work besides (encoding requests, decoding results, sealing); and the workers'
//! CPU time per request (user and system, read from `/proc` while they run).
//!
//! With `--baseline BIN` (another build of `cardsync`, say of an earlier commit), every
//! configuration also runs with that binary's `job create`, workers and `job export`, right
//! after this tree's, against this tree's emulator; the table adds the baseline's time and the
//! ratio of the two.
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
        field("journal_ms"),
        field("http_ms"),
        field("idle_ms"),
        field("busy_ms"),
    ))
}

struct Round {
    /// 0: the binary under test; 1: the baseline (`--baseline`).
    side: usize,
    workers: usize,
    plan: Duration,
    work: Duration,
    export: Duration,
    /// Per request, with one worker: the time spent waiting for the journal (ms), and the
    /// worker's own time besides (ms).
    overhead_ms: Option<(f64, f64)>,
    /// The workers' CPU time (user and system, all of them together) per request, in ms.
    cpu_ms: f64,
}

#[allow(clippy::too_many_arguments)]
fn one_round(
    side: usize,
    bin: &Path,
    emulator_bin: &Path,
    db: &Database,
    cards: &Path,
    rows: u64,
    latency: &str,
    workers: usize,
    out_dir: &Path,
) -> Result<Round, String> {
    let emulator = super::bench::Emulator::start(emulator_bin, latency)?;
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
    let cpu: Vec<CpuWatch> = children.iter().map(|c| CpuWatch::start(c.id())).collect();
    let mut summaries = Vec::new();
    for child in children {
        summaries.push(summary(child)?);
    }
    let work = started.elapsed();
    let cpu_ticks: u64 = cpu.into_iter().map(CpuWatch::finish).sum();
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
    let cpu_ms = cpu_ticks as f64 * 1000.0 / clock_ticks() as f64 / requests;
    let overhead_ms = (workers == 1).then(|| {
        let (journal, http, idle, busy) = summaries[0];
        (
            journal as f64 / requests,
            busy.saturating_sub(http + idle + journal) as f64 / requests,
        )
    });
    Ok(Round {
        side,
        workers,
        plan,
        work,
        export,
        overhead_ms,
        cpu_ms,
    })
}

/// A process's CPU time (user and system, in clock ticks), read from `/proc/PID/stat` every
/// 20 ms while it runs: the last reading before it exits.
struct CpuWatch {
    last: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl CpuWatch {
    fn start(pid: u32) -> CpuWatch {
        let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let last = last.clone();
            std::thread::spawn(move || {
                let path = format!("/proc/{pid}/stat");
                // Until the process is reaped (its stat can no longer be read), at most an hour.
                for _ in 0..180_000 {
                    let Ok(text) = std::fs::read_to_string(&path) else {
                        return;
                    };
                    // After the command name in parentheses: state is field 3, utime 14, stime 15.
                    let fields: Vec<&str> = text
                        .rsplit_once(')')
                        .map(|(_, rest)| rest.split_whitespace().collect())
                        .unwrap_or_default();
                    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
                    if let (Some(user), Some(system)) = (tick(11), tick(12)) {
                        last.store(user + system, std::sync::atomic::Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        CpuWatch { last, thread }
    }

    /// The last reading, once the process is gone.
    fn finish(self) -> u64 {
        let _ = self.thread.join();
        self.last.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Runs the benchmark.
pub(crate) fn run(args: &[&str]) -> Result<(), String> {
    const USAGE: &str =
        "usage: cargo xtask bench shared [--rows N] [--latency D] [--rounds R] [--baseline BIN]";
    let mut rows: u64 = 1_000_000;
    let mut latency = "100ms".to_owned();
    let mut rounds = 2usize;
    let mut baseline: Option<PathBuf> = None;
    let mut rest = args;
    while let [flag, value, tail @ ..] = rest {
        match *flag {
            "--rows" => rows = value.parse().map_err(|_| format!("--rows {value:?}"))?,
            "--latency" => latency = (*value).to_owned(),
            "--rounds" => rounds = value.parse().map_err(|_| format!("--rounds {value:?}"))?,
            "--baseline" => baseline = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(USAGE.into());
    }
    let root = crate::project_root();
    let bin = super::bench::build_release(&root)?;
    if let Some(b) = baseline.as_ref().filter(|b| !b.is_file()) {
        return Err(format!("--baseline {}: no such file", b.display()));
    }
    // The binary under test, then the baseline; both against this tree's emulator, so that
    // only the journal and the worker differ.
    let sides: Vec<&Path> = std::iter::once(bin.as_path())
        .chain(baseline.as_deref())
        .collect();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cards = dir.join(format!("shared-cards-{rows}.csv"));
    let rows = super::bench::write_valid_cards(&cards, rows)?;
    let db = Database::get(&root)?;
    let mut all: Vec<Round> = Vec::new();
    for round in 1..=rounds {
        for workers in [1, 2, 4] {
            for (side, side_bin) in sides.iter().enumerate() {
                eprintln!(
                    "round {round} of {rounds}: {} with {workers} workers, {rows} cards, latency {latency}...",
                    if side == 0 {
                        "this tree"
                    } else {
                        "the baseline"
                    }
                );
                all.push(one_round(
                    side, side_bin, &bin, &db, &cards, rows, &latency, workers, &dir,
                )?);
            }
        }
    }
    let median = |side: usize, w: usize, f: &dyn Fn(&Round) -> Duration| {
        let mut v: Vec<Duration> = all
            .iter()
            .filter(|r| r.side == side && r.workers == w)
            .map(f)
            .collect();
        v.sort();
        v[v.len() / 2]
    };
    let cpu = |side: usize, w: usize| {
        let mut v: Vec<f64> = all
            .iter()
            .filter(|r| r.side == side && r.workers == w)
            .map(|r| r.cpu_ms)
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let overhead = |side: usize, pick: &dyn Fn((f64, f64)) -> f64| {
        let mut v: Vec<f64> = all
            .iter()
            .filter(|r| r.side == side)
            .filter_map(|r| r.overhead_ms.map(pick))
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut table = format!(
        "| workers | work (median of {rounds}) | cards/s | vs 1 worker | plan | export | workers' CPU per request |{}\n|---|---|---|---|---|---|---|{}\n",
        if sides.len() > 1 {
            " baseline work | this ÷ baseline | baseline CPU per request |"
        } else {
            ""
        },
        if sides.len() > 1 { "---|---|---|" } else { "" },
    );
    let one = median(0, 1, &|r| r.work);
    for w in [1, 2, 4] {
        let work = median(0, w, &|r| r.work);
        table.push_str(&format!(
            "| {w} | {:.2} s | {:.0} | {:.2}× | {:.2} s | {:.2} s |",
            work.as_secs_f64(),
            rows as f64 / work.as_secs_f64(),
            one.as_secs_f64() / work.as_secs_f64(),
            median(0, w, &|r| r.plan).as_secs_f64(),
            median(0, w, &|r| r.export).as_secs_f64(),
        ));
        table.push_str(&format!(" {:.1} ms |", cpu(0, w)));
        if sides.len() > 1 {
            let base = median(1, w, &|r| r.work);
            table.push_str(&format!(
                " {:.2} s | {:.2}× | {:.1} ms |",
                base.as_secs_f64(),
                work.as_secs_f64() / base.as_secs_f64(),
                cpu(1, w),
            ));
        }
        table.push('\n');
    }
    for (side, name) in sides
        .iter()
        .enumerate()
        .map(|(i, _)| (i, ["this tree", "the baseline"][i]))
    {
        table.push_str(&format!(
            "\n{name}, per request of {per} cards, one worker (median): waiting for PostgreSQL \
             {journal:.1} ms (goal ≤ 5 ms); the worker's own work besides (encoding, decoding, \
             sealing) {own:.1} ms",
            per = 10_000,
            journal = overhead(side, &|o| o.0),
            own = overhead(side, &|o| o.1),
        ));
    }
    table.push_str("\nthe 4-worker goal: ≥ 3.50× one worker\n");
    println!("{table}");
    Ok(())
}
