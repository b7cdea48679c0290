//! Webhook URLs: which ones may be registered, and how to show one without its secret.
//!
//! A receiver's URL usually carries a secret in its path (`cardsync listen` serves
//! `/webhooks/TOKEN`): anyone who knows it can post events. [`display`] shows a URL without it;
//! [`check`] refuses what CardSync could not or should not call.

use std::fmt;

/// Why a URL cannot be registered as a webhook.
///
/// ```
/// use cardsync_proto::webhook_url::{check, UrlError};
/// assert_eq!(check("not-a-url"), Err(UrlError::NotAbsolute));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// Not an absolute `scheme://host/…` URL.
    NotAbsolute,
    /// A scheme other than `https` (or `http` to a loopback host).
    Scheme(String),
    /// Plain `http` to a host other machines would have to reach: events carry batch ids and
    /// a secret path, and must not cross a network in the clear.
    PlainHttp,
    /// User information (`user:password@`) in the URL.
    UserInfo,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::NotAbsolute => f.write_str("not an absolute https:// URL"),
            UrlError::Scheme(s) => write!(f, "the scheme {s:?} is not https"),
            UrlError::PlainHttp => f.write_str(
                "plain http:// is allowed only to this machine (a loopback host); use https://",
            ),
            UrlError::UserInfo => f.write_str("a user name or password in the URL"),
        }
    }
}

impl std::error::Error for UrlError {}

/// Whether `url` may be registered as a webhook: absolute, `https` (or `http` to a loopback
/// host, for a receiver on this machine), with no user information.
///
/// ```
/// use cardsync_proto::webhook_url::{check, UrlError};
/// assert!(check("https://billing.example/webhooks/s3cr3t").is_ok());
/// assert!(check("http://127.0.0.1:8788/webhooks/s3cr3t").is_ok());
/// assert_eq!(check("http://billing.example/hook"), Err(UrlError::PlainHttp));
/// ```
///
/// # Errors
///
/// [`UrlError`]: why not.
pub fn check(url: &str) -> Result<(), UrlError> {
    let uri = url
        .parse::<http::Uri>()
        .map_err(|_| UrlError::NotAbsolute)?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(UrlError::NotAbsolute);
    };
    if authority.host().is_empty() {
        return Err(UrlError::NotAbsolute);
    }
    if authority.as_str().contains('@') {
        return Err(UrlError::UserInfo);
    }
    match scheme {
        "https" => Ok(()),
        "http" => {
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(UrlError::PlainHttp)
            }
        }
        other => Err(UrlError::Scheme(other.to_owned())),
    }
}

/// A webhook URL as it may be shown (on a terminal, in a log, on a dashboard): scheme, host
/// and port, the first path segment when it is shorter than 16 characters, and `…` for the
/// rest of the path (where a receiver puts its secret token); no user information, no query.
///
/// ```
/// use cardsync_proto::webhook_url::display;
/// assert_eq!(
///     display("https://billing.example/webhooks/0123456789abcdef?x=1"),
///     "https://billing.example/webhooks/…"
/// );
/// ```
pub fn display(url: &str) -> String {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return "(not a valid URL)".to_owned();
    };
    let mut out = String::new();
    if let Some(scheme) = uri.scheme_str() {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        // No user information.
        out.push_str(authority.as_str().rsplit('@').next().unwrap_or(""));
    }
    let mut segments = uri.path().trim_start_matches('/').splitn(2, '/');
    let first = segments.next().unwrap_or("");
    let rest = segments.next();
    out.push('/');
    if first.len() >= 16 {
        out.push('…');
    } else {
        out.push_str(&cardsync_core::redact_digit_runs(first));
        if rest.is_some() {
            out.push_str("/…");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_hide_their_secret_path_and_query() {
        assert_eq!(
            display("http://127.0.0.1:9000/hooks/0123456789abcdef0123?token=x"),
            "http://127.0.0.1:9000/hooks/…"
        );
        assert_eq!(
            display("https://user:pw@example.com/cardsync"),
            "https://example.com/cardsync"
        );
        assert_eq!(display("not a url"), "(not a valid URL)");
        // Only a short first segment is shown: a shorter secret further on is hidden too.
        assert_eq!(
            display("http://127.0.0.1:9/cardsync/hooks/s3cr3t"),
            "http://127.0.0.1:9/cardsync/…"
        );
        assert_eq!(
            display("http://127.0.0.1:9/0123456789abcdefSECRET"),
            "http://127.0.0.1:9/…"
        );
        assert_eq!(
            display("http://127.0.0.1:9/enrolled"),
            "http://127.0.0.1:9/enrolled"
        );
        assert_eq!(display("http://127.0.0.1:9"), "http://127.0.0.1:9/");
    }

    #[test]
    fn only_https_or_loopback_http_may_be_registered() {
        for ok in [
            "https://billing.example/webhooks/t",
            "https://billing.example:8443/",
            "http://127.0.0.1:8788/webhooks/t",
            "http://[::1]:8788/webhooks/t",
            "http://localhost/webhooks/t",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        assert_eq!(check("not-a-url"), Err(UrlError::NotAbsolute));
        assert_eq!(check("/webhooks/t"), Err(UrlError::NotAbsolute));
        assert_eq!(check("http://10.0.0.5/hook"), Err(UrlError::PlainHttp));
        assert_eq!(
            check("http://billing.example/hook"),
            Err(UrlError::PlainHttp)
        );
        assert_eq!(
            check("ftp://billing.example/hook"),
            Err(UrlError::Scheme("ftp".to_owned()))
        );
        assert_eq!(
            check("https://user:pw@billing.example/hook"),
            Err(UrlError::UserInfo)
        );
    }
}
