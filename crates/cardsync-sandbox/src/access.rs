//! Who the emulator answers, on every path (the `/v2/` API, the control endpoints, the
//! dashboard):
//!
//! - Only requests addressed (`Host`) to a loopback name (`127.0.0.1` and the rest of
//!   `127.0.0.0/8`, `[::1]`, `[::ffff:127.0.0.1]`, `localhost`, `*.localhost`, any port) or to
//!   a name of [`Settings::allowed_hosts`](crate::Settings::allowed_hosts). A page of another
//!   site whose name is made to resolve to the emulator's address (DNS rebinding) sends its
//!   own name, and is refused with 403 before anything is read or done: it can neither read
//!   card numbers from the API (whose default keys are public) nor register webhooks.
//! - On an emulator other machines can reach (listening on an address that is not loopback,
//!   or [`Settings::exposed`](crate::Settings::exposed)), every control request, reads
//!   included, and the dashboard's page need the per-run token: in `x-cardsync-sandbox-token`
//!   or `Authorization: Bearer TOKEN` (the page also takes `?token=TOKEN`).
//! - On loopback, a control request that comes from a browser (one with an `Origin` or
//!   `Sec-Fetch-*` header, which every browser sends on a `POST`) must carry the token to
//!   change anything. Another site's page can send a request but cannot read the token (the
//!   page is not readable across origins). Clients that are not browsers (the CLI, tests,
//!   curl) need no token there.
//!
//! Webhooks go only to loopback addresses, `localhost` and the hosts of
//! [`Settings::webhook_hosts`](crate::Settings::webhook_hosts) ([`Access::may_deliver_to`]).

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};

/// The header that carries the dashboard's token.
pub(crate) const TOKEN_HEADER: &str = "x-cardsync-sandbox-token";

/// Whether an address is loopback: `127.0.0.0/8`, `::1`, or an IPv4-mapped loopback address
/// (`::ffff:127.0.0.1`).
pub(crate) fn loopback_ip(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The host name or address of a `Host` value (no port, no brackets), in lower case, an
/// address in its plain form (an IPv4-mapped one as IPv4); `None` when it is not a host.
fn host_of(value: &str) -> Option<String> {
    if value.contains('@') {
        return None;
    }
    let authority = value.parse::<http::uri::Authority>().ok()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) if !host.is_empty() => host.to_ascii_lowercase(),
        Err(_) => return None,
    })
}

/// A host of the settings (a name, or an address, IPv6 with or without brackets) as
/// [`host_of`] gives it.
fn configured_host(value: &str) -> Option<String> {
    let value = value.trim();
    match value.parse::<IpAddr>() {
        Ok(ip) => Some(ip.to_canonical().to_string()),
        Err(_) => host_of(value),
    }
}

/// Whether a host name (as [`host_of`] gives it) is a loopback one: a loopback address,
/// `localhost`, or a name under `.localhost` (which browsers resolve to loopback themselves).
fn loopback_name(host: &str) -> bool {
    host == "localhost"
        || host
            .strip_suffix(".localhost")
            .is_some_and(|sub| !sub.is_empty() && !sub.starts_with('.') && !sub.ends_with('.'))
        || host.parse::<IpAddr>().is_ok_and(loopback_ip)
}

/// The host a request is addressed to: its `Host` header, else its URI's authority.
fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    match headers.get(header::HOST) {
        Some(value) => host_of(value.to_str().ok()?),
        None => host_of(uri.authority()?.as_str()),
    }
}

/// Whether a request comes from a browser: every browser sends `Origin` on a `POST`, and
/// current ones `Sec-Fetch-Site` on every request.
fn from_browser(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site")
}

/// Compares two tokens in time independent of where they differ.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Why a request is refused: its status and its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: &'static str,
}

const FOREIGN_HOST: Refusal = Refusal {
    status: StatusCode::FORBIDDEN,
    message: "the sandbox answers only requests addressed to a loopback host (127.0.0.1, [::1], \
              localhost) or to a host it was allowed (--allow-host): another site's page cannot \
              use it",
};

const NO_TOKEN: Refusal = Refusal {
    status: StatusCode::UNAUTHORIZED,
    message: "this sandbox can be reached from other machines: its control endpoints and \
              dashboard need its token, in x-cardsync-sandbox-token or Authorization: Bearer \
              (cardsync sandbox prints it)",
};

const BROWSER_NO_TOKEN: Refusal = Refusal {
    status: StatusCode::FORBIDDEN,
    message: "steering the sandbox from a browser needs the dashboard's token: use the \
              dashboard's page",
};

