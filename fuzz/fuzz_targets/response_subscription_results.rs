//! Subscription results decoding: never panics, never quotes the body in an error.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_proto::fuzzing::response::<cardsync_proto::GetSubscriptionResults>(data));
