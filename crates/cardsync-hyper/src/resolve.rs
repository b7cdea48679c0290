//! Name resolution for the transport: `localhost` (and any `*.localhost` name) is answered with
//! the loopback addresses themselves, never looked up (RFC 6761), so that the plain HTTP the
//! transport allows to loopback hosts cannot be steered elsewhere by a hosts file or a DNS
//! answer; every other name goes to the system's resolver.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};

/// Whether `host` is `localhost` or a name under it.
pub(crate) fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host
            .len()
            .checked_sub(".localhost".len())
            .is_some_and(|cut| {
                host.is_char_boundary(cut) && host[cut..].eq_ignore_ascii_case(".localhost")
            })
}

/// The system's resolver, but for `localhost`.
#[derive(Clone, Debug)]
pub(crate) struct LoopbackAware(GaiResolver);

impl LoopbackAware {
    pub(crate) fn new() -> LoopbackAware {
        LoopbackAware(GaiResolver::new())
    }
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl tower_service::Service<Name> for LoopbackAware {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, io::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if is_localhost(name.as_str()) {
            // The port is set by the connector.
            let addrs = vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
            ];
            return Box::pin(std::future::ready(Ok(addrs.into_iter())));
        }
        let lookup = self.0.call(name);
        Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_names() {
        for yes in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "api.localhost",
            "a.b.Localhost",
        ] {
            assert!(is_localhost(yes), "{yes}");
        }
        for no in [
            "localhost.example.com",
            "notlocalhost",
            "example.com",
            "",
            "localhos",
        ] {
            assert!(!is_localhost(no), "{no}");
        }
    }

    #[tokio::test]
    async fn localhost_is_answered_without_a_lookup() {
        use tower_service::Service;
        let mut resolver = LoopbackAware::new();
        let addrs: Vec<SocketAddr> = resolver
            .call("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
