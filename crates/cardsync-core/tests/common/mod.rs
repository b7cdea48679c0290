//! Helpers shared by the integration tests.

/// A Luhn-valid card number of `len` digits starting with `prefix`, zeros in between.
pub(crate) fn card(prefix: &str, len: usize) -> String {
    let mut s = prefix.to_owned();
    while s.len() < len - 1 {
        s.push('0');
    }
    let check = cardsync_core::luhn_check_digit(&s).expect("digits");
    s.push(char::from(check));
    s
}
