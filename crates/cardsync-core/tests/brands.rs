//! Brand detection at every range edge, per-brand lengths, and the documented test cards.

mod common;

use cardsync_core::{Brand, Pan, PanError, SANDBOX_TEST_CARDS};
use common::card;

fn brand_of(prefix: &str, len: usize) -> Result<Brand, PanError> {
    Pan::parse(&card(prefix, len)).map(|p| p.brand())
}

#[test]
fn range_edges() {
    use Brand::*;
    let cases: &[(&str, Brand)] = &[
        ("1", Unknown),
        ("2199", Unknown),
        ("2200", Mir),
        ("2204", Mir),
        ("2205", Unknown),
        ("2220", Unknown),
        ("2221", Mastercard),
        ("2720", Mastercard),
        ("2721", Unknown),
        ("2999", Unknown),
        ("300", DinersClub),
        ("305", DinersClub),
        ("306", Unknown),
        ("3399", Unknown),
        ("34", AmericanExpress),
        ("3527", Unknown),
        ("3528", Jcb),
        ("3589", Jcb),
        ("3590", Unknown),
        ("36", DinersClub),
        ("37", AmericanExpress),
        ("38", DinersClub),
        ("39", DinersClub),
        ("4", Visa),
        ("4999", Visa),
        ("5099", Unknown),
        ("51", Mastercard),
        ("55", Mastercard),
        ("56", Unknown),
        ("6010", Unknown),
        ("6011", Discover),
        ("6012", Unknown),
        ("6199", Unknown),
        ("62", UnionPay),
        ("622125", UnionPay),
        ("622126", Discover),
        ("622925", Discover),
        ("622926", UnionPay),
        ("6299", UnionPay),
        ("6300", Unknown),
        ("6439", Unknown),
        ("644", Discover),
        ("649", Discover),
        ("65", Discover),
        ("6599", Discover),
        ("66", Unknown),
        ("7", Unknown),
        ("9", Unknown),
    ];
    for &(prefix, brand) in cases {
        let len = match brand {
            AmericanExpress => 15,
            _ => 16,
        };
        assert_eq!(brand_of(prefix, len), Ok(brand), "prefix {prefix}");
        assert_eq!(
            Brand::from_prefix(&card(prefix, len)),
            brand,
            "prefix {prefix}"
        );
    }
}

#[test]
fn lengths_per_brand() {
    use Brand::*;
    let ok: &[(&str, &[usize])] = &[
        ("4", &[13, 16, 19]),
        ("51", &[16]),
        ("2221", &[16]),
        ("34", &[15]),
        ("37", &[15]),
        ("6011", &[16, 17, 18, 19]),
        ("3528", &[16, 17, 18, 19]),
        ("300", &[14, 15, 16, 17, 18, 19]),
        ("36", &[14, 15, 16, 17, 18, 19]),
        ("38", &[16, 17, 18, 19]),
        ("62", &[16, 17, 18, 19]),
        ("2200", &[16, 17, 18, 19]),
        ("9", &[12, 13, 14, 15, 16, 17, 18, 19]),
    ];
    for &(prefix, lengths) in ok {
        let brand = Brand::from_prefix(&card(prefix, 16));
        for len in 12..=19 {
            let got = brand_of(prefix, len);
            if lengths.contains(&len) {
                assert!(got.is_ok(), "{prefix} at {len}: {got:?}");
            } else {
                assert_eq!(
                    got,
                    Err(PanError::BrandLength { brand, len }),
                    "{prefix} at {len}"
                );
            }
        }
    }
    assert_eq!(
        brand_of("37", 16),
        Err(PanError::BrandLength {
            brand: AmericanExpress,
            len: 16
        })
    );
}

#[test]
fn every_documented_test_card_parses_with_its_brand() {
    assert_eq!(SANDBOX_TEST_CARDS.len(), 19);
    for tc in SANDBOX_TEST_CARDS {
        let pan = Pan::parse(tc.card).unwrap_or_else(|e| panic!("{}: {e}", tc.card));
        assert_eq!(pan.brand(), tc.brand, "{}", tc.card);
        assert_eq!(pan.expose().as_str(), tc.card);
        if let Some(exp) = tc.exp {
            assert_eq!(cardsync_core::Expiry::parse(exp).unwrap().to_string(), exp);
        }
    }
}

#[test]
fn the_documents_luhn_invalid_result_card_is_rejected_as_input() {
    // CardSync returns this number in a results example; it is not something we may send.
    assert_eq!(Pan::parse("311111111111111"), Err(PanError::Luhn));
}

#[test]
fn separators() {
    let ok = [
        "4457 0100 0000 0009",
        "4457-0100-0000-0009",
        "445701 0000000009",
        "3421 323355 66772",
    ];
    for s in ok {
        assert!(Pan::parse(s).is_ok(), "{s}");
    }
    let bad = [
        (" 4457010000000009", PanError::Separator { position: 1 }),
        ("4457010000000009 ", PanError::Separator { position: 17 }),
        ("4457--010000000009", PanError::Separator { position: 6 }),
        ("4457 0100-0000 0009", PanError::Separator { position: 10 }),
        ("4457\t0100 0000 0009", PanError::NonDigit { position: 5 }),
        ("4457.0100.0000.0009", PanError::NonDigit { position: 5 }),
        ("४४५७010000000009", PanError::NonDigit { position: 1 }),
        ("44570100000000０9", PanError::NonDigit { position: 15 }),
        ("-", PanError::Separator { position: 1 }),
        ("", PanError::Empty),
        ("44570100000", PanError::Length { len: 11 }),
        ("44570100000000000000", PanError::Length { len: 20 }),
    ];
    for (s, err) in bad {
        assert_eq!(Pan::parse(s), Err(err), "{s:?}");
    }
}
