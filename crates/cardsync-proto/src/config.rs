//! Where requests go and which key signs them: [`BaseUrl`], the two key scopes, and [`Config`].

use std::fmt;

use http::HeaderValue;
use zeroize::Zeroize;

use crate::KeyScope;

/// The root every endpoint path is appended to: the CardSync sandbox, production, or any other
/// server speaking the same API (a local emulator, a proxy).
///
/// ```
/// use cardsync_proto::BaseUrl;
///
/// let local = BaseUrl::parse("http://127.0.0.1:8787")?;
/// assert_eq!(local.as_str(), "http://127.0.0.1:8787");
/// assert!(local.is_loopback());
/// assert_eq!(BaseUrl::sandbox().as_str(), "https://sandbox.cardsync.io");
/// # Ok::<(), cardsync_proto::InvalidBaseUrl>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BaseUrl {
    /// Scheme, authority and optional path prefix, without a trailing slash.
    url: String,
    https: bool,
    host: String,
}

impl BaseUrl {
    /// The CardSync sandbox, `https://sandbox.cardsync.io`: the only base URL the documents
    /// give.
    pub fn sandbox() -> BaseUrl {
        BaseUrl::parse("https://sandbox.cardsync.io").expect("a valid URL")
    }

    /// CardSync production, `https://api.cardsync.io`. The v2 documents name only the
    /// sandbox; this is the host that serves CardSync's production documentation. Check it
    /// against the address in your CardSync contract.
    pub fn production() -> BaseUrl {
        BaseUrl::parse("https://api.cardsync.io").expect("a valid URL")
    }

    /// Parses an `http` or `https` URL with a host, an optional port and an optional path
    /// prefix; no query or fragment. A trailing slash is dropped.
    ///
    /// # Errors
    ///
    /// [`InvalidBaseUrl`] for anything else.
    pub fn parse(url: &str) -> Result<BaseUrl, InvalidBaseUrl> {
        let uri: http::Uri = url.parse().map_err(|_| InvalidBaseUrl::new("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(InvalidBaseUrl::new("the scheme must be http or https")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| InvalidBaseUrl::new("the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(InvalidBaseUrl::new(
                "the URL must not hold user information",
            ));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(InvalidBaseUrl::new(
                "the URL must not have a query or fragment",
            ));
        }
        let path = uri.path().trim_end_matches('/');
        Ok(BaseUrl {
            url: format!(
                "{}://{}{path}",
                if https { "https" } else { "http" },
                authority
            ),
            https,
            host: authority.host().to_owned(),
        })
    }

    /// The URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host name or address, without brackets around an IPv6 address.
    pub fn host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Whether the host is a loopback address or `localhost`: the only kind of host a careful
    /// transport talks plain HTTP to.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The full URI for an endpoint path (starting with `/`) and an already encoded query
    /// (empty for none).
    ///
    /// # Errors
    ///
    /// [`crate::EncodeError::InvalidUri`] when the result is not a valid URI.
    ///
    /// ```
    /// use cardsync_proto::BaseUrl;
    /// let base = BaseUrl::parse("https://sandbox.cardsync.io/")?;
    /// assert_eq!(base.join("/v2/batch", "batch_id=b1")?, "https://sandbox.cardsync.io/v2/batch?batch_id=b1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join(&self, path: &str, query: &str) -> Result<http::Uri, crate::EncodeError> {
        let mut s = String::with_capacity(self.url.len() + path.len() + query.len() + 1);
        s.push_str(&self.url);
        s.push_str(path);
        if !query.is_empty() {
            s.push('?');
            s.push_str(query);
        }
        s.parse()
            .map_err(|_| crate::EncodeError::InvalidUri { path: path.into() })
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl std::str::FromStr for BaseUrl {
    type Err = InvalidBaseUrl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BaseUrl::parse(s)
    }
}

/// Why a base URL was rejected.
///
/// ```
/// let err = cardsync_proto::BaseUrl::parse("ftp://example.com").unwrap_err();
/// assert_eq!(err.to_string(), "invalid base URL: the scheme must be http or https");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidBaseUrl {
    reason: &'static str,
}

