//! The sandbox's dashboard in a real Chromium: runs the browser tests of `tests/browser/`
//! (Python, Playwright) against this build of `cardsync`, so that `cargo test --workspace` runs
//! them too.
//!
//! They need `python3` with `pytest` and `playwright`, and Chromium (`chromium` on PATH, or
//! `CARDSYNC_CHROMIUM`). Without them the test says so and passes, except under `CI=true`,
//! where a missing browser is a failure. Screenshots of each step go to
//! `target/browser-artifacts/` (or `CARDSYNC_ARTIFACTS`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cardsync");

/// The browser tests take about ten seconds; this bounds a hung browser.
const LIMIT: Duration = Duration::from_secs(600);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// What is missing to run the browser tests, if anything.
fn missing() -> Option<String> {
    let python = Command::new("python3")
        .args(["-c", "import pytest, playwright.sync_api"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !python.is_ok_and(|s| s.success()) {
        return Some("python3 with pytest and playwright (pip install pytest playwright)".into());
    }
    let chromium = std::env::var_os("CARDSYNC_CHROMIUM").is_some()
        || on_path("chromium")
        || on_path("chromium-browser");
    if !chromium {
        return Some("Chromium (apt-get install chromium, or CARDSYNC_CHROMIUM)".into());
    }
    None
}

#[test]
fn the_dashboard_in_chromium() {
    if let Some(what) = missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the browser tests need {what}, and CI=true"
        );
        eprintln!("skipped: the browser tests need {what}");
        return;
    }
    let root = workspace();
    let artifacts = std::env::var_os("CARDSYNC_ARTIFACTS")
        .map_or_else(|| root.join("target/browser-artifacts"), PathBuf::from);
    let log = std::env::temp_dir().join(format!("cardsync-browser-{}.log", std::process::id()));
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/browser",
        ])
        .current_dir(&root)
        .env("CARDSYNC_BIN", BIN)
        .env("CARDSYNC_ARTIFACTS", &artifacts)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run pytest");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut report = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut report)
        .unwrap();
    let _ = std::fs::remove_file(&log);
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!(
            "the browser tests failed ({s}); screenshots in {}:\n{report}",
            artifacts.display()
        ),
        None => panic!("the browser tests took over {LIMIT:?}:\n{report}"),
    }
}
