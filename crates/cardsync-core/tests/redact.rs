//! Property tests of `redact_digit_runs`, the one rule for card numbers in free text, and of
//! the `id_card_number` warning built on it.

use std::borrow::Cow;

use cardsync_core::{
    PlanEvent, PlanOptions, Planner, Record, RowVerdict, RowWarning, mask_card_text, plan,
    redact_digit_runs,
};
use proptest::prelude::*;

/// Every separator the rule accepts between two digits.
const SEPARATORS: [char; 9] = [
    ' ', '-', '.', '/', '\u{a0}', '\u{2007}', '\u{2009}', '\u{202f}', '\u{2013}',
];

/// The rule written out again, differently: over characters, looking ahead for "digit", or
/// "separator then digit", to extend a run.
fn reference(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let digit = |i: usize| chars.get(i).is_some_and(char::is_ascii_digit);
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if !digit(i) {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let mut end = i;
        loop {
            if digit(end + 1) {
                end += 1;
            } else if SEPARATORS.contains(&chars.get(end + 1).copied().unwrap_or('x'))
                && digit(end + 2)
            {
                end += 2;
            } else {
                break;
            }
        }
        let run: String = chars[i..=end].iter().collect();
        let digits: String = run.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 12 {
            out.push_str(mask_card_text(&digits).as_str());
        } else {
            out.push_str(&run);
        }
        i = end + 1;
    }
    out
}

/// Text made mostly of digits and separators, so that runs of every length and shape occur.
fn texty() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        12 => prop::char::range('0', '9'),
        3 => prop::sample::select(SEPARATORS.to_vec()),
        1 => prop::sample::select(vec!['a', 'Z', '*', '_', ',', ':', '\u{2008}', 'é', '€', '\u{1b}']),
    ];
    prop::collection::vec(ch, 0..80).prop_map(|c| c.into_iter().collect())
}

/// A number of `digits`, with each gap between two digits left empty or given one separator.
fn grouped() -> impl Strategy<Value = (String, String)> {
    prop::collection::vec(
        (
            prop::char::range('0', '9'),
            prop::option::weighted(0.3, prop::sample::select(SEPARATORS.to_vec())),
        ),
        12..=30,
    )
    .prop_map(|parts| {
        let digits: String = parts.iter().map(|(d, _)| *d).collect();
        let mut text = String::new();
        for (i, (d, sep)) in parts.iter().enumerate() {
            if i > 0
                && let Some(sep) = sep
            {
                text.push(*sep);
            }
            text.push(*d);
        }
        (digits, text)
    })
}

/// The longest stretch of consecutive ASCII digits.
fn longest_digit_run(text: &str) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in text.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// The function agrees with the rule written out differently, on any text.
    #[test]
    fn agrees_with_the_rule(text in texty()) {
        let (got, expected) = (redact_digit_runs(&text), reference(&text));
        prop_assert_eq!(got.as_ref(), expected.as_str());
    }

    /// A card-shaped run (12 to 30 digits, any single separators) anywhere in a text is
    /// replaced by its masked digits, and the text around it is handled on its own.
    #[test]
    fn every_card_shaped_run_is_masked(
        before in texty(),
        after in texty(),
        (digits, run) in grouped(),
    ) {
        let text = format!("{before}x{run}x{after}");
        let expected = format!(
            "{}x{}x{}",
            redact_digit_runs(&before),
            mask_card_text(&digits),
            redact_digit_runs(&after)
        );
        let got = redact_digit_runs(&text);
        prop_assert_eq!(got.as_ref(), expected.as_str());
        // At most the first six and last four digits are shown.
        let masked = mask_card_text(&digits);
        prop_assert!(masked.as_str().bytes().filter(u8::is_ascii_digit).count() <= 10);
    }

    /// Nothing that looks like a card number survives: no run of twelve consecutive digits,
    /// nothing the rule would mask again (so masking twice is masking once).
    #[test]
    fn nothing_card_shaped_survives(text in texty()) {
        let once = redact_digit_runs(&text);
        prop_assert!(longest_digit_run(&once) < 12, "{:?}", once);
        let twice = redact_digit_runs(&once);
        prop_assert!(matches!(twice, Cow::Borrowed(_)), "{:?} masked again", once);
        prop_assert_eq!(twice.as_ref(), once.as_ref());
    }

    /// Text whose digit runs are all shorter than twelve digits is borrowed untouched.
    #[test]
    fn short_runs_are_untouched(parts in prop::collection::vec(("[0-9]{1,11}", "[a-z ,:]{1,3}"), 0..10)) {
        // Two characters apart at least: a separator alone would join two runs.
        let text: String = parts.iter().map(|(d, s)| format!("{d}x{s}")).collect();
        prop_assert!(matches!(redact_digit_runs(&text), Cow::Borrowed(t) if t == text));
    }

    /// A row whose id holds a card number is planned all the same, with the warning, and no
    /// `Debug` of its record, verdict or planned card shows the number.
    #[test]
    fn a_card_in_the_id_is_a_warning_and_never_shown((digits, id) in grouped()) {
        let record = Record::new(&id, "4457010000000009", "01/50");
        let debug_record = format!("{record:?}");
        let mut planner = Planner::new(PlanOptions::default());
        let verdict = planner.handle_record(record);
        let RowVerdict::Accepted(accepted) = &verdict else {
            return Err(TestCaseError::fail(format!("{verdict:?}")));
        };
        prop_assert!(accepted.warnings.contains(RowWarning::IdCardNumber));
        let rejected = Planner::new(PlanOptions::default())
            .handle_record(Record::new(&id, "4457010000000008", "01/50"));
        let RowVerdict::Rejected(r) = &rejected else {
            return Err(TestCaseError::fail(format!("{rejected:?}")));
        };
        prop_assert!(r.warnings.contains(RowWarning::IdCardNumber));
        planner.finish();
        let request = planner.poll_request().expect("one request");
        for text in [debug_record, format!("{verdict:?}"), format!("{rejected:?}"), format!("{request:?}")] {
            prop_assert!(longest_digit_run(&text) < 12, "{}", text);
            prop_assert!(!text.contains(&digits[1..11]), "{}", text);
        }
    }
}

#[test]
fn ids_without_card_numbers_have_no_warning() {
    let rows = [
        Record::new("sub-000042", "4457010000000009", "01/50"),
        Record::new("2024-01-15 order 77", "5112010000000003", "02/50"),
        Record::new(
            "550e8400-e29b-41d4-a716-44665544",
            "6011010000000003",
            "03/50",
        ),
    ];
    let mut n = 0;
    for event in plan(rows, PlanOptions::default()) {
        if let PlanEvent::Request(r) = event {
            n += r.cards.len();
        }
    }
    assert_eq!(n, 3);
    let mut planner = Planner::new(PlanOptions::default());
    for r in rows {
        let RowVerdict::Accepted(a) = planner.handle_record(r) else {
            panic!("{r:?}");
        };
        assert!(a.warnings.is_empty(), "{r:?}");
    }
}