impl InvalidBaseUrl {
    fn new(reason: &'static str) -> Self {
        InvalidBaseUrl { reason }
    }
}

impl fmt::Display for InvalidBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid base URL: {}", self.reason)
    }
}

impl std::error::Error for InvalidBaseUrl {}

/// The error for an API key that cannot go in an HTTP header: empty, or holding characters
/// other than visible ASCII. It never holds the key.
///
/// ```
/// assert!(cardsync_proto::MerchantKey::new("key with\nnewline").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidApiKey;

impl fmt::Display for InvalidApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an API key must be non-empty visible ASCII")
    }
}

impl std::error::Error for InvalidApiKey {}

/// A secret API key: redacted in `Debug`, zeroed on drop, reached only through
/// `expose_secret`.
#[derive(Clone, PartialEq, Eq)]
struct Secret(String);

impl Secret {
    fn new(key: &str) -> Result<Secret, InvalidApiKey> {
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Secret(key.to_owned()))
        } else {
            Err(InvalidApiKey)
        }
    }

    fn header(&self) -> HeaderValue {
        // Invariant: `Secret::new` admits only visible ASCII, which is always a valid header.
        let mut value = HeaderValue::from_str(&self.0).expect("visible ASCII");
        value.set_sensitive(true);
        value
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

macro_rules! key_type {
    ($(#[$doc:meta])* $name:ident, $scope:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Secret);

        impl $name {
            /// Wraps a key.
            ///
            /// # Errors
            ///
            /// [`InvalidApiKey`] for an empty key or one with characters other than visible
            /// ASCII.
            pub fn new(key: &str) -> Result<Self, InvalidApiKey> {
                Secret::new(key).map($name)
            }

            /// The key itself, for the places that must send or store it.
            pub fn expose_secret(&self) -> &str {
                &self.0 .0
            }

            /// The `Authorization` header value: the raw key, no scheme word, marked sensitive.
            pub fn header_value(&self) -> HeaderValue {
                self.0.header()
            }

            /// Which scope this key belongs to.
            pub fn scope(&self) -> KeyScope {
                $scope
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

key_type!(
    /// A partner's master key: it enrolls merchants (`POST /v2/merchant`) and nothing else.
    ///
    /// ```
    /// let key = cardsync_proto::PartnerKey::new("master_123")?;
    /// assert_eq!(format!("{key:?}"), "PartnerKey([redacted])");
    /// # Ok::<(), cardsync_proto::InvalidApiKey>(())
    /// ```
    PartnerKey,
    KeyScope::Partner
);

key_type!(
    /// A merchant's key, returned by enrollment: it signs every call but enrollment.
    ///
    /// ```
    /// let key = cardsync_proto::MerchantKey::new("api_1auidmDFdMslUz2R5PSwVFSEfmP")?;
    /// assert_eq!(format!("{key:?}"), "MerchantKey([redacted])");
    /// assert_eq!(key.header_value(), "api_1auidmDFdMslUz2R5PSwVFSEfmP");
    /// assert!(key.header_value().is_sensitive());
    /// # Ok::<(), cardsync_proto::InvalidApiKey>(())
    /// ```
    MerchantKey,
    KeyScope::Merchant
);

/// The bearer token of an issuer-side API (the issuer feed, the issuing platform): redacted
/// in `Debug`, zeroed on drop, sent as `Authorization: Bearer <token>`.
///
/// ```
/// let token = cardsync_proto::IssuerToken::new("tok_123")?;
/// assert_eq!(format!("{token:?}"), "IssuerToken([redacted])");
/// assert_eq!(token.header_value(), "Bearer tok_123");
/// assert!(token.header_value().is_sensitive());
/// # Ok::<(), cardsync_proto::InvalidApiKey>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerToken(Secret);

impl IssuerToken {
    /// Wraps a token.
    ///
    /// # Errors
    ///
    /// [`InvalidApiKey`] for an empty token or one with characters other than visible ASCII.
    pub fn new(token: &str) -> Result<IssuerToken, InvalidApiKey> {
        Secret::new(token).map(IssuerToken)
    }

    /// The token itself, for the places that must send or store it.
    pub fn expose_secret(&self) -> &str {
        &self.0.0
    }

    /// The `Authorization` header value, marked sensitive.
    pub fn header_value(&self) -> HeaderValue {
        // Invariant: `Secret::new` admits only visible ASCII, which is always a valid header.
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", self.0.0)).expect("visible ASCII");
        value.set_sensitive(true);
        value
    }
}

impl fmt::Debug for IssuerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IssuerToken([redacted])")
    }
}

/// Where requests go and the keys that sign them.
///
/// ```
/// use cardsync_proto::{BaseUrl, Config, MerchantKey};
///
/// let config = Config::new(BaseUrl::sandbox()).with_merchant_key(MerchantKey::new("k")?);
/// assert!(format!("{config:?}").contains("MerchantKey([redacted])"));
/// # Ok::<(), cardsync_proto::InvalidApiKey>(())
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    base_url: BaseUrl,
    partner_key: Option<PartnerKey>,
    merchant_key: Option<MerchantKey>,
    user_agent: HeaderValue,
}

impl Config {
    /// The `User-Agent` every request carries unless changed: `cardsync-proto/<version>`.
    pub const USER_AGENT: &'static str = concat!("cardsync-proto/", env!("CARGO_PKG_VERSION"));

    /// A configuration with no keys.
    pub fn new(base_url: BaseUrl) -> Config {
        Config {
            base_url,
            partner_key: None,
            merchant_key: None,
            user_agent: HeaderValue::from_static(Config::USER_AGENT),
        }
    }

    /// Sets the partner master key.
    pub fn with_partner_key(mut self, key: PartnerKey) -> Config {
        self.partner_key = Some(key);
        self
    }

    /// Sets the merchant key.
    pub fn with_merchant_key(mut self, key: MerchantKey) -> Config {
        self.merchant_key = Some(key);
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &BaseUrl {
        &self.base_url
    }

    /// The `User-Agent` header value.
    pub fn user_agent(&self) -> &HeaderValue {
        &self.user_agent
    }

    /// The `Authorization` header for a scope.
    ///
    /// # Errors
    ///
    /// [`crate::EncodeError::MissingKey`] when no key of that scope is set.
    pub fn authorization(&self, scope: KeyScope) -> Result<HeaderValue, crate::EncodeError> {
        let value = match scope {
            KeyScope::Partner => self.partner_key.as_ref().map(PartnerKey::header_value),
            KeyScope::Merchant => self.merchant_key.as_ref().map(MerchantKey::header_value),
        };
        value.ok_or(crate::EncodeError::MissingKey { scope })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let ok = [
            (
                "https://sandbox.cardsync.io/",
                "https://sandbox.cardsync.io",
                false,
            ),
            ("http://localhost:8787", "http://localhost:8787", true),
            (
                "http://[::1]:9000/prefix/",
                "http://[::1]:9000/prefix",
                true,
            ),
            ("http://127.0.0.2", "http://127.0.0.2", true),
            ("http://10.0.0.1", "http://10.0.0.1", false),
        ];
        for (input, url, loopback) in ok {
            let b = BaseUrl::parse(input).unwrap();
            assert_eq!((b.as_str(), b.is_loopback()), (url, loopback), "{input}");
        }
        for bad in [
            "sandbox.cardsync.io",
            "ftp://x",
            "https://u:p@x",
            "https://x/?a=b",
            "https://x/#f",
            "",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_checked_and_redacted() {
        assert!(MerchantKey::new("").is_err());
        assert!(MerchantKey::new("a b").is_err());
        assert!(MerchantKey::new("é").is_err());
        let key = MerchantKey::new("secret-key").unwrap();
        assert!(!format!("{key:?}").contains("secret"));
        let config = Config::new(BaseUrl::sandbox()).with_merchant_key(key);
        assert!(!format!("{config:?}").contains("secret-key"));
        assert!(config.authorization(KeyScope::Partner).is_err());
    }
}
