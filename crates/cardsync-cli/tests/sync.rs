//! `cardsync sync` against the emulator: complete runs, and runs killed with SIGKILL at several
//! points and resumed. After every job, the emulator's counters must show each card submitted
//! exactly once, and the results file must hold every result.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cardsync_core::luhn_check_digit;
use cardsync_sandbox::Faults;

mod common;
use common::{Dir, Emulator, instant};

const BIN: &str = env!("CARGO_BIN_EXE_cardsync");

/// Batch cards in the test file (Visa, Mastercard, Discover).
const BATCH_CARDS: usize = 95;
/// Cards per request: 10 batches.
const PER_REQUEST: &str = "10";

/// A card number with a valid check digit: `prefix`, then `n`, padded to 15 digits.
fn pan(prefix: &str, n: usize) -> String {
    let body = format!("{prefix}{n:0width$}", width = 15 - prefix.len());
    let check = luhn_check_digit(&body).expect("digits");
    format!("{body}{}", char::from(check))
}

/// The card file: 95 batch cards and two American Express test cards.
fn write_cards(dir: &Path) -> PathBuf {
    let mut csv = String::from("id,card,exp,se_number\n");
    for i in 0..BATCH_CARDS {
        let prefix = ["4", "51", "6011"][i % 3];
        csv.push_str(&format!(
            "c{i:03},{},{:02}/30,\n",
            pan(prefix, 1000 + i),
            1 + i % 12
        ));
    }
    csv.push_str("amex-1,342132335566772,12/30,1234567890\n");
    csv.push_str("amex-2,349900006577234,12/30,1234567890\n");
    let path = dir.join("cards.csv");
    std::fs::write(&path, csv).expect("write cards");
    path
}

fn sync_command(emulator: &Emulator, cards: &Path, out: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["--output", "json", "sync", "--max-per-request", PER_REQUEST])
        .args(["--poll-max", "200ms", "--out"])
        .arg(out)
        .arg(cards)
        .env("CARDSYNC_BASE_URL", emulator.sandbox().base_url())
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key")
        .env_remove("CARDSYNC_CRASH_AT")
        .stdin(Stdio::null());
    command
}

/// Runs a command with a time limit.
fn run(command: &mut Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cardsync");
    let id = child.id();
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("cardsync ran over 60 s ({:?})", start.elapsed());
        }
    }
}