/// The emulator's access rules for one run.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    /// The per-run token.
    token: String,
    /// Whether other machines can reach the emulator.
    exposed: bool,
    /// The host names it may also be reached at, in lower case.
    hosts: Vec<String>,
    /// The hosts webhooks may also go to, in lower case.
    webhook_hosts: Vec<String>,
}

impl Access {
    pub(crate) fn new(
        token: String,
        exposed: bool,
        hosts: &[String],
        webhook_hosts: &[String],
    ) -> Access {
        let names = |list: &[String]| {
            list.iter()
                .filter_map(|h| configured_host(h))
                .collect::<Vec<_>>()
        };
        Access {
            token,
            exposed,
            hosts: names(hosts),
            webhook_hosts: names(webhook_hosts),
        }
    }

    /// The per-run token.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Whether other machines can reach the emulator.
    pub(crate) fn exposed(&self) -> bool {
        self.exposed
    }

    /// Checks the host a request is addressed to, on any path.
    pub(crate) fn check_host(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), Refusal> {
        match request_host(headers, uri) {
            Some(host) if loopback_name(&host) || self.hosts.contains(&host) => Ok(()),
            _ => Err(FOREIGN_HOST),
        }
    }

    /// Whether the request carries the token, in [`TOKEN_HEADER`] or as a bearer token.
    fn has_token(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(TOKEN_HEADER)
            .map(HeaderValue::as_bytes)
            .or_else(|| {
                let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
                let (scheme, rest) = auth.split_at_checked(7)?;
                scheme
                    .eq_ignore_ascii_case(b"bearer ")
                    .then(|| rest.trim_ascii())
            });
        given.is_some_and(|given| same_token(given, self.token.as_bytes()))
    }

    /// Checks a control request (`/_sandbox/…`): on an exposed emulator every one needs the
    /// token; on loopback, those from a browser that change anything.
    pub(crate) fn check_control(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        if self.has_token(headers) {
            return Ok(());
        }
        if self.exposed {
            return Err(NO_TOKEN);
        }
        let reads = matches!(*method, Method::GET | Method::HEAD);
        if from_browser(headers) && !reads {
            return Err(BROWSER_NO_TOKEN);
        }
        Ok(())
    }

    /// Checks a request for the dashboard's page (which holds the token): on an exposed
    /// emulator it needs the token, also as `?token=TOKEN`.
    pub(crate) fn check_page(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), Refusal> {
        if !self.exposed || self.has_token(headers) {
            return Ok(());
        }
        let in_query = uri.query().is_some_and(|query| {
            query.split('&').any(|pair| {
                pair.strip_prefix("token=")
                    .is_some_and(|given| same_token(given.as_bytes(), self.token.as_bytes()))
            })
        });
        if in_query { Ok(()) } else { Err(NO_TOKEN) }
    }

