//! A hand-written reader for the common shape of a results response, tried before serde.
//!
//! Results bodies are the large ones (a 10,000-card body is about 1 MB), and almost all of
//! them have one plain shape: the envelope's three keys, `data` with the documented keys, and
//! cards whose fields are strings without escapes. [`results`] reads exactly that shape,
//! straight from the bytes, and returns `None` for anything else (an escape, a number where a
//! string usually is, an unknown key, a syntax error, …), so that the serde path decides: it
//! has the full leniency rules and the error reporting. Whatever this reader accepts, it reads
//! to the value the serde path gives; `tests` check that on generated bodies, and the
//! `results_fast` fuzz target on any input. It never produces an error of its own.
//!
//! The counters (`stats`) are read by serde from their own slice of the body: they are a small
//! part of it, and their rules (both spellings, repeated keys, unknown counters) stay written
//! once.

use cardsync_core::UpdateStatus;

use crate::model::{BatchData, Envelope, ResultCard};
use crate::{ReportedStats, ReturnedCard};

/// Deeper nesting than this inside `stats` is left to serde.
const MAX_DEPTH: usize = 64;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Where the first `"`, `\\` or control character of `rest` is, eight bytes at a time.
#[inline]
fn string_end(rest: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(chunk) = rest.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().ok()?);
        // A byte below 0x20, or equal to a quote or a backslash (zero after the XOR), sets
        // its high bit here. A borrow can also flag a byte above a flagged one, never below,
        // so the lowest flag is exact.
        let below = |y: u64, n: u64| y.wrapping_sub(n * ONES) & !y & HIGHS;
        let found = below(x, 0x20) | below(x ^ (0x22 * ONES), 1) | below(x ^ (0x5C * ONES), 1);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    rest[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// A string with no escape and no control character, without its quotes.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        self.string_rest()
    }

    /// `null`.
    fn null(&mut self) -> Option<()> {
        self.peek()?;
        if self.bytes[self.at..].starts_with(b"null") {
            self.at += 4;
            Some(())
        } else {
            None
        }
    }

    /// A string or `null`, as the lenient text fields read them.
    fn text(&mut self) -> Option<Option<&'a str>> {
        match self.peek()? {
            b'"' => self.string().map(Some),
            b'n' => self.null().map(|()| None),
            _ => None,
        }
    }

    /// The members of an object: `member` reads each value after its key; `None` stops.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Skips one value of plain shape (no escapes in strings), to find where it ends; the
    /// slice is then read by serde, which checks it.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip(depth + 1)),
            b'[' => {
                self.at += 1;
                if self.peek()? == b']' {
                    self.at += 1;
                    return Some(());
                }
                loop {
                    self.skip(depth + 1)?;
                    match self.peek()? {
                        b',' => self.at += 1,
                        b']' => {
                            self.at += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => {
                let start = self.at;
                while let Some(b) = self.bytes.get(self.at) {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.at += 1;
                }
                (self.at > start).then_some(())
            }
        }
    }

    /// The bytes `lit` exactly, with no whitespace before them.
    #[inline]
    fn lit(&mut self, lit: &[u8]) -> Option<()> {
        let end = self.at + lit.len();
        (self.bytes.get(self.at..end)? == lit).then(|| self.at = end)
    }

    /// The rest of a string whose opening quote has been read: no escape and no control
    /// character, up to the closing quote (read too).
    #[inline]
    fn string_rest(&mut self) -> Option<&'a str> {
        let start = self.at;
        let rest = &self.bytes[start..];
        let len = string_end(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // Quotes are ASCII, so both ends are character boundaries of the text.
        self.text.get(start..start + len)
    }

    /// A `"key":"value` member (with its value's closing quote), `key` given with its quotes
    /// and colon and the value's opening quote, as in `"id":"`.
    #[inline]
    fn member(&mut self, key: &[u8]) -> Option<&'a str> {
        self.lit(key)?;
        self.string_rest()
    }

    /// A card exactly as servers write one, with no whitespace and the members in this order:
    /// `se_number` (optional), `id`, `card`, `exp` (optional), `status` (optional). Most cards
    /// of most bodies are written so; any other card is read by [`Scanner::card`]'s general
    /// path.
    fn card_as_written(&mut self) -> Option<ResultCard> {
        self.lit(b"{")?;
        let se_number = if self.bytes.get(self.at + 1) == Some(&b's') {
            let se = self.member(b"\"se_number\":\"")?;
            self.lit(b",")?;
            Some(se)
        } else {
            None
        };
        let id = self.member(b"\"id\":\"")?;
        let card = self.member(b",\"card\":\"")?;
        let exp = match self.bytes.get(self.at + 2) {
            Some(b'e') => Some(self.member(b",\"exp\":\"")?),
            _ => None,
        };
        let status = match self.bytes.get(self.at + 2) {
            Some(b's') => Some(self.member(b",\"status\":\"")?),
            _ => None,
        };
        self.lit(b"}")?;
        Some(ResultCard {
            id: id.to_owned(),
            card: ReturnedCard::copied(card),
            exp: exp.map(str::to_owned),
            status: status.map(UpdateStatus::parse),
            se_number: se_number.map(str::to_owned),
        })
    }

    fn card(&mut self) -> Option<ResultCard> {
        self.ws();
        let start = self.at;
        if let Some(c) = self.card_as_written() {
            return Some(c);
        }
        self.at = start;
        let mut c = ResultCard::default();
        self.object(|s, key| {
            let value = s.text()?;
            match key {
                "id" => c.id = value.unwrap_or_default().to_owned(),
                "card" => c.card = ReturnedCard::copied(value.unwrap_or_default()),
                "exp" => c.exp = value.map(str::to_owned),
                "status" => c.status = value.map(UpdateStatus::parse),
                "se_number" | "se" => c.se_number = value.map(str::to_owned),
                _ => return None,
            }
            Some(())
        })?;
        Some(c)
    }

    fn cards(&mut self) -> Option<Vec<ResultCard>> {
        if self.peek()? == b'n' {
            return self.null().map(|()| Vec::new());
        }
        self.eat(b'[')?;
        // About 90 bytes a card: enough room at once for a body of plain cards.
        let mut cards = Vec::with_capacity((self.bytes.len() - self.at) / 80);
        if self.peek()? == b']' {
            self.at += 1;
            return Some(cards);
        }
        loop {
            cards.push(self.card()?);
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(cards);
                }
                _ => return None,
            }
        }
    }

    fn stats(&mut self) -> Option<ReportedStats> {
        self.peek()?;
        let start = self.at;
        self.skip(0)?;
        serde_json::from_str(&self.text[start..self.at]).ok()
    }

    fn data(&mut self) -> Option<Option<BatchData>> {
        if self.peek()? == b'n' {
            return self.null().map(|()| None);
        }
        let mut d = BatchData::default();
        self.object(|s, key| {
            match key {
                "batch_id" => d.batch_id = s.text()?.map(str::to_owned),
                "status" => d.status = s.text()?.map(str::to_owned),
                "created_at" => d.created_at = s.text()?.map(str::to_owned),
                "updated_at" => d.updated_at = s.text()?.map(str::to_owned),
                "cards" => d.cards = s.cards()?,
                "stats" => d.stats = s.stats()?,
                _ => return None,
            }
            Some(())
        })?;
        Some(Some(d))
    }
}

