//! Property tests of parsing, masking, expiry and planning.

mod common;

use std::collections::BTreeSet;

use cardsync_core::{
    AsRecord, Brand, Expiry, MAX_CARDS_PER_REQUEST, Pan, PanError, PlanEvent, PlanOptions, Planner,
    RecordBuf, RouteKind, plan,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// On digits only, Pan::parse fails the Luhn check exactly when the `luhn` crate does.
    #[test]
    fn luhn_agrees_with_the_luhn_crate(s in "[0-9]{12,19}") {
        let ours = Pan::parse(&s);
        prop_assert_eq!(ours == Err(PanError::Luhn), !luhn::valid(&s), "{:?}", ours);
    }

    /// Every prefix has exactly one check digit that makes it valid.
    #[test]
    fn exactly_one_check_digit(prefix in "[0-9]{11,18}") {
        let valid = (0..10)
            .filter(|d| Pan::parse(&format!("{prefix}{d}")) != Err(PanError::Luhn))
            .count();
        prop_assert_eq!(valid, 1);
    }

    /// `luhn_check_digit` completes any prefix into a number the `luhn` crate accepts.
    #[test]
    fn check_digit_agrees_with_the_luhn_crate(prefix in "[0-9]{1,18}") {
        let d = cardsync_core::luhn_check_digit(&prefix).unwrap();
        let full = format!("{prefix}{}", char::from(d));
        prop_assert!(luhn::valid(&full), "{}", full);
    }

    /// Neither a Pan's Debug nor any error's Debug or Display holds the full number.
    #[test]
    fn text_never_holds_the_number(s in "[0-9]{12,19}", sep in prop::sample::select(vec!["", " ", "-"])) {
        let grouped: String = s
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(sep);
        let parsed = Pan::parse(&grouped);
        let texts = match &parsed {
            Ok(pan) => vec![format!("{pan:?}"), format!("{:?}", pan.expose()), pan.masked().to_string()],
            Err(e) => vec![format!("{e:?}"), e.to_string()],
        };
        for text in texts {
            prop_assert!(!text.contains(&s), "{} leaks in {}", s, text);
            let digits: String = text.chars().filter(char::is_ascii_digit).collect();
            prop_assert!(digits.len() <= 10, "{}", text);
        }
    }

    /// Parsing never panics and brand detection is total.
    #[test]
    fn parse_is_total(s in "\\PC{0,40}") {
        let _ = Pan::parse(&s);
        let _ = Brand::from_prefix(&s);
        let _ = Expiry::parse(&s);
        let _ = cardsync_core::mask_card_text(&s);
    }

    /// Formatting an expiry and parsing it again gives it back.
    #[test]
    fn expiry_format_parse_identity(year in 2000u16..=2099, month in 1u8..=12) {
        let exp = Expiry::new(year, month).unwrap();
        let text = exp.to_string();
        prop_assert_eq!(text.len(), 5);
        prop_assert_eq!(Expiry::parse(&text), Ok(exp));
    }
}

#[derive(Clone, Debug)]
enum Row {
    Visa(u32),
    Amex(u32, Option<u8>),
    Bad,
    Jcb,
    DuplicateOfPrevious,
}

