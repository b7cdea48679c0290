//! The dashboard: a page at `/` (HTML, a style sheet and a small script, all compiled into the
//! binary) that polls `GET /_sandbox/overview` and steers the emulator through the control
//! endpoints.
//!
//! The page carries the run's token (the script sends it on every request). Who may load it,
//! and which host names anything is answered at, is `access.rs`'s: on an emulator other
//! machines can reach, the page itself needs the token (`/?token=TOKEN`, the dashboard URL the
//! command prints). The page forbids framing and loads nothing from elsewhere
//! (`Content-Security-Policy`).

use bytes::Bytes;
use cardsync_proto::server::{Spelling, failure};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use crate::access::Access;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A refusal, in the API's error envelope.
pub(crate) fn refuse(status: StatusCode, message: &str) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Bytes::from(failure(message, Spelling::Universal)))
        .expect("a valid response")
}

/// The dashboard's page, script or style sheet, if the request asks for one of them; `None`
/// for any other path.
pub(crate) fn asset<B>(access: &Access, request: &Request<B>) -> Option<Response<Bytes>> {
    let page = matches!(request.uri().path(), "/" | "/index.html");
    let (content_type, body) = match request.uri().path() {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            Bytes::from(PAGE.replace("{{TOKEN}}", access.token())),
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
    if page && let Err(refused) = access.check_page(request.headers(), request.uri()) {
        return Some(refuse(refused.status, refused.message));
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

    fn access(exposed: bool) -> Access {
        Access::new("abc123".to_owned(), exposed, &[], &[])
    }

    #[test]
    fn the_page_carries_the_token_and_forbids_framing() {
        let r = Request::get("/")
            .header(header::HOST, "127.0.0.1:9")
            .body(())
            .unwrap();
        let page = asset(&access(false), &r).unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        assert!(
            std::str::from_utf8(page.body())
                .unwrap()
                .contains("content=\"abc123\"")
        );
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        let api = Request::get(cardsync_proto::paths::BATCH).body(()).unwrap();
        assert!(asset(&access(false), &api).is_none());
    }

    #[test]
    fn exposed_the_page_needs_the_token_its_script_does_not() {
        let bare = Request::get("/").body(()).unwrap();
        let refused = asset(&access(true), &bare).unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert!(
            !std::str::from_utf8(refused.body())
                .unwrap()
                .contains("abc123")
        );
        let with = Request::get("/?token=abc123").body(()).unwrap();
        assert_eq!(
            asset(&access(true), &with).unwrap().status(),
            StatusCode::OK
        );
        let script = Request::get("/dashboard.js").body(()).unwrap();
        assert_eq!(
            asset(&access(true), &script).unwrap().status(),
            StatusCode::OK
        );
    }
}
