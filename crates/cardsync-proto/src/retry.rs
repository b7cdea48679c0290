//! The retry decision: a pure function from what happened to "retry after this long" or "give
//! up". A transport only sleeps and resends.
//!
//! The rules:
//!
//! - Idempotent requests (every GET, webhook registration, subscribe and unsubscribe) are
//!   retried after 429, 502, 503 and 504 responses and after transport failures, whether or not
//!   the request may have reached the server.
//! - Requests that are not idempotent (`POST /v2/batch`, which has no idempotency key and is
//!   billed per batch, and merchant enrollment) are retried only after a transport failure that
//!   certainly happened before any byte of the request was sent (the connection was refused,
//!   the name did not resolve, the TLS handshake failed). A 429 or 503 is not enough: behind a
//!   CDN, the origin may have processed the request before the error was produced.
//! - Any other status (including 500) is final.
//! - A `Retry-After` header is honoured exactly; one longer than the policy's limit means give
//!   up now rather than hold a job for hours. Otherwise the wait is exponential from the base
//!   delay, capped, with jitter (half fixed, half random).
//! - Attempts and total elapsed time are both bounded.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;

use crate::Idempotency;

/// Whether a failed request may have reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reached {
    /// Certainly not: the failure came before any byte of the request was sent.
    No,
    /// Perhaps: the request, or part of it, was sent.
    Maybe,
}

/// What happened to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// A response arrived with this status, and this `Retry-After` (already parsed).
    Response {
        /// The status.
        status: StatusCode,
        /// The `Retry-After` delay, if the header was present and valid.
        retry_after: Option<Duration>,
    },
    /// No response: the transport failed.
    Transport {
        /// Whether the request may have reached the server.
        reached: Reached,
    },
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Wait this long, then send the request again.
    Retry {
        /// The wait.
        after: Duration,
    },
    /// Stop and report the last outcome.
    GiveUp,
}

