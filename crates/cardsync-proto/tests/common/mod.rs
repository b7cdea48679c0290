//! What the tests that compare encoded bodies with the documents' examples share.

/// The JSON text with the whitespace between tokens removed (strings kept as they are); the
/// text must be valid JSON.
pub(crate) fn minified(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes).expect("valid JSON");
    let text = std::str::from_utf8(bytes).unwrap();
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !c.is_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}
