//! Card numbers (PANs): parsing, Luhn validation, brand detection and masking.
//!
//! A [`Pan`] can only be made by [`Pan::parse`], so holding one proves the number is well
//! formed. It never prints its digits: `Debug` masks them, there is no `Display`, and the full
//! number is reached only through [`Pan::expose`]. Its memory is zeroed when it is dropped.

use std::fmt;
use std::str::FromStr;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::brand::Brand;
use crate::iin;

/// The fewest digits a card number may have.
pub const MIN_PAN_LEN: usize = 12;
/// The most digits a card number may have.
pub const MAX_PAN_LEN: usize = 19;

/// Width of the right-aligned digit buffer a [`Pan`] keeps, in bytes.
const BUF: usize = 24;
const ONES: u64 = 0x0101_0101_0101_0101;
/// Eight ASCII `'0'`s: the padding left of the digits, and what is subtracted to get digits.
const ZEROS: u64 = 0x30 * ONES;
const HIGH_NIBBLES: u64 = 0xF0 * ONES;
/// In a little-endian word of the right-aligned buffer, the bytes whose digits Luhn doubles.
const DOUBLED: u64 = 0x0001_0001_0001_0001;

/// A validated primary account number: 12 to 19 digits that pass the Luhn check and fit the
/// lengths their brand issues.
///
/// ```
/// use cardsync_core::{Brand, Pan};
///
/// let pan = Pan::parse("4457 0100 0000 0009")?;
/// assert_eq!(pan.brand(), Brand::Visa);
/// assert_eq!(format!("{pan:?}"), "Pan(445701******0009)");
/// assert_eq!(pan.masked().as_str(), "445701******0009");
/// assert_eq!(pan.last4().as_str(), "0009");
/// assert_eq!(pan.expose().as_str(), "4457010000000009");
/// # Ok::<(), cardsync_core::PanError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pan {
    /// The ASCII digits right-aligned in 24 bytes, padded with `'0'` on the left, read as three
    /// little-endian words. Leading zeros do not change a Luhn sum, so the check runs on the
    /// padded words directly.
    words: [u64; 3],
    len: u8,
    brand: Brand,
}

impl Pan {
    /// Parses a card number: digits, optionally grouped by single spaces or single hyphens
    /// (one kind per number), as in `"4111 1111 1111 1111"`.
    ///
    /// # Errors
    ///
    /// A [`PanError`] naming the first problem found, in this order: empty input, a character
    /// that is neither a digit nor a separator, a misplaced separator, a digit count outside
    /// 12–19, a failed Luhn check, and a length the brand does not issue. The error never holds
    /// the digits.
    ///
    /// ```
    /// use cardsync_core::{Pan, PanError};
    ///
    /// assert!(Pan::parse("6011-0100-0000-0003").is_ok());
    /// assert_eq!(Pan::parse("4457010000000008").unwrap_err(), PanError::Luhn);
    /// assert_eq!(Pan::parse("4457 01x0").unwrap_err(), PanError::NonDigit { position: 8 });
    /// assert_eq!(Pan::parse("4457  0100").unwrap_err(), PanError::Separator { position: 6 });
    /// assert_eq!(Pan::parse("445701").unwrap_err(), PanError::Length { len: 6 });
    /// ```
    #[inline]
    pub fn parse(input: &str) -> Result<Pan, PanError> {
        // The common case: sixteen digits and nothing else, checked eight at a time.
        if let Ok(b16) = <&[u8; 16]>::try_from(input.as_bytes()) {
            let w1 = u64::from_le_bytes(array8(b16, 0));
            let w2 = u64::from_le_bytes(array8(b16, 8));
            // For digits, `w ^ ZEROS` is the digit values; for anything else it shows.
            let (d1, d2) = (w1 ^ ZEROS, w2 ^ ZEROS);
            if non_digits(d1) | non_digits(d2) == 0 {
                return Pan::finish([ZEROS, w1, w2], [0, d1, d2], 16);
            }
        }
        parse_general(input)
    }

