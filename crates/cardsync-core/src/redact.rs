//! Masking card numbers in free text: ids, server messages, anything that is not a card field
//! and may still hold a card number. One rule, [`redact_digit_runs`], used everywhere text
//! from outside is shown or written where full card numbers may not go.

use std::borrow::Cow;

use zeroize::Zeroize;

use crate::pan::{MIN_PAN_LEN, mask_digits};

/// Masks everything in `text` that looks like a card number, whether or not it passes the Luhn
/// check (a mistyped card number is still a card number).
///
/// **The rule.** A *digit run* is a stretch of ASCII digits in which two digits may be
/// separated by one separator: a space (also a no-break, figure, thin or narrow no-break
/// space), a hyphen (also an en dash), a dot or a slash. So `4532 0151 1283 0366`,
/// `4532-0151-1283-0366`, `4532.0151.1283.0366`, `4532/0151/1283/0366`, `4532015112830366`
/// and mixed groupings are each one run of sixteen digits; two separators in a row, or any
/// other character, end a run.
///
/// - A run of **twelve or more digits** is replaced, separators and all, by its digits masked
///   as [`Pan::masked`](crate::Pan::masked) masks a card number: at most the first six and the
///   last four digits shown, at least five hidden (`*`), and at most 24 characters in all. The
///   separators are dropped, so a card number masks to the same text however it was grouped.
///   Runs longer than nineteen digits are masked too: they may hold a card number.
/// - A run of **fewer than twelve digits** is left as it is: order numbers, dates, amounts,
///   phone numbers.
///
/// What is masked never looks like a card number again (its digits are split by `*`), so
/// masking twice changes nothing more. The result is [`Cow::Owned`] exactly when something was
/// masked, and borrows `text` unchanged otherwise: callers may use that as "holds what looks
/// like a card number". One pass over the bytes, no allocation unless something is masked.
///
/// Digits other than ASCII ones (full-width digits, say) are not recognised.
///
/// ```
/// use std::borrow::Cow;
/// use cardsync_core::redact_digit_runs;
///
/// assert_eq!(redact_digit_runs("card 4532015112830366 closed"), "card 453201******0366 closed");
/// for id in ["4532 0151 1283 0366", "4532-0151-1283-0366", "4532.0151.1283.0366", "4532/0151 1283-0366"] {
///     assert_eq!(redact_digit_runs(id), "453201******0366");
/// }
/// // A wrong check digit is still masked; so is a run too long to be one card number.
/// assert_eq!(redact_digit_runs("4532015112830367"), "453201******0367");
/// assert_eq!(redact_digit_runs("12345678901234567890123"), "123456*************0123");
/// // Shorter runs stay: an order number, a date, a twelve-digit run cut by two spaces.
/// assert_eq!(redact_digit_runs("order 2024-0042 of 2024.01.15"), "order 2024-0042 of 2024.01.15");
/// assert_eq!(redact_digit_runs("1234  5678 9012"), "1234  5678 9012");
/// // Nothing to mask: the text is borrowed.
/// assert!(matches!(redact_digit_runs("customer 42"), Cow::Borrowed(_)));
/// ```
pub fn redact_digit_runs(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    if !may_hold_a_run(b) {
        return Cow::Borrowed(text);
    }
    let mut out: Option<String> = None;
    let mut digits = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut count = 0;
        let end = loop {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
                count += 1;
            }
            // One separator with a digit after it joins the next digits to the run.
            let sep = match b.get(i) {
                Some(b' ' | b'-' | b'.' | b'/') => 1,
                Some(0xC2 | 0xE2) => separator_len(&b[i..]),
                _ => 0,
            };
            if sep == 0 || !b.get(i + sep).is_some_and(u8::is_ascii_digit) {
                break i;
            }
            i += sep;
        };
        if count < MIN_PAN_LEN {
            continue;
        }
        // `start` and `end` are at ASCII bytes, so both are character boundaries.
        let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
        out.push_str(&text[copied..start]);
        digits.clear();
        digits.extend(b[start..end].iter().copied().filter(u8::is_ascii_digit));
        out.push_str(mask_digits(&digits).as_str());
        copied = end;
    }
    digits.zeroize();
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    }
}

