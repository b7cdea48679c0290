//! Expiry parsing: never panics; MM/YY round trips.
#![no_main]
libfuzzer_sys::fuzz_target!(|s: &str| cardsync_core::fuzzing::expiry_text(s));
