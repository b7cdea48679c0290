//! `cardsync sync --wait webhook` against the emulator: the merchant's webhook registrations
//! are left alone unless the user asks, an event is answered 200 only once the job recorded
//! it, and what a recorded event announced is fetched by the next run when this one could not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cardsync_sandbox::Faults;

mod common;
use common::{BIN, Dir, Emulator, LISTEN_TOKEN, cardsync, free_addr, post, wait_for};

/// Six documented Visa test cards: one batch.
fn write_cards(dir: &Path) -> PathBuf {
    let path = dir.join("cards.csv");
    std::fs::write(
        &path,
        "id,card,exp\nv1,4457010000000009,01/50\nv2,4457000300000007,01/50\n\
         v3,4457010200000247,08/50\nv4,4100200300011001,05/50\nv5,4457010140000141,09/50\n\
         v6,4457000900000001,08/50\n",
    )
    .unwrap();
    path
}

fn sync(emulator: &Emulator, cards: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["--output", "json", "sync", "--wait", "webhook"])
        .args(["--amex-wait", "1s", "--out"])
        .arg(out)
        .arg(cards)
        .args(extra)
        .env("CARDSYNC_BASE_URL", emulator.url())
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a command to its end, at most 60 s.
fn run(command: &mut Command) -> Output {
    let child = command.spawn().expect("spawn cardsync");
    let id = child.id();
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
            panic!("cardsync ran over 60 s");
        }
    }
}

/// The merchant's webhook registrations, as the emulator shows them.
fn registrations(emulator: &Emulator) -> Vec<String> {
    let overview = emulator.sandbox().overview();
    let json = serde_json::to_value(&overview).unwrap();
    let mut urls: Vec<String> = json["merchants"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["webhooks"].as_array().cloned().unwrap_or_default())
        .map(|w| w.to_string())
        .collect();
    urls.sort();
    urls
}

/// Every card's result once in the results file.
fn results_once(out: &Path) {
    let text = std::fs::read_to_string(out).expect("results file");
    let ids: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(ids.len(), 6, "{text}");
    assert_eq!(distinct.len(), 6, "{text}");
}

#[test]
fn the_merchants_webhook_registrations_are_left_alone() {
    let dir = Dir::new("hooks-alone");
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(200));
    let mine = "http://127.0.0.1:9/webhooks/the-merchants-own-receiver";
    let out = cardsync(
        &emulator,
        &[
            "webhooks",
            "set",
            "--batch-available",
            mine,
            "--batch-error",
            mine,
            "--amex-update",
            mine,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let before = registrations(&emulator);
    assert_eq!(before.len(), 3, "{before:?}");
    let cards = write_cards(&dir.0);
    let output = run(&mut sync(
        &emulator,
        &cards,
        &dir.0.join("results.csv"),
        &["--poll-max", "200ms"],
    ));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not registered"), "{stderr}");
    assert_eq!(registrations(&emulator), before);
    results_once(&dir.0.join("results.csv"));

    // Asked to, it registers, and says what it replaced and how to put it back.
    let output = run(&mut sync(
        &emulator,
        &cards,
        &dir.0.join("again.csv"),
        &["--register-webhooks"],
    ));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("replaced"), "{stderr}");
    assert!(stderr.contains("cardsync webhooks set"), "{stderr}");
    assert!(!stderr.contains(LISTEN_TOKEN));
    assert_ne!(registrations(&emulator), before);
}

/// The results fetch fails after the batch-available event was recorded and acknowledged: the
/// run stops without marking anything done; the next run (the fault gone) fetches the results
/// from what was recorded, with no redelivery of the event.
#[test]
fn a_failed_fetch_after_the_event_is_fetched_by_the_next_run() {
    for (name, faults) in [
        ("404", {
            let mut f = Faults::default();
            f.error_rate = 1.0;
            f.statuses = vec![404];
            f
        }),
        ("cut", {
            let mut f = Faults::default();
            f.drop_rate = 1.0;
            f
        }),
    ] {
        let dir = Dir::new(&format!("hooks-fetch-{name}"));
        let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(200));
        let mut faults = faults;
        faults.paths = vec!["/v2/batch/results".to_owned()];
        emulator.sandbox().set_faults(faults);
        let cards = write_cards(&dir.0);
        let out = dir.0.join("results.csv");
        let output = run(&mut sync(&emulator, &cards, &out, &["--register-webhooks"]));
        assert_ne!(output.status.code(), Some(0), "{name}: {output:?}");
        assert!(!out.exists(), "{name}: no results file yet");
        let deliveries = emulator.sandbox().deliveries();
        assert_eq!(deliveries.len(), 1, "{name}");
        assert_eq!(deliveries[0].last_status, Some(200), "{name}: acknowledged");
        emulator.sandbox().set_faults(Faults::default());
        let output = run(&mut sync(&emulator, &cards, &out, &[]));
        assert_eq!(output.status.code(), Some(0), "{name}: {output:?}");
        results_once(&out);
        assert_eq!(emulator.counts("POST /v2/batch").requests, 1);
        assert_eq!(emulator.sandbox().deliveries()[0].attempts, 1, "{name}");
    }
}

