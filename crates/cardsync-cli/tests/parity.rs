//! One machine or many, the same answer: one card file (every documented test card of every
//! brand, American Express rows with and without an SE number of their own, cards the issuers
//! reported lost or closed before the run, random cards, invalid rows, duplicates) through
//! `sync` on the SQLite journal, `sync --journal` on PostgreSQL, and `job create` + two
//! `worker`s + `job export`, each against an emulator of its own with webhooks (American
//! Express updates come only by webhook). The results files and the changes files (sorted,
//! without batch and event ids) and the counts per status are the same, and each emulator
//! received each card once.
//!
//! It needs the PostgreSQL that `CARDSYNC_TEST_POSTGRES` names (`bash .ci/postgres.sh run
//! cargo test …`); without it, it says so and passes, except under `CI=true`.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cardsync_core::{SANDBOX_TEST_CARDS, luhn_check_digit};

mod common;
use common::{BIN, Dir, Emulator};

const KEY: &str = "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";
const SE: &str = "9876543210";
const TOKEN: &str = "parity-receiver-token-0123";
const LOST: &str = "4111111111111111";
const CLOSED_AMEX: &str = "371449635398431";

fn database() -> Option<String> {
    match std::env::var("CARDSYNC_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CARDSYNC_TEST_POSTGRES is not set, and CI=true"
            );
            eprintln!("skipped: CARDSYNC_TEST_POSTGRES is not set (see .ci/postgres.sh)");
            None
        }
    }
}

/// A schema of its own, dropped at the end: its URL.
struct Schema {
    base: String,
    name: String,
    url: String,
}

