//! Lenient JSON building blocks: keys that may be escaped, scalars that may be strings or
//! numbers, counters that may be anything countable.
//!
//! Objects are read with hand-written visitors rather than `#[derive(Deserialize)]`, because a
//! derived struct rejects duplicate keys and the documents' own webhook examples have them.
//! The rules every visitor follows: unknown keys are skipped, a repeated key's later value wins
//! (for counters, the larger value wins; see [`crate::ReportedStats`]), and `null` counts as
//! absent.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, Visitor};

/// An object key, borrowed from the input when it has no escapes.
pub(crate) struct Key<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Text that the server may send as a string, a number or a boolean; `null` is `None`.
pub(crate) struct Text(pub(crate) Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(Some(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A word that is only looked at, not kept: borrowed from the input when it has no escapes,
/// so reading a status costs no allocation. Numbers and booleans are read as their text.
pub(crate) struct Word<'de>(pub(crate) Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for Word<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Word<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Word<'de>, E> {
                Ok(Word(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Word<'de>, E> {
                Ok(Word(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Word<'de>, E> {
                Ok(Word(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Word<'de>, E> {
                Ok(Word(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Word<'de>, E> {
                Ok(Word(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Word<'de>, E> {
                Ok(Word(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Word<'de>, E> {
                Ok(Word(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A counter: a non-negative integer, an integral float, or a string of digits. `null` is 0,
/// and so is a negative number (a counter cannot be negative; one bad counter must not cost a
/// response of ten thousand cards).
pub(crate) struct Counter(pub(crate) u64);

impl<'de> Deserialize<'de> for Counter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Counter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Counter, E> {
                Ok(Counter(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Counter, E> {
                Ok(Counter(u64::try_from(v).unwrap_or(0)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Counter, E> {
                if v.fract() == 0.0 && v >= 0.0 && v <= u64::MAX as f64 {
                    Ok(Counter(v as u64))
                } else if v < 0.0 {
                    Ok(Counter(0))
                } else {
                    Err(E::custom("expected a whole count"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Counter, E> {
                v.trim()
                    .parse()
                    .map(Counter)
                    .map_err(|_| E::custom("expected a count"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Counter, E> {
                Ok(Counter(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// Implements `Deserialize` for a struct read from a JSON object by the rules of this module:
/// each listed key (with every spelling the documents use, `"message" | "msg"`) runs its
/// statement, which reads the value with `$map` into `$out` (a repeated key's later value
/// wins); unknown keys are skipped; the struct starts from its `Default`. The one place object
/// leniency is written for the documents' plain objects; the counters (where the larger of
/// repeated values wins) and the envelope are read by their own visitors.
macro_rules! lenient_object {
    ($ty:ty, $expecting:literal, |$map:ident, $out:ident| {
        $($($key:literal)|+ => $set:expr,)*
    }) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut $map: A,
                    ) -> Result<$ty, A::Error> {
                        let mut $out = <$ty as Default>::default();
                        while let Some($crate::lenient::Key(k)) = $map.next_key()? {
                            match k.as_ref() {
                                $($($key)|+ => {
                                    $set;
                                })*
                                _ => $crate::lenient::skip(&mut $map)?,
                            }
                        }
                        Ok($out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}
pub(crate) use lenient_object;

/// Reads an optional value that may be `null`.
pub(crate) fn opt<'de, A, T>(map: &mut A) -> Result<Option<T>, A::Error>
where
    A: de::MapAccess<'de>,
    T: Deserialize<'de>,
{
    map.next_value::<Option<T>>()
}

/// Skips a value.
pub(crate) fn skip<'de, A: de::MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_value::<IgnoredAny>().map(|_| ())
}

/// Reads a text value (string, number, boolean or null).
pub(crate) fn text<'de, A: de::MapAccess<'de>>(map: &mut A) -> Result<Option<String>, A::Error> {
    map.next_value::<Text>().map(|t| t.0)
}

/// Writes `s` as a JSON string, escaping only what JSON requires. Plain ASCII, by far the
/// common case for ids and SE numbers, is copied in one go.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(bytes);
    } else {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x00..=0x1F => b"",
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            if escape.is_empty() {
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
            } else {
                out.extend_from_slice(escape);
            }
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_match_serde_json() {
        for s in [
            "plain",
            "quote\"back\\slash",
            "nl\ncr\rtab\t",
            "\u{1}\u{1f}",
            "é ✓",
            "",
        ] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn counters_are_lenient() {
        let read = |s: &str| serde_json::from_str::<Counter>(s).map(|c| c.0).ok();
        assert_eq!(read("7"), Some(7));
        assert_eq!(read("-3"), Some(0));
        assert_eq!(read("7.0"), Some(7));
        assert_eq!(read("\" 12 \""), Some(12));
        assert_eq!(read("null"), Some(0));
        assert_eq!(read("7.5"), None);
        assert_eq!(read("\"x\""), None);
        assert_eq!(read("[]"), None);
    }
}
