//! The hand-written results reader against serde: same value whenever it answers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_proto::fuzzing::results_fast(data));
