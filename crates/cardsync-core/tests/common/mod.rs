//! Helpers shared by the integration tests.

/// The digit that makes `prefix` followed by it pass the Luhn check.
pub(crate) fn check_digit(prefix: &str) -> char {
    let sum: u32 = prefix
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
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

/// A Luhn-valid card number of `len` digits starting with `prefix`, zeros in between.
pub(crate) fn card(prefix: &str, len: usize) -> String {
    let mut s = prefix.to_owned();
    while s.len() < len - 1 {
        s.push('0');
    }
    s.push(check_digit(&s));
    s
}
