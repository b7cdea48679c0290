//! Jobs in the shared PostgreSQL journal, with real processes: `cardsync job create`, several
//! `cardsync worker`s at once, one killed with SIGKILL at a random moment or aborted at each
//! step (`CARDSYNC_CRASH_AT`), or frozen with SIGSTOP past its lease (`CARDSYNC_FREEZE_AT`);
//! then `job status`, `job decide` as a person would (each waiting request looked up in the
//! emulator by its first card's id, as in the CardSync dashboard), and `job export`. The
//! emulator's counters must show every card received exactly once, and the export every
//! result once.
//!
//! They need the PostgreSQL that `CARDSYNC_TEST_POSTGRES` names (`bash .ci/postgres.sh run
//! cargo test …` starts one); without it they say so and pass, except under `CI=true`.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cardsync_sandbox::Faults;

mod common;
use common::{Dir, Emulator, instant};

const BIN: &str = env!("CARGO_BIN_EXE_cardsync");
const KEY: &str = "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";

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

/// A schema of its own in the test database, dropped at the end.
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
        let name = format!("cli_{tag}_{}", std::process::id());
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

fn command(emulator: &Emulator, schema: &Schema, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("CARDSYNC_BASE_URL", emulator.url())
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key")
        .env("CARDSYNC_JOURNAL", &schema.url)
        .env("CARDSYNC_JOURNAL_KEY", KEY)
        .env_remove("CARDSYNC_CRASH_AT")
        .env_remove("CARDSYNC_FREEZE_AT")
        .stdin(Stdio::null());
    c
}

fn run(emulator: &Emulator, schema: &Schema, args: &[&str]) -> Output {
    let out = command(emulator, schema, args)
        .output()
        .expect("run cardsync");
    assert!(out.status.code().is_some(), "killed: {:?}", out.status);
    out
}

/// A card file of `n` valid Visa cards that are not documented test cards; the ids of the
/// first card of each request of `per`.
fn write_cards(dir: &Path, n: usize, per: usize) -> (String, Vec<String>) {
    let mut text = String::from("id,card,exp\n");
    let mut firsts = Vec::new();
    for i in 0..n {
        let body = format!("424242{i:09}");
        let check = cardsync_core::luhn_check_digit(&body).unwrap() as char;
        text.push_str(&format!("cus-{i},{body}{check},12/29\n"));
        if i % per == 0 {
            firsts.push(format!("cus-{i}"));
        }
    }
    let path = dir.join("cards.csv");
    std::fs::write(&path, text).unwrap();
    (path.display().to_string(), firsts)
}

fn spawn_worker(emulator: &Emulator, schema: &Schema, env: &[(&str, &str)]) -> Child {
    let mut c = command(
        emulator,
        schema,
        &[
            "--output",
            "json",
            "worker",
            "--concurrency",
            "2",
            "--lease",
            "2s",
            "--poll-max",
            "1s",
        ],
    );
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a worker")
}

fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a worker ran over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(emulator: &Emulator, schema: &Schema) -> serde_json::Value {
    let out = run(
        emulator,
        schema,
        &["--output", "json", "job", "status", "nightly"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Decides about every waiting request as a person would, then runs a worker to the end.
fn decide_and_finish(emulator: &Emulator, schema: &Schema, firsts: &[String]) {
    let s = status(emulator, schema);
    let mut adopt = Vec::new();
    for u in s["unconfirmed"].as_array().unwrap() {
        let seq = u["request"].as_u64().unwrap();
        let first = &firsts[seq as usize - 1];
        if let Some(b) = emulator
            .sandbox()
            .batches()
            .into_iter()
            .find(|b| b.first_card_id.as_ref() == Some(first))
        {
            adopt.push(format!("{seq}={}", b.batch_id));
        }
    }
    if !s["unconfirmed"].as_array().unwrap().is_empty() {
        let mut args = vec!["job", "decide", "nightly", "--resend-unconfirmed"];
        for a in &adopt {
            args.push("--adopt");
            args.push(a);
        }
        let out = run(emulator, schema, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut finisher = spawn_worker(emulator, schema, &[]);
    let code = wait(&mut finisher, Duration::from_secs(120));
    assert!(code.success(), "the finishing worker: {code:?}");
}

/// Every card reached the emulator once; the export holds every result once, mode 0600.
fn check_exactly_once(emulator: &Emulator, schema: &Schema, dir: &Path, n: usize) {
    let counts = emulator.counts("POST /v2/batch");
    assert_eq!(
        (counts.cards, counts.distinct_cards, counts.repeats),
        (n as u64, n as u64, 0),
        "every card received exactly once"
    );
    let out = dir.join("results.csv");
    let export = run(
        emulator,
        schema,
        &["job", "export", "nightly", "--out", out.to_str().unwrap()],
    );
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let ids: HashSet<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(text.lines().count() - 1, n, "one row per card");
    assert_eq!(ids.len(), n, "every result once");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Exported: the journal holds no card of it any more.
    let s = status(emulator, schema);
    assert_eq!(s["state"], "exported");
}

fn create(emulator: &Emulator, schema: &Schema, cards: &str, per: usize) {
    let per = per.to_string();
    let out = run(
        emulator,
        schema,
        &[
            "job",
            "create",
            "nightly",
            cards,
            "--max-per-request",
            &per,
            "--max-in-flight",
            "8",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A job of `n` cards, `per` a request, created in a schema of its own (named after `tag`),
/// against an emulator that completes batches at once and answers after `latency_ms`: the
/// schema, the scratch directory, the emulator, and the first card id of each request.
fn planned_job(
    base: &str,
    tag: &str,
    n: usize,
    per: usize,
    latency_ms: u64,
) -> (Schema, Dir, Emulator, Vec<String>) {
    let schema = Schema::new(base, tag);
    let dir = Dir::new(&format!("shared-{tag}"));
    let (cards, firsts) = write_cards(&dir.0, n, per);
    let emulator = Emulator::start(instant);
    create(&emulator, &schema, &cards, per);
    let mut faults = Faults::default();
    faults.latency_ms = latency_ms;
    emulator.sandbox().set_faults(faults);
    (schema, dir, emulator, firsts)
}

#[cfg(unix)]
#[test]
fn four_workers_one_killed_at_a_random_moment_and_another_started() {
    let Some(base) = database() else { return };
    let n = 200_000;
    let (schema, dir, emulator, firsts) = planned_job(&base, "random", n, 10_000, 50);
    let mut workers: Vec<Child> = (0..4)
        .map(|_| spawn_worker(&emulator, &schema, &[]))
        .collect();
    // A random moment once sending has begun.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let target = 1 + u64::from(nanos % 12);
    let start = Instant::now();
    while emulator.counts("POST /v2/batch").requests < target {
        assert!(start.elapsed() < Duration::from_secs(60), "no batches sent");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(u64::from(nanos % 50)));
    workers[0].kill().expect("SIGKILL");
    workers[0].wait().unwrap();
    workers.push(spawn_worker(&emulator, &schema, &[]));
    for w in workers.iter_mut().skip(1) {
        wait(w, Duration::from_secs(180));
    }
    decide_and_finish(&emulator, &schema, &firsts);
    check_exactly_once(&emulator, &schema, &dir.0, n);
}

#[cfg(unix)]
#[test]
fn a_worker_aborted_at_each_step_repeats_nothing() {
    if !common::hooks_compiled() {
        return;
    }
    let Some(base) = database() else { return };
    for point in [
        "claimed:1",
        "before-post:2",
        "after-post:2",
        "before-results:1",
        "recorded:3",
    ] {
        let tag = point.split(':').next().unwrap().replace('-', "_");
        let n = 20_000;
        let (schema, dir, emulator, firsts) = planned_job(&base, &tag, n, 1_000, 20);
        let mut doomed = spawn_worker(&emulator, &schema, &[("CARDSYNC_CRASH_AT", point)]);
        let mut others: Vec<Child> = (0..2)
            .map(|_| spawn_worker(&emulator, &schema, &[]))
            .collect();
        let died = wait(&mut doomed, Duration::from_secs(120));
        assert!(!died.success(), "{point}: the worker was aborted");
        for w in &mut others {
            wait(w, Duration::from_secs(120));
        }
        decide_and_finish(&emulator, &schema, &firsts);
        check_exactly_once(&emulator, &schema, &dir.0, n);
    }
}

#[cfg(unix)]
#[test]
fn a_worker_frozen_past_its_lease_writes_nothing_twice() {
    if !common::hooks_compiled() {
        return;
    }
    let Some(base) = database() else { return };
    for point in ["claimed:1", "after-post:1", "before-results:1"] {
        let tag = format!(
            "freeze_{}",
            point.split(':').next().unwrap().replace('-', "_")
        );
        let n = 10_000;
        let (schema, dir, emulator, firsts) = planned_job(&base, &tag, n, 1_000, 0);
        let mut frozen = spawn_worker(&emulator, &schema, &[("CARDSYNC_FREEZE_AT", point)]);
        // Wait until it stopped itself (state T in /proc), then let the others work past its
        // lease (2 s).
        let pid = frozen.id();
        let start = Instant::now();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat
                .split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('T'))
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{point}: never froze"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut other = spawn_worker(&emulator, &schema, &[]);
        std::thread::sleep(Duration::from_secs(3));
        wait(&mut other, Duration::from_secs(120));
        // It wakes up late: what it learned is written only where nobody took over.
        let cont = Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(cont.success());
        wait(&mut frozen, Duration::from_secs(120));
        decide_and_finish(&emulator, &schema, &firsts);
        check_exactly_once(&emulator, &schema, &dir.0, n);
    }
}

#[test]
fn the_journal_needs_its_key_and_no_card_number_is_in_its_tables() {
    let Some(base) = database() else { return };
    let schema = Schema::new(&base, "key");
    let dir = Dir::new("shared-key");
    let (cards, _) = write_cards(&dir.0, 50, 10);
    let emulator = Emulator::start(instant);
    let mut no_key = command(&emulator, &schema, &["job", "create", "nightly", &cards]);
    no_key.env_remove("CARDSYNC_JOURNAL_KEY");
    let out = no_key.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CARDSYNC_JOURNAL_KEY"));
    create(&emulator, &schema, &cards, 10);
    let dump = Command::new("psql")
        .args([&schema.url, "-At", "-c",
            "SELECT t::text FROM cardsync_card_sets t UNION ALL SELECT t::text FROM cardsync_requests t UNION ALL SELECT t::text FROM cardsync_jobs t"])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.lines().count() >= 11,
        "5 card sets, 5 requests, the job"
    );
    let text = std::fs::read_to_string(&cards).unwrap();
    for line in text.lines().skip(1) {
        let card = line.split(',').nth(1).unwrap();
        assert!(
            !dump.contains(card),
            "a card number in the journal's tables"
        );
        assert!(
            !dump.contains(&card[6..]),
            "most of a card number in the journal's tables"
        );
    }
    assert!(!dump.contains("sandbox_merchant_key"));
    // A second create of the same name is refused; status says what to do next.
    let again = run(&emulator, &schema, &["job", "create", "nightly", &cards]);
    assert_eq!(again.status.code(), Some(2));
    let text = run(&emulator, &schema, &["job", "status", "nightly"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("5 planned (50 cards)"), "{text}");
}

/// A receiver, `cardsync listen --journal`, on a free loopback port: its process and address.
fn spawn_receiver(emulator: &Emulator, schema: &Schema, token: &str) -> (Child, String) {
    let mut child = command(
        emulator,
        schema,
        &[
            "--output",
            "json",
            "listen",
            "--journal",
            &schema.url,
            "--token",
            token,
            "--addr",
            "127.0.0.1:0",
            "--stop-after",
            "60s",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn a receiver");
    let mut line = String::new();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    let addr = line
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, addr)
}

/// POSTs a webhook body to a receiver: the answer's status.
fn deliver(addr: &str, token: &str, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /webhooks/{token} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(unix)]
#[test]
fn two_receivers_record_each_event_once_and_mark_its_batch_ready() {
    use cardsync_proto::server::{Spelling, webhook};
    use cardsync_proto::{BatchAvailable, WebhookEvent};
    let Some(base) = database() else { return };
    let schema = Schema::new(&base, "receivers");
    let dir = Dir::new("shared-receivers");
    let (cards, _) = write_cards(&dir.0, 30, 10);
    // Batches stay pending until the test moves the emulator's clock.
    let emulator = Emulator::start(|s| {
        instant(s);
        s.complete_after = Duration::from_secs(3600);
    });
    create(&emulator, &schema, &cards, 10);
    // A worker sends the three batches; it is stopped while they are pending.
    let mut worker = spawn_worker(&emulator, &schema, &[]);
    let start = Instant::now();
    while emulator.sandbox().batches().len() < 3
        || status(&emulator, &schema)["requests"]["sent"] != 3
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "batches not sent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    let batches: Vec<(String, String)> = emulator
        .sandbox()
        .batches()
        .into_iter()
        .map(|b| (b.batch_id, b.event_id))
        .collect();

    let token = "receiver-token-0123456789";
    let (mut a, addr_a) = spawn_receiver(&emulator, &schema, token);
    let (mut b, addr_b) = spawn_receiver(&emulator, &schema, token);
    let body = |i: usize| {
        let mut e = BatchAvailable::default();
        e.batch_id = Some(batches[i].0.clone());
        e.event_id = Some(batches[i].1.clone());
        e.id = Some(format!("delivery-{i}"));
        webhook(&WebhookEvent::BatchAvailable(e), Spelling::Universal)
    };
    // Each event to both receivers, in both orders, and again.
    for (first, second, i) in [
        (&addr_a, &addr_b, 0),
        (&addr_b, &addr_a, 1),
        (&addr_a, &addr_a, 2),
    ] {
        assert_eq!(deliver(first, token, &body(i)), 200);
        assert_eq!(deliver(second, token, &body(i)), 200);
        assert_eq!(
            deliver(first, token, &body(i)),
            200,
            "a redelivery is acknowledged"
        );
    }
    // At the same time, from both sides.
    let both: Vec<_> = [addr_a.clone(), addr_b.clone()]
        .into_iter()
        .map(|addr| {
            let body = body(0);
            std::thread::spawn(move || deliver(&addr, "receiver-token-0123456789", &body))
        })
        .collect();
    for t in both {
        assert_eq!(t.join().unwrap(), 200);
    }
    let rows = |sql: &str| {
        let out = Command::new("psql")
            .args([&schema.url, "-At", "-c", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        rows("SELECT count(*) FROM cardsync_events"),
        "3",
        "each event once"
    );
    assert_eq!(
        rows("SELECT count(*) FROM cardsync_requests WHERE ready AND event_id IS NOT NULL"),
        "3",
        "each batch marked ready"
    );
    // A receiver killed with SIGKILL and started again: redeliveries change nothing.
    a.kill().unwrap();
    a.wait().unwrap();
    let (mut a, addr_a) = spawn_receiver(&emulator, &schema, token);
    for i in 0..3 {
        assert_eq!(deliver(&addr_a, token, &body(i)), 200);
    }
    // An event with nothing to record it by is refused, not acknowledged in silence.
    assert_eq!(
        deliver(&addr_a, token, br#"{"trigger_id":23,"stats":{}}"#),
        422
    );
    assert_eq!(
        rows("SELECT count(*) FROM cardsync_events"),
        "3",
        "each event once, across the restart"
    );
    a.kill().unwrap();
    b.kill().unwrap();
    a.wait().unwrap();
    b.wait().unwrap();
    // The batches complete; a worker fetches them with their events and the job ends.
    let calls = |path: &str| {
        let log = emulator.sandbox().requests();
        log.iter()
            .filter(|r| r.method == "GET" && r.path == path)
            .count()
    };
    let checks_before = calls("/v2/batch");
    emulator.sandbox().advance(Duration::from_secs(3601));
    let mut finisher = spawn_worker(&emulator, &schema, &[]);
    assert!(wait(&mut finisher, Duration::from_secs(60)).success());
    // Ready batches are fetched at once, with no status check.
    assert_eq!(calls("/v2/batch/results"), 3);
    assert_eq!(calls("/v2/batch"), checks_before);
    check_exactly_once(&emulator, &schema, &dir.0, 30);
}

#[cfg(unix)]
#[test]
fn two_syncs_of_one_job_at_once_share_it_and_a_third_finds_it_done() {
    let Some(base) = database() else { return };
    let schema = Schema::new(&base, "sync");
    let dir = Dir::new("shared-sync");
    let n = 20_000;
    let (cards, _) = write_cards(&dir.0, n, 1_000);
    let emulator = Emulator::start(instant);
    let mut faults = Faults::default();
    faults.latency_ms = 20;
    emulator.sandbox().set_faults(faults);
    let out = dir.0.join("results.csv");
    let sync = || {
        command(
            &emulator,
            &schema,
            &[
                "sync",
                &cards,
                "--out",
                out.to_str().unwrap(),
                "--job",
                "nightly",
                "--max-per-request",
                "1000",
                "--concurrency",
                "3",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sync")
    };
    let mut runs = [sync(), sync()];
    for run in &mut runs {
        let code = wait(run, Duration::from_secs(120));
        let mut err = String::new();
        std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(code.success(), "{code:?}: {err}");
    }
    let counts = emulator.counts("POST /v2/batch");
    assert_eq!(
        (counts.cards, counts.distinct_cards, counts.repeats),
        (n as u64, n as u64, 0)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let ids: HashSet<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!((text.lines().count() - 1, ids.len()), (n, n));
    let third = run(
        &emulator,
        &schema,
        &[
            "sync",
            &cards,
            "--out",
            out.to_str().unwrap(),
            "--job",
            "nightly",
        ],
    );
    assert!(third.status.success());
    assert!(String::from_utf8_lossy(&third.stderr).contains("already complete"));
    assert_eq!(
        emulator.counts("POST /v2/batch").cards,
        n as u64,
        "nothing sent again"
    );
}

/// The results fetch fails (CardSync's 404, a 500, a body cut off) while a receiver records the
/// batches' events: no request fails (its results would be lost), the fetch is tried again,
/// and once the fault is gone every result is exported once.
#[test]
fn a_failed_results_fetch_is_tried_again_not_failed() {
    let Some(base) = database() else { return };
    for (tag, faults) in [
        ("fetch404", {
            let mut f = Faults::default();
            f.error_rate = 1.0;
            f.statuses = vec![404];
            f
        }),
        ("fetch500", {
            let mut f = Faults::default();
            f.error_rate = 1.0;
            f.statuses = vec![500];
            f
        }),
        ("fetchcut", {
            let mut f = Faults::default();
            f.drop_rate = 1.0;
            f
        }),
    ] {
        let (schema, dir, emulator, _) = planned_job(&base, tag, 30, 10, 0);
        let mut faults = faults;
        faults.paths = vec!["/v2/batch/results".to_owned()];
        emulator.sandbox().set_faults(faults);
        let token = "receiver-token-0123456789";
        let (mut receiver, addr) = spawn_receiver(&emulator, &schema, token);
        let url = format!("http://{addr}/webhooks/{token}");
        let out = run(
            &emulator,
            &schema,
            &["webhooks", "set", "--batch-available", &url],
        );
        assert!(out.status.success(), "{out:?}");
        let mut worker = spawn_worker(&emulator, &schema, &[]);
        let fetches = || {
            emulator
                .sandbox()
                .requests()
                .iter()
                .filter(|r| r.path == "/v2/batch/results")
                .count()
        };
        let start = Instant::now();
        while fetches() < 8 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{tag}: the fetches were not tried again"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = status(&emulator, &schema);
        assert_eq!(
            s["requests"]["failed"].as_u64().unwrap_or(0),
            0,
            "{tag}: {s}"
        );
        assert!(
            worker.try_wait().unwrap().is_none(),
            "{tag}: the worker gave up"
        );
        emulator.sandbox().set_faults(Faults::default());
        let code = wait(&mut worker, Duration::from_secs(60));
        assert!(code.success(), "{tag}: {code:?}");
        check_exactly_once(&emulator, &schema, &dir.0, 30);
        let _ = receiver.kill();
        let _ = receiver.wait();
    }
}

/// A database that cannot be reached ends the command with its own exit code (4), not as a
/// usage error.
#[test]
fn an_unreachable_journal_database_exits_4() {
    let dead = common::free_addr();
    let out = Command::new(BIN)
        .args(["job", "status", "nightly", "--journal"])
        .arg(format!("postgres://cardsync@{dead}/cardsync"))
        .env("CARDSYNC_JOURNAL_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("journal"), "{stderr}");
}