/// Reads a results body of the plain shape; `None` for anything else (see the module docs).
pub(crate) fn results(text: &str) -> Option<Envelope<BatchData>> {
    let mut s = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    let mut e = Envelope {
        status: None,
        message: None,
        data: None,
    };
    s.object(|s, key| {
        match key {
            "status" => e.status = s.text()?.map(str::to_owned),
            "message" | "msg" => e.message = s.text()?.map(str::to_owned),
            "data" => e.data = s.data()?,
            _ => return None,
        }
        Some(())
    })?;
    s.ws();
    (s.at == s.bytes.len()).then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde path's reading of a body, for comparison.
    fn serde(text: &str) -> Option<Envelope<BatchData>> {
        serde_json::from_str(text).ok()
    }

    /// The fast path agrees with serde whenever it answers.
    fn agree(text: &str) -> bool {
        match results(text) {
            Some(fast) => serde(text) == Some(fast),
            None => true,
        }
    }

    #[test]
    fn string_end_finds_the_first_quote_backslash_or_control_character() {
        let plain = |b: u8| b != b'"' && b != b'\\' && b >= 0x20;
        // Every position of every special byte, after every kind of byte (borrows from a
        // byte below must not hide or invent a match), in inputs of every length to 24.
        for len in 0..24 {
            for at in 0..=len {
                for special in [b'"', b'\\', 0x00, 0x1F] {
                    for filler in [b'a', 0x20, 0x21, 0x23, 0x5B, 0x5D, 0x7F, 0x80, 0xFF, 0x01] {
                        let mut bytes = vec![filler; len];
                        if at < len {
                            bytes[at] = special;
                        }
                        let expected = bytes.iter().position(|&b| !plain(b));
                        assert_eq!(string_end(&bytes), expected, "{bytes:?}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn string_end_agrees_with_a_byte_loop(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let expected = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            proptest::prop_assert_eq!(string_end(&bytes), expected);
        }
    }

    #[test]
    fn plain_bodies_take_the_fast_path_and_agree() {
        for body in [
            r#"{"status":"success","message":"success","data":{"batch_id":"b1","status":"completed","cards":[{"id":"a","card":"4457010000000009","exp":"01/50","status":"updated_card"},{"id":"b","card":"311111111111111","se":"1234567890"}],"stats":{"number_submitted":2,"closed":1,"contact_closed":3,"x":7},"created_at":"t","updated_at":null}}"#,
            " { \"msg\" : null , \"data\" : { \"cards\" : [ ] , \"stats\" : null } } \n",
            r#"{"data":{"cards":null,"status":"queued","cards":[{"id":"x","id":"y","status":"contact_closed","status":"weird"}]}}"#,
            r#"{"data":null}"#,
            "{}",
        ] {
            let fast = results(body).unwrap_or_else(|| panic!("not taken: {body}"));
            assert_eq!(serde(body), Some(fast), "{body}");
        }
    }

    #[test]
    fn cards_written_otherwise_are_read_by_the_general_path() {
        // Each card is near the shape servers write, but off it somewhere: the card is read
        // member by member instead, to the same value serde reads.
        for card in [
            r#"{"id":"a","card":"4457010000000009","exp":"01/50","status":"valid" }"#,
            r#"{ "id":"a","card":"4457010000000009"}"#,
            r#"{"id":"a","card":"4457010000000009","status":null}"#,
            r#"{"id":"a","card":"4457010000000009","exp":null,"status":"valid"}"#,
            r#"{"se":"1234567890","id":"a","card":"311111111111111"}"#,
            r#"{"se_number":"1234567890","id":"a","card":"311111111111111","se_number":"1"}"#,
            r#"{"card":"4457010000000009","id":"a"}"#,
            r#"{"id":"a","card":"4457010000000009","status":"valid","exp":"01/50"}"#,
            r#"{"id":"a","card":"4457010000000009","exp":"01/50","status":"valid","status":"closed"}"#,
            r#"{"id":"a","exp":"01/50"}"#,
            r#"{}"#,
        ] {
            for body in [
                format!(r#"{{"data":{{"cards":[{card}]}}}}"#),
                format!(r#"{{"data":{{"cards":[{card},{card}]}}}}"#),
                format!(
                    r#"{{"data":{{"cards":[{{"id":"w","card":"4457010000000009"}},{card}]}}}}"#
                ),
            ] {
                let fast = results(&body).unwrap_or_else(|| panic!("not taken: {body}"));
                assert_eq!(serde(&body), Some(fast), "{body}");
            }
        }
    }

    #[test]
    fn anything_else_is_left_to_serde() {
        for body in [
            r#"{"data":{"cards":[{"id":"a\"b"}]}}"#,
            r#"{"data":{"cards":[{"id":7}]}}"#,
            r#"{"data":{"cards":[{"other":"x"}]}}"#,
            r#"{"data":{"cards":[{"id":"a","card":"1","exp":"01/50","status":"valid","other":1}]}}"#,
            r#"{"data":{"cards":[{"id":"a","card":"1","exp":"01/50","status":"valid"}"#,
            r#"{"data":{"cards":[{"id":"a","card":"1","exp":"01/50","status":"va"#,
            r#"{"data":{"cards":[{"id":"a"},]}}"#,
            r#"{"data":{"stats":{"closed":1.5.2}}}"#,
            r#"{"data":{"stats":{"closed":"\u0031"}}}"#,
            r#"{"extra":1,"data":{}}"#,
            r#"{"data":{}} x"#,
            r#"{"data":{"cards":[{"id":"a"}]"#,
            "{\"data\":{\"cards\":[{\"id\":\"tab\there\"}]}}",
            "[]",
            "",
        ] {
            assert!(results(body).is_none(), "{body}");
            assert!(agree(body));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Bodies the server side writes, with any text in the cards: the fast path takes
        /// those without escapes, and reads them as serde does.
        #[test]
        fn server_written_bodies_agree(
            cards in proptest::collection::vec(
                ("\\PC{0,10}|[a-z0-9-]{1,12}", "[0-9]{12,19}|\\PC{0,4}", proptest::option::of("[0-9/]{0,5}"),
                 proptest::option::of("updated_card|closed|x[a-z]{0,4}"), proptest::option::of("[0-9]{10}")),
                0..20,
            ),
            amex in proptest::bool::ANY,
        ) {
            let mut r = crate::Results::new(crate::BatchState::Completed);
            r.batch_id = Some("b1".into());
            for (id, card, exp, status, se) in cards {
                r.cards.push(ResultCard {
                    id,
                    card: ReturnedCard::new(card),
                    exp,
                    status: status.as_deref().map(UpdateStatus::parse),
                    se_number: se,
                });
            }
            let spelling = if amex { crate::server::Spelling::Amex } else { crate::server::Spelling::Universal };
            let body = String::from_utf8(crate::server::results(&r, spelling)).unwrap();
            let escapes = body.contains('\\');
            match results(&body) {
                Some(fast) => proptest::prop_assert_eq!(serde(&body), Some(fast)),
                None => proptest::prop_assert!(escapes, "plain body not taken: {}", body),
            }
        }
    }

    #[test]
    fn truncations_of_a_plain_body_never_disagree() {
        let body = r#"{"status":"success","data":{"status":"completed","cards":[{"id":"a","card":"4457010000000009","exp":"01/50","status":"valid"}],"stats":{"valid":1,"number_submitted":1}}}"#;
        for end in 0..body.len() {
            assert!(agree(&body[..end]), "{}", &body[..end]);
        }
    }
}
