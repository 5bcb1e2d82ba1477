//! Route handlers, one module per area.

pub mod account;
pub mod admin;
pub mod authorize;
pub mod discovery;
pub mod metrics;
pub mod misc;
pub mod oauth;
pub mod web;
