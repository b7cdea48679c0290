//! `cardsync listen --out DIR` against the emulator: an event is answered 200 only once it is
//! recorded, its results are fetched from that record (again and again while the fetch fails,
//! and by the next start after a crash), and every event is handled once however often, however
//! concurrently and across however many restarts it is delivered.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use cardsync_sandbox::Faults;

mod common;
use common::{
    Dir, Emulator, LISTEN_TOKEN, cardsync, free_addr, json_lines, post, start_listener, wait_for,
};

const RESULTS: &str = "/v2/batch/results";

fn webhook_path() -> String {
    format!("/webhooks/{LISTEN_TOKEN}")
}

/// Registers `addr`'s listener for batch-available events.
fn register(emulator: &Emulator, addr: &str) {
    let url = format!("http://{addr}{}", webhook_path());
    let out = cardsync(emulator, &["webhooks", "set", "--batch-available", &url]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// Submits one documented test card; returns the batch id.
fn submit(emulator: &Emulator, dir: &Path, name: &str) -> String {
    let cards = dir.join(format!("{name}.csv"));
    std::fs::write(&cards, "id,card,exp\na,4457010000000009,01/50\n").unwrap();
    let out = cardsync(
        emulator,
        &["--output", "json", "submit", cards.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    json_lines(&out)[0]["batch_id"]
        .as_str()
        .expect("batch id")
        .to_owned()
}

/// How many results fetches reached the emulator (faulted ones included).
fn fetches(emulator: &Emulator) -> usize {
    emulator
        .sandbox()
        .requests()
        .iter()
        .filter(|r| r.path == RESULTS)
        .count()
}

fn log_lines(out_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out_dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn results_file(out_dir: &Path, batch: &str) -> std::path::PathBuf {
    out_dir.join(format!("batch-{batch}.csv"))
}

fn has_results(out_dir: &Path, batch: &str) -> bool {
    std::fs::read_to_string(results_file(out_dir, batch)).is_ok_and(|t| t.contains("updated_card"))
}

/// The emulator's delivery of `batch`'s event was answered 200.
fn delivered(emulator: &Emulator, batch: &str) -> bool {
    let event = emulator
        .sandbox()
        .batches()
        .into_iter()
        .find(|b| b.batch_id == batch)
        .map(|b| b.event_id);
    emulator
        .sandbox()
        .deliveries()
        .iter()
        .any(|d| d.event_id.is_some() && d.event_id == event && d.last_status == Some(200))
}

fn stop(mut listener: Child) -> String {
    let _ = listener.kill();
    let output = listener.wait_with_output().expect("listener output");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The results fetch fails with `faults` while the event arrives: the event is acknowledged
/// (it is recorded), nothing is marked handled and nothing written, the fetch is tried again,
/// and once the fault is cleared the results arrive, once.
///
/// `tries` is how many fetches reach the emulator before the fault is cleared: more than the
/// client's own retries of one fetch, so that the listener itself has had to try again.
fn a_failing_fetch_is_retried(name: &str, faults: Faults, tries: usize) {
    let dir = Dir::new(name);
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(100));
    emulator.sandbox().set_faults(faults);
    let addr = free_addr();
    let out_dir = dir.0.join("out");
    let listener = start_listener(&emulator, &addr, &out_dir, &[]);
    register(&emulator, &addr);
    let batch = submit(&emulator, &dir.0, "cards");
    wait_for(
        Duration::from_secs(15),
        "the event was acknowledged",
        || delivered(&emulator, &batch),
    );
    wait_for(Duration::from_secs(40), "the fetch tried again", || {
        fetches(&emulator) >= tries
    });
    assert!(log_lines(&out_dir).is_empty(), "nothing is handled yet");
    assert!(!results_file(&out_dir, &batch).exists());
    emulator.sandbox().set_faults(Faults::default());
    wait_for(
        Duration::from_secs(20),
        "the results after the fault",
        || has_results(&out_dir, &batch),
    );
    wait_for(Duration::from_secs(5), "the event's line", || {
        log_lines(&out_dir).len() == 1
    });
    let stdout = stop(listener);
    let lines = log_lines(&out_dir);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["batch_id"], batch.as_str());
    assert!(lines[0]["error"].is_null(), "{lines:?}");
    assert!(stdout.contains("\"handled\":false"), "{stdout}");
    assert_eq!(
        emulator.sandbox().deliveries().len(),
        1,
        "not delivered again"
    );
    #[cfg(unix)]
    for file in ["events.jsonl", &format!("batch-{batch}.csv")] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out_dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}

fn failing(configure: impl FnOnce(&mut Faults)) -> Faults {
    let mut f = Faults::default();
    f.paths = vec![RESULTS.to_owned()];
    configure(&mut f);
    f
}

#[test]
fn results_answered_404_are_fetched_again() {
    a_failing_fetch_is_retried(
        "listen-404",
        failing(|f| {
            f.error_rate = 1.0;
            f.statuses = vec![404];
        }),
        // A 404 is not retried by the client: the second fetch is the listener's.
        2,
    );
}

#[test]
fn results_answered_500_are_fetched_again() {
    a_failing_fetch_is_retried(
        "listen-500",
        failing(|f| {
            f.error_rate = 1.0;
            f.statuses = vec![500];
        }),
        // The client tries five times.
        6,
    );
}

#[test]
fn results_cut_off_mid_body_are_fetched_again() {
    a_failing_fetch_is_retried("listen-cut", failing(|f| f.drop_rate = 1.0), 6);
}

/// `kill -9` while the results are being fetched: the event was recorded before it was
/// answered, so the restarted listener (started while the dead one is still a zombie, not
/// reaped) fetches them, with no redelivery; they are written once.
#[cfg(unix)]
#[test]
fn killed_during_the_fetch_the_next_start_fetches_the_results_once() {
    let dir = Dir::new("listen-kill");
    let emulator = Emulator::start(|s| s.complete_after = Duration::from_millis(100));
    emulator
        .sandbox()
        .set_faults(failing(|f| f.latency_ms = 4_000));
    let addr = free_addr();
    let out_dir = dir.0.join("out");
    let mut listener = start_listener(&emulator, &addr, &out_dir, &[]);
    register(&emulator, &addr);
    let batch = submit(&emulator, &dir.0, "cards");
    wait_for(
        Duration::from_secs(15),
        "the event was acknowledged",
        || delivered(&emulator, &batch),
    );
    // The fetch is under way (four seconds of latency): SIGKILL, and do not reap it yet.
    std::thread::sleep(Duration::from_millis(500));
    let pid = listener.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for(Duration::from_secs(5), "the listener died", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    });
    assert!(!has_results(&out_dir, &batch));
    emulator.sandbox().set_faults(Faults::default());
    let restarted = start_listener(&emulator, &addr, &out_dir, &[]);
    wait_for(
        Duration::from_secs(20),
        "the results after the restart",
        || has_results(&out_dir, &batch),
    );
    wait_for(Duration::from_secs(5), "the event's line", || {
        log_lines(&out_dir).len() == 1
    });
    let _ = stop(restarted);
    let _ = listener.wait();
    assert_eq!(log_lines(&out_dir).len(), 1);
    let deliveries = emulator.sandbox().deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].attempts, 1, "no redelivery was needed");
}

/// The same event delivered eight times at once, then again after a restart, and another event
/// (without an event id) naming the same batch: handled once, the results fetched once.
#[test]
fn one_event_delivered_often_concurrently_and_across_a_restart_is_handled_once() {
    let dir = Dir::new("listen-twice");
    let emulator = Emulator::start(|s| s.complete_after = Duration::ZERO);
    // A little latency, so that the deliveries overlap the fetch.
    emulator
        .sandbox()
        .set_faults(failing(|f| f.latency_ms = 300));
    let addr = free_addr();
    let out_dir = dir.0.join("out");
    let listener = start_listener(&emulator, &addr, &out_dir, &[]);
    // Nothing registered: the test delivers the event itself.
    let batch = submit(&emulator, &dir.0, "cards");
    let event_id = emulator
        .sandbox()
        .batches()
        .into_iter()
        .find(|b| b.batch_id == batch)
        .expect("the batch")
        .event_id;
    let body = format!(r#"{{"trigger_id":20,"batch_id":"{batch}","event_id":"{event_id}"}}"#);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let posts: Vec<_> = (0..8)
            .map(|_| s.spawn(|| post(&addr, &webhook_path(), &body)))
            .collect();
        posts.into_iter().map(|p| p.join().unwrap()).collect()
    });
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    wait_for(Duration::from_secs(15), "the results", || {
        has_results(&out_dir, &batch)
    });
    // The same batch named by an event with no event id: recorded by its batch, not fetched.
    let keyless = format!(r#"{{"trigger_id":20,"batch_id":"{batch}"}}"#);
    assert_eq!(post(&addr, &webhook_path(), &keyless), 200);
    wait_for(Duration::from_secs(10), "two lines", || {
        log_lines(&out_dir).len() == 2
    });
    let _ = stop(listener);
    let listener = start_listener(&emulator, &addr, &out_dir, &[]);
    for _ in 0..3 {
        assert_eq!(post(&addr, &webhook_path(), &body), 200);
        assert_eq!(post(&addr, &webhook_path(), &keyless), 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = stop(listener);
    let lines = log_lines(&out_dir);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["event_id"], event_id.as_str());
    assert!(
        lines[1]["note"].as_str().unwrap_or("").contains("already"),
        "{lines:?}"
    );
    assert_eq!(
        fetches(&emulator),
        1,
        "the batch's results were fetched once"
    );
}

/// Forged events (with the token) naming batches that do not exist: at most `--max-waiting`
/// wait for their results; past that, deliveries are answered 503 with Retry-After, and each
/// waiting one is tried with a growing pause, not in a loop.
#[test]
fn a_full_queue_answers_503() {
    let dir = Dir::new("listen-full");
    let emulator = Emulator::start(|_| {});
    let addr = free_addr();
    let out_dir = dir.0.join("out");
    let listener = start_listener(&emulator, &addr, &out_dir, &["--max-waiting", "3"]);
    let statuses: Vec<u16> = (0..5)
        .map(|i| {
            let body = format!(r#"{{"trigger_id":20,"batch_id":"forged-{i}","event_id":"f{i}"}}"#);
            post(&addr, &webhook_path(), &body)
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 503, 503]);
    // A redelivery of a recorded one is still acknowledged.
    let again = r#"{"trigger_id":20,"batch_id":"forged-0","event_id":"f0"}"#;
    assert_eq!(post(&addr, &webhook_path(), again), 200);
    std::thread::sleep(Duration::from_millis(2_500));
    let _ = stop(listener);
    // Three events, each tried at once and after 1 s and 2 s at most: not a busy loop.
    let tries = fetches(&emulator);
    assert!((3..=9).contains(&tries), "{tries} fetches");
    assert!(log_lines(&out_dir).is_empty());
    // Events with nothing to record them by are refused, not dropped in silence; also when
    // the warning it logs cannot be written (standard error closed, as under a supervisor
    // that went away).
    let mut listener = start_listener(&emulator, &addr, &out_dir, &[]);
    drop(listener.stderr.take());
    for _ in 0..2 {
        assert_eq!(
            post(&addr, &webhook_path(), r#"{"trigger_id":23,"stats":{}}"#),
            422
        );
    }
    let _ = stop(listener);
}
