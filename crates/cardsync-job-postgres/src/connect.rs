//! A pool of connections to the journal database, over TLS (rustls) when the URL's `sslmode`
//! asks for it. When the URL says nothing, a database on another host is reached only over
//! TLS (`require`: the server's certificate verified against the roots below), and one on
//! this host (a loopback address, `localhost`, a Unix socket) as PostgreSQL's own default
//! (`prefer`: TLS when the server offers it).
//!
//! Roots: the Mozilla roots, plus the PEM certificates in the file named by
//! `CARDSYNC_JOURNAL_CA_FILE` (a private database's own CA). Every session gets a statement
//! timeout and an idle-in-transaction timeout, so that nothing holds locks or stops autovacuum
//! for long.

use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::PgError;

/// The environment variable naming extra root certificates (PEM) for TLS to the database.
pub(crate) const CA_FILE_ENV: &str = "CARDSYNC_JOURNAL_CA_FILE";

/// Session settings: no statement and no idle transaction lasts over 30 s.
const SESSION: &str = "-c statement_timeout=30000 -c idle_in_transaction_session_timeout=30000 \
                       -c lock_timeout=10000";

/// A pool of `size` connections to `url`.
pub(crate) fn pool(url: &str, size: usize) -> Result<Pool, PgError> {
    let config = config_for(url)?;
    make_pool(config, size)
}

/// The connection settings of `url`, with the session settings and TLS default added.
fn config_for(url: &str) -> Result<tokio_postgres::Config, PgError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| PgError::Config(format!("not a PostgreSQL URL: {e}")))?;
    if !url.to_ascii_lowercase().contains("sslmode") && !all_local(&config) {
        // Never plain text to another host unless the URL asks for it.
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    let options = match config.get_options() {
        Some(given) => format!("{SESSION} {given}"),
        None => SESSION.to_owned(),
    };
    config.options(&options);
    if config.get_application_name().is_none() {
        config.application_name("cardsync");
    }
    Ok(config)
}

fn make_pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, PgError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = std::env::var_os(CA_FILE_ENV) {
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|e| PgError::Config(format!("{CA_FILE_ENV}: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| PgError::Config(format!("{CA_FILE_ENV}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| PgError::Config(format!("{CA_FILE_ENV}: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let manager = Manager::from_config(
        config,
        MakeRustlsConnect::new(tls),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(30)))
        .create_timeout(Some(std::time::Duration::from_secs(15)))
        .build()
        .map_err(|e| PgError::Config(e.to_string()))
}

/// Whether every host of `config` is on this machine: a Unix socket, a loopback address, or
/// `localhost`.
fn all_local(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let hosts = config.get_hosts();
    !hosts.is_empty()
        && hosts.iter().all(|h| match h {
            Host::Tcp(name) => {
                let name = name.trim_start_matches('[').trim_end_matches(']');
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            #[cfg(unix)]
            Host::Unix(_) => true,
        })
}

/// How many times this process has seen the database drop a connection (a restart, a
/// failover, an administrator ending sessions), and when it last did: connections that sat
/// idle in a pool since before then are likely dropped too, and are let go (see
/// [`purge_if_lost`]) rather than handed out to fail once.
static LOSSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static LAST_LOSS: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// Whether `e` says that the database dropped the connection.
pub(crate) fn is_lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|c| {
            let code = c.code();
            code.starts_with("08") || code.starts_with("57P")
        })
}

/// Notes `e` if it says that the database dropped the connection.
pub(crate) fn note_if_lost(e: &tokio_postgres::Error) {
    if is_lost(e) {
        *LAST_LOSS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
        LOSSES.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Lets go of `pool`'s idle connections made before the last loss this process saw, once per
/// loss (`seen` keeps, per pool, the count of losses already handled).
pub(crate) fn purge_if_lost(pool: &Pool, seen: &std::sync::atomic::AtomicU64) {
    // Read-only when nothing was lost since (every call to the journal passes here).
    let losses = LOSSES.load(std::sync::atomic::Ordering::Acquire);
    if seen.load(std::sync::atomic::Ordering::Acquire) == losses
        || seen.swap(losses, std::sync::atomic::Ordering::AcqRel) == losses
    {
        return;
    }
    let last = *LAST_LOSS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(at) = last {
        pool.retain(|_, metrics| metrics.created > at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode;

    fn mode(url: &str) -> SslMode {
        config_for(url).unwrap().get_ssl_mode()
    }

    #[test]
    fn another_host_gets_tls_unless_the_url_says_otherwise() {
        assert_eq!(mode("postgres://u@db.internal/j"), SslMode::Require);
        assert_eq!(mode("postgres://u@10.0.0.5:5432/j"), SslMode::Require);
        assert_eq!(
            mode("postgres://u@db.internal/j?sslmode=disable"),
            SslMode::Disable
        );
        assert_eq!(mode("postgres://u@127.0.0.1/j"), SslMode::Prefer);
        assert_eq!(mode("postgres://u@localhost/j"), SslMode::Prefer);
        assert_eq!(mode("postgres://u@[::1]/j"), SslMode::Prefer);
        assert_eq!(mode("host=db.internal user=u"), SslMode::Require);
        assert_eq!(mode("host=/run/postgresql user=u"), SslMode::Prefer);
    }
}