    /// Whether webhooks may be delivered to `uri`'s host: a loopback address, `localhost`, or
    /// a host of [`Settings::webhook_hosts`](crate::Settings::webhook_hosts). (Names under
    /// `.localhost` are not taken for loopback here: the system resolver may ask the DNS.)
    pub(crate) fn may_deliver_to(&self, uri: &Uri) -> Result<(), String> {
        let host = uri.authority().and_then(|a| host_of(a.as_str()));
        let Some(host) = host else {
            return Err("not delivered: the URL names no host".to_owned());
        };
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(loopback_ip);
        if loopback || self.webhook_hosts.contains(&host) {
            Ok(())
        } else {
            Err(format!(
                "not delivered: the sandbox sends webhooks only to loopback addresses, localhost \
                 and hosts it was allowed (--webhook-host), and {host} is none of them"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use cardsync_proto::paths;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn access(exposed: bool) -> Access {
        Access::new(
            "t0ken".to_owned(),
            exposed,
            &[
                "sandbox.internal".to_owned(),
                "10.0.0.5".to_owned(),
                "FD00:0::5".to_owned(),
            ],
            &["hooks.internal".to_owned()],
        )
    }

    fn host_ok(a: &Access, host: &str) -> bool {
        a.check_host(&headers(&[("host", host)]), &Uri::from_static(paths::BATCH))
            .is_ok()
    }

    #[test]
    fn loopback_names_with_any_port_and_allowed_names_only() {
        let a = access(false);
        for host in [
            "127.0.0.1",
            "127.0.0.1:8787",
            "127.0.0.2",
            "localhost",
            "LOCALHOST:1",
            "app.localhost:8787",
            "[::1]",
            "[::1]:8787",
            "[::ffff:127.0.0.1]:8787",
            "[::FFFF:7f00:1]",
            "sandbox.internal:8787",
            "Sandbox.Internal",
            "10.0.0.5",
            "[::ffff:10.0.0.5]:8787",
            "[fd00::5]:8787",
        ] {
            assert!(host_ok(&a, host), "{host}");
        }
        for host in [
            "attacker.example:8787",
            "127.0.0.1.nip.example",
            "localhost.example",
            "localhost.",
            ".localhost",
            "a..localhost",
            "[::ffff:10.0.0.1]",
            "10.0.0.6",
            "user@127.0.0.1",
            "",
            "127.1",
            "2130706433",
        ] {
            assert!(!host_ok(&a, host), "{host}");
        }
        // No Host at all: the URI's authority, else refused.
        let none = HeaderMap::new();
        assert!(
            a.check_host(
                &none,
                &Uri::try_from(format!("http://localhost:1{}", paths::BATCH)).unwrap()
            )
            .is_ok()
        );
        assert!(
            a.check_host(&none, &Uri::from_static(paths::BATCH))
                .is_err()
        );
    }

    #[test]
    fn on_loopback_only_browsers_steering_need_the_token() {
        let a = access(false);
        assert!(a.check_control(&Method::POST, &headers(&[])).is_ok());
        assert!(a.check_control(&Method::GET, &headers(&[])).is_ok());
        let cross = [("origin", "https://elsewhere.example")];
        assert_eq!(
            a.check_control(&Method::POST, &headers(&cross)),
            Err(BROWSER_NO_TOKEN)
        );
        let wrong = [("origin", "http://127.0.0.1:1"), (TOKEN_HEADER, "t0keX")];
        assert!(a.check_control(&Method::POST, &headers(&wrong)).is_err());
        let right = [("origin", "http://127.0.0.1:1"), (TOKEN_HEADER, "t0ken")];
        assert!(a.check_control(&Method::POST, &headers(&right)).is_ok());
        let bearer = [
            ("sec-fetch-site", "same-origin"),
            ("authorization", "Bearer t0ken"),
        ];
        assert!(a.check_control(&Method::DELETE, &headers(&bearer)).is_ok());
        let read = [("sec-fetch-site", "same-origin")];
        assert!(a.check_control(&Method::GET, &headers(&read)).is_ok());
        assert!(a.check_page(&headers(&[]), &Uri::from_static("/")).is_ok());
    }

    #[test]
    fn exposed_every_control_request_and_the_page_need_the_token() {
        let a = access(true);
        for method in [Method::GET, Method::POST, Method::DELETE] {
            assert_eq!(a.check_control(&method, &headers(&[])), Err(NO_TOKEN));
        }
        for given in [
            vec![(TOKEN_HEADER, "t0ken")],
            vec![("authorization", "Bearer t0ken")],
            vec![("authorization", "bearer  t0ken ")],
        ] {
            assert!(
                a.check_control(&Method::GET, &headers(&given)).is_ok(),
                "{given:?}"
            );
        }
        for wrong in [
            vec![(TOKEN_HEADER, "t0ke")],
            vec![("authorization", "Bearer t0kenX")],
            vec![("authorization", "Basic t0ken")],
        ] {
            assert!(
                a.check_control(&Method::GET, &headers(&wrong)).is_err(),
                "{wrong:?}"
            );
        }
        let none = headers(&[]);
        assert!(a.check_page(&none, &Uri::from_static("/")).is_err());
        assert!(
            a.check_page(&none, &Uri::from_static("/?token=t0kenX"))
                .is_err()
        );
        assert!(
            a.check_page(&none, &Uri::from_static("/?x=1&token=t0ken"))
                .is_ok()
        );
    }

    #[test]
    fn webhooks_go_to_loopback_and_allowed_hosts_only() {
        let a = access(false);
        for url in [
            "http://127.0.0.1:9/hooks",
            "http://127.1.2.3/hooks",
            "http://localhost:9/hooks",
            "http://[::1]:9/hooks",
            "http://[::ffff:127.0.0.1]:9/hooks",
            "http://HOOKS.internal:9000/w",
        ] {
            assert!(a.may_deliver_to(&url.parse().unwrap()).is_ok(), "{url}");
        }
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5:80/admin",
            "http://sandbox.internal/",
            "http://app.localhost:9/hooks",
            "http://[::ffff:10.0.0.1]/",
        ] {
            let refused = a.may_deliver_to(&url.parse().unwrap()).unwrap_err();
            assert!(refused.starts_with("not delivered"), "{url}: {refused}");
        }
    }
}