fn row_strategy() -> impl Strategy<Value = Row> {
    prop_oneof![
        6 => any::<u32>().prop_map(Row::Visa),
        3 => (any::<u32>(), prop::option::of(0u8..3)).prop_map(|(n, se)| Row::Amex(n, se)),
        1 => Just(Row::Bad),
        1 => Just(Row::Jcb),
        1 => Just(Row::DuplicateOfPrevious),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Planning never exceeds the request size, and every row ends up exactly once: in a
    /// request or rejected.
    #[test]
    fn planning_conserves_rows(rows in prop::collection::vec(row_strategy(), 0..400), max in 1usize..50) {
        let mut records: Vec<RecordBuf> = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let id = format!("r{i}");
            let record = match row {
                Row::Visa(n) => RecordBuf::new(id, common::card(&format!("4{n:010}"), 16), "01/50"),
                Row::Amex(n, se) => RecordBuf::new(id, common::card(&format!("37{n:010}"), 15), "02/2051")
                    .with_se_number(se.map(|s| format!("100000000{s}"))),
                Row::Bad => RecordBuf::new(id, "4457010000000008", "13/50"),
                Row::Jcb => RecordBuf::new(id, common::card("3528", 16), "01/50"),
                Row::DuplicateOfPrevious => match records.last() {
                    Some(prev) => prev.clone(),
                    None => RecordBuf::new(id, "", ""),
                },
            };
            records.push(record);
        }
        let options = PlanOptions::default()
            .with_max_per_request(max)
            .unwrap()
            .with_default_se_number(None);
        let mut seen = BTreeSet::new();
        let mut seqs = Vec::new();
        for event in plan(records.iter().cloned(), options) {
            match event {
                PlanEvent::Request(r) => {
                    prop_assert!(!r.cards.is_empty() && r.cards.len() <= max);
                    prop_assert!(r.cards.len() <= MAX_CARDS_PER_REQUEST);
                    seqs.push(r.seq);
                    for c in &r.cards {
                        prop_assert!(seen.insert(c.row), "row {} twice", c.row);
                        let brand = c.pan.brand();
                        prop_assert_eq!(r.route.kind() == RouteKind::Subscription, brand == Brand::AmericanExpress);
                        prop_assert_eq!(c.id.as_str(), records[c.row as usize - 1].id.as_str());
                    }
                }
                PlanEvent::Rejected(r) => {
                    prop_assert!(!r.reasons.is_empty());
                    prop_assert!(seen.insert(r.row), "row {} twice", r.row);
                }
                other => prop_assert!(false, "unexpected event {:?}", other),
            }
        }
        prop_assert_eq!(seen.len(), records.len());
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        prop_assert_eq!(seqs, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Handling records in blocks gives the same verdicts and requests, in the same order, as
    /// handling them one by one, duplicates across and within blocks included.
    #[test]
    fn blocks_agree_with_single_records(
        rows in prop::collection::vec((0u8..12, 0u8..12, 0u8..6), 0..300),
        block in 1usize..40,
        max in 1usize..20,
    ) {
        // Small pools of ids and cards, so that duplicates are common.
        let records: Vec<RecordBuf> = rows
            .iter()
            .map(|&(id, card, kind)| {
                let id = if id == 0 { String::new() } else { format!("id{id}") };
                match kind {
                    0 => RecordBuf::new(id, common::card(&format!("37{card:010}"), 15), "02/2051")
                        .with_se_number(Some(format!("100000000{}", card % 2))),
                    1 => RecordBuf::new(id, "4457010000000008", "01/50"),
                    2 => RecordBuf::new(id, common::card(&format!("4{card:010}"), 16), "13/50"),
                    _ => RecordBuf::new(id, common::card(&format!("4{card:010}"), 16), "01/50"),
                }
            })
            .collect();
        let options = PlanOptions::default().with_max_per_request(max).unwrap();

        let mut one = Planner::new(options.clone());
        let mut expected = Vec::new();
        for r in &records {
            expected.push(format!("{:?}", one.handle_record(r.as_record())));
            while let Some(request) = one.poll_request() {
                expected.push(format!("{request:?}"));
            }
        }

        let mut blocks = Planner::new(options);
        let mut got = Vec::new();
        for chunk in records.chunks(block) {
            let chunk: Vec<_> = chunk.iter().map(AsRecord::as_record).collect();
            blocks.handle_records(&chunk, |planner, _, verdict| {
                got.push(format!("{verdict:?}"));
                while let Some(request) = planner.poll_request() {
                    got.push(format!("{request:?}"));
                }
            });
        }
        prop_assert_eq!(got, expected);
    }
}

/// A seen store that records the fingerprints it is asked about.
#[derive(Clone, Default)]
struct Recording(std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

impl cardsync_core::SeenStore for Recording {
    fn claim(&mut self, _: cardsync_core::SeenKind, fingerprint: u64, _: u64) -> Option<u64> {
        self.0.lock().unwrap().push(fingerprint);
        None
    }
}

fn fingerprints(options: PlanOptions) -> Vec<u64> {
    let store = Recording::default();
    let mut planner = Planner::with_seen_store(options, Box::new(store.clone()));
    for (id, card) in [("a", "4457010000000009"), ("b", "5112010000000003")] {
        planner.handle_record(cardsync_core::Record::new(id, card, "01/50"));
    }
    store.0.lock().unwrap().clone()
}

#[test]
fn fingerprints_are_reproducible_with_a_fixed_key_and_differ_by_key() {
    let fixed = || PlanOptions::default().with_fingerprint_key(42);
    assert_eq!(fingerprints(fixed()), fingerprints(fixed()));
    assert_eq!(fingerprints(fixed()).len(), 4);
    assert_ne!(
        fingerprints(fixed()),
        fingerprints(PlanOptions::default().with_fingerprint_key(43))
    );
    // Random by default, and never shown.
    assert_ne!(
        fingerprints(PlanOptions::default()),
        fingerprints(PlanOptions::default())
    );
    assert!(!format!("{:?}", fixed()).contains("42"));
}
