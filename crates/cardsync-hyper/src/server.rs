//! The accept loop every HTTP server here shares (the webhook receiver, the emulator), with
//! the limits a server reachable by strangers needs: a time limit on reading a request's
//! head, a time limit and a size limit on reading its body ([`read_body`]), and a cap on open
//! connections (past it, new connections wait in the kernel's queue until one closes).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The limits of [`serve`].
///
/// ```
/// use std::time::Duration;
/// let limits = cardsync_hyper::server::ServeLimits::default();
/// assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
/// assert_eq!(limits.max_connections, 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeLimits {
    /// How long a client may take to send a request's line and headers (and how long an idle
    /// connection is kept waiting for the next request). Default 10 s.
    pub header_read_timeout: Duration,
    /// How many connections may be open at once. Default 1024.
    pub max_connections: usize,
    /// How long open connections may finish their requests once the server stops. Default
    /// 2 s.
    pub grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            grace: Duration::from_secs(2),
        }
    }
}

impl ServeLimits {
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

    /// With this time for open connections to finish once the server stops.
    pub fn with_grace(mut self, grace: Duration) -> ServeLimits {
        self.grace = grace;
        self
    }
}

/// Serves HTTP/1.1 on `listener` with `handler` until `stopped` turns true (or its sender is
/// dropped), then lets open connections finish for up to `limits.grace`.
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
    let open = Arc::new(Semaphore::new(limits.max_connections));
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
        let Ok((stream, _)) = accepted else { continue };
        let handler = handler.clone();
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service_fn(handler));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
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