    /// Checks the Luhn digit, finds the brand and checks the brand's lengths.
    #[inline]
    fn finish(words: [u64; 3], digits: [u64; 3], len: usize) -> Result<Pan, PanError> {
        // Built first so that dropping it zeroes the digits on every path.
        let mut pan = Pan {
            words,
            len: len as u8,
            brand: Brand::Unknown,
        };
        if !luhn_valid(digits) {
            return Err(PanError::Luhn);
        }
        // The first digit sits at byte 24 - len of the buffer; bring the first four (eight
        // bytes, to keep the shift in range) to the low end of one word.
        let at = (BUF - len) * 8;
        let head = (digits[at / 64] >> (at % 64)) | (digits[at / 64 + 1] << 1 << (63 - at % 64));
        let entry = iin::entry(first4(head), || first6(head));
        if !entry.allows_len(len) {
            return Err(PanError::BrandLength {
                brand: entry.brand(),
                len,
            });
        }
        pan.brand = entry.brand();
        Ok(pan)
    }

    /// The card's brand.
    ///
    /// ```
    /// let pan = cardsync_core::Pan::parse("342132335566772")?;
    /// assert_eq!(pan.brand(), cardsync_core::Brand::AmericanExpress);
    /// # Ok::<(), cardsync_core::PanError>(())
    /// ```
    pub fn brand(&self) -> Brand {
        self.brand
    }

    /// How many digits the number has (12 to 19).
    ///
    /// ```
    /// let pan = cardsync_core::Pan::parse("342132335566772")?;
    /// assert_eq!(pan.digit_count(), 15);
    /// # Ok::<(), cardsync_core::PanError>(())
    /// ```
    pub fn digit_count(&self) -> usize {
        usize::from(self.len)
    }

