//! Card expiry dates: the wire form `MM/YY` and the forms people type.

use std::fmt;
use std::str::FromStr;

/// A calendar month, used as "today" when asking whether a card has expired. cardsync never
/// reads the clock itself: the caller says what month it is.
///
/// ```
/// use cardsync_core::YearMonth;
///
/// let today = YearMonth::new(2026, 11)?;
/// assert_eq!((today.year(), today.month()), (2026, 11));
/// assert!(YearMonth::new(2026, 13).is_err());
/// # Ok::<(), cardsync_core::ExpiryError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct YearMonth {
    // Field order makes the derived ordering chronological.
    year: u16,
    month: u8,
}

impl YearMonth {
    /// A month of any year.
    ///
    /// # Errors
    ///
    /// [`ExpiryError::Month`] when `month` is not 1 to 12.
    pub fn new(year: u16, month: u8) -> Result<YearMonth, ExpiryError> {
        if (1..=12).contains(&month) {
            Ok(YearMonth { year, month })
        } else {
            Err(ExpiryError::Month { month })
        }
    }

    /// The year, such as 2026.
    pub fn year(self) -> u16 {
        self.year
    }

    /// The month, 1 to 12.
    pub fn month(self) -> u8 {
        self.month
    }
}

/// A card's expiry month, between January 2000 and December 2099 so that it always has a
/// two-digit-year wire form.
///
/// Parsing accepts the wire form `MM/YY` and the forms people type: `M/YY`, `MM/YYYY`,
/// `M/YYYY`, `MM-YY`, `MM-YYYY`, `MMYY` and `MMYYYY`. A two-digit year is 20YY, so `01/50` is
/// January 2050. `Display` always writes `MM/YY`. An expired date is valid input: updating
/// expired cards is what an account updater is for.
///
/// ```
/// use cardsync_core::{Expiry, YearMonth};
///
/// let exp = Expiry::parse("1/2050")?;
/// assert_eq!(exp.to_string(), "01/50");
/// assert_eq!(Expiry::parse("0150")?, exp);
/// assert!(!exp.is_expired_at(YearMonth::new(2050, 1)?));
/// assert!(exp.is_expired_at(YearMonth::new(2050, 2)?));
/// # Ok::<(), cardsync_core::ExpiryError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Expiry(YearMonth);

impl Expiry {
    /// The expiry month of the given year and month.
    ///
    /// # Errors
    ///
    /// [`ExpiryError::Month`] when `month` is not 1 to 12, [`ExpiryError::Year`] when `year` is
    /// not 2000 to 2099.
    ///
    /// ```
    /// let exp = cardsync_core::Expiry::new(2050, 8)?;
    /// assert_eq!(exp.to_string(), "08/50");
    /// # Ok::<(), cardsync_core::ExpiryError>(())
    /// ```
    pub fn new(year: u16, month: u8) -> Result<Expiry, ExpiryError> {
        let ym = YearMonth::new(year, month)?;
        if (2000..=2099).contains(&year) {
            Ok(Expiry(ym))
        } else {
            Err(ExpiryError::Year { year })
        }
    }

    /// Parses an expiry date in any of the accepted forms (see the type's docs).
    ///
    /// # Errors
    ///
    /// [`ExpiryError::Empty`] for empty input, [`ExpiryError::Format`] for text of no accepted
    /// form, [`ExpiryError::Month`] for a month outside 1–12 and [`ExpiryError::Year`] for a
    /// four-digit year outside 2000–2099.
    ///
    /// ```
    /// use cardsync_core::{Expiry, ExpiryError};
    ///
    /// assert_eq!(Expiry::parse("13/50"), Err(ExpiryError::Month { month: 13 }));
    /// assert_eq!(Expiry::parse("1/5"), Err(ExpiryError::Format));
    /// ```
    pub fn parse(input: &str) -> Result<Expiry, ExpiryError> {
        let b = input.as_bytes();
        if b.is_empty() {
            return Err(ExpiryError::Empty);
        }
        let (month, year) = match b.iter().position(|&c| c == b'/' || c == b'-') {
            Some(at) => (&b[..at], &b[at + 1..]),
            None if b.len() == 4 || b.len() == 6 => b.split_at(2),
            None => return Err(ExpiryError::Format),
        };
        let month = match month {
            [_] | [_, _] => digits(month).ok_or(ExpiryError::Format)?,
            _ => return Err(ExpiryError::Format),
        };
        let year = match year {
            [_, _] => 2000 + digits(year).ok_or(ExpiryError::Format)?,
            [_, _, _, _] => digits(year).ok_or(ExpiryError::Format)?,
            _ => return Err(ExpiryError::Format),
        };
        let month = u8::try_from(month).map_err(|_| ExpiryError::Format)?;
        Expiry::new(year, month)
    }

