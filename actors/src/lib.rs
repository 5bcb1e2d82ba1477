//! AuthGate's actors: each owns one concern's state and is reached only by messages.
//!
//! - [`audit`]: the audit trail
//! - [`device`]: device authorizations (codes, poll timing, approvals)
//! - [`token`]: access and refresh tokens
//! - [`keys`]: JWT signing keys and the JWK Set
//! - [`metrics`]: the counters behind `/metrics`
//! - [`session`]: browser sessions
//! - [`directory`]: users and OAuth clients
//! - [`provider`]: calls to the external login API and token service
//! - [`store`]: the redb file and its group-committing writer
//! - [`system`]: the root supervisor and the handles to reach the actors

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![deny(clippy::await_holding_lock)]

pub mod audit;
pub mod device;
pub mod directory;
pub mod error;
pub mod keys;
pub mod metrics;
pub mod password;
pub mod provider;
pub mod secret;
pub mod session;
pub mod store;
pub mod system;
pub mod token;

pub use error::{ErrorCode, OAuthError};

/// The wall clock in Unix milliseconds. Requests read it once at the HTTP boundary and pass
/// it down; only timers (sweeps) read it inside the actors.
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