    /// The full number, for the places it must go (a request body, a results file the user asked
    /// for). The returned value is zeroed when dropped and masks itself in `Debug`.
    ///
    /// ```
    /// let pan = cardsync_core::Pan::parse("4100-2003-0001-1001")?;
    /// assert_eq!(pan.expose().as_str(), "4100200300011001");
    /// # Ok::<(), cardsync_core::PanError>(())
    /// ```
    pub fn expose(&self) -> ExposedPan {
        let mut buf = [0u8; BUF];
        for (chunk, w) in buf.chunks_exact_mut(8).zip(self.words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let mut digits = [0u8; MAX_PAN_LEN];
        let len = self.digit_count();
        digits[..len].copy_from_slice(&buf[BUF - len..]);
        buf.zeroize();
        ExposedPan {
            digits,
            len: self.len,
        }
    }

    /// Appends the full number's digits to `out`, for encoders writing a request body: unlike
    /// [`Pan::expose`], no intermediate copy is made (and so none needs zeroing).
    ///
    /// ```
    /// let pan = cardsync_core::Pan::parse("4457 0100 0000 0009")?;
    /// let mut body = b"\"card\":\"".to_vec();
    /// pan.expose_into(&mut body);
    /// assert_eq!(body, b"\"card\":\"4457010000000009");
    /// # Ok::<(), cardsync_core::PanError>(())
    /// ```
    pub fn expose_into(&self, out: &mut Vec<u8>) {
        let len = self.digit_count();
        let [w0, w1, w2] = self.words.map(u64::to_le_bytes);
        if len > 16 {
            out.extend_from_slice(&w0[BUF - len..]);
        }
        if len > 8 {
            out.extend_from_slice(&w1[(BUF - 8).saturating_sub(len).min(8)..]);
        }
        out.extend_from_slice(&w2);
    }

    /// The number with all but the first six and last four digits replaced by `*` (fewer shown
    /// for numbers shorter than 15 digits, so that at least five stay hidden).
    ///
    /// ```
    /// let pan = cardsync_core::Pan::parse("342132335566772")?;
    /// assert_eq!(pan.masked().as_str(), "342132*****6772");
    /// # Ok::<(), cardsync_core::PanError>(())
    /// ```
    pub fn masked(&self) -> PanFragment {
        // Only the shown digits are read, straight from the words: no copy of the whole number
        // is made, so there is nothing to zero afterwards.
        let len = self.digit_count();
        let start = BUF - len;
        let digit = |i: usize| (self.words[i / 8] >> (8 * (i % 8))) as u8;
        let head = len.saturating_sub(9).min(6);
        let mut buf = [b'*'; FRAGMENT_CAP];
        for (k, b) in buf[..head].iter_mut().enumerate() {
            *b = digit(start + k);
        }
        for (k, b) in buf[len - 4..len].iter_mut().enumerate() {
            *b = digit(BUF - 4 + k);
        }
        // Unused bytes are zero in every fragment, so that the derived comparisons hold.
        buf[len..].fill(0);
        PanFragment {
            buf,
            len: len as u8,
        }
    }

    /// The bank identification number: the first six digits.
    ///
    /// ```
    /// let pan = cardsync_core::Pan::parse("5194560012341234")?;
    /// assert_eq!(pan.bin().as_str(), "519456");
    /// # Ok::<(), cardsync_core::PanError>(())
    /// ```
    pub fn bin(&self) -> PanFragment {
        PanFragment::from_ascii(&self.expose().as_bytes()[..6])
    }

    /// The last four digits.
    ///
    /// ```
    /// let pan = cardsync_core::Pan::parse("5194560012341234")?;
    /// assert_eq!(pan.last4().as_str(), "1234");
    /// # Ok::<(), cardsync_core::PanError>(())
    /// ```
    pub fn last4(&self) -> PanFragment {
        let exposed = self.expose();
        let b = exposed.as_bytes();
        PanFragment::from_ascii(&b[b.len() - 4..])
    }
}

impl Drop for Pan {
    #[inline]
    fn drop(&mut self) {
        self.words.zeroize();
    }
}

impl ZeroizeOnDrop for Pan {}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", self.masked())
    }
}

impl FromStr for Pan {
    type Err = PanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pan::parse(s)
    }
}

impl TryFrom<&str> for Pan {
    type Error = PanError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Pan::parse(s)
    }
}

/// Whether `input` is a number in a spreadsheet's scientific notation (`5.11E+15`,
/// `4.45701E15`): what a card number column becomes when a spreadsheet takes it for a number.
fn is_scientific(input: &str) -> bool {
    let Some((mantissa, exponent)) = input.trim().split_once(['E', 'e']) else {
        return false;
    };
    let exponent = exponent.strip_prefix('+').unwrap_or(exponent);
    let mantissa_ok = {
        let mut parts = mantissa.splitn(2, ['.', ',']);
        let whole = parts.next().unwrap_or("");
        let fraction = parts.next().unwrap_or("0");
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && fraction.bytes().all(|b| b.is_ascii_digit())
    };
    mantissa_ok && !exponent.is_empty() && exponent.bytes().all(|b| b.is_ascii_digit())
}

