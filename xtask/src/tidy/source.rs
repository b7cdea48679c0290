//! Rust source as the tidy checks read it: the code with comments and the insides of string
//! and character literals blanked out (every byte kept at its offset, newlines kept, so that
//! offsets and line numbers stay those of the file), the string literals on the side, and
//! `#[cfg(test)]` items removed on request. Enough of a lexer for checks that look for names
//! and paths; not a parser.

/// A lexed Rust file.
pub(crate) struct Source {
    /// The file as written.
    text: String,
    /// The code: comments and literal contents replaced by spaces (newlines kept).
    code: String,
    /// The string literals (their contents as written, escapes not undone) and where each
    /// starts.
    literals: Vec<(usize, String)>,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The length of the UTF-8 character starting with byte `b`.
fn char_len(b: u8) -> usize {
    match b {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

impl Source {
    /// Lexes `text`.
    pub(crate) fn new(text: &str) -> Source {
        let bytes = text.as_bytes();
        let mut code = bytes.to_vec();
        let mut literals = Vec::new();
        let blank = |code: &mut Vec<u8>, from: usize, to: usize| {
            for b in &mut code[from..to.min(bytes.len())] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        };
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let next = bytes.get(i + 1).copied();
            let prev = i.checked_sub(1).map(|p| bytes[p]);
            if b == b'/' && next == Some(b'/') {
                let end = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |p| i + p);
                blank(&mut code, i, end);
                i = end;
            } else if b == b'/' && next == Some(b'*') {
                let (mut j, mut depth) = (i + 2, 1);
                while j < bytes.len() && depth > 0 {
                    if bytes[j] == b'/' && bytes.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if bytes[j] == b'*' && bytes.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut code, i, j);
                i = j;
            } else if b == b'r'
                && !prev.is_some_and(|p| is_ident(p) && p != b'b' && p != b'c')
                && matches!(next, Some(b'"' | b'#'))
                && {
                    let hashes = bytes[i + 1..].iter().take_while(|&&c| c == b'#').count();
                    bytes.get(i + 1 + hashes) == Some(&b'"')
                }
            {
                // A raw string: r"…", r#"…"#, with any number of hashes.
                let hashes = bytes[i + 1..].iter().take_while(|&&c| c == b'#').count();
                let start = i + 2 + hashes;
                let closing: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let end = bytes[start..]
                    .windows(closing.len())
                    .position(|w| w == closing.as_slice())
                    .map_or(bytes.len(), |p| start + p);
                literals.push((start - 1, text[start..end].to_owned()));
                blank(&mut code, start, end);
                i = end + closing.len();
            } else if b == b'"' {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                let end = j.min(bytes.len());
                literals.push((i, text[start..end].to_owned()));
                blank(&mut code, start, end);
                i = end + 1;
            } else if b == b'\'' {
                // A character literal ('x', '\n', '\u{…}') or a lifetime or label ('a).
                let end = if next == Some(b'\\') {
                    bytes[i + 2..]
                        .iter()
                        .skip(1)
                        .position(|&c| c == b'\'')
                        .map(|p| i + 3 + p)
                } else {
                    next.map(|n| i + 1 + char_len(n))
                        .filter(|&e| bytes.get(e) == Some(&b'\''))
                };
                match end {
                    Some(end) => {
                        blank(&mut code, i + 1, end);
                        i = end + 1;
                    }
                    None => i += 1,
                }
            } else {
                i += 1;
            }
        }
        Source {
            text: text.to_owned(),
            code: String::from_utf8(code).expect("only ASCII bytes were replaced"),
            literals,
        }
    }

    /// The code, with comments and literal contents blanked.
    pub(crate) fn code(&self) -> &str {
        &self.code
    }

    /// The string literals, with their offsets.
    pub(crate) fn literals(&self) -> &[(usize, String)] {
        &self.literals
    }

    /// The line (from 1) of an offset.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The spans of the items under an attribute written exactly `attribute` (such as
    /// `#[cfg(test)]`): from the attribute to the `;` or the `}` that ends the item.
    pub(crate) fn item_spans(&self, attribute: &str) -> Vec<(usize, usize)> {
        let code = self.code.as_bytes();
        let mut spans = Vec::new();
        let mut from = 0;
        while let Some(at) = self.text[from..].find(attribute).map(|p| from + p) {
            let after = at + attribute.len();
            from = after;
            // Only an attribute of the code, not one in a comment or a string.
            if code[at] != b'#' {
                continue;
            }
            let end = match code[after..].iter().position(|&c| c == b'{' || c == b';') {
                Some(p) if code[after + p] == b'{' => matching_brace(code, after + p),
                Some(p) => after + p + 1,
                None => code.len(),
            };
            spans.push((at, end));
            from = end;
        }
        spans
    }

    /// The same file with every `#[cfg(test)]` item (a `mod tests { … }`, a function, a `use`)
    /// blanked: what the code is, as opposed to what tests it.
    pub(crate) fn without_tests(&self) -> Source {
        let mut code = self.code.as_bytes().to_vec();
        for (start, end) in self.item_spans("#[cfg(test)]") {
            for b in &mut code[start..end] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        }
        let code = String::from_utf8(code).expect("only ASCII bytes were replaced");
        let literals = self
            .literals
            .iter()
            .filter(|(at, _)| code.as_bytes()[*at] == b'"')
            .cloned()
            .collect();
        Source {
            text: self.text.clone(),
            code,
            literals,
        }
    }

    /// Every identifier of the code, with its offset.
    pub(crate) fn identifiers(&self) -> impl Iterator<Item = (usize, &str)> {
        identifiers(&self.code)
    }
}

/// Every identifier (and keyword) of some code, with its offset.
pub(crate) fn identifiers(code: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = code.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            if (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_')
                && (i == 0 || !is_ident(bytes[i - 1]))
            {
                let start = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                return Some((start, &code[start..i]));
            }
            i += 1;
        }
        None
    })
}

