//! Text from outside (an input file, what CardSync or a webhook sender sent) made safe to
//! show.
//!
//! - The merchant's ids (from the input file, or echoed back by CardSync) and CardSync's free
//!   text (status words, expiry text, SE numbers in results) may hold a card number: anything
//!   that looks like one is masked, by the one rule of `cardsync_core::redact_digit_runs`, on
//!   the terminal ([`text`]), in JSON output, the rejects file and the changes file ([`json`]).
//!   Server messages come masked already (`cardsync_proto` keeps them so).
//! - Handles that CardSync assigns and the user types back into a command (batch ids, event
//!   ids) are not masked: they are not card data, and a documented batch id such as
//!   `b9ec0c1776655524350` holds thirteen digits in a row. On the terminal they, and error
//!   messages, are escaped ([`plain`], [`message`]).
//! - On the terminal, control characters (and the marks that reorder text) are escaped as
//!   `\u{1b}`, so that no file or server can recolour, move or rewrite what is shown. JSON
//!   output needs no escaping of its own: serde_json escapes control characters.
//!
//! The results file alone keeps text as CardSync returned it, ids included (the user asked for
//! that file, with full card numbers, to update their records from, by id).

use std::borrow::Cow;
use std::fmt::Write;

use cardsync_core::redact_digit_runs;

/// For text output: masked, cut short ([`SHOWN`]), and every control character escaped.
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    escape(cap(redact_digit_runs(s)), false)
}

/// For JSON output and files other than the results file: masked, and cut short ([`SHOWN`]).
pub(crate) fn json(s: &str) -> Cow<'_, str> {
    cap(redact_digit_runs(s))
}

/// The most of one text from outside (an id, a status word) that is shown or written beside
/// the results file, in bytes: a longer one (a 50 MB id) is cut there, with its length said.
/// Always after masking, so that no cut leaves more of a card number than the mask shows.
const SHOWN: usize = 256;

fn cap(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.len() <= SHOWN {
        return s;
    }
    let mut end = SHOWN - 32;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &s[..end], s.len()))
}

/// For a handle (a batch id, an event id) on the terminal: every control character escaped,
/// nothing masked.
pub(crate) fn plain(s: &str) -> Cow<'_, str> {
    escape(Cow::Borrowed(s), false)
}

/// For an error message on standard error: every control character but the line breaks of the
/// message's own lines escaped. (Its parts that came from outside were masked where made.)
pub(crate) fn message(s: &str) -> Cow<'_, str> {
    escape(Cow::Borrowed(s), true)
}

/// An id already checked by the planner: masked only when its row has the `id_card_number`
/// warning (the same rule, run once per row), then escaped for text output.
pub(crate) fn checked_id(
    id: &str,
    warnings: cardsync_core::RowWarnings,
    format: crate::cli::OutputFormat,
) -> Cow<'_, str> {
    let id = cap(
        if warnings.contains(cardsync_core::RowWarning::IdCardNumber) {
            redact_digit_runs(id)
        } else {
            Cow::Borrowed(id)
        },
    );
    match format {
        crate::cli::OutputFormat::Json => id,
        _ => escape(id, false),
    }
}

/// Whether a character must not reach a terminal as it is: C0 and C1 controls, DEL, and the
/// marks that reorder text on screen.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(s: Cow<'_, str>, keep_newlines: bool) -> Cow<'_, str> {
    let keep = |c: char| keep_newlines && c == '\n';
    // Printable ASCII, the common case, is checked a byte at a time.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b))
        || !s.chars().any(|c| unsafe_char(c) && !keep(c))
    {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) && !keep(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_cards_masked() {
        assert_eq!(text("plain id-42"), "plain id-42");
        assert_eq!(text("\u{1b}[31mred\u{1b}[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(
            text("a\rb\nc\u{9b}d\u{202e}e"),
            "a\\u{d}b\\u{a}c\\u{9b}d\\u{202e}e"
        );
        assert_eq!(
            message("line one\nline\u{7} two"),
            "line one\nline\\u{7} two"
        );
        assert_eq!(
            plain("b9ec0c1776655524350\u{1b}"),
            "b9ec0c1776655524350\\u{1b}"
        );
        assert_eq!(text("4532 0151 1283 0366\u{1b}"), "453201******0366\\u{1b}");
        assert_eq!(json("4532-0151-1283-0366\u{1b}"), "453201******0366\u{1b}");
        // A long text is cut, after masking.
        let long = format!(
            "{}4532015112830366{}",
            "x".repeat(220),
            "y".repeat(1_000_000)
        );
        let shown = text(&long);
        assert!(
            shown.len() < 300 && shown.ends_with("(1000236 bytes)"),
            "{shown}"
        );
        assert!(!shown.contains("45320151"), "{shown}");
        // Escaping adds no digits that could join into a card number.
        let masked = text("4532\u{1}0151\u{1}1283\u{1}0366");
        assert!(!masked.chars().any(|c| c.is_control()), "{masked}");
        assert!(
            matches!(redact_digit_runs(&masked), Cow::Borrowed(_)),
            "{masked}"
        );
    }
}

/// A time given in seconds since the Unix epoch, as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn utc_times() {
        assert_eq!(super::utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc_time(1_796_400_000), "2026-12-04 16:00:00 UTC");
    }
}