/// The summary line of `--output json` sync.
fn summary(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("sync").cloned())
        .unwrap_or_else(|| {
            panic!(
                "no summary in {stdout:?}; stderr {:?}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// Resumes until the job is done, deciding about each interrupted POST the way a user would:
/// by looking the batch up at CardSync (here, in the emulator's list of batches, by the id of
/// the request's first card, which the summary gives): adopted when it arrived, sent again
/// when it did not. Several may be unconfirmed at once with `--concurrency` above 1.
fn resume_to_end(emulator: &Emulator, cards: &Path, out: &Path) -> Vec<String> {
    let mut decisions = Vec::new();
    let mut extra: Vec<String> = Vec::new();
    for _ in 0..5 {
        let output = run(sync_command(emulator, cards, out).args(&extra));
        let s = summary(&output);
        if output.status.code() == Some(0) {
            assert_eq!(s["done"], true);
            return decisions;
        }
        assert_eq!(
            output.status.code(),
            Some(3),
            "stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let unconfirmed = s["unconfirmed_requests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!unconfirmed.is_empty(), "{s}");
        let batches = emulator.sandbox().batches();
        extra.clear();
        let mut resend = false;
        for u in &unconfirmed {
            let seq = u["request"].as_u64().expect("request number");
            let first = u["first_id"].as_str().expect("first card id");
            match batches
                .iter()
                .find(|b| b.first_card_id.as_deref() == Some(first))
            {
                Some(b) => {
                    decisions.push(format!("adopt {seq}"));
                    extra.push("--adopt".to_owned());
                    extra.push(format!("{seq}={}", b.batch_id));
                }
                None => {
                    decisions.push(format!("resend {seq}"));
                    resend = true;
                }
            }
        }
        if resend {
            extra.push("--resend-unconfirmed".to_owned());
        }
    }
    panic!("the job did not finish in five runs");
}

/// Every batch card once at the emulator, every result in the file.
fn check_exactly_once(emulator: &Emulator, out: &Path) {
    assert_eq!(emulator.counts("POST /v2/batch").cards, BATCH_CARDS as u64);
    assert_eq!(emulator.counts("POST /v2/batch").repeats, 0);
    assert_eq!(emulator.counts("POST /v2/batch").requests, 10);
    assert_eq!(emulator.counts("POST /v2/subscribe").distinct_cards, 2);
    let text = std::fs::read_to_string(out).expect("results file");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("id,status,card,exp,se_number,batch_id,event_id")
    );
    let ids: Vec<&str> = lines.map(|l| l.split(',').next().unwrap()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), BATCH_CARDS, "one row per batch card");
    assert_eq!(distinct.len(), BATCH_CARDS, "no row twice");
    // Finished: no partial file left, and no card number left in the journal.
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    assert!(
        !Path::new(&partial).exists(),
        "the partial results file is left"
    );
    let dir = out.parent().unwrap();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(".journal") {
            let bytes = std::fs::read(entry.path()).unwrap();
            let needle = pan("4", 1000);
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{name} still holds a card number"
            );
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn a_complete_run_then_a_rerun_sends_nothing_more() {
    let dir = Dir::new("complete");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let output = run(&mut sync_command(&emulator, &cards, &out));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let s = summary(&output);
    assert_eq!(s["rows"], 97);
    assert_eq!(s["batches"], 10);
    assert_eq!(s["subscriptions"], 1);
    check_exactly_once(&emulator, &out);
    // stdout never shows a full card number.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains(&pan("4", 1000)));
    assert!(!stdout.contains("342132335566772"));
    // A second run reports the finished job and sends nothing.
    let again = run(&mut sync_command(&emulator, &cards, &out));
    assert_eq!(again.status.code(), Some(0));
    check_exactly_once(&emulator, &out);
    // The journal no longer holds card numbers.
    let journal = std::fs::read(dir.0.join("results.csv.journal")).unwrap();
    let needle = pan("4", 1000);
    assert!(
        !journal
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    );
}

#[cfg(unix)]
#[test]
fn killed_at_each_point_and_resumed_every_card_is_sent_once() {
    if !common::hooks_compiled() {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    // (crash point, n): planned after the plan is stored; sending after a request is marked
    // but before its POST; answered after CardSync answered but before the journal knows;
    // sent after the journal knows; fetched after results are stored (a POST may be on its
    // way then, which is why any decision may follow).
    let points = [
        ("planned", 1, Some(None)),
        ("sending", 3, Some(Some("resend 3"))),
        ("answered", 4, Some(Some("adopt 4"))),
        ("sent", 5, Some(None)),
        ("fetched", 2, None),
        ("fetched", 9, None),
        ("apply", 7, None),
        ("apply", 20, None),
        // Each step of finishing: every result recorded; the results file renamed into
        // place; the job recorded as done (its cards erased).
        ("finishing", 1, Some(None)),
        ("renamed", 1, Some(None)),
        ("done", 1, Some(None)),
    ];
    // One request at a time, where each point has one expected decision; and three at a
    // time, where several requests may be unconfirmed at once and each gets its own decision
    // (the resumed runs use the default concurrency).
    let mut most_decisions = 0;
    for concurrency in ["1", "3"] {
        for (point, n, expected_decision) in points {
            let dir = Dir::new(&format!("{point}{n}-{concurrency}"));
            let cards = write_cards(&dir.0);
            let out = dir.0.join("results.csv");
            let emulator = Emulator::start(instant);
            let crashed = run(sync_command(&emulator, &cards, &out)
                .args(["--concurrency", concurrency])
                .env("CARDSYNC_CRASH_AT", format!("{point}:{n}")));
            assert_eq!(
                crashed.status.signal(),
                Some(9),
                "{point}:{n} should have been killed: {crashed:?}"
            );
            let decisions = resume_to_end(&emulator, &cards, &out);
            most_decisions = most_decisions.max(decisions.len());
            match (concurrency, expected_decision) {
                ("1", Some(expected)) => assert_eq!(
                    decisions.first().map(String::as_str),
                    expected,
                    "{point}:{n}"
                ),
                // The n-th answer may be any request's when several are under way: the
                // same kind of decision is needed, for some request.
                (_, Some(Some(expected))) => {
                    let verb = expected.split(' ').next().unwrap_or_default();
                    assert!(
                        decisions.iter().any(|d| d.starts_with(verb)),
                        "{point}:{n} at {concurrency}: {decisions:?}"
                    );
                }
                _ => {}
            }
            check_exactly_once(&emulator, &out);
        }
    }
    assert!(
        most_decisions >= 2,
        "no run left several requests unconfirmed at once"
    );
}

#[cfg(unix)]
#[test]
fn killed_from_outside_while_sending_and_resumed() {
    let dir = Dir::new("outside");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    // Slow answers, so that the kill lands in the middle of the run.
    let mut faults = Faults::default();
    faults.latency_ms = 60;
    emulator.sandbox().set_faults(faults);
    let mut child = sync_command(&emulator, &cards, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while emulator.counts("POST /v2/batch").requests < 4 {
        assert!(start.elapsed() < Duration::from_secs(30), "no batches sent");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    emulator.sandbox().set_faults(Faults::default());
    resume_to_end(&emulator, &cards, &out);
    check_exactly_once(&emulator, &out);
}

/// A 4xx page that is not CardSync's own answer (a CDN's or a proxy's HTML) proves nothing:
/// answered after the batch was created, it leaves the request unconfirmed (the batch is then
/// adopted, and nothing is sent twice), never failed with its cards lost.
#[test]
fn an_html_4xx_after_the_batch_was_created_is_unconfirmed_not_refused() {
    for status in [400, 404, 409, 422] {
        let dir = Dir::new(&format!("html{status}"));
        let cards = write_cards(&dir.0);
        let out = dir.0.join("results.csv");
        let emulator = Emulator::start(instant);
        let mut faults = Faults::default();
        faults.error_rate = 1.0;
        faults.statuses = vec![status];
        faults.html = true;
        faults.when = cardsync_sandbox::FaultTiming::After;
        faults.paths = vec!["/v2/batch".to_owned()];
        faults.limit = Some(1);
        emulator.sandbox().set_faults(faults);
        let output = run(sync_command(&emulator, &cards, &out).args(["--concurrency", "1"]));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{status}: {stderr}");
        let s = summary(&output);
        assert_eq!(
            s["unconfirmed_requests"].as_array().map(Vec::len),
            Some(1),
            "{s}"
        );
        assert_eq!(
            s["failed"].as_array().map(Vec::len),
            Some(0),
            "{status}: {s}"
        );
        assert!(
            stderr.contains("may or may not have received it"),
            "{stderr}"
        );
        // The emulator did create it: the user looks it up and adopts it.
        let decisions = resume_to_end(&emulator, &cards, &out);
        assert_eq!(decisions, ["adopt 1"], "{status}");
        check_exactly_once(&emulator, &out);
    }
}

/// CardSync's own failure envelope on a 4xx is a refusal: nothing was created, the request
/// fails with the server's reason and the rest of the job goes on.
#[test]
fn cardsyncs_own_4xx_refusal_fails_the_request() {
    let dir = Dir::new("refused");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let mut faults = Faults::default();
    faults.error_rate = 1.0;
    faults.statuses = vec![422];
    faults.paths = vec!["/v2/batch".to_owned()];
    faults.limit = Some(1);
    emulator.sandbox().set_faults(faults);
    let output = run(sync_command(&emulator, &cards, &out).args(["--concurrency", "1"]));
    let s = summary(&output);
    let failed = s["failed"].as_array().cloned().unwrap_or_default();
    assert_eq!(failed.len(), 1, "{s}");
    assert!(failed[0].to_string().contains("refused"), "{s}");
    assert_eq!(
        s["unconfirmed_requests"].as_array().map_or(0, Vec::len),
        0,
        "{s}"
    );
    // The other nine were created; the refused one never was.
    assert_eq!(emulator.counts("POST /v2/batch").requests, 9);
    assert_eq!(emulator.counts("POST /v2/batch").repeats, 0);
}

#[test]
fn a_journal_of_another_input_is_refused() {
    if !common::hooks_compiled() {
        return;
    }
    let dir = Dir::new("other");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let crashed = run(sync_command(&emulator, &cards, &out).env("CARDSYNC_CRASH_AT", "sent:1"));
    assert!(!crashed.status.success());
    let sent = emulator.counts("POST /v2/batch").requests;
    assert!(sent >= 1);
    // The input changes between runs.
    std::fs::write(&cards, "id,card,exp\nx,4457010000000009,01/50\n").unwrap();
    let output = run(&mut sync_command(&emulator, &cards, &out));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("belongs to another job"), "{stderr}");
    // It says what differs, in words: no raw file times.
    assert!(
        stderr.contains("the card file changed since it was planned"),
        "{stderr}"
    );
    assert!(!stderr.contains("input_size"), "{stderr}");
    assert_eq!(emulator.counts("POST /v2/batch").requests, sent);
}

/// The base URL with and without its final `/` is one job: the run resumes.
#[test]
fn a_base_url_with_or_without_its_slash_is_one_job() {
    if !common::hooks_compiled() {
        return;
    }
    let dir = Dir::new("slash");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let bare = emulator.url().trim_end_matches('/').to_owned();
    let base = format!("{bare}/");
    let crashed = run(sync_command(&emulator, &cards, &out)
        .env("CARDSYNC_BASE_URL", &bare)
        .env("CARDSYNC_CRASH_AT", "sent:1"));
    assert!(!crashed.status.success());
    let output = run(sync_command(&emulator, &cards, &out).env("CARDSYNC_BASE_URL", &base));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    check_exactly_once(&emulator, &out);
}

#[test]
fn the_demo_shows_every_documented_test_card() {
    let dir = Dir::new("demo");
    let output = run(Command::new(BIN).args(["demo", "--dir"]).arg(&dir.0));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for card in cardsync_core::SANDBOX_TEST_CARDS {
        // Each card's status, by its masked number's first six digits.
        let status = card.result.as_str();
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&card.card[..6]) && l.contains(status)),
            "{} {status} missing from {stdout}",
            &card.card[..6]
        );
        assert!(!stdout.contains(card.card), "a full number on stdout");
    }
    // Then the issuers: a lost Visa card comes back reissued, a closed American Express card
    // by webhook; masked on the terminal, in full in the results file.
    assert!(
        stdout.contains("411111******1111 reports it lost"),
        "{stdout}"
    );
    let line = |id: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or("")
            .to_owned()
    };
    assert!(line("merchant-visa").contains("updated_card"), "{stdout}");
    assert!(line("merchant-amex").contains("closed"), "{stdout}");
    let reissued = cardsync_sandbox::replacement_card("4111111111111111");
    for full in ["4111111111111111", "371449635398431", reissued.as_str()] {
        assert!(!stdout.contains(full), "a full number on stdout");
    }
    let file = std::fs::read_to_string(dir.0.join("results-2.csv")).unwrap();
    assert!(file.contains(&reissued), "{file}");
}