/// `kill -9` while the results announced by a recorded event are being fetched: the next run
/// fetches them once, with no redelivery.
#[cfg(unix)]
#[test]
fn killed_during_the_fetch_the_next_run_fetches_the_results_once() {
    let dir = Dir::new("hooks-kill");
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(200));
    let mut faults = Faults::default();
    faults.latency_ms = 4_000;
    faults.paths = vec!["/v2/batch/results".to_owned()];
    emulator.sandbox().set_faults(faults);
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let mut child = sync(&emulator, &cards, &out, &["--register-webhooks"])
        .spawn()
        .expect("spawn");
    wait_for(
        Duration::from_secs(20),
        "the event was acknowledged",
        || {
            emulator
                .sandbox()
                .deliveries()
                .iter()
                .any(|d| d.last_status == Some(200))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    emulator.sandbox().set_faults(Faults::default());
    let output = run(&mut sync(&emulator, &cards, &out, &[]));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    results_once(&out);
    assert_eq!(emulator.sandbox().deliveries()[0].attempts, 1);
}

/// The same event delivered eight times at once while the job runs: recorded once, every
/// delivery answered 200 (or 503 while the first is being recorded), results written once.
#[test]
fn an_event_delivered_many_times_at_once_is_recorded_once() {
    let dir = Dir::new("hooks-many");
    // Batches complete only when the test says (the clock is moved on by hand).
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_secs(3600));
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let addr = free_addr();
    let child = sync(
        &emulator,
        &cards,
        &out,
        &["--listen", &addr, "--token", LISTEN_TOKEN],
    )
    .spawn()
    .expect("spawn");
    wait_for(Duration::from_secs(20), "the batch was created", || {
        emulator.counts("POST /v2/batch").requests == 1
    });
    emulator.sandbox().advance(Duration::from_secs(3600));
    let batch = emulator.sandbox().batches().remove(0);
    wait_for(Duration::from_secs(10), "the batch completed", || {
        emulator.sandbox().batches()[0].state == cardsync_proto::BatchState::Completed
    });
    let body = format!(
        r#"{{"trigger_id":20,"batch_id":"{}","event_id":"{}"}}"#,
        batch.batch_id, batch.event_id
    );
    let path = format!("/webhooks/{LISTEN_TOKEN}");
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let posts: Vec<_> = (0..8)
            .map(|_| s.spawn(|| post(&addr, &path, &body)))
            .collect();
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    });
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503 || *s == 0),
        "{statuses:?}"
    );
    let output = {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("sync finished")
            .expect("output")
    };
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    results_once(&out);
    let fetches = emulator
        .sandbox()
        .requests()
        .iter()
        .filter(|r| r.path == "/v2/batch/results")
        .count();
    assert_eq!(fetches, 1, "fetched once");
}

/// Killed just before the journal records an event: the delivery was not acknowledged (CardSync
/// delivers it again, or the next run polls), so nothing the event announced is lost.
#[cfg(unix)]
#[test]
fn killed_before_an_event_is_recorded_its_delivery_was_not_acknowledged() {
    if !common::hooks_compiled() {
        return;
    }
    let dir = Dir::new("hooks-recording");
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(200));
    let cards = write_cards(&dir.0);
    let out = dir.0.join("results.csv");
    let output = run(sync(&emulator, &cards, &out, &["--register-webhooks"])
        .env("CARDSYNC_CRASH_AT", "recording:1"));
    assert_eq!(output.status.code(), None, "killed: {output:?}");
    let deliveries = emulator.sandbox().deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_ne!(
        deliveries[0].history.first().and_then(|a| a.status),
        Some(200),
        "the event was acknowledged before it was recorded"
    );
    // The next run finds the batch complete by asking for its status.
    let output = run(&mut sync(&emulator, &cards, &out, &["--poll-max", "500ms"]));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    results_once(&out);
    assert_eq!(emulator.counts("POST /v2/batch").requests, 1);
}
