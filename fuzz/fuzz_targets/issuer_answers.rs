//! The issuer side: never panics, errors never quote a card number, and what reads is written
//! and read back the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_proto::fuzzing::issuer_answers(data));