#[test]
fn duplicates_are_reported_and_never_sent() {
    let dir = Dir::new("dups");
    let cards = dir.0.join("cards.csv");
    let mut csv = String::from("id,card,exp\n");
    for i in 0..25 {
        csv.push_str(&format!("c{i:03},{},01/30\n", pan("4", 5000 + i)));
    }
    csv.push_str(&format!("c003,{},01/30\n", pan("4", 9000))); // row 26: id of row 4
    csv.push_str(&format!("again,{},01/30\n", pan("4", 5007))); // row 27: card of row 8
    std::fs::write(&cards, csv).unwrap();
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let output = run(&mut sync_command(&emulator, &cards, &out));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let problems: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("row").is_some())
        .collect();
    assert_eq!(problems.len(), 2, "{stdout}");
    assert_eq!(problems[0]["row"], 26);
    assert_eq!(problems[0]["errors"][0], "duplicate_id");
    assert_eq!(problems[1]["row"], 27);
    assert_eq!(problems[1]["errors"][0], "duplicate_card");
    assert_eq!(summary(&output)["invalid_rows"], 2);
    assert_eq!(emulator.counts("POST /v2/batch").cards, 25);
    assert_eq!(emulator.counts("POST /v2/batch").repeats, 0);
    let rows = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(rows, 26);
}