/// Every input [`Pan::parse`]'s sixteen-digit fast path does not take: separators, other
/// lengths, and all errors.
#[cold]
fn parse_general(input: &str) -> Result<Pan, PanError> {
    if input.is_empty() {
        return Err(PanError::Empty);
    }
    let mut digits = [b'0'; MAX_PAN_LEN];
    let mut len = 0usize;
    let mut separator = None;
    let mut after_digit = false;
    let mut position = 0;
    for c in input.chars() {
        position += 1;
        match c {
            '0'..='9' => {
                if let Some(slot) = digits.get_mut(len) {
                    *slot = c as u8;
                }
                len += 1;
                after_digit = true;
            }
            ' ' | '-' => {
                if !after_digit || separator.is_some_and(|s| s != c) {
                    digits.zeroize();
                    return Err(PanError::Separator { position });
                }
                separator = Some(c);
                after_digit = false;
            }
            _ => {
                digits.zeroize();
                if is_scientific(input) {
                    return Err(PanError::Scientific);
                }
                return Err(PanError::NonDigit { position });
            }
        }
    }
    let result = if !after_digit {
        Err(PanError::Separator { position })
    } else if !(MIN_PAN_LEN..=MAX_PAN_LEN).contains(&len) {
        Err(PanError::Length { len })
    } else {
        let mut buf = [b'0'; BUF];
        buf[BUF - len..].copy_from_slice(&digits[..len]);
        let words = [0, 8, 16].map(|i| u64::from_le_bytes(array8(&buf, i)));
        buf.zeroize();
        Pan::finish(words, words.map(|w| w ^ ZEROS), len)
    };
    digits.zeroize();
    result
}

fn array8<const N: usize>(b: &[u8; N], at: usize) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&b[at..at + 8]);
    out
}

/// The number made of the four digit values in the low bytes of `d`, first digit lowest.
#[inline]
fn first4(d: u64) -> u32 {
    // Pairs first: byte 0 becomes 10 * d0 + d1 and byte 2 becomes 10 * d2 + d3 (no byte
    // exceeds 99, so nothing carries); then the 16-bit lanes combine as 100 * p0 + p1.
    let d = d as u32;
    let pairs = (d * 10 + (d >> 8)) & 0x00FF_00FF;
    (pairs * 100 + (pairs >> 16)) & 0xFFFF
}

/// The number made of the six digit values in the low bytes of `d`, first digit lowest.
fn first6(d: u64) -> u32 {
    (0..6).fold(0, |n, i| n * 10 + ((d >> (8 * i)) & 0xFF) as u32)
}

/// Zero exactly when all eight bytes of `d` (text XOR `'0'`s) are digit values 0 to 9.
#[inline]
fn non_digits(d: u64) -> u64 {
    // A byte is 0..=9 when its high nibble is 0 both as it is and after adding 6 (which carries
    // 10..=15 into the high nibble). A carry out of a byte needs a byte >= 0xFA, which already
    // has a high nibble; a carry into a byte only ever adds a flag, never hides one.
    (d & HIGH_NIBBLES) | (d.wrapping_add(6 * ONES) & HIGH_NIBBLES)
}

/// The Luhn check over the digit values of the right-aligned, zero-padded buffer.
#[inline]
fn luhn_valid([d0, d1, d2]: [u64; 3]) -> bool {
    // Luhn doubles every second digit from the right and subtracts 9 from doubles above 9, so
    // a doubled digit d adds 2d - 9 * (d >= 5), and d + 3 has bit 3 set exactly when d >= 5.
    // With 24 right-aligned bytes the doubled digits are the even bytes of each little-endian
    // word. Per byte, the three words' contributions add to at most 27 and are never negative,
    // so the subtraction borrows nothing and one multiply sums all 24.
    let all = d0 + d1 + d2;
    let big = (((d0 + 3 * ONES) & (8 * DOUBLED))
        + ((d1 + 3 * ONES) & (8 * DOUBLED))
        + ((d2 + 3 * ONES) & (8 * DOUBLED)))
        >> 3;
    let per_byte = all + (all & (0xFF * DOUBLED)) - 9 * big;
    byte_sum(per_byte).is_multiple_of(10)
}

/// The sum of the eight bytes of `x`, which must not exceed 255.
#[inline]
fn byte_sum(x: u64) -> u32 {
    (x.wrapping_mul(ONES) >> 56) as u32
}

