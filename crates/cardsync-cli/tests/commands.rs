//! The one-call commands and `listen`, against the emulator on loopback.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{BIN, Dir, Emulator, cardsync, json_lines, post, start_listener};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn submit_status_results_unsubscribe_webhooks_and_merchant() {
    let dir = Dir::new("calls");
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(200));
    let cards = write(
        &dir.0,
        "cards.csv",
        "id,card,exp,se_number\na,4457010000000009,01/50,\nb,5112010000000003,02/50,\nx,349900006577234,12/30,1234567890\n",
    );

    // submit: one batch and one subscription.
    let out = cardsync(&emulator, &["--output", "json", "submit", &cards]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines = json_lines(&out);
    let batch_id = lines
        .iter()
        .find_map(|l| l["batch_id"].as_str())
        .expect("a batch id")
        .to_owned();
    assert!(lines.iter().any(|l| l["route"] == "subscription"));

    // status, until complete.
    let start = Instant::now();
    loop {
        let out = cardsync(&emulator, &["--output", "json", "status", &batch_id]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        if json_lines(&out)[0]["status"] == "completed" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never completed");
        std::thread::sleep(Duration::from_millis(100));
    }

    // results: masked on stdout, full in the file (mode 0600).
    let file = dir.0.join("r.csv").display().to_string();
    let out = cardsync(
        &emulator,
        &["results", "--batch", &batch_id, "--out", &file],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 results"), "{stdout}");
    assert!(!stdout.contains("4457010000000009"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("id,status,card,exp,se_number,batch_id,event_id\n"));
    assert!(text.contains(&batch_id));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // The file exists now: written over only with --force.
    let out = cardsync(
        &emulator,
        &["results", "--batch", &batch_id, "--out", &file],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    let out = cardsync(
        &emulator,
        &["results", "--batch", &batch_id, "--out", &file, "--force"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // An unknown batch is a remote error: exit 3.
    let out = cardsync(&emulator, &["status", "no-such-batch"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-batch"));

    // unsubscribe the American Express card; the others are left alone (exit 1).
    let out = cardsync(
        &emulator,
        &["unsubscribe", &cards, "--se-number", "1234567890"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 cards unsubscribed"));

    // webhooks set: shown without the secret path.
    let out = cardsync(
        &emulator,
        &[
            "webhooks",
            "set",
            "--batch-available",
            "http://127.0.0.1:9/webhooks/s3cr3t-t0ken",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("http://127.0.0.1:9/webhooks/…"), "{shown}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    let out = cardsync(&emulator, &["webhooks", "set"]);
    assert_eq!(out.status.code(), Some(2));
    // URLs CardSync could not or should not call are refused before anything is sent.
    let before = emulator.sandbox().requests().len();
    for bad in [
        "not-a-url",
        "http://billing.example/webhooks/s3cr3t-t0ken",
        "ftp://billing.example/hook",
    ] {
        let out = cardsync(&emulator, &["webhooks", "set", "--batch-error", bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--batch-error"), "{stderr}");
        assert!(!stderr.contains("s3cr3t"), "{stderr}");
    }
    assert_eq!(emulator.sandbox().requests().len(), before);

    // merchant enroll (the documents' example) and status.
    let enrollment = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../cardsync-proto/tests/data/universal/merchant_enroll_request.json"),
    )
    .unwrap();
    let enrollment = write(&dir.0, "merchant.json", &enrollment);
    let out = cardsync(
        &emulator,
        &["--output", "json", "merchant", "enroll", &enrollment],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let merchant_id = json_lines(&out)[0]["merchant_id"]
        .as_str()
        .expect("merchant id")
        .to_owned();
    let out = cardsync(&emulator, &["merchant", "status", &merchant_id]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // No key: a usage error, before any request.
    let out = Command::new(BIN)
        .args(["status", "b1"])
        .env("CARDSYNC_BASE_URL", emulator.url())
        .env_remove("CARDSYNC_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CARDSYNC_API_KEY"));
}

#[test]
fn listen_fetches_results_when_a_batch_is_available() {
    let dir = Dir::new("listen");
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(200));
    let addr = common::free_addr();
    let out_dir = dir.0.join("results");
    let mut listener = start_listener(&emulator, &addr, &out_dir, &[]);
    let url = format!("http://{addr}/webhooks/t0ken-for-the-listen-test");
    let out = cardsync(&emulator, &["webhooks", "set", "--batch-available", &url]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let cards = write(
        &dir.0,
        "cards.csv",
        "id,card,exp\na,4457010000000009,01/50\n",
    );
    let out = cardsync(&emulator, &["--output", "json", "submit", &cards]);
    let batch_id = json_lines(&out)[0]["batch_id"].as_str().unwrap().to_owned();
    let expected = out_dir.join(format!("batch-{batch_id}.csv"));
    let start = Instant::now();
    while !expected.exists() || std::fs::read_to_string(&expected).unwrap().lines().count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(15), "no results file");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&expected).unwrap();
    assert!(text.contains("updated_card"), "{text}");
    let log = std::fs::read_to_string(out_dir.join("events.jsonl")).unwrap_or_default();
    assert!(log.contains(&batch_id), "{log}");
    let event: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    let event_id = event["event_id"].as_str().expect("event id").to_owned();

    // A second listener on the same folder is refused while the first runs.
    let other = Command::new(BIN)
        .args([
            "listen",
            "--addr",
            "127.0.0.1:0",
            "--token",
            "t0ken-for-the-listen-test",
        ])
        .args(["--stop-after", "5s", "--out"])
        .arg(&out_dir)
        .env("CARDSYNC_BASE_URL", emulator.url())
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key")
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2), "{other:?}");
    assert!(String::from_utf8_lossy(&other.stderr).contains("another listener"));

    // Killed and restarted on the same folder, then sent the same event again: nothing
    // changes (no second fetch, no second line, the results file untouched).
    let _ = listener.kill();
    let _ = listener.wait();
    let modified = std::fs::metadata(&expected).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut listener = start_listener(&emulator, &addr, &out_dir, &[]);
    let body = format!(
        r#"{{"trigger_id":20,"batch_id":"{batch_id}","event_id":"{event_id}","message":"again"}}"#
    );
    let other_body = r#"{"trigger_id":22,"batch_id":"b-other","event_id":"e-new","message":"x"}"#;
    for body in [body.as_str(), body.as_str(), other_body] {
        let status = post(&addr, "/webhooks/t0ken-for-the-listen-test", body);
        assert_eq!(status, 200);
    }
    // The new event is handled; then stop the listener and read what it did.
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(out_dir.join("events.jsonl")).unwrap();
        if log.contains("e-new") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the new event was not recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = listener.kill();
    let output = listener.wait_with_output().unwrap();
    let log = std::fs::read_to_string(out_dir.join("events.jsonl")).unwrap();
    assert_eq!(log.matches(&event_id).count(), 1, "{log}");
    assert_eq!(log.lines().count(), 2, "{log}");
    assert_eq!(
        std::fs::metadata(&expected).unwrap().modified().unwrap(),
        modified
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains(&event_id), "{stdout}");
}

/// The issuer side through the command: a card registered with the emulator's platform is
/// reported lost, and the next `sync` of a merchant holding it gets the reissued number; a
/// feed file closes another card, and the next `sync` gets `closed`. The terminal shows
/// masked numbers only.
#[test]
fn issuer_commands_reach_the_next_sync() {
    let dir = Dir::new("issuer");
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(100));
    let issuer = |args: &[&str]| cardsync(&emulator, args);
    let lost = "4111111111111111";
    let out = issuer(&[
        "--output", "json", "issuer", "cards", "add", "--card", lost, "--exp", "05/27",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!stdout.contains(lost), "{stdout}");
    let card_id = json_lines(&out)[0]["card_id"].as_str().unwrap().to_owned();

    let out = issuer(&[
        "issuer",
        "card-status",
        &card_id,
        "--status",
        "terminated",
        "--reason",
        "LOS",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TERMINATED (LOS: Card reported lost)"),
        "{text}"
    );
    assert!(text.contains("reissued as card"), "{text}");
    // TERMINATED is final.
    let again = issuer(&["issuer", "card-status", &card_id, "--status", "ACTIVE"]);
    assert_ne!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("final"));
    // A bad reason is refused before anything is sent.
    let bad = issuer(&[
        "issuer",
        "card-status",
        &card_id,
        "--status",
        "TERMINATED",
        "--reason",
        "XYZ",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");

    // The issuer feed closes a Mastercard card of an account with no other open card.
    let closed = "5112000000000012";
    let feed = write(
        &dir.0,
        "feed.json",
        r#"{"cards":[{"last4":"0012","iin":"511200","cardType":"CREDIT","status":"CLOSED","networkIdentifier":5,"openDate":"2020-01-01T00:00:00Z","closeDate":"2024-06-01T00:00:00Z"}]}"#,
    );
    let out = issuer(&[
        "issuer",
        "update-cards",
        &feed,
        "--customer",
        "cust-1",
        "--account",
        "acct-1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 card of account acct-1"));
    let bad_feed = write(&dir.0, "bad.json", r#"{"cards":[{"last4":"12"}]}"#);
    let out = issuer(&[
        "issuer",
        "update-cards",
        &bad_feed,
        "--customer",
        "c",
        "--account",
        "a",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cards[0].last4"));

    // The merchant's next sync.
    let cards = write(
        &dir.0,
        "cards.csv",
        &format!("id,card,exp\nlost,{lost},05/27\nclosed,{closed},08/26\n"),
    );
    let results = dir.0.join("results.csv").display().to_string();
    let out = cardsync(&emulator, &["sync", "--out", &results, &cards]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains(lost) && !stdout.contains(closed),
        "{stdout}"
    );
    let file = std::fs::read_to_string(&results).unwrap();
    let reissued = cardsync_sandbox::replacement_card(lost);
    assert!(
        file.lines()
            .any(|l| l.starts_with("lost,updated_card,") && l.contains(&reissued)),
        "{file}"
    );
    assert!(
        file.lines().any(|l| l.starts_with("closed,closed,")),
        "{file}"
    );
}

/// Every row of the issuer table, through the command over loopback: each issuer event, then
/// the merchant's sync, whose results file says what the networks would. The feed's
/// documented 500 (injected once) is reported, and the same command sent again (the feed is
/// idempotent) goes through.
#[test]
fn every_issuer_event_reaches_the_merchants_sync() {
    use cardsync_core::luhn_check_digit;
    let dir = Dir::new("issuer-table");
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(100));
    let attempt = |args: &[&str]| cardsync(&emulator, args);
    let issuer = |args: &[&str]| {
        let out = attempt(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        out
    };
    let pan = |prefix: &str, n: u32| {
        let body = format!("{prefix}{n:0width$}", width = 15 - prefix.len());
        format!("{body}{}", char::from(luhn_check_digit(&body).unwrap()))
    };
    // (id, card, status, reason, expected result)
    let events = [
        (
            "lost",
            pan("4111", 1),
            "TERMINATED",
            "LOS",
            Some("updated_card"),
        ),
        (
            "stolen",
            pan("4111", 2),
            "TERMINATED",
            "STO",
            Some("updated_card"),
        ),
        (
            "cloned",
            pan("5112", 3),
            "TERMINATED",
            "CLO",
            Some("updated_card"),
        ),
        (
            "compromised",
            pan("6011", 4),
            "TERMINATED",
            "COM",
            Some("updated_card"),
        ),
        (
            "fraud",
            pan("4111", 5),
            "TERMINATED",
            "FRD",
            Some("updated_card"),
        ),
        (
            "renewed",
            pan("4111", 6),
            "TERMINATED",
            "EXP",
            Some("updated_expiry"),
        ),
        (
            "closed",
            pan("5112", 7),
            "TERMINATED",
            "NEG",
            Some("closed"),
        ),
        ("suspended", pan("4111", 8), "SUSPENDED", "SUS", None),
    ];
    for (_, card, status, reason, _) in &events {
        let out = issuer(&[
            "--output", "json", "issuer", "cards", "add", "--card", card, "--exp", "05/27",
        ]);
        let card_id = json_lines(&out)[0]["card_id"].as_str().unwrap().to_owned();
        issuer(&[
            "issuer",
            "card-status",
            &card_id,
            "--status",
            status,
            "--reason",
            reason,
        ]);
    }
    // The feed: one account's card closed with nothing else open (closed); another's closed
    // while a new card is open (contact). The first attempt of the feed meets a 500.
    let feed_closed = pan("6011", 9);
    let feed_replaced = pan("6011", 10);
    let mut faults = cardsync_sandbox::Faults::default();
    faults.error_rate = 1.0;
    faults.statuses = vec![500];
    faults.limit = Some(1);
    faults.paths = vec!["/v2/data/customers/c1/accounts/a1/cards".to_owned()];
    emulator.sandbox().set_faults(faults);
    let card_json = |card: &str, status: &str, close: &str| {
        format!(
            r#"{{"last4":"{}","iin":"{}","cardType":"DEBIT","status":"{status}","networkIdentifier":6,"openDate":"2020-01-01T00:00:00Z","closeDate":{close}}}"#,
            &card[12..],
            &card[..6]
        )
    };
    let feed = write(
        &dir.0,
        "feed-1.json",
        &format!(
            r#"{{"cards":[{}]}}"#,
            card_json(&feed_closed, "CLOSED", r#""2024-06-01T00:00:00Z""#)
        ),
    );
    let failed = attempt(&[
        "issuer",
        "update-cards",
        &feed,
        "--customer",
        "c1",
        "--account",
        "a1",
    ]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("500"),
        "{failed:?}"
    );
    issuer(&[
        "issuer",
        "update-cards",
        &feed,
        "--customer",
        "c1",
        "--account",
        "a1",
    ]);
    let feed = write(
        &dir.0,
        "feed-2.json",
        &format!(
            r#"{{"cards":[{},{}]}}"#,
            card_json(&feed_replaced, "CLOSED", r#""2024-06-01T00:00:00Z""#),
            card_json(&pan("6011", 11), "OPEN", "null")
        ),
    );
    issuer(&[
        "issuer",
        "update-cards",
        &feed,
        "--customer",
        "c2",
        "--account",
        "a2",
    ]);

    let mut csv = String::from("id,card,exp\n");
    for (id, card, ..) in &events {
        csv.push_str(&format!("{id},{card},05/27\n"));
    }
    csv.push_str(&format!(
        "feed-closed,{feed_closed},05/27\nfeed-replaced,{feed_replaced},05/27\n"
    ));
    let cards = write(&dir.0, "cards.csv", &csv);
    let results = dir.0.join("results.csv").display().to_string();
    let out = cardsync(&emulator, &["sync", "--out", &results, &cards]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let file = std::fs::read_to_string(&results).unwrap();
    let status_of = |id: &str| {
        file.lines()
            .find(|l| l.starts_with(&format!("{id},")))
            .and_then(|l| l.split(',').nth(1))
            .map(str::to_owned)
    };
    for (id, card, _, _, expected) in &events {
        assert_eq!(status_of(id).as_deref(), *expected, "{id}: {file}");
        if *expected == Some("updated_card") {
            assert!(
                file.contains(&cardsync_sandbox::replacement_card(card)),
                "{id}"
            );
        }
    }
    assert_eq!(
        status_of("feed-closed").as_deref(),
        Some("closed"),
        "{file}"
    );
    assert_eq!(
        status_of("feed-replaced").as_deref(),
        Some("contact"),
        "{file}"
    );
}

/// `issuer cards add --card -` reads the number from standard input, so that it never shows in
/// the process list or the shell's history; too much input, or none, is refused.
#[test]
fn a_card_number_can_come_from_standard_input() {
    use std::io::Write;
    let emulator = Emulator::start(|_| {});
    let add = |input: &str| {
        let mut child = Command::new(BIN)
            .args([
                "--output", "json", "issuer", "cards", "add", "--card", "-", "--exp", "05/27",
            ])
            .env("CARDSYNC_BASE_URL", emulator.url())
            .env("CARDSYNC_ISSUER_TOKEN", "sandbox_issuer_token")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = add("4111111111111111\n");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(json_lines(&out)[0]["card_id"].is_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("4111111111111111"), "{stdout}");
    for bad in ["", "\n", &"4".repeat(200)] {
        let out = add(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains(&"4".repeat(20)));
    }
}