fn psql(base: &str, sql: &str) {
    let out = Command::new("psql")
        .args([base, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Schema {
    fn new(base: &str, tag: &str) -> Schema {
        let name = format!("parity_{tag}_{}", std::process::id());
        psql(
            base,
            &format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"),
        );
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Schema {
            base: base.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        psql(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

fn command(emulator: &Emulator, journal: Option<&Schema>, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("CARDSYNC_BASE_URL", emulator.url())
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key")
        .env("CARDSYNC_ISSUER_TOKEN", "sandbox_issuer_token")
        .env("CARDSYNC_JOURNAL_KEY", KEY)
        .env_remove("CARDSYNC_JOURNAL")
        .stdin(Stdio::null());
    if let Some(schema) = journal {
        c.env("CARDSYNC_JOURNAL", &schema.url);
    }
    c
}

/// Runs to the end, at most two minutes.
fn run(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cardsync");
    wait_output(child, Duration::from_secs(120))
}

fn wait_output(child: Child, limit: Duration) -> Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("cardsync ran over {limit:?}");
        }
    }
}

fn ok(output: &Output) {
    assert!(
        output.status.code().is_some_and(|c| c == 0 || c == 1),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A valid card number: `prefix`, `n`, a check digit, 16 digits.
fn pan(prefix: &str, n: usize) -> String {
    let body = format!("{prefix}{n:0width$}", width = 15 - prefix.len());
    format!("{body}{}", char::from(luhn_check_digit(&body).unwrap()))
}

/// The card file.
fn write_cards(dir: &Path) -> String {
    let mut csv = String::from("id,card,exp,se_number\n");
    for (i, card) in SANDBOX_TEST_CARDS.iter().enumerate() {
        let exp = card.exp.unwrap_or("12/30");
        // American Express rows: every other one with an SE number of its own, the others
        // take --se-number.
        let se = if card.card.len() == 15 && i % 2 == 0 {
            "1234567890"
        } else {
            ""
        };
        csv.push_str(&format!("t{i:02},{},{exp},{se}\n", card.card));
    }
    csv.push_str(&format!("lost,{LOST},05/27,\n"));
    csv.push_str(&format!("closed,{CLOSED_AMEX},05/27,\n"));
    for i in 0..5 {
        csv.push_str(&format!("r{i},{},{:02}/31,\n", pan("4242", 70 + i), 1 + i));
    }
    // Invalid rows and a duplicate.
    csv.push_str("bad-luhn,4111111111111112,01/30,\n");
    csv.push_str("bad-exp,5112010000000003,13/30,\n");
    csv.push_str(&format!("again,{},01/50,\n", SANDBOX_TEST_CARDS[0].card));
    let path = dir.join("cards.csv");
    std::fs::write(&path, csv).unwrap();
    path.display().to_string()
}

/// What the issuers did before the run: a Visa card reported lost (and reissued), an American
/// Express account closed.
fn issuer_events(emulator: &Emulator) {
    for (card, reason) in [(LOST, "LOS"), (CLOSED_AMEX, "OTH")] {
        let mut add = command(
            emulator,
            None,
            &[
                "--output", "json", "issuer", "cards", "add", "--card", card, "--exp", "05/27",
            ],
        );
        let out = run(std::mem::replace(&mut add, Command::new("true")));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let line: serde_json::Value =
            serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
        let id = line["card_id"].as_str().unwrap().to_owned();
        let out = run(command(
            emulator,
            None,
            &[
                "issuer",
                "card-status",
                &id,
                "--status",
                "TERMINATED",
                "--reason",
                reason,
            ],
        ));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
}

fn emulator() -> Emulator {
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(300));
    issuer_events(&emulator);
    emulator
}

/// A `listen --journal` receiver on a free port: its process and URL (with the token).
fn receiver(emulator: &Emulator, schema: &Schema) -> (Child, String) {
    let mut child = command(
        emulator,
        Some(schema),
        &[
            "listen",
            "--journal",
            &schema.url,
            "--addr",
            "127.0.0.1:0",
            "--stop-after",
            "300s",
        ],
    )
    .env("CARDSYNC_WEBHOOK_TOKEN", TOKEN)
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("a receiver");
    let mut line = String::new();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, format!("http://{addr}/webhooks/{TOKEN}"))
}

/// Registers `receiver` for the merchant, at its merchant URL.
fn register(emulator: &Emulator, schema: &Schema, receiver: &str) {
    let out = run({
        let mut c = command(
            emulator,
            Some(schema),
            &["job", "webhook-url", "--register"],
        );
        c.env("CARDSYNC_RECEIVER_URL", receiver);
        c
    });
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// A CSV file's rows without their last two columns (batch and event ids), sorted.
fn rows(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            fields[..fields.len() - 2].join(",")
        })
        .collect();
    rows.sort();
    rows
}

fn changes(out: &Path) -> Vec<String> {
    rows(&out.with_file_name(format!(
        "{}.changes.csv",
        out.file_stem().unwrap().to_string_lossy()
    )))
}

/// Every card once at the emulator.
fn once(emulator: &Emulator) {
    for endpoint in ["POST /v2/batch", "POST /v2/subscribe"] {
        let c = emulator.counts(endpoint);
        assert_eq!(c.cards, c.distinct_cards, "{endpoint}: a card sent twice");
        assert_eq!(c.repeats, 0, "{endpoint}");
        assert!(c.cards > 0, "{endpoint}: nothing sent");
    }
}

/// A summary file, without the paths of the results files (each run has its own).
fn summary(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("results_file");
    o.remove("changes_file");
    v
}

#[test]
fn one_machine_and_many_give_the_same_results() {
    let Some(base) = database() else { return };
    let dir = Dir::new("parity");
    let cards = write_cards(&dir.0);
    let wait = [
        "--wait",
        "webhook",
        "--amex-wait",
        "20s",
        "--poll-max",
        "1s",
    ];

    // One machine: sync on the SQLite journal, its own receiver registered.
    let a = emulator();
    let out_a = dir.0.join("a.csv");
    let out = run(command(
        &a,
        None,
        &[
            &[
                "--output",
                "json",
                "sync",
                &cards,
                "--se-number",
                SE,
                "--register-webhooks",
                "--out",
                out_a.to_str().unwrap(),
            ][..],
            &wait[..],
        ]
        .concat(),
    ));
    ok(&out);
    let summary_a = summary(&dir.0.join("a.summary.json"));

    // The shared journal, in one process: sync --journal, with a receiver of the journal.
    let b = emulator();
    let schema_b = Schema::new(&base, "b");
    let (mut receiver_b, url_b) = receiver(&b, &schema_b);
    register(&b, &schema_b, &url_b);
    let out_b = dir.0.join("b.csv");
    let out = run(command(
        &b,
        Some(&schema_b),
        &[
            &[
                "--output",
                "json",
                "sync",
                &cards,
                "--se-number",
                SE,
                "--job",
                "parity",
                "--journal",
                &schema_b.url,
                "--out",
                out_b.to_str().unwrap(),
            ][..],
            &wait[..],
        ]
        .concat(),
    ));
    ok(&out);
    let summary_b = summary(&dir.0.join("b.summary.json"));

    // The shared journal, spread out: job create, two workers, job export.
    let c = emulator();
    let schema_c = Schema::new(&base, "c");
    let (mut receiver_c, url_c) = receiver(&c, &schema_c);
    let out = run(command(
        &c,
        Some(&schema_c),
        &["job", "create", "parity", &cards, "--se-number", SE],
    ));
    ok(&out);
    register(&c, &schema_c, &url_c);
    let worker = || {
        command(
            &c,
            Some(&schema_c),
            &["worker", "--poll-max", "1s", "--lease", "5s"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("a worker")
    };
    let workers = [worker(), worker()];
    for w in workers {
        let out = wait_output(w, Duration::from_secs(120));
        assert_eq!(out.status.code(), Some(0), "a worker: {out:?}");
    }
    // American Express updates come by webhook: workers fetch them as receivers record them,
    // until every subscribed card has one (at most the same 20 s as --amex-wait).
    let status = |schema: &Schema| -> serde_json::Value {
        let out = run(command(
            &c,
            Some(schema),
            &["--output", "json", "job", "status", "parity"],
        ));
        serde_json::from_slice(&out.stdout).expect("job status")
    };
    let start = Instant::now();
    while status(&schema_c)["results"]["subscribed"]
        .as_u64()
        .unwrap_or(0)
        > 0
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(300));
        let out = wait_output(worker(), Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(0));
    }
    let out_c = dir.0.join("c.csv");
    let out = run(command(
        &c,
        Some(&schema_c),
        &["job", "export", "parity", "--out", out_c.to_str().unwrap()],
    ));
    ok(&out);
    let summary_c = summary(&dir.0.join("c.summary.json"));

    // The same answer.
    let (ra, rb, rc) = (rows(&out_a), rows(&out_b), rows(&out_c));
    assert_eq!(ra, rb, "one machine and sync --journal");
    assert_eq!(ra, rc, "one machine and workers");
    // Every documented test card has its row, the issuers' news included.
    assert!(ra.len() >= SANDBOX_TEST_CARDS.len(), "{ra:?}");
    assert!(
        ra.iter().any(|r| r.starts_with("lost,updated_card")),
        "{ra:?}"
    );
    assert!(ra.iter().any(|r| r.starts_with("closed,closed")), "{ra:?}");
    assert_eq!(changes(&out_a), changes(&out_b));
    assert_eq!(changes(&out_a), changes(&out_c));
    assert_eq!(
        summary_a, summary_b,
        "the summaries, one machine and sync --journal"
    );
    assert_eq!(
        summary_a, summary_c,
        "the summaries, one machine and workers"
    );
    assert_eq!(summary_a["done"], true);
    for emulator in [&a, &b, &c] {
        once(emulator);
    }
    let _ = receiver_b.kill();
    let _ = receiver_c.kill();
    let _ = receiver_b.wait();
    let _ = receiver_c.wait();
}