/// Masks a run of ASCII digits: the first six and last four shown at most, at least five hidden,
/// nothing shown under nine digits, and at most 24 characters in all.
pub(crate) fn mask_digits(digits: &[u8]) -> PanFragment {
    let n = digits.len();
    let tail = if n >= 9 { 4 } else { 0 };
    let head = n.saturating_sub(9).min(6);
    let stars = (n - head - tail).min(FRAGMENT_CAP - head - tail);
    let mut out = PanFragment::default();
    out.push(&digits[..head]);
    for _ in 0..stars {
        out.push(b"*");
    }
    out.push(&digits[n - tail..]);
    out
}

/// Masks whatever digits a card field holds, valid or not, for reporting a row that failed to
/// parse: characters other than digits are left out, then the digits are masked as
/// [`Pan::masked`] does.
///
/// ```
/// use cardsync_core::mask_card_text;
///
/// assert_eq!(mask_card_text("4457-0100-0000-0008").as_str(), "445701******0008");
/// assert_eq!(mask_card_text("12345").as_str(), "*****");
/// assert_eq!(mask_card_text("not a card").as_str(), "");
/// ```
pub fn mask_card_text(text: &str) -> PanFragment {
    let mut digits = Vec::with_capacity(text.len());
    digits.extend(text.bytes().filter(u8::is_ascii_digit));
    let masked = mask_digits(&digits);
    digits.zeroize();
    masked
}

/// The digit that makes `body` followed by it pass the Luhn check, for generating test numbers
/// or completing a number of a known prefix. `None` when `body` is empty or holds anything but
/// ASCII digits.
///
/// ```
/// use cardsync_core::{luhn_check_digit, Pan};
///
/// assert_eq!(luhn_check_digit("445701000000000"), Some(b'9'));
/// let body = "601101000000000";
/// let full = format!("{body}{}", char::from(luhn_check_digit(body).unwrap()));
/// assert!(Pan::parse(&full).is_ok());
/// assert_eq!(luhn_check_digit("44x"), None);
/// ```
pub fn luhn_check_digit(body: &str) -> Option<u8> {
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The check digit will be last, so the body's last digit is the first one doubled.
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    Some(b'0' + ((10 - sum % 10) % 10) as u8)
}

/// Why a card number was rejected. Never holds the number's digits.
///
/// ```
/// use cardsync_core::{Brand, Pan, PanError};
///
/// let err = Pan::parse("34213233556678").unwrap_err();
/// assert_eq!(err, PanError::BrandLength { brand: Brand::AmericanExpress, len: 14 });
/// assert_eq!(err.to_string(), "american_express does not issue card numbers of 14 digits");
/// assert_eq!(Pan::parse("").unwrap_err().code(), "missing_card");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PanError {
    /// The input is empty.
    Empty,
    /// A character other than a digit, a space or a hyphen.
    NonDigit {
        /// 1-based position of the character, counted in characters.
        position: usize,
    },
    /// A separator that is first, last, doubled, or of a different kind from the first one.
    Separator {
        /// 1-based position of the separator, counted in characters.
        position: usize,
    },
    /// Fewer than 12 or more than 19 digits.
    Length {
        /// How many digits the input has.
        len: usize,
    },
    /// The check digit is wrong.
    Luhn,
    /// The brand does not issue numbers of this length.
    BrandLength {
        /// The brand the prefix belongs to.
        brand: Brand,
        /// How many digits the input has.
        len: usize,
    },
    /// A number in scientific notation (`5.11E+15`): a spreadsheet took the card number for a
    /// number, and its digits are lost.
    Scientific,
}

impl PanError {
    /// A stable snake_case code for the error, as reported by `cardsync validate`:
    /// `missing_card`, `non_digit`, `separator`, `length`, `luhn`, `brand_length` or
    /// `spreadsheet_number`.
    ///
    /// ```
    /// use cardsync_core::{Pan, PanError};
    /// assert_eq!(PanError::Luhn.code(), "luhn");
    /// assert_eq!(Pan::parse("5.11E+15").unwrap_err(), PanError::Scientific);
    /// assert_eq!(Pan::parse("5.11E+15").unwrap_err().code(), "spreadsheet_number");
    /// ```
    pub fn code(&self) -> &'static str {
        match self {
            PanError::Empty => "missing_card",
            PanError::NonDigit { .. } => "non_digit",
            PanError::Separator { .. } => "separator",
            PanError::Length { .. } => "length",
            PanError::Luhn => "luhn",
            PanError::BrandLength { .. } => "brand_length",
            PanError::Scientific => "spreadsheet_number",
        }
    }
}

