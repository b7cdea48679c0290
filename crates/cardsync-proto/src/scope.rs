//! `KeyScope`: which of the two keys signs a request. The configuration holds the keys
//! ([`crate::Config`]), each endpoint says which it needs ([`crate::Endpoint::SCOPE`]), and an
//! error names the one that was missing ([`crate::EncodeError::MissingKey`]).

use std::fmt;

/// Which kind of key an endpoint needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyScope {
    /// The partner master key.
    Partner,
    /// A merchant key.
    Merchant,
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyScope::Partner => "partner master key",
            KeyScope::Merchant => "merchant key",
        })
    }
}
