//! AuthGate: an OAuth 2.0 Device Authorization Grant (RFC 8628) server.
//!
//! This crate is the front end: settings and CLI, the hyper server and its router, the
//! handlers, and page rendering. The state lives in the actors of `authgate-actors`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![deny(clippy::await_holding_lock)]

pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod handlers;
pub mod http;
pub mod render;
pub mod server;

/// `0.1.0 (commit abc123)`, as `--version` prints it.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("AUTHGATE_GIT_COMMIT"), ")");