impl fmt::Display for PanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PanError::Empty => f.write_str("card number is empty"),
            PanError::NonDigit { position } => write!(
                f,
                "card number has a character that is not a digit at position {position}"
            ),
            PanError::Separator { position } => write!(
                f,
                "card number has a misplaced separator at position {position} \
                 (digits may be grouped by single spaces or by single hyphens)"
            ),
            PanError::Length { len } => write!(
                f,
                "card number has {len} digits; card numbers have {MIN_PAN_LEN} to {MAX_PAN_LEN}"
            ),
            PanError::Luhn => f.write_str("card number fails the Luhn check"),
            PanError::BrandLength { brand, len } => {
                write!(f, "{brand} does not issue card numbers of {len} digits")
            }
            PanError::Scientific => f.write_str(
                "card number is in scientific notation: a spreadsheet took it for a number and \
                 dropped its last digits; export the column as text from the original data",
            ),
        }
    }
}

impl std::error::Error for PanError {}

/// The full digits of a [`Pan`], returned by [`Pan::expose`]. Zeroed when dropped; its `Debug`
/// is masked like the `Pan`'s.
///
/// ```
/// let pan = cardsync_core::Pan::parse("6011010000000003")?;
/// let digits = pan.expose();
/// assert_eq!(digits.as_str(), "6011010000000003");
/// assert_eq!(format!("{digits:?}"), "ExposedPan(601101******0003)");
/// # Ok::<(), cardsync_core::PanError>(())
/// ```
#[derive(Clone)]
pub struct ExposedPan {
    digits: [u8; MAX_PAN_LEN],
    len: u8,
}

impl ExposedPan {
    /// The digits as text.
    pub fn as_str(&self) -> &str {
        // Invariant: only ASCII digits are ever stored.
        std::str::from_utf8(self.as_bytes()).expect("ASCII digits")
    }

    /// The digits as ASCII bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[..usize::from(self.len)]
    }
}

impl AsRef<str> for ExposedPan {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Drop for ExposedPan {
    fn drop(&mut self) {
        self.digits.zeroize();
    }
}

impl ZeroizeOnDrop for ExposedPan {}

impl fmt::Debug for ExposedPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExposedPan({})", mask_digits(self.as_bytes()))
    }
}

const FRAGMENT_CAP: usize = 24;

/// Text derived from a card number that is safe to show: a masked number, a BIN or the last
/// four digits. Small, `Copy`, and printable.
///
/// ```
/// let pan = cardsync_core::Pan::parse("5112010000000003")?;
/// let masked = pan.masked();
/// assert_eq!(masked.to_string(), "511201******0003");
/// assert_eq!(masked, "511201******0003");
/// # Ok::<(), cardsync_core::PanError>(())
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PanFragment {
    buf: [u8; FRAGMENT_CAP],
    len: u8,
}

impl PanFragment {
    fn from_ascii(b: &[u8]) -> PanFragment {
        let mut out = PanFragment::default();
        out.push(b);
        out
    }

    fn push(&mut self, b: &[u8]) {
        let at = usize::from(self.len);
        self.buf[at..at + b.len()].copy_from_slice(b);
        self.len += b.len() as u8;
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Invariant: only ASCII digits and '*' are ever stored.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).expect("ASCII")
    }
}