/// A card file of `n` Visa cards (ids `v00000` on).
fn write_visa_cards(dir: &Path, n: usize) -> PathBuf {
    let mut csv = String::from("id,card,exp\n");
    for i in 0..n {
        csv.push_str(&format!(
            "v{i:05},{},{:02}/31\n",
            pan("4", 20_000 + i),
            1 + i % 12
        ));
    }
    let path = dir.join("cards.csv");
    std::fs::write(&path, csv).expect("write cards");
    path
}

/// Every card once at the emulator, every result once in the file.
fn check_cards_once(emulator: &Emulator, out: &Path, n: usize) {
    assert_eq!(emulator.counts("POST /v2/batch").cards, n as u64);
    assert_eq!(emulator.counts("POST /v2/batch").repeats, 0);
    let text = std::fs::read_to_string(out).expect("results file");
    let ids: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), n, "results rows");
    assert_eq!(distinct.len(), n, "a result written twice");
}

fn wait_for_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("cardsync ran over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(unix)]
#[test]
fn runs_started_together_on_one_journal_send_each_card_once() {
    let dir = Dir::new("together");
    let n = 300;
    let cards = write_visa_cards(&dir.0, n);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let mut faults = Faults::default();
    faults.latency_ms = 20;
    emulator.sandbox().set_faults(faults);
    // Four runs at once, as an operator pressing the up arrow in other terminals would, and a
    // fifth that waits for the lock, as a cron job that overlaps its previous run should.
    let mut children: Vec<(bool, std::process::Child)> = (0..5)
        .map(|i| {
            let mut command = sync_command(&emulator, &cards, &out);
            if i == 4 {
                command.args(["--wait-for-lock", "60s"]);
            }
            let child = command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            (i == 4, child)
        })
        .collect();
    let mut held = 0;
    for (waits, child) in children.drain(..) {
        let output = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => assert_eq!(summary(&output)["done"], true),
            Some(2) if !waits => {
                assert!(stderr.contains("another run holds this job"), "{stderr}");
                assert!(stderr.contains("process "), "{stderr}");
                assert!(stderr.contains("Nothing was sent"), "{stderr}");
                held += 1;
            }
            other => panic!("exit {other:?}: {stderr}"),
        }
    }
    assert!(held >= 1, "the runs did not overlap");
    assert_eq!(emulator.counts("POST /v2/batch").requests, (n / 10) as u64);
    check_cards_once(&emulator, &out, n);
}

