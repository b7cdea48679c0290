//! The accept loop every HTTP server here shares (the webhook receiver, the emulator), with
//! the limits a server reachable by strangers needs: a time limit on a new connection's first
//! byte and on reading a request's head, a time limit and a size limit on reading its body
//! ([`read_body`]), a cap on open connections (past it, new connections wait in the kernel's
//! queue until one closes) kept below the file descriptors the process has, and a cap on the
//! connections of one peer (past it, its new connections are closed at once).
//!
//! When `accept` fails (out of file descriptors, say), the loop backs off: it logs once per
//! spell of failures, waits 10 ms, doubling up to 1 s, and tries again; it never spins.
//! [`raise_open_file_limit`] raises the process's own limit on open files, for a binary to call
//! at start.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// The limits of [`serve`].
///
/// ```
/// use std::time::Duration;
/// let limits = cardsync_hyper::server::ServeLimits::default();
/// assert_eq!(limits.first_byte_timeout, Duration::from_secs(5));
/// assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
/// assert_eq!(limits.max_connections, 1024);
/// assert_eq!(limits.max_connections_per_peer, 64);
///
/// let strict = limits.with_max_connections_per_peer(8).with_first_byte_timeout(Duration::from_secs(1));
/// assert_eq!(strict.max_connections_per_peer, 8);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeLimits {
    /// How long a new connection may stay silent before the first byte of its first request
    /// arrives; a silent one is then closed. Shorter than the head's limit, so that idle
    /// sockets cannot hold the connection places long. Default 5 s.
    pub first_byte_timeout: Duration,
    /// How long a client may take to send a request's line and headers (and how long an idle
    /// connection is kept waiting for the next request). Default 10 s.
    pub header_read_timeout: Duration,
    /// How many connections may be open at once. Default 1024. [`serve`] keeps it below the
    /// file descriptors the process has left when it starts (see there).
    pub max_connections: usize,
    /// How many connections one peer (one IP address) may have open at once; its connections
    /// past it are closed at once, so that one peer cannot take every place. Default 64.
    pub max_connections_per_peer: usize,
    /// How long open connections may finish their requests once the server stops. Default
    /// 2 s.
    pub grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            first_byte_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_peer: 64,
            grace: Duration::from_secs(2),
        }
    }
}

impl ServeLimits {
    /// With this time limit on a new connection's first byte.
    pub fn with_first_byte_timeout(mut self, timeout: Duration) -> ServeLimits {
        self.first_byte_timeout = timeout;
        self
    }

    /// With this head-reading time limit.
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> ServeLimits {
        self.header_read_timeout = timeout;
        self
    }

    /// With this cap on open connections (at least 1).
    pub fn with_max_connections(mut self, n: usize) -> ServeLimits {
        self.max_connections = n.max(1);
        self
    }

    /// With this cap on one peer's open connections (at least 1).
    pub fn with_max_connections_per_peer(mut self, n: usize) -> ServeLimits {
        self.max_connections_per_peer = n.max(1);
        self
    }

    /// With this time for open connections to finish once the server stops.
    pub fn with_grace(mut self, grace: Duration) -> ServeLimits {
        self.grace = grace;
        self
    }
}

/// File descriptors [`serve`] leaves to the rest of the process (its files, its outgoing
/// connections, its journal) when it caps its connections by what is left.
pub const DESCRIPTOR_RESERVE: u64 = 32;

/// How far [`raise_open_file_limit`] raises the soft limit at most: far more than the
/// servers here hold open, and not so many that child processes which walk every possible
/// descriptor (some close them all before `exec`) slow down.
pub const OPEN_FILE_TARGET: u64 = 65_536;

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) toward its hard limit, up
/// to [`OPEN_FILE_TARGET`], and answers the soft limit then in force. A limit already higher
/// is left as it is. Where the platform has no such limit, it answers [`OPEN_FILE_TARGET`]
/// and changes nothing.
///
/// Many systems start processes with a soft limit of 1024 open files although the hard limit
/// allows far more; a server with many idle peers then runs out of descriptors. The
/// `cardsync` binary calls this at start.
///
/// ```
/// let soft = cardsync_hyper::server::raise_open_file_limit().unwrap();
/// assert!(soft > 0);
/// ```
///
/// # Errors
///
/// The operating system's error when the limit cannot be read or set.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(OPEN_FILE_TARGET)
}

/// How many more descriptors this process may open: its soft limit less those open now, if
/// both can be told.
#[cfg(unix)]
fn descriptors_left() -> Option<u64> {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    if soft == rlimit::INFINITY {
        return None;
    }
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|entries| entries.count() as u64)
        .unwrap_or(0);
    Some(soft.saturating_sub(open))
}

