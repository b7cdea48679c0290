//! The server side reads back through the client side: decode, encode, decode gives the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_proto::fuzzing::roundtrip(data));
