//! cardsync
fn main() {}
