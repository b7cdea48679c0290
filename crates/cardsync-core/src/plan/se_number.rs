//! SE numbers: the American Express merchant accounts subscriptions belong to.

use super::*;

/// An American Express service establishment (SE) number: the merchant account that Amex
/// subscriptions belong to.
///
/// American Express issues 10-digit SE numbers; since the documents also show an 11-digit one,
/// any run of 1 to 15 ASCII digits is accepted.
///
/// ```
/// use cardsync_core::SeNumber;
///
/// let se = SeNumber::parse("1234567890")?;
/// assert_eq!(se.as_str(), "1234567890");
/// assert!(SeNumber::parse("12345-678").is_err());
/// # Ok::<(), cardsync_core::SeNumberError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeNumber(String);

impl SeNumber {
    /// Parses an SE number.
    ///
    /// # Errors
    ///
    /// [`SeNumberError`] when the text is empty, longer than 15 characters, or not all digits.
    pub fn parse(s: &str) -> Result<SeNumber, SeNumberError> {
        if (1..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(SeNumber(s.to_owned()))
        } else {
            Err(SeNumberError)
        }
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SeNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl std::str::FromStr for SeNumber {
    type Err = SeNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SeNumber::parse(s)
    }
}

/// The error for text that is not an SE number (1 to 15 ASCII digits).
///
/// ```
/// assert_eq!(
///     cardsync_core::SeNumber::parse("").unwrap_err().to_string(),
///     "SE number must be 1 to 15 digits"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SeNumberError;

impl fmt::Display for SeNumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SE number must be 1 to 15 digits")
    }
}

impl std::error::Error for SeNumberError {}
