//! What the tests that run `cardsync` against the emulator share: a scratch directory and an
//! emulator on loopback, both removed or stopped on drop.

#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;
use std::time::Duration;

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
