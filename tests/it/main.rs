//! Integration tests: every module starts the real server on a free loopback port (or runs the
//! real binary) and speaks HTTP to it the way clients and browsers do. One test binary, so one
//! link.

// The tests stand where clients do, outside the server: they read the clock as a client would.
#![allow(clippy::disallowed_methods)]

mod authcode;
mod browser;
mod cli;
mod cluster;
mod common;
mod daemon;
mod demo_client;
mod discovery;
mod durability;
mod errors;
mod flow;
mod hostile;
mod keepalive;
mod lifecycle;
mod metrics;
mod node_client;
mod oauth2_client;
mod oidc;
mod providers;
mod resources;
mod restart;
mod security;
mod upstream;
mod webui;