/// Where there is no such limit, nothing caps the connections but the configured number.
#[cfg(not(unix))]
fn descriptors_left() -> Option<u64> {
    None
}

/// The cap on open connections: `configured`, or fewer when the process has fewer
/// descriptors left than that plus [`DESCRIPTOR_RESERVE`] (at least 1).
fn connection_cap(configured: usize) -> usize {
    let Some(left) = descriptors_left() else {
        return configured;
    };
    let budget = usize::try_from(left.saturating_sub(DESCRIPTOR_RESERVE)).unwrap_or(usize::MAX);
    let cap = configured.min(budget).max(1);
    if cap < configured {
        tracing::debug!(
            configured,
            cap,
            "at most {cap} connections at once: the process has {left} file descriptors left"
        );
    }
    cap
}

/// Why `accept` failed for one connection only (the next one may well succeed): nothing to
/// back off from.
fn connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    )
}

/// The first wait after a failed `accept`, and the longest.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// The open connections of each peer.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, PeerCount>>);

#[derive(Default)]
struct PeerCount {
    open: usize,
    /// Whether a connection past the cap was closed since the peer last had none open (it
    /// is logged once).
    refused: bool,
}

/// A peer's place, given back when the connection ends.
struct PeerPlace {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    /// Takes a place for a connection from `ip`, unless it has `max` open already.
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerPlace> {
        let mut peers = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = peers.entry(ip).or_default();
        if count.open >= max {
            if !count.refused {
                count.refused = true;
                tracing::warn!(
                    peer = %ip,
                    "{ip} has {max} connections open, the most one peer may: its further connections are closed until some end"
                );
            }
            return None;
        }
        count.open += 1;
        Some(PeerPlace {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerPlace {
    fn drop(&mut self) {
        let mut peers = self.peers.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = peers.get_mut(&self.ip) {
            count.open = count.open.saturating_sub(1);
            if count.open == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

/// Waits for the first byte of a new connection, up to `timeout` (or until the server
/// stops): whether one came.
async fn first_byte(
    stream: &TcpStream,
    timeout: Duration,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let mut byte = [0u8; 1];
    tokio::select! {
        peeked = tokio::time::timeout(timeout, stream.peek(&mut byte)) => {
            matches!(peeked, Ok(Ok(n)) if n > 0)
        }
        _ = stopped.wait_for(|stop| *stop) => false,
    }
}

/// Serves HTTP/1.1 on `listener` with `handler` until `stopped` turns true (or its sender is
/// dropped), then lets open connections finish for up to `limits.grace`.
///
/// The cap on open connections is `limits.max_connections`, or fewer when the process has
/// fewer file descriptors left when the loop starts (its soft `RLIMIT_NOFILE` less those open)
/// than that plus [`DESCRIPTOR_RESERVE`]. A failed `accept` (no descriptor left, say) is logged
/// once per spell of failures and tried again after a wait of 10 ms doubling up to 1 s.
pub async fn serve<H, Fut, B>(
    listener: TcpListener,
    limits: ServeLimits,
    mut stopped: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(connection_cap(limits.max_connections)));
    let peers = Arc::new(Peers::default());
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut failures: u64 = 0;
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit,
            _ = stopped.changed() => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if connection_error(&e) => continue,
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(
                        error = %e,
                        "cannot accept connections; trying again, less often while it lasts"
                    );
                }
                failures += 1;
                drop(permit);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(failures, "accepting connections again");
            failures = 0;
            backoff = ACCEPT_BACKOFF.0;
        }
        let Some(place) = peers.enter(peer.ip().to_canonical(), limits.max_connections_per_peer)
        else {
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        let watcher = graceful.watcher();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _held = (permit, place);
            if !first_byte(&stream, limits.first_byte_timeout, &mut stopped).await {
                return;
            }
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service_fn(handler));
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.grace) => {}
    }
}

/// Why a request body could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum BodyError {
    /// It is larger than the limit.
    TooLarge,
    /// It did not arrive in time.
    TooSlow,
    /// The connection failed while it was read (cut off, or not HTTP).
    Broken,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BodyError::TooLarge => "the request body is too large",
            BodyError::TooSlow => "the request body did not arrive in time",
            BodyError::Broken => "the request body was cut off",
        })
    }
}

impl std::error::Error for BodyError {}

/// Reads a whole request body of at most `max` bytes within `timeout`.
///
/// # Errors
///
/// [`BodyError`].
pub async fn read_body(body: Incoming, max: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(BodyError::TooSlow),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Broken),
    }
}