/// The offset just past the `}` that closes the `{` at `open` (the end of the code if none
/// does).
pub(crate) fn matching_brace(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, &b) in code.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_literals_are_blanked() {
        let text = "let a = \"x{ // QA\"; // QB \"QC\"\n/* QD /* QE */ QF */ let b = r#\"QG\"#;\nlet c = '{'; fn f<'a>(x: &'a str) {}\n";
        let s = Source::new(text);
        assert_eq!(s.code().len(), text.len());
        for hidden in ["QA", "QB", "QC", "QD", "QE", "QF", "QG", "'{'"] {
            assert!(!s.code().contains(hidden), "{hidden} in {:?}", s.code());
        }
        assert!(s.code().contains("let b = r#\"  \"#;"));
        assert!(s.code().contains("fn f<'a>(x: &'a str) {}"));
        let literals: Vec<&str> = s.literals().iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(literals, ["x{ // QA", "QG"]);
        assert_eq!(s.line_of(s.literals()[1].0), 2);
        assert_eq!(s.code().matches('{').count(), s.code().matches('}').count());
    }

    #[test]
    fn escaped_quotes_and_byte_strings() {
        let s = Source::new("let a = b\"\\\"/v2/\"; let c = '\\''; let d = \"\\\\\";");
        let literals: Vec<&str> = s.literals().iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(literals, ["\\\"/v2/", "\\\\"]);
    }

    #[test]
    fn test_items_are_removed() {
        let text = "fn a() {}\n#[cfg(test)]\nmod tests {\n    fn b() { let s = \"}\"; }\n}\n#[cfg(test)]\nuse x::y;\nfn c() {}\n";
        let s = Source::new(text).without_tests();
        let names: Vec<&str> = s.identifiers().map(|(_, n)| n).collect();
        assert_eq!(names, ["fn", "a", "fn", "c"]);
        assert!(s.literals().is_empty());
    }
}
