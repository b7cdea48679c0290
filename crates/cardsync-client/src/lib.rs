//! The CardSync API's typed calls with retries, and a webhook inbox, over any transport and on
//! any runtime: what a program on another HTTP client (reqwest, an in-house one) or another
//! server (axum, actix) needs besides `cardsync-proto`, without hyper, rustls or ring.
//!
//! - [`Client`]: every endpoint as a method, each call retried exactly as
//!   [`cardsync_proto::retry`] decides (batch creation, which is billed and has no idempotency
//!   key, only when the request certainly never left). It takes a
//!   [`cardsync_proto::transport::Transport`] and the runtime's [`Sleep`].
//! - [`inbox::Inbox`]: the rules for receiving CardSync's webhooks at a secret URL, for any
//!   HTTP server to apply.
//!
//! `cardsync-hyper` puts both on hyper and tokio.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
pub mod inbox;

pub use client::{CallError, Client, Sleep};