/// Whether `b` may hold a run of twelve or more digits: a first look without branches on the
/// bytes (text such as UUIDs, digits and letters at random, makes a branch per byte guess
/// wrong half the time). It over-counts, never under-counts: any number of separators, and any
/// byte of a multi-byte character, keep a run going.
#[inline]
fn may_hold_a_run(b: &[u8]) -> bool {
    let (mut run, mut longest) = (0u32, 0u32);
    for &c in b {
        let (add, keep) = CLASS[usize::from(c)];
        run = (run + add) & keep;
        longest = longest.max(run);
    }
    longest >= MIN_PAN_LEN as u32
}

/// Per byte: what it adds to a run, and the mask that keeps (all ones) or ends (zero) the run.
const CLASS: [(u32, u32); 256] = {
    let mut class = [(0, 0); 256];
    let mut c = 0;
    while c < 256 {
        let byte = c as u8;
        class[c] = if byte.is_ascii_digit() {
            (1, u32::MAX)
        } else if matches!(byte, b' ' | b'-' | b'.' | b'/') || byte >= 0x80 {
            (0, u32::MAX)
        } else {
            (0, 0)
        };
        c += 1;
    }
    class
};

/// The length in bytes of the separator `rest` starts with, or 0: a space, hyphen, dot or
/// slash, or in UTF-8 a no-break space (U+00A0), figure space (U+2007), thin space (U+2009),
/// narrow no-break space (U+202F) or en dash (U+2013).
#[inline]
fn separator_len(rest: &[u8]) -> usize {
    match rest {
        [b' ' | b'-' | b'.' | b'/', ..] => 1,
        [0xC2, 0xA0, ..] => 2,
        [0xE2, 0x80, 0x87 | 0x89 | 0x93 | 0xAF, ..] => 3,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grouping_of_a_card_masks_alike() {
        for id in [
            "4532 0151 1283 0366",
            "4532-0151-1283-0366",
            "4532.0151.1283.0366",
            "4532/0151/1283/0366",
            "4532015112830366",
            "4532 0151-1283.0366",
            "4532\u{a0}0151\u{2009}1283\u{2013}0366",
            "4 5 3 2 0 1 5 1 1 2 8 3 0 3 6 6",
        ] {
            assert_eq!(redact_digit_runs(id), "453201******0366", "{id:?}");
            let framed = format!("ref:{id}/x");
            assert_eq!(
                redact_digit_runs(&framed),
                "ref:453201******0366/x",
                "{id:?}"
            );
        }
    }

    #[test]
    fn short_runs_and_broken_groupings_stay() {
        for text in [
            "",
            "customer 42",
            "12345678901",
            "1234 5678 901",
            "2024-01-15 12:30:45",
            "1234--5678-9012",
            "1234 -5678-9012",
            "phone +1 555 123 4567",
            "ab12cd34ef56",
        ] {
            assert!(
                matches!(redact_digit_runs(text), Cow::Borrowed(_)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn lengths_and_edges() {
        assert_eq!(redact_digit_runs("123456789012"), "123*****9012");
        assert_eq!(redact_digit_runs("-123456789012-"), "-123*****9012-");
        assert_eq!(redact_digit_runs("1234-5678-9012 "), "123*****9012 ");
        assert_eq!(
            redact_digit_runs("a 4532015112830366 b 5112010000000003 c"),
            "a 453201******0366 b 511201******0003 c"
        );
        // Multi-byte text around a run is kept whole.
        assert_eq!(
            redact_digit_runs("é4532015112830366ü"),
            "é453201******0366ü"
        );
        // A trailing separator with nothing after it is not part of the run.
        assert_eq!(
            redact_digit_runs("4532015112830366\u{a0}"),
            "453201******0366\u{a0}"
        );
        // A near miss: U+2008 (punctuation space) is no separator.
        assert_eq!(
            redact_digit_runs("453201511283\u{2008}0366"),
            "453*****1283\u{2008}0366"
        );
    }
}
