//! The root supervisor: it starts every actor, hands each its repository and the handles of
//! the actors it talks to, restarts failed children, and runs the periodic cleanup.
//!
//! The root starts the five core actors, and the provider actors that the settings call for,
//! linked to itself. When one fails (a panic, an error in a handler or in `pre_start`, or a
//! kill), it is restarted after a growing delay ([`backoff`]); a core actor rebuilds its state
//! from the store, a provider gets a fresh HTTP client. After [`MAX_RESTARTS`] restarts within
//! a minute the child is reported `down` (requests then get a clean error, `/health` names it)
//! and tried again only after [`COOL_DOWN`], rather than spinning. Everyone reaches actors
//! through [`Actors`], whose handles always hold the current incarnation.

mod backoff;
mod config;
mod registry;
mod root;
mod start;
#[cfg(test)]
mod tests;

pub use self::config::{CoreConfig, Secrets};
pub use self::registry::{Actors, Component, ComponentState};
pub use self::root::{COOL_DOWN, MAX_RESTARTS, RootMsg};
pub use self::start::{StartError, StoreStatus, System, rotate_keys};