impl fmt::Display for PanFragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for PanFragment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl AsRef<str> for PanFragment {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for PanFragment {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for PanFragment {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A plain Luhn check, digit by digit: the oracle that the word-at-a-time check is tested and
/// fuzzed against. Takes ASCII digits only.
#[cfg(any(test, fuzzing))]
pub(crate) fn luhn_reference(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_spreadsheets_number_is_named_as_such() {
        for spreadsheet in [
            "5.11E+15",
            "4.45701E+15",
            "4,45701E+15",
            "4E15",
            "4.457010e+15",
        ] {
            assert_eq!(
                Pan::parse(spreadsheet).unwrap_err(),
                PanError::Scientific,
                "{spreadsheet}"
            );
        }
        for other in ["4457E", "E+15", "4457x", "4.4.5E+15", "4457-01x0"] {
            assert_ne!(
                Pan::parse(other).unwrap_err(),
                PanError::Scientific,
                "{other}"
            );
        }
    }

    use super::*;

    #[test]
    fn swar_luhn_matches_reference_on_every_length() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            for len in MIN_PAN_LEN..=MAX_PAN_LEN {
                let digits: String = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        char::from(b'0' + (x % 10) as u8)
                    })
                    .collect();
                let mut buf = [b'0'; BUF];
                buf[BUF - len..].copy_from_slice(digits.as_bytes());
                let words = [0, 8, 16].map(|i| u64::from_le_bytes(array8(&buf, i)) ^ ZEROS);
                assert_eq!(luhn_valid(words), luhn_reference(&digits), "{len}");
            }
        }
    }

    #[test]
    fn digit_check_accepts_exactly_ascii_digits() {
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut bytes = *b"01234567";
                bytes[at] = b;
                let ok = non_digits(u64::from_le_bytes(bytes) ^ ZEROS) == 0;
                assert_eq!(ok, b.is_ascii_digit(), "{b}");
            }
        }
    }

    #[test]
    fn fast_and_general_paths_agree() {
        for s in ["4457010000000009", "4457010000000008", "0000000000000000"] {
            let spaced = format!("{} {} {} {}", &s[..4], &s[4..8], &s[8..12], &s[12..]);
            assert_eq!(Pan::parse(s), parse_general(s));
            assert_eq!(Pan::parse(s), Pan::parse(&spaced));
        }
    }

    #[test]
    fn expose_into_matches_expose_for_every_length() {
        for len in MIN_PAN_LEN..=MAX_PAN_LEN {
            let body = "9".to_owned() + &"0123456789".repeat(2)[..len - 2];
            let pans: Vec<Pan> = (0..10)
                .filter_map(|d| Pan::parse(&format!("{body}{d}")).ok())
                .collect();
            assert_eq!(pans.len(), 1, "one check digit fits, at length {len}");
            let mut out = b"x".to_vec();
            pans[0].expose_into(&mut out);
            assert_eq!(&out[1..], pans[0].expose().as_bytes(), "{len}");
        }
    }

    #[test]
    fn pan_masking_matches_text_masking_at_every_length() {
        for len in MIN_PAN_LEN..=MAX_PAN_LEN {
            let body = "9".to_owned() + &"1234567890".repeat(2)[..len - 2];
            let pan = (0..10)
                .find_map(|d| Pan::parse(&format!("{body}{d}")).ok())
                .expect("one check digit fits");
            assert_eq!(pan.masked(), mask_digits(pan.expose().as_bytes()), "{len}");
        }
    }

    #[test]
    fn masking_hides_at_least_five_digits() {
        let digits = b"1234567890123456789012345";
        for n in 0..digits.len() {
            let m = mask_digits(&digits[..n]);
            let shown = m.as_str().bytes().filter(u8::is_ascii_digit).count();
            assert!(shown <= 10, "{n}: {m}");
            if n > 0 {
                assert!(n - shown >= 5 || shown == 0, "{n}: {m}");
            }
        }
        assert_eq!(mask_digits(b"123456789012").as_str(), "123*****9012");
        assert_eq!(
            mask_digits(b"1234567890123456789").as_str(),
            "123456*********6789"
        );
    }
}
