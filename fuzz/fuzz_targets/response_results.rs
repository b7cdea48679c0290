//! Batch results decoding; returned cards stay masked: never panics, never quotes the body in an error.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_proto::fuzzing::results(data));
