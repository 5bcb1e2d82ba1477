//! The storage port: one small repository per owner, in the owner's words.
//!
//! Each actor holds the repository of its own records and nothing else: the device actor a
//! [`DeviceRepo`], the token actor a [`TokenRepo`], and so on. The front end and the CLI hold
//! none of them (they ask the actors); [`Stores`] only carries them from the backend that opened
//! them to the supervisor that hands each to its owner.
//!
//! The actors keep their state in memory and treat the store as the truth they rebuild from.
//! Every operation below states what it promises; a backend must keep each promise with its own
//! means (the redb backend with guards checked inside its group commit, a SQL backend with
//! conditional statements), so the rules hold even when several processes share one database:
//!
//! - **Durable when answered.** A write's future resolves only after the change is committed;
//!   a failure means nothing of that call was written.
//! - **In call order.** Writes one owner issues one after another take effect in that order,
//!   even if the owner awaits them elsewhere (the redb writer queues each at the call).
//! - **Conditional writes answer `Ok(false)`** when their condition no longer holds, having
//!   written nothing: a race lost is a domain outcome, never a storage error.
//! - **Shared databases announce.** A backend several processes share gives [`Stores`] a
//!   [`change`] feed naming what the others changed; the single-record reads (`get`,
//!   `authorization`, ...) let an owner refresh its cache from it. A backend one process owns
//!   has no feed, and its owners' memory is complete.
//!
//! Backends: [`redb`] (embedded, the default) and [`postgres`] (shared by several processes). `conformance.rs` holds these promises as tests
//! that every backend runs.

pub mod audit;
pub mod change;
#[cfg(test)]
mod conformance;
pub mod copy;
pub mod device;
pub mod directory;
pub mod limits;
pub mod port;
pub mod postgres;
pub mod redb;
pub mod server;
pub mod session;
mod stores;
pub mod token;

pub use self::port::{Pending, StoreError};
pub use self::stores::Stores;
