//! What the tests that run `cardsync` against the emulator share: a scratch directory and an
//! emulator on loopback, both removed or stopped on drop.

#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cardsync_sandbox::{Sandbox, Settings};

/// A scratch directory, removed on drop.
pub(crate) struct Dir(pub(crate) PathBuf);

impl Dir {
    /// A new, empty directory named after the test and the process.
    pub(crate) fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("cardsync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The emulator on `127.0.0.1:0`, in its own runtime; shut down on drop.
pub(crate) struct Emulator {
    runtime: tokio::runtime::Runtime,
    sandbox: Option<Sandbox>,
}

impl Emulator {
    /// Starts an emulator with these settings changes.
    pub(crate) fn start(configure: impl FnOnce(&mut Settings)) -> Emulator {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut settings = Settings::default();
        configure(&mut settings);
        let sandbox = runtime
            .block_on(Sandbox::start(settings, "127.0.0.1:0".parse().unwrap()))
            .expect("sandbox");
        Emulator {
            runtime,
            sandbox: Some(sandbox),
        }
    }

    /// The running emulator.
    pub(crate) fn sandbox(&self) -> &Sandbox {
        self.sandbox.as_ref().expect("running")
    }

    /// Its base URL.
    pub(crate) fn url(&self) -> String {
        self.sandbox().base_url().to_owned()
    }

    /// What one endpoint received, such as "POST /v2/batch" (all zero before any request).
    pub(crate) fn counts(&self, endpoint: &str) -> cardsync_sandbox::EndpointCounts {
        self.sandbox()
            .counters()
            .get(endpoint)
            .copied()
            .unwrap_or_default()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(s) = self.sandbox.take() {
            self.runtime.block_on(s.shutdown());
        }
    }
}

/// Settings for jobs that must not wait: batches complete at once, and every card has a
/// result row.
pub(crate) fn instant(settings: &mut Settings) {
    settings.complete_after = Duration::ZERO;
    settings.report_unchanged = true;
}

/// The `cardsync` binary.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_cardsync");

/// The secret path token of the listeners the tests start.
pub(crate) const LISTEN_TOKEN: &str = "t0ken-for-the-listen-test";

/// Runs `cardsync` against the emulator with its default keys.
pub(crate) fn cardsync(emulator: &Emulator, args: &[&str]) -> Output {
    let output = Command::new(BIN)
        .args(args)
        .env("CARDSYNC_BASE_URL", emulator.url())
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key")
        .env("CARDSYNC_PARTNER_KEY", "sandbox_master_key")
        .env("CARDSYNC_ISSUER_TOKEN", "sandbox_issuer_token")
        .stdin(Stdio::null())
        .output()
        .expect("run cardsync");
    assert!(
        output.status.code().is_some(),
        "killed: {:?}",
        output.status
    );
    output
}

/// The JSON lines of a command's output.
pub(crate) fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A free loopback address.
pub(crate) fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Starts `cardsync listen --out OUT_DIR` on `addr` (JSON output, piped; stops by itself after
/// 60 s) and waits until it accepts connections.
pub(crate) fn start_listener(
    emulator: &Emulator,
    addr: &str,
    out_dir: &Path,
    extra: &[&str],
) -> std::process::Child {
    let listener = Command::new(BIN)
        .args(["--output", "json", "listen", "--addr", addr])
        .args(["--token", LISTEN_TOKEN, "--stop-after", "60s"])
        .args(extra)
        .arg("--out")
        .arg(out_dir)
        .env("CARDSYNC_BASE_URL", emulator.url())
        .env("CARDSYNC_API_KEY", "sandbox_merchant_key")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "listen did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    listener
}

/// POSTs a JSON body over plain HTTP/1.1 and returns the status (0 when no answer came in 10 s).
pub(crate) fn post(addr: &str, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Waits up to `limit` for `done`, checking every 20 ms; panics with `what` when it never is.
pub(crate) fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} (waited {limit:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The tests that stop `cardsync` at one of its steps (`CARDSYNC_CRASH_AT`,
/// `CARDSYNC_FREEZE_AT`) need the crash points compiled in: skipped without the `test-hooks`
/// feature (which the README's test command turns on), except under `CI=true`.
pub(crate) fn hooks_compiled() -> bool {
    if cfg!(feature = "test-hooks") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: run the tests with --features cardsync-cli/test-hooks (README)"
    );
    eprintln!(
        "skipped: the crash points are compiled only with --features cardsync-cli/test-hooks"
    );
    false
}