/// Freezes a run (SIGSTOP) at `pause` until its lease has run out, lets a second run take the
/// job over and finish it, then wakes the first: it must stop without sending or writing.
fn frozen_past_its_lease(pause: &str, concurrency: &str, expected_decision: Option<&str>) {
    if !common::hooks_compiled() {
        return;
    }
    let dir = Dir::new(&format!("frozen-{}-{concurrency}", pause.replace(':', "-")));
    let n = 200;
    let cards = write_visa_cards(&dir.0, n);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let mut first = sync_command(&emulator, &cards, &out)
        .args(["--lease", "1s", "--concurrency", concurrency])
        .env("CARDSYNC_FREEZE_AT", pause)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = first.id();
    // Wait until it is stopped (state T in /proc/PID/stat).
    let start = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if state == Some("T") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{pause}: never paused"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let frozen_at = emulator.counts("POST /v2/batch").requests;
    // Held while its lease lasts.
    let early = run(&mut sync_command(&emulator, &cards, &out));
    assert_eq!(early.status.code(), Some(2), "{pause}: {early:?}");
    // Past its lease: a second run takes the job over and finishes it.
    std::thread::sleep(Duration::from_millis(1200));
    let decisions = resume_to_end(&emulator, &cards, &out);
    if let Some(expected) = expected_decision {
        if concurrency == "1" {
            assert_eq!(
                decisions.first().map(String::as_str),
                Some(expected),
                "{pause}"
            );
        } else {
            // Other requests may have been under way too, each with its own decision, and
            // the n-th answer may be any request's: the same kind of decision is needed.
            let verb = expected.split(' ').next().unwrap_or_default();
            assert!(
                decisions.iter().any(|d| d.starts_with(verb)),
                "{pause} at {concurrency}: {decisions:?}"
            );
        }
    }
    let after_second = emulator.counts("POST /v2/batch").requests;
    let results = std::fs::read(&out).expect("results");
    // The first wakes up.
    let status = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = wait_for_exit(&mut first, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(first.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{pause}: {stderr}");
    assert!(
        stderr.contains("lost its hold on the job"),
        "{pause}: {stderr}"
    );
    assert_eq!(
        emulator.counts("POST /v2/batch").requests,
        after_second,
        "{pause}: the woken run sent a batch (frozen after {frozen_at})"
    );
    assert_eq!(
        std::fs::read(&out).expect("results"),
        results,
        "{pause}: results changed"
    );
    check_cards_once(&emulator, &out, n);
    if pause.starts_with("answered") {
        // It says which batch it had created, for the other run to adopt.
        assert!(stderr.contains("--adopt"), "{stderr}");
    }
}

#[cfg(unix)]
#[test]
fn a_run_frozen_past_its_lease_sends_and_writes_nothing_when_it_wakes() {
    // Paused after marking request 4 `sending`, before its POST: the second run cannot know
    // whether it arrived; it did not, so the user sends it again.
    // Paused after CardSync answered request 3, before the journal knew: adopted. Paused
    // between two steps (after results were stored; the next POST may be marked `sending`
    // already, and is then decided like the first case). One request at a time, then three.
    for concurrency in ["1", "3"] {
        frozen_past_its_lease("sending:4", concurrency, Some("resend 4"));
        frozen_past_its_lease("answered:3", concurrency, Some("adopt 3"));
        frozen_past_its_lease("fetched:2", concurrency, None);
    }
}

#[test]
fn invalid_rows_go_to_a_rejects_file_and_the_terminal_shows_the_first_few() {
    let dir = Dir::new("rejects");
    let cards = dir.0.join("cards.csv");
    let mut csv = String::from("id,card,exp\n");
    for i in 0..40 {
        let card = pan("4", 7000 + i);
        // Every fourth card has its last digit changed: a wrong check digit.
        let card = if i % 4 == 0 {
            let (body, last) = card.split_at(15);
            let bad = (last.as_bytes()[0] - b'0' + 1) % 10;
            format!("{body}{bad}")
        } else {
            card
        };
        csv.push_str(&format!("r{i:02},{card},01/30\n"));
    }
    csv.push_str("no-exp,4457010000000009,\n");
    std::fs::write(&cards, csv).unwrap();
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let output = run(Command::new(BIN)
        .args(["sync", "--poll-max", "200ms", "--out"])
        .arg(&out)
        .arg(&cards)
        .env("CARDSYNC_BASE_URL", emulator.sandbox().base_url())
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key"));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let shown = stdout
        .lines()
        .filter(|l| l.contains("luhn:") || l.contains("missing_exp:"))
        .count();
    assert_eq!(shown, 5, "{stdout}");
    let rejects = dir.0.join("results.rejects.csv");
    assert!(
        stdout.contains(&format!(
            "11 rows could not be used (luhn 10, missing_exp 1); the first 5 are shown above; every one is in {}",
            rejects.display()
        )),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&rejects).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("row,id,card,errors,messages"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 11, "{text}");
    assert!(rows[0].starts_with("1,r00,400000******"), "{text}");
    assert!(
        rows[10].starts_with("41,no-exp,445701******0009,missing_exp,"),
        "{text}"
    );
    for i in 0..40 {
        assert!(
            !text.contains(&pan("4", 7000 + i)),
            "a full number in the rejects file"
        );
    }
    assert!(!text.contains("4457010000000009"));
    assert_eq!(emulator.counts("POST /v2/batch").cards, 30);
}

#[test]
fn a_rejects_file_that_cannot_be_written_is_named_in_the_error() {
    let dir = Dir::new("rejects-unwritable");
    let cards = dir.0.join("cards.csv");
    std::fs::write(&cards, "id,card,exp\na,4457010000000008,01/30\n").unwrap();
    // A directory where the rejects file would go.
    std::fs::create_dir(dir.0.join("results.rejects.csv")).unwrap();
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let output = run(&mut sync_command(&emulator, &cards, &out));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("results.rejects.csv"), "{stderr}");
    assert!(!stderr.contains("standard output"), "{stderr}");
    assert_eq!(emulator.counts("POST /v2/batch").requests, 0);
}

/// The results file and the journal are never written through a symbolic link: one planted
/// where either goes is refused, and the file it points to is left as it was.
#[cfg(unix)]
#[test]
fn results_and_journal_are_never_written_through_a_link() {
    let dir = Dir::new("links");
    let cards = write_cards(&dir.0);
    let emulator = Emulator::start(instant);
    let target = dir.0.join("someone-elses-file");
    std::fs::write(&target, "precious\n").unwrap();
    // The results file is a link.
    let out = dir.0.join("results.csv");
    std::os::unix::fs::symlink(&target, &out).unwrap();
    let output = run(&mut sync_command(&emulator, &cards, &out));
    assert_ne!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    // The journal is a link.
    let out = dir.0.join("other.csv");
    let journal = dir.0.join("other.csv.journal");
    std::os::unix::fs::symlink(&target, &journal).unwrap();
    let output = run(&mut sync_command(&emulator, &cards, &out));
    assert_ne!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    assert_eq!(
        emulator.counts("POST /v2/batch").requests,
        0,
        "nothing is sent before the files are safe"
    );
}

/// `--adopt` checks the batch with CardSync first: another batch (of another size) is refused,
/// with the numbers, and the request still waits; the right one is taken.
#[test]
fn adopting_a_batch_of_another_size_is_refused() {
    let dir = Dir::new("adopt-check");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let mut faults = Faults::default();
    faults.error_rate = 1.0;
    faults.statuses = vec![502];
    faults.when = cardsync_sandbox::FaultTiming::After;
    faults.paths = vec!["/v2/batch".to_owned()];
    faults.limit = Some(1);
    emulator.sandbox().set_faults(faults);
    let output = run(sync_command(&emulator, &cards, &out).args(["--concurrency", "1"]));
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    // Someone else's batch of three cards.
    let other = dir.0.join("other.csv");
    std::fs::write(
        &other,
        format!(
            "id,card,exp\nx1,{},01/30\nx2,{},01/30\nx3,{},01/30\n",
            pan("4", 1),
            pan("4", 2),
            pan("4", 3)
        ),
    )
    .unwrap();
    let submitted = run(Command::new(BIN)
        .args(["--output", "json", "submit"])
        .arg(&other)
        .env("CARDSYNC_BASE_URL", emulator.sandbox().base_url())
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key"));
    let line: serde_json::Value =
        serde_json::from_slice(submitted.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let wrong = line["batch_id"].as_str().unwrap().to_owned();
    let refused =
        run(sync_command(&emulator, &cards, &out).args(["--adopt", &format!("1={wrong}")]));
    assert_ne!(refused.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("holds 3 cards"), "{stderr}");
    // The right batch: found by its first card, as a person would.
    let decisions = resume_to_end(&emulator, &cards, &out);
    assert_eq!(decisions, ["adopt 1"]);
    assert_eq!(emulator.counts("POST /v2/batch").repeats, 0);
}

/// A wrong API key costs one request: CardSync's 401 stops the run at once with exit 3, the
/// refused request stays planned (nothing was created), and the same command with the right
/// key sends every card once.
#[test]
fn a_wrong_key_sends_one_request_and_the_right_one_goes_on() {
    let dir = Dir::new("wrong-key");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let output = run(sync_command(&emulator, &cards, &out)
        .args(["--concurrency", "4"])
        .env("CARDSYNC_API_KEY", "not_the_merchant_key"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("check the API key"), "{stderr}");
    assert!(stderr.contains("with the right API key"), "{stderr}");
    let s = summary(&output);
    assert_eq!(s["done"], false, "{s}");
    assert_eq!(s["failed"].as_array().map_or(0, Vec::len), 0, "{s}");
    assert_eq!(
        s["unconfirmed_requests"].as_array().map_or(0, Vec::len),
        0,
        "{s}"
    );
    let posts: Vec<_> = emulator
        .sandbox()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].status, 401);
    assert!(!out.exists(), "no results file for an unfinished job");

    // The same command with the right key goes on, and finishes.
    let output = run(sync_command(&emulator, &cards, &out).args(["--concurrency", "4"]));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(summary(&output)["done"], true);
    check_exactly_once(&emulator, &out);
}

/// `--out` naming the card file itself is refused, `--force` or not, and the card file is left
/// as it was; nothing is sent.
#[test]
fn the_card_file_is_never_written_over() {
    let dir = Dir::new("clobber-input");
    let cards = write_cards(&dir.0);
    let before = std::fs::read(&cards).unwrap();
    let emulator = Emulator::start(instant);
    // The same file, also by another spelling of its path.
    let other_spelling = dir.0.join(".").join("cards.csv");
    for out in [&cards, &other_spelling] {
        for force in [false, true] {
            let mut command = sync_command(&emulator, &cards, out);
            if force {
                command.arg("--force");
            }
            let output = run(&mut command);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{stderr}");
            assert!(stderr.contains("card file"), "{stderr}");
        }
    }
    assert_eq!(std::fs::read(&cards).unwrap(), before);
    assert!(emulator.sandbox().requests().is_empty());
}

/// An existing results file that is not this job's own is written over only with `--force`; a
/// finished job's own results file is its own (the rerun finds the job complete).
#[test]
fn an_existing_results_file_is_written_over_only_with_force() {
    let dir = Dir::new("clobber-out");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    std::fs::write(&out, "last month's results\n").unwrap();
    let emulator = Emulator::start(instant);
    let output = run(&mut sync_command(&emulator, &cards, &out));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "last month's results\n"
    );
    assert!(emulator.sandbox().requests().is_empty());

    let output = run(sync_command(&emulator, &cards, &out).arg("--force"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    check_exactly_once(&emulator, &out);
    // The rerun: the job's own files, no --force needed.
    let output = run(&mut sync_command(&emulator, &cards, &out));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Plain http:// to another machine is refused before anything is planned: the transport
/// would refuse every call, and "run the same command again" could never help.
#[test]
fn plain_http_to_another_host_is_refused_before_planning() {
    let dir = Dir::new("plain-http");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let output = run(Command::new(BIN)
        .args(["sync", "--out"])
        .arg(&out)
        .arg(&cards)
        .env("CARDSYNC_BASE_URL", "http://cardsync.example/")
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key")
        .stdin(Stdio::null()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
    assert!(!stderr.contains("run the same command"), "{stderr}");
    let journal = dir.0.join("results.csv.journal");
    assert!(!journal.exists(), "nothing planned");
}

/// `--public-url` must end with `/webhooks/TOKEN` for the receiver's token: otherwise the run
/// would wait the whole `--poll-max` for events that can never arrive. Refused before planning.
#[test]
fn a_public_url_that_misses_the_receiver_is_refused() {
    let dir = Dir::new("public-url");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    for (url, token) in [
        ("https://billing.example/webhooks/other", "mine"),
        ("https://billing.example/hooks/mine", "mine"),
        ("http://billing.example/webhooks/mine", "mine"),
    ] {
        let output = run(sync_command(&emulator, &cards, &out).args([
            "--wait",
            "webhook",
            "--public-url",
            url,
            "--token",
            token,
        ]));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains("--public-url"), "{stderr}");
    }
    assert!(
        !dir.0.join("results.csv.journal").exists(),
        "nothing planned"
    );
    assert!(emulator.sandbox().requests().is_empty());
}

/// Ctrl-C (or SIGTERM) while batches are being sent: no new POST starts, those under way are
/// answered and recorded, and the run exits 130 (143) with nothing waiting for a decision;
/// the same command then finishes, every card sent once.
#[cfg(unix)]
#[test]
fn interrupted_while_sending_leaves_nothing_unconfirmed() {
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let dir = Dir::new(&format!("interrupt{signal}"));
        let cards = write_cards(&dir.0);
        let out = dir.0.join("results.csv");
        let emulator = Emulator::start(instant);
        let mut faults = Faults::default();
        faults.latency_ms = 400;
        emulator.sandbox().set_faults(faults);
        let mut child = sync_command(&emulator, &cards, &out)
            .args(["--concurrency", "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cardsync");
        // Once the first POST is answered, four more are under way.
        let start = Instant::now();
        while !emulator
            .sandbox()
            .requests()
            .iter()
            .any(|r| r.method == "POST")
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no POST answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(150));
        let answered_before = emulator.counts("POST /v2/batch").requests;
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let status = wait_for_exit(&mut child, Duration::from_secs(30));
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(status.code(), Some(code), "{signal}: {stderr}");
        let s = summary(&output);
        assert_eq!(s["done"], false, "{s}");
        assert_eq!(
            s["unconfirmed_requests"].as_array().map_or(0, Vec::len),
            0,
            "{signal}: {s}"
        );
        // Only the POSTs under way at the signal went (at most four), none after it.
        let sent = emulator.counts("POST /v2/batch").requests;
        assert!(
            sent > answered_before,
            "{signal}: the POSTs under way were answered"
        );
        assert!(sent <= answered_before + 4, "{signal}: {sent} POSTs");
        let output = run(&mut sync_command(&emulator, &cards, &out));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        check_exactly_once(&emulator, &out);
    }
}

/// The changes file holds every result a billing system must act on, with what to do:
/// `closed` and `contact` too (the card on file named by its last four digits), not only new
/// numbers and expiries; and never a full card number.
#[test]
fn the_changes_file_holds_every_actionable_result() {
    let dir = Dir::new("changes");
    let cards = dir.0.join("cards.csv");
    std::fs::write(
        &cards,
        "id,card,exp\n\
         new-number,4457010000000009,01/50\n\
         new-expiry,4457000300000007,01/50\n\
         current,4100200300011001,05/50\n\
         unknown,4457010200000247,08/50\n\
         ask,4457010140000141,09/50\n\
         gone,4457000900000001,08/50\n",
    )
    .unwrap();
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let output = run(&mut sync_command(&emulator, &cards, &out));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let changes = std::fs::read_to_string(dir.0.join("results.changes.csv")).unwrap();
    let mut lines: Vec<&str> = changes.lines().collect();
    assert_eq!(
        lines.remove(0),
        "id,status,brand,old_last4,new_last4,new_exp,batch_id,event_id,action"
    );
    let row = |id: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{id},")))
            .unwrap_or_else(|| panic!("no {id} in {changes}"));
        line.split(',').map(str::to_owned).collect()
    };
    assert_eq!(lines.len(), 4, "{changes}");
    let ask = row("ask");
    assert_eq!(
        (ask[1].as_str(), ask[3].as_str(), ask[4].as_str()),
        ("contact", "0141", "")
    );
    assert!(ask[8].contains("ask the customer"), "{ask:?}");
    let gone = row("gone");
    assert_eq!((gone[1].as_str(), gone[3].as_str()), ("closed", "0001"));
    assert!(gone[8].contains("stop charging"), "{gone:?}");
    assert_eq!(row("new-number")[1], "updated_card");
    assert_eq!(row("new-expiry")[1], "updated_expiry");
    for pan in ["4457010140000141", "4457000900000001", "4457010000000009"] {
        assert!(!changes.contains(pan), "{changes}");
    }
}

/// One row with an id too long for a request (a 1 MB id) is rejected at validation, shown cut
/// short, and the rest of its request goes: one bad row cannot sink a batch.
#[test]
fn a_row_that_would_sink_its_request_is_rejected_alone() {
    let dir = Dir::new("long-id");
    let cards = write_cards(&dir.0);
    let mut text = std::fs::read_to_string(&cards).unwrap();
    text.push_str(&format!(
        "{},{},01/31,\n",
        "x".repeat(1 << 20),
        pan("4", 77_777)
    ));
    std::fs::write(&cards, text).unwrap();
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let output = run(&mut sync_command(&emulator, &cards, &out));
    // Exit 1: the job is done, with an invalid row.
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout.len() + output.stderr.len() < 64 * 1024,
        "the id is shown cut short"
    );
    let s = summary(&output);
    assert_eq!(
        (s["done"].clone(), s["invalid_rows"].clone()),
        (true.into(), 1.into()),
        "{s}"
    );
    let rejects = std::fs::read_to_string(dir.0.join("results.rejects.csv")).unwrap();
    assert!(
        rejects.contains("id_too_long") && rejects.len() < 4096,
        "{}",
        rejects.len()
    );
    check_exactly_once(&emulator, &out);
}

/// Next month's run on the same `--out`: the finished job's journal is kept as a copy, and the
/// new card file is a new job, sent and written in full.
#[test]
fn a_finished_job_does_not_block_next_months_run() {
    let dir = Dir::new("next-month");
    let cards = write_visa_cards(&dir.0, 30);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let first = run(&mut sync_command(&emulator, &cards, &out));
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    // Next month: other cards.
    let mut text = String::from("id,card,exp\n");
    for i in 0..20 {
        text.push_str(&format!("m{i:03},{},02/32\n", pan("4", 90_000 + i)));
    }
    std::fs::write(&cards, text).unwrap();
    let second = run(&mut sync_command(&emulator, &cards, &out));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("was kept as"), "{stderr}");
    let kept: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("results.csv.journal.") && n.ends_with('Z'))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(summary(&second)["done"], true);
    let results = std::fs::read_to_string(&out).unwrap();
    assert_eq!(results.lines().count(), 21, "this month's results only");
    assert!(
        results.lines().skip(1).all(|l| l.starts_with('m')),
        "{results}"
    );
    assert_eq!(emulator.counts("POST /v2/batch").cards, 50);
    assert_eq!(emulator.counts("POST /v2/batch").repeats, 0);
}

/// A journal whose job sent nothing yet is planned again with the new settings.
#[test]
fn a_journal_that_sent_nothing_is_planned_again() {
    if !common::hooks_compiled() {
        return;
    }
    let dir = Dir::new("replan");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    let crashed = run(sync_command(&emulator, &cards, &out).env("CARDSYNC_CRASH_AT", "planned:1"));
    assert!(!crashed.status.success());
    assert!(emulator.sandbox().requests().is_empty());
    // Another setting this time.
    let output = run(sync_command(&emulator, &cards, &out).args(["--se-number", "1111111111"]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("planning again"), "{stderr}");
    check_exactly_once(&emulator, &out);
}

/// Several requests waiting for a decision are told of in one paragraph: each request with the
/// ids to look it up by, then what to do, once.
#[test]
fn requests_waiting_for_a_decision_are_told_of_once() {
    if !common::hooks_compiled() {
        return;
    }
    let dir = Dir::new("told-once");
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let emulator = Emulator::start(instant);
    // A first run creates two batches and dies: the next one knows its key is good as soon as
    // it checks them, and sends three POSTs at once.
    let crashed = run(sync_command(&emulator, &cards, &out).env("CARDSYNC_CRASH_AT", "sent:2"));
    assert!(!crashed.status.success());
    // Every POST is handled and its answer lost.
    let mut faults = Faults::default();
    faults.error_rate = 1.0;
    faults.statuses = vec![500];
    faults.when = cardsync_sandbox::FaultTiming::After;
    faults.paths = vec!["/v2/batch".to_owned()];
    emulator.sandbox().set_faults(faults);
    let command = sync_command(&emulator, &cards, &out);
    let args: Vec<String> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| a != "--output" && a != "json")
        .collect();
    let mut text = Command::new(BIN);
    text.args(&args).args(["--concurrency", "3"]);
    for (k, v) in command.get_envs() {
        if let Some(v) = v {
            text.env(k, v);
        }
    }
    let output = run(text.stdin(Stdio::null()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert_eq!(stdout.matches("billed twice").count(), 1, "{stdout}");
    assert_eq!(
        stdout.matches("--resend-unconfirmed").count(),
        1,
        "{stdout}"
    );
    let listed = stdout
        .lines()
        .filter(|l| l.starts_with("  request "))
        .count();
    assert!(listed >= 2, "{stdout}");
    assert!(
        stdout.contains(&format!("{listed} requests were being sent")),
        "{stdout}"
    );
    assert!(stdout.contains(", ids c0"), "{stdout}");
}

/// `-v` tells what the job does, request by request, in plain words and with no card data;
/// `-vv` adds cardsync's own detail without the HTTP libraries' noise; without `-v`, nothing.
#[test]
fn verbose_tells_each_step_without_card_data() {
    let dir = Dir::new("verbose");
    let cards = write_cards(&dir.0);
    let emulator = Emulator::start(instant);
    for (flag, out) in [("-v", "v.csv"), ("-vv", "vv.csv"), ("-q", "q.csv")] {
        let out = dir.0.join(out);
        let output = run(sync_command(&emulator, &cards, &out)
            .arg(flag)
            .env_remove("RUST_LOG"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{flag}: {stderr}");
        if flag == "-q" {
            assert!(!stderr.contains("INFO"), "{flag}: {stderr}");
            continue;
        }
        assert!(
            stderr.contains("sent: CardSync created the batch"),
            "{flag}: {stderr}"
        );
        assert!(
            stderr.contains("results fetched and written"),
            "{flag}: {stderr}"
        );
        assert!(
            !stderr.contains("hyper") && !stderr.contains("pool"),
            "{flag}: {stderr}"
        );
        for i in 0..BATCH_CARDS {
            let pan = pan(["4", "51", "6011"][i % 3], 1000 + i);
            assert!(!stderr.contains(&pan), "{flag}: a card number in the log");
        }
    }
}
