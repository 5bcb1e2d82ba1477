//! AuthGate's actors: each owns one concern's state and is reached only by messages.
//!
//! Read it bottom to top; imports run only downwards (a test in [`layers`] checks it):
//!
//! | layer | rooms | what they hold |
//! |---|---|---|
//! | top | [`supervisor`] | starts every actor with its repository and peers, restarts the failed, the registry the front end reaches them by |
//! | actors | [`device`], [`token`], [`session`], [`directory`], [`audit`], [`provider`] (`login`, `token_service`) | one folder per actor: its messages, its pure book with tests, the thin actor |
//! | support | [`runtime`], [`store`], [`crypto`], [`metrics`], [`error`], [`time`] | addresses and calls, the storage port and its backends, credentials, counters, the one error type, time as a value |
//!
//! Every actor holds only its own repository from [`store`]; nothing else writes its records.
//! Time is read at the edges and passed in as [`time::Millis`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![deny(clippy::await_holding_lock)]

pub mod audit;
pub mod crypto;
pub mod device;
pub mod directory;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod provider;
pub mod runtime;
pub mod session;
pub mod store;
pub mod supervisor;
pub mod time;
pub mod token;

#[cfg(test)]
mod layers;

pub use error::{ErrorCode, OAuthError};
