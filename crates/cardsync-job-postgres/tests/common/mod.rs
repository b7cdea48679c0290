//! A real PostgreSQL for the tests: the one `CARDSYNC_TEST_POSTGRES` names, a schema of its
//! own per test.
#![allow(dead_code)]

use cardsync_job_postgres::{JournalKey, PgJournal};

pub(crate) fn database() -> Option<String> {
    match std::env::var("CARDSYNC_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CARDSYNC_TEST_POSTGRES is not set, and CI=true: run the tests with `bash .ci/postgres.sh run cargo test --workspace`"
            );
            eprintln!("skipped: CARDSYNC_TEST_POSTGRES is not set (see .ci/postgres.sh)");
            None
        }
    }
}

/// A schema of its own for one test, dropped when it ends.
pub(crate) struct TestDb {
    pub(crate) admin: tokio_postgres::Client,
    pub(crate) schema: String,
    pub(crate) url: String,
}

impl TestDb {
    pub(crate) async fn new(base: &str) -> TestDb {
        let (admin, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .expect("the test database");
        tokio::spawn(connection);
        let schema = format!(
            "t_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url =
            format!("{base}{sep}options=-c%20search_path%3D{schema}&application_name={schema}");
        TestDb { admin, schema, url }
    }

    pub(crate) async fn journal(&self, key: &str) -> PgJournal {
        self.journal_with(key, None).await.expect("connect")
    }

    /// A journal with key `key` (a byte, repeated), and during a rotation the previous key
    /// `old`.
    pub(crate) async fn journal_with(
        &self,
        key: &str,
        old: Option<&str>,
    ) -> Result<PgJournal, cardsync_job_postgres::PgError> {
        let key_of = |k: &str| JournalKey::from_hex(&k.repeat(32)).unwrap();
        PgJournal::connect_with_keys(&self.url, key_of(key), old.map(key_of), 8).await
    }

    /// Ends every session of this test's journals (as a restart, a failover or an
    /// administrator would); returns how many it ended.
    pub(crate) async fn cut_connections(&self) -> usize {
        self.admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&self.schema],
            )
            .await
            .unwrap()
            .len()
    }

    /// Every row of every table, as text.
    pub(crate) async fn dump(&self) -> String {
        let mut out = String::new();
        for table in [
            "cardsync_jobs",
            "cardsync_merchants",
            "cardsync_requests",
            "cardsync_card_sets",
            "cardsync_fingerprints",
            "cardsync_results",
            "cardsync_result_counts",
            "cardsync_events",
            "cardsync_late_answers",
        ] {
            for row in self
                .admin
                .query(
                    &format!("SELECT t::text FROM {}.{table} t", self.schema),
                    &[],
                )
                .await
                .unwrap()
            {
                out.push_str(row.get::<_, &str>(0));
                out.push('\n');
            }
        }
        out
    }

    pub(crate) async fn drop(self) {
        self.admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await
            .unwrap();
    }
}

/// `n` valid card numbers: `prefix` (six digits), a counter from `from`, a check digit.
pub(crate) fn numbers_with(prefix: &str, n: usize, from: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            let body = format!("{prefix}{i:09}");
            let check = cardsync_core::luhn_check_digit(&body).unwrap();
            format!("{body}{}", check as char)
        })
        .collect()
}

/// A PostgreSQL server of one test's own (a new cluster from `.ci/postgres.sh`), so that the
/// test can stop and start it without touching any other test's database. Stopped and removed
/// on drop.
pub(crate) struct PrivateServer {
    pub(crate) url: String,
    dir: String,
}

fn postgres_sh(args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.ci/postgres.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("bash .ci/postgres.sh");
    assert!(
        output.status.success(),
        "postgres.sh {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl PrivateServer {
    /// A new server, or `None` where the tests have no PostgreSQL (see [`database`]).
    pub(crate) fn start() -> Option<PrivateServer> {
        database()?;
        let out = postgres_sh(&["start"]);
        let value = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no {name} in {out:?}"))
        };
        Some(PrivateServer {
            url: value("CARDSYNC_TEST_POSTGRES"),
            dir: value("CARDSYNC_TEST_POSTGRES_DIR"),
        })
    }

    /// Stops the server (its sessions are ended, new connections refused), keeping its data.
    pub(crate) fn halt(&self) {
        postgres_sh(&["halt", &self.dir]);
    }

    /// Starts it again after [`PrivateServer::halt`].
    pub(crate) fn resume(&self) {
        postgres_sh(&["resume", &self.dir]);
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        postgres_sh(&["stop", &self.dir]);
    }
}