    /// The year, 2000 to 2099.
    pub fn year(self) -> u16 {
        self.0.year
    }

    /// The month, 1 to 12.
    pub fn month(self) -> u8 {
        self.0.month
    }

    /// The expiry as a [`YearMonth`].
    pub fn year_month(self) -> YearMonth {
        self.0
    }

    /// Whether the card has expired by `today`: a card is good through the last day of its
    /// expiry month.
    ///
    /// ```
    /// use cardsync_core::{Expiry, YearMonth};
    ///
    /// let exp = Expiry::parse("12/25")?;
    /// assert!(exp.is_expired_at(YearMonth::new(2026, 1)?));
    /// assert!(!exp.is_expired_at(YearMonth::new(2025, 12)?));
    /// # Ok::<(), cardsync_core::ExpiryError>(())
    /// ```
    pub fn is_expired_at(self, today: YearMonth) -> bool {
        self.0 < today
    }
}

/// The value of one to four ASCII digits, or `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<u16> {
    b.iter().try_fold(0u16, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u16::from(c - b'0'))
    })
}

impl fmt::Display for Expiry {
    /// Writes the wire form, `MM/YY`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}/{:02}", self.month(), self.year() % 100)
    }
}

impl fmt::Debug for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expiry({self})")
    }
}

impl FromStr for Expiry {
    type Err = ExpiryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expiry::parse(s)
    }
}

/// Why an expiry date was rejected.
///
/// ```
/// use cardsync_core::{Expiry, ExpiryError};
///
/// let err = Expiry::parse("00/50").unwrap_err();
/// assert_eq!(err, ExpiryError::Month { month: 0 });
/// assert_eq!(err.code(), "exp_month");
/// assert_eq!(err.to_string(), "expiry month 0 is not 1 to 12");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExpiryError {
    /// The input is empty.
    Empty,
    /// The text is in none of the accepted forms.
    Format,
    /// The month is not 1 to 12.
    Month {
        /// The month given.
        month: u8,
    },
    /// A four-digit year outside 2000–2099.
    Year {
        /// The year given.
        year: u16,
    },
}

impl ExpiryError {
    /// A stable snake_case code for the error, as reported by `cardsync validate`:
    /// `missing_exp`, `exp_format`, `exp_month` or `exp_year`.
    ///
    /// ```
    /// assert_eq!(cardsync_core::ExpiryError::Format.code(), "exp_format");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            ExpiryError::Empty => "missing_exp",
            ExpiryError::Format => "exp_format",
            ExpiryError::Month { .. } => "exp_month",
            ExpiryError::Year { .. } => "exp_year",
        }
    }
}

impl fmt::Display for ExpiryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpiryError::Empty => f.write_str("expiry date is empty"),
            ExpiryError::Format => f.write_str(
                "expiry date is not in a known form (MM/YY, M/YY, MM/YYYY, MMYY or MM-YY)",
            ),
            ExpiryError::Month { month } => write!(f, "expiry month {month} is not 1 to 12"),
            ExpiryError::Year { year } => write!(f, "expiry year {year} is not 2000 to 2099"),
        }
    }
}

impl std::error::Error for ExpiryError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let jan50 = Expiry::new(2050, 1).unwrap();
        for s in [
            "01/50", "1/50", "01/2050", "1/2050", "0150", "01-50", "01-2050", "012050",
        ] {
            assert_eq!(Expiry::parse(s), Ok(jan50), "{s}");
        }
        assert_eq!(Expiry::parse("12/99").unwrap().to_string(), "12/99");
        assert_eq!(Expiry::parse("12/00").unwrap().year(), 2000);
    }

    #[test]
    fn rejected_forms() {
        use ExpiryError::*;
        let cases = [
            ("", Empty),
            ("1", Format),
            ("01/5", Format),
            ("001/50", Format),
            ("01/050", Format),
            ("01//50", Format),
            ("ab/cd", Format),
            ("01/5a", Format),
            (" 01/50", Format),
            ("01/50 ", Format),
            ("150", Format),
            ("01 50", Format),
            ("00/50", Month { month: 0 }),
            ("13/50", Month { month: 13 }),
            ("99/50", Month { month: 99 }),
            ("1350", Month { month: 13 }),
            ("01/1999", Year { year: 1999 }),
            ("01/2100", Year { year: 2100 }),
        ];
        for (s, err) in cases {
            assert_eq!(Expiry::parse(s), Err(err), "{s:?}");
        }
    }
}
