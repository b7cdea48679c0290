//! Planning: every row lands exactly once.
#![no_main]
libfuzzer_sys::fuzz_target!(|s: &str| cardsync_core::fuzzing::plan_lines(s));
