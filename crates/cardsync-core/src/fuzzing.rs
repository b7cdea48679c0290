//! Checks run by the fuzz targets in `fuzz/`, kept here so each target stays three lines long.
//! Compiled only under `cfg(fuzzing)`, which cargo-fuzz sets.

use crate::{Expiry, Pan, PanError, PlanEvent, PlanOptions, RecordBuf, plan};

/// Parses arbitrary text as a card number: never panics, never shows the digits in `Debug` or
/// in an error, and a parsed number exposes exactly the digits of the input.
pub fn pan_text(s: &str) {
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    match Pan::parse(s) {
        Ok(pan) => {
            assert_eq!(pan.expose().as_str(), digits);
            assert!(!format!("{pan:?}").contains(&digits));
            assert_eq!(pan.masked().as_str().len(), digits.len());
            assert_eq!(Pan::parse(pan.expose().as_str()).as_ref(), Ok(&pan));
        }
        Err(e) => {
            if digits.len() >= 12 {
                assert!(!format!("{e:?} {e}").contains(&digits));
            }
            if e == PanError::Luhn {
                assert!(!crate::pan::luhn_reference(&digits));
            }
        }
    }
}

/// Parses arbitrary text as an expiry date: never panics, and what parses formats to `MM/YY`
/// text that parses back to the same date.
pub fn expiry_text(s: &str) {
    if let Ok(exp) = Expiry::parse(s) {
        let wire = exp.to_string();
        assert_eq!(wire.len(), 5);
        assert_eq!(Expiry::parse(&wire), Ok(exp));
    }
}

/// Plans arbitrary lines of `id,card,exp,se` text with a small request size: every row ends up
/// exactly once, in a request or rejected.
pub fn plan_lines(s: &str) {
    let records: Vec<RecordBuf> = s
        .lines()
        .map(|line| {
            let mut f = line.split(',');
            let mut next = || f.next().unwrap_or("").to_owned();
            let (id, card, exp, se) = (next(), next(), next(), next());
            RecordBuf::new(id, card, exp).with_se_number((!se.is_empty()).then_some(se))
        })
        .collect();
    let options = PlanOptions::default()
        .with_max_per_request(3)
        .expect("3 is a valid size");
    let mut rows = Vec::new();
    for event in plan(records.iter().cloned(), options) {
        match event {
            PlanEvent::Request(r) => {
                assert!(!r.cards.is_empty() && r.cards.len() <= 3);
                rows.extend(r.cards.iter().map(|c| c.row));
            }
            PlanEvent::Rejected(r) => {
                assert!(!r.reasons.is_empty());
                rows.push(r.row);
            }
        }
    }
    rows.sort_unstable();
    assert_eq!(rows, (1..=records.len() as u64).collect::<Vec<_>>());
}