/// Limits for retrying.
///
/// ```
/// use std::time::Duration;
/// use cardsync_proto::retry::{Decision, Outcome, Reached, RetryPolicy};
/// use cardsync_proto::Idempotency;
///
/// let policy = RetryPolicy::default();
/// let busy = Outcome::Response { status: http::StatusCode::SERVICE_UNAVAILABLE, retry_after: Some(Duration::from_secs(2)) };
/// assert_eq!(
///     policy.decide(Idempotency::Idempotent, 1, Duration::ZERO, busy, 0.5),
///     Decision::Retry { after: Duration::from_secs(2) }
/// );
/// // Batch creation is not resent after a response, whatever it was.
/// assert_eq!(policy.decide(Idempotency::NotIdempotent, 1, Duration::ZERO, busy, 0.5), Decision::GiveUp);
/// // ... but is after a connection that was never made.
/// let refused = Outcome::Transport { reached: Reached::No };
/// assert!(matches!(policy.decide(Idempotency::NotIdempotent, 1, Duration::ZERO, refused, 0.5), Decision::Retry { .. }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    max_retry_after: Duration,
    max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts, 500 ms base delay doubling to at most 30 s, `Retry-After` honoured up to
    /// 120 s, and no retry that would end more than 5 minutes after the first attempt began.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Sets the most attempts, the first included (at least 1).
    pub fn with_max_attempts(mut self, n: u32) -> RetryPolicy {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the first backoff delay and the cap on backoff delays.
    pub fn with_delays(mut self, base: Duration, max: Duration) -> RetryPolicy {
        self.base_delay = base;
        self.max_delay = max.max(base);
        self
    }

    /// Sets the longest `Retry-After` that is waited for; longer ones end the retries.
    pub fn with_max_retry_after(mut self, max: Duration) -> RetryPolicy {
        self.max_retry_after = max;
        self
    }

    /// Sets the longest time from the first attempt to the start of the last.
    pub fn with_max_elapsed(mut self, max: Duration) -> RetryPolicy {
        self.max_elapsed = max;
        self
    }

    /// The most attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Decides what follows `attempt` (1 for the first), which ended in `outcome`, `elapsed`
    /// after the first attempt began. `jitter` is a random number in `[0, 1)` supplied by the
    /// caller (this crate has no source of randomness).
    pub fn decide(
        &self,
        idempotency: Idempotency,
        attempt: u32,
        elapsed: Duration,
        outcome: Outcome,
        jitter: f64,
    ) -> Decision {
        if attempt >= self.max_attempts {
            return Decision::GiveUp;
        }
        let retryable = match (idempotency, outcome) {
            (Idempotency::Idempotent, Outcome::Response { status, .. }) => matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            (Idempotency::Idempotent, Outcome::Transport { .. }) => true,
            (
                _,
                Outcome::Transport {
                    reached: Reached::No,
                },
            ) => true,
            _ => false,
        };
        if !retryable {
            return Decision::GiveUp;
        }
        let after = match outcome {
            Outcome::Response {
                retry_after: Some(after),
                ..
            } => {
                if after > self.max_retry_after {
                    return Decision::GiveUp;
                }
                after
            }
            _ => {
                let exp = self
                    .base_delay
                    .saturating_mul(1u32 << (attempt - 1).min(20))
                    .min(self.max_delay);
                let jitter = jitter.clamp(0.0, 1.0);
                exp / 2 + exp.mul_f64(jitter / 2.0)
            }
        };
        if elapsed.saturating_add(after) > self.max_elapsed {
            return Decision::GiveUp;
        }
        Decision::Retry { after }
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP date (IMF-fixdate, as RFC 9110
/// requires senders to use) measured from `now`. A date in the past is no wait.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use cardsync_proto::retry::parse_retry_after;
///
/// assert_eq!(parse_retry_after("120", UNIX_EPOCH), Some(Duration::from_secs(120)));
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // Wed, 21 Oct 2015 07:27:50 GMT
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
///     Some(Duration::from_secs(10))
/// );
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = UNIX_EPOCH + Duration::from_secs(parse_imf_fixdate(value)?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Seconds since the Unix epoch of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_imf_fixdate(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = std::str::from_utf8(&b[r]).ok()?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let day = num(5..7)?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m.as_bytes() == &b[8..11])? as u64
        + 1;
    let year = num(12..16)?;
    let (h, m, sec) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    // Days from civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDEM: Idempotency = Idempotency::Idempotent;
    const NOT: Idempotency = Idempotency::NotIdempotent;

    fn status(code: u16) -> Outcome {
        Outcome::Response {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: None,
        }
    }

    #[test]
    fn which_statuses_are_retried() {
        let p = RetryPolicy::default();
        for code in [429, 502, 503, 504] {
            assert!(
                matches!(
                    p.decide(IDEM, 1, Duration::ZERO, status(code), 0.0),
                    Decision::Retry { .. }
                ),
                "{code}"
            );
            assert_eq!(
                p.decide(NOT, 1, Duration::ZERO, status(code), 0.0),
                Decision::GiveUp,
                "{code}"
            );
        }
        for code in [200, 400, 401, 404, 409, 500, 501] {
            assert_eq!(
                p.decide(IDEM, 1, Duration::ZERO, status(code), 0.0),
                Decision::GiveUp,
                "{code}"
            );
        }
        let maybe = Outcome::Transport {
            reached: Reached::Maybe,
        };
        assert!(matches!(
            p.decide(IDEM, 1, Duration::ZERO, maybe, 0.0),
            Decision::Retry { .. }
        ));
        assert_eq!(
            p.decide(NOT, 1, Duration::ZERO, maybe, 0.0),
            Decision::GiveUp
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::default()
            .with_max_attempts(100)
            .with_max_elapsed(Duration::MAX);
        let wait =
            |attempt, jitter| match p.decide(IDEM, attempt, Duration::ZERO, status(503), jitter) {
                Decision::Retry { after } => after,
                Decision::GiveUp => panic!("gave up"),
            };
        assert_eq!(wait(1, 0.0), Duration::from_millis(250));
        assert_eq!(wait(1, 1.0), Duration::from_millis(500));
        assert_eq!(wait(2, 0.0), Duration::from_millis(500));
        assert_eq!(wait(3, 1.0), Duration::from_secs(2));
        assert_eq!(wait(30, 1.0), Duration::from_secs(30));
        assert_eq!(wait(99, 0.0), Duration::from_secs(15));
    }

    #[test]
    fn limits() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(IDEM, 5, Duration::ZERO, status(503), 0.0),
            Decision::GiveUp
        );
        let long = Outcome::Response {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(
            p.decide(IDEM, 1, Duration::ZERO, long, 0.0),
            Decision::GiveUp
        );
        assert_eq!(
            p.decide(IDEM, 1, Duration::from_millis(299_600), status(503), 1.0),
            Decision::GiveUp
        );
        assert_eq!(
            RetryPolicy::never().decide(IDEM, 1, Duration::ZERO, status(503), 0.0),
            Decision::GiveUp
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_imf_fixdate("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        let now = UNIX_EPOCH + Duration::from_secs(784_111_800);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
