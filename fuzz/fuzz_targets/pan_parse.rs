//! Card number parsing: never panics, never leaks the digits.
#![no_main]
libfuzzer_sys::fuzz_target!(|s: &str| cardsync_core::fuzzing::pan_text(s));
