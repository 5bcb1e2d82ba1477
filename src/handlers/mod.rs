//! Route handlers, one module per area.

pub mod misc;
pub mod oauth;
pub mod web;
