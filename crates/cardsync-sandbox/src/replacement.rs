//! What a card becomes when the emulator reports it replaced: the documented test cards'
//! `updated_card` and `updated_expiry` results, and the issuer side's reissues and renewals,
//! all follow this one rule.

use cardsync_core::{Expiry, luhn_check_digit};

/// The new card number an `updated_card` result carries: the same first six digits (so the
/// same brand), every digit between them and the check digit moved up by one (9 becomes 0), and
/// a new check digit.
pub fn replacement_card(card: &str) -> String {
    let body = &card[..card.len() - 1];
    let mut out: String = body
        .char_indices()
        .map(|(i, c)| {
            if i < 6 {
                c
            } else {
                char::from(b'0' + (c as u8 - b'0' + 1) % 10)
            }
        })
        .collect();
    out.push(char::from(luhn_check_digit(&out).expect("digits")));
    out
}

/// The new expiry an `updated_card` or `updated_expiry` result carries: three years later,
/// same month, at most December 2099.
pub fn replacement_expiry(exp: Expiry) -> Expiry {
    Expiry::new((exp.year() + 3).min(2099), exp.month()).expect("a valid month")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_keeps_the_first_six_digits_and_passes_the_luhn_check() {
        let new = replacement_card("4457010000000009");
        assert_eq!(&new[..6], "445701");
        assert_ne!(new, "4457010000000009");
        assert!(cardsync_core::Pan::parse(&new).is_ok());
        let exp = Expiry::parse("01/50").unwrap();
        assert_eq!(replacement_expiry(exp), Expiry::parse("01/53").unwrap());
        let late = Expiry::parse("12/98").unwrap();
        assert_eq!(replacement_expiry(late), Expiry::parse("12/99").unwrap());
    }
}
