//! What the emulator's HTTP tests share: a plain HTTP client on loopback, a bounded send, and
//! an address where nothing listens.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `request`, waiting at most 10 s for the answer and 5 s more for its body.
pub(crate) async fn send_raw(
    client: &HttpClient,
    request: http::Request<Vec<u8>>,
) -> Result<http::Response<Vec<u8>>, String> {
    let (parts, body) = request.into_parts();
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(http::Request::from_parts(
            parts,
            Full::new(Bytes::from(body)),
        )),
    )
    .await
    .map_err(|_| "no answer in time".to_owned())?
    .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("body: {e}"))?;
    Ok(http::Response::from_parts(parts, body.to_bytes().to_vec()))
}

/// A webhook URL on loopback where nothing listens: a port that was free a moment ago.
pub(crate) async fn dead_url() -> String {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", dead.local_addr().unwrap());
    drop(dead);
    url
}
