//! How actors are reached and run: addresses that survive restarts, calls with deadlines,
//! mailbox depths, the one way to wait for a commit off an actor's thread, and retrying with
//! back-off (provider calls, connecting to a database).
//!
//! Nothing here knows any particular actor; the actors build on it and the supervisor fills
//! its [`Handle`]s.

pub mod commit;
pub mod counted;
pub mod handle;
pub mod retry;

pub use self::handle::{CALL_TIMEOUT, FLOW_TIMEOUT, Handle};
