//! The dashboard: a page at `/` (HTML, a style sheet and a small script, all compiled into the
//! binary) that polls `GET /_sandbox/overview` and steers the emulator through the control
//! endpoints.
//!
//! Protection, since a browser also visits other sites:
//!
//! - The page carries a per-run random token, and a control request that comes from a browser
//!   (one with an `Origin` or `Sec-Fetch-*` header, which every browser sends on a `POST`) must
//!   carry it in `x-cardsync-sandbox-token`, or it is refused with 403. Another site's page can
//!   send a request but cannot read the token (the page is not readable across origins), so it
//!   cannot advance the clock or inject faults. Clients that are not browsers (the CLI, tests,
//!   curl) are unaffected.
//! - When the emulator listens on a loopback address, the page and browser requests are
//!   answered only when addressed to a loopback host name (`127.0.0.1`, `localhost`, `[::1]`),
//!   so that a site whose name is made to resolve to 127.0.0.1 (DNS rebinding) cannot read the
//!   page and its token.
//! - The page forbids framing and loads nothing from elsewhere (`Content-Security-Policy`).

use bytes::Bytes;
use cardsync_proto::server::{Spelling, failure};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

/// The header that carries the dashboard's token.
pub(crate) const TOKEN_HEADER: &str = "x-cardsync-sandbox-token";

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether a request comes from a browser: every browser sends `Origin` on a `POST`, and
/// current ones `Sec-Fetch-Site` on every request.
fn from_browser<B>(request: &Request<B>) -> bool {
    let h = request.headers();
    h.contains_key(header::ORIGIN) || h.contains_key("sec-fetch-site")
}

/// Whether the request is addressed to a loopback host name (`Host`, else the URI's
/// authority).
fn loopback_host<B>(request: &Request<B>) -> bool {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

/// A refusal, in the API's error envelope.
fn refuse(status: StatusCode, message: &str) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Bytes::from(failure(message, Spelling::Universal)))
        .expect("a valid response")
}

/// Checks a control request (`/_sandbox/…`): requests from a browser must be addressed to a
/// loopback host name when the emulator listens on loopback, and those that change anything
/// must carry the dashboard's token. The refusal to answer with, if the request is refused.
pub(crate) fn guard<B>(
    token: &str,
    loopback: bool,
    request: &Request<B>,
) -> Option<Response<Bytes>> {
    if !from_browser(request) {
        return None;
    }
    if loopback && !loopback_host(request) {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "the sandbox answers browsers only at a loopback address (127.0.0.1, localhost, [::1])",
        ));
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    let given = request
        .headers()
        .get(TOKEN_HEADER)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if !reads && !same_token(given, token.as_bytes()) {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "steering the sandbox from a browser needs the dashboard's token: use the dashboard's page",
        ));
    }
    None
}

/// The dashboard's page, script or style sheet, if the request asks for one of them; `None`
/// for any other path.
pub(crate) fn asset<B>(
    token: &str,
    loopback: bool,
    request: &Request<B>,
) -> Option<Response<Bytes>> {
    let (content_type, body) = match request.uri().path() {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            Bytes::from(PAGE.replace("{{TOKEN}}", token)),
        ),
        "/dashboard.js" => (
            "text/javascript; charset=utf-8",
            Bytes::from_static(SCRIPT.as_bytes()),
        ),
        "/dashboard.css" => (
            "text/css; charset=utf-8",
            Bytes::from_static(STYLE.as_bytes()),
        ),
        _ => return None,
    };
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut answer = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard is read with GET",
        );
        answer
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(answer);
    }
    if loopback && !loopback_host(request) {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "the dashboard is served only at a loopback address (127.0.0.1, localhost, [::1])",
        ));
    }
    let body = if request.method() == Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    Some(
        Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::CONTENT_SECURITY_POLICY, POLICY)
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(header::X_FRAME_OPTIONS, "DENY")
            .header(header::REFERRER_POLICY, "no-referrer")
            .body(body)
            .expect("a valid response"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, host: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::builder()
            .method(method)
            .uri("/_sandbox/clock/advance");
        r = r.header(header::HOST, host);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn clients_that_are_not_browsers_are_not_asked_for_the_token() {
        assert!(guard("t0ken", true, &request(Method::POST, "127.0.0.1:1", &[])).is_none());
    }

    #[test]
    fn a_browser_must_send_the_token_to_steer() {
        let cross_site = [
            ("origin", "https://elsewhere.example"),
            ("sec-fetch-site", "cross-site"),
        ];
        let refused = guard(
            "t0ken",
            true,
            &request(Method::POST, "127.0.0.1:1", &cross_site),
        );
        assert_eq!(refused.unwrap().status(), StatusCode::FORBIDDEN);
        let wrong = [("origin", "http://127.0.0.1:1"), (TOKEN_HEADER, "t0keX")];
        assert!(guard("t0ken", true, &request(Method::POST, "127.0.0.1:1", &wrong)).is_some());
        let right = [("origin", "http://127.0.0.1:1"), (TOKEN_HEADER, "t0ken")];
        assert!(guard("t0ken", true, &request(Method::POST, "127.0.0.1:1", &right)).is_none());
        // Reading needs no token.
        let read = [("sec-fetch-site", "same-origin")];
        assert!(guard("t0ken", true, &request(Method::GET, "localhost:1", &read)).is_none());
    }

    #[test]
    fn a_rebound_host_name_is_refused_on_loopback_only() {
        let h = [("sec-fetch-site", "same-origin"), (TOKEN_HEADER, "t0ken")];
        for host in [
            "attacker.example:8787",
            "127.0.0.1.nip.example",
            "localhost.example",
        ] {
            assert!(
                guard("t0ken", true, &request(Method::GET, host, &h)).is_some(),
                "{host}"
            );
        }
        for host in [
            "127.0.0.1:8787",
            "localhost:8787",
            "[::1]:8787",
            "LOCALHOST",
            "127.0.0.2",
        ] {
            assert!(
                guard("t0ken", true, &request(Method::GET, host, &h)).is_none(),
                "{host}"
            );
        }
        // Listening on another address is the user's word that other names reach it.
        assert!(
            guard(
                "t0ken",
                false,
                &request(Method::GET, "sandbox.internal:8787", &h)
            )
            .is_none()
        );
    }

    #[test]
    fn the_page_carries_the_token_and_forbids_framing() {
        let r = Request::get("/")
            .header(header::HOST, "127.0.0.1:9")
            .body(())
            .unwrap();
        let page = asset("abc123", true, &r).unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(
            std::str::from_utf8(page.body())
                .unwrap()
                .contains("content=\"abc123\"")
        );
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        let elsewhere = Request::get("/")
            .header(header::HOST, "evil.example")
            .body(())
            .unwrap();
        assert_eq!(
            asset("abc123", true, &elsewhere).unwrap().status(),
            StatusCode::FORBIDDEN
        );
        let api = Request::get("/v2/batch").body(()).unwrap();
        assert!(asset("abc123", true, &api).is_none());
    }
}
